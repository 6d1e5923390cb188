"""The outbox: one ``deliveries`` row per result object and destination, sent until it is
``sent`` or ``dead``; its scheduling is a ``deliver`` job of the ``delivery`` queue
(:mod:`storage.queue`).

States of a delivery (``DeliveryState``) and of its job (``JobState``)::

    pending ──claim──▶ pending ──sent──────────────────────────────▶ sent
    (job queued)       (job running)                                   (job done)
       ▲                   │  ├─transient failure, attempts left ──▶ pending (job queued, backoff)
       │                   │  ├─permanent failure / attempts used ──▶ dead (job dead)
       │                   │  └─sender gone (job's lease expired) ─▶ pending (job queued at once)
       │                   │       or dead if that was its last attempt
       └──────── retry (its dead job revived, fresh attempts) ◀── dead

The delivery row is the domain record (destination, result, state, attempts as a visible
count, the peer's last status and error, when it was sent); the queue job holds the schedule:
claim, lease, backoff and dead-lettering. A claim makes the job ``running`` under the sender's
``worker_id`` with a lease (``lease_expires_at``); the delivery stays ``pending`` and counts
the attempt. ``attempts`` is counted at the claim, so a lost attempt counts too and a delivery
that keeps killing its sender ends ``dead`` (:func:`requeue_expired_deliveries`, which runs
:func:`storage.queue.requeue_expired` on the queue). Only the sender that holds the job may
record a failure: a report from a sender whose lease expired and whose job was requeued or
claimed by another is ``"stale"`` and changes nothing. A success report is always accepted:
the peer has the object, whatever the queue thought; any other job of that delivery is
finished or cancelled so that it is not sent again (and a job whose delivery is no longer
``pending`` when claimed is finished without sending).

The delivery follows its job in the transaction that changes the job (the ``deliver``
settler, :func:`storage.queue.on_settle`): job ``dead`` → delivery ``dead`` and audited
(``delivery.dead``); job ``queued`` again (retry, lost sender, revived) → delivery
``pending``; job ``done`` → nothing (the sender records ``sent`` itself); job ``cancelled``
(an operator's :func:`storage.queue.cancel`) → a still ``pending`` delivery without another
job becomes ``dead`` and audited, so that it is visible and can be retried instead of
waiting for ever.

Choose the lease longer than the slowest send (connection, association and DIMSE timeouts),
or a slow send can be overtaken by a second one: the peer then receives the same object twice,
with the same SOP Instance UID and bytes, which a PACS treats as a duplicate.

Transactions: :func:`queue_deliveries` accepts a ``Session`` (it joins the caller's
transaction, typically the one that records the result, so a result is never without its
deliveries and their jobs) or a ``sessionmaker``. Every other function takes a
``sessionmaker`` and owns one short transaction. Lock order is always the delivery's job rows,
then the delivery row (as in :mod:`storage.jobs`). Claims use ``SELECT ... FOR UPDATE SKIP
LOCKED`` on PostgreSQL; on SQLite every transaction begins ``IMMEDIATE`` (see
:mod:`storage.db`), one claimer at a time.

Dead letters are audited (``delivery.dead``) in the same transaction that makes them dead.
Nothing here stores or logs patient data; error texts come from the sender and must not
either, and are redacted again before they are stored (:func:`storage.redact.redact`).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Collection, Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from sqlalchemy import case, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from storage import audit, queue
from storage.errors import NotFoundError
from storage.redact import redact
from storage.rows import from_attributes
from storage.schema import Delivery, DeliveryState, Destination, Job, JobState, Result, utcnow

logger = logging.getLogger(__name__)

#: the queue and the task of delivery jobs (:mod:`storage.queue`)
QUEUE = "delivery"
DELIVER = "deliver"
DEFAULT_MAX_ATTEMPTS = 8
MAX_ERROR_CHARS = 2000
JITTER_LOW = 0.5
JITTER_HIGH = 1.5
LEASE_EXPIRED_ERROR = "lease expired on the last attempt: the sender stopped without reporting"
RELEASED_ERROR = "released on the last attempt: the sender's process is gone"
CANCELLED_ERROR = "cancelled: its queue job was cancelled"
AUDIT_ACTOR = "xrayd.pipeline.delivery"

_ACTIVE = (JobState.QUEUED.value, JobState.RUNNING.value)
#: ``session.info`` key: why :func:`delivery_failed` dead-letters (read by the settler)
_DEAD_REASON = "xrayd.outbox.dead_reason"
#: set by :func:`requeue_expired_deliveries`: the settler notes (delivery id, job state) here
_recovered: ContextVar[list[tuple[int, str]] | None] = ContextVar(
    "xrayd_outbox_recovered", default=None
)


class DeliveryNotFoundError(NotFoundError):
    """A delivery id given to :mod:`storage.outbox` does not exist."""


class ResultNotFoundError(NotFoundError):
    """A result id given to :func:`queue_deliveries` does not exist."""


class DestinationLike(Protocol):
    """What :func:`queue_deliveries` needs of a destination (a ``DestinationRow`` or the
    settings' ``DestinationSettings``)."""

    @property
    def name(self) -> str: ...

    @property
    def send(self) -> Collection[str]: ...


@dataclass(frozen=True)
class ClaimedDelivery:
    """A delivery a sender holds until ``lease_expires_at``; ``attempt`` counts this one.
    ``job_id`` is its queue job, ``worker_id`` the sender that holds it."""

    delivery_id: int
    result_id: int
    destination_name: str
    kind: str
    sop_instance_uid: str | None
    file_path: str | None  # relative to the spool
    attempt: int
    lease_expires_at: datetime
    job_id: int
    worker_id: str


@dataclass(frozen=True)
class DeliveryRow:
    delivery_id: int
    result_id: int
    study_id: int
    kind: str
    destination_name: str
    state: str
    attempts: int
    #: when its queued job falls due, or when the running job's lease ends (it is due again
    #: then if its sender is lost); None without a queued or running job (sent, dead)
    next_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class RecoveredDeliveries:
    """What :func:`requeue_expired_deliveries` did: delivery ids due again at once, and those
    made ``dead`` (their lost attempt was the last)."""

    requeued: tuple[int, ...]
    dead: tuple[int, ...]


FailureOutcome = Literal["retry", "dead", "stale"]


def backoff_seconds(attempts: int, base_seconds: float, max_seconds: float, jitter: float) -> float:
    """``min(max, base * 2**(attempts-1)) * jitter`` (attempts counted from 1)."""
    exponent = min(max(0, attempts - 1), 64)  # past 2**64 the cap has long been reached
    delay = min(max_seconds, base_seconds * 2.0**exponent)
    return delay * jitter


def _default_jitter() -> float:
    return random.uniform(JITTER_LOW, JITTER_HIGH)


def delivery_lock(delivery_id: int) -> str:
    """The queue lock of a delivery: one sender at a time."""
    return f"delivery:{delivery_id}"


def _queueing_lock(delivery_id: int) -> str:
    return f"{DELIVER}:{delivery_id}"


# -- queueing ----------------------------------------------------------------------------------


def queue_deliveries(
    target: Session | sessionmaker[Session],
    result_id: int,
    kind: str,
    destinations: Iterable[DestinationLike] | None = None,
    *,
    now: datetime | None = None,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
) -> list[int]:
    """Add a ``pending`` delivery of result ``result_id`` to every destination whose ``send``
    list includes ``kind``, each with a queued ``deliver`` job due ``now`` that may make
    ``max_attempts`` attempts; returns the ids of the deliveries added.

    ``destinations`` None: the rows of the ``destinations`` table, read in the same
    transaction. Idempotent: a (result, destination) pair that already has a row, in whatever
    state, gets no second one (also under concurrent callers, via the unique constraint), nor
    a second job. Given a ``Session`` it works in the caller's transaction (the caller
    commits: deliveries and jobs commit or roll back together).
    """
    if not kind:
        raise ValueError("kind must not be empty")
    if max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    at = now or utcnow()

    def run(session: Session) -> list[int]:
        if destinations is None:
            rows = session.scalars(select(Destination).order_by(Destination.name)).all()
            names = [r.name for r in rows if kind in r.send]
        else:
            names = sorted({d.name for d in destinations if kind in d.send})
        if not names:
            return []
        study_id = session.scalar(select(Result.study_id).where(Result.id == result_id))
        if study_id is None:
            raise ResultNotFoundError(f"no result with id {result_id}")
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
                    created_at=at,
                    updated_at=at,
                )
                .on_conflict_do_nothing(index_elements=["result_id", "destination_name"])
                .returning(Delivery.id)
            )
            new_id = session.execute(stmt).scalar()
            if new_id is None:  # a concurrent caller added it: its job comes with it
                continue
            delivery_id = int(new_id)
            # the row is ours alone until commit, so its queueing lock cannot be contended
            queue.defer(  # NOTIFY (PostgreSQL) wakes other processes' senders at commit
                session,
                queue=QUEUE,
                task=DELIVER,
                now=at,
                max_attempts=max_attempts,
                ref_id=delivery_id,
                study_id=study_id,
                lock=delivery_lock(delivery_id),
                queueing_lock=_queueing_lock(delivery_id),
            )
            added.append(delivery_id)
        if added:
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
    worker_id: str,
) -> ClaimedDelivery | None:
    """Claim the most urgent due delivery job for ``worker_id``; None if none is due.

    The job becomes ``running`` with a lease of ``lease_seconds`` (see
    :func:`storage.queue.claim`); the delivery stays ``pending`` and counts the attempt. A
    job whose delivery is no longer ``pending`` (sent by a late report, dead, or deleted with
    its result) is finished without sending and the next one is claimed. Commits.
    """
    #: what the claiming transaction read of the delivery and its result
    found: list[dict[str, Any]] = []

    def on_claim(session: Session, job: Job) -> None:
        delivery = _get_locked(session, job.ref_id)
        if delivery is None or delivery.state != DeliveryState.PENDING:
            return
        result = session.get(Result, delivery.result_id)
        if result is None:  # pragma: no cover - the foreign key cascades
            return
        delivery.attempts = job.attempts
        delivery.updated_at = now
        found.append(
            {
                "delivery_id": delivery.id,
                "result_id": result.id,
                "destination_name": delivery.destination_name,
                "kind": result.kind,
                "sop_instance_uid": result.sop_instance_uid,
                "file_path": result.file_path,
            }
        )

    while True:
        found.clear()
        task = queue.claim(
            sm,
            worker_id,
            now,
            lease_seconds,
            queues=(QUEUE,),
            tasks=(DELIVER,),
            on_claim=on_claim,
        )
        if task is None:
            return None
        if not found:
            # nothing to send: the job ends here (a crash before this commit only means the
            # job comes back after its lease and ends here then)
            with sm.begin() as session:
                queue.finish(session, task.job_id, now, worker_id=worker_id)
            logger.info(
                "delivery job finished without sending: its delivery is no longer pending",
                extra={"job_id": task.job_id, "delivery_id": task.ref_id},
            )
            continue
        (read,) = found
        claimed = from_attributes(ClaimedDelivery, task, **read, attempt=task.attempts)
        logger.debug(
            "delivery claimed",
            extra={
                "delivery_id": claimed.delivery_id,
                "job_id": claimed.job_id,
                "attempt": claimed.attempt,
            },
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
    ``last_error`` for a warning, else cleared) and its job ``done``, in one transaction.

    Accepted whatever the claim's state, since the peer has stored the object: after a lost
    lease the delivery still becomes ``sent`` and its running job (another sender's, if one
    took it) is finished and a job queued again for it is cancelled, in the same transaction.
    Returns False, changing nothing,
    only if the delivery was already ``sent``. Commits.
    """
    with sm.begin() as session:
        jobs = _lock_jobs(session, claim.delivery_id, _ACTIVE)
        delivery = _lock(session, claim.delivery_id)
        if delivery.state == DeliveryState.SENT:
            return False
        ours = any(
            j.id == claim.job_id and j.state == JobState.RUNNING and j.worker_id == claim.worker_id
            for j in jobs
        )
        if not ours:
            logger.warning("late success report accepted", extra={"delivery_id": claim.delivery_id})
        delivery.state = DeliveryState.SENT.value
        delivery.last_status = status
        delivery.last_error = None if note is None else redact(note)[:MAX_ERROR_CHARS]
        delivery.updated_at = now
        delivery.sent_at = now
        for job in jobs:
            if job.state == JobState.RUNNING:
                queue.finish(session, job.id, now, worker_id=None)
            elif job.state == JobState.QUEUED:
                queue.cancel_in(session, job.id, now)
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
    base_delay_seconds: float = 30.0,
    max_delay_seconds: float = 3600.0,
    jitter: Callable[[], float] | None = None,
) -> FailureOutcome:
    """Record a failed attempt and commit.

    Transient with attempts left (the job's ``max_attempts``): ``pending`` again, its job due
    at ``now + min(max, base * 2**(attempts-1)) * jitter`` (jitter uniform in [0.5, 1.5]
    unless given) → ``"retry"``. Permanent, or the last attempt: ``dead`` and audited →
    ``"dead"``. A report from a sender that no longer holds the job (its lease expired and
    the job was requeued or claimed by another sender, or the delivery was sent meanwhile)
    changes nothing → ``"stale"``. ``error`` is stored redacted
    (:func:`storage.redact.redact`) and truncated.
    """
    with sm.begin() as session:
        if not queue.holds(session, claim.job_id, claim.worker_id):
            logger.warning("stale failure report ignored", extra={"delivery_id": claim.delivery_id})
            return "stale"
        delivery = _lock(session, claim.delivery_id)
        delivery.last_status = status
        delivery.last_error = redact(error)[:MAX_ERROR_CHARS]
        delivery.updated_at = now
        retry_at: datetime | None = None
        if transient:
            factor = (jitter or _default_jitter)()
            delay = backoff_seconds(claim.attempt, base_delay_seconds, max_delay_seconds, factor)
            retry_at = now + timedelta(seconds=delay)
        session.info[_DEAD_REASON] = "attempts exhausted" if transient else "permanent failure"
        try:
            outcome = queue.fail(
                session, claim.job_id, now, error, worker_id=claim.worker_id, retry_at=retry_at
            )
        finally:
            session.info.pop(_DEAD_REASON, None)
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


def requeue_expired_deliveries(sm: sessionmaker[Session], now: datetime) -> RecoveredDeliveries:
    """Recover deliveries whose sender vanished (their job's lease expired before ``now``):
    due again at once, ahead of new work, or ``dead`` and audited when the lost attempt was
    the last (:func:`storage.queue.requeue_expired`). Commits."""
    seen: list[tuple[int, str]] = []
    token = _recovered.set(seen)
    try:
        queue.requeue_expired(sm, now, queues=(QUEUE,))
    finally:
        _recovered.reset(token)
    recovered = RecoveredDeliveries(
        requeued=tuple(d for d, state in seen if state == JobState.QUEUED),
        dead=tuple(d for d, state in seen if state == JobState.DEAD),
    )
    if recovered.dead:
        logger.error(
            "deliveries dead after their sender stopped", extra={"count": len(recovered.dead)}
        )
    return recovered


def next_due_at(sm: sessionmaker[Session]) -> datetime | None:
    """When the earliest queued delivery job falls due, or the earliest lease of a running
    one ends (None when there is neither)."""
    return queue.next_due_at(sm, (QUEUE,))


# -- operator actions ----------------------------------------------------------------------------


def retry_delivery(
    sm: sessionmaker[Session],
    delivery_id: int,
    now: datetime,
    *,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    actor: str | None = None,
) -> bool:
    """Make a ``dead`` delivery ``pending`` again with fresh attempts: its dead job is revived
    (:func:`storage.queue.revive`), due ``now``; a delivery without one (dead before the one
    queue) gets a new job with ``max_attempts``. The last error stays visible until the next
    attempt. False if it was not dead. Commits; given an ``actor``, with its audit row
    (``delivery.retried``) in the same transaction."""
    with sm.begin() as session:
        revived = _revive(session, delivery_id, now, max_attempts, missing_ok=False)
        if revived and actor is not None:
            _audit_retried(session, actor, delivery_id, {"all_dead": False})
    if revived:
        logger.info("dead delivery queued again", extra={"delivery_id": delivery_id})
    return revived


def retry_dead_deliveries(
    sm: sessionmaker[Session],
    now: datetime,
    *,
    destination: str | None = None,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    actor: str | None = None,
) -> list[int]:
    """:func:`retry_delivery` for every ``dead`` delivery (of ``destination`` if given);
    returns their ids. Commits; given an ``actor``, with one audit row per delivery in the
    same transaction."""
    stmt = select(Delivery.id).where(Delivery.state == DeliveryState.DEAD)
    if destination is not None:
        stmt = stmt.where(Delivery.destination_name == destination)
    with sm.begin() as session:
        candidates = session.scalars(stmt.order_by(Delivery.id)).all()
        ids = [d for d in candidates if _revive(session, d, now, max_attempts, missing_ok=True)]
        if actor is not None:
            detail: dict[str, Any] = {"all_dead": True}
            if destination is not None:
                detail["destination"] = destination
            for delivery_id in ids:
                _audit_retried(session, actor, delivery_id, detail)
    if ids:
        logger.info("dead deliveries queued again", extra={"count": len(ids)})
    return ids


# -- reading -----------------------------------------------------------------------------------

#: when the delivery's queued job falls due, or its running job's lease ends
_NEXT_ATTEMPT = (
    select(
        func.min(
            case(
                (Job.state == JobState.RUNNING.value, Job.lease_expires_at),
                else_=Job.next_attempt_at,
            )
        )
    )
    .where(Job.kind == DELIVER, Job.ref_id == Delivery.id, Job.state.in_(_ACTIVE))
    .correlate(Delivery)
    .scalar_subquery()
)
_ROW_QUERY = select(Delivery, Result.kind, Result.study_id, _NEXT_ATTEMPT).join(
    Result, Result.id == Delivery.result_id
)


def _delivery_row(d: Delivery, kind: str, study_id: int, next_at: datetime | None) -> DeliveryRow:
    return from_attributes(
        DeliveryRow, d, delivery_id=d.id, study_id=study_id, kind=kind, next_attempt_at=next_at
    )


def list_deliveries(
    sm: sessionmaker[Session], state: str | None = None, *, limit: int = 1000, offset: int = 0
) -> list[DeliveryRow]:
    """Deliveries (only those in ``state`` if given), oldest first; ``limit``/``offset``
    select a page (in SQL)."""
    if state is not None and state not in {s.value for s in DeliveryState}:
        raise ValueError(f"unknown delivery state {state!r}")
    stmt = _ROW_QUERY
    if state is not None:
        stmt = stmt.where(Delivery.state == state)
    with sm() as session:
        rows = session.execute(stmt.order_by(Delivery.id).limit(limit).offset(offset)).all()
        return [_delivery_row(d, kind, study_id, at) for d, kind, study_id, at in rows]


def get_delivery(sm: sessionmaker[Session], delivery_id: int) -> DeliveryRow:
    """One delivery; raises :class:`DeliveryNotFoundError` if there is none."""
    with sm() as session:
        row = session.execute(_ROW_QUERY.where(Delivery.id == delivery_id)).first()
        if row is None:
            raise DeliveryNotFoundError(f"no delivery with id {delivery_id}")
        d, kind, study_id, at = row
        return _delivery_row(d, kind, study_id, at)


# -- helpers -------------------------------------------------------------------------------------


def _lock(session: Session, delivery_id: int) -> Delivery:
    delivery = _get_locked(session, delivery_id)
    if delivery is None:
        raise DeliveryNotFoundError(f"no delivery with id {delivery_id}")
    return delivery


def _get_locked(session: Session, delivery_id: int | None) -> Delivery | None:
    if delivery_id is None:
        return None
    session.flush()  # what this transaction changed is what a reload must see
    return session.get(Delivery, delivery_id, with_for_update=True, populate_existing=True)


def _lock_jobs(
    session: Session, delivery_id: int, states: Collection[str] | None = None
) -> list[Job]:
    """The delivery's jobs (in ``states`` if given), oldest first, locked."""
    stmt = select(Job).where(Job.kind == DELIVER, Job.ref_id == delivery_id)
    if states is not None:
        stmt = stmt.where(Job.state.in_(list(states)))
    return list(
        session.scalars(
            stmt.order_by(Job.id).with_for_update().execution_options(populate_existing=True)
        ).all()
    )


def _audit_retried(session: Session, actor: str, delivery_id: int, detail: dict[str, Any]) -> None:
    audit.append(
        session,
        actor=actor,
        action=audit.Action.DELIVERY_RETRIED,
        object_type="delivery",
        object_id=str(delivery_id),
        detail=detail,
    )


def _revive(
    session: Session, delivery_id: int, now: datetime, max_attempts: int, *, missing_ok: bool
) -> bool:
    """Queue a ``dead`` delivery again in the caller's transaction; False if it is not (or no
    longer, or with ``missing_ok`` not at all) there and dead."""
    jobs = _lock_jobs(session, delivery_id)
    delivery = _get_locked(session, delivery_id)
    if delivery is None:
        if missing_ok:
            return False
        raise DeliveryNotFoundError(f"no delivery with id {delivery_id}")
    if delivery.state != DeliveryState.DEAD:
        return False
    delivery.state = DeliveryState.PENDING.value
    delivery.attempts = 0
    delivery.updated_at = now
    if any(j.state in _ACTIVE for j in jobs):  # pragma: no cover - a dead delivery has none
        return True
    last = jobs[-1] if jobs else None
    if last is not None and last.state in (JobState.DEAD, JobState.CANCELLED):
        queue.revive(session, last, now)  # the settler keeps the delivery pending
        return True
    result = session.get(Result, delivery.result_id)
    if result is None:  # pragma: no cover - the foreign key cascades
        raise DeliveryNotFoundError(f"delivery {delivery_id} refers to a missing result")
    queue.defer(
        session,
        queue=QUEUE,
        task=DELIVER,
        now=now,
        max_attempts=last.max_attempts if last is not None else max_attempts,
        ref_id=delivery.id,
        study_id=result.study_id,
        lock=delivery_lock(delivery.id),
        queueing_lock=_queueing_lock(delivery.id),
    )
    return True


def _settle_delivery(session: Session, job: Job, now: datetime) -> None:
    """Keep the delivery in step with its job (the ``deliver`` settler of
    :mod:`storage.queue`, called in the transaction that changed the job): see the module's
    docstring for the rules."""
    delivery = _get_locked(session, job.ref_id)
    if delivery is None:  # deleted with its result: nothing to keep in step
        return
    seen = _recovered.get()
    if seen is not None:
        seen.append((delivery.id, job.state))
    if job.state == JobState.QUEUED:
        if delivery.state == DeliveryState.SENT:
            return  # the peer has it: a claim of this job finishes it unsent
        if delivery.state != DeliveryState.PENDING or delivery.attempts != job.attempts:
            delivery.state = DeliveryState.PENDING.value
            delivery.attempts = job.attempts
            delivery.updated_at = now
    elif job.state == JobState.DEAD:
        if delivery.state != DeliveryState.PENDING:
            return
        reason = session.info.pop(_DEAD_REASON, None)
        if reason is None:  # not through delivery_failed: the queue lost or failed the job
            if job.last_error == queue.LEASE_EXPIRED_ERROR:
                reason, delivery.last_error = "lease expired", LEASE_EXPIRED_ERROR
            elif job.last_error == queue.RELEASED_ERROR:
                reason, delivery.last_error = "sender gone", RELEASED_ERROR
            else:
                reason, delivery.last_error = "job failed", job.last_error
        delivery.attempts = job.attempts
        delivery.updated_at = now
        _dead_letter(session, delivery, now, str(reason))
    elif job.state == JobState.CANCELLED:
        if delivery.state != DeliveryState.PENDING:
            return
        others = session.scalar(
            select(func.count())
            .select_from(Job)
            .where(
                Job.kind == DELIVER,
                Job.ref_id == delivery.id,
                Job.id != job.id,
                Job.state.in_(_ACTIVE),
            )
        )
        if others:
            return
        delivery.last_error = CANCELLED_ERROR
        delivery.updated_at = now
        _dead_letter(session, delivery, now, "cancelled")
    # done: the sender recorded ``sent`` in the same transaction


def _dead_letter(session: Session, delivery: Delivery, now: datetime, reason: str) -> None:
    delivery.state = DeliveryState.DEAD.value
    audit.append(
        session,
        actor=AUDIT_ACTOR,
        action=audit.Action.DELIVERY_DEAD,
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


queue.on_settle(DELIVER, _settle_delivery)
