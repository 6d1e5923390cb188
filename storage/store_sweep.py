"""The sweep of unreferenced objects: bytes in the byte store that no row names.

A listener stores an instance's bytes first and commits its row second; a worker writes a result
object first and commits the analysis second. A process killed between the two leaves bytes
that nothing will ever read: a received image (patient data) or a result object. The sweep lists
``objects/`` and ``results/`` and deletes each object that

* was last written at least ``older_than`` ago (the grace period: an upload whose row is about
  to commit is seconds old, so at least an hour is required and a day is the default), and
* is named by no ``instances.spool_path``, no ``results.file_path`` and no conflicting copy
  the listener kept (``instance.conflict`` audit events' ``kept_copy``: the copy is kept by
  promise, see the conformance statement).

References are looked up a chunk of listed keys at a time (SQL ``IN``), so neither the listing
nor a table is ever held in memory. Each deletion is conditional on the object not having been
written again since the cut-off (:meth:`ByteStore.delete_if_older`): a retransmission of an
orphaned instance that lands while the sweep runs is not deleted under the new row.

An empty database (no instance) next to a store that holds objects is refused: the likeliest
cause is a wrong ``database_url``, and every object would look unreferenced.

Logs: counts at INFO; the keys (hashes, never identifiers) only at DEBUG.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import islice

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from storage.bytestore import ByteStore, StoredObject
from storage.errors import StorageError
from storage.schema import AuditEvent, Instance, Result
from storage.spool import OBJECTS_DIR

logger = logging.getLogger(__name__)

#: the prefixes swept: received instances and result objects
PREFIXES = (f"{OBJECTS_DIR}/", "results/")
#: the shortest grace period the sweep accepts, and the default one
MIN_GRACE = timedelta(hours=1)
DEFAULT_GRACE = timedelta(hours=24)
#: listed keys looked up per query (well below SQLite's and PostgreSQL's parameter limits)
CHUNK = 500
#: the audit event that names a conflicting copy the listener kept
CONFLICT_ACTION = "instance.conflict"


class SweepRefusedError(StorageError):
    """The sweep will not run: a grace period below :data:`MIN_GRACE`, or a database that holds
    no instance next to a store that holds objects."""


@dataclass
class SweepReport:
    """What one sweep found; bytes are the listing's sizes."""

    dry_run: bool
    cutoff: datetime
    examined: int = 0
    examined_bytes: int = 0
    #: written within the grace period: kept whatever references them
    recent: int = 0
    referenced: int = 0
    #: unreferenced and older than the grace period (deleted unless a dry run)
    unreferenced: int = 0
    unreferenced_bytes: int = 0
    deleted: int = 0
    deleted_bytes: int = 0
    #: unreferenced when looked up, but written again (or gone) before the deletion
    spared: int = 0
    by_prefix: dict[str, int] = field(default_factory=dict)


def sweep_unreferenced(
    sm: sessionmaker[Session],
    store: ByteStore,
    now: datetime,
    *,
    older_than: timedelta = DEFAULT_GRACE,
    dry_run: bool,
    chunk: int = CHUNK,
) -> SweepReport:
    """Delete (unless ``dry_run``) the objects no row references that were last written at
    least ``older_than`` before ``now``; returns the counts. ``chunk``: listed keys looked up
    per query. Store errors
    (:class:`~storage.bytestore.ByteStoreError`) end the sweep: what was deleted stays deleted,
    a rerun carries on."""
    if older_than < MIN_GRACE:
        raise SweepRefusedError(
            f"the grace period must be at least {_hours(MIN_GRACE)} h (got {_hours(older_than)} "
            "h): a younger object may be an upload whose row is about to be committed"
        )
    if now.tzinfo is None:
        raise ValueError("now must be an aware datetime")
    cutoff = now - older_than
    report = SweepReport(dry_run=dry_run, cutoff=cutoff)
    empty_database = not _any_instance(sm)
    for prefix in PREFIXES:
        before = report.examined
        for listed in _chunks(store.list_objects(prefix), chunk):
            report.examined += len(listed)
            report.examined_bytes += sum(o.size for o in listed)
            old = [o for o in listed if o.modified <= cutoff]
            report.recent += len(listed) - len(old)
            if not old:
                continue
            if empty_database:
                raise SweepRefusedError(
                    "the database holds no instance but the store holds objects: is "
                    "storage.database_url this site's database? Nothing was deleted."
                )
            named = _referenced(sm, [o.key for o in old])
            report.referenced += sum(1 for o in old if o.key in named)
            for obj in (o for o in old if o.key not in named):
                report.unreferenced += 1
                report.unreferenced_bytes += obj.size
                if not dry_run:
                    _delete(store, obj, cutoff, report)
        report.by_prefix[prefix] = report.examined - before
    logger.info(
        "store sweep%s: %d objects examined, %d referenced, %d within the grace period, "
        "%d unreferenced (%d bytes), %d deleted (%d bytes)",
        " (dry run)" if dry_run else "",
        report.examined,
        report.referenced,
        report.recent,
        report.unreferenced,
        report.unreferenced_bytes,
        report.deleted,
        report.deleted_bytes,
        extra={
            "examined": report.examined,
            "unreferenced": report.unreferenced,
            "deleted": report.deleted,
            "deleted_bytes": report.deleted_bytes,
            "dry_run": dry_run,
        },
    )
    return report


def _delete(store: ByteStore, obj: StoredObject, cutoff: datetime, report: SweepReport) -> None:
    freed = store.delete_if_older(obj.key, cutoff)
    if freed is None:
        report.spared += 1
        logger.debug("store sweep: %s was written again or is gone; kept", obj.key)
        return
    report.deleted += 1
    report.deleted_bytes += freed
    logger.debug("store sweep: deleted unreferenced %s (%d bytes)", obj.key, freed)


def referenced_keys(session: Session, keys: list[str]) -> set[str]:
    """Which of ``keys`` a row names: an instance, a result object, or a conflicting copy the
    listener kept. ``keys``: at most a chunk (one ``IN`` list each)."""
    if not keys:
        return set()
    found: set[str] = set()
    found.update(session.scalars(select(Instance.spool_path).where(Instance.spool_path.in_(keys))))
    found.update(
        k
        for k in session.scalars(select(Result.file_path).where(Result.file_path.in_(keys)))
        if k is not None
    )
    kept_copy = AuditEvent.detail["kept_copy"].as_string()
    found.update(
        k
        for k in session.scalars(
            select(kept_copy).where(AuditEvent.action == CONFLICT_ACTION, kept_copy.in_(keys))
        )
        if k is not None
    )
    return found


def _referenced(sm: sessionmaker[Session], keys: list[str]) -> set[str]:
    with sm() as session:
        return referenced_keys(session, keys)


def _any_instance(sm: sessionmaker[Session]) -> bool:
    with sm() as session:
        return session.scalar(select(Instance.id).limit(1)) is not None


def _chunks(objects: Iterable[StoredObject], size: int) -> Iterator[list[StoredObject]]:
    it = iter(objects)
    while chunk := list(islice(it, size)):
        yield chunk


def _hours(delta: timedelta) -> str:
    return f"{delta.total_seconds() / 3600:g}"
