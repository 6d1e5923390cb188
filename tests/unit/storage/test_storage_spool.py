from __future__ import annotations

import errno
import hashlib
import os
import resource
import shutil
import signal
import stat
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from storage.errors import SpoolWriteError, StorageError
from storage.spool import Spool, uid_sha256

STUDY = "1.2.826.0.1.3680043.8.498.1"
SOP = "1.2.826.0.1.3680043.8.498.1.1.1"

HOSTILE_UIDS = [
    "../../etc/passwd",
    "/etc/passwd",
    "..",
    ".",
    "",
    "a" * 200,
    "1.2/../../../x",
    "C:\\Windows\\system32",
    "\x00evil",
    "CR1 ",
]


def all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_relative_path_layout(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    rel = spool.relative_path_for(STUDY, SOP)
    study_hash = hashlib.sha256(STUDY.encode()).hexdigest()
    sop_hash = hashlib.sha256(SOP.encode()).hexdigest()
    assert rel == f"objects/{study_hash[:2]}/{study_hash[2:4]}/{study_hash}/{sop_hash}.dcm"
    assert STUDY not in rel and SOP not in rel
    assert uid_sha256(STUDY) == study_hash


@pytest.mark.parametrize("uid", HOSTILE_UIDS)
def test_hostile_uids_stay_under_root(tmp_path: Path, uid: str) -> None:
    root = tmp_path / "spool"
    spool = Spool(root)
    rel = spool.relative_path_for(uid, uid)
    if uid:
        assert uid not in rel.split("/")
    assert all(part not in ("..", ".", "") for part in rel.split("/"))
    path = spool.absolute(rel)
    assert path.is_relative_to(root.resolve())
    size, digest = spool.write_atomic(rel, b"payload")
    assert (size, digest) == (7, hashlib.sha256(b"payload").hexdigest())
    assert all_files(tmp_path) == [path]  # nothing written outside the spool


def test_distinct_uids_get_distinct_paths(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    assert spool.relative_path_for("1.2", "1.2.3") != spool.relative_path_for("1.2", "1.2.4")
    assert spool.relative_path_for("1.2", "1.2.3") != spool.relative_path_for("1.3", "1.2.3")


@pytest.mark.parametrize(
    "rel",
    ["../x", "/etc/passwd", "objects/../../x", "", "objects/\x00", ".", "objects/..", "a\\..\\b"],
)
def test_absolute_refuses_paths_outside_root(tmp_path: Path, rel: str) -> None:
    spool = Spool(tmp_path / "spool")
    with pytest.raises(StorageError):
        spool.absolute(rel)
    with pytest.raises(StorageError):
        spool.write_atomic(rel, b"x")
    assert all_files(tmp_path) == []


def test_absolute_refuses_symlink_escape(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "objects").mkdir(parents=True)
    (root / "objects" / "link").symlink_to(outside, target_is_directory=True)
    spool = Spool(root)
    with pytest.raises(StorageError):
        spool.absolute("objects/link/file.dcm")


def test_write_atomic_roundtrip(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    rel = spool.relative_path_for(STUDY, SOP)
    chunks = [b"DICM", b"\x00" * 1000, b"end"]
    data = b"".join(chunks)
    assert not spool.exists(rel)
    size, digest = spool.write_atomic(rel, iter(chunks))
    assert size == len(data)
    assert digest == hashlib.sha256(data).hexdigest()
    assert spool.exists(rel)
    assert spool.read_bytes(rel) == data
    assert list(spool.tmp_dir().iterdir()) == []  # no .part left
    mode = stat.S_IMODE(spool.absolute(rel).stat().st_mode)
    assert not mode & stat.S_IWOTH


def test_write_atomic_replaces_existing_file(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    rel = spool.relative_path_for(STUDY, SOP)
    spool.write_atomic(rel, b"old")
    spool.write_atomic(rel, b"new")
    assert spool.read_bytes(rel) == b"new"


def test_fsyncs_file_destination_dir_and_created_parents(tmp_path: Path) -> None:
    synced: list[str] = []

    def recording_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        os.fsync(fd)

    root = tmp_path / "spool"
    spool = Spool(root, fsync=recording_fsync)
    rel = spool.relative_path_for(STUDY, SOP)
    spool.write_atomic(rel, b"data")
    dest = spool.absolute(rel)
    assert any(p.endswith(".part") and "/tmp/" in p for p in synced)  # the file itself
    assert str(dest.parent) in synced  # directory holding the new entry
    # each directory created on the way got its entry fsynced in its parent
    for created in (root / "objects", dest.parent.parent, dest.parent):
        assert str(created.parent.resolve()) in synced


def failing_chunks(err: int) -> Iterator[bytes]:
    yield b"x" * 4096
    raise OSError(err, os.strerror(err))


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EIO, errno.EACCES])
def test_write_error_leaves_nothing(tmp_path: Path, err: int) -> None:
    spool = Spool(tmp_path)
    rel = spool.relative_path_for(STUDY, SOP)
    with pytest.raises(SpoolWriteError):
        spool.write_atomic(rel, failing_chunks(err))
    assert all_files(tmp_path) == []


def test_fsync_error_leaves_nothing(tmp_path: Path) -> None:
    def broken_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "I/O error")

    spool = Spool(tmp_path, fsync=broken_fsync)
    rel = spool.relative_path_for(STUDY, SOP)
    with pytest.raises(SpoolWriteError):
        spool.write_atomic(rel, b"data")
    assert all_files(tmp_path) == []
    assert not spool.exists(rel)


def test_directory_fsync_error_removes_destination(tmp_path: Path) -> None:
    def fsync_fails_on_dirs(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EIO, "I/O error")
        os.fsync(fd)

    spool = Spool(tmp_path, fsync=fsync_fails_on_dirs)
    rel = spool.relative_path_for(STUDY, SOP)
    with pytest.raises(SpoolWriteError):
        spool.write_atomic(rel, b"data")
    assert all_files(tmp_path) == []


def test_real_file_size_limit_error_leaves_nothing(tmp_path: Path) -> None:
    """A real kernel write error (EFBIG from RLIMIT_FSIZE), no root needed."""
    spool = Spool(tmp_path)
    rel = spool.relative_path_for(STUDY, SOP)
    spool.tmp_dir()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, hard))
        with pytest.raises(SpoolWriteError):
            spool.write_atomic(rel, [b"x" * 65536] * 4)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert all_files(tmp_path) == []


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    mountpoint = tmp_path / "tiny"
    mountpoint.mkdir()
    # skip policy: mounting needs root (CAP_SYS_ADMIN), a property of the machine, not a
    # missing tool; the RLIMIT_FSIZE test above covers the same path everywhere
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", f"tmpfs-{uuid.uuid4().hex[:8]}", str(mountpoint)],
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=False)


def test_disk_full_on_real_filesystem_leaves_nothing(tiny_fs: Path) -> None:
    spool = Spool(tiny_fs)
    kept_rel = spool.relative_path_for(STUDY, "1.2.3")
    spool.write_atomic(kept_rel, b"first")
    rel = spool.relative_path_for(STUDY, SOP)
    with pytest.raises(SpoolWriteError):
        spool.write_atomic(rel, (b"\xff" * 65536 for _ in range(64)))  # 4 MiB > 1 MiB
    assert not spool.exists(rel)
    assert list(spool.tmp_dir().glob("*.part")) == []
    assert all_files(tiny_fs) == [spool.absolute(kept_rel)]
    assert spool.read_bytes(kept_rel) == b"first"


def test_stage_install_discard(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    rel = spool.relative_path_for(STUDY, SOP)
    staged = spool.stage(b"abc")
    assert staged.path.parent == spool.tmp_dir()
    assert (staged.size, staged.sha256) == (3, hashlib.sha256(b"abc").hexdigest())
    assert not spool.exists(rel)
    spool.install(staged, rel)
    assert spool.read_bytes(rel) == b"abc"
    other = spool.stage(b"zzz")
    spool.discard(other)
    assert list(spool.tmp_dir().iterdir()) == []


def test_adopt_file(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    tmp = spool.new_tmp_path()
    tmp.write_bytes(b"streamed")
    rel = spool.relative_path_for(STUDY, SOP)
    assert spool.adopt_file(tmp, rel) == (8, hashlib.sha256(b"streamed").hexdigest())
    assert not tmp.exists()
    assert spool.read_bytes(rel) == b"streamed"


def test_adopt_file_refuses_files_outside_tmp(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    outside = tmp_path / "elsewhere.part"
    outside.write_bytes(b"x")
    with pytest.raises(StorageError):
        spool.adopt_file(outside, spool.relative_path_for(STUDY, SOP))
    assert outside.exists()


def test_adopt_file_error_removes_temp_file(tmp_path: Path) -> None:
    def broken_fsync(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    spool = Spool(tmp_path, fsync=broken_fsync)
    tmp = spool.new_tmp_path()
    tmp.write_bytes(b"streamed")
    rel = spool.relative_path_for(STUDY, SOP)
    with pytest.raises(SpoolWriteError):
        spool.adopt_file(tmp, rel)
    assert all_files(tmp_path) == []


def test_cleanup_tmp(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    assert spool.cleanup_tmp() == 0
    old = spool.new_tmp_path()
    old.write_bytes(b"1")
    os.utime(old, (1_000_000, 1_000_000))
    fresh = spool.new_tmp_path()
    fresh.write_bytes(b"2")
    other = spool.tmp_dir() / "keep.txt"
    other.write_bytes(b"3")
    assert spool.cleanup_tmp(older_than_seconds=3600) == 1
    assert not old.exists() and fresh.exists()
    assert spool.cleanup_tmp() == 1
    assert not fresh.exists() and other.exists()


def test_content_addressed_paths(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    a = hashlib.sha256(b"a").hexdigest()
    b = hashlib.sha256(b"b").hexdigest()
    rel_a = spool.relative_path_for(STUDY, SOP, a)
    rel_b = spool.relative_path_for(STUDY, SOP, b)
    assert rel_a != rel_b
    assert rel_a.rsplit("/", 1)[0] == spool.relative_path_for(STUDY, SOP).rsplit("/", 1)[0]
    assert rel_a == spool.relative_path_for(STUDY, SOP, a.upper())
    assert all(len(part) <= 64 for part in rel_a.split("/"))
    assert STUDY not in rel_a and SOP not in rel_a
    spool.write_atomic(rel_a, b"a", sha256=a)
    spool.write_atomic(rel_b, b"b", sha256=b)
    assert spool.read_bytes(rel_a) == b"a"  # a differing copy never replaces the original
    with pytest.raises(StorageError):
        spool.relative_path_for(STUDY, SOP, "../../etc/passwd")


def test_write_atomic_checks_expected_digest(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    rel = spool.relative_path_for(STUDY, SOP)
    with pytest.raises(StorageError):
        spool.write_atomic(rel, b"data", sha256=hashlib.sha256(b"other").hexdigest())
    assert all_files(tmp_path) == []


def test_default_fsync_is_looked_up_at_call_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = Spool(tmp_path)

    def failing_fsync(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(SpoolWriteError):
        spool.write_atomic(spool.relative_path_for(STUDY, SOP), b"data")
    assert all_files(tmp_path) == []
