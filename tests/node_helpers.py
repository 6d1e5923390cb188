"""Helpers for tests that talk to an in-process node (``start_node`` in the node conftest)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from sqlalchemy import func, select

from dicom_node.scu import RemoteAE, store_datasets
from dicom_node.sop_classes import SECONDARY_CAPTURE
from storage import outbox
from storage.jobs import ClaimedJob
from storage.schema import Instance, Result, Study

from dicom_factory import DX, make_radiograph


def remote(node: Any) -> RemoteAE:
    """The node's listener as a peer to associate with."""
    return RemoteAE("XRAYD", "127.0.0.1", node.scp.port)


def wait_for_listener(node: Any, timeout: float = 60.0) -> None:
    """Wait until every association ``node``'s listener is serving has ended.

    The sender's ``release()`` returns when the peer's A-RELEASE-RP arrives, which may be before
    the listener's association thread has run its release handling (the sink's
    ``association_released``: with ``release_ends_wait``, where the study becomes complete and
    its job is queued, in a transaction that holds the study's row). That thread ends only after
    it, so joining it is waiting on the event itself, not on time.
    """
    for assoc in node.scp.active_associations():
        assoc.join(timeout)
        assert not assoc.is_alive(), "an association of the node did not end"


def store_and_wait_for_release(
    node: Any, datasets: Sequence[Any], calling_ae: str = "MODALITY"
) -> list[int]:
    """C-STORE ``datasets`` to ``node`` over one association; return the statuses once the node
    has finished with that association (see :func:`wait_for_listener`)."""
    statuses = store_datasets(remote(node), calling_ae, list(datasets))
    wait_for_listener(node)
    return statuses


def rows(node: Any, model: Any) -> list[Any]:
    """Every row of ``model`` in the node's database."""
    with node.storage.sessions() as session:
        return list(session.scalars(select(model)))


def stored_file(node: Any, sop_uid: str) -> Path:
    """Where the node's spool keeps the instance ``sop_uid``."""
    with node.storage.sessions() as session:
        inst = session.scalars(select(Instance).where(Instance.sop_instance_uid == sop_uid)).one()
        path: Path = node.storage.spool.absolute(inst.spool_path)
        return path


def store_cut_off(node: Any, closed: threading.Event, on_pdu_sent: Callable[[Any], None]) -> None:
    """Send a 2 MB DX data set whose sender runs ``on_pdu_sent`` after each PDU it sends (a
    hook that cuts the connection off), then wait until the node has handled the close."""
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(DX, "1.2.840.10008.1.2.1")
    assoc = ae.associate(
        "127.0.0.1", node.scp.port, ae_title="XRAYD", evt_handlers=[(evt.EVT_PDU_SENT, on_pdu_sent)]
    )
    assert assoc.is_established
    with contextlib.suppress(Exception):  # the sender sees its own connection die
        assoc.send_c_store(make_radiograph(rows=1024, cols=1024))
    assert closed.wait(timeout=60)


def queue_sc_result(
    storage: Any, now: datetime, *, max_attempts: int = outbox.DEFAULT_MAX_ATTEMPTS
) -> None:
    """A small Secondary Capture result in ``storage``'s spool, queued to every destination
    (each delivery may make ``max_attempts`` attempts)."""
    ds = make_radiograph(sop_class=SECONDARY_CAPTURE, rows=32, cols=32, sop_uid=generate_uid())
    path = storage.spool.root / "results" / "sc.dcm"
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    with storage.sessions.begin() as session:
        study = Study(
            study_instance_uid=generate_uid(),
            state="analysed",
            first_received_at=now,
            last_received_at=now,
        )
        session.add(study)
        session.flush()
        result = Result(
            study_id=study.id,
            kind="sc",
            sop_instance_uid=str(ds.SOPInstanceUID),
            file_path=path.relative_to(storage.spool.root).as_posix(),
        )
        session.add(result)
        session.flush()
        outbox.queue_deliveries(session, result.id, "sc", now=now, max_attempts=max_attempts)


def deliver_once(
    tmp_path: Path,
    database_url: str,
    destination: dict[str, Any],
    *,
    send_timeout: float,
    now: datetime,
) -> Any:
    """Seed ``destination`` from the settings (as ``xrayd serve`` stores it), queue one result
    to it and run one delivery attempt; returns its DeliveryReport."""
    from xrayd.pipeline.delivery import DeliveryOptions, DeliveryReport, DeliveryWorker
    from xrayd.runtime.node import open_storage, seed_registry
    from xrayd.workers.base import Wakeup

    from helpers import make_settings

    settings = make_settings(tmp_path / "data", database_url, destinations=[destination])
    storage = open_storage(settings, create_if_empty=True, require_current=True)
    try:
        seed_registry(settings, storage.sessions)
        queue_sc_result(storage, now, max_attempts=3)
        reports: list[DeliveryReport] = []
        worker = DeliveryWorker(
            storage.sessions,
            storage.spool,
            DeliveryOptions(send_timeout_seconds=send_timeout, lease_seconds=4 * send_timeout),
            lambda: now,
            threading.Event(),
            Wakeup(),
            on_report=reports.append,
        )
        assert worker.run_once()
        (report,) = reports
        return report
    finally:
        storage.engine.dispose()


def run_next_job(node: Any) -> Any:
    """Let the node's completion timer queue what is due, then run one analysis job with a
    worker of the node's analyser (asserting there was one); returns that worker."""
    from xrayd.workers.analysis import CompletionTimer, Worker
    from xrayd.workers.base import Wakeup

    stop = threading.Event()
    sessions = node.storage.sessions
    timer = CompletionTimer(
        sessions, node.settings.study, node.settings.jobs, node.sink.clock, stop, Wakeup()
    )
    worker = Worker(0, sessions, node.analyser, node.settings.jobs, node.sink.clock, stop, Wakeup())
    timer.tick()
    assert worker.run_once()
    return worker


class SeenOnlyAnalyser:
    """The smallest analyser, for the tests of the job machinery (claiming, retries, leases),
    which need no model: it notes how many instances each job's study had, nothing else.

    What it saw stays in memory (the product has no "seen" results); a job run again (after a
    lost lease) is noted once, as the product's analyses are recorded once per job.
    """

    def __init__(self, sessions: Any) -> None:
        self.sessions = sessions
        #: job id -> (study id, instances the study had when the job ran)
        self.jobs: dict[int, tuple[int, int]] = {}

    def analyse(self, job: ClaimedJob) -> None:
        with self.sessions() as session:
            count = session.scalar(
                select(func.count()).select_from(Instance).where(Instance.study_id == job.study_id)
            )
        self.jobs.setdefault(job.job_id, (job.study_id, int(count or 0)))

    def instances(self, study_id: int) -> list[int]:
        """The instance counts the jobs of ``study_id`` saw, in the order they ran."""
        return [count for study, count in self.jobs.values() if study == study_id]
