"""What the analysis job reads (a study's instances) and writes (its analysis and objects), and
what the radiologist-verified SR is made from (the saved review, the stored analysis).

The writes are intentions, each one transaction: :func:`commit_analysis` (an analysis with its
objects and their deliveries, while the worker holds the job) and :func:`record_verified_sr`
(a verified SR with its deliveries). Every write is idempotent, so a job re-run after a crash
finds what the first run committed: an analysis row is unique per (job, revision) and an object
row per SOP Instance UID.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from storage.db import reading
from storage.errors import ConflictError, JobLostError, NotFoundError
from storage.jobs import holds_job
from storage.outbox import DEFAULT_MAX_ATTEMPTS, queue_deliveries
from storage.reviews import OverrideRow, override_row
from storage.rows import from_attributes
from storage.schema import Instance, Job, Override, Result, Series, Study

__all__ = [
    "ANALYSIS",
    "NewObject",
    "ObjectRow",
    "SourceInstance",
    "StudyToAnalyse",
    "analyses_of",
    "commit_analysis",
    "find_object",
    "has_analysis",
    "latest_object",
    "load_study",
    "object_id",
    "objects_of",
    "record_analysis",
    "record_object",
    "record_verified_sr",
    "review_to_verify",
    "study_id_of",
]

ANALYSIS = "analysis"
SR = "sr"


@dataclass(frozen=True)
class SourceInstance:
    instance_id: int
    sop_instance_uid: str
    sop_class_uid: str
    series_instance_uid: str
    spool_path: str
    body_part_examined: str | None
    received_at: datetime


@dataclass(frozen=True)
class StudyToAnalyse:
    study_id: int
    study_instance_uid: str
    job_id: int
    job_created_at: datetime
    instances: tuple[SourceInstance, ...]


@dataclass(frozen=True)
class ObjectRow:
    result_id: int
    kind: str
    sop_instance_uid: str | None
    file_path: str | None
    job_id: int | None
    predecessor_result_id: int | None
    detail: dict[str, Any]


@dataclass(frozen=True)
class NewObject:
    """A result object the analysis job wrote to the byte store, to be recorded with it."""

    kind: str
    sop_instance_uid: str
    #: the byte store key
    file_path: str
    detail: dict[str, Any] = field(default_factory=dict)
    #: the SR this one amends (its SOP Instance UID), recorded as the row's predecessor
    predecessor_sop_instance_uid: str | None = None
    #: whether it goes to the destinations (False: kept for xrayd itself, e.g. a heatmap)
    send: bool = True


def study_id_of(sm: sessionmaker[Session], study_instance_uid: str) -> int | None:
    with reading(sm) as session:
        return session.scalar(
            select(Study.id).where(Study.study_instance_uid == study_instance_uid)
        )


def load_study(sm: sessionmaker[Session], study_id: int, job_id: int) -> StudyToAnalyse:
    """The study's stored instances (by series, then arrival) and the job's creation time."""
    with reading(sm) as session:
        study = session.get(Study, study_id)
        job = session.get(Job, job_id)
        if study is None or job is None:
            raise NotFoundError(f"study {study_id} or job {job_id} does not exist")
        rows = session.execute(
            select(Instance, Series)
            .join(Series, Instance.series_id == Series.id)
            .where(Instance.study_id == study_id)
            .order_by(Series.id, Instance.received_at, Instance.id)
        ).all()
        instances = tuple(
            from_attributes(
                SourceInstance,
                i,
                instance_id=i.id,
                series_instance_uid=s.series_instance_uid,
                body_part_examined=s.body_part_examined,
            )
            for i, s in rows
        )
        return StudyToAnalyse(study.id, study.study_instance_uid, job.id, job.created_at, instances)


def _row(r: Result) -> ObjectRow:
    return ObjectRow(
        r.id,
        r.kind,
        r.sop_instance_uid,
        r.file_path,
        r.job_id,
        r.predecessor_result_id,
        dict(r.detail),
    )


def has_analysis(sm: sessionmaker[Session], job_id: int, revision: str) -> bool:
    """Whether job ``job_id`` has committed its analysis of this revision."""
    with reading(sm) as session:
        return any(
            r.detail.get("revision") == revision
            for r in session.scalars(
                select(Result).where(Result.job_id == job_id, Result.kind == ANALYSIS)
            )
        )


def record_analysis(
    session: Session, study_id: int, job_id: int, revision: str, detail: dict[str, Any]
) -> int:
    """Store the analysis (predictions, decision, model, timings) once per job and revision."""
    for existing in session.scalars(
        select(Result).where(Result.job_id == job_id, Result.kind == ANALYSIS)
    ):
        if existing.detail.get("revision") == revision:
            return existing.id
    row = Result(
        study_id=study_id, job_id=job_id, kind=ANALYSIS, detail={**detail, "revision": revision}
    )
    session.add(row)
    session.flush()
    return row.id


def record_object(
    session: Session,
    *,
    study_id: int,
    job_id: int,
    kind: str,
    sop_instance_uid: str,
    file_path: str,
    predecessor_result_id: int | None = None,
    detail: dict[str, Any] | None = None,
) -> tuple[int, bool]:
    """Store a result object's row; ``(result id, created)`` (not created: it existed)."""
    existing = session.scalar(select(Result).where(Result.sop_instance_uid == sop_instance_uid))
    if existing is not None:
        if existing.study_id != study_id or existing.kind != kind:
            raise ConflictError(f"result UID reused for another study or kind ({kind})")
        return existing.id, False
    row = Result(
        study_id=study_id,
        job_id=job_id,
        kind=kind,
        sop_instance_uid=sop_instance_uid,
        file_path=file_path,
        predecessor_result_id=predecessor_result_id,
        detail=detail or {},
    )
    session.add(row)
    session.flush()
    return row.id, True


def object_id(session: Session, sop_instance_uid: str) -> int | None:
    """The id of the result row holding ``sop_instance_uid``, if any (in ``session``)."""
    return session.scalar(select(Result.id).where(Result.sop_instance_uid == sop_instance_uid))


def find_object(sm: sessionmaker[Session], sop_instance_uid: str) -> ObjectRow | None:
    with reading(sm) as session:
        r = session.scalar(select(Result).where(Result.sop_instance_uid == sop_instance_uid))
        return None if r is None else _row(r)


def latest_object(
    sm: sessionmaker[Session], study_id: int, kind: str, *, excluding_job: int | None = None
) -> ObjectRow | None:
    """The newest object of ``kind`` for the study (e.g. the SR an amendment replaces)."""
    with reading(sm) as session:
        query = select(Result).where(Result.study_id == study_id, Result.kind == kind)
        if excluding_job is not None:
            query = query.where((Result.job_id != excluding_job) | (Result.job_id.is_(None)))
        r = session.scalar(query.order_by(Result.id.desc()).limit(1))
        return None if r is None else _row(r)


def objects_of(sm: sessionmaker[Session], study_id: int) -> list[ObjectRow]:
    """The study's result objects (SR, SC, PDF), oldest first."""
    with reading(sm) as session:
        rows = session.scalars(
            select(Result)
            .where(Result.study_id == study_id, Result.sop_instance_uid.is_not(None))
            .order_by(Result.id)
        )
        return [_row(r) for r in rows]


def analyses_of(sm: sessionmaker[Session], study_id: int) -> list[ObjectRow]:
    """The study's analysis rows, oldest first."""
    with reading(sm) as session:
        rows = session.scalars(
            select(Result)
            .where(Result.study_id == study_id, Result.kind == ANALYSIS)
            .order_by(Result.id)
        )
        return [_row(r) for r in rows]


def commit_analysis(
    sm: sessionmaker[Session],
    *,
    study_id: int,
    job_id: int,
    worker_id: str | None,
    revision: str,
    detail: dict[str, Any],
    objects: Sequence[NewObject] = (),
    delivery_max_attempts: int = DEFAULT_MAX_ATTEMPTS,
) -> int:
    """Commit an analysis with its objects: the analysis row (predictions, decision, the
    model's TID 4019 identification, timings), a row per object (naming the analysis) and the
    deliveries of those that are sent, in one transaction, only while ``worker_id`` still holds
    the job. Returns the number of deliveries queued.

    Raises :class:`~storage.errors.JobLostError` (nothing recorded) if the job's lease was lost.
    Idempotent per (job, revision) and per object UID, like :func:`record_analysis` and
    :func:`record_object`.
    """
    queued = 0
    with sm.begin() as session:
        if not holds_job(session, job_id, worker_id):
            raise JobLostError(f"job {job_id}: lost its lease before committing its results")
        analysis_id = record_analysis(session, study_id, job_id, revision, detail)
        for obj in objects:
            predecessor_id = None
            if obj.predecessor_sop_instance_uid is not None:
                predecessor_id = object_id(session, obj.predecessor_sop_instance_uid)
            result_id, _ = record_object(
                session,
                study_id=study_id,
                job_id=job_id,
                kind=obj.kind,
                sop_instance_uid=obj.sop_instance_uid,
                file_path=obj.file_path,
                predecessor_result_id=predecessor_id,
                detail={**obj.detail, "analysis_id": analysis_id},
            )
            if obj.send:
                queued += len(
                    queue_deliveries(
                        session, result_id, obj.kind, max_attempts=delivery_max_attempts
                    )
                )
    return queued


def review_to_verify(sm: sessionmaker[Session], override_id: int) -> OverrideRow | None:
    """The saved review a verified SR is made from; None if there is no such override."""
    with reading(sm) as session:
        o = session.get(Override, override_id)
        if o is None:
            return None
        return override_row(o)


def record_verified_sr(
    sm: sessionmaker[Session],
    *,
    study_id: int,
    job_id: int,
    sop_instance_uid: str,
    file_path: str,
    supersedes_result_id: int,
    detail: dict[str, Any],
    delivery_max_attempts: int = DEFAULT_MAX_ATTEMPTS,
) -> tuple[int, int]:
    """Record a radiologist-verified SR with its deliveries (one per destination taking "sr")
    in one transaction; ``(result id, deliveries queued)``. Idempotent per SOP Instance UID:
    a second call finds the row and queues nothing new."""
    with sm.begin() as session:
        result_id, _ = record_object(
            session,
            study_id=study_id,
            job_id=job_id,
            kind=SR,
            sop_instance_uid=sop_instance_uid,
            file_path=file_path,
            predecessor_result_id=supersedes_result_id,
            detail=detail,
        )
        queued = len(queue_deliveries(session, result_id, SR, max_attempts=delivery_max_attempts))
    return result_id, queued
