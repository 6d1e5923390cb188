"""bench/infer.py runs end to end on a tiny EfficientNet-Lite0 bundle with the localisation head.

Both tables (the backbone runtimes and the whole per-image path) are printed, each with a row
for torch eager; the whole-path table has a total and the fastest runtime's shares.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from models.bundle import save_bundle
from models.bundle_metadata import BundleMetadata
from models.decision import OperatingPoint, Thresholds
from models.labels import BODY_PARTS
from models.network import build_network
from models.preprocess import PreprocessParams

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "bench" / "infer.py"
SIZE = 64
NUMBER = r"\d+(?:\.\d+)?"


def _bundle(directory: Path) -> Path:
    torch.manual_seed(0)
    network = build_network("efficientnet_lite0", input_size=SIZE, localise=True).eval()
    meta = BundleMetadata(
        name="tiny-lite0",
        version="0.1",
        arch="efficientnet_lite0",
        body_parts=BODY_PARTS,
        preprocess=PreprocessParams(input_size=SIZE),
        thresholds=Thresholds(OperatingPoint(0.5, 0.4, 0.6)),
        localisation_head=True,
    )
    save_bundle(directory, network, meta)
    return directory


@pytest.mark.slow
def test_bench_infer_prints_both_tables(tmp_path: Path) -> None:
    bundle = _bundle(tmp_path / "bundle")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    result = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--bundle",
            str(bundle),
            "--threads",
            "1",
            "--rounds",
            "1",
            "--images",
            "2",
            "--matmul",
            "256",
            "--source-size",
            "256",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, f"exit {result.returncode}\n{out}\n{result.stderr}"
    assert "(efficientnet_lite0), localisation head, input 64x64" in out
    runtimes, marker, whole = out.partition("whole per-image path, batch 1:")
    assert marker, out
    # The runtime table: max|dp| then ms/img, GFLOP/s and %peak at b1 and b2, then the speed-up.
    assert re.search(r"^runtime\s+max\|dp\|\s+b1 ms/img", runtimes, re.M), out
    assert re.search(rf"^eager\s+0\.0e\+00(\s+{NUMBER}%?){{6}}\s+1\.00x$", runtimes, re.M), out
    # The whole-path table: four stages and the total, in ms per image.
    assert re.search(r"^runtime\s+read\s+prepare\s+backbone\s+heads\+boxes\s+total$", whole, re.M)
    eager = re.search(rf"^eager((?:\s+{NUMBER}){{5}})$", whole, re.M)
    assert eager, out
    read, prepare, backbone, heads, total = (float(v) for v in eager.group(1).split())
    assert total > 0 and min(read, prepare, backbone) > 0 and heads >= 0
    assert re.search(r"^share of the total for the fastest, \w+ \(", whole, re.M), out
    assert "choose_runtime picks:" in whole
