"""Delivery of result objects to a real Storage SCP on loopback (pynetdicom, in-process).

The "PACS" is a pynetdicom AE that answers each C-STORE with the next status of a script (then
success) and records every request's SOP Instance UID, transfer syntax and raw data-set bytes.
Time is a fixed clock moved by the tests; threads are synchronised with events and queues.
"""

from __future__ import annotations

import argparse
import logging
import os
import queue
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    RLELossless,
    generate_uid,
)
from pynetdicom import AE, evt
from pynetdicom.dsutils import split_dataset
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dicom_node.hardening import quiet_identifiers
from dicom_node.scu import RemoteAE, StatusClass, classify_store_status, send_file
from dicom_node.sop_classes import SECONDARY_CAPTURE
from storage import audit, outbox, peers
from storage.db import make_engine, make_sessionmaker
from storage.migrate import upgrade
from storage.schema import Job, Result, Study
from storage.spool import Spool
from xrayd.pipeline.delivery import DeliveryOptions, DeliveryReport, DeliveryWorker
from xrayd.workers.base import Wakeup

from dicom_factory import make_radiograph

VERIFICATION = "1.2.840.10008.1.1"
T0 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
WAIT = 20.0  # upper bound for an event that should come within milliseconds


# -- the PACS --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    sop_instance_uid: str
    transfer_syntax: str
    data: bytes
    status: int


class FakePACS:
    """A Storage SCP on 127.0.0.1 answering with ``script`` (then 0x0000)."""

    def __init__(
        self, syntaxes: tuple[str, ...] = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
    ):
        self.ae = AE(ae_title="PACS")
        self.ae.add_supported_context(SECONDARY_CAPTURE, list(syntaxes))
        self.ae.add_supported_context(VERIFICATION)
        self.script: list[int] = []
        self.received: list[Received] = []
        self.proposed: list[list[str]] = []  # abstract syntaxes per association
        self.gate: threading.Event | None = None  # when set: hold each C-STORE until it opens
        self.entered = threading.Event()
        self._lock = threading.Lock()
        self._server: Any = None

    @property
    def stored(self) -> list[Received]:
        return [r for r in self.received if r.status == 0]

    def start(self, port: int = 0) -> int:
        self._server = self.ae.start_server(
            ("127.0.0.1", port),
            block=False,
            evt_handlers=[(evt.EVT_C_STORE, self._on_store), (evt.EVT_REQUESTED, self._on_rq)],
        )
        return int(self._server.server_address[1])

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def _on_rq(self, event: Any) -> None:
        with self._lock:
            self.proposed.append(
                [str(cx.abstract_syntax) for cx in event.assoc.requestor.requested_contexts]
            )

    def _on_store(self, event: Any) -> int:
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(WAIT)
        with self._lock:
            status = self.script.pop(0) if self.script else 0x0000
            self.received.append(
                Received(
                    str(event.request.AffectedSOPInstanceUID),
                    str(event.context.transfer_syntax),
                    _received_bytes(event),
                    status,
                )
            )
        return status


def _received_bytes(event: Any) -> bytes:
    """The data set as the peer encoded it, whether or not pynetdicom received it in chunked
    mode (a node started earlier in this process switches that mode on process-wide)."""
    path = getattr(event, "dataset_path", None)
    if path is None:
        return bytes(event.request.DataSet.getvalue())
    _, offset = split_dataset(Path(path))
    return Path(path).read_bytes()[offset:]


@pytest.fixture
def pacs() -> Iterator[FakePACS]:
    peer = FakePACS()
    yield peer
    peer.stop()


def free_port() -> int:
    """A port nothing listens on (the PACS is "down")."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- result files and the database -----------------------------------------------------------


def write_sc(spool: Path, name: str, *, syntax: str = ExplicitVRLittleEndian) -> tuple[Path, str]:
    ds = make_radiograph(sop_class=SECONDARY_CAPTURE, rows=32, cols=32, sop_uid=generate_uid())
    if syntax == RLELossless:
        ds.compress(RLELossless)
    path = spool / "results" / f"{name}.dcm"
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path, str(ds.SOPInstanceUID)


def dataset_bytes(path: Path) -> bytes:
    """The file's data set as encoded on disk (after the meta header)."""
    _, offset = split_dataset(path)
    return path.read_bytes()[offset:]


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Env:
    sm: sessionmaker[Session]
    spool: Spool
    clock: Clock

    def destination(self, port: int, name: str = "PACS", ae: str = "PACS") -> None:
        peers.add_destination(
            self.sm, peers.DestinationRow(name, ae, "127.0.0.1", port, ("sr", "sc"), "cli")
        )

    def result(self, name: str = "sc1", *, max_attempts: int = 4) -> tuple[int, Path, str]:
        """A Secondary Capture result on disk and in ``results``, queued to every destination
        (each delivery may make ``max_attempts`` attempts)."""
        path, uid = write_sc(self.spool.root, name)
        with self.sm.begin() as session:
            study = Study(
                study_instance_uid=generate_uid(),
                state="analysed",
                first_received_at=T0,
                last_received_at=T0,
            )
            session.add(study)
            session.flush()
            result = Result(
                study_id=study.id,
                kind="sc",
                sop_instance_uid=uid,
                file_path=path.relative_to(self.spool.root).as_posix(),
            )
            session.add(result)
            session.flush()
            (delivery_id,) = outbox.queue_deliveries(
                session, result.id, "sc", now=self.clock(), max_attempts=max_attempts
            )
        return delivery_id, path, uid

    def worker(
        self,
        *,
        stop: threading.Event | None = None,
        wakeup: Wakeup | None = None,
        reports: queue.Queue[DeliveryReport] | None = None,
        **options: Any,
    ) -> DeliveryWorker:
        opts: dict[str, Any] = {
            "calling_ae_title": "XRAYD",
            "retry_base_seconds": 10,
            "retry_max_seconds": 100,
            "send_timeout_seconds": 5,
            "lease_seconds": 60,
            "poll_seconds": 30,
        }
        opts.update(options)
        return DeliveryWorker(
            self.sm,
            self.spool,
            DeliveryOptions(**opts),
            self.clock,
            stop or threading.Event(),
            wakeup or Wakeup(),
            on_report=None if reports is None else reports.put,
        )

    def row(self, delivery_id: int) -> outbox.DeliveryRow:
        return outbox.get_delivery(self.sm, delivery_id)

    def job(self, delivery_id: int) -> Job:
        """The delivery's one queue job."""
        with self.sm() as session:
            (job,) = session.scalars(
                select(Job).where(Job.kind == outbox.DELIVER, Job.ref_id == delivery_id)
            ).all()
            return job

    def due(self, delivery_id: int) -> datetime:
        """When the delivery's queued job falls due."""
        job = self.job(delivery_id)
        assert job.state == "queued"
        return job.next_attempt_at


@pytest.fixture
def env(database_url: str, tmp_path: Path) -> Iterator[Env]:
    engine = make_engine(database_url)
    upgrade(engine)
    spool = Spool(tmp_path / "spool")
    spool.root.mkdir(parents=True)
    yield Env(make_sessionmaker(engine), spool, Clock())
    engine.dispose()


# -- send_file: negotiation and classification (no database) ---------------------------------


def test_send_file_sends_the_files_own_bytes(pacs: FakePACS, tmp_path: Path) -> None:
    port = pacs.start()
    path, uid = write_sc(tmp_path, "a")
    outcome = send_file(RemoteAE("PACS", "127.0.0.1", port), path, calling_ae="XRAYD", timeout=5)
    assert (outcome.ok, outcome.status) == (True, 0)
    (got,) = pacs.received
    assert got.sop_instance_uid == uid
    assert got.transfer_syntax == ExplicitVRLittleEndian
    assert got.data == dataset_bytes(path)
    assert pacs.proposed == [[SECONDARY_CAPTURE]]  # only the object's SOP class
    assert uid not in outcome.message and "Doe" not in outcome.message


def test_send_file_re_encodes_into_an_accepted_uncompressed_syntax(tmp_path: Path) -> None:
    pacs = FakePACS(syntaxes=(ImplicitVRLittleEndian,))
    port = pacs.start()
    try:
        path, uid = write_sc(tmp_path, "a")
        outcome = send_file(RemoteAE("PACS", "127.0.0.1", port), path, calling_ae="X", timeout=5)
    finally:
        pacs.stop()
    assert outcome.ok
    (got,) = pacs.received
    assert (got.sop_instance_uid, got.transfer_syntax) == (uid, ImplicitVRLittleEndian)
    original = dcmread(path)
    assert got.data != dataset_bytes(path)  # a different encoding of the same values
    from io import BytesIO

    from pydicom.filereader import read_dataset

    sent = read_dataset(BytesIO(got.data), is_implicit_VR=True, is_little_endian=True)
    assert sent.SOPInstanceUID == uid
    assert sent.PixelData == original.PixelData


def test_a_compressed_file_is_not_transcoded(pacs: FakePACS, tmp_path: Path) -> None:
    port = pacs.start()
    path, _ = write_sc(tmp_path, "rle", syntax=RLELossless)
    outcome = send_file(RemoteAE("PACS", "127.0.0.1", port), path, calling_ae="XRAYD", timeout=5)
    assert (outcome.ok, outcome.transient, outcome.status) == (False, False, None)
    assert "no presentation context" in outcome.message
    assert pacs.received == []


@pytest.mark.parametrize(
    ("status", "ok", "transient"),
    [
        (0xB000, True, False),  # warning: coercion of data elements — stored
        (0xB007, True, False),
        (0xA700, False, True),  # out of resources
        (0xA7FF, False, True),
        (0x0110, False, True),  # processing failure
        (0xA900, False, False),  # data set does not match SOP class
        (0xC000, False, False),  # cannot understand
        (0x0122, False, False),  # SOP class not supported
    ],
)
def test_response_statuses_are_classified(
    pacs: FakePACS, tmp_path: Path, status: int, ok: bool, transient: bool
) -> None:
    pacs.script = [status]
    port = pacs.start()
    path, _ = write_sc(tmp_path, "a")
    outcome = send_file(RemoteAE("PACS", "127.0.0.1", port), path, calling_ae="XRAYD", timeout=5)
    assert (outcome.ok, outcome.transient, outcome.status) == (ok, transient, status)
    assert f"0x{status:04X}" in outcome.message


def test_status_table() -> None:
    assert classify_store_status(0x0000)[0] is StatusClass.STORED
    assert classify_store_status(0x0111)[0] is StatusClass.STORED  # duplicate: it is there
    assert classify_store_status(0xA701)[0] is StatusClass.TRANSIENT
    assert classify_store_status(0x0213)[0] is StatusClass.TRANSIENT
    assert classify_store_status(0xA9FF)[0] is StatusClass.PERMANENT
    assert classify_store_status(0xCFFF)[0] is StatusClass.PERMANENT
    assert classify_store_status(0x0124)[0] is StatusClass.PERMANENT
    assert classify_store_status(0xA800) == (StatusClass.TRANSIENT, "unknown status")


def test_association_failures_are_classified(pacs: FakePACS, tmp_path: Path) -> None:
    path, _ = write_sc(tmp_path, "a")
    down = send_file(RemoteAE("PACS", "127.0.0.1", free_port()), path, calling_ae="X", timeout=5)
    assert (down.ok, down.transient, down.status) == (False, True, None)
    assert "could not connect" in down.message

    pacs.ae.require_calling_aet = ["FRIEND"]
    port = pacs.start()
    refused = send_file(RemoteAE("PACS", "127.0.0.1", port), path, calling_ae="X", timeout=5)
    assert (refused.ok, refused.transient) == (False, False)  # calling AE not recognised
    assert "rejected (permanent" in refused.message

    assert pacs.received == []


def test_a_busy_peer_is_a_transient_failure(tmp_path: Path) -> None:
    path, _ = write_sc(tmp_path, "a")
    pacs = FakePACS()  # a fresh one: no lingering associations count against its limit
    pacs.ae.maximum_associations = 1
    port = pacs.start()
    holder = AE(ae_title="FRIEND")
    holder.add_requested_context(VERIFICATION)
    held = holder.associate("127.0.0.1", port, ae_title="PACS")
    try:
        assert held.is_established
        busy = send_file(RemoteAE("PACS", "127.0.0.1", port), path, calling_ae="X", timeout=5)
    finally:
        held.release()
        pacs.stop()
    assert (busy.ok, busy.transient) == (False, True)  # local limit exceeded: try later
    assert "rejected (transient" in busy.message


# -- the delivery worker ---------------------------------------------------------------------


def test_transient_refusals_back_off_then_deliver_the_same_bytes(pacs: FakePACS, env: Env) -> None:
    pacs.script = [0xA700, 0xA700]
    env.destination(pacs.start())
    delivery_id, path, uid = env.result()
    worker = env.worker()
    delays = []
    for attempt in (1, 2):
        assert worker.run_once()
        row = env.row(delivery_id)
        assert (row.state, row.attempts, row.last_status) == ("pending", attempt, 0xA700)
        delay = (env.due(delivery_id) - env.clock()).total_seconds()
        base = 10 * 2 ** (attempt - 1)
        assert 0.5 * base <= delay <= 1.5 * base
        delays.append(delay)
        assert not worker.run_once()  # not due yet
        env.clock.now = env.due(delivery_id)
    assert worker.run_once()
    row = env.row(delivery_id)
    assert (row.state, row.attempts, row.last_status, row.last_error) == ("sent", 3, 0, None)
    assert [r.status for r in pacs.received] == [0xA700, 0xA700, 0]
    assert {r.sop_instance_uid for r in pacs.received} == {uid}
    assert {r.data for r in pacs.received} == {dataset_bytes(path)}
    assert not worker.run_once()


@pytest.mark.parametrize("refusal", [0xA900, 0x0122], ids=["0xA900", "0x0122"])
def test_a_permanent_refusal_is_a_dead_letter_until_retried(
    pacs: FakePACS, env: Env, refusal: int
) -> None:
    pacs.script = [0xA700, refusal]
    env.destination(pacs.start())
    delivery_id, _, uid = env.result()
    worker = env.worker()
    assert worker.run_once()
    env.clock.now = env.due(delivery_id)
    assert worker.run_once()
    row = env.row(delivery_id)
    assert (row.state, row.attempts, row.last_status) == ("dead", 2, refusal)
    assert env.job(delivery_id).state == "dead"
    env.clock.now += timedelta(days=1)
    assert not worker.run_once()  # never retried by itself
    (event,) = [e for e in audit.list_audit(env.sm) if e.action == "delivery.dead"]
    assert event.detail["reason"] == "permanent failure"
    assert uid not in str(event.detail)
    assert [r.delivery_id for r in outbox.list_deliveries(env.sm, "dead")] == [delivery_id]

    assert outbox.retry_delivery(env.sm, delivery_id, env.clock())  # the operator fixed the PACS
    assert worker.run_once()
    assert env.row(delivery_id).state == "sent"
    assert env.job(delivery_id).state == "done"  # its dead job was revived, then finished
    assert len(pacs.stored) == 1


def test_attempts_end_in_a_dead_letter(pacs: FakePACS, env: Env) -> None:
    pacs.script = [0xA700] * 10
    env.destination(pacs.start())
    delivery_id, _, _ = env.result(max_attempts=3)
    worker = env.worker()
    for attempt in (1, 2, 3):
        assert worker.run_once()
        if attempt < 3:
            env.clock.now = env.due(delivery_id)
    row = env.row(delivery_id)
    assert (row.state, row.attempts) == ("dead", 3)
    assert len(pacs.received) == 3 and pacs.stored == []


def test_pacs_down_then_up(env: Env) -> None:
    port = free_port()
    env.destination(port)
    reports: queue.Queue[DeliveryReport] = queue.Queue()
    stop, wakeup = threading.Event(), Wakeup()
    worker = env.worker(stop=stop, wakeup=wakeup, reports=reports)
    delivery_id, path, uid = env.result()
    worker.start()
    pacs = FakePACS()
    try:
        first = reports.get(timeout=WAIT)
        assert (first.recorded, first.outcome.transient) == ("retry", True)
        assert "could not connect" in (env.row(delivery_id).last_error or "")
        pacs.start(port)
        env.clock.now = env.due(delivery_id)
        wakeup.set()
        second = reports.get(timeout=WAIT)
        assert (second.recorded, second.claim.attempt) == ("sent", 2)
    finally:
        worker.stop(WAIT)
        pacs.stop()
    assert not worker.is_alive()
    (got,) = pacs.received
    assert (got.sop_instance_uid, got.data) == (uid, dataset_bytes(path))


def test_stop_finishes_the_send_in_hand_and_a_new_worker_does_not_resend(
    pacs: FakePACS, env: Env
) -> None:
    pacs.gate = threading.Event()
    env.destination(pacs.start())
    stop, wakeup = threading.Event(), Wakeup()
    reports: queue.Queue[DeliveryReport] = queue.Queue()
    worker = env.worker(stop=stop, wakeup=wakeup, reports=reports)
    worker.start()
    delivery_id, path, uid = env.result()
    wakeup.set()  # what the pipeline does after queueing
    assert pacs.entered.wait(WAIT)  # the C-STORE is in flight
    stopper = threading.Thread(target=worker.stop, args=(WAIT,))
    stopper.start()
    pacs.gate.set()
    stopper.join(WAIT)
    assert not worker.is_alive()
    assert reports.get_nowait().recorded == "sent"
    assert env.row(delivery_id).state == "sent"

    env.clock.now += timedelta(hours=1)  # long past any lease
    second = env.worker()
    assert not second.run_once()
    (got,) = pacs.received
    assert (got.sop_instance_uid, got.data) == (uid, dataset_bytes(path))


def test_a_crashed_senders_delivery_is_sent_once_after_its_lease(pacs: FakePACS, env: Env) -> None:
    env.destination(pacs.start())
    delivery_id, path, uid = env.result()
    # a sender claims and dies before sending
    assert outbox.claim_delivery(env.sm, env.clock(), 60, worker_id="gone:1:delivery-0")
    restarted = env.worker()
    assert not restarted.run_once()  # leased: not before the lease ends
    env.clock.now += timedelta(seconds=61)
    assert restarted.run_once()
    row = env.row(delivery_id)
    assert (row.state, row.attempts) == ("sent", 2)
    job = env.job(delivery_id)
    assert (job.state, job.attempts, job.worker_id) == ("done", 2, restarted.worker_id)
    (got,) = pacs.received
    assert (got.sop_instance_uid, got.data) == (uid, dataset_bytes(path))


def test_a_sender_that_dies_after_sending_causes_an_identical_resend(
    pacs: FakePACS, env: Env
) -> None:
    port = pacs.start()
    env.destination(port)
    delivery_id, path, uid = env.result()
    claim = outbox.claim_delivery(env.sm, env.clock(), 60, worker_id="gone:1:delivery-0")
    assert claim is not None
    remote = RemoteAE("PACS", "127.0.0.1", port)
    assert send_file(remote, path, calling_ae="XRAYD", timeout=5).ok  # ... then it dies
    env.clock.now += timedelta(seconds=61)
    assert env.worker().run_once()
    assert env.row(delivery_id).state == "sent"
    assert len(pacs.stored) == 2  # at least once: the PACS sees a duplicate ...
    assert {(r.sop_instance_uid, r.data) for r in pacs.stored} == {(uid, dataset_bytes(path))}


def test_unusable_deliveries_are_dead_letters(pacs: FakePACS, env: Env) -> None:
    env.destination(pacs.start())
    worker = env.worker()
    gone_file, path, _ = env.result("gone")
    path.unlink()
    assert worker.run_once()
    assert env.row(gone_file).state == "dead"
    assert "missing" in (env.row(gone_file).last_error or "")
    gone_dest, _, _ = env.result("orphan")
    peers.remove_destination(env.sm, "PACS")
    assert worker.run_once()
    assert env.row(gone_dest).state == "dead"
    assert "no longer configured" in (env.row(gone_dest).last_error or "")
    assert pacs.received == []


def test_logs_carry_no_patient_data_or_raw_uids(
    pacs: FakePACS, env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    quiet_identifiers()  # the test PACS too: then every log line of the process is checked
    pacs.script = [0xA700]
    env.destination(pacs.start())
    delivery_id, _, uid = env.result()
    worker = env.worker()
    with caplog.at_level(logging.DEBUG):
        assert worker.run_once()
        env.clock.now = env.due(delivery_id)
        assert worker.run_once()
    assert any(
        r.name == "xrayd.pipeline.delivery" and "sent" in r.getMessage() for r in caplog.records
    )
    text = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    for secret in ("Doe^Jane", "PAT-SECRET-42", uid):
        assert secret not in text


def test_each_sender_claims_under_its_own_id(pacs: FakePACS, env: Env) -> None:
    env.destination(pacs.start())
    pacs.script = [0xA700]
    delivery_id, _, _ = env.result()
    reports: queue.Queue[DeliveryReport] = queue.Queue()
    worker = env.worker(reports=reports)
    assert worker.worker_id == f"{socket.gethostname()}:{os.getpid()}:delivery-0"
    assert worker.run_once()
    report = reports.get_nowait()
    assert (report.recorded, report.claim.worker_id) == ("retry", worker.worker_id)
    job = env.job(delivery_id)
    assert (job.worker_id, job.attempts, job.last_error) == (
        worker.worker_id,
        1,
        report.outcome.message,
    )


def test_a_lost_delivery_goes_first_while_the_sender_is_busy(pacs: FakePACS, env: Env) -> None:
    """Taken up again at the next sweep (at least every poll_seconds), ahead of new work,
    without waiting for the queue to run dry."""
    env.destination(pacs.start())
    lost, _, lost_uid = env.result("lost")
    assert outbox.claim_delivery(env.sm, env.clock(), 60, worker_id="gone:1:delivery-0")
    worker = env.worker(poll_seconds=30)
    env.clock.now += timedelta(seconds=1)
    waiting = [env.result(f"new{i}")[0] for i in range(3)]
    assert worker.run_once()  # swept at its first run: nothing expired yet
    env.clock.now += timedelta(seconds=60)  # the lost sender's lease has ended
    assert worker.run_once()  # swept again (poll_seconds passed) before claiming
    assert env.row(lost).state == "sent"
    assert [env.row(d).state for d in waiting] == ["sent", "pending", "pending"]
    assert pacs.received[1].sop_instance_uid == lost_uid


# -- the CLI commands ------------------------------------------------------------------------


def test_outbox_commands(
    pacs: FakePACS, env: Env, database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from xrayd.cli import outbox as outbox_commands

    from helpers import make_settings

    pacs.script = [0x0122]
    env.destination(pacs.start())
    delivery_id, _, _ = env.result()
    assert env.worker().run_once()
    settings = make_settings(tmp_path / "data", database_url)

    parser = argparse.ArgumentParser()
    outbox_commands.add_parsers(
        parser.add_subparsers(dest="command"), argparse.ArgumentParser(add_help=False)
    )

    def run(*argv: str) -> int:
        args = parser.parse_args(argv)
        func: Callable[[argparse.Namespace, Any], int] = args.func
        return func(args, settings)

    assert run("outbox", "list", "--state", "dead") == 0
    out = capsys.readouterr().out
    assert f"{delivery_id:>6} dead" in out and "0x0122" in out
    assert run("outbox", "retry", str(delivery_id)) == 0
    assert run("outbox", "retry", str(delivery_id)) == 1  # pending now: nothing to retry
    assert env.row(delivery_id).state == "pending"
    assert run("outbox", "retry", "--dead") == 1  # none left
    capsys.readouterr()
    assert run("outbox", "list") == 0
    assert "pending" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        parser.parse_args(["outbox", "retry"])
    assert audit.list_audit(env.sm)[0].action == "delivery.retried"
