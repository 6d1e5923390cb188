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
