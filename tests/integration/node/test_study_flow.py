"""Study completion, jobs, workers and dead letters, driven through the node's own loops.

Time is injected (a fake clock), never slept on.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from dicom_node.scu import RemoteAE, store_datasets
from storage import jobs
from storage.schema import Job, Study
from xrayd.runtime.node import Node, open_storage, recover_orphaned_jobs, seed_registry
from xrayd.workers.analysis import CompletionTimer, Worker
from xrayd.workers.base import Wakeup

from dicom_factory import make_radiograph
from helpers import make_settings
from node_helpers import SeenOnlyAnalyser


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def node(database_url: str, tmp_path: Path) -> Any:
    """A node whose listener runs but whose timer and workers the test drives by hand."""
    settings = make_settings(
        tmp_path / "data", database_url,
        study={"quiet_seconds": 5, "max_wait_seconds": 120, "release_ends_wait": False},
        jobs={"max_attempts": 3, "retry_base_seconds": 10, "retry_max_seconds": 60},
    )
    storage = open_storage(settings, create_if_empty=True, require_current=True)
    n = Node(settings, storage)
    seed_registry(settings, storage.sessions)
    n.scp.start()
    clock = Clock()
    n.sink.clock = clock
    yield n, clock
    n.scp.stop(timeout=5)
    storage.engine.dispose()


def parts(node: Any, clock: Clock, analyser: Any = None) -> tuple[CompletionTimer, Worker]:
    stop = threading.Event()
    timer = CompletionTimer(
        node.storage.sessions, node.settings.study, node.settings.jobs, clock, stop, Wakeup()
    )
    worker = Worker(
        0, node.storage.sessions, analyser or SeenOnlyAnalyser(node.storage.sessions),
        node.settings.jobs, clock, stop, Wakeup(),
    )
    return timer, worker


def send(node: Any, *datasets: Any) -> None:
    remote = RemoteAE("XRAYD", "127.0.0.1", node.scp.port)
    assert store_datasets(remote, "MODALITY", list(datasets)) == [0] * len(datasets)


def study_state(node: Any, uid: str) -> str:
    with node.storage.sessions() as s:
        return s.scalars(select(Study.state).where(Study.study_instance_uid == uid)).one()


def test_quiet_period_completes_study(node: Any) -> None:
    n, clock = node
    seen = SeenOnlyAnalyser(n.storage.sessions)
    timer, worker = parts(n, clock, analyser=seen)
    ds = make_radiograph()
    send(n, ds)
    clock.advance(4.9)
    assert timer.tick() == 0
    assert study_state(n, ds.StudyInstanceUID) == "receiving"
    clock.advance(0.2)
    assert timer.tick() == 1
    assert study_state(n, ds.StudyInstanceUID) == "queued"
    assert worker.run_once()
    assert study_state(n, ds.StudyInstanceUID) == "analysed"
    [study_id] = [j.study_id for j in jobs.list_jobs(n.storage.sessions, "done")]
    assert seen.instances(study_id)[0] == 1
    assert not worker.run_once()


def test_cap_completes_a_study_that_never_goes_quiet(node: Any) -> None:
    n, clock = node
    timer, _ = parts(n, clock)
    study = make_radiograph().StudyInstanceUID
    for i in range(31):  # one image every 4 s: never 5 s quiet
        send(n, make_radiograph(study_uid=study, seed=i))
        assert timer.tick() == (1 if clock.now - timedelta(seconds=120) >= _first(n) else 0)
        if study_state(n, study) == "queued":
            break
        clock.advance(4)
    assert study_state(n, study) == "queued"
    assert clock.now - _first(n) >= timedelta(seconds=120)
    assert clock.now - _first(n) < timedelta(seconds=125)


def _first(n: Any) -> datetime:
    with n.storage.sessions() as s:
        return s.scalars(select(Study.first_received_at)).one()


def test_release_ends_the_wait(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "d", database_url, study={"release_ends_wait": True})
    n = Node(settings, open_storage(settings, create_if_empty=True, require_current=True))
    seed_registry(settings, n.storage.sessions)
    released = threading.Event()
    original = n.sink.association_released

    def on_released(peer: Any, studies: frozenset[str]) -> None:
        original(peer, studies)
        released.set()

    n.sink.association_released = on_released  # type: ignore[method-assign]
    n.scp.start()
    try:
        ds = make_radiograph()
        send(n, ds)  # quiet_seconds is an hour here: only the release can queue it
        assert released.wait(timeout=30)  # the server handles the release after the peer
        assert study_state(n, ds.StudyInstanceUID) == "queued"
    finally:
        n.scp.stop(timeout=5)


def test_late_instance_creates_a_new_job(node: Any) -> None:
    n, clock = node
    seen = SeenOnlyAnalyser(n.storage.sessions)
    timer, worker = parts(n, clock, analyser=seen)
    first = make_radiograph(seed=1)
    send(n, first)
    clock.advance(6)
    timer.tick()
    assert worker.run_once()
    assert study_state(n, first.StudyInstanceUID) == "analysed"
    send(n, make_radiograph(study_uid=first.StudyInstanceUID, seed=2))
    assert study_state(n, first.StudyInstanceUID) == "receiving"
    clock.advance(6)
    assert timer.tick() == 1
    assert worker.run_once()
    done = jobs.list_jobs(n.storage.sessions, "done")
    assert len(done) == 2
    counts = [seen.instances(done[0].study_id)[i] for i in (0, 1)]
    assert counts == [1, 2]


class Broken:
    def __init__(self) -> None:
        self.calls = 0

    def analyse(self, job: Any) -> None:
        self.calls += 1
        raise RuntimeError("model exploded")


def test_job_that_keeps_failing_ends_in_dead_letter(node: Any) -> None:
    n, clock = node
    broken = Broken()
    timer, worker = parts(n, clock, analyser=broken)
    ds = make_radiograph()
    send(n, ds)
    clock.advance(6)
    timer.tick()
    assert worker.run_once()  # attempt 1 fails
    assert not worker.run_once()  # backing off: not due yet
    for _ in range(2):
        clock.advance(3600)
        assert worker.run_once()
    assert broken.calls == 3
    [dead] = jobs.list_jobs(n.storage.sessions, "dead")
    assert dead.attempts == 3
    assert "model exploded" in (dead.last_error or "")
    assert study_state(n, ds.StudyInstanceUID) == "failed"
    clock.advance(3600)
    assert not worker.run_once()
    assert jobs.retry_dead(n.storage.sessions, dead.job_id, clock()) == 1
    _, ok_worker = parts(n, clock)
    assert ok_worker.run_once()
    assert study_state(n, ds.StudyInstanceUID) == "analysed"


def test_running_job_of_a_dead_process_resumes(node: Any) -> None:
    n, clock = node
    timer, worker = parts(n, clock)
    send(n, make_radiograph())
    clock.advance(6)
    timer.tick()
    claimed = jobs.claim_job(n.storage.sessions, "thishost:999999:0", clock(), 600)
    assert claimed is not None
    import socket

    with n.storage.sessions.begin() as s:  # as if a process on this host had crashed
        job = s.get(Job, claimed.job_id)
        assert job is not None
        job.worker_id = f"{socket.gethostname()}:999999:0"
    assert recover_orphaned_jobs(n.storage.sessions, clock) == 1
    assert worker.run_once()
    assert [j.job_id for j in jobs.list_jobs(n.storage.sessions, "done")] == [claimed.job_id]


def test_expired_lease_is_requeued_by_the_timer(node: Any) -> None:
    n, clock = node
    timer, worker = parts(n, clock)
    send(n, make_radiograph())
    clock.advance(6)
    timer.tick()
    assert jobs.claim_job(n.storage.sessions, "otherhost:1:0", clock(), 600) is not None
    clock.advance(601)
    assert timer.tick() == 1
    assert worker.run_once()
    assert len(jobs.list_jobs(n.storage.sessions, "done")) == 1
