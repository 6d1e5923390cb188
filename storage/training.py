"""Retraining state: runs (claimed once per slot, one at a time), reviewed examples, and the
site's locked validation set.

A run is claimed by inserting a ``training_runs`` row: its ``slot`` is unique (a scheduled
firing's slot is its fire time, so two schedulers firing together claim it once) and a partial
unique index allows one ``running`` row. A run whose heartbeat stopped (a crash) is marked
``failed`` by the next claim once its lease is over.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from storage.errors import StorageError
from storage.redact import redact
from storage.registry import record_audit
from storage.schema import (
    Instance,
    Override,
    RunState,
    Series,
    TrainingRun,
    ValidationCase,
    utcnow,
)

__all__ = [
    "ReviewedExample",
    "RunRow",
    "ValidationCaseRow",
    "add_validation_cases",
    "claim_run",
    "finish_run",
    "heartbeat",
    "last_finished_run",
    "list_runs",
    "reviewed_examples",
    "reviews_since",
    "validation_cases",
]

logger = logging.getLogger(__name__)
MAX_ERROR = 4000


@dataclass(frozen=True)
class RunRow:
    id: int
    slot: str
    trigger: str
    state: str
    worker: str
    started_at: datetime
    heartbeat_at: datetime
    finished_at: datetime | None
    new_reviews: int
    candidate_version: str | None
    verdict: str | None
    report_path: str | None
    error: str | None
    detail: dict[str, Any]


@dataclass(frozen=True)
class ReviewedExample:
    """One reviewed source image with the radiologist's label (the study's newest review).

    ``label``: ``{"fracture": "present"|"absent", "count": "0"|"1"|"2+", "body_part": str,
    "hardware": bool}``. ``agree``: the radiologist confirmed the AI (a confirmed label).
    """

    override_id: int
    study_id: int
    instance_id: int
    sop_instance_uid: str
    spool_path: str
    label: dict[str, Any]
    agree: bool | None
    reviewed_at: datetime
    user_name: str


@dataclass(frozen=True)
class ValidationCaseRow:
    id: int
    source: str
    key: str
    study_id: int | None
    patient_group: str
    label: dict[str, Any]
    added_at: datetime
    added_by: str


def _run_row(r: TrainingRun) -> RunRow:
    return RunRow(
        r.id,
        r.slot,
        r.trigger,
        r.state,
        r.worker,
        r.started_at,
        r.heartbeat_at,
        r.finished_at,
        r.new_reviews,
        r.candidate_version,
        r.verdict,
        r.report_path,
        r.error,
        dict(r.detail),
    )


# -- runs --------------------------------------------------------------------------------------


def _expire_stale(session: Session, now: datetime, lease: timedelta) -> None:
    for run in session.scalars(
        select(TrainingRun).where(TrainingRun.state == RunState.RUNNING.value).with_for_update()
    ):
        if now - run.heartbeat_at > lease:
            run.state = RunState.FAILED.value
            run.finished_at = now
            run.error = "interrupted: no heartbeat (the process stopped or crashed)"
            logger.warning("retraining run %d was interrupted", run.id, extra={"run_id": run.id})


def claim_run(
    sm: sessionmaker[Session],
    *,
    slot: str,
    trigger: str,
    worker: str,
    now: datetime,
    lease: timedelta,
) -> RunRow | None:
    """Start a run for ``slot``; None if that slot was claimed already or a run is going."""
    try:
        with sm.begin() as session:
            _expire_stale(session, now, lease)
        with sm.begin() as session:
            run = TrainingRun(
                slot=slot[:64],
                trigger=trigger,
                state=RunState.RUNNING.value,
                worker=worker[:128],
                started_at=now,
                heartbeat_at=now,
                new_reviews=0,
                detail={},
            )
            session.add(run)
            session.flush()
            return _run_row(run)
    except IntegrityError:
        return None


def heartbeat(sm: sessionmaker[Session], run_id: int, now: datetime) -> None:
    with sm.begin() as session:
        run = session.get(TrainingRun, run_id)
        if run is not None and run.state == RunState.RUNNING.value:
            run.heartbeat_at = now


def finish_run(
    sm: sessionmaker[Session],
    run_id: int,
    *,
    state: str,
    now: datetime,
    new_reviews: int | None = None,
    candidate_version: str | None = None,
    verdict: str | None = None,
    report_path: str | None = None,
    error: str | None = None,
    detail: dict[str, Any] | None = None,
) -> RunRow:
    if state not in {s.value for s in RunState} or state == RunState.RUNNING.value:
        raise StorageError(f"a run cannot finish as {state!r}")
    with sm.begin() as session:
        run = session.get(TrainingRun, run_id)
        if run is None:
            raise StorageError(f"no training run {run_id}")
        run.state = state
        run.finished_at = now
        run.heartbeat_at = now
        if new_reviews is not None:
            run.new_reviews = new_reviews
        run.candidate_version = candidate_version
        run.verdict = verdict
        run.report_path = report_path
        run.error = None if error is None else redact(error)[:MAX_ERROR]
        if detail is not None:
            run.detail = dict(detail)
        record_audit(
            session,
            run.worker,
            f"retrain_{state}",
            "training_run",
            str(run_id),
            {"candidate": candidate_version, "verdict": verdict, "trigger": run.trigger},
        )
        return _run_row(run)


def list_runs(sm: sessionmaker[Session], limit: int = 50) -> list[RunRow]:
    with sm() as session:
        rows = session.scalars(select(TrainingRun).order_by(TrainingRun.id.desc()).limit(limit))
        return [_run_row(r) for r in rows]


def get_run(sm: sessionmaker[Session], run_id: int) -> RunRow | None:
    with sm() as session:
        r = session.get(TrainingRun, run_id)
        return None if r is None else _run_row(r)


def last_finished_run(sm: sessionmaker[Session]) -> RunRow | None:
    """The newest run that trained a candidate (``succeeded``)."""
    with sm() as session:
        r = session.scalar(
            select(TrainingRun)
            .where(TrainingRun.state == RunState.SUCCEEDED.value)
            .order_by(TrainingRun.id.desc())
            .limit(1)
        )
        return None if r is None else _run_row(r)


# -- reviews as training data ------------------------------------------------------------------


def reviews_since(sm: sessionmaker[Session], since: datetime | None) -> int:
    """Reviews (override rows) created after ``since`` (all when None)."""
    with sm() as session:
        query = select(func.count(Override.id))
        if since is not None:
            query = query.where(Override.created_at > since)
        return int(session.scalar(query) or 0)


def reviewed_examples(sm: sessionmaker[Session]) -> list[ReviewedExample]:
    """Every source image of every reviewed study, with the study's newest review's label.

    Images whose analysis did not analyse them are included too (the label is the study's);
    the training code skips what it cannot prepare.
    """
    with sm() as session:
        latest: dict[int, Override] = {}
        for o in session.scalars(select(Override).order_by(Override.id)):
            latest[o.study_id] = o
        if not latest:
            return []
        rows = session.execute(
            select(Instance)
            .join(Series, Series.id == Instance.series_id)
            .where(Instance.study_id.in_(list(latest)))
            .order_by(Instance.study_id, Series.id, Instance.id)
        ).scalars()
        return [
            ReviewedExample(
                override_id=latest[i.study_id].id,
                study_id=i.study_id,
                instance_id=i.id,
                sop_instance_uid=i.sop_instance_uid,
                spool_path=i.spool_path,
                label=dict(latest[i.study_id].radiologist_label),
                agree=latest[i.study_id].agree,
                reviewed_at=latest[i.study_id].created_at,
                user_name=latest[i.study_id].user_name,
            )
            for i in rows
        ]


# -- the locked validation set -----------------------------------------------------------------


def _case_row(c: ValidationCase) -> ValidationCaseRow:
    return ValidationCaseRow(
        c.id, c.source, c.key, c.study_id, c.patient_group, dict(c.label), c.added_at, c.added_by
    )


def validation_cases(
    sm: sessionmaker[Session], source: str | None = None
) -> list[ValidationCaseRow]:
    with sm() as session:
        query = select(ValidationCase).order_by(ValidationCase.id)
        if source is not None:
            query = query.where(ValidationCase.source == source)
        return [_case_row(c) for c in session.scalars(query)]


def add_validation_cases(
    sm: sessionmaker[Session],
    cases: Sequence[tuple[str, str, int | None, str, dict[str, Any]]],
    *,
    actor: str,
) -> int:
    """Add ``(source, key, study_id, patient_group, label)`` cases; existing keys are kept as
    they are (the set only grows, by an explicit command). Returns how many were added."""
    now = utcnow()
    added = 0
    with sm.begin() as session:
        existing = {(c.source, c.key) for c in session.scalars(select(ValidationCase))}
        for source, key, study_id, group, label in cases:
            if source not in ("base", "review"):
                raise StorageError(f"validation case source must be base or review, not {source!r}")
            if (source, key) in existing:
                continue
            existing.add((source, key))
            session.add(
                ValidationCase(
                    source=source,
                    key=key[:255],
                    study_id=study_id,
                    patient_group=group[:64],
                    label=dict(label),
                    added_at=now,
                    added_by=actor[:128],
                )
            )
            added += 1
        if added:
            record_audit(
                session, actor, "validation_set_extended", "validation_set", None, {"added": added}
            )
    return added
