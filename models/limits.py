"""What an image may cost before any of it is decoded: the pure check, on header values only.

A radiograph's header says how large its decoded pixels will be (Rows x Columns x frames x
samples x bytes per sample) before a decoder allocates anything. A 102-byte JPEG 2000 frame
declaring 8192 x 8192 asked the decoders for gibibytes; 65535 x 65535 killed the node. Every
decoding path (analysis, web viewer, retraining) calls :func:`check_image_size` first and
refuses such an image as "image too large" (:attr:`RefusalReason.IMAGE_TOO_LARGE`).

The limits come from ``[limits]`` in the settings; ``xrayd`` builds :class:`ImageLimits` from
them. The defaults here equal the settings' defaults (for tools and tests that pass none).
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.uid import UID

from models.errors import NotAnalysable, RefusalReason

__all__ = ["DEFAULT_LIMITS", "MIB", "ImageLimits", "check_image_size", "stored_pixel_bytes"]

MIB = 1024 * 1024


@dataclass(frozen=True)
class ImageLimits:
    """Bounds on one image (see ``config.settings.LimitsSettings``), as plain values.

    ``max_pixels``: Rows x Columns x frames. ``max_decoded_bytes``: the decoded pixel data.
    ``max_compression_ratio``: decoded bytes per stored byte of encapsulated pixel data.
    ``max_inflated_bytes``: the inflated size of a Deflated Explicit VR Little Endian file.
    """

    max_pixels: int = 200_000_000
    max_decoded_bytes: int = 512 * MIB
    max_compression_ratio: float = 1000.0
    max_inflated_bytes: int = 1024 * MIB

    def __post_init__(self) -> None:
        if min(self.max_pixels, self.max_decoded_bytes, self.max_inflated_bytes) < 1:
            raise ValueError("image limits must be positive")
        if self.max_compression_ratio < 1:
            raise ValueError("max_compression_ratio must be at least 1")


DEFAULT_LIMITS = ImageLimits()


def _header_int(ds: Dataset, keyword: str, default: int | None) -> int | None:
    value = ds.get(keyword, default)
    try:
        return int(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return None


def stored_pixel_bytes(ds: Dataset) -> int | None:
    """The stored length of the (loaded) Pixel Data, or None when it is not in ``ds``.

    Reads the element's recorded length where the value was deferred, so nothing is loaded.
    """
    if "PixelData" not in ds:
        return None
    raw = ds.get_item("PixelData")
    value = getattr(raw, "value", None)
    if isinstance(value, bytes | bytearray | memoryview):
        return len(value)
    length = getattr(raw, "length", None)
    if isinstance(length, int) and 0 <= length < 0xFFFFFFFF:
        return length
    return None


def check_image_size(ds: Dataset, limits: ImageLimits, *, stored_bytes: int | None = None) -> None:
    """Raise :class:`NotAnalysable` (``image_too_large``) when decoding ``ds`` would exceed
    ``limits``. Reads only Rows, Columns, Number of Frames, Samples per Pixel, Bits Allocated,
    the transfer syntax and ``stored_bytes`` (the stored length of the encapsulated pixel
    data; None: taken from ``ds`` when its Pixel Data is loaded, else the ratio is not
    checked). Invalid or missing values are left to the other checks (nothing is decoded
    without them).
    """
    rows = _header_int(ds, "Rows", None)
    cols = _header_int(ds, "Columns", None)
    frames = _header_int(ds, "NumberOfFrames", 1)
    samples = _header_int(ds, "SamplesPerPixel", 1)
    bits = _header_int(ds, "BitsAllocated", 16)
    if rows is None or cols is None or frames is None or samples is None or bits is None:
        return
    rows, cols, frames, samples, bits = (max(0, v) for v in (rows, cols, frames, samples, bits))
    pixels = rows * cols * max(frames, 1)
    shape = f"{rows:,} x {cols:,}" + (f" x {frames:,} frames" if frames > 1 else "")
    if pixels > limits.max_pixels:
        raise NotAnalysable(
            RefusalReason.IMAGE_TOO_LARGE,
            f"image too large: {shape} is {pixels:,} pixels (limit {limits.max_pixels:,})",
        )
    decoded = pixels * max(samples, 1) * max(1, (bits + 7) // 8)
    if decoded > limits.max_decoded_bytes:
        raise NotAnalysable(
            RefusalReason.IMAGE_TOO_LARGE,
            f"image too large: {shape} decodes to {decoded / MIB:,.0f} MiB "
            f"(limit {limits.max_decoded_bytes / MIB:,.0f} MiB)",
        )
    meta = getattr(ds, "file_meta", None)
    syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    encapsulated = isinstance(syntax, UID) and syntax.is_transfer_syntax and syntax.is_encapsulated
    if not encapsulated or decoded == 0:
        return
    stored = stored_bytes if stored_bytes is not None else stored_pixel_bytes(ds)
    if stored is None:
        return
    ratio = decoded / max(stored, 1)
    if ratio > limits.max_compression_ratio:
        raise NotAnalysable(
            RefusalReason.IMAGE_TOO_LARGE,
            f"image too large: {shape} decodes to {decoded / MIB:,.1f} MiB from {stored:,} "
            f"stored bytes ({ratio:,.0f}:1; limit {limits.max_compression_ratio:,.0f}:1)",
        )
