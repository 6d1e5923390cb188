"""Errors raised by the DICOM network layer."""

from __future__ import annotations

from config.errors import XraydError


class DicomNodeError(XraydError):
    """Base class of DICOM network errors."""


class ListenerStartError(DicomNodeError):
    """The listener could not bind its address (port in use, permission, bad host)."""


class PeerUnreachableError(DicomNodeError):
    """A remote AE could not be associated with (refused, timed out, rejected)."""
