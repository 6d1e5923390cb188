"""Read a stored DICOM file for analysis with bounded cost: the header first, its size checked
against :class:`~models.limits.ImageLimits`, then the whole data set.

Two ways a small file asked for gibibytes:

* **Deflated data sets** (Deflated Explicit VR Little Endian): pydicom inflates the whole data
  set in one ``zlib.decompress``, even for ``stop_before_pixels``. Here the deflate stream is
  inflated a chunk at a time and refused as "image too large" as soon as it passes
  ``max_inflated_bytes``; a header read keeps only the first :data:`HEADER_PREFIX_BYTES` and
  counts the rest.
* **Pixel bombs**: a few bytes of JPEG 2000 declaring 8192 x 8192. :func:`read_image` checks
  Rows x Columns (and the decoded size, and the ratio of decoded to stored pixel bytes) on the
  header, before the pixel data is even read; :func:`models.pixels.decode_pixels` checks
  again on the loaded data set before any decoder runs.

``dicom_node.bounded_dataset`` does the same header read for the C-STORE handler (``models``
and ``dicom_node`` do not import each other).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from io import BytesIO
from pathlib import Path
from typing import BinaryIO

from pydicom import dcmread
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.filereader import (
    _read_file_meta_info,  # the file meta group alone; pydicom has no public form for streams
    read_dataset,
    read_preamble,
)
from pydicom.tag import BaseTag, Tag
from pydicom.uid import DeflatedExplicitVRLittleEndian

from models.errors import NotAnalysable, RefusalReason
from models.limits import MIB, ImageLimits, check_image_size

__all__ = ["HEADER_PREFIX_BYTES", "CorruptDeflate", "read_header", "read_image"]

#: a deflated header (everything before Pixel Data) must lie within this much once inflated
HEADER_PREFIX_BYTES = 32 * MIB
_IN_CHUNK = 64 * 1024
_OUT_CHUNK = 1024 * 1024
_PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00009, 0x7FE00008})


class CorruptDeflate(ValueError):
    """The deflate stream of a Deflated Explicit VR Little Endian file is corrupt."""


def _at_pixel_data(tag: BaseTag, vr: str | None, length: int) -> bool:
    return int(tag) in _PIXEL_TAGS


def _too_large(limit: int) -> NotAnalysable:
    return NotAnalysable(
        RefusalReason.IMAGE_TOO_LARGE,
        f"image too large: the deflated data set inflates to more than {limit // MIB:,} MiB",
    )


def _inflate(fp: BinaryIO, *, keep: int, limit: int) -> tuple[BytesIO, int, int]:
    """``(buffer, kept, total)``: the first ``keep`` inflated bytes of the raw deflate stream
    at ``fp``'s position, how many that is, and the stream's whole inflated size. Raises
    "image too large" once more than ``limit`` bytes came out, without holding them."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    sink = BytesIO()
    kept = total = 0
    try:
        while not inflater.eof:
            data = inflater.unconsumed_tail or fp.read(_IN_CHUNK)
            out = inflater.decompress(data, _OUT_CHUNK)
            if not out and not data:
                raise CorruptDeflate("truncated deflate stream")
            total += len(out)
            if total > limit:
                raise _too_large(limit)
            if kept < keep:
                kept += sink.write(out[: keep - kept])
    except zlib.error as exc:
        raise CorruptDeflate(f"corrupt deflate stream: {exc}") from None
    sink.seek(0)
    return sink, kept, total


def _open(source: Path | bytes) -> BinaryIO:
    return BytesIO(source) if isinstance(source, bytes) else source.open("rb")


def _is_deflated(fp: BinaryIO) -> tuple[bool, bytes | None, FileMetaDataset]:
    """Read the preamble and file meta group; ``fp`` is then at the data set."""
    preamble = read_preamble(fp, force=False)
    meta = _read_file_meta_info(fp)
    return meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian, preamble, meta


def _parse_inflated(
    source: Path | bytes,
    fp: BinaryIO,
    meta: FileMetaDataset,
    preamble: bytes | None,
    *,
    limits: ImageLimits,
    header_only: bool,
    tags: list[BaseTag | int] | None,
) -> FileDataset:
    keep = HEADER_PREFIX_BYTES if header_only else limits.max_inflated_bytes
    inflated, kept, total = _inflate(fp, keep=keep, limit=limits.max_inflated_bytes)
    dataset = read_dataset(
        inflated,
        is_implicit_VR=False,
        is_little_endian=True,
        stop_when=_at_pixel_data if header_only else None,
        specific_tags=tags,
    )
    if header_only and total > kept and inflated.tell() >= kept:
        raise NotAnalysable(
            RefusalReason.IMAGE_TOO_LARGE,
            f"image too large: its header is larger than {HEADER_PREFIX_BYTES // MIB} MiB "
            "once inflated",
        )
    # Named by its path (a buffer would keep the inflated bytes alive with the data set).
    ds = FileDataset(
        str(source) if isinstance(source, Path) else BytesIO(),
        dataset,
        preamble,
        meta,
        is_implicit_VR=False,
        is_little_endian=True,
    )
    ds.set_original_encoding(False, True, dataset._character_set)
    return ds


def read_header(
    source: Path | bytes,
    limits: ImageLimits,
    *,
    specific_tags: Sequence[str] | None = None,
) -> Dataset:
    """The data set up to Pixel Data (``dcmread(stop_before_pixels=True)``), a deflated one
    inflated with bounded memory.

    Raises :class:`NotAnalysable` ("image too large") for a deflated data set beyond
    ``limits.max_inflated_bytes`` or a header beyond :data:`HEADER_PREFIX_BYTES`,
    :class:`CorruptDeflate`, and whatever ``dcmread`` raises for files it cannot read.
    """
    tags: list[BaseTag | int] | None = [Tag(t) for t in specific_tags] if specific_tags else None
    with _open(source) as fp:
        deflated, preamble, meta = _is_deflated(fp)
        if deflated:
            return _parse_inflated(
                source, fp, meta, preamble, limits=limits, header_only=True, tags=tags
            )
        fp.seek(0)
        return dcmread(fp, stop_before_pixels=True, specific_tags=tags)


def read_image(source: Path | bytes, limits: ImageLimits) -> Dataset:
    """The whole data set, once its header has passed :func:`check_image_size`.

    The header is read first, without the pixel data, and the stored pixel bytes are taken
    from the file size: an image too large is refused before any of its pixel data is read.
    A deflated data set is inflated twice: once to read its header and count its inflated
    size (refused beyond ``limits.max_inflated_bytes`` holding no more than the header), then
    to read it whole (its pixel data is native: what is stored is what is decoded).
    Raises :class:`NotAnalysable` ("image too large"), :class:`CorruptDeflate`, and whatever
    ``dcmread`` raises for files it cannot read.
    """
    with _open(source) as fp:
        deflated, preamble, meta = _is_deflated(fp)
        if deflated:
            # First pass: the header, and the inflated size counted without keeping it, so a
            # bomb is refused before anything but the header is held; then the data set.
            start = fp.tell()
            header = _parse_inflated(
                source, fp, meta, preamble, limits=limits, header_only=True, tags=None
            )
            check_image_size(header, limits)
            fp.seek(start)
            ds: Dataset = _parse_inflated(
                source, fp, meta, preamble, limits=limits, header_only=False, tags=None
            )
        else:
            fp.seek(0)
            header = dcmread(fp, stop_before_pixels=True)
            at_pixels = fp.tell()  # pydicom stops at the Pixel Data element's tag
            stored = fp.seek(0, 2) - at_pixels  # 0: no Pixel Data (refused later as such)
            check_image_size(header, limits, stored_bytes=stored or None)
            fp.seek(0)
            ds = dcmread(fp)
    check_image_size(ds, limits)
    return ds
