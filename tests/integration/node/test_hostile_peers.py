"""Hostile peers against a live listener: stalled connections, one address taking every slot,
oversized commands and data sets. Each test waits for the server's own action (it closes the
connection, aborts the association, answers a status); none measures time."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.pdu_primitives import P_DATA
from sqlalchemy import select

from dicom_node.scu import echo, store_datasets
from dicom_node.statuses import StoreStatus
from storage.schema import AuditEvent

from dicom_factory import DX, make_radiograph
from node_helpers import remote, rows

StartNode = Callable[..., Any]

#: a safety net only: a broken build fails here instead of hanging; no assertion is on time
SAFETY = 60.0


def _connect(port: int, source: str = "127.0.0.1") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=SAFETY, source_address=(source, 0))
    return sock


def _closed_by_server(sock: socket.socket) -> bool:
    """Read until the server closes the connection (an A-ABORT may come first)."""
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def _associate(port: int) -> Any:
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(DX, ExplicitVRLittleEndian)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = SAFETY
    assoc = ae.associate("127.0.0.1", port, ae_title="XRAYD")
    assert assoc.is_established
    return assoc


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        with contextlib.suppress(OSError):
            sock.close()


def test_stalled_peers_are_disconnected_and_their_slots_reclaimed(
    start_node: StartNode, sockets: list[socket.socket]
) -> None:
    # Every association slot taken from one address (the per-address cap lifted): two peers
    # send one byte of a PDU header and stop (ARTIM), two associate properly and then stop
    # half-way through a P-DATA-TF PDU (idle timeout).
    node = start_node(
        node={
            "max_associations": 4,
            "max_connections_per_host": 100,
            "artim_timeout_seconds": 1.0,
            "idle_timeout_seconds": 1.0,
        }
    )
    port = node.scp.port
    for _ in range(2):
        sock = _connect(port)
        sock.sendall(b"\x01")
        sockets.append(sock)
    assocs = [_associate(port) for _ in range(2)]
    for assoc in assocs:
        raw = assoc.dul.socket.socket
        # a P-DATA-TF header declaring 1000 bytes, then 10 of them
        raw.sendall(struct.pack(">BBL", 0x04, 0, 1000) + b"\x00" * 10)
    for sock in sockets:
        assert _closed_by_server(sock), "a peer stalled in its A-ASSOCIATE-RQ was not closed"
    for assoc in assocs:
        assoc.join(timeout=SAFETY)
        assert not assoc.is_alive(), "a peer stalled mid-PDU was not disconnected"
        assert assoc.is_aborted or not assoc.is_established
    # Every slot is free again: the modality is served.
    assert echo(remote(node), "MODALITY") == 0


def test_a_trickling_association_request_is_cut_at_the_artim_deadline(
    start_node: StartNode, sockets: list[socket.socket]
) -> None:
    node = start_node(node={"artim_timeout_seconds": 1.0, "idle_timeout_seconds": 30.0})
    sock = _connect(node.scp.port)
    sockets.append(sock)
    # An A-ASSOCIATE-RQ declaring 60,000 bytes, sent a byte at a time: each byte comes well
    # within the idle timeout, so only the ARTIM deadline can end it.
    pdu = struct.pack(">BBL", 0x01, 0, 60000) + b"\x00" * 60000
    sock.settimeout(0.2)
    closed = False
    for byte in pdu[:300]:  # at most 300 receive waits: far past the 1 s deadline
        try:
            sock.sendall(bytes([byte]))
            if sock.recv(1) == b"":
                closed = True
                break
        except TimeoutError:
            continue
        except OSError:
            closed = True
            break
    assert closed, "the listener kept reading a trickled request past its ARTIM deadline"


def test_one_address_cannot_take_every_slot(
    start_node: StartNode, sockets: list[socket.socket]
) -> None:
    # 500 connections from 127.0.0.2 that send a byte and stop; a modality on 127.0.0.1 is
    # still served, the refusals are counted in /metrics and audited in one row.
    node = start_node(
        node={
            "max_associations": 16,
            "max_connections_per_host": 8,
            # the 8 stalled peers keep their slots however long 500 connects take on a busy
            # machine (a read waits at most the idle timeout, even before the ARTIM deadline)
            "artim_timeout_seconds": 600.0,
            "idle_timeout_seconds": 600.0,
        }
    )
    port = node.scp.port
    refused = threading.Condition()
    count = [0]
    counted = node.refusals.connection_refused

    def observed(host: str, reason: str) -> None:
        counted(host, reason)
        with refused:
            count[0] += 1
            refused.notify_all()

    node.refusals.connection_refused = observed  # type: ignore[method-assign]
    for _ in range(500):
        sock = _connect(port, source="127.0.0.2")
        with contextlib.suppress(OSError):  # refused ones may be closed already
            sock.sendall(b"\x01")
        sockets.append(sock)
    # A connection the client sees established may reach the server's accept queue later (a
    # full SYN backlog on a loaded machine): wait until the server has refused all it will.
    with refused:
        assert refused.wait_for(lambda: count[0] >= 492, 120), count
    assert echo(remote(node), "MODALITY") == 0
    assert node.scp.refused_by_reason == {"per_host_limit": 492}
    metrics = node.metrics.render().decode()
    assert 'xrayd_connections_refused_total{reason="per_host_limit"} 492.0' in metrics
    assert node.refusals.flush()
    audit = [e for e in rows(node, AuditEvent) if e.action.startswith("connection")]
    assert len(audit) == 1
    assert audit[0].detail["by_reason"] == {"per_host_limit": 492}
    assert audit[0].detail["by_host"] == {"127.0.0.2": 492}


def test_repeated_rejections_are_audited_once_then_counted(start_node: StartNode) -> None:
    node = start_node()
    ae = AE(ae_title="INTRUDER")
    ae.add_requested_context(DX, ExplicitVRLittleEndian)
    for _ in range(5):
        assoc = ae.associate("127.0.0.1", node.scp.port, ae_title="XRAYD")
        assert assoc.is_rejected
    rejected = [e for e in rows(node, AuditEvent) if e.action == "association.rejected"]
    assert len(rejected) == 1
    assert node.refusals.flush()
    [aggregate] = [e for e in rows(node, AuditEvent) if e.action == "connections.refused"]
    assert aggregate.detail["association_rejections_not_itemised"] == 4


def _p_data(context_id: int, control: int, payload: bytes) -> P_DATA:
    primitive = P_DATA()
    primitive.presentation_data_value_list = [[context_id, bytes([control]) + payload]]
    return primitive


@pytest.mark.parametrize(
    ("control", "what"), [(0x01, "command set"), (0x00, "non-C-STORE data set")]
)
def test_oversized_commands_and_in_memory_data_sets_abort(
    start_node: StartNode, control: int, what: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("WARNING", logger="dicom_node")
    node = start_node()
    assoc = _associate(node.scp.port)
    context_id = assoc.accepted_contexts[0].context_id
    # 100 non-final fragments of 32 KiB: 3.2 MB of command (or of a data set that no C-STORE
    # announced), held in memory by pynetdicom until the last fragment
    for _ in range(100):
        if not assoc.is_established:
            break
        assoc.dul.send_pdu(_p_data(context_id, control, b"\x00" * 32768))
    assoc.join(timeout=SAFETY)
    assert not assoc.is_alive()
    assert assoc.is_aborted, f"an oversized {what} did not abort the association"
    assert f"{what.replace('non-C-STORE', 'in-memory')} over" in caplog.text
    assert echo(remote(node), "MODALITY") == 0


def test_a_data_set_over_max_instance_mb_is_refused_with_a_status(start_node: StartNode) -> None:
    node = start_node(node={"max_instance_mb": 1})
    big = make_radiograph(sop_class=DX, rows=1200, cols=1000)  # 2.4 MB of pixels
    small = make_radiograph(sop_class=DX, rows=200, cols=200)
    statuses = store_datasets(remote(node), "MODALITY", [big, small])
    assert statuses == [int(StoreStatus.OUT_OF_RESOURCES), 0]
    assert list(node.storage.spool.tmp_dir().iterdir()) == []
    from storage.schema import Instance

    with node.storage.sessions() as session:
        stored = set(session.scalars(select(Instance.sop_instance_uid)))
    assert stored == {small.SOPInstanceUID}


@pytest.mark.parametrize(
    "first",
    [
        pytest.param(b"\x09\x00\x00\x00\x00\x04abcd", id="garbage"),
        pytest.param(b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00", id="stray-release-request"),
        pytest.param(b"", id="nothing"),
    ],
)
def test_a_peer_that_closes_before_associating_frees_its_slot_at_once(
    start_node: StartNode, first: bytes
) -> None:
    # The ARTIM timeout is long: only noticing the closed connection frees the slot in time.
    node = start_node(node={"artim_timeout_seconds": 600.0, "idle_timeout_seconds": 600.0})
    sock = _connect(node.scp.port)
    with sock:
        if first:
            sock.sendall(first)
        else:
            sock.shutdown(socket.SHUT_WR)
        # the listener closes its side once the association's thread has ended
        assert _closed_by_server(sock), "the listener held the closed connection"
    for assoc in node.scp.active_associations():
        if assoc.ident is not None:  # started
            assoc.join(timeout=SAFETY)
    assert [a for a in node.scp.active_associations() if a.is_alive()] == []
    assert echo(remote(node), "MODALITY") == 0


def test_an_undecodable_command_set_aborts_cleanly(
    start_node: StartNode, caplog: pytest.LogCaptureFixture
) -> None:
    # A final command fragment whose Command Field is unknown: pynetdicom raises decoding it;
    # the association is aborted (an A-ABORT, a log line), no thread dies with a traceback.
    caplog.set_level("WARNING")
    node = start_node()
    assoc = _associate(node.scp.port)
    context_id = assoc.accepted_contexts[0].context_id
    # (0000,0100) Command Field US = 0x7777, implicit VR little endian
    command = struct.pack("<HHLH", 0x0000, 0x0100, 2, 0x7777)
    assoc.dul.send_pdu(_p_data(context_id, 0x03, command))
    assoc.join(timeout=SAFETY)
    assert assoc.is_aborted
    assert "undecodable DIMSE message" in caplog.text
    assert "Traceback" not in caplog.text
    assert echo(remote(node), "MODALITY") == 0
