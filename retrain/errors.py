"""Errors of the retraining pipeline."""

from __future__ import annotations

from config.errors import XraydError

__all__ = ["RetrainError", "ValidationSetError"]


class RetrainError(XraydError):
    """A retraining run cannot go on (nothing to train on, a bad version name, ...)."""


class ValidationSetError(RetrainError):
    """The locked validation set cannot be rebuilt as it was recorded (a case regenerates
    with other labels, a key is malformed, or too few cases are left to judge a model)."""
