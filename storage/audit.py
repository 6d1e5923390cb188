"""The audit trail: one vocabulary of actions, rows chained by SHA-256, and a check of the chain.

Every row carries ``prev_hash`` (the ``row_hash`` of the row before it in id order; 64 zeros for
the first row) and ``row_hash``: SHA-256 hex over a canonical JSON of the row's own fields
(:func:`chain_hash`) followed by ``prev_hash``. Editing, deleting or inserting a row in the
middle of the log breaks the chain at that row, and :func:`verify` names it. (Someone who can
rewrite the database can also rewrite every later hash, or drop the newest rows: write down the
head hash that :func:`verify` reports to detect that.)

Write a change and its audit row in one transaction with :func:`append` (it joins the caller's
open session); :func:`record` is for events that change nothing else. Appends are serialised:
on PostgreSQL by a transaction-scoped advisory lock, on SQLite by its single writer (the row is
inserted before the previous hash is read, so the write lock is held by then).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from storage.errors import InvalidEntryError
from storage.rows import from_attributes
from storage.schema import AuditEvent, utcnow

GENESIS_HASH = "0" * 64
# pg_advisory_xact_lock key of audit appends ("xrayaudi" as a big-endian 64-bit integer).
APPEND_LOCK_KEY = 0x7872617961756469
_VERIFY_CHUNK = 1000


class Action(StrEnum):
    """Every audit action xrayd writes: ``<object kind>.<what happened>``."""

    # callers and destinations
    CALLER_ADDED = "caller.added"
    CALLER_REMOVED = "caller.removed"
    DESTINATION_ADDED = "destination.added"
    DESTINATION_REMOVED = "destination.removed"
    # users, passwords, tokens, logins
    USER_ADDED = "user.added"
    USER_DISABLED = "user.disabled"
    USER_ENABLED = "user.enabled"
    PASSWORD_CHANGED = "user.password_changed"  # noqa: S105 - an action name
    LOGIN_SUCCEEDED = "user.logged_in"
    LOGGED_OUT = "user.logged_out"
    LOGIN_FAILED = "user.login_failed"
    LOGIN_LOCKED = "user.login_locked"
    LOGIN_UNLOCKED = "user.login_unlocked"
    TOKEN_CREATED = "token.created"  # noqa: S105 - an action name
    TOKEN_REVOKED = "token.revoked"  # noqa: S105 - an action name
    # review
    STUDY_VIEWED = "study.viewed"
    REVIEW_ASSIGNED = "review.assigned"  # before claiming: assigned on opening the study
    STUDY_CLAIMED = "study.claimed"
    STUDY_RELEASED = "study.released"
    OVERRIDE_CREATED = "override.created"
    # models and retraining
    MODEL_REGISTERED = "model.registered"
    MODEL_PROMOTED = "model.promoted"
    MODEL_ROLLED_BACK = "model.rolled_back"
    MODEL_RELOCATED = "model.relocated"
    RETRAIN_SUCCEEDED = "retrain.succeeded"
    RETRAIN_SKIPPED = "retrain.skipped"
    RETRAIN_FAILED = "retrain.failed"
    VALIDATION_SET_EXTENDED = "validation_set.extended"
    # queues and deliveries
    JOB_RETRIED = "job.retried"
    JOB_CANCELLED = "job.cancelled"
    DELIVERY_RETRIED = "delivery.retried"
    DELIVERY_DEAD = "delivery.dead"
    # the DICOM listener
    ASSOCIATION_REJECTED = "association.rejected"
    CONNECTIONS_REFUSED = "connections.refused"
    INSTANCE_REFUSED = "instance.refused"
    INSTANCE_CONFLICT = "instance.conflict"
    # files and the log itself
    RETENTION_PURGED = "retention.purged"
    STORE_SWEPT = "store.swept"
    AUDIT_EXPORTED = "audit.exported"


class InvalidAuditEntryError(InvalidEntryError):
    """An audit entry lacks its actor, action or object type, or its detail is not JSON."""


@dataclass(frozen=True)
class AuditRow:
    id: int
    at: datetime
    actor: str
    action: str
    object_type: str
    object_id: str | None
    detail: dict[str, Any]
    prev_hash: str
    row_hash: str


@dataclass(frozen=True)
class VerifyResult:
    """``checked`` rows were walked; ``first_bad_id`` is the first row whose link or hash does
    not hold (``None``: the chain is intact); ``head_hash`` is the last good row's hash."""

    checked: int
    first_bad_id: int | None
    head_hash: str
    problem: str | None = None
    #: whether the intact chain passes through the ``known_head`` given to :func:`verify`
    #: (``None``: none given)
    known_head_found: bool | None = None

    @property
    def ok(self) -> bool:
        return self.first_bad_id is None


# -- the hash ----------------------------------------------------------------------------------


def _iso(at: datetime) -> str:
    if at.tzinfo is None or at.utcoffset() is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def chain_hash(
    *,
    id: int,
    at: datetime,
    actor: str,
    action: str,
    object_type: str,
    object_id: str | None,
    detail: Mapping[str, Any],
    prev_hash: str,
) -> str:
    """SHA-256 hex of the canonical JSON of one row's fields followed by ``prev_hash``."""
    canonical = json.dumps(
        {
            "id": id,
            "at": _iso(at),
            "actor": actor,
            "action": action,
            "object_type": object_type,
            "object_id": object_id,
            "detail": detail,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
    )
    return hashlib.sha256((canonical + prev_hash).encode("ascii")).hexdigest()


def _hash_of(row: AuditEvent) -> str:
    return chain_hash(
        id=row.id,
        at=row.at,
        actor=row.actor,
        action=row.action,
        object_type=row.object_type,
        object_id=row.object_id,
        detail=row.detail,
        prev_hash=row.prev_hash,
    )


# -- writing -----------------------------------------------------------------------------------


def _plain_detail(detail: Mapping[str, Any] | None) -> dict[str, Any]:
    """The detail as it reads back from the JSON column (tuples become lists, and so on)."""
    try:
        plain = json.loads(json.dumps(dict(detail or {}), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise InvalidAuditEntryError(f"audit detail is not JSON: {type(exc).__name__}") from exc
    assert isinstance(plain, dict)
    return plain


def append(
    session: Session,
    *,
    actor: str,
    action: Action,
    object_type: str,
    object_id: str | None = None,
    detail: Mapping[str, Any] | None = None,
    at: datetime | None = None,
) -> None:
    """Append an audit row inside the caller's open transaction (the caller commits; a rollback
    removes the row with the change). ``detail`` must be JSON and free of patient data."""
    if not actor or not action or not object_type:
        raise InvalidAuditEntryError("actor, action and object_type must not be empty")
    when = (at or utcnow()).astimezone(UTC)
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": APPEND_LOCK_KEY})
    event = AuditEvent(
        at=when,
        actor=actor[:128],
        action=str(action)[:64],
        object_type=object_type[:64],
        object_id=None if object_id is None else object_id[:128],
        detail=_plain_detail(detail),
        prev_hash=GENESIS_HASH,
        row_hash="",
    )
    session.add(event)
    session.flush()  # the id, and on SQLite the write lock
    previous = session.scalar(
        select(AuditEvent.row_hash)
        .where(AuditEvent.id < event.id)
        .order_by(AuditEvent.id.desc())
        .limit(1)
    )
    event.prev_hash = previous or GENESIS_HASH
    event.row_hash = _hash_of(event)
    session.flush()


def record(
    sm: sessionmaker[Session],
    *,
    actor: str,
    action: Action,
    object_type: str,
    object_id: str | None = None,
    detail: Mapping[str, Any] | None = None,
    at: datetime | None = None,
) -> None:
    """Append an audit row in a transaction of its own (events that change nothing else)."""
    with sm.begin() as session:
        append(
            session,
            actor=actor,
            action=action,
            object_type=object_type,
            object_id=object_id,
            detail=detail,
            at=at,
        )


# -- reading -----------------------------------------------------------------------------------


def _row(r: AuditEvent) -> AuditRow:
    return from_attributes(AuditRow, r, detail=dict(r.detail))


def list_audit(sm: sessionmaker[Session], limit: int = 100) -> list[AuditRow]:
    """The newest ``limit`` audit events, newest first."""
    with sm() as session:
        rows = session.scalars(
            select(AuditEvent).order_by(AuditEvent.at.desc(), AuditEvent.id.desc()).limit(limit)
        ).all()
        return [_row(r) for r in rows]


def search_audit(
    sm: sessionmaker[Session],
    *,
    actor: str | None = None,
    action: str | None = None,
    object_type: str | None = None,
    object_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[list[AuditRow], int]:
    """Audit events matching every given filter, newest first: ``(page, total matching)``.

    ``actor``, ``action``, ``object_type`` and ``object_id`` match exactly; ``since`` is
    inclusive and ``until`` exclusive (aware datetimes). ``limit``/``offset`` select the page.
    """
    if limit < 1 or offset < 0:
        raise InvalidAuditEntryError("limit must be at least 1 and offset not negative")
    conditions: list[ColumnElement[bool]] = []
    for column, value in (
        (AuditEvent.actor, actor),
        (AuditEvent.action, action),
        (AuditEvent.object_type, object_type),
        (AuditEvent.object_id, object_id),
    ):
        if value is not None:
            conditions.append(column == value)
    for name, when in (("since", since), ("until", until)):
        if when is not None and (when.tzinfo is None or when.utcoffset() is None):
            raise InvalidAuditEntryError(f"{name} must carry a time zone")
    if since is not None:
        conditions.append(AuditEvent.at >= since)
    if until is not None:
        conditions.append(AuditEvent.at < until)
    with sm() as session:
        total = int(session.scalar(select(func.count(AuditEvent.id)).where(*conditions)) or 0)
        rows = session.scalars(
            select(AuditEvent)
            .where(*conditions)
            .order_by(AuditEvent.at.desc(), AuditEvent.id.desc())
            .limit(limit)
            .offset(offset)
        ).all()
        return [_row(r) for r in rows], total


# -- checking ----------------------------------------------------------------------------------


def verify(
    sm: sessionmaker[Session], *, known_head: str | None = None, chunk: int = _VERIFY_CHUNK
) -> VerifyResult:
    """Walk the chain in id order; stop at the first row whose ``prev_hash`` is not the row
    before's ``row_hash`` (a row deleted or inserted) or whose ``row_hash`` does not recompute
    (a row edited). Reads ``chunk`` rows at a time.

    ``known_head``: a head hash recorded earlier; the result says whether the chain still
    passes through it (rows dropped from the end, or the whole log rewritten, if not)."""
    checked = 0
    head = GENESIS_HASH
    last_id = 0
    found = None if known_head is None else known_head == GENESIS_HASH
    with sm() as session:
        while True:
            rows = session.scalars(
                select(AuditEvent)
                .where(AuditEvent.id > last_id)
                .order_by(AuditEvent.id)
                .limit(chunk)
            ).all()
            if not rows:
                return VerifyResult(checked, None, head, known_head_found=found)
            for row in rows:
                if row.prev_hash != head:
                    return VerifyResult(checked, row.id, head, "does not follow the row before")
                if row.row_hash != _hash_of(row):
                    return VerifyResult(checked, row.id, head, "its contents were changed")
                head = row.row_hash
                if known_head is not None and head == known_head:
                    found = True
                checked += 1
                last_id = row.id
            session.expunge_all()
