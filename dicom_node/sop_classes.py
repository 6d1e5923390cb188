"""Which storage SOP classes and transfer syntaxes the listener accepts."""

from __future__ import annotations

from collections.abc import Iterable

from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

COMPUTED_RADIOGRAPHY = UID("1.2.840.10008.5.1.4.1.1.1")
DX_FOR_PRESENTATION = UID("1.2.840.10008.5.1.4.1.1.1.1")
DX_FOR_PROCESSING = UID("1.2.840.10008.5.1.4.1.1.1.1.1")
SECONDARY_CAPTURE = UID("1.2.840.10008.5.1.4.1.1.7")

#: Accepted by default. Digital mammography and intra-oral X-ray are deliberately absent.
DEFAULT_STORAGE_SOP_CLASSES: tuple[UID, ...] = (
    COMPUTED_RADIOGRAPHY,
    DX_FOR_PRESENTATION,
    DX_FOR_PROCESSING,
    SECONDARY_CAPTURE,
)

#: Stored exactly as received; decoding happens later, off the network thread.
ACCEPTED_TRANSFER_SYNTAXES: tuple[UID, ...] = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
)


def storage_sop_classes(extra: Iterable[str] = ()) -> tuple[UID, ...]:
    """The default classes plus a site's extra ones, without duplicates, order kept."""
    seen: dict[str, None] = dict.fromkeys(DEFAULT_STORAGE_SOP_CLASSES)
    for uid in extra:
        seen.setdefault(UID(uid), None)
    return tuple(UID(u) for u in seen)
