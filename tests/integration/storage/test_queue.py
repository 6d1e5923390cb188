"""storage.queue, the one work queue, on SQLite and PostgreSQL: deferring in the caller's
transaction, locks, queueing locks, ownership of leases, lost workers, dead letters,
cancellation and revival, and the settlers that keep domain rows in step."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from storage import queue
from storage.errors import JobNotFoundError
from storage.schema import Job

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
TASK = "probe"
QUEUE = "delivery"  # any known queue; the probe task is ours


def s(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


@pytest.fixture
def settled() -> Iterator[list[tuple[int, str]]]:
    """(job id, state) of every settle call of the probe task, in order."""
    calls: list[tuple[int, str]] = []
    queue.on_settle(TASK, lambda _session, job, _now: calls.append((job.id, job.state)))
    yield calls
    queue._SETTLERS.pop(TASK, None)


def defer(sm: sessionmaker[Session], **kw: object) -> int:
    with sm.begin() as session:
        return queue.defer(
            session,
            queue=QUEUE,
            task=TASK,
            now=kw.pop("now", T0),  # type: ignore[arg-type]
            max_attempts=kw.pop("max_attempts", 3),  # type: ignore[arg-type]
            **kw,  # type: ignore[arg-type]
        )


def row(sm: sessionmaker[Session], job_id: int) -> Job:
    with sm() as session:
        return session.get_one(Job, job_id)


def test_defer_joins_the_callers_transaction(sm: sessionmaker[Session]) -> None:
    with pytest.raises(RuntimeError), sm.begin() as session:
        queue.defer(session, queue=QUEUE, task=TASK, now=T0, max_attempts=1)
        raise RuntimeError("the caller's work failed")
    assert queue.claim(sm, "w", T0, 60, queues=(QUEUE,)) is None
    with sm() as session:
        assert queue.counts(session) == {}


def test_queueing_lock_keeps_one_waiting_job(sm: sessionmaker[Session]) -> None:
    first = defer(sm, queueing_lock="k")
    assert defer(sm, queueing_lock="k") == first
    other = defer(sm, queueing_lock="other")
    assert other != first
    claimed = queue.claim(sm, "w", T0, 60, queues=(QUEUE,))
    assert claimed is not None and claimed.job_id == first
    # once it runs, the key is free for the next change to queue again
    assert defer(sm, queueing_lock="k") not in (first, other)


def test_lock_keeps_one_running_job_per_key(
    sm: sessionmaker[Session], settled: list[tuple[int, str]]
) -> None:
    a = defer(sm, lock="study:1")
    b = defer(sm, lock="study:1")
    c = defer(sm, lock="study:2")
    first = queue.claim(sm, "w1", T0, 60, queues=(QUEUE,))
    second = queue.claim(sm, "w2", T0, 60, queues=(QUEUE,))
    assert (first and first.job_id, second and second.job_id) == (a, c)
    assert queue.claim(sm, "w3", T0, 60, queues=(QUEUE,)) is None  # b waits for a
    with sm.begin() as session:
        assert queue.finish(session, a, T0, worker_id="w1")
    third = queue.claim(sm, "w3", T0, 60, queues=(QUEUE,))
    assert third is not None and third.job_id == b
    assert settled == [(a, "done")]


def test_claims_only_the_asked_queues_and_due_jobs(sm: sessionmaker[Session]) -> None:
    later = defer(sm, run_at=T0 + s(30))
    assert queue.claim(sm, "w", T0, 60, queues=("analysis",)) is None
    assert queue.claim(sm, "w", T0, 60, queues=(QUEUE,)) is None  # not due yet
    assert queue.next_due_at(sm, (QUEUE,)) == T0 + s(30)
    claimed = queue.claim(sm, "w", T0 + s(30), 60, queues=(QUEUE,))
    assert claimed is not None and claimed.job_id == later
    assert queue.next_due_at(sm, (QUEUE,)) == T0 + s(90)  # the lease's end


def test_only_the_holder_renews_finishes_or_fails(
    sm: sessionmaker[Session], settled: list[tuple[int, str]]
) -> None:
    job_id = defer(sm)
    claimed = queue.claim(sm, "w1", T0, 60, queues=(QUEUE,))
    assert claimed is not None and claimed.attempts == 1
    assert not queue.renew(sm, job_id, "w2", T0 + s(10), 60)
    assert queue.renew(sm, job_id, "w1", T0 + s(10), 60)
    assert row(sm, job_id).lease_expires_at == T0 + s(70)
    with sm.begin() as session:
        assert not queue.holds(session, job_id, "w2")
        assert queue.holds(session, job_id, "w1")
        assert not queue.finish(session, job_id, T0, worker_id="w2")
        assert queue.fail(session, job_id, T0, "x", worker_id="w2", retry_at=T0) == "stale"
    assert row(sm, job_id).state == "running"
    assert settled == []


def test_a_worker_whose_lease_was_taken_cannot_finish(
    sm: sessionmaker[Session], settled: list[tuple[int, str]]
) -> None:
    job_id = defer(sm)
    assert queue.claim(sm, "slow", T0, 60, queues=(QUEUE,)) is not None
    assert queue.requeue_expired(sm, T0 + s(61)) == 1
    fresh = queue.claim(sm, "fresh", T0 + s(61), 60, queues=(QUEUE,))
    assert fresh is not None and (fresh.job_id, fresh.attempts) == (job_id, 2)
    with sm.begin() as session:
        assert not queue.finish(session, job_id, T0 + s(62), worker_id="slow")
    assert not queue.renew(sm, job_id, "slow", T0 + s(62), 60)
    with sm.begin() as session:
        assert queue.finish(session, job_id, T0 + s(63), worker_id="fresh")
    assert row(sm, job_id).state == "done"
    assert settled == [(job_id, "queued"), (job_id, "done")]


def test_lost_jobs_go_first_and_the_last_lost_attempt_is_dead(
    sm: sessionmaker[Session], settled: list[tuple[int, str]]
) -> None:
    lost = defer(sm, max_attempts=2)
    assert queue.claim(sm, "w", T0, 60, queues=(QUEUE,)) is not None
    newer = defer(sm, now=T0 + s(1))
    assert queue.release(sm, lost, T0 + s(2))
    assert not queue.release(sm, lost, T0 + s(2))  # not running any more
    again = queue.claim(sm, "w", T0 + s(3), 60, queues=(QUEUE,))
    assert again is not None and again.job_id == lost  # ahead of the newer job
    assert queue.requeue_expired(sm, T0 + s(100)) == 1
    dead = row(sm, lost)
    assert (dead.state, dead.attempts, dead.last_error) == (
        "dead",
        2,
        queue.LEASE_EXPIRED_ERROR,
    )
    assert row(sm, newer).state == "queued"
    assert settled == [(lost, "queued"), (lost, "dead")]


def test_failures_retry_then_dead_letter_and_revive(
    sm: sessionmaker[Session], settled: list[tuple[int, str]]
) -> None:
    job_id = defer(sm, max_attempts=2)
    assert queue.claim(sm, "w", T0, 60, queues=(QUEUE,)) is not None
    with sm.begin() as session:
        outcome = queue.fail(
            session, job_id, T0, "peer said 'PATIENT^NAME'", worker_id="w", retry_at=T0 + s(5)
        )
    assert outcome == "retry"
    j = row(sm, job_id)
    assert (j.state, j.next_attempt_at) == ("queued", T0 + s(5))
    assert j.last_error is not None and "PATIENT" not in j.last_error  # redacted
    assert queue.claim(sm, "w", T0 + s(5), 60, queues=(QUEUE,)) is not None
    with sm.begin() as session:
        assert queue.fail(session, job_id, T0, "x", worker_id="w", retry_at=T0) == "dead"
    with sm.begin() as session:
        queue.revive(session, session.get_one(Job, job_id), T0 + s(9))
    j = row(sm, job_id)
    assert (j.state, j.attempts, j.next_attempt_at) == ("queued", 0, T0 + s(9))
    assert settled == [(job_id, "queued"), (job_id, "dead"), (job_id, "queued")]


def test_permanent_failure_is_dead_at_once(sm: sessionmaker[Session], settled: list) -> None:
    job_id = defer(sm, max_attempts=5)
    assert queue.claim(sm, "w", T0, 60, queues=(QUEUE,)) is not None
    with sm.begin() as session:
        assert queue.fail(session, job_id, T0, "refused", worker_id="w", retry_at=None) == "dead"


def test_cancel_only_queued_jobs(sm: sessionmaker[Session], settled: list) -> None:
    a = defer(sm)
    b = defer(sm)
    assert queue.claim(sm, "w", T0, 60, queues=(QUEUE,)) is not None
    assert not queue.cancel(sm, a, T0)  # running
    assert queue.cancel(sm, b, T0)
    assert row(sm, b).state == "cancelled"
    with pytest.raises(JobNotFoundError):
        queue.cancel(sm, 10_000, T0)


def test_reviving_a_job_whose_key_waits_again_keeps_one(
    sm: sessionmaker[Session], settled: list
) -> None:
    job_id = defer(sm, queueing_lock="k", max_attempts=1)
    assert queue.claim(sm, "w", T0, 60, queues=(QUEUE,)) is not None
    with sm.begin() as session:
        assert queue.fail(session, job_id, T0, "x", worker_id="w", retry_at=None) == "dead"
    waiting = defer(sm, queueing_lock="k")
    with sm.begin() as session:
        queue.revive(session, session.get_one(Job, job_id), T0)
    assert (row(sm, job_id).state, row(sm, waiting).state) == ("cancelled", "queued")


def test_a_task_without_a_settler_is_loud(sm: sessionmaker[Session]) -> None:
    with sm.begin() as session:
        job_id = queue.defer(session, queue=QUEUE, task="unknown", now=T0, max_attempts=1)
    assert queue.claim(sm, "w", T0, 60, queues=(QUEUE,)) is not None
    with pytest.raises(RuntimeError, match="no settler"), sm.begin() as session:
        queue.finish(session, job_id, T0, worker_id="w")
    assert row(sm, job_id).state == "running"  # rolled back with the caller's transaction


def test_defer_rejects_bad_arguments(sm: sessionmaker[Session]) -> None:
    with pytest.raises(ValueError), sm.begin() as session:
        queue.defer(session, queue=QUEUE, task=TASK, now=T0, max_attempts=0)
    with pytest.raises(ValueError, match="unknown queue"), sm.begin() as session:
        queue.defer(session, queue="nope", task=TASK, now=T0, max_attempts=1)
    with pytest.raises(ValueError):
        queue.claim(sm, "w", T0, 0, queues=(QUEUE,))
