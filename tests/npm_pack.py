"""Download one pinned npm package tarball (``npm pack``: no install, no scripts run) and check
its sha512 against the pin before anything is unpacked. Used by tests/ohif.py and tests/axe.py.

Standard library only: those scripts run before the project's virtual environment exists.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
from pathlib import Path


def sri_sha512(path: Path) -> str:
    """The file's Subresource-Integrity style digest (``sha512-<base64>``), as npm reports it."""
    digest = hashlib.sha512()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return "sha512-" + base64.b64encode(digest.digest()).decode()


def pack(package: str, version: str, integrity: str, work: Path, npm: str | None = None) -> Path:
    """``package@version``'s tarball in ``work``, checked against ``integrity``."""
    npm = npm or shutil.which("npm")
    if npm is None:
        raise RuntimeError(f"npm is not installed (apt-get install npm): cannot fetch {package}")
    out = subprocess.run(
        [npm, "pack", f"{package}@{version}", "--json", "--pack-destination", str(work)],
        check=True,
        capture_output=True,
        text=True,
        cwd=work,
    )
    [packed] = json.loads(out.stdout)
    tarball: Path = work / str(packed["filename"])
    actual = sri_sha512(tarball)
    if actual != integrity:
        raise RuntimeError(
            f"{tarball.name}: integrity {actual} is not the pinned {integrity}; not unpacked"
        )
    return tarball
