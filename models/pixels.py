"""Check that a dataset is an analysable radiograph, decode it, apply the Modality LUT."""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Collection

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.processing import apply_modality_lut
from pydicom.pixels.utils import _get_jpg_parameters  # SOF parser; pydicom is pinned to 3.0
from pydicom.uid import (
    UID,
    JPEG2000TransferSyntaxes,
    JPEGLSTransferSyntaxes,
    JPEGTransferSyntaxes,
)

from models.errors import NotAnalysable, RefusalReason
from models.limits import DEFAULT_LIMITS, ImageLimits, check_image_size

logger = logging.getLogger(__name__)

#: Modalities accepted for fracture triage: Computed Radiography, Digital Radiography and
#: "RG" (radiographic imaging, e.g. digitised film). Not accepted: MG (mammography), PX
#: (panoramic dental), IO (intra-oral), XA/RF (fluoroscopy), OT and SC (unknown content).
RADIOGRAPH_MODALITIES: frozenset[str] = frozenset({"CR", "DX", "RG"})

_MONOCHROME = ("MONOCHROME1", "MONOCHROME2")


def check_analysable(ds: Dataset, *, modalities: Collection[str], min_size: int) -> None:
    """Raise :class:`NotAnalysable` unless ``ds`` is a single-frame greyscale radiograph."""
    modality = str(ds.get("Modality") or "").strip().upper()
    if modality not in modalities:
        raise NotAnalysable(
            RefusalReason.MODALITY,
            f"modality {modality or '(none)'!r} is not one of {sorted(modalities)}",
        )
    if "PixelData" not in ds or not ds["PixelData"].value:
        raise NotAnalysable(RefusalReason.NO_PIXELS, "the object has no pixel data")
    photometric = str(ds.get("PhotometricInterpretation") or "").strip().upper()
    samples = ds.get("SamplesPerPixel", 1)
    if samples != 1 or photometric not in _MONOCHROME:
        raise NotAnalysable(
            RefusalReason.COLOUR,
            f"not a greyscale image ({samples} samples per pixel, "
            f"photometric interpretation {photometric or '(none)'!r})",
        )
    try:
        frames = int(ds.get("NumberOfFrames") or 1)
        rows, cols = int(ds.Rows), int(ds.Columns)
        int(ds.BitsAllocated), int(ds.BitsStored), int(ds.PixelRepresentation)
    except (AttributeError, TypeError, ValueError) as exc:
        raise NotAnalysable(
            RefusalReason.CORRUPT_PIXELS, f"the image pixel description is invalid: {exc}"
        ) from exc
    if frames != 1:
        raise NotAnalysable(RefusalReason.MULTIFRAME, f"{frames} frames; only 1 is supported")
    if min(rows, cols) < min_size:
        raise NotAnalysable(
            RefusalReason.TOO_SMALL, f"{rows}x{cols} pixels is smaller than {min_size} on a side"
        )


def decode_pixels(ds: Dataset, *, limits: ImageLimits = DEFAULT_LIMITS) -> npt.NDArray[np.integer]:
    """Decode the single frame of ``ds`` with pydicom's pixel plugins, without caching it.

    Uses the same decoders as ``ds.pixel_array`` (native, RLE, JPEG baseline/extended/lossless,
    JPEG-LS, JPEG 2000, HTJ2K through pylibjpeg), but leaves ``ds`` untouched. Refuses an
    image beyond ``limits`` ("image too large") before any decoder runs.
    """
    check_image_size(ds, limits)
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    if not isinstance(syntax, UID):  # absent, or several values
        raise NotAnalysable(
            RefusalReason.UNSUPPORTED_TRANSFER_SYNTAX, "the transfer syntax is unknown"
        )
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError as exc:
        raise NotAnalysable(
            RefusalReason.UNSUPPORTED_TRANSFER_SYNTAX, f"no decoder for {syntax.name}"
        ) from exc
    if not decoder.is_available:
        raise NotAnalysable(
            RefusalReason.UNSUPPORTED_TRANSFER_SYNTAX,
            f"the decoder plugins for {syntax.name} are not installed",
        )
    check_codestream_size(ds, syntax)
    try:
        array, _ = decoder.as_array(ds, index=0)
    except Exception as exc:  # decoders raise anything from ValueError to RuntimeError
        logger.info("pixel data could not be decoded: %s", type(exc).__name__)
        raise NotAnalysable(
            RefusalReason.CORRUPT_PIXELS, f"the {syntax.name} pixel data cannot be decoded"
        ) from exc
    expected = (int(ds.Rows), int(ds.Columns))
    if array.shape != expected or not np.issubdtype(array.dtype, np.integer):
        raise NotAnalysable(
            RefusalReason.CORRUPT_PIXELS,
            f"decoded {array.shape} {array.dtype} pixels, expected {expected} integers",
        )
    return array


def modality_values(ds: Dataset, stored: npt.NDArray[np.integer]) -> npt.NDArray[np.float64]:
    """Apply the Modality LUT or rescale slope/intercept; float64 output values."""
    try:
        return np.asarray(apply_modality_lut(stored, ds), dtype=np.float64)
    except Exception as exc:  # a malformed LUT: AttributeError, IndexError, struct.error...
        raise NotAnalysable(
            RefusalReason.CORRUPT_PIXELS, "the Modality LUT or rescale values are invalid"
        ) from exc


def modality_function(
    ds: Dataset,
) -> Callable[[npt.NDArray[np.integer]], npt.NDArray[np.float64]]:
    """:func:`modality_values` as an element-wise function of stored values, to apply to a
    part of an image at a time (no full-size float copy)."""

    def apply(stored: npt.NDArray[np.integer]) -> npt.NDArray[np.float64]:
        return modality_values(ds, stored)

    return apply


def padding_mask(ds: Dataset, stored: npt.NDArray[np.integer]) -> npt.NDArray[np.bool_] | None:
    """``True`` where pixels are real image, ``False`` for Pixel Padding Value pixels."""
    pad = ds.get("PixelPaddingValue")
    if pad is None:
        return None
    limit = ds.get("PixelPaddingRangeLimit", pad)
    low, high = sorted((int(pad), int(limit)))
    mask = (stored < low) | (stored > high)
    return mask if mask.any() else None


def codestream_size(syntax: UID, frame: bytes) -> tuple[int, int] | None:
    """``(rows, columns)`` as the frame's own JPEG, JPEG-LS or JPEG 2000 header declares them
    (what the decoder allocates for); ``None`` for other syntaxes or an unparseable header."""
    if syntax in JPEG2000TransferSyntaxes:
        at = frame.find(b"\xff\x4f\xff\x51")  # SOC, SIZ (after any JP2 boxes)
        if at < 0 or len(frame) < at + 24:
            return None
        width, height, x_offset, y_offset = struct.unpack(">4I", frame[at + 8 : at + 24])
        return height - y_offset, width - x_offset
    if syntax in JPEGTransferSyntaxes or syntax in JPEGLSTransferSyntaxes:
        info = _get_jpg_parameters(frame)
        return (int(info["height"]), int(info["width"])) if "height" in info else None
    return None


def check_codestream_size(ds: Dataset, syntax: UID) -> None:
    """Refuse a compressed frame whose codestream declares another size than Rows x Columns:
    the decoders allocate what the codestream says (found by fuzzing: 1.4 KiB of JPEG-LS
    declaring 30000 x 30000 made CharLS take 5 GB), and the image limits check the header."""
    if not (
        syntax in JPEG2000TransferSyntaxes
        or syntax in JPEGTransferSyntaxes
        or syntax in JPEGLSTransferSyntaxes
    ):
        return
    try:
        frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    except Exception:  # malformed encapsulation: the decoder refuses it
        return
    declared = codestream_size(syntax, frame)
    expected = (int(ds.Rows), int(ds.Columns))
    # a JPEG height of 0 is defined later, by a DNL marker
    if declared is not None and declared != expected and declared != (0, expected[1]):
        raise NotAnalysable(
            RefusalReason.CORRUPT_PIXELS,
            f"the {syntax.name} codestream declares "
            f"{declared[0]}x{declared[1]} pixels, the header {expected[0]}x{expected[1]}",
        )
