"""Outgoing associations against destinations that misbehave (issue 15): each send or C-ECHO
ends with a clear, retryable failure, and leaves no thread behind.

The destinations are plain sockets (:mod:`hostile_destinations`). No assertion is on time:
each call runs on a thread of its own and the test only asserts that it returned, joining it
with a generous safety net (so a broken build fails instead of hanging). The bounds under test
are a second or so, the safety net a minute; where a missing bound would only make a call
slow, the bounds the call would otherwise fall back to are made longer than the safety net.
"""

from __future__ import annotations

import asyncio
import queue
import socket
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest

from dicom_node.errors import PeerUnreachableError
from dicom_node.scu import OutgoingLimits, RemoteAE, SendOutcome, echo, send_file
from dicom_node.sop_classes import SECONDARY_CAPTURE
from storage.peers import DestinationRow
from xrayd.pipeline.delivery import DeliveryReport, DeliveryWorker
from xrayd.web.admin_api import echo_destination

import node_helpers
from dicom_factory import make_radiograph
from helpers import make_settings
from hostile_destinations import HostileDestination

StartNode = Callable[..., Any]
T = TypeVar("T")

#: the safety net: a call that has not returned by then is a failure (nothing waits this long
#: when the bounds work)
SAFETY = 60.0
#: the bounds under test
LIMITS = OutgoingLimits(timeout=1.0, connect_timeout=1.0, max_pdu=65536)


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only: the database is not what is under test."""
    return f"sqlite:///{tmp_path / 'db' / 'xrayd.sqlite3'}"


@pytest.fixture(scope="module")
def small_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("files") / "small.dcm"
    make_radiograph(sop_class=SECONDARY_CAPTURE, rows=64, cols=64).save_as(
        path, enforce_file_format=True
    )
    return path


@pytest.fixture(scope="module")
def large_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 MiB of pixels: more than the loopback socket buffers hold."""
    path = tmp_path_factory.mktemp("files") / "large.dcm"
    make_radiograph(sop_class=SECONDARY_CAPTURE, rows=4096, cols=2048).save_as(
        path, enforce_file_format=True
    )
    return path


def bounded_call(call: Callable[[], T]) -> T:
    """Run ``call`` on a thread of its own; assert it returned within the safety net and that
    every thread it started (the association's) has ended (joined, not waited for by time)."""
    before = set(threading.enumerate())
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:
            outcome["error"] = exc

    runner = threading.Thread(target=run, name="bounded-call", daemon=True)
    runner.start()
    runner.join(SAFETY)
    assert not runner.is_alive(), f"the call did not return within the {SAFETY:g} s safety net"
    left = [t for t in set(threading.enumerate()) - before if t is not runner]
    for thread in left:
        thread.join(SAFETY)
    assert [t.name for t in left if t.is_alive()] == []
    if "error" in outcome:
        raise outcome["error"]
    value: T = outcome["value"]
    return value


def remote(port: int) -> RemoteAE:
    return RemoteAE("PACS", "127.0.0.1", port)


@pytest.fixture
def unanswered_port() -> Iterator[int]:
    """A port whose listener never completes another TCP handshake: its accept queue (backlog
    0) is full, so the kernel drops every further SYN and connect() waits."""
    with socket.socket() as listener, socket.socket() as filler:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = int(listener.getsockname()[1])
        filler.connect(("127.0.0.1", port))  # takes the one place in the queue
        yield port


# -- send_file ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("behaviour", "large", "why"),
    [
        ("silent", False, "no answer to the association request within 1 s"),
        ("stall_after_accept", True, "the destination "),  # stopped reading / did not take
        ("never_answer", False, "no C-STORE response"),
        ("trickle", True, "the destination did not take the data within 1 s"),
        ("huge_accept", False, "the destination sent an invalid or oversized PDU"),
        ("huge_data", False, "the destination sent an invalid or oversized PDU"),
    ],
)
def test_a_misbehaving_destination_ends_the_send_with_a_retryable_failure(
    behaviour: Any, large: bool, why: str, small_file: Path, large_file: Path
) -> None:
    path = large_file if large else small_file
    with HostileDestination(behaviour) as peer:
        outcome: SendOutcome = bounded_call(
            lambda: send_file(remote(peer.port), path, calling_ae="XRAYD", limits=LIMITS)
        )
        assert peer.served.is_set()  # it really got as far as misbehaving
        received = peer.received
    assert not outcome.ok
    assert outcome.transient
    assert outcome.status is None
    assert why in outcome.message
    assert str(remote(peer.port)) in outcome.message
    if behaviour == "trickle":
        # the send was cut off, not finished at the destination's pace
        assert 0 < received < path.stat().st_size


def test_an_unanswered_connection_ends_on_the_connect_timeout(
    unanswered_port: int, small_file: Path
) -> None:
    # every other bound is far beyond the safety net: only the connect timeout can end this
    limits = OutgoingLimits(timeout=10 * SAFETY, connect_timeout=0.5)
    outcome = bounded_call(
        lambda: send_file(remote(unanswered_port), small_file, calling_ae="XRAYD", limits=limits)
    )
    assert not outcome.ok and outcome.transient
    assert "could not connect" in outcome.message


def test_a_well_behaved_destination_still_gets_a_large_file(
    large_file: Path, tmp_path: Path
) -> None:
    """The bounds do not cut a transfer that goes at a normal pace (a real SCP, max PDU
    announced by us smaller than the default)."""
    from pydicom.uid import ExplicitVRLittleEndian
    from pynetdicom import AE, evt

    received: list[int] = []

    def on_store(event: Any) -> int:
        # the pixel data as stored, whether or not pynetdicom received the data set in chunked
        # mode (a node started earlier in this process switches that on process-wide)
        received.append(len(event.dataset.PixelData))
        return 0x0000

    ae = AE(ae_title="PACS")
    ae.add_supported_context(SECONDARY_CAPTURE, [ExplicitVRLittleEndian])
    server = ae.start_server(
        ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
    )
    assert server is not None
    try:
        port = int(server.server_address[1])
        limits = OutgoingLimits(timeout=SAFETY, connect_timeout=SAFETY, max_pdu=16384)
        outcome = bounded_call(
            lambda: send_file(remote(port), large_file, calling_ae="XRAYD", limits=limits)
        )
    finally:
        server.shutdown()
    assert outcome.ok, outcome.message
    assert received == [4096 * 2048 * 2]


# -- C-ECHO ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("behaviour", "why"),
    [
        ("silent", "no answer to the association request within 1 s"),
        ("never_answer", "no C-ECHO response"),
        ("huge_accept", "the destination sent an invalid or oversized PDU"),
        ("huge_data", "the destination sent an invalid or oversized PDU"),
    ],
)
def test_a_misbehaving_destination_ends_the_echo_with_a_clear_error(
    behaviour: Any, why: str
) -> None:
    with HostileDestination(behaviour) as peer:

        def call() -> str:
            with pytest.raises(PeerUnreachableError) as err:
                echo(remote(peer.port), "XRAYD", limits=LIMITS)
            return str(err.value)

        message = bounded_call(call)
    assert why in message


def test_the_admin_echo_uses_the_delivery_bounds(tmp_path: Path, unanswered_port: int) -> None:
    """The admin page's C-ECHO button: [delivery] connect timeout and maximum PDU."""
    settings = make_settings(
        tmp_path / "data",
        delivery={"connect_timeout_seconds": 0.5, "send_timeout_seconds": 1},
    )

    def admin_echo(port: int) -> str:
        row = DestinationRow("pacs", "PACS", "127.0.0.1", port, ("sc",), "cli")
        return asyncio.run(echo_destination(settings, row)).detail

    assert "no association" in bounded_call(lambda: admin_echo(unanswered_port))
    with HostileDestination("silent") as peer:
        assert "within 1 s" in bounded_call(lambda: admin_echo(peer.port))
    with HostileDestination("huge_accept") as peer:
        assert "invalid or oversized PDU" in bounded_call(lambda: admin_echo(peer.port))


# -- the node's delivery workers ----------------------------------------------------------------


def _queue_result(node: Any) -> None:
    """A Secondary Capture result in the spool, queued to every destination."""
    node_helpers.queue_sc_result(node.storage, datetime.now(UTC))


def test_the_node_sends_with_the_delivery_settings(
    start_node: StartNode, unanswered_port: int
) -> None:
    with HostileDestination("huge_accept") as huge:
        node = start_node(
            delivery={
                # the send timeout is far beyond the safety net: only the connect timeout
                # can end the send to the unanswered port
                "send_timeout_seconds": 10 * SAFETY,
                "lease_seconds": 40 * SAFETY,
                "connect_timeout_seconds": 0.5,
                "max_pdu_bytes": 65536,
            },
            destinations=[
                {"name": "blackhole", "ae_title": "PACS", "host": "127.0.0.1",
                 "port": unanswered_port, "send": ["sc"]},
                {"name": "huge", "ae_title": "PACS", "host": "127.0.0.1",
                 "port": huge.port, "send": ["sc"]},
            ],
        )  # fmt: skip
        workers = [t for t in node.threads if isinstance(t, DeliveryWorker)]
        assert workers
        assert {w.options.limits for w in workers} == {
            OutgoingLimits(timeout=10 * SAFETY, connect_timeout=0.5, max_pdu=65536)
        }
        reports: queue.Queue[DeliveryReport] = queue.Queue()
        node.on_delivery = reports.put
        _queue_result(node)
        node.delivery_wakeup.set()
        got = {}
        for _ in range(2):
            report = reports.get(timeout=SAFETY)
            got[report.claim.destination_name] = report
    assert got["blackhole"].recorded == "retry"
    assert "could not connect" in got["blackhole"].outcome.message
    assert got["huge"].recorded == "retry"
    assert "invalid or oversized PDU" in got["huge"].outcome.message
