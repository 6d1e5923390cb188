"""Retraining runs as jobs of the ``retrain`` queue, driven through ``RetrainService`` and the
``RetrainWorker`` loop on SQLite and PostgreSQL: a requested run is run by the worker to its
outcome; a worker whose lease ran out records nothing while the run is taken up by another; the
foreground ``xrayd retrain --now`` path says when another run is going or a worker took its run;
a stopping worker gives its run back.

The runs here are scheduled runs with too few new reviews (skipped: no training), so the flow
is quick; ``test_service.py`` trains for real through the same worker. Time is a fake clock the
test moves; threads are synchronised on events, never on sleeps.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import pytest
from sqlalchemy.orm import Session, sessionmaker

from storage import queue
from storage.audit import list_audit
from storage.schema import Job
from storage.training import CANCELLED_ERROR, ClaimedRun, RunRow, finish_run, get_run, list_runs
from xrayd.runtime.node import Storage, open_storage
from xrayd.workers.base import Wakeup
from xrayd.workers.retrain import RetrainService, RetrainWorker

from helpers import make_settings

T0 = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
WAIT = 30.0  # an upper bound for a thread to reach a point; never a measured time
LEASE = 600.0


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class RecordingWorker(RetrainWorker):
    """The real loop; records what each turn ran and signals it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.results: list[RunRow | None] = []
        self.ran = threading.Event()

    def run_once(self) -> RunRow | Literal[False] | None:
        result = super().run_once()
        if result is not False:
            self.results.append(result)
            self.ran.set()
        return result


class BlockingService(RetrainService):
    """A service whose run waits until the test lets it go, then reports as a real one."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.started = threading.Event()
        self.go = threading.Event()

    def _run(self, claimed: ClaimedRun, *, progress: bool) -> RunRow:
        self.started.set()
        assert self.go.wait(WAIT), "the test never let the run go"
        return finish_run(
            self.sessions,
            claimed.run.id,
            worker_id=claimed.worker_id,
            state="skipped",
            now=self.clock(),
        )


@pytest.fixture
def storage(tmp_path: Path, database_url: str) -> Any:
    (tmp_path / "db").mkdir(exist_ok=True)
    settings = make_settings(
        tmp_path / "data",
        database_url,
        retrain={"min_new_reviews": 5, "lease_seconds": LEASE, "device": "cpu"},
    )
    opened = open_storage(settings, create_if_empty=True, require_current=True)
    yield settings, opened
    opened.engine.dispose()


def _service(
    storage: tuple[Any, Storage],
    name: str,
    clock: Clock,
    cls: type[RetrainService] = RetrainService,
) -> RetrainService:
    settings, opened = storage
    return cls(settings, opened.sessions, opened.spool, clock=clock, worker_id=name, max_attempts=2)


def _job(sm: sessionmaker[Session], job_id: int | None) -> Job:
    assert job_id is not None
    with sm() as session:
        job = session.get(Job, job_id)
        assert job is not None
        session.expunge(job)
        return job


def test_the_retrain_worker_runs_a_requested_run_to_its_outcome(
    storage: tuple[Any, Storage],
) -> None:
    clock = Clock(T0)
    wakeup = Wakeup()
    service = _service(storage, "w1", clock)
    service.on_requested = wakeup.set
    stop = threading.Event()
    # a long poll: the request's wake-up, not the poll, starts the run
    worker = RecordingWorker(service, stop, wakeup, poll_seconds=3600)
    worker.start()
    try:
        requested = service.request("scheduled:2026-11-24T02:00:00Z", "scheduled")
        assert requested is not None and requested.state == "queued"
        # a second scheduler's firing of the same slot: nothing more
        assert service.request("scheduled:2026-11-24T02:00:00Z", "scheduled") is None
        assert worker.ran.wait(WAIT)
    finally:
        worker.shutdown(timeout=WAIT)
    assert not worker.is_alive()
    (result,) = worker.results
    assert result is not None and result.id == requested.id
    assert result.state == "skipped" and result.worker == "w1"
    assert result.detail["reason"] == "0 new reviews < min_new_reviews 5"
    assert [r.id for r in list_runs(service.sessions)] == [requested.id]
    assert _job(service.sessions, requested.job_id).state == "done"
    assert any(e.action == "retrain.skipped" for e in list_audit(service.sessions))


def test_a_worker_whose_lease_ran_out_records_nothing(storage: tuple[Any, Storage]) -> None:
    clock = Clock(T0)
    first = _service(storage, "w1", clock)
    second = _service(storage, "w2", clock)
    requested = first.request("scheduled:2026-11-24T02:00:00Z", "scheduled")
    assert requested is not None
    claimed = first.claim()
    assert claimed is not None and claimed.run.worker == "w1"
    # w1 hangs (or is SIGKILLed) past its lease: w2's loop takes the run up and runs it.
    clock.now = T0 + timedelta(seconds=LEASE + 1)
    other = RecordingWorker(second, threading.Event(), Wakeup())
    result = other.run_once()
    assert result is not None and result is not False
    assert result.id == requested.id and result.state == "skipped" and result.worker == "w2"
    job = _job(first.sessions, requested.job_id)
    assert job.attempts == 2 and job.state == "done"
    # w1 comes back and finishes: nothing is recorded over w2's outcome.
    assert first.run_claimed(claimed) is None
    run = get_run(first.sessions, requested.id)
    assert run is not None and run.state == "skipped" and run.worker == "w2"
    assert [e.action for e in list_audit(first.sessions)].count("retrain.skipped") == 1


def test_a_lost_worker_on_its_last_attempt_fails_the_run(storage: tuple[Any, Storage]) -> None:
    clock = Clock(T0)
    settings, opened = storage
    service = RetrainService(settings, opened.sessions, opened.spool, clock=clock, worker_id="w1")
    requested = service.request("scheduled:2026-11-24T02:00:00Z", "scheduled")
    assert requested is not None
    claimed = service.claim()
    assert claimed is not None
    clock.now = T0 + timedelta(seconds=LEASE + 1)
    sweeper = RecordingWorker(
        RetrainService(settings, opened.sessions, opened.spool, clock=clock, worker_id="w2"),
        threading.Event(),
        Wakeup(),
    )
    assert sweeper.run_once() is False  # swept; nothing left to run
    failed = get_run(service.sessions, requested.id)
    assert failed is not None and failed.state == "failed"
    assert failed.error == queue.LEASE_EXPIRED_ERROR
    assert service.run_claimed(claimed) is None
    after = get_run(service.sessions, requested.id)
    assert after is not None and after.state == "failed" and after.new_reviews == 0


def test_run_now_runs_its_request_in_the_foreground(storage: tuple[Any, Storage]) -> None:
    service = _service(storage, "cli", Clock(T0))
    done = service.run_now("scheduled:2026-11-24T02:00:00Z", "scheduled")
    assert done.outcome == "finished" and done.run is not None
    assert done.run.state == "skipped" and done.run.worker == "cli"
    assert service.run_now("scheduled:2026-11-24T02:00:00Z", "scheduled").outcome == "slot_taken"


def test_run_now_while_another_run_goes_runs_nothing(storage: tuple[Any, Storage]) -> None:
    clock = Clock(T0)
    worker = _service(storage, "w1", clock)
    cli = _service(storage, "cli", clock)
    slot = "scheduled:2026-11-24T02:00:00Z"
    assert worker.request(slot, "scheduled") is not None
    going = worker.claim()
    assert going is not None
    busy = cli.run_now("manual:b", "manual")
    assert busy.outcome == "busy" and busy.run is None
    assert [r.slot for r in list_runs(cli.sessions)] == [slot]  # nothing requested
    finished = worker.run_claimed(going)
    assert finished is not None and finished.state == "skipped"


def test_run_now_says_when_a_worker_took_its_run_first(storage: tuple[Any, Storage]) -> None:
    clock = Clock(T0)
    worker = _service(storage, "w1", clock)

    class Overtaken(RetrainService):
        """The retrain worker of a running xrayd claims the request before this process."""

        def claim(self, *, job_id: int | None = None) -> ClaimedRun | None:
            self.taken = worker.claim(job_id=job_id)
            return super().claim(job_id=job_id)

    cli = _service(storage, "cli", clock, Overtaken)
    taken = cli.run_now("manual:1", "manual")
    assert taken.outcome == "taken" and taken.worker == "w1"
    claimed = getattr(cli, "taken", None)
    assert claimed is not None
    run = get_run(cli.sessions, claimed.run.id)
    assert run is not None and run.state == "running" and run.worker == "w1"


def test_a_stopping_worker_gives_its_run_back(storage: tuple[Any, Storage]) -> None:
    clock = Clock(T0)
    service = _service(storage, "w1", clock, BlockingService)
    assert isinstance(service, BlockingService)
    service.max_attempts = 1
    wakeup = Wakeup()
    service.on_requested = wakeup.set
    worker = RecordingWorker(service, threading.Event(), wakeup, poll_seconds=3600)
    worker.start()
    requested = service.request("manual:1", "manual")
    assert requested is not None
    try:
        assert service.started.wait(WAIT)
        # the run is still going when xrayd stops: its job is released at once
        worker.shutdown(timeout=0)
        given_back = get_run(service.sessions, requested.id)
        assert given_back is not None and given_back.state == "failed"
        assert given_back.error == queue.RELEASED_ERROR
    finally:
        service.go.set()
        worker.join(WAIT)
    assert not worker.is_alive()
    assert worker.results == [None]  # its late outcome was refused
    after = get_run(service.sessions, requested.id)
    assert after is not None and after.state == "failed"


def test_run_now_cancels_its_request_when_a_run_starts_meanwhile(
    storage: tuple[Any, Storage],
) -> None:
    clock = Clock(T0)
    worker = _service(storage, "w1", clock)

    class Raced(RetrainService):
        """Another run is requested and started between this request and its claim."""

        def claim(self, *, job_id: int | None = None) -> ClaimedRun | None:
            other = worker.request("manual:other", "manual")
            assert other is not None
            self.going = worker.claim(job_id=other.job_id)
            return super().claim(job_id=job_id)

    cli = _service(storage, "cli", clock, Raced)
    busy = cli.run_now("manual:1", "manual")
    assert busy.outcome == "busy"
    runs = {r.slot: r for r in list_runs(cli.sessions)}
    assert runs["manual:1"].state == "failed" and runs["manual:1"].error == CANCELLED_ERROR
    assert _job(cli.sessions, runs["manual:1"].job_id).state == "cancelled"
    assert runs["manual:other"].state == "running" and runs["manual:other"].worker == "w1"
