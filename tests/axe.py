"""axe-core (the npm package ``axe-core``, pinned) for the accessibility browser test: its
``axe.min.js`` fetched once into ``.cache/axe/<version>/`` and injected into each page by
Playwright (tests/e2e/test_accessibility.py).

``npm pack`` downloads the package tarball alone (no install, no scripts run); its sha512 is
checked against :data:`INTEGRITY` before anything is unpacked, and only ``axe.min.js`` (and the
licence) are taken from it.

Standard library only, so that ``python3 tests/axe.py fetch`` (``make axe``) runs before the
project's virtual environment exists.
"""

from __future__ import annotations

import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

from npm_pack import pack

PACKAGE = "axe-core"
VERSION = "4.14.1"
#: ``npm view axe-core@4.14.1 dist.integrity``: the tarball must hash to this.
INTEGRITY = (
    "sha512-"
    "FHfa+lmNjQZfJz1q8wKqIDwC6DExcHt/pkjNQb09a3NPjCKg2rhu5qb2S4r76ASyFNNtuFooJpZe37OgudVGtQ=="
)
REPO = Path(__file__).resolve().parents[1]
CACHE = REPO / ".cache" / "axe" / VERSION
#: the files taken from the tarball (``package/<name>``)
FILES = ("axe.min.js", "LICENSE")
#: written into the cache after a complete unpack: a half-written script is never used
STAMP = "complete"


def script_path(cache: Path = CACHE) -> Path | None:
    """``axe.min.js`` of the pinned version, or None while it has not been fetched."""
    script = cache / "axe.min.js"
    if (cache / STAMP).is_file() and script.is_file():
        return script
    return None


def fetch(cache: Path = CACHE, npm: str | None = None) -> Path:
    """Download (``npm pack``), check and unpack the pinned ``axe.min.js``; idempotent."""
    done = script_path(cache)
    if done is not None:
        return done
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache, prefix="fetch-") as tmp:
        work = Path(tmp)
        tarball = pack(PACKAGE, VERSION, INTEGRITY, work, npm)
        with tarfile.open(tarball, "r:gz") as tar:
            for name in FILES:
                member = tar.getmember(f"package/{name}")
                if not member.isfile():
                    raise RuntimeError(f"{tarball.name}: package/{name} is not a plain file")
                source = tar.extractfile(member)
                if source is None:
                    raise RuntimeError(f"{tarball.name}: cannot read package/{name}")
                with source, (cache / name).open("wb") as target:
                    shutil.copyfileobj(source, target)
    (cache / STAMP).write_text(f"{PACKAGE}@{VERSION} {INTEGRITY}\n")
    return cache / "axe.min.js"


def main(argv: list[str]) -> int:
    if argv[1:] == ["fetch"]:
        fetched = fetch()
        print(f"{PACKAGE}@{VERSION}: {fetched.relative_to(REPO)} ({INTEGRITY[:19]}... checked)")
        return 0
    if argv[1:] == ["path"]:
        script = script_path()
        print(script or "")
        return 0 if script else 1
    print(f"usage: {argv[0]} fetch|path", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
