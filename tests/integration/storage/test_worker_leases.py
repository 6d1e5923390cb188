"""Two workers and one slow job: the lease of the job in hand is renewed, a worker that lost its
job cannot mark it done, and jobs queued by the release of an association get ``[jobs]
max_attempts`` (SQLite and PostgreSQL).

Time is a fake clock the test moves; the workers' threads are synchronised on events (the
analysis started, a renewal seen at the moved clock), never on sleeps.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker
from test_storage_jobs import T0, job, queued_study, store

from config.settings import JobSettings
from dicom_node.received import Peer
from storage.jobs import (
    LEASE_EXPIRED_ERROR,
    ClaimedJob,
    list_jobs,
    promote_studies_now,
    requeue_expired,
)
from storage.spool import Spool
from xrayd.pipeline.receive import SpoolingSink
from xrayd.workers.analysis import Worker
from xrayd.workers.base import Wakeup

LEASE = 60.0
WAIT = 30.0  # an upper bound for a thread to reach a point; never a measured time


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class BlockingAnalyser:
    """Records each job it is given and holds it until released (a slow analysis)."""

    def __init__(self) -> None:
        self.calls: list[ClaimedJob] = []
        self.started = threading.Event()
        self.release = threading.Event()

    def analyse(self, claimed: ClaimedJob) -> None:
        self.calls.append(claimed)
        self.started.set()
        assert self.release.wait(WAIT), "the test never released the analysis"


def worker(
    index: int,
    sm: sessionmaker[Session],
    analyser: BlockingAnalyser,
    clock: Clock,
    **kw: Any,
) -> Worker:
    settings = JobSettings(lease_seconds=LEASE, max_attempts=3)
    return Worker(index, sm, analyser, settings, clock, threading.Event(), Wakeup(), **kw)


def in_thread(target: Callable[[], object]) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def test_a_slow_job_keeps_its_lease_and_is_analysed_once(
    sm: sessionmaker[Session], make_rec: Any
) -> None:
    clock = Clock(T0)
    job_id = queued_study(sm, make_rec)
    renewed_at: list[datetime] = []
    renewed = threading.Condition()

    def on_renewed(_: int) -> None:
        with renewed:
            renewed_at.append(clock())
            renewed.notify_all()

    slow = BlockingAnalyser()
    a = worker(0, sm, slow, clock, renew_interval=0.01, on_lease_renewed=on_renewed)
    running = in_thread(a.run_once)
    assert slow.started.wait(WAIT)

    # Most of the lease has gone by: the worker, alive, renews it.
    clock.now = T0 + timedelta(seconds=LEASE * 0.9)
    with renewed:
        assert renewed.wait_for(lambda: any(t >= clock.now for t in renewed_at), WAIT)
    # Past the first lease, within the renewed one: the job is not taken for a dead worker's.
    clock.now = T0 + timedelta(seconds=LEASE * 1.5)
    assert requeue_expired(sm, clock()) == 0
    other = BlockingAnalyser()
    other.release.set()
    assert worker(1, sm, other, clock).run_once() is False
    assert other.calls == []

    slow.release.set()
    running.join(WAIT)
    assert not running.is_alive()
    assert [c.job_id for c in slow.calls] == [job_id]
    done = job(sm, job_id)
    assert (done.state, done.attempts, done.worker_id) == ("done", 1, a.worker_id)


def test_a_worker_that_lost_its_job_cannot_mark_it_done(
    sm: sessionmaker[Session], make_rec: Any
) -> None:
    clock = Clock(T0)
    job_id = queued_study(sm, make_rec)
    stalled = BlockingAnalyser()  # a worker that stops renewing (a stalled process)
    a = worker(0, sm, stalled, clock, renew_interval=3600.0)
    first = in_thread(a.run_once)
    assert stalled.started.wait(WAIT)

    clock.now = T0 + timedelta(seconds=LEASE + 1)
    assert requeue_expired(sm, clock()) == 1
    slow = BlockingAnalyser()
    b = worker(1, sm, slow, clock, renew_interval=3600.0)
    second = in_thread(b.run_once)
    assert slow.started.wait(WAIT)
    held = job(sm, job_id)
    assert (held.state, held.worker_id, held.attempts) == ("running", b.worker_id, 2)

    # The stalled worker comes back and finishes first: the job stays the other worker's.
    stalled.release.set()
    first.join(WAIT)
    assert not first.is_alive()
    still = job(sm, job_id)
    assert (still.state, still.worker_id) == ("running", b.worker_id)

    slow.release.set()
    second.join(WAIT)
    finished = job(sm, job_id)
    assert (finished.state, finished.worker_id) == ("done", b.worker_id)


def test_a_lost_worker_cannot_record_a_failure_either(
    sm: sessionmaker[Session], make_rec: Any
) -> None:
    clock = Clock(T0)
    job_id = queued_study(sm, make_rec)

    class FailingLate(BlockingAnalyser):
        def analyse(self, claimed: ClaimedJob) -> None:
            super().analyse(claimed)
            raise RuntimeError("late failure")

    stalled = FailingLate()
    a = worker(0, sm, stalled, clock, renew_interval=3600.0)
    first = in_thread(a.run_once)
    assert stalled.started.wait(WAIT)
    clock.now = T0 + timedelta(seconds=LEASE + 1)
    assert requeue_expired(sm, clock()) == 1
    slow = BlockingAnalyser()
    second = in_thread(worker(1, sm, slow, clock, renew_interval=3600.0).run_once)
    assert slow.started.wait(WAIT)

    stalled.release.set()
    first.join(WAIT)
    still = job(sm, job_id)
    assert (still.state, still.attempts, still.last_error) == ("running", 2, LEASE_EXPIRED_ERROR)
    slow.release.set()
    second.join(WAIT)


def test_jobs_queued_on_release_get_the_configured_max_attempts(
    sm: sessionmaker[Session], make_rec: Any, tmp_path: Path
) -> None:
    store(sm, make_rec(study="1.2.3.9", sop="1.2.3.9.1.1"))
    sink = SpoolingSink(Spool(tmp_path / "spool"), sm, min_free_bytes=0, max_attempts=2)
    sink.association_released(Peer(1, "MOD", "XRAYD", "127.0.0.1"), frozenset({"1.2.3.9"}))
    (queued,) = list_jobs(sm, "queued")
    assert queued.max_attempts == 2
    # the quiet-period path already took the setting; both paths now agree
    store(sm, make_rec(study="1.2.3.10", sop="1.2.3.10.1.1"))
    with sm.begin() as session:
        (other,) = promote_studies_now(session, ["1.2.3.10"], T0, max_attempts=2)
    assert job(sm, other).max_attempts == 2
