"""Read a received data set's header with bounded memory, deflated ones included.

pydicom inflates a Deflated Explicit VR Little Endian data set (1.2.840.10008.1.2.1.99) whole,
in one ``zlib.decompress``, even for ``stop_before_pixels``: a 510 KiB C-STORE of zeros asked
for a gibibyte. Here the deflate stream is inflated incrementally: the first
:data:`HEADER_PREFIX_BYTES` are kept and parsed (the header attributes come before Pixel
Data), the rest is inflated only to be counted, a chunk at a time, and a stream that inflates
beyond ``max_inflated_bytes`` is refused as soon as it passes that size (which the analysis
would refuse to read too). Other transfer syntaxes are read as before: pydicom stops before
the pixel data without reading it.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from io import BytesIO
from pathlib import Path
from typing import BinaryIO

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filereader import (
    _read_file_meta_info,  # the file meta group alone; pydicom has no public form for streams
    read_dataset,
    read_preamble,
)
from pydicom.tag import BaseTag, Tag
from pydicom.uid import DeflatedExplicitVRLittleEndian

__all__ = [
    "DEFAULT_MAX_INFLATED_BYTES",
    "HEADER_PREFIX_BYTES",
    "HeaderTooLarge",
    "InflatedTooLarge",
    "TruncatedDeflate",
    "read_bounded_header",
]

#: [limits] max_inflated_mb's default
DEFAULT_MAX_INFLATED_BYTES = 1024 * 1024 * 1024
#: the header (everything before Pixel Data) must lie within this much of the inflated stream
HEADER_PREFIX_BYTES = 32 * 1024 * 1024
#: compressed bytes read, and inflated bytes produced, per step
_IN_CHUNK = 64 * 1024
_OUT_CHUNK = 1024 * 1024
_PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00009, 0x7FE00008})


class InflatedTooLarge(ValueError):
    """A deflated data set inflates beyond the limit (a decompression bomb, or just too big)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"inflated data set too large (more than {limit // (1024 * 1024)} MiB)")
        self.limit = limit


class TruncatedDeflate(ValueError):
    """The deflate stream ends before its final block (the data set was cut short)."""

    def __init__(self) -> None:
        super().__init__("truncated deflate stream")


class HeaderTooLarge(ValueError):
    """The attributes before Pixel Data of a deflated data set exceed the header prefix."""

    def __init__(self) -> None:
        super().__init__(
            f"header larger than {HEADER_PREFIX_BYTES // (1024 * 1024)} MiB once inflated"
        )


def _at_pixel_data(tag: BaseTag, vr: str | None, length: int) -> bool:
    return int(tag) in _PIXEL_TAGS


def _inflate_prefix(fp: BinaryIO, *, keep: int, limit: int) -> tuple[bytes, int]:
    """Inflate the raw deflate stream from ``fp``'s position: its first ``keep`` bytes, and
    its whole inflated size, never holding more than ``keep`` + one chunk.

    Raises :class:`InflatedTooLarge` as soon as more than ``limit`` bytes came out,
    :class:`TruncatedDeflate` for a stream cut short and ``zlib.error`` for a corrupt one.
    """
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    kept: list[bytes] = []
    held = total = 0
    while not inflater.eof:
        data = inflater.unconsumed_tail or fp.read(_IN_CHUNK)
        out = inflater.decompress(data, _OUT_CHUNK)
        if not out and not data:
            raise TruncatedDeflate  # input exhausted before the end of the deflate stream
        total += len(out)
        if total > limit:
            raise InflatedTooLarge(limit)
        if held < keep:
            part = out[: keep - held]
            kept.append(part)
            held += len(part)
    return b"".join(kept), total


def read_bounded_header(
    source: Path | bytes,
    *,
    specific_tags: Sequence[str] | None = None,
    max_inflated_bytes: int = DEFAULT_MAX_INFLATED_BYTES,
) -> Dataset:
    """The data set up to (not including) Pixel Data, as ``dcmread(stop_before_pixels=True)``.

    A deflated data set is inflated with bounded memory (see the module docstring). Raises
    :class:`InflatedTooLarge`, :class:`HeaderTooLarge`, :class:`TruncatedDeflate`, pydicom's
    ``InvalidDicomError``, ``zlib.error`` and whatever pydicom raises for a malformed header.
    """
    tags = list(specific_tags) if specific_tags is not None else None
    with _open(source) as fp:
        preamble = read_preamble(fp, force=False)
        meta = _read_file_meta_info(fp)
        if meta.get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
            fp.seek(0)
            return dcmread(fp, stop_before_pixels=True, specific_tags=tags)
        prefix, total = _inflate_prefix(fp, keep=HEADER_PREFIX_BYTES, limit=max_inflated_bytes)
    buffer = BytesIO(prefix)
    ds = read_dataset(
        buffer,
        is_implicit_VR=False,
        is_little_endian=True,
        stop_when=_at_pixel_data,
        specific_tags=[Tag(t) for t in tags] if tags else None,
    )
    if total > len(prefix) and buffer.tell() >= len(prefix):
        # The parse ran to the end of the kept prefix without reaching Pixel Data.
        raise HeaderTooLarge
    ds.file_meta = meta
    ds.preamble = preamble
    return ds


def _open(source: Path | bytes) -> BinaryIO:
    if isinstance(source, bytes):
        return BytesIO(source)
    return source.open("rb")
