"""Fuzzing regressions: every seed and crash reproducer through the fuzzed code; atheris smokes.

The inputs run in a child process whose memory is bounded (tests/fuzz/replay.py), so that a
regressed pixel bomb fails here instead of exhausting the machine. See docs/fuzzing.md.
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

FUZZ = Path(__file__).resolve().parents[1] / "fuzz"
sys.path.insert(0, str(FUZZ))

import fuzz_targets  # noqa: E402
from helpers import need  # noqa: E402

Results = dict[str, dict[str, Any]]


def replay(kind: str, files: list[Path], memory_mb: int) -> Results:
    env = {**os.environ, "FUZZ_MEMORY_MB": str(memory_mb)}
    out = subprocess.run(
        [sys.executable, str(FUZZ / "replay.py"), kind, *map(str, files)],
        cwd=FUZZ,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    results: Results = {}
    for line in out.stdout.splitlines():
        if line.startswith("{"):
            result = json.loads(line)
            results[result["file"]] = result
    assert len(results) == len(files), f"the replay stopped early:\n{out.stderr[-4000:]}"
    return results


def check(results: Results, path: Path) -> None:
    result = results[str(path)]
    assert result["ok"], f"{path.name}: {result['error']}\n{result['tb']}"


HEADER = fuzz_targets.corpus_files("header")
PIXELS = fuzz_targets.corpus_files("pixels")


@pytest.fixture(scope="module")
def header_results() -> Results:
    return replay("header", HEADER, 1024)


@pytest.fixture(scope="module")
def pixel_results() -> Results:
    return replay("pixels", PIXELS, 1024)


@pytest.fixture(scope="module")
def analysis_results(pixel_results: Results) -> Results:
    # dcmread asks for a buffer of a file element's declared length (up to 4 GiB, never
    # touched); the ceiling allows that, and the pixel replay (1 GiB) has caught any bomb first
    safe = [p for p in PIXELS if pixel_results[str(p)]["ok"]]
    return replay("analysis", safe, 6144)


def test_the_seed_corpora_are_small_and_varied() -> None:
    for kind in ("header", "pixels"):
        seeds = sorted((fuzz_targets.CORPUS / kind).glob("*.dcm"))
        assert len(seeds) >= 10
        assert all(p.stat().st_size < 64 * 1024 for p in seeds)
        names = " ".join(p.name for p in seeds)
        for variety in ("deflated", "rle", "j2k", "jpegls", "jpeg-baseline", "mono1", "8bit"):
            assert variety in names


@pytest.mark.parametrize("path", HEADER, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_header_check_answers_or_refuses(header_results: Results, path: Path) -> None:
    """read_header returns the UIDs or raises HeaderError; nothing else, whatever the bytes."""
    check(header_results, path)


@pytest.mark.parametrize("path", PIXELS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_pixel_path_prepares_or_refuses(pixel_results: Results, path: Path) -> None:
    """A finite [0, 1] model input, or NotAnalysable; never a decoder allocating gigabytes."""
    check(pixel_results, path)


@pytest.mark.parametrize("path", PIXELS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_analysis_reads_every_stored_file(
    pixel_results: Results, analysis_results: Results, path: Path
) -> None:
    """The real StudyAnalyser._read returns for every file ("not analysed" with a reason at
    worst): one bad instance must never fail its whole study's job."""
    if str(path) not in analysis_results:
        pytest.fail(f"{path.name} already failed the pixel replay")
    check(analysis_results, path)


def test_the_seeds_are_analysable() -> None:
    """The pixel seeds reach the end of the path (else the fuzzer starts from refusals)."""
    from pydicom import dcmread

    from models.preprocess import prepare

    for path in sorted((fuzz_targets.CORPUS / "pixels").glob("*.dcm")):
        prepared = prepare(dcmread(path), fuzz_targets.PIXEL_PARAMS[0])
        assert prepared.pixels.shape == (48, 48), path.name


#: atheris ships wheels for x86-64 Linux and CPython < 3.14 only (the dev extra's marker):
#: elsewhere the smoke skips everywhere, CI included (platform-conditional, allowed by the
#: skip policy); where the wheels exist a missing atheris skips locally and fails in CI (need).
ATHERIS_PLATFORM = (
    sys.platform == "linux" and platform.machine() == "x86_64" and sys.version_info < (3, 14)
)
needs_atheris = pytest.mark.skipif(
    not ATHERIS_PLATFORM, reason="atheris has no wheel for this platform"
)


@needs_atheris
@pytest.mark.parametrize(("harness", "runs"), [("fuzz_header.py", 1500), ("fuzz_pixels.py", 600)])
def test_atheris_smoke(tmp_path: Path, harness: str, runs: int) -> None:
    """A few seconds of coverage-guided fuzzing from the seed corpus finds no crash."""
    need(importlib.util.find_spec("atheris") is not None, "atheris is not installed (.[dev])")
    kind = harness.removeprefix("fuzz_").removesuffix(".py")
    new = tmp_path / "new"
    new.mkdir()
    out = subprocess.run(
        [
            sys.executable,
            str(FUZZ / harness),
            str(new),
            str(fuzz_targets.CORPUS / kind),
            f"-runs={runs}",
            "-seed=1",
            # No libFuzzer RSS limit here: it reads the peak RSS (ru_maxrss), which Linux
            # carries over from the forking process, so a fuzzer started by a pytest that had
            # reached 6 GiB "ran out of memory" at once. FUZZ_MEMORY_MB caps the address space
            # instead, and the harness counts a MemoryError as a finding.
            "-rss_limit_mb=0",
            "-timeout=20",
            f"-artifact_prefix={tmp_path}/",
        ],
        cwd=FUZZ,
        env={**os.environ, "FUZZ_MEMORY_MB": "3072"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    artifacts = [p.name for p in tmp_path.iterdir() if p.is_file()]
    assert out.returncode == 0 and not artifacts, (
        f"{harness} found {artifacts} (copy it to tests/fuzz/crashes/{kind}/):\n"
        + out.stderr[-6000:]
    )
    assert f"Done {runs} runs" in out.stderr
