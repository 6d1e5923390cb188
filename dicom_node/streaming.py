"""Stream each C-STORE data set to disk as its fragments arrive, durable while it arrives.

pynetdicom can write a received data set to a temporary file fragment by fragment
(``_config.STORE_RECV_CHUNKED_DATASET``) instead of collecting it in memory. We give it our own
file object, created at a path of the sink's choosing (the spool's ``tmp/``, on the spool's
filesystem), that hashes the bytes as they pass and asks the kernel to start writing them to the
device every few MiB (``sync_file_range``), and a flusher thread of the file calls ``fdatasync``
whenever ``SYNC_BYTES`` more were written since its last one. The disk then works while the
network still delivers, and the ``fdatasync`` before the acknowledgement only waits for the
last stretch.

Why both: ``sync_file_range`` starts the guest's writeback but asks the device for no cache
flush, so on a virtual disk (or a drive with a volatile cache) the final ``fdatasync`` still
paid for the whole file: 16 ms per 10.5 MB image on the 2-core CI VM. Calling ``fdatasync`` in
the writer thread itself made the writer fall behind the network (the transfer of an image went
from 22 to 43 ms); in a thread of its own it overlaps both.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import hashlib
import logging
import os
import queue
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from pynetdicom import _config, dimse_messages

LOGGER = logging.getLogger(__name__)

WRITEBACK_BYTES = 2 * 1024 * 1024
#: the flusher makes the file durable whenever this many bytes were written since its last sync
SYNC_BYTES = 2 * 1024 * 1024
#: fragments (at most one PDU each) queued between the network thread and the writer
QUEUED_FRAGMENTS = 8
#: size of each pooled receive buffer, and how many one association has (see BufferPool)
POOL_BUFFER_BYTES = 1024 * 1024
POOL_BUFFERS = 4
_SYNC_FILE_RANGE_WRITE = 2
_STREAM_PATH_ATTR = "_xrayd_new_stream_path"
_STREAM_LIMIT_ATTR = "_xrayd_stream_max_bytes"
_STREAMS_ATTR = "_xrayd_open_streams"


@functools.cache
def _load_sync_file_range() -> Any:
    """libc's sync_file_range, looked up on first use (None where there is none)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        func = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint]
    func.restype = ctypes.c_int
    return func


class BufferPool:
    """A fixed set of reusable receive buffers for one association.

    The network thread fills a buffer with data-set bytes (several PDUs' worth), hands it to
    :meth:`StreamingFile.write_pooled`, and takes the next free one; the writer thread gives
    each back once it is on disk. Reusing them spares a fresh zero-filled allocation (and its
    page faults) per PDU, and handing over a megabyte at a time spares a thread hand-off per
    PDU. When all are in the writer's queue, :meth:`take` waits: back-pressure on the sender.
    """

    def __init__(self, count: int = POOL_BUFFERS, size: int = POOL_BUFFER_BYTES) -> None:
        self.size = size
        self._free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        for _ in range(count):
            self._free.put(bytearray(size))

    def take(self) -> bytearray:
        return self._free.get()

    def give(self, buffer: bytearray) -> None:
        self._free.put(buffer)


class _Pooled(NamedTuple):
    """A pooled buffer's first ``length`` bytes, queued for the writer."""

    buffer: bytearray
    length: int
    pool: BufferPool


class StreamingFile:
    """The file pynetdicom writes one data set into (meta header first, then fragments).

    ``write`` only queues the fragment: a writer thread of this file puts it on disk and starts
    its writeback, so that the network thread goes on receiving meanwhile, and hands it on to a
    hasher thread (SHA-256 costs about as much CPU as the write; in the writer it made the
    writer fall behind the network, in the network thread it slowed the transfer). The queue
    is bounded (back-pressure on the sender when the disk is slower than the network). A flusher
    thread makes the written bytes durable, ``SYNC_BYTES`` or more at a time; once the data set
    is complete (:meth:`end_of_data`) it makes the rest durable, while the caller may read the
    header, and :meth:`finish` waits for that.

    A write or sync error (disk full, I/O error) is remembered and later fragments are dropped,
    so that the DIMSE message still completes; :meth:`finish` then raises it and removes the file.

    With ``max_bytes``, a data set that grows past it is cut off the same way: ``too_large``
    turns true, the rest is received but not written, and the caller refuses the C-STORE.
    """

    def __init__(self, path: Path, max_bytes: int | None = None) -> None:
        self.path = path
        self.name = str(path)
        self.size = 0
        self.max_bytes = max_bytes
        #: bytes handed to this file so far (written or queued), counted on the network thread
        self.received = 0
        self.too_large = False
        self.error: OSError | None = None
        self.file = self  # pynetdicom calls ``.file.flush()``
        self._hash = hashlib.sha256()
        self._started_to = 0
        self._synced_to = 0
        self._sync_file_range = _load_sync_file_range()
        self._queue: queue.Queue[bytes | memoryview | _Pooled | None] = queue.Queue(
            maxsize=QUEUED_FRAGMENTS
        )
        self._to_hash: queue.Queue[bytes | memoryview | _Pooled | None] = queue.Queue(
            maxsize=QUEUED_FRAGMENTS
        )
        self._writer: threading.Thread | None = None
        self._hasher: threading.Thread | None = None
        self._flusher: threading.Thread | None = None
        self._changed = threading.Condition()  # guards size, _synced_to, _ended
        self._ended = False
        self._abandoned = False  # discarded: no final sync
        self._lock = threading.RLock()
        self._closed = False
        self._fd = os.open(self.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)

    def _over(self, length: int) -> bool:
        """Count ``length`` more bytes; True once the data set is past ``max_bytes``."""
        self.received += length
        if self.max_bytes is not None and self.received > self.max_bytes:
            self.too_large = True
        return self.too_large

    def write(self, data: bytes | bytearray | memoryview) -> int:
        length = len(data)
        if self._closed or self._ended or self.error is not None or self._over(length):
            return length
        self._start_threads()
        # pynetdicom passes fresh bytes, the fast path views of a buffer it never reuses:
        # either may be queued without a copy.
        self._queue.put(data if isinstance(data, bytes | memoryview) else bytes(data))
        return length

    def write_pooled(self, buffer: bytearray, length: int, pool: BufferPool) -> None:
        """Queue ``buffer[:length]``; the buffer goes back to ``pool`` once written (or
        dropped, after an error or once the stream ended)."""
        if self._closed or self._ended or self.error is not None or self._over(length):
            pool.give(buffer)
            return
        self._start_threads()
        self._queue.put(_Pooled(buffer, length, pool))

    def _start_threads(self) -> None:
        if self._writer is None:
            self._writer = threading.Thread(target=self._run, name="stream-writer", daemon=True)
            self._hasher = threading.Thread(
                target=self._hash_loop, name="stream-hasher", daemon=True
            )
            self._flusher = threading.Thread(
                target=self._flush_loop, name="stream-flusher", daemon=True
            )
            self._writer.start()
            self._hasher.start()
            self._flusher.start()

    def _run(self) -> None:
        """Write each chunk, then pass it on to the hasher (the disk is the slower part)."""
        try:
            while (item := self._queue.get()) is not None:
                try:
                    if isinstance(item, _Pooled):
                        self._write_chunk(memoryview(item.buffer)[: item.length])
                    else:
                        self._write_chunk(item)
                finally:
                    self._to_hash.put(item)
        finally:
            self._to_hash.put(None)

    def _hash_loop(self) -> None:
        """Hash the chunks in file order; give pooled buffers back."""
        while (item := self._to_hash.get()) is not None:
            if isinstance(item, _Pooled):
                try:
                    if self.error is None:
                        self._hash.update(memoryview(item.buffer)[: item.length])
                finally:
                    item.pool.give(item.buffer)
            elif self.error is None:
                self._hash.update(item)

    def _write_chunk(self, chunk: bytes | memoryview) -> None:
        if self.error is not None:
            return  # drop what is left after a failure
        try:
            view = memoryview(chunk)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError as exc:
            self.error = exc
            return
        with self._changed:
            self.size += len(chunk)
            if self.size - self._synced_to >= SYNC_BYTES:
                self._changed.notify_all()
        pending = self.size - self._started_to
        if self._sync_file_range is not None and pending >= WRITEBACK_BYTES:
            self._sync_file_range(
                self._fd,
                self._started_to,
                pending,
                _SYNC_FILE_RANGE_WRITE,
            )
            self._started_to = self.size

    def _flush_loop(self) -> None:
        """Sync a stretch whenever ``SYNC_BYTES`` more were written; at the end, the rest."""
        while self.error is None:
            with self._changed:
                while not self._ended and self.size - self._synced_to < SYNC_BYTES:
                    self._changed.wait()
                last = self._ended
                target = self.size
            if last and (target == self._synced_to or self._abandoned):
                return
            try:
                os.fdatasync(self._fd)
            except OSError as exc:
                self.error = exc  # the writer drops the rest; finish() raises it
                return
            with self._changed:
                self._synced_to = target
            if last:
                return

    def end_of_data(self, *, abandon: bool = False) -> None:
        """The data set is complete: write what is queued, then make the rest durable in the
        background (:meth:`finish` waits for it), unless ``abandon``. Idempotent."""
        with self._lock:
            writer = self._writer
            if writer is not None:
                self._queue.put(None)
                writer.join()
                self._writer = None
            with self._changed:
                self._ended = True
                self._abandoned = self._abandoned or abandon
                self._changed.notify_all()

    def _join_flusher(self, *, abandon: bool = False) -> None:
        """After :meth:`end_of_data`, wait for the hasher and the flusher to finish."""
        self.end_of_data(abandon=abandon)
        for name in ("_hasher", "_flusher"):
            thread: threading.Thread | None = getattr(self, name)
            if thread is not None:
                thread.join()
                setattr(self, name, None)

    def flush(self) -> None:
        """Nothing to do: :meth:`end_of_data` and :meth:`finish` write and sync."""

    def finish(self) -> tuple[int, str]:
        """Wait until the bytes are durable (``fdatasync``) and return (size, sha256 hex).

        Raises the write error, if any, or the sync's ``OSError``; the file is then removed.
        """
        with self._lock:
            self._join_flusher()
            try:
                if self.error is not None:
                    raise self.error
                if self._synced_to != self.size or self.size == 0:
                    os.fdatasync(self._fd)  # an empty file, or no flusher ever ran
                    self._synced_to = self.size
            except OSError as exc:
                self.error = exc
                self._close_locked()
                _unlink(self.path)
                raise
        return self.size, self._hash.hexdigest()

    def _close_locked(self) -> None:
        self._join_flusher(abandon=True)  # closed unfinished: nobody acknowledges it
        self._closed = True
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    @property
    def closed(self) -> bool:
        """True once closed (handled, discarded, or failed and removed)."""
        return self._closed

    def close(self) -> None:
        with self._lock:
            self._close_locked()

    def discard(self) -> None:
        """Close and remove the file (it may already have been moved away: that is fine)."""
        self.close()
        _unlink(self.path)


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError:
        LOGGER.warning("could not remove a partial received file")


_original_factory = getattr(dimse_messages, "NamedTemporaryFile")  # noqa: B009
_install_lock = threading.Lock()


def _factory(*args: Any, **kwargs: Any) -> Any:
    thread = threading.current_thread()
    new_path = getattr(thread, _STREAM_PATH_ATTR, None)
    if new_path is None:  # not one of our associations: pynetdicom's own behaviour
        return _original_factory(*args, **kwargs)
    stream = StreamingFile(new_path(), getattr(thread, _STREAM_LIMIT_ATTR, None))
    open_streams = [s for s in getattr(thread, _STREAMS_ATTR, ()) if not s.closed]
    open_streams.append(stream)
    setattr(thread, _STREAMS_ATTR, open_streams)
    return stream


def discard_unfinished(thread: threading.Thread) -> int:
    """Remove every data set streamed on ``thread`` (a DUL thread) that nobody handled.

    A data set can be complete and queued for its handler when the association ends (aborted
    by the peer, or over a limit): then no one answers it, and no connection-close handler
    sees it any more (its DIMSE message is no longer the current one). Returns the count.
    """
    left = [s for s in getattr(thread, _STREAMS_ATTR, ()) if not s.closed]
    for stream in left:
        stream.discard()
    setattr(thread, _STREAMS_ATTR, [])
    return len(left)


def install_streaming() -> None:
    """Make pynetdicom stream C-STORE data sets through :class:`StreamingFile` (idempotent)."""
    with _install_lock:
        _config.STORE_RECV_CHUNKED_DATASET = True
        setattr(dimse_messages, "NamedTemporaryFile", _factory)  # noqa: B010


NewPath = Callable[[], Path]
"""Gives a fresh, unused file path where the sink wants a received data set (its spool's tmp/)."""


def stream_into(thread: threading.Thread, new_path: NewPath, max_bytes: int | None = None) -> None:
    """Data sets decoded on ``thread`` (an association's DUL thread) go to ``new_path()``,
    each cut off past ``max_bytes`` (see :class:`StreamingFile`)."""
    setattr(thread, _STREAM_PATH_ATTR, new_path)
    setattr(thread, _STREAM_LIMIT_ATTR, max_bytes)
