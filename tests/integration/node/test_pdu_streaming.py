"""The receive loop of dicom_node.hardening: data-set PDUs read straight into pooled buffers.

A P-DATA-TF that carries exactly one non-final data-set fragment is read into the
association's :class:`~dicom_node.streaming.BufferPool`; any other P-DATA-TF (several PDV items,
the last fragment, a command) is read whole, after the pooled bytes before it were handed on.
These tests mix both kinds within one data set, recycle tiny buffers many times over several
data sets on one association, and cut transfers off between and inside PDUs.
"""

from __future__ import annotations

import itertools
import socket
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom.dimse_messages import C_STORE_RQ, DIMSEMessage
from pynetdicom.pdu_primitives import P_DATA

from dicom_node import hardening
from dicom_node.scu import echo, store_datasets
from dicom_node.streaming import POOL_BUFFER_BYTES, POOL_BUFFERS, BufferPool
from storage.schema import Instance

from dicom_factory import make_radiograph, save
from node_helpers import remote, rows, store_cut_off, stored_file

StartNode = Callable[..., Any]

#: buffers of the tiny pool: smaller than one PDU's fragment, so that PDUs span buffers
TINY_BUFFER = 10_000
TINY_COUNT = 3


def _data_set_bytes(raw: bytes) -> bytes:
    """A Part 10 file's bytes after its own file meta header."""
    return raw[144 + struct.unpack("<I", raw[140:144])[0] :]


def assert_stored_byte_for_byte(node: Any, tmp_path: Path, ds: Dataset) -> None:
    expected = save(ds, tmp_path / f"{ds.SOPInstanceUID}.dcm").read_bytes()
    stored = stored_file(node, ds.SOPInstanceUID).read_bytes()
    assert _data_set_bytes(stored) == _data_set_bytes(expected)
    assert pydicom.dcmread(stored_file(node, ds.SOPInstanceUID)) == ds


class Pools:
    """Every BufferPool the node makes (of ``count`` x ``size`` bytes), with the takes counted."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, count: int, size: int) -> None:
        self.count = count
        self.made: list[BufferPool] = []
        self.taken = 0
        pools = self

        class CountingPool(BufferPool):
            def __init__(self) -> None:
                super().__init__(count, size)
                pools.made.append(self)

            def take(self) -> bytearray:
                pools.taken += 1  # only the association's DUL thread takes
                return super().take()

        monkeypatch.setattr(hardening, "BufferPool", CountingPool)

    def all_back(self) -> bool:
        return all(pool._free.qsize() == self.count for pool in self.made)


class Paths:
    """Counts how the node's reader handled the data-set PDUs."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.pooled = 0  # lone fragments read into pooled buffers
        self.whole = 0  # PDUs of several fragments, read whole and written as they are
        real_receive = hardening._Filler.receive
        real_fragments = hardening.stream_data_fragments

        def receive(filler: Any, sock: socket.socket, count: int, *rest: Any) -> bool:
            self.pooled += 1
            return real_receive(filler, sock, count, *rest)

        def fragments(dul: Any, buf: bytearray) -> bool:
            done = real_fragments(dul, buf)
            self.whole += done
            return done

        monkeypatch.setattr(hardening._Filler, "receive", receive)
        monkeypatch.setattr(hardening, "stream_data_fragments", fragments)


def send_grouped_fragments(monkeypatch: pytest.MonkeyPatch, groups: list[int]) -> list[int]:
    """Make this process's C-STORE requests carry their data-set fragments in P-DATA-TF PDUs
    of ``groups[0]``, ``groups[1]``, ... PDV items, cycling (pynetdicom sends one per PDU).

    The fragments are half the usual size, so that two still fit in the negotiated maximum.
    Returns the PDV count of every data-set PDU sent, in order.
    """
    sent: list[int] = []
    original = DIMSEMessage.encode_msg

    def encode_msg(self: Any, context_id: int, max_pdu_length: int) -> Iterator[P_DATA]:
        data: list[tuple[int, bytes]] = []
        for pdata in original(self, context_id, max_pdu_length // 2):
            [(cx, value)] = pdata.presentation_data_value_list
            if value[0] & 0x01:  # a command fragment: as pynetdicom sends it
                yield pdata
            else:
                data.append((cx, value))
        sizes = itertools.cycle(groups)
        while data:
            pdata = P_DATA()
            size = next(sizes)
            pdata.presentation_data_value_list.extend(data[:size])  # as pynetdicom appends
            data = data[size:]
            sent.append(len(pdata.presentation_data_value_list))
            yield pdata

    monkeypatch.setattr(C_STORE_RQ, "encode_msg", encode_msg)
    return sent


@pytest.mark.parametrize(("name", "groups"), [("pairs", [2]), ("mixed", [1, 2])])
def test_pdus_of_several_data_set_fragments_are_stored_byte_for_byte(
    start_node: StartNode,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    groups: list[int],
) -> None:
    node = start_node(node={"max_pdu_bytes": 16384})
    paths = Paths(monkeypatch)
    sent = send_grouped_fragments(monkeypatch, groups)
    datasets = [make_radiograph(rows=700, cols=600, seed=s) for s in (1, 2)]
    assert store_datasets(remote(node), "MODALITY", datasets) == [0, 0]
    for ds in datasets:
        assert_stored_byte_for_byte(node, tmp_path, ds)
    # the sender really sent PDUs of two fragments (and, mixed, of one in between)
    assert len(sent) > 2 * 40 and sent.count(2) > 2 * 20
    assert paths.whole > 2 * 20  # those of two were written from the PDU as read
    if name == "mixed":
        assert sent.count(1) > 2 * 20
        assert paths.pooled > 2 * 20  # the lone ones went into pooled buffers in between
    else:
        assert paths.pooled == 0


@pytest.mark.parametrize(
    ("pool", "max_pdu", "shape", "count"),
    [
        # several data sets on one association, each through 3 buffers of 10 kB some 80 times
        ("tiny", 16384, (700, 600), 3),
        # the node's own pool (4 x 1 MiB), each data set larger than all its buffers together
        ("default", 131072, (1536, 1536), 2),
    ],
)
def test_pooled_buffers_are_recycled_within_and_across_data_sets(
    start_node: StartNode,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    pool: str,
    max_pdu: int,
    shape: tuple[int, int],
    count: int,
) -> None:
    if pool == "tiny":
        pools = Pools(monkeypatch, TINY_COUNT, TINY_BUFFER)
    else:
        pools = Pools(monkeypatch, POOL_BUFFERS, POOL_BUFFER_BYTES)
    node = start_node(node={"max_pdu_bytes": max_pdu})
    paths = Paths(monkeypatch)
    datasets = [make_radiograph(rows=shape[0], cols=shape[1], seed=s) for s in range(count)]
    assert store_datasets(remote(node), "MODALITY", datasets) == [0] * count
    for ds in datasets:
        assert_stored_byte_for_byte(node, tmp_path, ds)
    assert len(pools.made) == 1  # one pool for the association, used by every data set
    # all but the first and last fragment of each data set went through it
    pooled_bytes = sum(len(ds.PixelData) - 2 * max_pdu for ds in datasets)
    assert pools.taken * pools.made[0].size >= pooled_bytes
    assert pools.taken > count * pools.count  # each buffer used again and again
    assert paths.pooled > count * 10
    assert pools.all_back()  # every buffer given back once its data set was answered


@pytest.mark.parametrize("where", ["between_pdus", "inside_a_pdu"])
def test_transfer_cut_off_with_pooled_buffers_leaves_nothing_behind(
    closing_node: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    where: str,
) -> None:
    caplog.set_level("INFO", logger="dicom_node.hardening")
    pools = Pools(monkeypatch, TINY_COUNT, TINY_BUFFER)
    node, closed = closing_node(node={"max_pdu_bytes": 4096})
    paths = Paths(monkeypatch)
    sent = {"pdata": 0}

    def cut(event: Any) -> None:  # runs on the sender's DUL thread
        if type(event.pdu).__name__ != "P_DATA_TF":
            return
        sent["pdata"] += 1
        if sent["pdata"] != 40:  # well into the 2 MB data set (fragments of 4 kB)
            return
        transport = event.assoc.dul.socket
        raw: socket.socket = transport.socket
        if where == "between_pdus":
            raw.shutdown(socket.SHUT_RDWR)
            return

        def half_then_cut(data: bytes) -> None:  # the 41st PDU: half of it, then nothing
            del transport.send  # later PDUs: pynetdicom's send, which finds the socket shut
            raw.sendall(data[: len(data) // 2])
            raw.shutdown(socket.SHUT_RDWR)

        transport.send = half_then_cut

    store_cut_off(node, closed, cut)
    assert sent["pdata"] >= 40
    assert paths.pooled >= 30  # the data set was streaming through the pool when cut off
    # the pooled read's own message (the whole-PDU read adds byte counts to it)
    cut_inside = any(r.getMessage() == "connection closed mid-PDU" for r in caplog.records)
    assert cut_inside == (where == "inside_a_pdu")
    assert list(node.storage.spool.tmp_dir().iterdir()) == []
    assert rows(node, Instance) == []
    assert len(pools.made) == 1 and pools.all_back()  # the half-filled buffer was dropped
    assert echo(remote(node), "MODALITY") == 0
