"""The database tables (SQLAlchemy 2 declarative).

Keep this file and ``storage/migrations/versions`` in step: a test compares the migrated schema
with ``Base.metadata``. No patient names or IDs are stored.

All timestamps are timezone-aware UTC (:class:`UTCDateTime`); states are short strings checked
by CHECK constraints, with their allowed values in the ``*State`` enums below.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class StudyState(StrEnum):
    RECEIVING = "receiving"
    QUEUED = "queued"
    PROCESSING = "processing"
    ANALYSED = "analysed"
    FAILED = "failed"


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    DEAD = "dead"
    CANCELLED = "cancelled"


class DeliveryState(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    DEAD = "dead"


class ModelState(StrEnum):
    CANDIDATE = "candidate"  # passed the gate (or not yet judged), waiting for promotion
    ACTIVE = "active"  # the model the daemon serves (exactly one)
    RETIRED = "retired"  # was active once; rollback brings it back
    REJECTED = "rejected"  # failed the promotion gate: never served


class RunState(StrEnum):
    QUEUED = "queued"  # requested; waits for a worker of the retrain queue
    RUNNING = "running"
    SUCCEEDED = "succeeded"  # a candidate was trained and judged (passed or not)
    SKIPPED = "skipped"  # too few new reviews
    FAILED = "failed"  # an error, or interrupted (crash)


class Role(StrEnum):
    RADIOLOGIST = "radiologist"
    ADMIN = "admin"


class Source(StrEnum):
    """Where a caller/destination row came from: the settings file, or an administrator through
    the CLI, the admin pages or the REST API."""

    CONFIG = "config"
    CLI = "cli"
    WEB = "web"
    API = "api"


def _in(column: str, values: type[StrEnum]) -> str:
    quoted = ", ".join(f"'{v.value}'" for v in values)
    return f"{column} IN ({quoted})"


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """``DateTime(timezone=True)`` that only accepts and always returns aware UTC datetimes.

    SQLite has no time zones: values are stored as naive UTC and made aware when read back.
    PostgreSQL stores ``timestamptz``; values are normalised to UTC both ways.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("naive datetime given; use an aware UTC datetime")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON(), list[str]: JSON()}


class Study(Base):
    __tablename__ = "studies"
    __table_args__ = (
        CheckConstraint(_in("state", StudyState), name="state"),
        Index("ix_studies_state", "state"),
        Index("ix_studies_last_received_at", "last_received_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    state: Mapped[str] = mapped_column(String(16), default=StudyState.RECEIVING.value)
    first_received_at: Mapped[datetime]
    last_received_at: Mapped[datetime]
    batch_started_at: Mapped[datetime | None]
    instance_count: Mapped[int] = mapped_column(Integer, default=0)
    calling_ae_title: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Series(Base):
    __tablename__ = "series"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    series_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    modality: Mapped[str] = mapped_column(String(16))
    body_part_examined: Mapped[str | None] = mapped_column(String(64))


class Instance(Base):
    __tablename__ = "instances"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id", ondelete="CASCADE"), index=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64))
    #: the byte store key (``objects/...``); indexed for the store sweep and copy
    spool_path: Mapped[str] = mapped_column(String(255), index=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime]
    calling_ae_title: Mapped[str] = mapped_column(String(64))
    duplicate_count: Mapped[int] = mapped_column(Integer, default=0)
    conflict_count: Mapped[int] = mapped_column(Integer, default=0)
    #: when retention deleted the file (``storage.retention``); the row stays for statistics
    purged_at: Mapped[datetime | None]


class Job(Base):
    """One unit of work in xrayd's single queue (:mod:`storage.queue`): an analysis of a study,
    a delivery of a result object, a retraining run. ``kind`` is the task, ``ref_id`` the row
    it works on (study, delivery, training run)."""

    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(_in("state", JobState), name="state"),
        CheckConstraint("attempts >= 0 AND max_attempts >= 1", name="attempts"),
        Index("ix_jobs_queue_state_next_attempt_at", "queue", "state", "next_attempt_at"),
        Index("ix_jobs_lock_state", "lock", "state"),
        Index("ix_jobs_kind_ref_id", "kind", "ref_id"),
        Index(
            "uq_jobs_queueing_lock",
            "queueing_lock",
            unique=True,
            sqlite_where=text("state = 'queued'"),
            postgresql_where=text("state = 'queued'"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    queue: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(32))
    ref_id: Mapped[int | None] = mapped_column(Integer)
    study_id: Mapped[int | None] = mapped_column(
        ForeignKey("studies.id", ondelete="CASCADE"), index=True
    )
    #: at most one ``running`` job per lock (e.g. one analysis of a study at a time)
    lock: Mapped[str | None] = mapped_column(String(64))
    #: at most one ``queued`` job per queueing lock (deferring again reuses it)
    queueing_lock: Mapped[str | None] = mapped_column(String(64))
    priority: Mapped[int] = mapped_column(Integer, default=0)
    state: Mapped[str] = mapped_column(String(16), default=JobState.QUEUED.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=5)
    next_attempt_at: Mapped[datetime]
    lease_expires_at: Mapped[datetime | None]
    worker_id: Mapped[str | None] = mapped_column(String(128))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    finished_at: Mapped[datetime | None]


class Result(Base):
    """What xrayd produced for a study: an analysis (``kind`` "analysis": predictions, decision,
    model and its TID 4019 identification in ``detail``) or a result object (SR, secondary
    capture, presentation state, key object selection, PDF, heatmap) with its byte-store key."""

    __tablename__ = "results"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[int | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL"), index=True
    )
    kind: Mapped[str] = mapped_column(String(16))
    sop_instance_uid: Mapped[str | None] = mapped_column(String(64), unique=True)
    predecessor_result_id: Mapped[int | None] = mapped_column(
        ForeignKey("results.id", ondelete="SET NULL")
    )
    #: the byte store key (``results/...``); indexed for the store sweep and copy
    file_path: Mapped[str | None] = mapped_column(String(255), index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Delivery(Base):
    """One result to one destination, retried with backoff until sent or dead."""

    __tablename__ = "deliveries"
    __table_args__ = (
        CheckConstraint(_in("state", DeliveryState), name="state"),
        UniqueConstraint("result_id", "destination_name"),
        Index("ix_deliveries_state", "state"),
        Index("ix_deliveries_destination_name", "destination_name"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    result_id: Mapped[int] = mapped_column(ForeignKey("results.id", ondelete="CASCADE"))
    destination_name: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16), default=DeliveryState.PENDING.value)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    sent_at: Mapped[datetime | None]


class Override(Base):
    """A radiologist's correction of an AI label (training data: deleting a study keeps it
    from silently disappearing, hence no ON DELETE CASCADE)."""

    __tablename__ = "overrides"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    instance_id: Mapped[int | None] = mapped_column(ForeignKey("instances.id", ondelete="SET NULL"))
    user_name: Mapped[str] = mapped_column(String(128))
    ai_label: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    radiologist_label: Mapped[dict[str, Any]] = mapped_column(JSON)
    comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # The analysis row reviewed, and whether the radiologist agreed with it.
    result_id: Mapped[int | None] = mapped_column(
        ForeignKey("results.id", ondelete="SET NULL"), index=True
    )
    agree: Mapped[bool | None] = mapped_column(Boolean)


class ModelVersion(Base):
    __tablename__ = "model_versions"
    __table_args__ = (
        CheckConstraint(_in("state", ModelState), name="state"),
        UniqueConstraint("name", "version"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128))
    version: Mapped[str] = mapped_column(String(64))
    sha256: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(String(1024))
    state: Mapped[str] = mapped_column(String(16), default=ModelState.CANDIDATE.value)
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    promoted_at: Mapped[datetime | None]
    promoted_by: Mapped[str | None] = mapped_column(String(128))
    #: the promotion gate's configuration, measurements and verdict
    gate: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    #: the training manifest's sha256 (the manifest itself is in the bundle directory)
    manifest_sha256: Mapped[str | None] = mapped_column(String(64))
    parent_version: Mapped[str | None] = mapped_column(String(64))
    run_id: Mapped[int | None] = mapped_column(ForeignKey("training_runs.id", ondelete="SET NULL"))


class Caller(Base):
    """An allowed calling AE title; ``host`` NULL allows it from any host.

    SQL treats NULLs as distinct in a unique constraint, so a partial unique index keeps one
    "any host" row per AE title.
    """

    __tablename__ = "callers"
    __table_args__ = (
        CheckConstraint(_in("source", Source), name="source"),
        UniqueConstraint("ae_title", "host"),
        Index(
            "uq_callers_ae_title_any_host",
            "ae_title",
            unique=True,
            sqlite_where="host IS NULL",
            postgresql_where="host IS NULL",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ae_title: Mapped[str] = mapped_column(String(64))
    host: Mapped[str | None] = mapped_column(String(255))
    source: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Destination(Base):
    __tablename__ = "destinations"
    __table_args__ = (
        CheckConstraint(_in("source", Source), name="source"),
        CheckConstraint("port >= 1 AND port <= 65535", name="port"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    ae_title: Mapped[str] = mapped_column(String(64))
    host: Mapped[str] = mapped_column(String(255))
    port: Mapped[int] = mapped_column(Integer)
    send: Mapped[list[str]] = mapped_column(default=list)
    tls: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    source: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditEvent(Base):
    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64))
    object_type: Mapped[str] = mapped_column(String(64))
    object_id: Mapped[str | None] = mapped_column(String(128))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # the hash chain (storage.audit): the row before's row_hash, and this row's own
    prev_hash: Mapped[str] = mapped_column(String(64))
    row_hash: Mapped[str] = mapped_column(String(64))


class User(Base):
    """A web user; ``password_hash`` is an scrypt hash in the ``storage.users`` format."""

    __tablename__ = "users"
    __table_args__ = (CheckConstraint(_in("role", Role), name="role"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(255))
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ApiToken(Base):
    """A REST API bearer token; only its SHA-256 is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]  # None: until revoked


class WebSession(Base):
    """A browser login; the cookie holds a random token whose SHA-256 is stored here."""

    __tablename__ = "web_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)


class LoginFailure(Base):
    """A failed (or still running) password check of the login form, counted by
    ``storage.logins`` per (user name, client address), per address and per name; rows older
    than the login window are deleted as new attempts come in."""

    __tablename__ = "login_failures"
    __table_args__ = (
        Index("ix_login_failures_user_name_at", "user_name", "at"),
        Index("ix_login_failures_client_at", "client", "at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    user_name: Mapped[str] = mapped_column(String(64))
    client: Mapped[str] = mapped_column(String(64))


class ReviewAssignment(Base):
    """Who is reviewing a study (set when a radiologist claims it; released or reviewed ends it)."""

    __tablename__ = "review_assignments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), unique=True)
    user_name: Mapped[str] = mapped_column(String(128), index=True)
    assigned_at: Mapped[datetime] = mapped_column(default=utcnow)


class TrainingRun(Base):
    """One retraining run. ``slot`` makes a scheduled firing claimable once (two schedulers
    firing for the same time insert the same slot); at most one run is ``running``."""

    __tablename__ = "training_runs"
    __table_args__ = (
        CheckConstraint(_in("state", RunState), name="state"),
        Index(
            "uq_training_runs_one_running",
            "state",
            unique=True,
            sqlite_where=text("state = 'running'"),
            postgresql_where=text("state = 'running'"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    slot: Mapped[str] = mapped_column(String(64), unique=True)
    trigger: Mapped[str] = mapped_column(String(16))  # scheduled | manual
    state: Mapped[str] = mapped_column(String(16), default=RunState.RUNNING.value)
    worker: Mapped[str] = mapped_column(String(128))
    #: the queue job that runs it; its lease is the run's heartbeat
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    new_reviews: Mapped[int] = mapped_column(Integer, default=0)
    candidate_version: Mapped[str | None] = mapped_column(String(64))
    verdict: Mapped[str | None] = mapped_column(String(16))  # passed | failed
    report_path: Mapped[str | None] = mapped_column(String(1024))
    error: Mapped[str | None] = mapped_column(Text)
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)


class ValidationCase(Base):
    """A case of the site's locked validation set: never trained on; models are compared on
    these. ``source`` "base" (the base dataset's held-out part, by record key) or "review"
    (a reviewed image, by SOP Instance UID); ``patient_group`` is a hash, never a patient ID."""

    __tablename__ = "validation_cases"
    __table_args__ = (UniqueConstraint("source", "key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(16))
    key: Mapped[str] = mapped_column(String(255))
    study_id: Mapped[int | None] = mapped_column(ForeignKey("studies.id", ondelete="SET NULL"))
    patient_group: Mapped[str] = mapped_column(String(64))
    label: Mapped[dict[str, Any]] = mapped_column(default=dict)
    added_at: Mapped[datetime] = mapped_column(default=utcnow)
    added_by: Mapped[str] = mapped_column(String(128))
