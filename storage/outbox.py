"""The outbox: one ``deliveries`` row per result object and destination, sent until it is
``sent`` or ``dead``.

States (``DeliveryState``)::

    pending ──claim──▶ pending, leased ──sent──────────────────────────▶ sent
       ▲                   │  ├─transient failure, attempts left ──▶ pending (backoff)
       │                   │  ├─permanent failure / attempts used ──▶ dead ──retry──▶ pending
       │                   │  └─sender gone (lease expired) ───────▶ pending, due again
       └───────────────────┘     (or dead if that was its last attempt)

The schema has no ``sending`` state and no lease column, so a claim keeps the row ``pending``
and moves ``next_attempt_at`` to the end of the lease (``now + lease_seconds``): no other
sender takes it before then, and a sender that dies without reporting simply lets the row fall
due again. ``attempts`` is counted at the claim, so a lost attempt counts too and a delivery
that keeps killing its sender ends ``dead`` (:func:`requeue_expired_deliveries`). A sender
reports with the :class:`ClaimedDelivery` it got; a failure report from a sender whose lease
was overtaken (another claim, an operator's retry) is ignored as ``"stale"``. A success report
is always accepted: the peer has the object, whatever the row thought.

Choose the lease longer than the slowest send (connection, association and DIMSE timeouts),
or a slow send can be overtaken by a second one: the peer then receives the same object twice,
with the same SOP Instance UID and bytes, which a PACS treats as a duplicate.

Transactions: :func:`queue_deliveries` accepts a ``Session`` (it joins the caller's
transaction, typically the one that records the result, so a result is never without its
deliveries) or a ``sessionmaker``. Every other function takes a ``sessionmaker`` and owns one
short transaction. Claims use ``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL; on SQLite
every transaction begins ``IMMEDIATE`` (see :mod:`storage.db`), one claimer at a time.

Dead letters are audited (``delivery.dead``) in the same transaction that makes them dead.
Nothing here stores or logs patient data; error texts come from the sender and must not
either, and are redacted again before they are stored (:func:`storage.redact.redact`).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, Protocol

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from storage.errors import StorageError
from storage.notify import DELIVERY, notify
from storage.redact import redact
from storage.registry import record_audit
from storage.schema import Delivery, DeliveryState, Destination, Result, utcnow

logger = logging.getLogger(__name__)

DEFAULT_MAX_ATTEMPTS = 8
MAX_ERROR_CHARS = 2000
JITTER_LOW = 0.5
JITTER_HIGH = 1.5
LEASE_EXPIRED_ERROR = "lease expired on the last attempt: the sender stopped without reporting"
AUDIT_ACTOR = "xrayd.delivery"


class DeliveryNotFoundError(StorageError, LookupError):
    """A delivery id given to :mod:`storage.outbox` does not exist."""


class DestinationLike(Protocol):
    """What :func:`queue_deliveries` needs of a destination (a ``DestinationRow`` or the
    settings' ``DestinationSettings``)."""

    @property
    def name(self) -> str: ...

    @property
    def send(self) -> Collection[str]: ...


@dataclass(frozen=True)
class ClaimedDelivery:
    """A delivery a sender holds until ``lease_expires_at``; ``attempt`` counts this one."""

    delivery_id: int
    result_id: int
    destination_name: str
    kind: str
    sop_instance_uid: str | None
    file_path: str | None  # relative to the spool
    attempt: int
    lease_expires_at: datetime


@dataclass(frozen=True)
class DeliveryRow:
    delivery_id: int
    result_id: int
    study_id: int
    kind: str
    destination_name: str
    state: str
    attempts: int
    next_attempt_at: datetime
    last_status: int | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime


FailureOutcome = Literal["retry", "dead", "stale"]


def backoff_seconds(attempts: int, base_seconds: float, max_seconds: float, jitter: float) -> float:
    """``min(max, base * 2**(attempts-1)) * jitter`` (attempts counted from 1)."""
    exponent = min(max(0, attempts - 1), 64)  # past 2**64 the cap has long been reached
    delay = min(max_seconds, base_seconds * 2.0**exponent)
    return delay * jitter


def _default_jitter() -> float:
    return random.uniform(JITTER_LOW, JITTER_HIGH)


# -- queueing ----------------------------------------------------------------------------------


def queue_deliveries(
    target: Session | sessionmaker[Session],
    result_id: int,
    kind: str,
    destinations: Iterable[DestinationLike] | None = None,
    *,
    now: datetime | None = None,
) -> list[int]:
    """Add a ``pending`` delivery (due ``now``) of result ``result_id`` to every destination
    whose ``send`` list includes ``kind``; returns the ids of the rows added.

    ``destinations`` None: the rows of the ``destinations`` table, read in the same
    transaction. Idempotent: a (result, destination) pair that already has a row, in whatever
    state, gets no second one (also under concurrent callers, via the unique constraint).
    Given a ``Session`` it works in the caller's transaction (the caller commits).
    """
    if not kind:
        raise ValueError("kind must not be empty")
    at = now or utcnow()

    def run(session: Session) -> list[int]:
        if destinations is None:
            rows = session.scalars(select(Destination).order_by(Destination.name)).all()
            names = [r.name for r in rows if kind in r.send]
        else:
            names = sorted({d.name for d in destinations if kind in d.send})
        if not names:
            return []
        existing = set(
            session.scalars(
                select(Delivery.destination_name).where(
                    Delivery.result_id == result_id, Delivery.destination_name.in_(names)
                )
            ).all()
        )
        dialect = session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        added: list[int] = []
        for name in names:
            if name in existing:
                continue
            stmt = (
                insert(Delivery)
                .values(
                    result_id=result_id,
                    destination_name=name,
                    state=DeliveryState.PENDING.value,
                    attempts=0,
                    next_attempt_at=at,
                    created_at=at,
                    updated_at=at,
                )
                .on_conflict_do_nothing(index_elements=["result_id", "destination_name"])
                .returning(Delivery.id)
            )
            new_id = session.execute(stmt).scalar()
            if new_id is not None:
                added.append(int(new_id))
        if added:
            notify(session, DELIVERY)  # delivered to other processes' senders at commit
            logger.info(
                "deliveries queued",
                extra={"result_id": result_id, "kind": kind, "count": len(added)},
            )
        return added

    if isinstance(target, Session):
        return run(target)
    with target.begin() as session:
        return run(session)


# -- claiming and reporting --------------------------------------------------------------------


def claim_delivery(
    sm: sessionmaker[Session],
    now: datetime,
    lease_seconds: float,
    *,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    destinations: Collection[str] | None = None,
) -> ClaimedDelivery | None:
    """Claim the oldest due ``pending`` delivery that has attempts left; None if none is due.

    The row stays ``pending`` with ``attempts`` + 1 and ``next_attempt_at = now +
    lease_seconds`` (the lease). ``destinations`` restricts the claim to those names.
    Commits before returning.
    """
    if lease_seconds <= 0:
        raise ValueError("lease_seconds must be positive")
    stmt = (
        select(Delivery, Result)
        .join(Result, Result.id == Delivery.result_id)
        .where(
            Delivery.state == DeliveryState.PENDING,
            Delivery.next_attempt_at <= now,
            Delivery.attempts < max_attempts,
        )
    )
    if destinations is not None:
        stmt = stmt.where(Delivery.destination_name.in_(list(destinations)))
    stmt = (
        stmt.order_by(Delivery.next_attempt_at, Delivery.id)
        .limit(1)
        .with_for_update(skip_locked=True, of=Delivery)
        .execution_options(populate_existing=True)
    )
    with sm.begin() as session:
        row = session.execute(stmt).first()
        if row is None:
            return None
        delivery, result = row
        lease_end = now + timedelta(seconds=lease_seconds)
        delivery.attempts += 1
        delivery.next_attempt_at = lease_end
        delivery.updated_at = now
        claimed = ClaimedDelivery(
            delivery_id=delivery.id,
            result_id=result.id,
            destination_name=delivery.destination_name,
            kind=result.kind,
            sop_instance_uid=result.sop_instance_uid,
            file_path=result.file_path,
            attempt=delivery.attempts,
            lease_expires_at=lease_end,
        )
    logger.debug(
        "delivery claimed",
        extra={"delivery_id": claimed.delivery_id, "attempt": claimed.attempt},
    )
    return claimed


def delivery_sent(
    sm: sessionmaker[Session],
    claim: ClaimedDelivery,
    now: datetime,
    *,
    status: int | None = 0,
    note: str | None = None,
) -> bool:
    """Mark the delivery ``sent`` (``status``: the peer's, e.g. a warning; ``note`` kept as
    ``last_error`` for a warning, else cleared). Accepted whatever the row's state, since the
    peer has stored the object; returns False only if it was already ``sent``. Commits."""
    with sm.begin() as session:
        delivery = _lock(session, claim.delivery_id)
        if delivery.state == DeliveryState.SENT:
            return False
        if not _is_current(delivery, claim):
            logger.warning("late success report accepted", extra={"delivery_id": claim.delivery_id})
        delivery.state = DeliveryState.SENT.value
        delivery.last_status = status
        delivery.last_error = None if note is None else redact(note)[:MAX_ERROR_CHARS]
        delivery.updated_at = now
        delivery.sent_at = now
    logger.info("delivery sent", extra={"delivery_id": claim.delivery_id, "attempt": claim.attempt})
    return True


def delivery_failed(
    sm: sessionmaker[Session],
    claim: ClaimedDelivery,
    now: datetime,
    *,
    transient: bool,
    status: int | None,
    error: str,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    base_delay_seconds: float = 30.0,
    max_delay_seconds: float = 3600.0,
    jitter: Callable[[], float] | None = None,
) -> FailureOutcome:
    """Record a failed attempt and commit.

    Transient with attempts left: ``pending`` again at ``now + min(max, base *
    2**(attempts-1)) * jitter`` (jitter uniform in [0.5, 1.5] unless given) → ``"retry"``.
    Permanent, or ``attempts >= max_attempts``: ``dead`` and audited → ``"dead"``. A report
    for a claim that is no longer current (the row is not ``pending``, or was claimed again
    since) changes nothing → ``"stale"``. ``error`` is stored redacted
    (:func:`storage.redact.redact`) and truncated.
    """
    with sm.begin() as session:
        delivery = _lock(session, claim.delivery_id)
        if not _is_current(delivery, claim):
            logger.warning("stale failure report ignored", extra={"delivery_id": claim.delivery_id})
            return "stale"
        delivery.last_status = status
        delivery.last_error = redact(error)[:MAX_ERROR_CHARS]
        delivery.updated_at = now
        if not transient or delivery.attempts >= max_attempts:
            reason = "permanent failure" if not transient else "attempts exhausted"
            _dead_letter(session, delivery, now, reason)
            outcome: FailureOutcome = "dead"
        else:
            factor = (jitter or _default_jitter)()
            delay = backoff_seconds(
                delivery.attempts, base_delay_seconds, max_delay_seconds, factor
            )
            delivery.next_attempt_at = now + timedelta(seconds=delay)
            outcome = "retry"
        attempts = delivery.attempts
    log = logger.error if outcome == "dead" else logger.warning
    log(
        "delivery failed",
        extra={
            "delivery_id": claim.delivery_id,
            "attempts": attempts,
            "status": status,
            "outcome": outcome,
        },
    )
    return outcome


def requeue_expired_deliveries(
    sm: sessionmaker[Session], now: datetime, *, max_attempts: int = DEFAULT_MAX_ATTEMPTS
) -> list[int]:
    """Settle deliveries whose sender vanished: returns the ids made ``dead``. Commits.

    An expired lease needs no requeueing here (the lease is ``next_attempt_at``, so the row is
    simply due again and the next claim takes it). Only a row whose lost attempt was its last
    (``attempts >= max_attempts``, due) cannot be claimed again: it becomes ``dead``.
    """
    with sm.begin() as session:
        rows = session.scalars(
            select(Delivery)
            .where(
                Delivery.state == DeliveryState.PENDING,
                Delivery.next_attempt_at <= now,
                Delivery.attempts >= max_attempts,
            )
            .order_by(Delivery.id)
            .with_for_update(skip_locked=True)
            .execution_options(populate_existing=True)
        ).all()
        for delivery in rows:
            delivery.last_error = LEASE_EXPIRED_ERROR
            delivery.updated_at = now
            _dead_letter(session, delivery, now, "lease expired")
        ids = [d.id for d in rows]
    if ids:
        logger.error("deliveries dead after their sender stopped", extra={"count": len(ids)})
    return ids


def next_due_at(sm: sessionmaker[Session]) -> datetime | None:
    """When the earliest ``pending`` delivery falls due (a lease end counts too)."""
    with sm() as session:
        value: datetime | None = session.scalar(
            select(func.min(Delivery.next_attempt_at)).where(
                Delivery.state == DeliveryState.PENDING
            )
        )
    return value


# -- operator actions ----------------------------------------------------------------------------


def retry_delivery(sm: sessionmaker[Session], delivery_id: int, now: datetime) -> bool:
    """Make a ``dead`` delivery ``pending`` again, due ``now``, with fresh attempts (the last
    error stays visible until the next attempt). False if it was not dead. Commits."""
    with sm.begin() as session:
        delivery = _lock(session, delivery_id)
        if delivery.state != DeliveryState.DEAD:
            return False
        _revive(delivery, now)
    logger.info("dead delivery queued again", extra={"delivery_id": delivery_id})
    return True


def retry_dead_deliveries(
    sm: sessionmaker[Session], now: datetime, *, destination: str | None = None
) -> list[int]:
    """:func:`retry_delivery` for every ``dead`` delivery (of ``destination`` if given);
    returns their ids. Commits."""
    stmt = select(Delivery).where(Delivery.state == DeliveryState.DEAD)
    if destination is not None:
        stmt = stmt.where(Delivery.destination_name == destination)
    with sm.begin() as session:
        rows = session.scalars(
            stmt.order_by(Delivery.id)
            .with_for_update(skip_locked=True)
            .execution_options(populate_existing=True)
        ).all()
        for delivery in rows:
            _revive(delivery, now)
        ids = [d.id for d in rows]
    if ids:
        logger.info("dead deliveries queued again", extra={"count": len(ids)})
    return ids


_ROW_QUERY = select(Delivery, Result.kind, Result.study_id).join(
    Result, Result.id == Delivery.result_id
)


def _delivery_row(d: Delivery, kind: str, study_id: int) -> DeliveryRow:
    return DeliveryRow(
        delivery_id=d.id,
        result_id=d.result_id,
        study_id=study_id,
        kind=kind,
        destination_name=d.destination_name,
        state=d.state,
        attempts=d.attempts,
        next_attempt_at=d.next_attempt_at,
        last_status=d.last_status,
        last_error=d.last_error,
        created_at=d.created_at,
        updated_at=d.updated_at,
    )


def list_deliveries(
    sm: sessionmaker[Session], state: str | None = None, *, limit: int = 1000
) -> list[DeliveryRow]:
    """Deliveries (only those in ``state`` if given), oldest first."""
    if state is not None and state not in {s.value for s in DeliveryState}:
        raise ValueError(f"unknown delivery state {state!r}")
    stmt = _ROW_QUERY
    if state is not None:
        stmt = stmt.where(Delivery.state == state)
    with sm() as session:
        rows = session.execute(stmt.order_by(Delivery.id).limit(limit)).all()
        return [_delivery_row(d, kind, study_id) for d, kind, study_id in rows]


def get_delivery(sm: sessionmaker[Session], delivery_id: int) -> DeliveryRow:
    """One delivery; raises :class:`DeliveryNotFoundError` if there is none."""
    with sm() as session:
        row = session.execute(_ROW_QUERY.where(Delivery.id == delivery_id)).first()
        if row is None:
            raise DeliveryNotFoundError(f"no delivery with id {delivery_id}")
        d, kind, study_id = row
        return _delivery_row(d, kind, study_id)


# -- helpers -------------------------------------------------------------------------------------


def _lock(session: Session, delivery_id: int) -> Delivery:
    delivery = session.get(Delivery, delivery_id, with_for_update=True, populate_existing=True)
    if delivery is None:
        raise DeliveryNotFoundError(f"no delivery with id {delivery_id}")
    return delivery


def _is_current(delivery: Delivery, claim: ClaimedDelivery) -> bool:
    return (
        delivery.state == DeliveryState.PENDING
        and delivery.attempts == claim.attempt
        and delivery.next_attempt_at == claim.lease_expires_at
    )


def _revive(delivery: Delivery, now: datetime) -> None:
    delivery.state = DeliveryState.PENDING.value
    delivery.attempts = 0
    delivery.next_attempt_at = now
    delivery.updated_at = now


def _dead_letter(session: Session, delivery: Delivery, now: datetime, reason: str) -> None:
    delivery.state = DeliveryState.DEAD.value
    record_audit(
        session,
        actor=AUDIT_ACTOR,
        action="delivery.dead",
        object_type="delivery",
        object_id=str(delivery.id),
        detail={
            "result_id": delivery.result_id,
            "destination": delivery.destination_name,
            "attempts": delivery.attempts,
            "status": delivery.last_status,
            "reason": reason,
            "error": delivery.last_error,
        },
        at=now,
    )
