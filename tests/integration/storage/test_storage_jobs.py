from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, event, select
from sqlalchemy.orm import Session, sessionmaker

from storage.errors import JobNotFoundError
from storage.instances import InstanceRecord, record_instance
from storage.jobs import (
    MAX_ERROR_CHARS,
    ClaimedJob,
    claim_job,
    complete_job,
    fail_job,
    list_jobs,
    promote_ready_studies,
    promote_studies_now,
    release_job,
    requeue_expired,
    retry_dead,
)
from storage.schema import Job, Study
from storage.status import status_counts

T0 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
RecordFactory = Callable[..., InstanceRecord]


def s(n: float) -> timedelta:
    return timedelta(seconds=n)


def store(sm: sessionmaker[Session], rec: InstanceRecord) -> None:
    with sm.begin() as session:
        record_instance(session, rec)


def study_state(sm: sessionmaker[Session], uid: str = "1.2.3.1") -> str:
    with sm() as session:
        return session.execute(
            select(Study.state).where(Study.study_instance_uid == uid)
        ).scalar_one()


def job(sm: sessionmaker[Session], job_id: int) -> Job:
    with sm() as session:
        found = session.get(Job, job_id)
        assert found is not None
        return found


def queued_study(
    sm: sessionmaker[Session], make_rec: RecordFactory, uid: str = "1.2.3.1", **kw: Any
) -> int:
    store(sm, make_rec(study=uid, sop=f"{uid}.1.1"))
    with sm.begin() as session:
        (job_id,) = promote_studies_now(session, [uid], T0, **kw)
    return job_id


# -- promotion ---------------------------------------------------------------------------------


def test_promote_after_quiet_period(sm: sessionmaker[Session], make_rec: RecordFactory) -> None:
    store(sm, make_rec(sop="1.1", at=T0))
    store(sm, make_rec(sop="1.2", at=T0 + s(10)))
    with sm.begin() as session:
        assert promote_ready_studies(session, T0 + s(39), 30, 600) == []  # 29 s quiet
    assert study_state(sm) == "receiving"
    with sm.begin() as session:
        job_ids = promote_ready_studies(session, T0 + s(40), 30, 600, max_attempts=3)
    assert len(job_ids) == 1
    assert study_state(sm) == "queued"
    j = job(sm, job_ids[0])
    assert (j.state, j.kind, j.attempts, j.max_attempts) == ("queued", "analyse", 0, 3)
    assert j.next_attempt_at == T0 + s(40)
    with sm.begin() as session:  # idempotent: timers fire twice
        assert promote_ready_studies(session, T0 + s(41), 30, 600) == []
    assert len(list_jobs(sm)) == 1


def test_promote_by_max_wait_cap(sm: sessionmaker[Session], make_rec: RecordFactory) -> None:
    """A steady trickle never leaves a quiet period; max_wait still queues the study."""
    for i in range(0, 120, 20):  # one image every 20 s (0..100 s), quiet period 30 s
        store(sm, make_rec(sop=f"1.{i}", at=T0 + s(i)))
        with sm.begin() as session:
            assert promote_ready_studies(session, T0 + s(i + 5), 30, 110) == []
    with sm.begin() as session:  # 110 s after the first image of the batch
        assert len(promote_ready_studies(session, T0 + s(110), 30, 110)) == 1
    assert study_state(sm) == "queued"
    with sm() as session:
        assert session.execute(select(Study.batch_started_at)).scalar_one() is None


def test_promote_studies_now(sm: sessionmaker[Session], make_rec: RecordFactory) -> None:
    store(sm, make_rec(study="1.1", sop="1.1.1"))
    store(sm, make_rec(study="1.2", sop="1.2.1"))
    store(sm, make_rec(study="1.3", sop="1.3.1"))
    with sm.begin() as session:
        ids = promote_studies_now(session, ["1.1", "1.2", "9.9"], T0)
    assert len(ids) == 2
    assert study_state(sm, "1.1") == study_state(sm, "1.2") == "queued"
    assert study_state(sm, "1.3") == "receiving"
    with sm.begin() as session:
        assert promote_studies_now(session, ["1.1"], T0) == []  # already queued
        assert promote_studies_now(session, [], T0) == []


def test_promote_skips_studies_locked_by_another_promoter(
    sm: sessionmaker[Session], make_rec: RecordFactory, migrated: Engine
) -> None:
    if migrated.dialect.name != "postgresql":
        # skip policy: the SQLite variant of a PostgreSQL-only behaviour (the PostgreSQL
        # variant runs, or fails in CI through the pg_admin fixture's need())
        pytest.skip("row locks: PostgreSQL only (SQLite has a single writer)")
    store(sm, make_rec())
    with sm() as first, sm() as second:
        assert len(promote_ready_studies(first, T0 + s(60), 30, 600)) == 1
        # `first` has not committed; `second` must neither block nor queue the study again.
        assert promote_ready_studies(second, T0 + s(60), 30, 600) == []
        first.commit()
        assert promote_ready_studies(second, T0 + s(61), 30, 600) == []
        second.commit()
    assert len(list_jobs(sm)) == 1


# -- claiming ----------------------------------------------------------------------------------


def test_claim_sets_running_and_processing(
    sm: sessionmaker[Session], make_rec: RecordFactory
) -> None:
    assert claim_job(sm, "w1", T0, 60) is None
    job_id = queued_study(sm, make_rec)
    claimed = claim_job(sm, "w1", T0 + s(1), 60)
    assert claimed == ClaimedJob(
        job_id=job_id,
        study_id=claimed.study_id if claimed else -1,
        study_instance_uid="1.2.3.1",
        kind="analyse",
        attempts=1,
        worker_id="w1",
    )
    j = job(sm, job_id)
    assert (j.state, j.worker_id, j.attempts) == ("running", "w1", 1)
    assert j.lease_expires_at == T0 + s(61)
    assert study_state(sm) == "processing"
    assert claim_job(sm, "w2", T0 + s(2), 60) is None


def test_claim_respects_next_attempt_at_and_order(
    sm: sessionmaker[Session], make_rec: RecordFactory
) -> None:
    first = queued_study(sm, make_rec, "1.1")
    second = queued_study(sm, make_rec, "1.2")
    with sm.begin() as session:
        session.get_one(Job, first).next_attempt_at = T0 + s(100)
    assert claim_job(sm, "w", T0 - s(1), 60) is None  # nothing due yet
    got = claim_job(sm, "w", T0, 60)
    assert got is not None and got.job_id == second
    assert claim_job(sm, "w", T0 + s(50), 60) is None
    got = claim_job(sm, "w", T0 + s(100), 60)
    assert got is not None and got.job_id == first


def test_claim_on_postgres_skips_locked_rows(
    sm: sessionmaker[Session], make_rec: RecordFactory, migrated: Engine
) -> None:
    if migrated.dialect.name != "postgresql":
        # skip policy: as above, the SQLite variant of a PostgreSQL-only behaviour
        pytest.skip("SKIP LOCKED: PostgreSQL only")
    first = queued_study(sm, make_rec, "1.1")
    second = queued_study(sm, make_rec, "1.2")
    migrated.dispose()

    @event.listens_for(migrated, "connect")
    def _lock_timeout(dbapi_connection: Any, _record: Any) -> None:
        # A regression (plain FOR UPDATE) would wait on the lock: fail instead of hanging.
        with dbapi_connection.cursor() as cur:
            cur.execute("SET lock_timeout = '20s'")
        dbapi_connection.commit()

    with sm() as holder:
        holder.execute(select(Job).where(Job.id == first).with_for_update()).scalar_one()
        claimed = claim_job(sm, "w2", T0, 60)  # another connection, while `first` is locked
        assert claimed is not None and claimed.job_id == second
        holder.rollback()
    claimed = claim_job(sm, "w3", T0, 60)
    assert claimed is not None and claimed.job_id == first


def test_concurrent_claims_get_different_jobs(
    sm: sessionmaker[Session], make_rec: RecordFactory
) -> None:
    n = 4
    expected = {queued_study(sm, make_rec, f"1.{i}") for i in range(n)}
    barrier = threading.Barrier(n)
    results: list[ClaimedJob | None] = []
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            barrier.wait()
            results.append(claim_job(sm, f"w{i}", T0, 60))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert None not in results
    assert {r.job_id for r in results if r} == expected
    assert {j.worker_id for j in list_jobs(sm, "running")} == {f"w{i}" for i in range(n)}


def test_one_running_job_per_study(sm: sessionmaker[Session], make_rec: RecordFactory) -> None:
    first = queued_study(sm, make_rec)
    assert claim_job(sm, "w1", T0, 60) is not None
    store(sm, make_rec(sop="late", at=T0 + s(5)))
    with sm.begin() as session:
        (second,) = promote_ready_studies(session, T0 + s(40), 30, 600)
    assert second != first
    assert claim_job(sm, "w2", T0 + s(40), 60) is None  # study busy
    assert complete_job(sm, first, T0 + s(41))
    assert study_state(sm) == "queued"  # the newer job still waits
    got = claim_job(sm, "w2", T0 + s(42), 60)
    assert got is not None and got.job_id == second


# -- finishing ---------------------------------------------------------------------------------


def test_complete_job(sm: sessionmaker[Session], make_rec: RecordFactory) -> None:
    job_id = queued_study(sm, make_rec)
    assert not complete_job(sm, job_id, T0)  # not running yet: ignored
    claim_job(sm, "w1", T0, 60)
    assert not complete_job(sm, job_id, T0 + s(5), worker_id="someone-else")
    assert complete_job(sm, job_id, T0 + s(5), worker_id="w1")
    j = job(sm, job_id)
    assert (j.state, j.finished_at, j.lease_expires_at) == ("done", T0 + s(5), None)
    assert study_state(sm) == "analysed"
    with pytest.raises(JobNotFoundError):
        complete_job(sm, 987654, T0)


def test_fail_with_backoff_then_dead(sm: sessionmaker[Session], make_rec: RecordFactory) -> None:
    job_id = queued_study(sm, make_rec, max_attempts=3)
    now = T0
    expected_delays = [10, 20]
    for attempt, delay in enumerate(expected_delays, start=1):
        claimed = claim_job(sm, "w1", now, 60)
        assert claimed is not None and claimed.attempts == attempt
        assert fail_job(sm, job_id, now, f"boom {attempt}") == "retry"
        j = job(sm, job_id)
        assert j.state == "queued" and j.last_error == f"boom {attempt}"
        assert study_state(sm) == "queued"
        wait = (j.next_attempt_at - now).total_seconds()
        assert 0.8 * delay <= wait <= 1.2 * delay
        assert claim_job(sm, "w1", now + s(0.7 * delay), 60) is None  # still backing off
        now = j.next_attempt_at
    assert claim_job(sm, "w1", now, 60) is not None
    assert fail_job(sm, job_id, now, "x" * 5000) == "dead"
    j = job(sm, job_id)
    assert j.state == "dead" and j.attempts == 3 and j.finished_at == now
    assert j.last_error is not None and len(j.last_error) == MAX_ERROR_CHARS
    assert study_state(sm) == "failed"
    assert claim_job(sm, "w1", now + s(3600), 60) is None
    assert [r.job_id for r in list_jobs(sm, "dead")] == [job_id]
    assert status_counts(sm).dead_letters == 1
    assert fail_job(sm, job_id, now, "again") == "stale"


def test_backoff_is_capped(sm: sessionmaker[Session], make_rec: RecordFactory) -> None:
    job_id = queued_study(sm, make_rec, max_attempts=10)
    now = T0
    for _ in range(4):
        claim_job(sm, "w", now, 60)
        fail_job(sm, job_id, now, "e", base_delay_seconds=10, max_delay_seconds=25)
        now = job(sm, job_id).next_attempt_at
    claim_job(sm, "w", now, 60)
    fail_job(sm, job_id, now, "e", base_delay_seconds=10, max_delay_seconds=25)
    wait = (job(sm, job_id).next_attempt_at - now).total_seconds()
    assert 20 <= wait <= 30  # min(25, 10 * 2**4) with jitter


def test_retry_dead(sm: sessionmaker[Session], make_rec: RecordFactory) -> None:
    job_id = queued_study(sm, make_rec, max_attempts=1)
    claim_job(sm, "w", T0, 60)
    assert fail_job(sm, job_id, T0, "bad") == "dead"
    assert retry_dead(sm, job_id, T0 + s(10)) == 1
    j = job(sm, job_id)
    assert (j.state, j.attempts, j.next_attempt_at, j.finished_at) == (
        "queued",
        0,
        T0 + s(10),
        None,
    )
    assert study_state(sm) == "queued"
    assert retry_dead(sm, None, T0) == 0
    with pytest.raises(JobNotFoundError):
        retry_dead(sm, 987654, T0)
    claimed = claim_job(sm, "w", T0 + s(10), 60)
    assert claimed is not None and claimed.attempts == 1


def test_requeue_expired(sm: sessionmaker[Session], make_rec: RecordFactory) -> None:
    job_id = queued_study(sm, make_rec, max_attempts=2)
    claim_job(sm, "w1", T0, 60)
    assert requeue_expired(sm, T0 + s(30)) == 0
    assert job(sm, job_id).state == "running"
    assert requeue_expired(sm, T0 + s(61)) == 1
    j = job(sm, job_id)
    assert (j.state, j.attempts, j.lease_expires_at) == ("queued", 1, None)
    assert j.next_attempt_at == T0 + s(61)
    assert study_state(sm) == "queued"
    assert not complete_job(sm, job_id, T0 + s(62), worker_id="w1")  # the lost worker
    claimed = claim_job(sm, "w2", T0 + s(62), 60)
    assert claimed is not None and claimed.attempts == 2
    # The last attempt also expires: bounded, ends dead rather than looping forever.
    assert requeue_expired(sm, T0 + s(200)) == 1
    assert job(sm, job_id).state == "dead"
    assert study_state(sm) == "failed"


def test_list_jobs(sm: sessionmaker[Session], make_rec: RecordFactory) -> None:
    a = queued_study(sm, make_rec, "1.1")
    b = queued_study(sm, make_rec, "1.2")
    claim_job(sm, "w", T0, 60)
    rows = list_jobs(sm)
    assert [r.job_id for r in rows] == [a, b]
    assert rows[0].state == "running" and rows[0].study_instance_uid == "1.1"
    assert [r.job_id for r in list_jobs(sm, "queued")] == [b]
    assert list_jobs(sm, "done") == []


def test_release_job(sm: sessionmaker[Session], make_rec: RecordFactory) -> None:
    job_id = queued_study(sm, make_rec, max_attempts=2)
    assert not release_job(sm, job_id, T0)  # not running
    claim_job(sm, "host:123:0", T0, 600)
    assert release_job(sm, job_id, T0 + s(5))
    j = job(sm, job_id)
    assert (j.state, j.attempts, j.next_attempt_at, j.worker_id) == (
        "queued",
        1,
        T0 + s(5),
        "host:123:0",
    )
    assert study_state(sm) == "queued"
    claim_job(sm, "w2", T0 + s(5), 600)
    assert release_job(sm, job_id, T0 + s(6))
    assert job(sm, job_id).state == "dead"  # attempts are bounded here too
    assert study_state(sm) == "failed"
    with pytest.raises(JobNotFoundError):
        release_job(sm, 987654, T0)


def test_promote_with_sessionmaker_commits(
    sm: sessionmaker[Session], make_rec: RecordFactory
) -> None:
    store(sm, make_rec())
    assert promote_ready_studies(sm, T0 + s(10), 30, 600) == []
    (job_id,) = promote_ready_studies(sm, T0 + s(31), 30, 600)
    assert study_state(sm) == "queued"
    assert job(sm, job_id).state == "queued"
