"""StreamingFile: a flusher thread makes the data durable in stretches while it arrives."""

from __future__ import annotations

import errno
import hashlib
import os
import threading
from pathlib import Path

import pytest

from dicom_node import streaming
from dicom_node.streaming import SYNC_BYTES, BufferPool, StreamingFile

FRAGMENT = 128 * 1024
WAIT = 60.0  # seconds: a bound on waiting for the flusher, never a synchronisation by sleep


class Syncs:
    """Records the file's size at each fdatasync (the real call still runs, unless failing)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, fail: bool = False) -> None:
        self.sizes: list[int] = []
        self.threads: list[str] = []
        self.happened = threading.Event()
        self._fail = fail
        self._real = os.fdatasync
        monkeypatch.setattr(streaming.os, "fdatasync", self)

    def __call__(self, fd: int) -> None:
        self.sizes.append(os.fstat(fd).st_size)
        self.threads.append(threading.current_thread().name)
        self.happened.set()
        if self._fail:
            raise OSError(errno.EIO, "Input/output error")
        self._real(fd)


def _fragments(total: int) -> list[bytes]:
    data = os.urandom(total)
    return [data[i : i + FRAGMENT] for i in range(0, total, FRAGMENT)]


def test_stretches_are_synced_while_the_data_arrives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    syncs = Syncs(monkeypatch)
    total = 3 * SYNC_BYTES + 3 * FRAGMENT + 17
    fragments = _fragments(total)
    first = SYNC_BYTES // FRAGMENT + 1  # just past one stretch
    stream = StreamingFile(tmp_path / "a.part")
    for fragment in fragments[:first]:
        stream.write(fragment)
    # The flusher syncs a first stretch while the data set is still incomplete.
    assert syncs.happened.wait(WAIT)
    assert SYNC_BYTES <= syncs.sizes[0] <= first * FRAGMENT
    assert syncs.threads[0] == "stream-flusher"
    for fragment in fragments[first:]:
        stream.write(fragment)
    size, digest = stream.finish()
    stream.close()

    whole = b"".join(fragments)
    assert size == total
    assert digest == hashlib.sha256(whole).hexdigest()
    assert (tmp_path / "a.part").read_bytes() == whole
    assert syncs.sizes[-1] == total  # the last stretch is durable before finish() returns
    assert syncs.sizes == sorted(syncs.sizes)


def test_the_last_stretch_is_synced_after_end_of_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """end_of_data() hands the final sync to the flusher; finish() waits for it."""
    syncs = Syncs(monkeypatch)
    stream = StreamingFile(tmp_path / "b.part")
    stream.write(b"x" * FRAGMENT)  # under one stretch: no sync while arriving
    stream.end_of_data()
    assert syncs.happened.wait(WAIT)
    assert syncs.sizes == [FRAGMENT]
    assert syncs.threads == ["stream-flusher"]
    assert stream.finish()[0] == FRAGMENT
    stream.close()
    assert syncs.sizes == [FRAGMENT]  # finish() found it durable already


def test_an_empty_file_is_still_synced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    syncs = Syncs(monkeypatch)
    stream = StreamingFile(tmp_path / "c.part")
    assert stream.finish() == (0, hashlib.sha256(b"").hexdigest())
    stream.close()
    assert syncs.sizes == [0]


def test_a_discarded_stream_is_not_synced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    syncs = Syncs(monkeypatch)
    path = tmp_path / "d.part"
    stream = StreamingFile(path)
    stream.write(b"x" * FRAGMENT)
    stream.discard()
    assert syncs.sizes == []
    assert not path.exists()


def test_a_failed_sync_mid_stream_fails_finish_and_removes_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    syncs = Syncs(monkeypatch, fail=True)
    path = tmp_path / "e.part"
    stream = StreamingFile(path)
    fragments = _fragments(3 * SYNC_BYTES)
    sent = 0
    while not syncs.happened.is_set() and sent < len(fragments):
        stream.write(fragments[sent])
        sent += 1
    assert syncs.happened.wait(WAIT)
    for fragment in fragments[sent:]:
        stream.write(fragment)  # dropped after the failure, not raised
    with pytest.raises(OSError) as raised:
        stream.finish()
    assert raised.value.errno == errno.EIO
    assert syncs.sizes[0] >= SYNC_BYTES
    assert len(syncs.sizes) == 1  # the flusher stopped at the first failure
    assert not path.exists()


def _take(pool: BufferPool) -> bytearray:
    """A free buffer of ``pool``, waiting at most WAIT for the writer to give one back."""
    return pool._free.get(timeout=WAIT)


def _fill(pool: BufferPool, data: bytes) -> bytearray:
    """A pooled buffer starting with ``data``; the rest is junk that must never be written."""
    buffer = _take(pool)
    buffer[:] = b"\xee" * len(buffer)
    buffer[: len(data)] = data
    return buffer


def test_pooled_buffers_are_written_in_order_with_plain_writes_and_given_back(
    tmp_path: Path,
) -> None:
    pool = BufferPool(count=2, size=64 * 1024)
    pieces = [os.urandom(n) for n in (1000, 60_000, 17, 64 * 1024, 5, 1, 33_333, 2048)]
    stream = StreamingFile(tmp_path / "f.part")
    # plain, pooled, plain, pooled, pooled (a buffer given back and filled again), plain, ...
    stream.write(pieces[0])
    stream.write_pooled(_fill(pool, pieces[1]), len(pieces[1]), pool)
    stream.write(pieces[2])
    stream.write_pooled(_fill(pool, pieces[3]), len(pieces[3]), pool)  # a full buffer
    stream.write_pooled(_fill(pool, pieces[4]), len(pieces[4]), pool)  # waits for one back
    stream.write(bytearray(pieces[5]))
    stream.write_pooled(_fill(pool, pieces[6]), len(pieces[6]), pool)
    stream.write(memoryview(pieces[7]))
    size, digest = stream.finish()
    stream.close()

    whole = b"".join(pieces)
    assert size == len(whole)
    assert digest == hashlib.sha256(whole).hexdigest()
    assert (tmp_path / "f.part").read_bytes() == whole
    assert pool._free.qsize() == 2  # every buffer is back


def test_pooled_buffers_after_a_write_error_go_back_and_finish_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "g.part"
    stream = StreamingFile(path)
    gate = threading.Event()
    attempts: list[int] = []
    real_write = os.write

    def failing_write(fd: int, data: bytes | memoryview) -> int:
        if fd != stream._fd:
            return real_write(fd, data)
        attempts.append(len(data))
        assert gate.wait(WAIT)  # hold the writer until the next buffers are queued behind
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", failing_write)  # the writer thread's os.write
    pool = BufferPool(count=3, size=4096)
    stream.write_pooled(_fill(pool, b"a" * 4096), 4096, pool)  # its write fails
    stream.write_pooled(_fill(pool, b"b" * 100), 100, pool)  # queued: dropped after the error
    stream.write(b"c" * 10)  # queued: dropped too
    stream.write_pooled(_fill(pool, b"d" * 200), 200, pool)
    assert pool._free.qsize() == 0
    gate.set()
    with pytest.raises(OSError) as raised:
        stream.finish()
    assert raised.value.errno == errno.ENOSPC
    assert attempts == [4096]  # nothing was written after the failure
    assert pool._free.qsize() == 3
    assert not path.exists()
    stream.write_pooled(_take(pool), 4096, pool)  # after the failure: straight back
    assert pool._free.qsize() == 3


@pytest.mark.parametrize("how", ["end_of_data", "discard"])
def test_pooled_buffer_after_the_end_goes_back_at_once(tmp_path: Path, how: str) -> None:
    path = tmp_path / "h.part"
    pool = BufferPool(count=2, size=4096)
    stream = StreamingFile(path)
    stream.write(b"abc")
    if how == "end_of_data":
        stream.end_of_data()
    else:
        stream.discard()
    stream.write_pooled(_fill(pool, b"late"), 4, pool)
    assert pool._free.qsize() == 2  # given back in the call, not by a writer
    assert stream._writer is None  # and no writer was started again for it
    if how == "end_of_data":
        assert stream.finish() == (3, hashlib.sha256(b"abc").hexdigest())
        stream.close()
        assert path.read_bytes() == b"abc"
    else:
        assert not path.exists()


def test_data_sets_nobody_handled_are_discarded_when_the_association_ends(tmp_path: Path) -> None:
    """A data set complete but never answered (the association ended first) leaves no file:
    the fuzzer found three such files in 4,239 cases before."""
    import itertools

    names = itertools.count()
    thread = threading.current_thread()
    streaming.stream_into(thread, lambda: tmp_path / f"{next(names)}.part")
    try:
        handled = streaming._factory()
        handled.write(b"x" * 100)
        handled.end_of_data()
        handled.discard()  # what the C-STORE handler does once it is done
        orphan = streaming._factory()
        orphan.write(b"y" * 100)
        orphan.end_of_data()
        assert streaming.discard_unfinished(thread) == 1
        assert list(tmp_path.iterdir()) == []
    finally:
        for attr in ("_xrayd_new_stream_path", "_xrayd_stream_max_bytes", "_xrayd_open_streams"):
            if hasattr(thread, attr):
                delattr(thread, attr)
