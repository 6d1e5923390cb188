"""What the analysis job reads (a study's instances) and writes (its analysis and objects).

Every write is idempotent, so a job re-run after a crash finds what the first run committed:
an analysis row is unique per (job, revision) and an object row per SOP Instance UID.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from storage.errors import StorageError
from storage.schema import Instance, Job, Result, Series, Study

__all__ = [
    "ANALYSIS",
    "ObjectRow",
    "SourceInstance",
    "StudyToAnalyse",
    "analyses_of",
    "find_object",
    "has_analysis",
    "latest_object",
    "load_study",
    "object_id",
    "objects_of",
    "record_analysis",
    "record_object",
    "study_id_of",
]

ANALYSIS = "analysis"


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


def study_id_of(sm: sessionmaker[Session], study_instance_uid: str) -> int | None:
    with sm() as session:
        return session.scalar(
            select(Study.id).where(Study.study_instance_uid == study_instance_uid)
        )


def load_study(sm: sessionmaker[Session], study_id: int, job_id: int) -> StudyToAnalyse:
    """The study's stored instances (by series, then arrival) and the job's creation time."""
    with sm() as session:
        study = session.get(Study, study_id)
        job = session.get(Job, job_id)
        if study is None or job is None:
            raise StorageError(f"study {study_id} or job {job_id} does not exist")
        rows = session.execute(
            select(Instance, Series)
            .join(Series, Instance.series_id == Series.id)
            .where(Instance.study_id == study_id)
            .order_by(Series.id, Instance.received_at, Instance.id)
        ).all()
        instances = tuple(
            SourceInstance(
                instance_id=i.id,
                sop_instance_uid=i.sop_instance_uid,
                sop_class_uid=i.sop_class_uid,
                series_instance_uid=s.series_instance_uid,
                spool_path=i.spool_path,
                body_part_examined=s.body_part_examined,
                received_at=i.received_at,
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
    with sm() as session:
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
            raise StorageError(f"result UID reused for another study or kind ({kind})")
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
    with sm() as session:
        r = session.scalar(select(Result).where(Result.sop_instance_uid == sop_instance_uid))
        return None if r is None else _row(r)


def latest_object(
    sm: sessionmaker[Session], study_id: int, kind: str, *, excluding_job: int | None = None
) -> ObjectRow | None:
    """The newest object of ``kind`` for the study (e.g. the SR an amendment replaces)."""
    with sm() as session:
        query = select(Result).where(Result.study_id == study_id, Result.kind == kind)
        if excluding_job is not None:
            query = query.where((Result.job_id != excluding_job) | (Result.job_id.is_(None)))
        r = session.scalar(query.order_by(Result.id.desc()).limit(1))
        return None if r is None else _row(r)


def objects_of(sm: sessionmaker[Session], study_id: int) -> list[ObjectRow]:
    """The study's result objects (SR, SC, PDF), oldest first."""
    with sm() as session:
        rows = session.scalars(
            select(Result)
            .where(Result.study_id == study_id, Result.sop_instance_uid.is_not(None))
            .order_by(Result.id)
        )
        return [_row(r) for r in rows]


def analyses_of(sm: sessionmaker[Session], study_id: int) -> list[ObjectRow]:
    """The study's analysis rows, oldest first."""
    with sm() as session:
        rows = session.scalars(
            select(Result)
            .where(Result.study_id == study_id, Result.kind == ANALYSIS)
            .order_by(Result.id)
        )
        return [_row(r) for r in rows]
