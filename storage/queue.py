"""xrayd's one work queue: analysis jobs, deliveries of result objects and retraining runs are
rows of the ``jobs`` table, claimed, leased, retried and dead-lettered by the same rules.

Lifecycle of a job (``JobState``)::

    queued ──claim──▶ running ──finish──────────────────────────────▶ done
      ▲  │              │  ├─fail, attempts left ──▶ queued (at retry_at)
      │  │              │  ├─fail permanent / attempts used ──▶ dead ──retry_dead──▶ queued
      │  │              │  └─worker gone (lease expired, released) ──▶ queued (priority +1)
      │  └─cancel──▶ cancelled                                          or dead if last attempt
      └────────────────────┘

* **Deferred in the caller's transaction.** :func:`defer` adds the row in the session that
  stores what the job is about (the instance's study, the result and its deliveries, the
  training run), so no job is lost between a commit and a publish, on SQLite and PostgreSQL
  alike. On PostgreSQL the same transaction sends a ``NOTIFY`` (see :mod:`storage.notify`),
  delivered only if it commits.
* **Claims.** The oldest due job of the asked queues (higher ``priority`` first) becomes
  ``running`` with ``attempts`` + 1, the claimer's ``worker_id`` and a lease
  (``lease_expires_at``). PostgreSQL: ``SELECT ... FOR UPDATE SKIP LOCKED``; SQLite: every
  transaction begins ``IMMEDIATE`` (:mod:`storage.db`), one claimer at a time.
* **Locks.** ``lock``: at most one ``running`` job per lock (one analysis of a study at a
  time). ``queueing_lock``: at most one ``queued`` job per key (a unique partial index):
  deferring again returns the waiting job instead of adding a second one.
* **Ownership.** Only the worker that holds a job may renew its lease (:func:`renew`), finish
  it or record its failure: a worker whose lease expired and whose job was taken by another
  cannot mark it done (``"stale"``, nothing changes).
* **Lost workers.** :func:`requeue_expired` (the sweep every worker process runs) and
  :func:`release` put a running job whose worker is gone back in the queue at once with a
  higher priority (the lost attempt counts: a job that keeps killing its worker ends dead).
* **Task hooks.** A task's module registers a *settler* (:func:`on_settle`), called in the
  same transaction whenever one of its jobs leaves ``running`` or is revived, so the domain
  rows (study state, delivery state, training run) always agree with the queue.

Error texts are stored redacted (:func:`storage.redact.redact`) and truncated. Nothing here
logs patient data: only job ids, queue and task names.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import exists, func, select
from sqlalchemy.orm import Session, aliased, sessionmaker

from storage import audit
from storage.errors import JobNotFoundError
from storage.notify import channel_for_queue, notify
from storage.redact import redact
from storage.rows import from_attributes
from storage.schema import Job, JobState

logger = logging.getLogger(__name__)

__all__ = [
    "LEASE_EXPIRED_ERROR",
    "MAX_ERROR_CHARS",
    "RELEASED_ERROR",
    "ClaimedTask",
    "FailOutcome",
    "QueueJobRow",
    "Settler",
    "cancel",
    "cancel_in",
    "claim",
    "counts",
    "defer",
    "fail",
    "finish",
    "holds",
    "list_queue",
    "next_due_at",
    "on_settle",
    "release",
    "renew",
    "requeue_expired",
    "retry_dead",
    "revive",
]

MAX_ERROR_CHARS = 2000
LEASE_EXPIRED_ERROR = "lease expired: the worker stopped without reporting"
RELEASED_ERROR = "released: the worker's process is gone"
#: priority given to a job whose worker was lost, so it is taken before new work
LOST_PRIORITY_BOOST = 1

FailOutcome = Literal["retry", "dead", "stale"]
#: called as ``settler(session, job, now)`` in the transaction that changed ``job.state``
Settler = Callable[[Session, Job, datetime], None]

_SETTLERS: dict[str, Settler] = {}


@dataclass(frozen=True)
class ClaimedTask:
    """A job a worker holds until its lease expires; ``attempts`` counts this attempt."""

    job_id: int
    queue: str
    task: str
    ref_id: int | None
    study_id: int | None
    attempts: int
    max_attempts: int
    worker_id: str
    lease_expires_at: datetime


def on_settle(task: str, settler: Settler) -> None:
    """Register the settler of ``task`` (one per task; registering again replaces it)."""
    _SETTLERS[task] = settler


def _settle(session: Session, job: Job, now: datetime) -> None:
    settler = _SETTLERS.get(job.kind)
    if settler is None:
        raise RuntimeError(
            f"no settler registered for task {job.kind!r}: import its storage module"
        )
    settler(session, job, now)


# -- deferring (caller's transaction) ------------------------------------------------------------


def defer(
    session: Session,
    *,
    queue: str,
    task: str,
    now: datetime,
    max_attempts: int,
    ref_id: int | None = None,
    study_id: int | None = None,
    lock: str | None = None,
    queueing_lock: str | None = None,
    run_at: datetime | None = None,
    priority: int = 0,
) -> int:
    """Add a ``queued`` job in the caller's transaction (it commits) and return its id.

    With a ``queueing_lock`` that a queued job already holds, that job's id is returned and
    nothing is added (a retry waiting for its backoff is reused as it is). The caller must
    hold the lock of the row the job is about (for example the study's row, locked ``FOR
    UPDATE``) so that two deferrers of the same key do not race to the unique index.
    """
    if max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    if queueing_lock is not None:
        # Read, not locked: a claimer holds a job's row before the row it works on, and the
        # caller holds that row (see above), so waiting here for the job's lock could deadlock.
        waiting = session.scalar(
            select(Job.id).where(Job.queueing_lock == queueing_lock, Job.state == JobState.QUEUED)
        )
        if waiting is not None:
            return waiting
    job = Job(
        queue=queue,
        kind=task,
        ref_id=ref_id,
        study_id=study_id,
        lock=lock,
        queueing_lock=queueing_lock,
        priority=priority,
        state=JobState.QUEUED.value,
        attempts=0,
        max_attempts=max_attempts,
        next_attempt_at=run_at or now,
        created_at=now,
        updated_at=now,
    )
    session.add(job)
    session.flush()
    notify(session, channel_for_queue(queue))  # delivered to other processes at commit
    return job.id


# -- claiming and reporting --------------------------------------------------------------------


def claim(
    sm: sessionmaker[Session],
    worker_id: str,
    now: datetime,
    lease_seconds: float,
    *,
    queues: Collection[str],
    tasks: Collection[str] | None = None,
    job_ids: Collection[int] | None = None,
    on_claim: Callable[[Session, Job], None] | None = None,
) -> ClaimedTask | None:
    """Claim the most urgent due job of ``queues`` (of ``tasks``, and among ``job_ids``, if
    given) and commit; None if nothing is due. ``on_claim(session, job)`` runs in the
    claiming transaction (e.g. to mark the study ``processing``). A job whose ``lock``
    another running job holds waits."""
    if lease_seconds <= 0:
        raise ValueError("lease_seconds must be positive")
    other = aliased(Job)
    lock_busy = exists().where(
        other.lock == Job.lock, other.state == JobState.RUNNING, other.id != Job.id
    )
    stmt = select(Job).where(
        Job.state == JobState.QUEUED,
        Job.queue.in_(list(queues)),
        Job.next_attempt_at <= now,
        (Job.lock.is_(None)) | ~lock_busy,
    )
    if tasks is not None:
        stmt = stmt.where(Job.kind.in_(list(tasks)))
    if job_ids is not None:
        stmt = stmt.where(Job.id.in_(list(job_ids)))
    stmt = (
        stmt.order_by(Job.priority.desc(), Job.next_attempt_at, Job.id)
        .limit(1)
        .with_for_update(skip_locked=True, of=Job)
        .execution_options(populate_existing=True)
    )
    with sm.begin() as session:
        job = session.scalars(stmt).first()
        if job is None:
            return None
        lease_end = now + timedelta(seconds=lease_seconds)
        job.state = JobState.RUNNING.value
        job.attempts += 1
        job.worker_id = worker_id
        job.lease_expires_at = lease_end
        job.updated_at = now
        if on_claim is not None:
            on_claim(session, job)
        claimed = from_attributes(
            ClaimedTask, job, job_id=job.id, task=job.kind, lease_expires_at=lease_end
        )
    logger.debug(
        "job claimed",
        extra={"job_id": claimed.job_id, "queue": claimed.queue, "attempt": claimed.attempts},
    )
    return claimed


def renew(
    sm: sessionmaker[Session], job_id: int, worker_id: str, now: datetime, lease_seconds: float
) -> bool:
    """Extend a running job's lease to ``now + lease_seconds`` and commit; False (nothing
    changed) if the job is no longer running or is held by another worker: it was lost."""
    with sm.begin() as session:
        job = _lock_job(session, job_id)
        if not _is_ours(job, worker_id):
            return False
        job.lease_expires_at = now + timedelta(seconds=lease_seconds)
        job.updated_at = now
    return True


def holds(session: Session, job_id: int, worker_id: str | None) -> bool:
    """In the caller's transaction, with the job's row locked: whether ``worker_id`` still
    holds the running job (None: whether it is running at all)."""
    return _is_ours(_lock_job(session, job_id), worker_id)


def finish(session: Session, job_id: int, now: datetime, *, worker_id: str | None) -> bool:
    """Mark a running job ``done`` in the caller's transaction (it commits, together with the
    job's effects). False, nothing changed, if it is no longer ours (``worker_id`` None: if it
    is no longer running)."""
    job = _lock_job(session, job_id)
    if not _is_ours(job, worker_id):
        logger.warning("stale completion ignored", extra={"job_id": job_id})
        return False
    job.state = JobState.DONE.value
    job.finished_at = now
    job.lease_expires_at = None
    job.last_error = None
    job.updated_at = now
    _settle(session, job, now)
    return True


def fail(
    session: Session,
    job_id: int,
    now: datetime,
    error: str,
    *,
    worker_id: str | None,
    retry_at: datetime | None,
) -> FailOutcome:
    """Record a failed attempt in the caller's transaction.

    ``retry_at`` given and attempts left: ``queued`` again, due then → ``"retry"``. Otherwise
    (``retry_at`` None: a permanent failure, or the last attempt) ``dead`` → ``"dead"``. Not
    ours any more → ``"stale"``, nothing changed."""
    job = _lock_job(session, job_id)
    if not _is_ours(job, worker_id):
        logger.warning("stale failure report ignored", extra={"job_id": job_id})
        return "stale"
    job.last_error = redact(error)[:MAX_ERROR_CHARS]
    job.lease_expires_at = None
    job.updated_at = now
    outcome: FailOutcome
    if retry_at is None or job.attempts >= job.max_attempts:
        job.state = JobState.DEAD.value
        job.finished_at = now
        outcome = "dead"
    else:
        job.state = JobState.QUEUED.value
        job.next_attempt_at = retry_at
        outcome = "retry"
    _settle(session, job, now)
    return outcome


# -- lost workers --------------------------------------------------------------------------------


def requeue_expired(
    sm: sessionmaker[Session], now: datetime, *, queues: Collection[str] | None = None
) -> int:
    """Recover ``running`` jobs (of ``queues``, or all) whose lease expired before ``now``:
    queued for an immediate retry with a higher priority, or ``dead`` when the lost attempt
    was the last. Returns how many were handled. Commits."""
    stmt = select(Job).where(Job.state == JobState.RUNNING, Job.lease_expires_at < now)
    if queues is not None:
        stmt = stmt.where(Job.queue.in_(list(queues)))
    with sm.begin() as session:
        jobs = session.scalars(
            stmt.order_by(Job.id)
            .with_for_update(skip_locked=True)
            .execution_options(populate_existing=True)
        ).all()
        for job in jobs:
            _requeue_lost(session, job, now, LEASE_EXPIRED_ERROR)
        count = len(jobs)
    if count:
        logger.warning("requeued jobs with expired leases", extra={"count": count})
    return count


def release(sm: sessionmaker[Session], job_id: int, now: datetime) -> bool:
    """Give a ``running`` job back (its worker's process is known to be gone) without waiting
    for the lease to expire; same rules as :func:`requeue_expired`. False if it was not
    running. Commits."""
    with sm.begin() as session:
        job = _lock_job(session, job_id)
        if job.state != JobState.RUNNING:
            return False
        _requeue_lost(session, job, now, RELEASED_ERROR)
    logger.warning("released a job whose worker is gone", extra={"job_id": job_id})
    return True


def _requeue_lost(session: Session, job: Job, now: datetime, reason: str) -> None:
    job.last_error = reason
    job.lease_expires_at = None
    job.updated_at = now
    if job.attempts >= job.max_attempts:
        job.state = JobState.DEAD.value
        job.finished_at = now
    else:
        job.state = JobState.QUEUED.value
        job.next_attempt_at = now
        job.priority = max(job.priority, LOST_PRIORITY_BOOST)
    _settle(session, job, now)


# -- operator actions ----------------------------------------------------------------------------


def revive(session: Session, job: Job, now: datetime) -> None:
    """Queue a ``dead`` or ``cancelled`` job again with fresh attempts, due ``now``, in the
    caller's transaction (the caller holds the row's lock)."""
    if job.state not in (JobState.DEAD, JobState.CANCELLED):
        raise ValueError(f"job {job.id} is {job.state}, not dead or cancelled")
    if job.queueing_lock is not None:
        # a newer queued job of the same key exists: this one is not needed twice
        newer = session.scalar(
            select(Job.id).where(
                Job.queueing_lock == job.queueing_lock,
                Job.state == JobState.QUEUED,
                Job.id != job.id,
            )
        )
        if newer is not None:
            job.state = JobState.CANCELLED.value
            job.finished_at = now
            job.updated_at = now
            return
    job.state = JobState.QUEUED.value
    job.attempts = 0
    job.next_attempt_at = now
    job.finished_at = None
    job.lease_expires_at = None
    job.worker_id = None
    job.updated_at = now
    session.flush()
    _settle(session, job, now)
    notify(session, channel_for_queue(job.queue))


def cancel(
    sm: sessionmaker[Session], job_id: int, now: datetime, *, actor: str | None = None
) -> bool:
    """Cancel a ``queued`` job (a running one finishes or is lost first). Commits; given an
    ``actor``, with its audit row (``job.cancelled``) in the same transaction."""
    with sm.begin() as session:
        cancelled = cancel_in(session, job_id, now)
        if cancelled and actor is not None:
            audit.append(
                session,
                actor=actor,
                action=audit.Action.JOB_CANCELLED,
                object_type="job",
                object_id=str(job_id),
            )
    if cancelled:
        logger.info("job cancelled", extra={"job_id": job_id})
    return cancelled


def cancel_in(session: Session, job_id: int, now: datetime) -> bool:
    """:func:`cancel` in the caller's transaction: False (nothing changed) unless queued."""
    job = _lock_job(session, job_id)
    if job.state != JobState.QUEUED:
        return False
    job.state = JobState.CANCELLED.value
    job.finished_at = now
    job.updated_at = now
    _settle(session, job, now)
    return True


# -- reading -----------------------------------------------------------------------------------


def counts(session: Session) -> Mapping[tuple[str, str], int]:
    """``{(queue, state): jobs}`` over the whole table."""
    rows = session.execute(
        select(Job.queue, Job.state, func.count()).group_by(Job.queue, Job.state)
    ).all()
    return {(str(q), str(s)): int(n) for q, s, n in rows}


@dataclass(frozen=True)
class QueueJobRow:
    """A job as operators see it (no patient data: ids, names, states, times, errors that
    were redacted when stored)."""

    job_id: int
    queue: str
    task: str
    ref_id: int | None
    study_id: int | None
    state: str
    priority: int
    attempts: int
    max_attempts: int
    next_attempt_at: datetime
    lease_expires_at: datetime | None
    worker_id: str | None
    last_error: str | None
    created_at: datetime
    finished_at: datetime | None


def list_queue(
    sm: sessionmaker[Session],
    *,
    queue: str | None = None,
    state: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[QueueJobRow]:
    """Jobs of ``queue`` in ``state`` (each optional), oldest first, paged in SQL."""
    stmt = select(Job)
    if queue is not None:
        stmt = stmt.where(Job.queue == queue)
    if state is not None:
        stmt = stmt.where(Job.state == state)
    with sm() as session:
        jobs = session.scalars(stmt.order_by(Job.id).limit(limit).offset(offset)).all()
        return [from_attributes(QueueJobRow, j, job_id=j.id, task=j.kind) for j in jobs]


def retry_dead(
    sm: sessionmaker[Session],
    now: datetime,
    *,
    job_id: int | None = None,
    queue: str | None = None,
    actor: str | None = None,
) -> list[int]:
    """:func:`revive` one dead job (by id) or every dead job (of ``queue`` if given); returns
    the ids revived. Commits; given an ``actor``, with one audit row per job (``job.retried``)
    in the same transaction. :class:`JobNotFoundError` for an unknown id."""
    with sm.begin() as session:
        stmt = select(Job).where(Job.state == JobState.DEAD)
        if job_id is not None:
            if session.get(Job, job_id) is None:
                raise JobNotFoundError(f"no job with id {job_id}")
            stmt = stmt.where(Job.id == job_id)
        if queue is not None:
            stmt = stmt.where(Job.queue == queue)
        jobs = session.scalars(
            stmt.order_by(Job.id).with_for_update().execution_options(populate_existing=True)
        ).all()
        for job in jobs:
            revive(session, job, now)
            if actor is not None:
                audit.append(
                    session,
                    actor=actor,
                    action=audit.Action.JOB_RETRIED,
                    object_type="job",
                    object_id=str(job.id),
                    detail={"all_dead": job_id is None, "queue": job.queue},
                )
        ids = [j.id for j in jobs]
    if ids:
        logger.info("dead jobs queued again", extra={"count": len(ids)})
    return ids


def next_due_at(sm: sessionmaker[Session], queues: Collection[str]) -> datetime | None:
    """When the earliest queued job of ``queues`` falls due, or the earliest lease of a
    running one expires (None when there is neither)."""
    with sm() as session:
        due: datetime | None = session.scalar(
            select(func.min(Job.next_attempt_at)).where(
                Job.state == JobState.QUEUED, Job.queue.in_(list(queues))
            )
        )
        lease: datetime | None = session.scalar(
            select(func.min(Job.lease_expires_at)).where(
                Job.state == JobState.RUNNING, Job.queue.in_(list(queues))
            )
        )
    candidates = [t for t in (due, lease) if t is not None]
    return min(candidates) if candidates else None


# -- helpers -------------------------------------------------------------------------------------


def _lock_job(session: Session, job_id: int) -> Job:
    job = session.get(Job, job_id, with_for_update=True, populate_existing=True)
    if job is None:
        raise JobNotFoundError(f"no job with id {job_id}")
    return job


def _is_ours(job: Job, worker_id: str | None) -> bool:
    if job.state != JobState.RUNNING:
        return False
    return worker_id is None or job.worker_id == worker_id


def job_holder(sm: sessionmaker[Session], job_id: int) -> tuple[str, str | None] | None:
    """A job's state and the worker holding it (None: no such job)."""
    with sm() as session:
        job = session.get(Job, job_id)
        return None if job is None else (job.state, job.worker_id)
