#!/usr/bin/env python3
"""Coverage-guided fuzzing of the pixel path: stored file -> ``dcmread`` -> model input.

    .venv/bin/python tests/fuzz/fuzz_pixels.py runs/fuzz/pixels tests/fuzz/corpus/pixels \
        -max_total_time=300 -artifact_prefix=tests/fuzz/crashes/pixels/

The same steps as ``xrayd.pipeline.analyse.Analyser._read``: ``dcmread`` may raise what ``_read``
catches, ``models.preprocess.prepare`` only ``NotAnalysable``; a prepared image must be a
finite [0, 1] square. Anything else is a crash; see docs/fuzzing.md.
"""

from __future__ import annotations

from atheris_main import load_targets, run

targets = load_targets()


def test_one_input(data: bytes) -> None:
    targets.pixels_one(data)


if __name__ == "__main__":
    targets.quiet()
    run(test_one_input)
