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
from typing import Any, NamedTuple, cast

from sqlalchemy import Connection, Table, bindparam, exists, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from storage import audit
from storage.db import Sessions
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


# Core statements on the tables, built once (not ORM objects, not rebuilt per call): this runs
# before every C-STORE is acknowledged, and the ORM's unit of work and statement building cost
# some 2 ms of CPU per instance.
_INSTANCES = cast(Table, Instance.__table__)
_STUDIES = cast(Table, Study.__table__)
_SERIES = cast(Table, Series.__table__)
_JOBS = cast(Table, Job.__table__)

_SELECT_INSTANCE = select(_INSTANCES.c.id, _INSTANCES.c.sha256).where(
    _INSTANCES.c.sop_instance_uid == bindparam("sop")
)
_COUNT_DUPLICATE = (
    update(_INSTANCES)
    .where(_INSTANCES.c.id == bindparam("instance_id"))
    .values(duplicate_count=_INSTANCES.c.duplicate_count + 1)
)
_UNPURGE = (
    update(_INSTANCES)
    .where(
        _INSTANCES.c.id == bindparam("instance_id"),
        _INSTANCES.c.spool_path == bindparam("path"),
        _INSTANCES.c.purged_at.is_not(None),
    )
    .values(purged_at=None)
)
_COUNT_CONFLICT = (
    update(_INSTANCES)
    .where(_INSTANCES.c.id == bindparam("instance_id"))
    .values(conflict_count=_INSTANCES.c.conflict_count + 1)
)
_LOCK_STUDY = (
    select(
        _STUDIES.c.id,
        _STUDIES.c.state,
        _STUDIES.c.first_received_at,
        _STUDIES.c.last_received_at,
        _STUDIES.c.batch_started_at,
    )
    .where(_STUDIES.c.study_instance_uid == bindparam("uid"))
    .with_for_update()
)
_UPDATE_STUDY = (
    update(_STUDIES)
    .where(_STUDIES.c.id == bindparam("study_id"))
    .values(
        state=bindparam("new_state"),
        first_received_at=bindparam("first"),
        last_received_at=bindparam("last"),
        batch_started_at=bindparam("batch"),
        instance_count=_STUDIES.c.instance_count + 1,
        calling_ae_title=bindparam("caller"),
        updated_at=bindparam("updated"),
    )
)
_SELECT_SERIES = select(_SERIES.c.id, _SERIES.c.study_id).where(
    _SERIES.c.series_instance_uid == bindparam("uid")
)
_QUEUED_JOB = select(
    exists().where(
        _JOBS.c.study_id == bindparam("study_id"), _JOBS.c.state == JobState.QUEUED.value
    )
)


def record_instance(session: Session, rec: InstanceRecord) -> StoreOutcome:
    """Upsert the study, series and instance rows for ``rec`` (the caller commits).

    - Existing SOP Instance UID with the same SHA-256: DUPLICATE (``duplicate_count`` + 1).
    - Existing with a different SHA-256: CONFLICT (``conflict_count`` + 1, original kept).
    - NEW: the study's ``last_received_at`` moves forward, ``instance_count`` + 1, the calling
      AE title is remembered. A study in ``receiving`` keeps its ``batch_started_at`` (set if
      missing). A study that was already ``queued``/``processing``/``analysed``/``failed`` gets
      a late image: it goes back to ``receiving`` with a new batch, unless a job for it is
      still ``queued`` (that job will see the new image), in which case nothing changes.

    Works with Core statements on the session's connection; ORM objects of these rows that the
    session already holds are not refreshed.
    """
    conn = session.connection()
    existing = _existing_outcome(conn, rec)
    if existing is not None:
        return existing

    study = _lock_or_create_study(conn, rec)
    series_id = _series_id(conn, rec, study.id)
    instance_id = _insert_ignore(
        conn,
        _INSTANCES,
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
        raced = _existing_outcome(conn, rec)
        if raced is None:  # pragma: no cover - the conflicting row must be visible now
            raise StorageError("instance insert conflicted but no row was found")
        return raced

    # The row is locked (FOR UPDATE; SQLite's BEGIN IMMEDIATE): unchanged columns are written
    # back as they were read.
    state, batch = study.state, study.batch_started_at
    if study.state == StudyState.RECEIVING:
        if batch is None:
            batch = rec.received_at
    elif not _has_queued_job(conn, study.id):
        logger.info(
            "late instance reopens study",
            extra={"study_id": study.id, "previous_state": study.state},
        )
        state, batch = StudyState.RECEIVING.value, rec.received_at
    conn.execute(
        _UPDATE_STUDY,
        {
            "study_id": study.id,
            "new_state": state,
            "first": min(study.first_received_at, rec.received_at),
            "last": max(study.last_received_at, rec.received_at),
            "batch": batch,
            "caller": rec.calling_ae_title,
            "updated": rec.received_at,
        },
    )
    return StoreOutcome.NEW


def store_received(
    sm: Sessions, rec: InstanceRecord, *, actor: str, host: str | None
) -> StoreOutcome:
    """Store a received instance's rows (:func:`record_instance`) and commit; a CONFLICT (same
    SOP Instance UID, other bytes: the copy kept at ``rec.spool_path``) is audited as
    ``instance.conflict`` by ``actor`` (the sender) in the same transaction."""
    with sm.begin() as session:
        outcome = record_instance(session, rec)
        if outcome is StoreOutcome.CONFLICT:
            audit.append(
                session,
                actor=actor,
                action=audit.Action.INSTANCE_CONFLICT,
                object_type="instance",
                object_id=rec.sop_instance_uid,
                detail={"kept_copy": rec.spool_path, "host": host},
            )
    return outcome


def _existing_outcome(conn: Connection, rec: InstanceRecord) -> StoreOutcome | None:
    row = conn.execute(_SELECT_INSTANCE, {"sop": rec.sop_instance_uid}).first()
    if row is None:
        return None
    instance_id, sha256 = row
    if sha256 == rec.sha256:
        conn.execute(_COUNT_DUPLICATE, {"instance_id": instance_id})
        # Retention deleted the file and the sender has just written the same bytes back to
        # the same place: the instance has its file again.
        conn.execute(_UNPURGE, {"instance_id": instance_id, "path": rec.spool_path})
        return StoreOutcome.DUPLICATE
    conn.execute(_COUNT_CONFLICT, {"instance_id": instance_id})
    logger.warning(
        "instance received again with different content", extra={"instance_id": instance_id}
    )
    return StoreOutcome.CONFLICT


class _LockedStudy(NamedTuple):
    id: int
    state: str
    first_received_at: datetime
    last_received_at: datetime
    batch_started_at: datetime | None


def _lock_or_create_study(conn: Connection, rec: InstanceRecord) -> _LockedStudy:
    """The study's row, locked (created first if missing: most instances find it)."""
    study = _locked_study(conn, rec.study_instance_uid)
    if study is not None:
        return study
    _insert_ignore(
        conn,
        _STUDIES,
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
    study = _locked_study(conn, rec.study_instance_uid)
    if study is None:  # pragma: no cover - inserted or found by the statement above
        raise StorageError("study insert conflicted but no row was found")
    return study


def _locked_study(conn: Connection, study_instance_uid: str) -> _LockedStudy | None:
    row = conn.execute(_LOCK_STUDY, {"uid": study_instance_uid}).first()
    return None if row is None else _LockedStudy(*row)


def _series_id(conn: Connection, rec: InstanceRecord, study_id: int) -> int:
    """The series' row id (inserted first if missing: most instances find it)."""
    params = {"uid": rec.series_instance_uid}
    row = conn.execute(_SELECT_SERIES, params).first()
    if row is None:
        _insert_ignore(
            conn,
            _SERIES,
            {
                "study_id": study_id,
                "series_instance_uid": rec.series_instance_uid,
                "modality": rec.modality,
                "body_part_examined": rec.body_part_examined,
            },
            "series_instance_uid",
        )
        row = conn.execute(_SELECT_SERIES, params).one()
    if row[1] != study_id:
        logger.warning("series already belongs to another study", extra={"series_id": row[0]})
    return int(row[0])


def _has_queued_job(conn: Connection, study_id: int) -> bool:
    return bool(conn.scalar(_QUEUED_JOB, {"study_id": study_id}))


_INSERTS: dict[tuple[str, str], Any] = {}


def _insert_ignore(
    conn: Connection, table: Table, values: dict[str, Any], conflict_column: str
) -> int | None:
    """INSERT ... ON CONFLICT (conflict_column) DO NOTHING RETURNING id; None on conflict.

    ``values`` must name the same columns at every call for one table (the statement is
    built once per dialect and table)."""
    dialect = conn.dialect.name
    key = (dialect, table.name)
    stmt = _INSERTS.get(key)
    if stmt is None:
        if dialect == "postgresql":
            stmt = postgresql.insert(table).on_conflict_do_nothing(index_elements=[conflict_column])
        elif dialect == "sqlite":
            stmt = sqlite.insert(table).on_conflict_do_nothing(index_elements=[conflict_column])
        else:
            raise StorageError(f"unsupported database dialect {dialect!r}")
        stmt = stmt.returning(table.c.id)
        _INSERTS[key] = stmt
    new_id = conn.execute(stmt, values).scalar_one_or_none()
    return None if new_id is None else int(new_id)
