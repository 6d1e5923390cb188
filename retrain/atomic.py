"""Publishing a candidate bundle directory atomically.

A bundle is built in ``<out_dir>/.<version>.partial-<random>``; when complete, every file and
directory in it is fsynced, it is renamed to ``<out_dir>/<version>`` and ``out_dir`` is fsynced.
A crash at any moment leaves either no trace at the final path or the whole bundle there; a
left-over ``.partial-`` directory is removed by :func:`clean_partial` (call it before a run,
when no other run can be writing into ``out_dir``).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import tempfile
from pathlib import Path

__all__ = [
    "PARTIAL_MARK",
    "check_version",
    "clean_partial",
    "fsync_tree",
    "new_partial_dir",
    "publish",
    "write_file_atomic",
]

PARTIAL_MARK = ".partial-"
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")


def check_version(version: str) -> str:
    """``version`` if it is a safe directory name (letters, digits, ``._+-``; max 64)."""
    if not _VERSION.fullmatch(version) or ".." in version:
        raise ValueError(f"not a usable model version: {version!r}")
    return version


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a fsynced temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)  # fchmod ignores the umask: owner only
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_path(path.parent)


def new_partial_dir(out_dir: Path, version: str) -> Path:
    """A fresh, empty ``<out_dir>/.<version>.partial-<random>`` directory."""
    check_version(version)
    out_dir.mkdir(parents=True, exist_ok=True)
    partial = out_dir / f".{version}{PARTIAL_MARK}{secrets.token_hex(6)}"
    partial.mkdir(mode=0o700)
    return partial


def fsync_tree(root: Path) -> None:
    """fsync every regular file and directory under ``root`` (directories after contents)."""
    for dirpath, _dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames:
            path = Path(dirpath) / name
            if path.is_file() and not path.is_symlink():
                _fsync_path(path)
        _fsync_path(Path(dirpath))


def publish(partial: Path, final: Path) -> Path:
    """Move the complete ``partial`` directory to ``final`` (same parent), durably.

    Raises ``FileExistsError`` if ``final`` exists (a version is never overwritten).
    """
    if partial.parent.resolve() != final.parent.resolve():
        raise ValueError("a partial bundle is published within its own directory")
    if final.exists() or final.is_symlink():
        raise FileExistsError(f"{final} exists already")
    fsync_tree(partial)
    partial.rename(final)
    _fsync_path(final.parent)
    return final


def clean_partial(out_dir: Path) -> list[Path]:
    """Remove the ``.partial-`` directories left in ``out_dir`` by interrupted runs."""
    if not out_dir.is_dir():
        return []
    removed: list[Path] = []
    for entry in sorted(out_dir.iterdir()):
        if entry.name.startswith(".") and PARTIAL_MARK in entry.name and not entry.is_symlink():
            if entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
    if removed:
        _fsync_path(out_dir)
    return removed
