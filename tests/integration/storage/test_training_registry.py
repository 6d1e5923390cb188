"""Retraining state on SQLite and PostgreSQL: runs requested once per slot as jobs of the
``retrain`` queue and run one at a time, a run kept in step with its job when its worker is
lost (queued again, or failed on its last attempt) while the lost worker cannot record an
outcome, the locked validation set only grows, and the model registry's promote / rollback /
gate rules, all audited."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from storage import queue
from storage.audit import list_audit
from storage.db import make_engine, make_sessionmaker
from storage.errors import JobLostError
from storage.migrate import upgrade
from storage.model_versions import (
    RegistryError,
    active_version,
    ensure_active,
    list_model_versions,
    promote,
    register_version,
    rollback,
)
from storage.schema import Job, TrainingRun
from storage.training import (
    CANCELLED_ERROR,
    add_validation_cases,
    finish_run,
    get_run,
    list_runs,
    request_run,
    requeue_expired,
    reviews_since,
    running_run,
    start_run,
    validation_cases,
)

T0 = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
LEASE = 900.0
WAIT = 30.0  # an upper bound for a thread to reach a point; never a measured time


@pytest.fixture
def sm(database_url: str, tmp_path: Path) -> sessionmaker[Session]:
    (tmp_path / "db").mkdir(exist_ok=True)
    engine = make_engine(database_url)
    upgrade(engine)
    return make_sessionmaker(engine)


def _job(sm: sessionmaker[Session], job_id: int | None) -> Job:
    assert job_id is not None
    with sm() as session:
        job = session.get(Job, job_id)
        assert job is not None
        session.expunge(job)
        return job


def _counts(sm: sessionmaker[Session]) -> tuple[int, int]:
    """(training runs, jobs of the retrain queue)"""
    with sm() as session:
        runs = session.scalar(select(func.count(TrainingRun.id)))
        jobs = session.scalar(select(func.count(Job.id)).where(Job.queue == "retrain"))
        return int(runs or 0), int(jobs or 0)


def test_a_slot_is_requested_once_and_one_run_goes_at_a_time(sm: sessionmaker[Session]) -> None:
    first = request_run(sm, slot="scheduled:A", trigger="scheduled", now=T0)
    assert first is not None and first.state == "queued" and first.worker == ""
    job = _job(sm, first.job_id)
    assert (job.queue, job.kind, job.ref_id, job.lock, job.state) == (
        "retrain",
        "retrain",
        first.id,
        "retrain",
        "queued",
    )
    assert job.max_attempts == 1
    # The same firing seen by a second scheduler: nothing more is queued.
    assert request_run(sm, slot="scheduled:A", trigger="scheduled", now=T0) is None
    assert _counts(sm) == (1, 1)
    # Another slot is queued behind it.
    manual = request_run(sm, slot="manual:x", trigger="manual", now=T0)
    assert manual is not None and manual.state == "queued"
    assert _counts(sm) == (2, 2)

    started = start_run(sm, "w1", T0 + timedelta(minutes=1), LEASE)
    assert started is not None and started.run.id == first.id
    assert started.run.state == "running" and started.run.worker == "w1"
    assert started.run.started_at == T0 + timedelta(minutes=1)
    assert started.attempts == 1 and started.job_id == first.job_id
    assert _job(sm, first.job_id).worker_id == "w1"
    # One run at a time: the manual run waits for the queue lock "retrain".
    assert start_run(sm, "w2", T0 + timedelta(minutes=1), LEASE) is None
    running = running_run(sm)
    assert running is not None and running.id == first.id

    done = finish_run(
        sm,
        first.id,
        worker_id="w1",
        state="succeeded",
        now=T0 + timedelta(minutes=12),
        new_reviews=7,
        candidate_version="1.0.0+r1",
        verdict="passed",
    )
    assert done.state == "succeeded" and done.new_reviews == 7
    assert _job(sm, first.job_id).state == "done"
    second = start_run(sm, "w2", T0 + timedelta(minutes=13), LEASE)
    assert second is not None and second.run.id == manual.id
    # The finished slot stays taken for ever.
    assert request_run(sm, slot="scheduled:A", trigger="scheduled", now=T0) is None
    assert [r.slot for r in list_runs(sm)] == ["manual:x", "scheduled:A"]
    assert any(e.action == "retrain.succeeded" for e in list_audit(sm))


def test_a_scheduled_request_coalesces_into_a_waiting_run(sm: sessionmaker[Session]) -> None:
    first = request_run(sm, slot="scheduled:A", trigger="scheduled", now=T0, unless_waiting=True)
    assert first is not None
    assert (
        request_run(sm, slot="scheduled:B", trigger="scheduled", now=T0, unless_waiting=True)
        is None
    )
    assert _counts(sm) == (1, 1)
    assert start_run(sm, "w1", T0, LEASE) is not None
    # running, not waiting: the next firing queues one run after it
    assert request_run(sm, slot="scheduled:C", trigger="scheduled", now=T0, unless_waiting=True)
    assert _counts(sm) == (2, 2)


def test_two_schedulers_requesting_one_slot_at_once_queue_one_run(
    sm: sessionmaker[Session],
) -> None:
    barrier = threading.Barrier(2, timeout=WAIT)
    got: list[object] = []
    lock = threading.Lock()

    def fire() -> None:
        barrier.wait()
        run = request_run(sm, slot="scheduled:A", trigger="scheduled", now=T0)
        with lock:
            got.append(run)

    threads = [threading.Thread(target=fire) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    assert len(got) == 2 and sum(r is not None for r in got) == 1
    assert _counts(sm) == (1, 1)


def test_a_lost_worker_s_run_is_queued_again_then_fails_on_its_last_attempt(
    sm: sessionmaker[Session],
) -> None:
    run = request_run(sm, slot="manual:1", trigger="manual", now=T0, max_attempts=2)
    assert run is not None
    lost = start_run(sm, "w1", T0, 60)
    assert lost is not None and lost.run.id == run.id
    # w1 is SIGKILLed: its lease runs out and a retrain worker's sweep takes the run up.
    assert requeue_expired(sm, T0 + timedelta(seconds=30)) == 0  # still leased
    assert requeue_expired(sm, T0 + timedelta(seconds=61)) == 1
    again = get_run(sm, run.id)
    assert again is not None and again.state == "queued" and again.worker == ""
    assert again.finished_at is None and again.error is None
    job = _job(sm, run.job_id)
    assert job.state == "queued" and job.last_error == queue.LEASE_EXPIRED_ERROR
    # The lost worker comes back and reports: refused, nothing recorded.
    with pytest.raises(JobLostError, match="no longer holds"):
        finish_run(sm, run.id, worker_id="w1", state="succeeded", now=T0, verdict="passed")
    unchanged = get_run(sm, run.id)
    assert unchanged is not None and unchanged.state == "queued" and unchanged.verdict is None

    second = start_run(sm, "w2", T0 + timedelta(minutes=2), 60)
    assert second is not None and second.attempts == 2 and second.run.worker == "w2"
    # Refused while another worker holds it, too.
    with pytest.raises(JobLostError):
        finish_run(sm, run.id, worker_id="w1", state="failed", now=T0, error="late")
    # w2 dies too, on the last attempt: the run fails with the job's error.
    assert requeue_expired(sm, T0 + timedelta(minutes=4)) == 1
    failed = get_run(sm, run.id)
    assert failed is not None and failed.state == "failed"
    assert failed.error == queue.LEASE_EXPIRED_ERROR
    assert failed.finished_at == T0 + timedelta(minutes=4)
    assert _job(sm, run.job_id).state == "dead"
    with pytest.raises(JobLostError):
        finish_run(sm, run.id, worker_id="w2", state="succeeded", now=T0)
    after = get_run(sm, run.id)
    assert after is not None and after.state == "failed"
    # The lock is free again: the next run starts.
    nxt = request_run(sm, slot="manual:2", trigger="manual", now=T0)
    assert nxt is not None and start_run(sm, "w3", T0 + timedelta(minutes=5), 60) is not None


def test_a_run_of_one_attempt_fails_when_its_worker_is_lost(sm: sessionmaker[Session]) -> None:
    run = request_run(sm, slot="manual:1", trigger="manual", now=T0)
    assert run is not None
    assert start_run(sm, "w1", T0, 60) is not None
    assert queue.release(sm, run.job_id or 0, T0 + timedelta(seconds=5))  # process known gone
    failed = get_run(sm, run.id)
    assert failed is not None and failed.state == "failed"
    assert failed.error == queue.RELEASED_ERROR
    with pytest.raises(JobLostError):
        finish_run(sm, run.id, worker_id="w1", state="skipped", now=T0)


def test_a_failed_run_dead_letters_its_job_and_a_revived_one_runs_again(
    sm: sessionmaker[Session],
) -> None:
    run = request_run(sm, slot="manual:1", trigger="manual", now=T0, max_attempts=3)
    assert run is not None
    assert start_run(sm, "w1", T0, LEASE) is not None
    failed = finish_run(sm, run.id, worker_id="w1", state="failed", now=T0, error="boom")
    assert failed.state == "failed" and failed.error == "boom"
    job = _job(sm, run.job_id)
    assert job.state == "dead" and job.last_error == "boom"  # a failed run is not retried
    assert any(e.action == "retrain.failed" for e in list_audit(sm))
    # An operator retries the dead job: the run is queued again and runs.
    assert queue.retry_dead(sm, T0 + timedelta(hours=1), job_id=run.job_id) == [run.job_id]
    revived = get_run(sm, run.id)
    assert revived is not None and revived.state == "queued" and revived.error is None
    again = start_run(sm, "w2", T0 + timedelta(hours=1), LEASE)
    assert again is not None and again.run.id == run.id
    skipped = finish_run(sm, run.id, worker_id="w2", state="skipped", now=T0, new_reviews=1)
    assert skipped.state == "skipped" and _job(sm, run.job_id).state == "done"


def test_a_cancelled_request_fails_its_run(sm: sessionmaker[Session]) -> None:
    run = request_run(sm, slot="manual:1", trigger="manual", now=T0)
    assert run is not None and run.job_id is not None
    assert queue.cancel(sm, run.job_id, T0)
    cancelled = get_run(sm, run.id)
    assert cancelled is not None and cancelled.state == "failed"
    assert cancelled.error == CANCELLED_ERROR
    assert start_run(sm, "w1", T0, LEASE) is None


def test_a_job_whose_run_is_not_waiting_is_dead_lettered(sm: sessionmaker[Session]) -> None:
    run = request_run(sm, slot="manual:1", trigger="manual", now=T0)
    assert run is not None
    with sm.begin() as session:  # e.g. marked failed by hand while its job waited
        row = session.get(TrainingRun, run.id)
        assert row is not None
        row.state = "failed"
    assert start_run(sm, "w1", T0, LEASE) is None
    assert _job(sm, run.job_id).state == "dead"
    kept = get_run(sm, run.id)
    assert kept is not None and kept.state == "failed" and kept.worker == ""


def test_finish_run_refuses_states_that_are_not_outcomes(sm: sessionmaker[Session]) -> None:
    from storage.errors import StorageError

    run = request_run(sm, slot="manual:1", trigger="manual", now=T0)
    assert run is not None and start_run(sm, "w1", T0, LEASE) is not None
    for state in ("running", "queued", "bogus"):
        with pytest.raises(StorageError, match="cannot finish"):
            finish_run(sm, run.id, worker_id="w1", state=state, now=T0)


def test_validation_set_only_grows_and_is_audited(sm: sessionmaker[Session]) -> None:
    cases = [("base", f"synthetic:1:{i}", None, f"g{i}", {"fracture": i % 2}) for i in range(3)]
    assert add_validation_cases(sm, cases, actor="admin") == 3
    assert (
        add_validation_cases(sm, [*cases, ("review", "1.2.3", None, "gx", {})], actor="admin") == 1
    )
    rows = validation_cases(sm)
    assert [r.key for r in rows] == ["synthetic:1:0", "synthetic:1:1", "synthetic:1:2", "1.2.3"]
    assert [r.key for r in validation_cases(sm, "review")] == ["1.2.3"]
    events = [e for e in list_audit(sm) if e.action == "validation_set.extended"]
    assert [e.detail["added"] for e in events] == [1, 3]
    assert reviews_since(sm, None) == 0


def _register(sm: sessionmaker[Session], version: str, state: str, verdict: str | None) -> None:
    with sm.begin() as session:
        register_version(
            session,
            name="xrayd-phantom",
            version=version,
            sha256=version.ljust(64, "0")[:64],
            path=f"/models/{version}",
            state=state,
            actor="retrain",
            gate=None if verdict is None else {"verdict": verdict},
            parent_version="1.0.0",
        )


def test_promote_rollback_and_the_gate(sm: sessionmaker[Session]) -> None:
    base = ensure_active(
        sm, name="xrayd-phantom", version="1.0.0", sha256="a" * 64, path="/b", actor="xrayd"
    )
    assert base.state == "active" and base.promoted_by == "xrayd"
    again = ensure_active(sm, name="other", version="9", sha256="b" * 64, path="/c", actor="x")
    assert again.version == "1.0.0"  # the registry decides once a version is active
    with pytest.raises(RegistryError, match="no earlier model"):
        rollback(sm, actor="admin")
    _register(sm, "1.0.0+r1", "candidate", "passed")
    _register(sm, "1.0.0+r2", "rejected", "failed")
    with pytest.raises(RegistryError, match="failed the promotion gate"):
        promote(sm, "1.0.0+r2", actor="admin")
    with pytest.raises(RegistryError, match="no model version"):
        promote(sm, "nope", actor="admin")
    promoted = promote(sm, "1.0.0+r1", actor="admin")
    assert promoted.state == "active" and promoted.promoted_by == "admin"
    states = {r.version: r.state for r in list_model_versions(sm)}
    assert states == {"1.0.0": "retired", "1.0.0+r1": "active", "1.0.0+r2": "rejected"}
    back = rollback(sm, actor="admin")
    assert back.version == "1.0.0" and back.state == "active"
    active = active_version(sm)
    assert active is not None and active.version == "1.0.0"
    actions = [e.action for e in list_audit(sm)]
    assert {"model.registered", "model.promoted", "model.rolled_back"} <= set(actions)
    with sm.begin() as session, pytest.raises(RegistryError, match="active already"):
        register_version(
            session, name="x", version="2", sha256="c" * 64, path="/d", state="active", actor="t"
        )


def test_reviewed_examples_take_each_studys_newest_review(sm: sessionmaker[Session]) -> None:
    from storage.schema import Instance, Override, Series, Study
    from storage.training import reviewed_examples

    with sm.begin() as s:
        study = Study(
            study_instance_uid="1.2.3",
            state="analysed",
            first_received_at=T0,
            last_received_at=T0,
            instance_count=2,
        )
        other = Study(
            study_instance_uid="1.2.4",
            state="analysed",
            first_received_at=T0,
            last_received_at=T0,
            instance_count=1,
        )
        s.add_all([study, other])
        s.flush()
        series = Series(study_id=study.id, series_instance_uid="1.2.3.1", modality="DX")
        s.add(series)
        s.flush()
        for n in range(2):
            s.add(
                Instance(
                    series_id=series.id,
                    study_id=study.id,
                    sop_instance_uid=f"1.2.3.1.{n}",
                    sop_class_uid="1.2",
                    transfer_syntax_uid="1.2",
                    spool_path=f"i/{n}",
                    size_bytes=1,
                    sha256="0" * 64,
                    received_at=T0,
                    calling_ae_title="M",
                )
            )
        wrong = {"fracture": "present", "count": "1", "body_part": "wrist", "hardware": False}
        right = {"fracture": "absent", "count": "0", "body_part": "wrist", "hardware": False}
        s.add(
            Override(
                study_id=study.id, user_name="a", radiologist_label=wrong, agree=True, created_at=T0
            )
        )
        s.add(
            Override(
                study_id=study.id,
                user_name="b",
                radiologist_label=right,
                agree=False,
                created_at=T0 + timedelta(hours=1),
            )
        )
    examples = reviewed_examples(sm)
    assert [e.sop_instance_uid for e in examples] == ["1.2.3.1.0", "1.2.3.1.1"]
    assert all(e.label == right and e.agree is False and e.user_name == "b" for e in examples)
    assert reviews_since(sm, None) == 2 and reviews_since(sm, T0) == 1


def test_a_moved_bundle_with_the_same_weights_is_followed(sm: sessionmaker[Session]) -> None:
    from storage.model_versions import relocate

    ensure_active(sm, name="m", version="1.0.0", sha256="a" * 64, path="/old", actor="xrayd")
    assert not relocate(sm, "1.0.0", "b" * 64, "/new")  # other weights: refused
    assert relocate(sm, "1.0.0", "a" * 64, "/new")
    active = active_version(sm)
    assert active is not None and active.path == "/new"
    assert any(e.action == "model.relocated" for e in list_audit(sm))
