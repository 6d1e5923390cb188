"""The bounded PDU reader gives pooled buffers back when a transfer breaks off mid-PDU."""

from __future__ import annotations

import queue
import struct
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from dicom_node import hardening
from dicom_node.streaming import POOL_BUFFERS, StreamingFile


class BreakingSocket:
    """Delivers ``data``, then ends: with a reset (ECONNRESET) or a clean end of stream."""

    def __init__(self, data: bytes, *, reset: bool) -> None:
        self.data = data
        self.pos = 0
        self.reset = reset

    def recv_into(self, view: memoryview, n: int) -> int:
        if self.pos >= len(self.data):
            if self.reset:
                raise ConnectionResetError(104, "Connection reset by peer")
            return 0
        k = min(n, len(view), len(self.data) - self.pos)
        view[:k] = self.data[self.pos : self.pos + k]
        self.pos += k
        return k


def _data_pdu(payload: bytes, context_id: int = 1) -> bytes:
    item = struct.pack(">LBB", len(payload) + 2, context_id, 0x00) + payload
    return struct.pack(">BBL", 0x04, 0, len(item)) + item


def _dul(sock: BreakingSocket, stream: StreamingFile) -> Any:
    """The parts of a DULServiceProvider the reader touches, in the established state."""
    return SimpleNamespace(
        socket=SimpleNamespace(socket=sock),
        event_queue=queue.Queue(),
        _recv_pdu=queue.Queue(),
        state_machine=SimpleNamespace(current_state="Sta6"),
        assoc=SimpleNamespace(
            dimse=SimpleNamespace(message=SimpleNamespace(_data_set_file=stream, context_id=1))
        ),
        _kill_thread=False,
        to_provider_queue=queue.Queue(),
        _idle_timer=SimpleNamespace(restart=lambda: None),
    )


@pytest.mark.parametrize("reset", [True, False], ids=["reset", "closed"])
def test_a_transfer_broken_off_mid_pdu_gives_every_buffer_back(tmp_path: Path, reset: bool) -> None:
    pdu = _data_pdu(b"x" * 4000)
    stream = StreamingFile(tmp_path / "a.part")
    dul = _dul(BreakingSocket(pdu[: len(pdu) // 2], reset=reset), stream)
    hardening.bounded_read_pdu(dul, 16384)
    stream.discard()
    assert dul.event_queue.get_nowait() == "Evt17"
    assert dul._xrayd_buffer_pool._free.qsize() == POOL_BUFFERS


def test_whole_data_pdus_reach_the_stream_before_the_reader_returns(tmp_path: Path) -> None:
    """Two complete fragments, then the peer stops sending: both are in the file."""
    first, second = b"a" * 3000, b"b" * 5000
    stream = StreamingFile(tmp_path / "b.part")
    dul = _dul(BreakingSocket(_data_pdu(first) + _data_pdu(second), reset=False), stream)
    ready = iter([True, False])  # data waiting after the first PDU, none after the second
    original = hardening._more_waiting
    hardening._more_waiting = lambda d, r: next(ready)  # type: ignore[assignment]
    try:
        hardening.bounded_read_pdu(dul, 16384)
    finally:
        hardening._more_waiting = original
    assert dul.event_queue.empty()  # nothing for the state machine: both went to the stream
    size, _ = stream.finish()
    assert size == len(first) + len(second)
    assert (tmp_path / "b.part").read_bytes() == first + second
    assert dul._xrayd_buffer_pool._free.qsize() == POOL_BUFFERS
    stream.discard()


def test_a_declared_length_costs_no_memory_until_its_bytes_arrive() -> None:
    """A PDU header declaring 4 MiB followed by 10 bytes and a close: the reader's buffer
    follows the bytes that came, not the length declared (before: 4 MiB at once)."""
    import socket
    import tracemalloc

    a, b = socket.socketpair()
    with a, b:
        b.sendall(b"\x00" * 10)
        b.close()
        tracemalloc.start()
        try:
            buf = hardening._recv_growing(a, bytearray(6), 6 + 4 * 1024 * 1024, None)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert len(buf) == 16
    assert peak < 4 * hardening.FIRST_CHUNK


def test_a_pdu_arriving_in_pieces_is_read_whole() -> None:
    import socket
    import threading

    payload = bytes(range(256)) * 4096  # 1 MiB, larger than the first chunk
    a, b = socket.socketpair()
    with a, b:
        sender = threading.Thread(target=b.sendall, args=(payload,))
        sender.start()
        buf = hardening._recv_growing(a, bytearray(b"HEADER"), 6 + len(payload), None)
        sender.join()
    assert bytes(buf) == b"HEADER" + payload


def test_the_artim_deadline_is_fixed_from_accept_and_the_idle_one_per_read() -> None:
    import socket
    import time

    from dicom_node.deadline import ReadDeadline

    a, b = socket.socketpair()
    with a, b:
        late = ReadDeadline(a, artim_seconds=5, idle_seconds=30, accepted_at=time.monotonic() - 6)
        with pytest.raises(TimeoutError):
            late.arm()
        fresh = ReadDeadline(a, artim_seconds=5, idle_seconds=30)
        fresh.arm()
        assert a.gettimeout() is not None and a.gettimeout() <= 5
        fresh.association_requested()
        assert a.gettimeout() == 30
        fresh.arm()
        assert a.gettimeout() == 30
