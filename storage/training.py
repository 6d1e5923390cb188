"""Retraining state: runs (requested once per slot, run as jobs of the ``retrain`` queue),
reviewed examples, and the site's locked validation set.

A run is *requested* (:func:`request_run`) by inserting a ``queued`` ``training_runs`` row and,
in the same transaction, a job of the ``retrain`` queue (:mod:`storage.queue`) that names it
(``ref_id``). The run's ``slot`` is unique (a scheduled firing's slot is its fire time), so two
schedulers firing together queue it once. All retraining jobs share the queue lock
``retrain``: one runs at a time (and a partial unique index allows one ``running`` row).

A worker claims the job (:func:`start_run`; the run becomes ``running`` in the claiming
transaction), keeps its lease while it trains (the lease is the run's heartbeat), and records
the outcome together with the job's completion (:func:`finish_run`). A worker that lost its
job (its lease expired and the job was taken up again or dead-lettered) cannot record an
outcome (:class:`~storage.errors.JobLostError`). Whatever else happens to the job (a lost
worker, cancellation, revival) the settler registered here keeps the run in step with it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from storage import audit, queue
from storage.errors import JobLostError, NotFoundError, StorageError
from storage.model_versions import ModelVersionRow, register_version
from storage.redact import redact
from storage.rows import from_attributes
from storage.schema import (
    Instance,
    Job,
    JobState,
    Override,
    RunState,
    Series,
    TrainingRun,
    ValidationCase,
    utcnow,
)

__all__ = [
    "LOCK",
    "QUEUE",
    "TASK",
    "ClaimedRun",
    "ReviewedExample",
    "RunRow",
    "ValidationCaseRow",
    "add_validation_cases",
    "finish_run",
    "get_run",
    "holds_run",
    "last_finished_run",
    "list_runs",
    "request_run",
    "requeue_expired",
    "reviewed_examples",
    "reviews_since",
    "running_run",
    "start_run",
    "validation_cases",
]

logger = logging.getLogger(__name__)
MAX_ERROR = 4000
#: the queue, task and queue lock of retraining runs (:mod:`storage.queue`)
QUEUE = "retrain"
TASK = "retrain"
LOCK = "retrain"
CANCELLED_ERROR = "cancelled before it ran"
NOT_WAITING_ERROR = "its training run was not waiting to run"
_FINAL_STATES = frozenset({RunState.SUCCEEDED.value, RunState.SKIPPED.value, RunState.FAILED.value})
_OUTCOMES = _FINAL_STATES
_RUN_OUTCOME = {
    RunState.SUCCEEDED: audit.Action.RETRAIN_SUCCEEDED,
    RunState.SKIPPED: audit.Action.RETRAIN_SKIPPED,
    RunState.FAILED: audit.Action.RETRAIN_FAILED,
}


@dataclass(frozen=True)
class RunRow:
    id: int
    slot: str
    trigger: str
    state: str
    #: the worker running it (empty while queued)
    worker: str
    #: when it was requested, then when a worker started it
    started_at: datetime
    finished_at: datetime | None
    new_reviews: int
    candidate_version: str | None
    verdict: str | None
    report_path: str | None
    error: str | None
    detail: dict[str, Any]
    #: its job of the ``retrain`` queue (None for runs from before the queue)
    job_id: int | None = None


@dataclass(frozen=True)
class ClaimedRun:
    """A run a worker started and holds until its job's lease expires."""

    run: RunRow
    job_id: int
    worker_id: str
    #: the job's attempt (1 for the first)
    attempts: int
    max_attempts: int
    lease_expires_at: datetime


@dataclass(frozen=True)
class ReviewedExample:
    """One reviewed source image with the radiologist's label (the study's newest review).

    ``label``: ``{"fracture": "present"|"absent", "count": "0"|"1"|"2+", "body_part": str,
    "hardware": bool}``. ``agree``: the radiologist confirmed the AI (a confirmed label).
    """

    override_id: int
    study_id: int
    instance_id: int
    sop_instance_uid: str
    spool_path: str
    label: dict[str, Any]
    agree: bool | None
    reviewed_at: datetime
    user_name: str


@dataclass(frozen=True)
class ValidationCaseRow:
    id: int
    source: str
    key: str
    study_id: int | None
    patient_group: str
    label: dict[str, Any]
    added_at: datetime
    added_by: str


def _run_row(r: TrainingRun) -> RunRow:
    return from_attributes(RunRow, r, detail=dict(r.detail))


# -- requesting (caller's session, or own transaction) -----------------------------------------


def request_run(
    target: Session | sessionmaker[Session],
    *,
    slot: str,
    trigger: str,
    now: datetime,
    max_attempts: int = 1,
    unless_waiting: bool = False,
) -> RunRow | None:
    """Queue a run for ``slot``: a ``queued`` run and its job of the ``retrain`` queue, in one
    transaction. None (nothing added) if ``slot`` was requested already, whatever became of
    that run: two schedulers firing for the same time queue one run. With ``unless_waiting``
    also None when a run is queued already (a schedule's firings coalesce: a firing while a
    run trains queues one run after it, not one per firing). Commits only when given a
    ``sessionmaker``.

    ``max_attempts`` 1 (the default): a run whose worker is lost fails; more: it is queued
    again (see :func:`storage.queue.requeue_expired`)."""

    def work(session: Session) -> RunRow | None:
        if unless_waiting and _waiting_run(session) is not None:
            logger.info("a retraining run is queued already: %s coalesced into it", slot)
            return None
        return _request(session, slot=slot, trigger=trigger, now=now, max_attempts=max_attempts)

    if isinstance(target, Session):
        return work(target)
    with target.begin() as session:
        return work(session)


def _waiting_run(session: Session) -> int | None:
    return session.scalar(
        select(TrainingRun.id).where(TrainingRun.state == RunState.QUEUED.value).limit(1)
    )


def _request(
    session: Session, *, slot: str, trigger: str, now: datetime, max_attempts: int
) -> RunRow | None:
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        insert: Any = postgresql.insert(TrainingRun)
    elif dialect == "sqlite":
        insert = sqlite.insert(TrainingRun)
    else:  # pragma: no cover - storage.db refuses other databases
        raise StorageError(f"unsupported database dialect {dialect!r}")
    stmt = (
        insert.values(
            slot=slot[:64],
            trigger=trigger[:16],
            state=RunState.QUEUED.value,
            worker="",
            started_at=now,
            new_reviews=0,
            detail={},
        )
        .on_conflict_do_nothing(index_elements=["slot"])
        .returning(TrainingRun.id)
    )
    run_id = session.execute(stmt).scalar_one_or_none()
    if run_id is None:
        logger.info("retraining slot %s was requested already", slot)
        return None
    job_id = queue.defer(
        session,
        queue=QUEUE,
        task=TASK,
        now=now,
        max_attempts=max_attempts,
        ref_id=int(run_id),
        lock=LOCK,
    )
    run = session.get(TrainingRun, int(run_id))
    if run is None:  # pragma: no cover - inserted above
        raise NotFoundError(f"no training run {run_id}")
    run.job_id = job_id
    session.flush()
    logger.info("retraining run %d queued (%s)", run.id, trigger, extra={"run_id": run.id})
    return _run_row(run)


# -- running (own transactions) ----------------------------------------------------------------


def start_run(
    sm: sessionmaker[Session],
    worker_id: str,
    now: datetime,
    lease_seconds: float,
    *,
    job_id: int | None = None,
) -> ClaimedRun | None:
    """Claim the oldest queued run (the run of ``job_id`` only, if given) and commit: its job
    is ``running`` under ``worker_id`` with a lease of ``lease_seconds``, and the run is
    ``running`` with ``worker`` and ``started_at``, in the same transaction. None if nothing
    is due, a run is going already (the ``retrain`` lock), or the job's run was not waiting
    (that job is dead-lettered)."""
    task = queue.claim(
        sm,
        worker_id,
        now,
        lease_seconds,
        queues=(QUEUE,),
        tasks=(TASK,),
        job_ids=None if job_id is None else (job_id,),
        on_claim=_mark_running,
    )
    if task is None:
        return None
    with sm() as session:
        run = None if task.ref_id is None else session.get(TrainingRun, task.ref_id)
        row = None if run is None else _run_row(run)
    if row is None or row.state != RunState.RUNNING.value or row.job_id != task.job_id:
        # nothing to run: a run deleted, or one that finished before its job was revived
        with sm.begin() as session:
            queue.fail(
                session, task.job_id, now, NOT_WAITING_ERROR, worker_id=worker_id, retry_at=None
            )
        logger.error("retraining job %d had no run waiting: dead-lettered", task.job_id)
        return None
    logger.info(
        "retraining run %d started (attempt %d)",
        row.id,
        task.attempts,
        extra={"run_id": row.id, "job_id": task.job_id},
    )
    return from_attributes(ClaimedRun, task, run=row)


def _mark_running(session: Session, job: Job) -> None:
    """``on_claim``: the job's run starts (claim set the job's worker and time already)."""
    run = _lock_run(session, job)
    if run is None or run.state != RunState.QUEUED.value:
        return  # start_run dead-letters the job
    run.state = RunState.RUNNING.value
    run.worker = (job.worker_id or "")[:128]
    run.started_at = job.updated_at
    run.finished_at = None
    run.error = None
    session.flush()


def holds_run(session: Session, claim: ClaimedRun) -> bool:
    """In the caller's transaction, with the job's row locked: whether the claimer still
    holds the run's job (results may be committed only while it does)."""
    return queue.holds(session, claim.job_id, claim.worker_id)


def ensure_holds_run(sm: sessionmaker[Session], claim: ClaimedRun, doing: str) -> None:
    """Raise :class:`JobLostError` ("lost its job <doing>") unless the claimer still holds
    the run's job (e.g. one claimed long ago by a process that stalled)."""
    with sm.begin() as session:
        if not holds_run(session, claim):
            raise JobLostError(f"lost its job {doing}")


def register_candidate(
    sm: sessionmaker[Session], claim: ClaimedRun, **version: Any
) -> ModelVersionRow:
    """Register the run's trained bundle (``version``: the keywords of
    :func:`storage.model_versions.register_version`) in one transaction with the check that
    the claimer still holds the run's job; :class:`JobLostError` (nothing registered) if not:
    the bundle then stays unregistered and the next run removes it."""
    with sm.begin() as session:
        if not holds_run(session, claim):
            raise JobLostError(
                f"lost its job while training; candidate {version.get('version')} not registered"
            )
        return register_version(session, run_id=claim.run.id, **version)


def requeue_expired(sm: sessionmaker[Session], now: datetime) -> int:
    """Take up the runs whose worker stopped (their job's lease expired before ``now``):
    queued again with attempts left, ``failed`` otherwise. Commits; returns how many."""
    return queue.requeue_expired(sm, now, queues=(QUEUE,))


def finish_run(
    target: Session | sessionmaker[Session],
    run_id: int,
    *,
    worker_id: str,
    state: str,
    now: datetime,
    new_reviews: int | None = None,
    candidate_version: str | None = None,
    verdict: str | None = None,
    report_path: str | None = None,
    error: str | None = None,
    detail: dict[str, Any] | None = None,
) -> RunRow:
    """Record a running run's outcome (``succeeded``, ``skipped`` or ``failed``) and, in the
    same transaction, its job's: done, or dead for a failed run (not retried). Commits only
    when given a ``sessionmaker``.

    Raises :class:`~storage.errors.JobLostError`, recording nothing, when ``worker_id`` no
    longer holds the run's job (its lease expired and it was queued again, dead-lettered or
    claimed by another worker)."""
    if state not in _OUTCOMES:
        raise StorageError(f"a run cannot finish as {state!r}")

    def work(session: Session) -> RunRow:
        job_id = session.scalar(select(TrainingRun.job_id).where(TrainingRun.id == run_id))
        if job_id is None:
            if session.get(TrainingRun, run_id) is None:
                raise NotFoundError(f"no training run {run_id}")
            raise JobLostError(f"training run {run_id} has no job: it cannot be finished")
        # lock order: the job's row, then the run's (as the queue and its settler do)
        if not queue.holds(session, job_id, worker_id):
            logger.warning(
                "retraining run %d: finished after its job was lost; outcome not recorded",
                run_id,
                extra={"run_id": run_id, "job_id": job_id},
            )
            raise JobLostError(
                f"training run {run_id}: this worker no longer holds its job {job_id} (its "
                "lease expired); the outcome was not recorded"
            )
        run = session.get(TrainingRun, run_id, with_for_update=True, populate_existing=True)
        if run is None:  # pragma: no cover - read above
            raise NotFoundError(f"no training run {run_id}")
        run.state = state
        run.finished_at = now
        if new_reviews is not None:
            run.new_reviews = new_reviews
        run.candidate_version = candidate_version
        run.verdict = verdict
        run.report_path = report_path
        run.error = None if error is None else redact(error)[:MAX_ERROR]
        if detail is not None:
            run.detail = dict(detail)
        session.flush()  # the settler, called by the queue below, sees the outcome
        if state == RunState.FAILED.value:
            queue.fail(
                session, job_id, now, error or "the run failed", worker_id=worker_id, retry_at=None
            )
        else:
            queue.finish(session, job_id, now, worker_id=worker_id)
        audit.append(
            session,
            actor=run.worker,
            action=_RUN_OUTCOME[RunState(state)],
            object_type="training_run",
            object_id=str(run_id),
            detail={"candidate": candidate_version, "verdict": verdict, "trigger": run.trigger},
        )
        return _run_row(run)

    if isinstance(target, Session):
        return work(target)
    with target.begin() as session:
        return work(session)


def _lock_run(session: Session, job: Job) -> TrainingRun | None:
    if job.ref_id is None:
        return None
    run = session.get(TrainingRun, job.ref_id, with_for_update=True, populate_existing=True)
    if run is None or run.job_id != job.id:
        return None
    return run


def _settle_run(session: Session, job: Job, now: datetime) -> None:
    """Keep a run in step with its job when the job left ``running`` or was revived.

    Queued again (its worker was lost with attempts left, or an operator revived it): the run
    is ``queued``. Dead (a lost worker's last attempt) or done without an outcome: ``failed``
    with the job's error. Cancelled: ``failed``. A run whose outcome :func:`finish_run`
    recorded already is left as it is."""
    run = _lock_run(session, job)
    if run is None:
        return
    if job.state == JobState.QUEUED:
        if run.state != RunState.QUEUED.value:
            logger.warning(
                "retraining run %d queued again (%s)",
                run.id,
                job.last_error or "revived",
                extra={"run_id": run.id, "job_id": job.id},
            )
        run.state = RunState.QUEUED.value
        run.worker = ""
        run.finished_at = None
        run.error = None
        return
    if run.state in _FINAL_STATES:
        return
    if job.state == JobState.CANCELLED:
        reason = CANCELLED_ERROR
    elif job.state == JobState.DEAD:
        reason = job.last_error or "its job was dead-lettered"
    else:
        reason = "its job ended without recording an outcome"
    run.state = RunState.FAILED.value
    run.finished_at = now
    run.error = redact(reason)[:MAX_ERROR]
    logger.warning("retraining run %d failed: %s", run.id, run.error, extra={"run_id": run.id})


queue.on_settle(TASK, _settle_run)


# -- reading -----------------------------------------------------------------------------------


def running_run(sm: sessionmaker[Session]) -> RunRow | None:
    """The run going now, if any."""
    with sm() as session:
        r = session.scalar(
            select(TrainingRun).where(TrainingRun.state == RunState.RUNNING.value).limit(1)
        )
        return None if r is None else _run_row(r)


def list_runs(sm: sessionmaker[Session], limit: int = 50) -> list[RunRow]:
    with sm() as session:
        rows = session.scalars(select(TrainingRun).order_by(TrainingRun.id.desc()).limit(limit))
        return [_run_row(r) for r in rows]


def get_run(sm: sessionmaker[Session], run_id: int) -> RunRow | None:
    with sm() as session:
        r = session.get(TrainingRun, run_id)
        return None if r is None else _run_row(r)


def last_finished_run(sm: sessionmaker[Session]) -> RunRow | None:
    """The newest run that trained a candidate (``succeeded``)."""
    with sm() as session:
        r = session.scalar(
            select(TrainingRun)
            .where(TrainingRun.state == RunState.SUCCEEDED.value)
            .order_by(TrainingRun.id.desc())
            .limit(1)
        )
        return None if r is None else _run_row(r)


# -- reviews as training data ------------------------------------------------------------------


def reviews_since(sm: sessionmaker[Session], since: datetime | None) -> int:
    """Reviews (override rows) created after ``since`` (all when None)."""
    with sm() as session:
        query = select(func.count(Override.id))
        if since is not None:
            query = query.where(Override.created_at > since)
        return int(session.scalar(query) or 0)


def reviewed_examples(sm: sessionmaker[Session]) -> list[ReviewedExample]:
    """Every source image of every reviewed study, with the study's newest review's label.

    Images whose analysis did not analyse them are included too (the label is the study's);
    the training code skips what it cannot prepare.
    """
    with sm() as session:
        latest: dict[int, Override] = {}
        for o in session.scalars(select(Override).order_by(Override.id)):
            latest[o.study_id] = o
        if not latest:
            return []
        rows = session.execute(
            select(Instance)
            .join(Series, Series.id == Instance.series_id)
            .where(Instance.study_id.in_(list(latest)))
            .order_by(Instance.study_id, Series.id, Instance.id)
        ).scalars()
        return [
            ReviewedExample(
                override_id=latest[i.study_id].id,
                study_id=i.study_id,
                instance_id=i.id,
                sop_instance_uid=i.sop_instance_uid,
                spool_path=i.spool_path,
                label=dict(latest[i.study_id].radiologist_label),
                agree=latest[i.study_id].agree,
                reviewed_at=latest[i.study_id].created_at,
                user_name=latest[i.study_id].user_name,
            )
            for i in rows
        ]


# -- the locked validation set -----------------------------------------------------------------


def _case_row(c: ValidationCase) -> ValidationCaseRow:
    return ValidationCaseRow(
        c.id, c.source, c.key, c.study_id, c.patient_group, dict(c.label), c.added_at, c.added_by
    )


def validation_cases(
    sm: sessionmaker[Session], source: str | None = None
) -> list[ValidationCaseRow]:
    with sm() as session:
        query = select(ValidationCase).order_by(ValidationCase.id)
        if source is not None:
            query = query.where(ValidationCase.source == source)
        return [_case_row(c) for c in session.scalars(query)]


def add_validation_cases(
    sm: sessionmaker[Session],
    cases: Sequence[tuple[str, str, int | None, str, dict[str, Any]]],
    *,
    actor: str,
) -> int:
    """Add ``(source, key, study_id, patient_group, label)`` cases; existing keys are kept as
    they are (the set only grows, by an explicit command). Returns how many were added."""
    now = utcnow()
    added = 0
    with sm.begin() as session:
        existing = {(c.source, c.key) for c in session.scalars(select(ValidationCase))}
        for source, key, study_id, group, label in cases:
            if source not in ("base", "review"):
                raise StorageError(f"validation case source must be base or review, not {source!r}")
            if (source, key) in existing:
                continue
            existing.add((source, key))
            session.add(
                ValidationCase(
                    source=source,
                    key=key[:255],
                    study_id=study_id,
                    patient_group=group[:64],
                    label=dict(label),
                    added_at=now,
                    added_by=actor[:128],
                )
            )
            added += 1
        if added:
            audit.append(
                session,
                actor=actor,
                action=audit.Action.VALIDATION_SET_EXTENDED,
                object_type="validation_set",
                detail={"added": added},
            )
    return added
