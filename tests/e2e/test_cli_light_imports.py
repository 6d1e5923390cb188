"""The administration commands load neither the model stack (torch, MONAI) nor the web app:
``xrayd users list`` took 7 s and 390 MB when it went through the composition root."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "monai", "matplotlib", "fastapi")

PROBE = f"""
import json, sys
from xrayd.cli.main import main
code = main(sys.argv[1:])
loaded = {{m.split(".")[0] for m in sys.modules}} & set({HEAVY!r})
print(json.dumps({{"code": code, "loaded": sorted(loaded)}}))
"""


@pytest.mark.parametrize(
    "argv",
    [
        ["users", "list"],
        ["callers", "list"],
        ["destinations", "list"],
        ["queue", "list"],
        ["status"],
    ],
    ids=lambda a: " ".join(a),
)
def test_admin_commands_do_not_load_the_model_stack(tmp_path: Path, argv: list[str]) -> None:
    cfg = tmp_path / "xrayd.toml"
    cfg.write_text(f'[storage]\ndata_dir = "{tmp_path / "data"}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("XRAYD_")}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *argv, "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report == {"code": 0, "loaded": []}, report
