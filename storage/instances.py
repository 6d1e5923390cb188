"""Recording received instances: study/series/instance upserts, idempotent on SOP Instance UID.

Concurrency (PostgreSQL): rows are created with ``INSERT ... ON CONFLICT DO NOTHING`` and then
selected, so two associations creating the same study or series at the same moment both
succeed. The study row is locked (``SELECT ... FOR UPDATE``) before its counters change, which
also serialises instances of one study. On SQLite the engine's ``BEGIN IMMEDIATE`` serialises
writers. Functions here use the caller's session; the caller commits.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import exists, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from storage.errors import StorageError
from storage.schema import Instance, Job, JobState, Series, Study, StudyState

logger = logging.getLogger(__name__)

_MAX_UID = 64


class StoreOutcome(enum.Enum):
    NEW = "new"
    DUPLICATE = "duplicate"  # same SOP Instance UID, same bytes: nothing changes
    CONFLICT = "conflict"  # same SOP Instance UID, different bytes: the original is kept


@dataclass(frozen=True)
class InstanceRecord:
    """Plain data about one received instance (no pixel data, no patient data)."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    modality: str
    body_part_examined: str | None
    spool_path: str
    size_bytes: int
    sha256: str
    calling_ae_title: str
    received_at: datetime

    def __post_init__(self) -> None:
        for name in (
            "study_instance_uid",
            "series_instance_uid",
            "sop_instance_uid",
            "sop_class_uid",
            "transfer_syntax_uid",
        ):
            value = getattr(self, name)
            if not value or len(value) > _MAX_UID:
                raise ValueError(f"{name} must be 1 to {_MAX_UID} characters")
        if self.received_at.tzinfo is None:
            raise ValueError("received_at must be timezone-aware")
        if self.size_bytes < 0:
            raise ValueError("size_bytes must not be negative")
        if len(self.sha256) != 64:
            raise ValueError("sha256 must be 64 hex digits")


def lookup_instance(session: Session, sop_instance_uid: str) -> tuple[str, str] | None:
    """``(spool_path, sha256)`` of a stored instance, or None."""
    row = session.execute(
        select(Instance.spool_path, Instance.sha256).where(
            Instance.sop_instance_uid == sop_instance_uid
        )
    ).first()
    return None if row is None else (row[0], row[1])


def record_instance(session: Session, rec: InstanceRecord) -> StoreOutcome:
    """Upsert the study, series and instance rows for ``rec`` (the caller commits).

    - Existing SOP Instance UID with the same SHA-256: DUPLICATE (``duplicate_count`` + 1).
    - Existing with a different SHA-256: CONFLICT (``conflict_count`` + 1, original kept).
    - NEW: the study's ``last_received_at`` moves forward, ``instance_count`` + 1, the calling
      AE title is remembered. A study in ``receiving`` keeps its ``batch_started_at`` (set if
      missing). A study that was already ``queued``/``processing``/``analysed``/``failed`` gets
      a late image: it goes back to ``receiving`` with a new batch, unless a job for it is
      still ``queued`` (that job will see the new image), in which case nothing changes.
    """
    existing = _existing_outcome(session, rec)
    if existing is not None:
        return existing

    study = _lock_or_create_study(session, rec)
    series_id = _series_id(session, rec, study.id)
    instance_id = _insert_ignore(
        session,
        Instance,
        {
            "series_id": series_id,
            "study_id": study.id,
            "sop_instance_uid": rec.sop_instance_uid,
            "sop_class_uid": rec.sop_class_uid,
            "transfer_syntax_uid": rec.transfer_syntax_uid,
            "spool_path": rec.spool_path,
            "size_bytes": rec.size_bytes,
            "sha256": rec.sha256,
            "received_at": rec.received_at,
            "calling_ae_title": rec.calling_ae_title,
            "duplicate_count": 0,
            "conflict_count": 0,
        },
        "sop_instance_uid",
    )
    if instance_id is None:
        # Another association stored this SOP Instance UID between our check and insert.
        raced = _existing_outcome(session, rec)
        if raced is None:  # pragma: no cover - the conflicting row must be visible now
            raise StorageError("instance insert conflicted but no row was found")
        return raced

    study.first_received_at = min(study.first_received_at, rec.received_at)
    study.last_received_at = max(study.last_received_at, rec.received_at)
    study.instance_count += 1
    study.calling_ae_title = rec.calling_ae_title
    study.updated_at = rec.received_at
    if study.state == StudyState.RECEIVING:
        if study.batch_started_at is None:
            study.batch_started_at = rec.received_at
    elif not _has_queued_job(session, study.id):
        logger.info(
            "late instance reopens study",
            extra={"study_id": study.id, "previous_state": study.state},
        )
        study.state = StudyState.RECEIVING.value
        study.batch_started_at = rec.received_at
    session.flush()
    return StoreOutcome.NEW


def _existing_outcome(session: Session, rec: InstanceRecord) -> StoreOutcome | None:
    row = session.execute(
        select(Instance.id, Instance.sha256).where(
            Instance.sop_instance_uid == rec.sop_instance_uid
        )
    ).first()
    if row is None:
        return None
    instance_id, sha256 = row
    if sha256 == rec.sha256:
        session.execute(
            update(Instance)
            .where(Instance.id == instance_id)
            .values(duplicate_count=Instance.duplicate_count + 1)
        )
        # Retention deleted the file and the sender has just written the same bytes back to
        # the same place: the instance has its file again.
        session.execute(
            update(Instance)
            .where(
                Instance.id == instance_id,
                Instance.spool_path == rec.spool_path,
                Instance.purged_at.is_not(None),
            )
            .values(purged_at=None)
        )
        return StoreOutcome.DUPLICATE
    session.execute(
        update(Instance)
        .where(Instance.id == instance_id)
        .values(conflict_count=Instance.conflict_count + 1)
    )
    logger.warning(
        "instance received again with different content", extra={"instance_id": instance_id}
    )
    return StoreOutcome.CONFLICT


def _lock_or_create_study(session: Session, rec: InstanceRecord) -> Study:
    """The study's row, locked (created first if missing: most instances find it)."""
    study = _locked_study(session, rec.study_instance_uid)
    if study is not None:
        return study
    _insert_ignore(
        session,
        Study,
        {
            "study_instance_uid": rec.study_instance_uid,
            "state": StudyState.RECEIVING.value,
            "first_received_at": rec.received_at,
            "last_received_at": rec.received_at,
            "batch_started_at": None,
            "instance_count": 0,
            "calling_ae_title": rec.calling_ae_title,
            "created_at": rec.received_at,
            "updated_at": rec.received_at,
        },
        "study_instance_uid",
    )
    study = _locked_study(session, rec.study_instance_uid)
    if study is None:  # pragma: no cover - inserted or found by the statement above
        raise StorageError("study insert conflicted but no row was found")
    return study


def _locked_study(session: Session, study_instance_uid: str) -> Study | None:
    return session.execute(
        select(Study)
        .where(Study.study_instance_uid == study_instance_uid)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()


def _series_id(session: Session, rec: InstanceRecord, study_id: int) -> int:
    """The series' row id (inserted first if missing: most instances find it)."""
    query = select(Series.id, Series.study_id).where(
        Series.series_instance_uid == rec.series_instance_uid
    )
    row = session.execute(query).one_or_none()
    if row is None:
        _insert_ignore(
            session,
            Series,
            {
                "study_id": study_id,
                "series_instance_uid": rec.series_instance_uid,
                "modality": rec.modality,
                "body_part_examined": rec.body_part_examined,
            },
            "series_instance_uid",
        )
        row = session.execute(query).one()
    if row[1] != study_id:
        logger.warning("series already belongs to another study", extra={"series_id": row[0]})
    return int(row[0])


def _has_queued_job(session: Session, study_id: int) -> bool:
    return bool(
        session.scalar(
            select(exists().where(Job.study_id == study_id, Job.state == JobState.QUEUED))
        )
    )


def _insert_ignore(
    session: Session, model: type[Any], values: dict[str, Any], conflict_column: str
) -> int | None:
    """INSERT ... ON CONFLICT (conflict_column) DO NOTHING RETURNING id; None on conflict."""
    dialect = session.get_bind().dialect.name
    stmt: postgresql.Insert | sqlite.Insert
    if dialect == "postgresql":
        stmt = postgresql.insert(model).values(**values)
        stmt = stmt.on_conflict_do_nothing(index_elements=[conflict_column])
    elif dialect == "sqlite":
        stmt = sqlite.insert(model).values(**values)
        stmt = stmt.on_conflict_do_nothing(index_elements=[conflict_column])
    else:
        raise StorageError(f"unsupported database dialect {dialect!r}")
    new_id = session.execute(stmt.returning(model.id)).scalar_one_or_none()
    return None if new_id is None else int(new_id)
