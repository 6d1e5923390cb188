"""Write the pixel-bomb reproducers of finding 4 (docs/fuzzing.md) from the seed corpus.

    .venv/bin/python tests/fuzz/make_bombs.py

Each is a seed whose JPEG / JPEG-LS / JPEG 2000 frame header declares 30000 x 30000 (or
40000) pixels while Rows and Columns stay 32: the decoders allocated gigabytes for them.
"""

from __future__ import annotations

import struct

from fuzz_targets import CORPUS, CRASHES

BOMBS = {
    # name: (seed, marker, offset of the size from the marker, packed size)
    "jpegls-sof-30000x30000": (
        "jpegls-mono2-16bit.dcm",
        b"\xff\xf7",
        5,
        struct.pack(">HH", 30000, 30000),
    ),
    "jpeg-baseline-sof-30000x30000": (
        "jpeg-baseline-mono2-8bit.dcm",
        b"\xff\xc0",
        5,
        struct.pack(">HH", 30000, 30000),
    ),
    "j2k-siz-40000x40000": (
        "j2k-mono2-16bit.dcm",
        b"\xff\x51",
        6,
        struct.pack(">II", 40000, 40000),
    ),
}


def main() -> None:
    for name, (seed, marker, offset, size) in BOMBS.items():
        data = bytearray((CORPUS / "pixels" / seed).read_bytes())
        at = data.index(marker) + offset
        data[at : at + len(size)] = size
        (CRASHES / "pixels" / name).write_bytes(bytes(data))


if __name__ == "__main__":
    main()
