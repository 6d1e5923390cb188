#!/usr/bin/env python3
"""Coverage-guided fuzzing of the C-STORE header check (``dicom_node.scp.read_header``).

    .venv/bin/python tests/fuzz/fuzz_header.py runs/fuzz/header tests/fuzz/corpus/header \
        -max_total_time=300 -artifact_prefix=tests/fuzz/crashes/header/

Any exception but ``HeaderError`` (``MemoryError`` included) is a crash; see docs/fuzzing.md.
"""

from __future__ import annotations

from atheris_main import load_targets, run

targets = load_targets()


def test_one_input(data: bytes) -> None:
    targets.header_one(data)


if __name__ == "__main__":
    targets.quiet()
    run(test_one_input)
