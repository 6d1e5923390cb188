"""Spool retention: delete received instances' files (and the study's result files) oldest first.

What is kept
------------
Rows stay: a purged instance keeps its row with ``purged_at`` set (arrival statistics, the
study's analysis and its reviews are untouched); a purged result object keeps its row with
``file_path`` NULL. Only bytes are deleted.

Which studies are purged
------------------------
A study is *eligible* when all of these hold:

* its state is ``analysed`` (``receiving``/``queued``/``processing`` are in flight; ``failed``
  has a dead job an operator may retry) and every job of it is ``done``;
* it still has a file: an instance with ``purged_at`` NULL or a result with a ``file_path``;
* it is not in :func:`protected_study_ids`.

An eligible study is purged, oldest ``last_received_at`` first,

* when ``last_received_at`` is older than ``max_age`` (None: never by age), or
* while the spool's filesystem is under disk pressure: from the moment free space is below
  ``min_free_bytes`` until it is back at the target, ``max(min_free_bytes,
  target_free_percent % of the filesystem)``; then by age only again.

Protected (never purged, whatever the age or the disk): studies with a delivery ``pending`` or
``dead`` (of any of their result objects), studies awaiting review (newest analysis with a
decision says ``present`` or ``indeterminate`` and no override exists), reviewed studies (any
override: training examples), studies holding a case of the locked validation set — see
:func:`protected_study_ids`.

Where the bytes are deleted: in the byte store (:mod:`storage.bytestore`), the spool itself or
an S3-compatible object store. Disk pressure is measured on the local spool's filesystem, as
ever; with an object store the spool holds only temporary files and deleting objects frees
nothing there, so disk pressure purges nothing (it is logged) and studies are purged by age
only (``bytes_freed`` then counts the deleted objects' sizes).

Each batch is one transaction: the studies are locked, checked again, their files deleted,
their rows marked and an audit event with counts only (``retention.purged``) is written. A
crash after deleting files but before the commit leaves rows that name missing files; the next
run finds the studies again, deletes nothing more and marks them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, exists, or_, select, update
from sqlalchemy.orm import InstrumentedAttribute, Session, sessionmaker

from storage import audit
from storage.bytestore import ByteStore, ByteStoreNotFoundError, InvalidKeyError, LocalByteStore
from storage.schema import (
    Delivery,
    DeliveryState,
    Instance,
    Job,
    JobState,
    Override,
    Result,
    Study,
    StudyState,
    ValidationCase,
)
from storage.spool import DiskUsage, Spool

__all__ = [
    "AUDIT_ACTION",
    "RetentionPolicy",
    "RetentionReport",
    "protected_study_ids",
    "purge_target_bytes",
    "run_retention",
]

logger = logging.getLogger(__name__)

AUDIT_ACTION = audit.Action.RETENTION_PURGED
ANALYSIS = "analysis"
#: AI decisions that put a study on the radiologists' worklist until someone reviews it
AWAITING_REVIEW = frozenset({"present", "indeterminate"})
MIB = 1024 * 1024


@dataclass(frozen=True)
class RetentionPolicy:
    """When files go (built by ``xrayd`` from ``[retention]``)."""

    #: purge eligible studies whose newest instance is older than this; None: never by age
    max_age: timedelta | None = timedelta(days=30)
    #: disk pressure starts below this many free bytes (0: never purge for space)
    min_free_bytes: int = 0
    #: under pressure, purge until this share of the filesystem is free (and min_free_bytes)
    target_free_percent: float = 0.0
    #: studies per transaction (and per audit event)
    batch_size: int = 50

    def __post_init__(self) -> None:
        if self.max_age is not None and self.max_age <= timedelta(0):
            raise ValueError("max_age must be positive (None keeps files forever)")
        if self.min_free_bytes < 0 or not 0 <= self.target_free_percent < 100:
            raise ValueError("min_free_bytes must be >= 0 and target_free_percent in [0, 100)")
        if self.batch_size < 1:
            raise ValueError("batch_size must be at least 1")


@dataclass
class RetentionReport:
    """What one run did (counts only)."""

    studies: int = 0
    by_age: int = 0
    by_pressure: int = 0
    instance_files: int = 0
    result_files: int = 0
    bytes_freed: int = 0
    free_before: int | None = None
    free_after: int | None = None
    target_free: int | None = None
    batches: list[dict[str, int | str]] = field(default_factory=list)


def purge_target_bytes(policy: RetentionPolicy, usage: DiskUsage) -> int:
    """Free bytes a purge under disk pressure aims for."""
    by_share = int(usage.total_bytes * policy.target_free_percent / 100)
    return max(policy.min_free_bytes, by_share)


# -- protection -----------------------------------------------------------------------------


def protected_study_ids(session: Session, candidates: Collection[int]) -> set[int]:
    """The studies among ``candidates`` whose files must never be deleted.

    * a delivery of one of its result objects is ``pending`` or ``dead``;
    * it awaits review: its newest analysis with a decision says ``present`` or
      ``indeterminate`` (and nobody reviewed it: reviewed studies are protected anyway);
    * it was reviewed (an override exists): reviewed studies are training examples;
    * it holds a case of the locked validation set (models are compared on those images, so
      they must stay even if the review that put them there were ever removed).

    Retention asks it once per batch and again, under lock, right before deleting.
    """
    ids = sorted(set(candidates))
    if not ids:
        return set()
    protected: set[int] = set()
    protected.update(
        session.scalars(
            select(Result.study_id)
            .join(Delivery, Delivery.result_id == Result.id)
            .where(
                Result.study_id.in_(ids),
                Delivery.state.in_([DeliveryState.PENDING.value, DeliveryState.DEAD.value]),
            )
            .distinct()
        )
    )
    protected.update(
        session.scalars(select(Override.study_id).where(Override.study_id.in_(ids)).distinct())
    )
    protected.update(
        session.scalars(
            select(ValidationCase.study_id).where(ValidationCase.study_id.in_(ids)).distinct()
        )
    )
    latest: dict[int, object] = {}
    for study_id, detail in session.execute(
        select(Result.study_id, Result.detail)
        .where(Result.study_id.in_(ids), Result.kind == ANALYSIS)
        .order_by(Result.id)
    ):
        decision = (detail or {}).get("decision")
        if decision is not None:
            latest[study_id] = decision
    protected.update(s for s, d in latest.items() if d in AWAITING_REVIEW)
    return protected


# -- selection ------------------------------------------------------------------------------


def _has_files(study_id: ColumnElement[int] | InstrumentedAttribute[int]) -> ColumnElement[bool]:
    return or_(
        exists().where(Instance.study_id == study_id, Instance.purged_at.is_(None)),
        exists().where(Result.study_id == study_id, Result.file_path.is_not(None)),
    )


def _eligible_clause() -> ColumnElement[bool]:
    return and_(
        Study.state == StudyState.ANALYSED.value,
        ~exists().where(Job.study_id == Study.id, Job.state != JobState.DONE.value),
        _has_files(Study.id),
    )


def _candidates(sm: sessionmaker[Session], batch_size: int) -> Iterator[list[tuple[int, datetime]]]:
    """Eligible-looking studies, oldest first, in pages (keyset: past the last one seen)."""
    cursor: tuple[datetime, int] | None = None
    while True:
        query = select(Study.id, Study.last_received_at).where(_eligible_clause())
        if cursor is not None:
            at, sid = cursor
            query = query.where(
                or_(
                    Study.last_received_at > at,
                    and_(Study.last_received_at == at, Study.id > sid),
                )
            )
        with sm() as session:
            rows = [
                (int(r[0]), r[1])
                for r in session.execute(
                    query.order_by(Study.last_received_at, Study.id).limit(batch_size)
                )
            ]
        if not rows:
            return
        yield rows
        cursor = (rows[-1][1], rows[-1][0])


# -- purging --------------------------------------------------------------------------------


def _purge_locked(
    session: Session, store: ByteStore, study_ids: list[int], now: datetime
) -> tuple[list[int], int, int, int]:
    """Purge ``study_ids`` in the caller's transaction after checking them again under lock;
    returns (purged ids, instance files, result files, bytes freed)."""
    locked = list(
        session.scalars(
            select(Study.id).where(Study.id.in_(study_ids), _eligible_clause()).with_for_update()
        )
    )
    keep = protected_study_ids(session, locked)
    purge = sorted(s for s in locked if s not in keep)
    if not purge:
        return [], 0, 0, 0
    freed = instance_files = result_files = 0
    instances = session.execute(
        select(Instance.id, Instance.spool_path).where(
            Instance.study_id.in_(purge), Instance.purged_at.is_(None)
        )
    ).all()
    results = session.execute(
        select(Result.id, Result.file_path).where(
            Result.study_id.in_(purge), Result.file_path.is_not(None)
        )
    ).all()
    for _, spool_path in instances:
        freed += _remove(store, spool_path)
        instance_files += 1
    for _, file_path in results:
        freed += _remove(store, file_path)
        result_files += 1
    if instances:
        session.execute(
            update(Instance).where(Instance.id.in_([i for i, _ in instances])).values(purged_at=now)
        )
    if results:
        session.execute(
            update(Result).where(Result.id.in_([r for r, _ in results])).values(file_path=None)
        )
    return purge, instance_files, result_files, freed


def _remove(store: ByteStore, key: str | None) -> int:
    """Delete one object; the bytes freed (0 when it was already gone). A store that cannot be
    reached raises (:class:`~storage.bytestore.ByteStoreUnavailableError`): the batch's
    transaction is rolled back and the next run tries again."""
    if not key:
        return 0
    try:
        size = store.size(key)
    except ByteStoreNotFoundError:
        size = 0
    except InvalidKeyError:  # a path outside the spool: never follow it, just forget it
        logger.warning("retention: a row names a path outside the spool; not deleted")
        return 0
    store.delete(key)
    return size


def run_retention(
    sm: sessionmaker[Session],
    spool: Spool,
    policy: RetentionPolicy,
    now: datetime,
    *,
    disk: Callable[[], DiskUsage] | None = None,
    actor: str = "retention",
    store: ByteStore | None = None,
) -> RetentionReport:
    """Apply ``policy`` once (see the module docstring); returns what was deleted.

    ``disk`` measures the spool's filesystem (default :meth:`Spool.usage`); it is asked before
    the run and after each batch purged for disk pressure. ``store`` is where the bytes are
    deleted (default: the spool itself).
    """
    measure = disk or spool.usage
    objects: ByteStore = store or LocalByteStore(spool)
    report = RetentionReport()
    usage = measure()
    report.free_before = usage.free_bytes
    target = purge_target_bytes(policy, usage)
    report.target_free = target
    pressure = policy.min_free_bytes > 0 and usage.free_bytes < policy.min_free_bytes
    cutoff = None if policy.max_age is None else now - policy.max_age
    if pressure and not isinstance(objects, LocalByteStore):
        logger.warning(
            "spool below %d MiB free, but images and results are in %s: deleting them frees "
            "nothing here; purging by age only",
            policy.min_free_bytes // MIB,
            objects.describe(),
            extra={"free_bytes": usage.free_bytes},
        )
        pressure = False
    if pressure:
        logger.warning(
            "spool below %d MiB free: purging oldest studies until %d MiB are free",
            policy.min_free_bytes // MIB,
            target // MIB,
            extra={"free_bytes": usage.free_bytes, "target_bytes": target},
        )
    if cutoff is None and not pressure:
        report.free_after = usage.free_bytes
        return report
    for page in _candidates(sm, policy.batch_size):
        old = [sid for sid, at in page if cutoff is not None and at < cutoff]
        if old:
            _batch(sm, objects, old, now, "age", actor, report)
        if len(old) == len(page):
            continue
        if not pressure:
            break  # the rest is younger than the cutoff (oldest first)
        for sid, _ in page[len(old) :]:
            if measure().free_bytes >= target:
                pressure = False
                break
            _batch(sm, objects, [sid], now, "disk_pressure", actor, report)
        if not pressure:
            break
    report.free_after = measure().free_bytes
    if report.studies:
        logger.info(
            "retention purged %d stud(y/ies): %d instance file(s), %d result file(s), %d MiB",
            report.studies,
            report.instance_files,
            report.result_files,
            report.bytes_freed // MIB,
            extra={"studies": report.studies, "bytes_freed": report.bytes_freed},
        )
    return report


def _batch(
    sm: sessionmaker[Session],
    store: ByteStore,
    study_ids: list[int],
    now: datetime,
    reason: str,
    actor: str,
    report: RetentionReport,
) -> None:
    with sm.begin() as session:
        purged, n_inst, n_res, freed = _purge_locked(session, store, study_ids, now)
        if not purged:
            return
        counts: dict[str, int | str] = {
            "reason": reason,
            "studies": len(purged),
            "instance_files": n_inst,
            "result_files": n_res,
            "bytes_freed": freed,
        }
        audit.append(session, actor=actor, action=AUDIT_ACTION, object_type="spool", detail=counts)
    report.batches.append(counts)
    report.studies += len(purged)
    if reason == "age":
        report.by_age += len(purged)
    else:
        report.by_pressure += len(purged)
    report.instance_files += n_inst
    report.result_files += n_res
    report.bytes_freed += freed
