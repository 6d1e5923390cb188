"""Error texts are stored without patient data, and database errors do not carry parameters.

On SQLite and PostgreSQL: engines hide statement parameters; ``describe_exception`` leaves out
the statement and PostgreSQL's ``DETAIL`` values; ``jobs.last_error``, an outbox row's
``last_error`` and a training run's ``error`` are redacted when written, whatever the caller
passed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from storage import outbox
from storage.jobs import claim_job, fail_job, list_jobs
from storage.redact import describe_exception, uid_handle
from storage.schema import Job, Result, Study
from storage.training import finish_run, get_run, request_run, start_run

T0 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
STUDY_UID = "1.2.826.0.1.3680043.8.498.4242424242"
#: what an exception text might quote: a value from a data set, with a UID
LEAKY = (
    "Invalid value for VR DA: '19871345'. ValueError: bad name 'ZZSECRET^PATIENT' "
    f"of MRN-31337-SECRET in study {STUDY_UID}"
)
SECRETS = ("19871345", "ZZSECRET", "MRN-31337", STUDY_UID)


@dataclass(frozen=True)
class Dest:
    name: str
    send: tuple[str, ...] = ("sr",)


def _study(session: Session, uid: str = STUDY_UID) -> Study:
    study = Study(study_instance_uid=uid, state="queued", first_received_at=T0, last_received_at=T0)
    session.add(study)
    session.flush()
    return study


def _assert_clean(text: str | None) -> None:
    assert text
    for secret in SECRETS:
        assert secret not in text


def test_a_database_error_names_no_parameters(sm: sessionmaker[Session]) -> None:
    with sm.begin() as session:
        _study(session)
    with pytest.raises(IntegrityError) as caught, sm.begin() as session:
        _study(session)  # the same Study Instance UID again
    raw = str(caught.value)
    # the engine hides parameters; PostgreSQL still quotes the key in its DETAIL line
    assert "[parameters:" not in raw and "hidden due to hide_parameters=True" in raw
    described = describe_exception(caught.value)
    assert described.startswith("IntegrityError (")
    assert "\n" not in described and "SQL" not in described
    assert STUDY_UID not in described


def test_a_failed_job_stores_a_redacted_error(sm: sessionmaker[Session]) -> None:
    with sm.begin() as session:
        study = _study(session)
        session.add(
            Job(
                queue="analysis",
                ref_id=study.id,
                study_id=study.id,
                kind="analyse",
                state="queued",
                next_attempt_at=T0,
            )
        )
    claimed = claim_job(sm, "w1", T0, 60)
    assert claimed is not None
    assert fail_job(sm, claimed.job_id, T0, LEAKY) == "retry"
    [row] = list_jobs(sm, "queued")
    _assert_clean(row.last_error)
    assert row.last_error is not None
    assert "Invalid value for VR DA" in row.last_error and uid_handle(STUDY_UID) in row.last_error


def test_a_failed_delivery_stores_a_redacted_error(sm: sessionmaker[Session]) -> None:
    with sm.begin() as session:
        study = _study(session)
        result = Result(study_id=study.id, kind="sr", sop_instance_uid="2.25.1", file_path="r.dcm")
        session.add(result)
        session.flush()
        result_id = result.id
    (delivery_id,) = outbox.queue_deliveries(
        sm, result_id, "sr", [Dest("PACS")], now=T0, max_attempts=1
    )
    claim = outbox.claim_delivery(sm, T0, 300, worker_id="w1")
    assert claim is not None and claim.delivery_id == delivery_id
    outcome = outbox.delivery_failed(sm, claim, T0, transient=True, status=0xA700, error=LEAKY)
    assert outcome == "dead"
    [row] = outbox.list_deliveries(sm, "dead")
    _assert_clean(row.last_error)
    with sm() as session:  # the queue job keeps the error too
        job = session.get(Job, claim.job_id)
        assert job is not None and job.state == "dead"
        _assert_clean(job.last_error)


def test_a_failed_training_run_stores_a_redacted_error(sm: sessionmaker[Session]) -> None:
    run = request_run(sm, slot="manual:1", trigger="manual", now=T0)
    assert run is not None and start_run(sm, "w1", T0, 3600) is not None
    finish_run(sm, run.id, worker_id="w1", state="failed", now=T0, error=LEAKY)
    stored = get_run(sm, run.id)
    assert stored is not None
    _assert_clean(stored.error)
    with sm() as session:
        job = session.get(Job, run.job_id or 0)
        assert job is not None and job.state == "dead"
        _assert_clean(job.last_error)
