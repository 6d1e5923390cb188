from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from storage.instances import InstanceRecord, StoreOutcome, lookup_instance, record_instance
from storage.jobs import claim_job, complete_job, promote_ready_studies
from storage.schema import Instance, Job, Series, Study

T0 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
RecordFactory = Callable[..., InstanceRecord]


def store(sm: sessionmaker[Session], rec: InstanceRecord) -> StoreOutcome:
    with sm.begin() as session:
        return record_instance(session, rec)


def study(sm: sessionmaker[Session], uid: str = "1.2.3.1") -> Study:
    with sm() as session:
        return session.execute(select(Study).where(Study.study_instance_uid == uid)).scalar_one()


def test_new_instance_creates_study_series_instance(
    sm: sessionmaker[Session], make_rec: RecordFactory
) -> None:
    rec = make_rec()
    assert store(sm, rec) is StoreOutcome.NEW
    s = study(sm)
    assert s.state == "receiving"
    assert s.instance_count == 1
    assert s.first_received_at == s.last_received_at == s.batch_started_at == T0
    assert s.calling_ae_title == "CR1"
    with sm() as session:
        series = session.execute(select(Series)).scalar_one()
        assert series.study_id == s.id and series.modality == "DX"
        inst = session.execute(select(Instance)).scalar_one()
        assert inst.series_id == series.id and inst.study_id == s.id
        assert inst.received_at == T0 and inst.received_at.tzinfo is not None
        assert lookup_instance(session, rec.sop_instance_uid) == (rec.spool_path, rec.sha256)
        assert lookup_instance(session, "9.9.9") is None


def test_second_instance_updates_study(sm: sessionmaker[Session], make_rec: RecordFactory) -> None:
    store(sm, make_rec(sop="1.1", at=T0))
    later = T0 + timedelta(seconds=20)
    assert store(sm, make_rec(sop="1.2", at=later, ae="CR2")) is StoreOutcome.NEW
    s = study(sm)
    assert s.instance_count == 2
    assert s.first_received_at == T0
    assert s.last_received_at == later
    assert s.batch_started_at == T0  # kept while receiving
    assert s.calling_ae_title == "CR2"
    with sm() as session:
        assert session.scalar(select(func.count()).select_from(Series)) == 1


def test_duplicate_and_conflict(sm: sessionmaker[Session], make_rec: RecordFactory) -> None:
    first = make_rec(sha="a" * 64)
    assert store(sm, first) is StoreOutcome.NEW
    assert store(sm, make_rec(sha="a" * 64, at=T0 + timedelta(minutes=1))) is StoreOutcome.DUPLICATE
    assert store(sm, make_rec(sha="a" * 64)) is StoreOutcome.DUPLICATE
    assert store(sm, make_rec(sha="b" * 64)) is StoreOutcome.CONFLICT
    with sm() as session:
        inst = session.execute(select(Instance)).scalar_one()
        assert inst.duplicate_count == 2
        assert inst.conflict_count == 1
        assert inst.sha256 == "a" * 64  # the original is kept
    s = study(sm)
    assert s.instance_count == 1
    assert s.last_received_at == T0  # duplicates are not new images


def test_late_instance_after_analysed_reopens_study(
    sm: sessionmaker[Session], make_rec: RecordFactory
) -> None:
    store(sm, make_rec(sop="1.1"))
    with sm.begin() as session:
        (job_id,) = promote_ready_studies(session, T0 + timedelta(seconds=60), 30, 600)
    claimed = claim_job(sm, "w1", T0 + timedelta(seconds=61), 300)
    assert claimed is not None and claimed.job_id == job_id
    assert complete_job(sm, job_id, T0 + timedelta(seconds=90))
    assert study(sm).state == "analysed"

    late = T0 + timedelta(hours=1)
    assert store(sm, make_rec(sop="1.2", at=late)) is StoreOutcome.NEW
    s = study(sm)
    assert s.state == "receiving"
    assert s.batch_started_at == late
    assert s.instance_count == 2
    with sm.begin() as session:
        new_jobs = promote_ready_studies(session, late + timedelta(seconds=31), 30, 600)
    assert len(new_jobs) == 1 and new_jobs[0] != job_id


def test_late_instance_while_job_queued_leaves_it_queued(
    sm: sessionmaker[Session], make_rec: RecordFactory
) -> None:
    store(sm, make_rec(sop="1.1"))
    with sm.begin() as session:
        promote_ready_studies(session, T0 + timedelta(seconds=60), 30, 600)
    store(sm, make_rec(sop="1.2", at=T0 + timedelta(seconds=70)))
    s = study(sm)
    assert s.state == "queued"
    assert s.batch_started_at is None
    assert s.instance_count == 2
    with sm() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 1


def test_late_instance_while_processing_reopens_and_survives_completion(
    sm: sessionmaker[Session], make_rec: RecordFactory
) -> None:
    store(sm, make_rec(sop="1.1"))
    with sm.begin() as session:
        (job_id,) = promote_ready_studies(session, T0 + timedelta(seconds=60), 30, 600)
    claim_job(sm, "w1", T0 + timedelta(seconds=60), 300)
    assert study(sm).state == "processing"
    late = T0 + timedelta(seconds=65)
    store(sm, make_rec(sop="1.2", at=late))
    assert study(sm).state == "receiving"
    assert complete_job(sm, job_id, T0 + timedelta(seconds=80))
    s = study(sm)
    assert s.state == "receiving"  # the late image still needs an analysis
    assert s.batch_started_at == late


def test_concurrent_inserts_into_same_new_study(
    sm: sessionmaker[Session], make_rec: RecordFactory
) -> None:
    """Several associations create the same study and series at the same moment."""
    n = 4
    barrier = threading.Barrier(n)
    outcomes: list[StoreOutcome] = []
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        try:
            rec = make_rec(sop=f"1.9.{i}", sha=f"{i:x}" * 64)
            with sm.begin() as session:
                barrier.wait()
                outcomes.append(record_instance(session, rec))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert outcomes == [StoreOutcome.NEW] * n
    s = study(sm)
    assert s.instance_count == n
    with sm() as session:
        assert session.scalar(select(func.count()).select_from(Study)) == 1
        assert session.scalar(select(func.count()).select_from(Series)) == 1
        assert session.scalar(select(func.count()).select_from(Instance)) == n


def test_concurrent_same_sop_instance(sm: sessionmaker[Session], make_rec: RecordFactory) -> None:
    n = 3
    barrier = threading.Barrier(n)
    outcomes: list[StoreOutcome] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with sm.begin() as session:
                barrier.wait()
                outcomes.append(record_instance(session, make_rec()))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(o.value for o in outcomes) == ["duplicate", "duplicate", "new"]
    assert study(sm).instance_count == 1
