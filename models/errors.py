"""Errors raised by the ``models`` package."""

from __future__ import annotations

from enum import StrEnum

from config.errors import XraydError


class RefusalReason(StrEnum):
    """Why an image cannot be analysed (stable, machine-readable codes)."""

    COLOUR = "colour"
    MULTIFRAME = "multiframe"
    MODALITY = "modality"
    TOO_SMALL = "too_small"
    CORRUPT_PIXELS = "corrupt_pixels"
    NO_PIXELS = "no_pixels"
    UNSUPPORTED_TRANSFER_SYNTAX = "unsupported_transfer_syntax"
    #: beyond the configured [limits] (pixels, decoded bytes, compression ratio, inflated
    #: size): refused before any decoding, a final state (never retried)
    IMAGE_TOO_LARGE = "image_too_large"


class ModelsError(XraydError):
    """Base class of the errors raised by ``models``."""


class NotAnalysable(ModelsError):
    """The object is not an image this model can analyse.

    ``reason`` is a stable code for machines (logs, database, result objects); ``message`` is
    for people. Neither contains patient data.
    """

    def __init__(self, reason: RefusalReason, message: str) -> None:
        super().__init__(f"{message} [{reason.value}]")
        self.reason = reason
        self.message = message

    def __reduce__(self) -> tuple[type[NotAnalysable], tuple[RefusalReason, str]]:
        # Custom __init__ arguments: keep the exception picklable across processes.
        return (type(self), (self.reason, self.message))


class BundleError(ModelsError):
    """A model bundle is missing, malformed, of an unknown kind or has been altered."""
