"""Analysis jobs: promotion of complete studies, claiming, completion, retries, dead letters.

Transactions: :func:`promote_ready_studies` and :func:`promote_studies_now` accept either a
``Session`` (they work in the caller's transaction; the caller commits) or a ``sessionmaker``
(they run and commit their own transaction). Every other function takes a ``sessionmaker`` and
owns one short transaction (begin ... commit), so a claim is atomic and its locks are held only
for milliseconds.

Concurrency: on PostgreSQL rows are taken with ``SELECT ... FOR UPDATE SKIP LOCKED`` (two
workers never get the same job; two promoters never queue the same study twice) and states are
checked again after locking. On SQLite every transaction starts with ``BEGIN IMMEDIATE`` (see
:mod:`storage.db`), so there is one writer, hence one claimer, at a time.

Lock order is always job row, then study row (or the study row alone), so these functions do
not deadlock with each other or with :func:`storage.instances.record_instance`.

Study states: a job's study is ``queued`` while a job waits, ``processing`` while one runs,
``analysed``/``failed`` when the last one finished; a late instance sets it back to
``receiving`` (see :mod:`storage.instances`), which these functions never overwrite.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from storage import queue
from storage.errors import JobNotFoundError
from storage.rows import from_attributes
from storage.schema import Job, JobState, Study, StudyState

logger = logging.getLogger(__name__)

ANALYSE = "analyse"
#: the queue of analysis jobs (:mod:`storage.queue`)
QUEUE = "analysis"
DEFAULT_MAX_ATTEMPTS = 5
MAX_ERROR_CHARS = queue.MAX_ERROR_CHARS
LEASE_EXPIRED_ERROR = queue.LEASE_EXPIRED_ERROR
RELEASED_ERROR = queue.RELEASED_ERROR
_IN_CHUNK = 500


@dataclass(frozen=True)
class ClaimedJob:
    job_id: int
    study_id: int
    study_instance_uid: str
    kind: str
    attempts: int
    #: the claimer: only it may renew the lease, complete or fail the job
    worker_id: str | None = None


@dataclass(frozen=True)
class JobRow:
    job_id: int
    study_id: int
    study_instance_uid: str
    kind: str
    state: str
    attempts: int
    max_attempts: int
    next_attempt_at: datetime
    lease_expires_at: datetime | None
    worker_id: str | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


# -- promotion (caller's session, or own transaction) --------------------------------------


def promote_ready_studies(
    target: Session | sessionmaker[Session],
    now: datetime,
    quiet_seconds: float,
    max_wait_seconds: float,
    *,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    kind: str = ANALYSE,
) -> list[int]:
    """Queue a job for every ``receiving`` study that is quiet or has waited long enough.

    Ready means ``last_received_at <= now - quiet_seconds`` (no image for a while) or
    ``batch_started_at <= now - max_wait_seconds`` (a steady trickle must not postpone
    analysis forever). Returns the ids of the jobs queued for these studies: normally new
    ones; an already queued job of the study (a retry waiting for its backoff) is reused
    instead of adding a second one. Commits only when given a ``sessionmaker``.
    """
    quiet_cutoff = now - timedelta(seconds=quiet_seconds)
    wait_cutoff = now - timedelta(seconds=max_wait_seconds)
    stmt = (
        select(Study)
        .where(
            Study.state == StudyState.RECEIVING,
            or_(Study.last_received_at <= quiet_cutoff, Study.batch_started_at <= wait_cutoff),
        )
        .order_by(Study.id)
        .with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)
    )

    def run(session: Session) -> list[int]:
        studies = session.scalars(stmt).all()
        return _queue_studies(session, studies, now, kind=kind, max_attempts=max_attempts)

    return _in_transaction(target, run)


def promote_studies_now(
    target: Session | sessionmaker[Session],
    study_uids: Collection[str],
    now: datetime,
    *,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    kind: str = ANALYSE,
) -> list[int]:
    """Queue the given studies at once if they are ``receiving`` (their association was
    released). Studies locked by a concurrent writer are skipped: the quiet timer of
    :func:`promote_ready_studies` picks them up. Commits only when given a ``sessionmaker``."""
    uids = sorted(set(study_uids))

    def run(session: Session) -> list[int]:
        job_ids: list[int] = []
        for start in range(0, len(uids), _IN_CHUNK):
            studies = session.scalars(
                select(Study)
                .where(
                    Study.study_instance_uid.in_(uids[start : start + _IN_CHUNK]),
                    Study.state == StudyState.RECEIVING,
                )
                .order_by(Study.id)
                .with_for_update(skip_locked=True)
                .execution_options(populate_existing=True)
            ).all()
            job_ids += _queue_studies(session, studies, now, kind=kind, max_attempts=max_attempts)
        return job_ids

    if not uids:
        return []
    return _in_transaction(target, run)


def _in_transaction(
    target: Session | sessionmaker[Session], work: Callable[[Session], list[int]]
) -> list[int]:
    if isinstance(target, Session):
        return work(target)
    with target.begin() as session:
        return work(session)


def _queue_studies(
    session: Session, studies: Sequence[Study], now: datetime, *, kind: str, max_attempts: int
) -> list[int]:
    if max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    job_ids: list[int] = []
    for study in studies:
        if study.state != StudyState.RECEIVING:  # re-checked under the row lock
            continue
        job_id = queue.defer(
            session,
            queue=QUEUE,
            task=kind,
            now=now,
            max_attempts=max_attempts,
            ref_id=study.id,
            study_id=study.id,
            lock=study_lock(study.id),
            queueing_lock=f"{kind}:{study.id}",
        )
        study.state = StudyState.QUEUED.value
        study.batch_started_at = None
        study.updated_at = now
        logger.info("study queued for analysis", extra={"study_id": study.id, "job_id": job_id})
        job_ids.append(job_id)
    session.flush()
    return job_ids


def study_lock(study_id: int) -> str:
    """The queue lock of a study: one job working on it at a time."""
    return f"study:{study_id}"


# -- claiming and finishing (own transaction) --------------------------------------------------


def claim_job(
    sm: sessionmaker[Session],
    worker_id: str,
    now: datetime,
    lease_seconds: float,
    *,
    kinds: Collection[str] | None = None,
) -> ClaimedJob | None:
    """Claim the most urgent due analysis job and commit; None if nothing is due.

    The job becomes ``running`` (``attempts`` + 1, ``worker_id``, a lease of
    ``lease_seconds``) and its study ``processing``. A job whose study already has a running
    job waits (the study's queue lock), so one study is analysed by one worker at a time.
    """

    def mark_processing(session: Session, job: Job) -> None:
        # Every instance committed so far will be seen by this job, so even a study that was
        # ``receiving`` again (late image, retry waiting) is now ``processing``; a later image
        # sets it back to ``receiving``.
        study = _lock_study(session, _study_of(job))
        study.state = StudyState.PROCESSING.value
        study.batch_started_at = None
        study.updated_at = now

    task = queue.claim(
        sm, worker_id, now, lease_seconds, queues=(QUEUE,), tasks=kinds, on_claim=mark_processing
    )
    if task is None:
        return None
    with sm() as session:
        uid = session.scalar(select(Study.study_instance_uid).where(Study.id == task.study_id))
    if uid is None:  # pragma: no cover - the foreign key cascades
        raise JobNotFoundError(f"job {task.job_id} refers to a missing study")
    claimed = ClaimedJob(
        job_id=task.job_id,
        study_id=_required(task.study_id),
        study_instance_uid=uid,
        kind=task.task,
        attempts=task.attempts,
        worker_id=worker_id,
    )
    logger.info(
        "job claimed",
        extra={"job_id": claimed.job_id, "study_id": claimed.study_id, "attempt": claimed.attempts},
    )
    return claimed


#: extend a running job's lease (:func:`storage.queue.renew`): False when it was lost
renew_lease = queue.renew
#: in the caller's transaction: whether the worker still holds the job
#: (:func:`storage.queue.holds`); a worker that lost its job must not commit results for it
holds_job = queue.holds


def complete_job(
    sm: sessionmaker[Session], job_id: int, now: datetime, *, worker_id: str | None = None
) -> bool:
    """Mark a running job ``done`` and commit; its study becomes ``analysed`` unless a late
    instance set it back to ``receiving`` (or another job of it is queued/running).

    Returns False and changes nothing if the job is no longer running (its lease expired and
    it was requeued) or, when ``worker_id`` is given, is now held by another worker.
    """
    with sm.begin() as session:
        done = queue.finish(session, job_id, now, worker_id=worker_id)
    if done:
        logger.info("job done", extra={"job_id": job_id})
    return done


def fail_job(
    sm: sessionmaker[Session],
    job_id: int,
    now: datetime,
    error: str,
    base_delay_seconds: float = 10,
    max_delay_seconds: float = 600,
    *,
    worker_id: str | None = None,
) -> Literal["retry", "dead", "stale"]:
    """Record a failed attempt and commit.

    With attempts left the job is queued again at ``now + min(max, base * 2**(attempts-1))``
    times a jitter factor in [0.8, 1.2] and ``"retry"`` is returned. When ``attempts >=
    max_attempts`` it becomes ``dead`` (a dead letter, see :func:`retry_dead`), its study
    ``failed``, and ``"dead"`` is returned. ``"stale"``: the job was no longer running (or
    not ours); nothing changed. ``error`` is stored redacted (:func:`storage.redact.redact`:
    no quoted values, UIDs hashed) and truncated to 2000 characters.
    """
    with sm.begin() as session:
        attempts = session.scalar(select(Job.attempts).where(Job.id == job_id))
        if attempts is None:
            raise JobNotFoundError(f"no job with id {job_id}")
        delay = min(max_delay_seconds, base_delay_seconds * 2 ** (max(attempts, 1) - 1))
        retry_at = now + timedelta(seconds=delay * random.uniform(0.8, 1.2))
        outcome = queue.fail(session, job_id, now, error, worker_id=worker_id, retry_at=retry_at)
    if outcome != "stale":
        logger.warning(
            "job failed", extra={"job_id": job_id, "attempts": attempts, "outcome": outcome}
        )
    return outcome


def requeue_expired(sm: sessionmaker[Session], now: datetime) -> int:
    """Recover ``running`` analysis jobs whose lease expired before ``now`` (their worker
    died): queued for an immediate retry, ahead of new work; a job that has used all its
    attempts (e.g. one that keeps crashing the worker) becomes ``dead`` instead. Returns the
    number of expired jobs handled. Commits."""
    return queue.requeue_expired(sm, now, queues=(QUEUE,))


def release_job(sm: sessionmaker[Session], job_id: int, now: datetime) -> bool:
    """Give a ``running`` job back (its worker's process is known to be gone) without waiting
    for the lease to expire; same rules as :func:`requeue_expired`. Returns False if it was
    not running. Commits."""
    return queue.release(sm, job_id, now)


def retry_dead(sm: sessionmaker[Session], job_id: int | None, now: datetime) -> int:
    """Queue dead analysis jobs again (one by id, or all when ``job_id`` is None) with fresh
    attempts; their ``failed`` studies become ``queued``. Returns how many were requeued.
    Commits."""
    with sm.begin() as session:
        stmt = select(Job).where(Job.state == JobState.DEAD, Job.queue == QUEUE)
        if job_id is not None:
            if session.get(Job, job_id) is None:
                raise JobNotFoundError(f"no job with id {job_id}")
            stmt = stmt.where(Job.id == job_id)
        jobs = session.scalars(
            stmt.order_by(Job.id).with_for_update().execution_options(populate_existing=True)
        ).all()
        for job in jobs:
            queue.revive(session, job, now)
        count = len(jobs)
    return count


def list_jobs(
    sm: sessionmaker[Session], state: str | None = None, *, limit: int = 1000, offset: int = 0
) -> list[JobRow]:
    """Jobs (optionally only those in ``state``), oldest first; ``limit``/``offset`` select a
    page (in SQL)."""
    stmt = (
        select(Job, Study.study_instance_uid)
        .join(Study, Study.id == Job.study_id)
        .where(Job.queue == QUEUE)
    )
    if state is not None:
        stmt = stmt.where(Job.state == state)
    with sm() as session:
        rows = session.execute(stmt.order_by(Job.id).limit(limit).offset(offset)).all()
        return [
            from_attributes(
                JobRow,
                job,
                job_id=job.id,
                study_id=_required(job.study_id),
                study_instance_uid=uid,
            )
            for job, uid in rows
        ]


# -- helpers -------------------------------------------------------------------------------


def _required(study_id: int | None) -> int:
    if study_id is None:  # pragma: no cover - analysis jobs always have a study
        raise JobNotFoundError("analysis job without a study")
    return study_id


def _study_of(job: Job) -> int:
    return _required(job.study_id)


def _lock_study(session: Session, study_id: int) -> Study:
    study = session.get(Study, study_id, with_for_update=True, populate_existing=True)
    if study is None:  # pragma: no cover - guarded by the foreign key
        raise JobNotFoundError(f"job refers to a missing study {study_id}")
    return study


def _settle_study(session: Session, job: Job, now: datetime) -> None:
    """Derive the study's state after ``job`` left ``running``, was cancelled or revived.

    A revived job's ``failed``/``analysed`` study is ``queued`` again. Otherwise only a
    ``processing`` (or, for a cancelled job, ``queued``) study changes: ``receiving`` (late
    image) and ``queued`` (a newer job waits) are left alone.
    """
    study = _lock_study(session, _study_of(job))
    if job.state == JobState.QUEUED and study.state in (StudyState.FAILED, StudyState.ANALYSED):
        study.state = StudyState.QUEUED.value
        study.updated_at = now
        return
    settling = {StudyState.PROCESSING.value}
    if job.state == JobState.CANCELLED:
        settling.add(StudyState.QUEUED.value)
    if study.state not in settling:
        return
    states = set(
        session.scalars(
            select(Job.state).where(
                Job.study_id == study.id,
                Job.queue == QUEUE,
                Job.state.in_([JobState.QUEUED, JobState.RUNNING]),
            )
        ).all()
    )
    if JobState.RUNNING in states:
        study.state = StudyState.PROCESSING.value
    elif JobState.QUEUED in states:
        study.state = StudyState.QUEUED.value
    elif job.state == JobState.DONE:
        study.state = StudyState.ANALYSED.value
    else:
        study.state = StudyState.FAILED.value
    study.updated_at = now


queue.on_settle(ANALYSE, _settle_study)
