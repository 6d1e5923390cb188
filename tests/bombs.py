"""Decompression and pixel bombs, a long-leg radiograph, and a peak-memory probe (issue 15).

Everything here is cheap to build: a deflate bomb of gibibytes of zeros is a few MiB of
repeated deflate blocks, a pixel bomb a few hundred bytes of JPEG 2000 or RLE.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
)

from dicom_factory import make_radiograph

ROOT = Path(__file__).resolve().parents[1]
MIB = 1024 * 1024

#: OpenJPEG's lossless JPEG 2000 codestream of an all-zero 8192 x 8192 16-bit image: 252 bytes
#: (``openjpeg.encode(np.zeros((8192, 8192), np.uint16))``, OpenJPEG 2.5.2). A real,
#: decodable image: decoding it costs 128 MiB of output plus the decoder's own buffers.
J2K_ZEROS_8192 = bytes.fromhex(
    "ff4fff510029000000002000000020000000000000000000000020000000200000000000000000000001"
    "000101ff52000c00000001000504040001ff5c00134008101018101018101018101018101018ff640025"
    "000143726561746564206279204f70656e4a5045472076657273696f6e20322e352e32ff90000a000000"
    "0000830001ff93f7366f366cd9b366f366f366cd9b3660115054afff7f115054afff7f115054afff7f11"
    "5054afff7f115054afff7f115054afff7f115054afff7f115054afff7f115054afff7f115054afff7f11"
    "5054afff7f115054afff7f115054afff7f115054afff7f115054afff7f115054afff7f8080808080ffd9"
)


def j2k_declaring(rows: int, cols: int) -> bytes:
    """:data:`J2K_ZEROS_8192` with its SIZ marker (image and tile size) set to ``rows x cols``."""
    stream = bytearray(J2K_ZEROS_8192)
    assert stream[2:4] == b"\xff\x51"  # SIZ
    for offset, value in ((8, cols), (12, rows), (24, cols), (28, rows)):
        stream[offset : offset + 4] = value.to_bytes(4, "big")
    return bytes(stream)


def rle_declaring() -> bytes:
    """An RLE Lossless frame of 16-bit pixels: two segments of one run of 128 zeros each."""
    header = (2).to_bytes(4, "little") + (64).to_bytes(4, "little") + (66).to_bytes(4, "little")
    return header + bytes(64 - len(header)) + b"\x81\x00" + b"\x81\x00"


def pixel_bomb(rows: int, cols: int, kind: str = "j2k", **header: Any) -> Dataset:
    """A DX radiograph header declaring ``rows x cols`` 16-bit pixels over a tiny frame."""
    ds = make_radiograph(rows=64, cols=64, **header)
    ds.Rows, ds.Columns = rows, cols
    ds.BitsStored, ds.HighBit = 16, 15
    if kind == "j2k":
        frame = J2K_ZEROS_8192 if (rows, cols) == (8192, 8192) else j2k_declaring(rows, cols)
        ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    else:
        frame = rle_declaring()
        ds.file_meta.TransferSyntaxUID = RLELossless
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return ds


def _zeros_deflated(count: int, compressor: Any) -> bytes:
    """``count`` zero bytes through ``compressor``: each MiB after a full flush compresses to
    the same bytes, so gibibytes cost one MiB of work and ~1 KiB of output per MiB."""
    whole, rest = divmod(count, MIB)
    block = compressor.compress(bytes(MIB)) + compressor.flush(zlib.Z_FULL_FLUSH)
    again = compressor.compress(bytes(MIB)) + compressor.flush(zlib.Z_FULL_FLUSH)
    assert block == again  # no back-references across a full flush
    tail = compressor.compress(bytes(rest)) + compressor.flush(zlib.Z_FULL_FLUSH)
    return block * whole + tail if whole else tail


def deflate_bomb(
    path: Path,
    zeros: int,
    *,
    before_header: int = 0,
    truncate: bool = False,
    **header: Any,
) -> Dataset:
    """Write a Deflated Explicit VR Little Endian file: a valid radiograph header, then Pixel
    Data (OB) of ``zeros`` zero bytes, all deflated (``zeros`` < 4 GiB). ``before_header``: a
    private OB element of that many zeros before the identifying attributes. ``truncate``:
    cut the deflate stream short. Returns the header written (without pixel data)."""
    ds = make_radiograph(rows=64, cols=64, **header)
    del ds.PixelData
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, ds)
    element = bytes.fromhex("e07f1000") + b"OB\x00\x00" + zeros.to_bytes(4, "little")
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    parts = []
    if before_header:
        private = bytes.fromhex("07000010") + b"OB\x00\x00"  # (0007,1000) OB
        parts.append(compressor.compress(private + before_header.to_bytes(4, "little")))
        parts.append(compressor.flush(zlib.Z_FULL_FLUSH))
        parts.append(_zeros_deflated(before_header, compressor))
    parts.append(compressor.compress(body.getvalue() + element))
    parts.append(compressor.flush(zlib.Z_FULL_FLUSH))
    parts.append(_zeros_deflated(zeros, compressor))
    parts.append(compressor.flush())
    stream = b"".join(parts)
    if truncate:
        stream = stream[: len(stream) // 2]
    meta = DicomBytesIO()
    write_file_meta_info(meta, ds.file_meta, enforce_standard=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00" * 128 + b"DICM" + meta.getvalue() + stream)
    return ds


def long_leg_dx(path: Path, rows: int = 17_000, cols: int = 7_000) -> Dataset:
    """A stitched long-leg DX: 7,000 x 17,000 16-bit pixels (~238 MB), uncompressed, with a
    collimated (uniform) top band, a soft-tissue ramp and a brighter 'femur' column."""
    ds = make_radiograph(rows=64, cols=64, patient_id="LONGLEG-1")
    ds.Rows, ds.Columns = rows, cols
    ds.BitsStored, ds.HighBit = 14, 13
    ds.BodyPartExamined = "LEG"
    del ds.WindowCenter, ds.WindowWidth
    pixels = np.empty((rows, cols), dtype=np.uint16)
    ramp = (1000 + (np.arange(cols) * 5) % 3000).astype(np.uint16)
    pixels[:] = ramp
    femur = slice(cols // 2 - cols // 14, cols // 2 + cols // 14)
    pixels[:, femur] += (6000 + np.arange(rows) % 2000).astype(np.uint16)[:, None]
    pixels[: rows // 50] = 200  # collimation
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.PixelData = pixels.tobytes()
    del pixels
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    del ds.PixelData
    return ds


_PROBE = """
import json, resource, sys
sys.path[:0] = {paths!r}
{setup}
def _kib(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1])
    raise RuntimeError(field)
# A safety net: an unbounded allocation fails here with MemoryError instead of taking the
# host's memory (the old code's behaviour is then a MemoryError, not an OOM kill).
room = _kib("VmSize:") * 1024 + {headroom}
resource.setrlimit(resource.RLIMIT_AS, (room, room))
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the process that started this one
# (a pytest at 6 GiB would hide any growth below that), while VmHWM starts afresh at exec.
before = _kib("VmHWM:")
try:
    outcome = {{"result": repr(({action}))}}
except BaseException as exc:
    outcome = {{"error": type(exc).__name__, "message": str(exc)}}
after = _kib("VmHWM:")
outcome["before_mib"] = before / 1024
outcome["peak_mib"] = after / 1024
outcome["growth_mib"] = (after - before) / 1024
print("PROBE" + json.dumps(outcome))
"""


def measure(setup: str, action: str, *, headroom_gib: float = 6.0) -> dict[str, Any]:
    """Run ``setup`` (imports, warm-up) then the expression ``action`` in a fresh interpreter;
    returns its outcome (``result`` repr or ``error``/``message``) and the peak RSS before and
    after it (``VmHWM``, MiB) and their difference, ``growth_mib``. The address space is
    capped at what ``setup`` left plus ``headroom_gib``."""
    code = _PROBE.format(
        paths=[str(ROOT), str(ROOT / "tests")],
        setup=textwrap.dedent(setup),
        action=action,
        headroom=int(headroom_gib * 1024**3),
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=ROOT
    )
    for line in run.stdout.splitlines():
        if line.startswith("PROBE"):
            result: dict[str, Any] = json.loads(line[len("PROBE") :])
            return result
    raise AssertionError(f"probe failed (exit {run.returncode}):\n{run.stderr[-3000:]}")
