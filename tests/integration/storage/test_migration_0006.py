"""Migration 0006 (one work queue) loses nothing in flight: analysis jobs keep their state and
gain their study's locks, every pending delivery gets a queued job due when the delivery was,
a retraining run that an upgrade interrupted is failed with a reason; and the new queue takes
the migrated work up. On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import JSON, DateTime, Engine, Integer, MetaData, Table, select

from storage import jobs, queue
from storage.db import make_sessionmaker
from storage.migrate import downgrade, upgrade

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


def _insert(engine: Engine, name: str, **values: Any) -> int:
    """Insert a row into ``name`` as the schema of the current revision has it, filling the
    required columns not given with neutral values."""
    table = Table(name, MetaData(), autoload_with=engine)
    row = dict(values)
    for column in table.columns:
        if column.name in row or column.nullable or column.primary_key:
            continue
        if isinstance(column.type, DateTime):
            row[column.name] = T0
        elif isinstance(column.type, Integer):
            row[column.name] = 0
        elif isinstance(column.type, JSON):
            row[column.name] = {}
        else:
            row[column.name] = "x"
    with engine.begin() as conn:
        new_id = conn.execute(table.insert().values(**row).returning(table.c.id)).scalar_one()
    return int(new_id)


def _rows(engine: Engine, name: str) -> list[dict[str, Any]]:
    table = Table(name, MetaData(), autoload_with=engine)
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(table).order_by(table.c.id))]


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def test_in_flight_work_moves_to_the_one_queue(engine: Engine) -> None:
    upgrade(engine, "0005")
    processing = _insert(engine, "studies", study_instance_uid="1.2.3.1", state="processing")
    waiting = _insert(engine, "studies", study_instance_uid="1.2.3.2", state="queued")
    analysed = _insert(engine, "studies", study_instance_uid="1.2.3.3", state="analysed")
    running = _insert(
        engine,
        "jobs",
        study_id=processing,
        kind="analyse",
        state="running",
        attempts=1,
        max_attempts=5,
        next_attempt_at=T0,
        lease_expires_at=T0 + timedelta(seconds=300),
        worker_id="host-a:1",
    )
    queued = _insert(
        engine,
        "jobs",
        study_id=waiting,
        kind="analyse",
        state="queued",
        attempts=0,
        max_attempts=5,
        next_attempt_at=T0,
    )
    _insert(
        engine, "jobs", study_id=analysed, kind="analyse", state="done", attempts=1, max_attempts=5
    )
    result = _insert(engine, "results", study_id=analysed, kind="sr", sop_instance_uid="1.2.9.1")
    due = T0 + timedelta(seconds=60)
    pending = _insert(
        engine,
        "deliveries",
        result_id=result,
        destination_name="pacs",
        state="pending",
        attempts=2,
        next_attempt_at=due,
    )
    _insert(engine, "deliveries", result_id=result, destination_name="b", state="sent", attempts=1)
    _insert(engine, "deliveries", result_id=result, destination_name="c", state="dead", attempts=8)
    interrupted = _insert(engine, "training_runs", slot="s1", trigger="scheduled", state="running")
    finished = _insert(engine, "training_runs", slot="s0", trigger="manual", state="succeeded")

    upgrade(engine)

    by_id = {r["id"]: r for r in _rows(engine, "jobs")}
    assert {k: by_id[running][k] for k in ("queue", "kind", "ref_id", "lock", "state")} == {
        "queue": "analysis",
        "kind": "analyse",
        "ref_id": processing,
        "lock": f"study:{processing}",
        "state": "running",
    }
    assert by_id[running]["queueing_lock"] is None  # only queued jobs hold one
    assert by_id[queued]["queueing_lock"] == f"analyse:{waiting}"
    deliver = [r for r in by_id.values() if r["queue"] == "delivery"]
    assert len(deliver) == 1  # the pending delivery only: sent and dead ones need no job
    (job,) = deliver
    assert (job["kind"], job["ref_id"], job["study_id"], job["state"]) == (
        "deliver",
        pending,
        analysed,
        "queued",
    )
    assert (job["attempts"], job["max_attempts"]) == (2, 8)
    assert _aware(job["next_attempt_at"]) == due
    assert "next_attempt_at" not in _rows(engine, "deliveries")[0]
    runs = {r["id"]: r for r in _rows(engine, "training_runs")}
    assert runs[interrupted]["state"] == "failed"
    assert "upgraded" in runs[interrupted]["error"]
    assert runs[finished]["state"] == "succeeded"
    assert "heartbeat_at" not in runs[finished]

    # the new code takes the migrated work up
    sm = make_sessionmaker(engine)
    first = jobs.claim_job(sm, "host-b:2", T0, 3600)
    assert first is not None and first.job_id == queued
    later = T0 + timedelta(seconds=301)
    assert jobs.requeue_expired(sm, later) == 1  # host-a's lease ran out
    second = jobs.claim_job(sm, "host-b:2", later, 60)
    assert second is not None and second.job_id == running and second.attempts == 2
    sending = queue.claim(sm, "host-b:3", due, 60, queues=("delivery",))
    assert sending is not None
    assert (sending.ref_id, sending.attempts) == (pending, 3)

    downgrade(engine, "0005")
    (restored,) = [r for r in _rows(engine, "deliveries") if r["id"] == pending]
    assert _aware(restored["next_attempt_at"]) == due
    old_jobs = _rows(engine, "jobs")
    assert len(old_jobs) == 3  # the delivery job went; the analysis jobs stayed
    assert all("queue" not in r for r in old_jobs)
