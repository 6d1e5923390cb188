"""The file spool: received DICOM files, written durably, named by hashes.

Layout under ``root``::

    objects/<aa>/<bb>/<sha256(study uid)>/<sha256(sop instance uid)>.dcm
    tmp/<random>.part

``aa``/``bb`` are the first two and next two hex digits of the study hash. No raw UID or AE
title ever becomes a path part, so a hostile UID cannot traverse out of the spool.

Durability: a file is written to ``tmp/`` (same filesystem), fsynced, renamed into place with
``os.replace`` and the destination directory (and each directory that had to be created, via
its parent) is fsynced. Any ``OSError`` removes the temporary file and raises
:class:`SpoolWriteError`; no partial or destination file is left behind.

Receiving a C-STORE: compute the SHA-256 of the bytes, name the file with
``relative_path_for(study_uid, sop_uid, sha256)`` (content-addressed), ``write_atomic`` it, then
record the instance in the database and commit, then acknowledge. Because the name includes the
content digest, a *different* copy of an already stored SOP instance (a CONFLICT) lands in its
own file and can never replace the original, and a retransmission of the same bytes rewrites an
identical file. Without the digest, writing before the database has classified the instance
would let a conflicting copy overwrite the original.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from storage.errors import SpoolWriteError, StorageError

logger = logging.getLogger(__name__)

OBJECTS_DIR = "objects"
TMP_DIR = "tmp"
PART_SUFFIX = ".part"
_FILE_MODE = 0o600  # the spool holds patient data: its owner only
_READ_CHUNK = 1024 * 1024
_HEX = frozenset("0123456789abcdef")


def uid_sha256(value: str) -> str:
    """Hex SHA-256 of a UID (or any identifier) as used for spool path parts."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class DiskUsage:
    """Space on the spool's filesystem, as an unprivileged process may use it."""

    free_bytes: int
    total_bytes: int


def disk_usage(path: Path) -> DiskUsage:
    """``os.statvfs`` of ``path``: blocks available to unprivileged users, and the size."""
    st = os.statvfs(path)
    return DiskUsage(free_bytes=st.f_bavail * st.f_frsize, total_bytes=st.f_blocks * st.f_frsize)


@dataclass(frozen=True)
class StagedFile:
    """A fully written and fsynced file in ``tmp/``, not yet in its place."""

    path: Path
    size: int
    sha256: str


class Spool:
    """Durable, traversal-proof file storage under ``root``.

    ``fsync`` is the function used to flush file and directory descriptors; by default
    ``os.fsync``, looked up at each call. Tests may pass a recorder or a failing one.
    """

    def __init__(self, root: Path, *, fsync: Callable[[int], None] | None = None) -> None:
        self._root = root.resolve()
        self._fsync_hook = fsync

    @property
    def root(self) -> Path:
        return self._root

    # -- naming ----------------------------------------------------------------------------

    def relative_path_for(
        self, study_uid: str, sop_instance_uid: str, sha256: str | None = None
    ) -> str:
        """The POSIX path, relative to ``root``, where an instance is stored.

        ``objects/<aa>/<bb>/<sha256(study uid)>/<sha256(sop uid)>.dcm``; with the content
        digest ``sha256`` the file name is ``<first 40 hex of sha256(sop uid)>-<first 16 hex
        of the content digest>.dcm`` instead, so that differing copies of one SOP instance get
        different files (every path part stays at most 64 characters).
        """
        study = uid_sha256(study_uid)
        sop = uid_sha256(sop_instance_uid)
        suffix = "" if sha256 is None else f"-{_checked_digest(sha256)[:16]}"
        name = f"{sop}.dcm" if sha256 is None else f"{sop[:40]}{suffix}.dcm"
        return f"{OBJECTS_DIR}/{study[:2]}/{study[2:4]}/{study}/{name}"

    def absolute(self, rel: str) -> Path:
        """Resolve a relative spool path; raise :class:`StorageError` if it leaves ``root``."""
        if not rel or "\x00" in rel or "\\" in rel:
            raise StorageError("invalid spool path")
        if PurePosixPath(rel).is_absolute():
            raise StorageError("spool paths must be relative")
        candidate = (self._root / rel).resolve()
        if candidate == self._root or not candidate.is_relative_to(self._root):
            raise StorageError("spool path points outside the spool")
        return candidate

    def tmp_dir(self) -> Path:
        """``root/tmp``, created if missing (same filesystem as the objects)."""
        path = self._root / TMP_DIR
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SpoolWriteError(f"cannot create the spool tmp directory: {exc.strerror}") from exc
        return path

    def new_tmp_path(self) -> Path:
        """A fresh, unused ``tmp/<random>.part`` path for a caller that streams to disk."""
        return self.tmp_dir() / f"{secrets.token_hex(16)}{PART_SUFFIX}"

    def check_writable(self) -> None:
        """Create, write and remove a small file in the spool; raises ``OSError`` if it can't
        (read-only mount, permissions, no space)."""
        path = self.new_tmp_path()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, b"xrayd")
            finally:
                os.close(fd)
        finally:
            _unlink_quietly(path)

    # -- writing ---------------------------------------------------------------------------

    def stage(self, chunks: Iterable[bytes] | bytes) -> StagedFile:
        """Write ``chunks`` to a new ``.part`` file, fsync it and return its size and hash."""
        if isinstance(chunks, bytes | bytearray | memoryview):
            chunks = [bytes(chunks)]
        tmp = self.new_tmp_path()
        digest = hashlib.sha256()
        size = 0
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, _FILE_MODE)
            with os.fdopen(fd, "wb") as fh:
                for chunk in chunks:
                    fh.write(chunk)
                    digest.update(chunk)
                    size += len(chunk)
                fh.flush()
                self._fsync_fd(fh.fileno())
        except OSError as exc:
            _unlink_quietly(tmp)
            raise SpoolWriteError(f"cannot write to the spool: {_reason(exc)}") from exc
        except BaseException:
            _unlink_quietly(tmp)
            raise
        return StagedFile(path=tmp, size=size, sha256=digest.hexdigest())

    def stage_file(self, tmp_path: Path) -> StagedFile:
        """Hash and fsync a file already written inside ``tmp/`` (e.g. streamed by the network
        layer). On error the file is removed and :class:`SpoolWriteError` raised."""
        tmp = self._checked_tmp(tmp_path)
        digest = hashlib.sha256()
        size = 0
        try:
            with tmp.open("rb") as fh:
                while block := fh.read(_READ_CHUNK):
                    digest.update(block)
                    size += len(block)
                self._fsync_fd(fh.fileno())
        except OSError as exc:
            _unlink_quietly(tmp)
            raise SpoolWriteError(f"cannot read back a spooled file: {_reason(exc)}") from exc
        return StagedFile(path=tmp, size=size, sha256=digest.hexdigest())

    def install(self, staged: StagedFile, rel: str) -> tuple[int, str]:
        """Rename a staged file to ``rel`` (replacing any file there) and fsync directories.

        Returns ``(size, sha256)``. On error neither the staged nor the destination file is
        left behind.
        """
        tmp = self._checked_tmp(staged.path)
        dest = self.absolute(rel)
        replaced = False
        try:
            self._make_dirs(dest.parent)
            tmp.replace(dest)  # os.replace: atomic on one filesystem
            replaced = True
            self._fsync_dir(dest.parent)
        except OSError as exc:
            _unlink_quietly(tmp)
            if replaced:
                _unlink_quietly(dest)
            raise SpoolWriteError(f"cannot move a file into the spool: {_reason(exc)}") from exc
        return staged.size, staged.sha256

    def discard(self, staged: StagedFile) -> None:
        """Remove a staged file that will not be installed (duplicate, conflict, rollback)."""
        _unlink_quietly(self._checked_tmp(staged.path))

    def write_atomic(
        self, rel: str, chunks: Iterable[bytes] | bytes, *, sha256: str | None = None
    ) -> tuple[int, str]:
        """Durably write ``chunks`` to ``rel``; returns ``(size, sha256 hex)``.

        If ``sha256`` is given the written bytes must have that digest, else nothing is
        installed and :class:`StorageError` is raised.
        """
        self.absolute(rel)  # refuse a bad path before writing anything
        expected = None if sha256 is None else _checked_digest(sha256)
        staged = self.stage(chunks)
        if expected is not None and staged.sha256 != expected:
            self.discard(staged)
            raise StorageError("the written bytes do not match the expected SHA-256")
        return self.install(staged, rel)

    def adopt_file(self, tmp_path: Path, rel: str) -> tuple[int, str]:
        """Hash, fsync and rename a file from ``tmp/`` to ``rel``; returns ``(size, sha256)``."""
        self.absolute(rel)
        return self.install(self.stage_file(tmp_path), rel)

    # -- maintenance and reading -----------------------------------------------------------

    def cleanup_tmp(self, older_than_seconds: float = 0) -> int:
        """Delete ``tmp/*.part`` files last modified at least ``older_than_seconds`` ago
        (left by crashes or aborted transfers); return how many were deleted."""
        tmp = self._root / TMP_DIR
        if not tmp.is_dir():
            return 0
        cutoff = time.time() - older_than_seconds
        removed = 0
        for part in tmp.glob(f"*{PART_SUFFIX}"):
            try:
                if part.is_file() and part.stat().st_mtime <= cutoff:
                    part.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        if removed:
            logger.info("removed leftover temporary spool files", extra={"count": removed})
        return removed

    def usage(self) -> DiskUsage:
        """Free and total bytes of the filesystem that holds the spool (``os.statvfs``)."""
        return disk_usage(self._root)

    def remove(self, rel: str) -> int:
        """Delete the file at ``rel`` (if it is there) and then its directory if that is now
        empty; returns the bytes freed (0 when the file was already gone)."""
        path = self.absolute(rel)
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            return 0
        parent = path.parent
        if parent != self._root and parent.parent != self._root:
            with contextlib.suppress(OSError):  # not empty, or already gone
                parent.rmdir()
        return size

    def exists(self, rel: str) -> bool:
        return self.absolute(rel).is_file()

    def read_bytes(self, rel: str) -> bytes:
        return self.absolute(rel).read_bytes()

    # -- helpers ---------------------------------------------------------------------------

    def _checked_tmp(self, tmp_path: Path) -> Path:
        tmp_root = (self._root / TMP_DIR).resolve()
        resolved = tmp_path.resolve()
        if resolved.parent != tmp_root:
            raise StorageError("temporary file is not inside the spool's tmp directory")
        return resolved

    def _make_dirs(self, directory: Path) -> None:
        """Create ``directory`` and missing parents, fsyncing each new entry's parent."""
        missing: list[Path] = []
        current = directory
        while not current.is_dir():
            missing.append(current)
            if current.parent == current:
                break
            current = current.parent
        for path in reversed(missing):
            path.mkdir(exist_ok=True)
            self._fsync_dir(path.parent)

    def _fsync_fd(self, fd: int) -> None:
        (self._fsync_hook or os.fsync)(fd)

    def _fsync_dir(self, directory: Path) -> None:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            self._fsync_fd(fd)
        finally:
            os.close(fd)


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        logger.warning("could not remove a temporary spool file")


def _checked_digest(value: str) -> str:
    digest = value.lower()
    if len(digest) != 64 or not set(digest) <= _HEX:
        raise StorageError("a SHA-256 digest must be 64 hex digits")
    return digest


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__
