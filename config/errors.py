"""The project's exception hierarchy.

Lives in ``config`` because every package may import ``config`` and nothing else is shared.
Each package defines its own subclasses of :class:`XraydError` next to the code that raises them.
"""

from __future__ import annotations


class XraydError(Exception):
    """Base class of every error xrayd raises on purpose."""


class ConfigError(XraydError):
    """The configuration is invalid; the message names the offending key."""
