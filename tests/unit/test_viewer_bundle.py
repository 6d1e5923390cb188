"""The viewport bundle committed in xrayd/web/static/viewer/ (a fresh machine runs xrayd without
npm) is what web-viewer/ builds from its lockfile, byte for byte; its dependencies are pinned
exactly and it loads nothing from elsewhere (no CDN)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers import need, need_tool

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "web-viewer"
BUNDLE = REPO / "xrayd" / "web" / "static" / "viewer"
FILES = ("THIRD_PARTY_LICENSES.txt", "decodeImageFrameWorker.js", "xrayd-viewport.js")


def test_the_bundle_is_committed_and_pinned() -> None:
    assert sorted(p.name for p in BUNDLE.iterdir()) == sorted(FILES)
    package = json.loads((SOURCE / "package.json").read_text())
    deps = {**package.get("dependencies", {}), **package.get("devDependencies", {})}
    assert deps, package
    for name, version in deps.items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"{name} {version} is not an exact pin"
    lock = json.loads((SOURCE / "package-lock.json").read_text())
    locked = lock["packages"]
    for name, version in deps.items():
        assert locked[f"node_modules/{name}"]["version"] == version, name
    for entry in locked.values():  # every package from the registry, with its hash
        if entry.get("resolved"):
            assert entry["resolved"].startswith("https://registry.npmjs.org/"), entry
            assert entry.get("integrity", "").startswith("sha512-"), entry
    licences = (BUNDLE / "THIRD_PARTY_LICENSES.txt").read_text()
    assert "== @cornerstonejs/core 5.14.0 (MIT) ==" in licences


def test_the_bundle_loads_nothing_from_elsewhere() -> None:
    for name in ("xrayd-viewport.js", "decodeImageFrameWorker.js"):
        code = (BUNDLE / name).read_text(encoding="utf-8")
        for cdn in ("unpkg.com", "jsdelivr", "cdnjs", "googleapis.com"):
            assert cdn not in code, (name, cdn)
        assert not re.search(r"\.wasm[\"'`]", code), name  # the codecs are left out
        assert "/work/" not in code and "node_modules" not in code, name  # no build paths


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_rebuild_from_the_lockfile_gives_the_committed_bundle(tmp_path: Path) -> None:
    npm = need_tool("npm", "apt-get install nodejs npm")
    need(shutil.which("node") is not None, "node not found (apt-get install nodejs)")
    work = tmp_path / "web-viewer"
    work.mkdir()
    for name in ("package.json", "package-lock.json", "build.mjs"):
        shutil.copy2(SOURCE / name, work / name)
    shutil.copytree(SOURCE / "src", work / "src")
    install = subprocess.run(
        [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=500,
    )
    need(
        install.returncode == 0,
        f"npm ci failed (offline?): {install.stderr.strip()[-500:]}",
    )
    out = tmp_path / "viewer"
    subprocess.run(
        ["node", "build.mjs", str(out)], cwd=work, check=True, capture_output=True, timeout=300
    )
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES)
    for name in FILES:
        built, committed = (out / name).read_bytes(), (BUNDLE / name).read_bytes()
        assert built == committed, f"{name} differs from the committed bundle: run make viewer"
