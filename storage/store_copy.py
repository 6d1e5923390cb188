"""Copying a single-box site's spool into an object store: every object a row references.

The objects are those the sweep keeps (:mod:`storage.store_sweep`): each not-yet-purged
instance's ``spool_path``, each result's ``file_path`` and each conflicting copy the listener
kept; each goes to the target store under the same key (keys are the spool's own paths).

Idempotent, so safe to rerun after an interruption: an object the target already holds with the
local size is skipped (keys name their content, so an object of the same key and size is the
same object); one of another size (an upload cut off by hand, say) is copied again. An object
missing locally is counted, not fatal: "missing" when the target lacks it too (nothing left to
copy: the row's bytes are lost), "skipped" when the target has it already.

With ``verify`` each object the target holds is read back from it and hashed: an instance
against its row's ``sha256``, a result object or kept copy against the local file.

Rows are read a chunk at a time in id order (keyset pagination); up to ``workers`` objects are
copied at once (the S3 client is shared by threads). Nothing is logged per object above DEBUG.
"""

from __future__ import annotations

import enum
import hashlib
import logging
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVarTuple

from sqlalchemy import Row, Select, select
from sqlalchemy.orm import InstrumentedAttribute, Session, sessionmaker

from storage.bytestore import ByteStore, ByteStoreNotFoundError, InvalidKeyError
from storage.schema import AuditEvent, Instance, Result
from storage.store_sweep import CONFLICT_ACTION

logger = logging.getLogger(__name__)

CHUNK = 500
_Columns = TypeVarTuple("_Columns")
_READ = 1024 * 1024
#: at most this many examples of missing or mismatching objects are kept for the report
EXAMPLES = 20


@dataclass(frozen=True)
class Referenced:
    """One object a row names: ``what`` is the row ("instance 12", "result 7"), ``sha256``
    the instance's recorded digest (None for other objects)."""

    key: str
    what: str
    sha256: str | None = None


class Outcome(enum.Enum):
    COPIED = "copied"
    SKIPPED = "skipped"
    MISSING = "missing"
    INVALID = "invalid"


@dataclass(frozen=True)
class _Done:
    item: Referenced
    outcome: Outcome
    size: int
    #: None: not verified; else whether the stored bytes have the expected digest
    verified: bool | None = None


@dataclass
class CopyReport:
    dry_run: bool
    verify: bool
    objects: int = 0
    copied: int = 0
    copied_bytes: int = 0
    skipped: int = 0
    skipped_bytes: int = 0
    #: in neither store
    missing: int = 0
    #: a row names a path that is not a key (never followed)
    invalid: int = 0
    verified: int = 0
    mismatched: int = 0
    #: rows ("instance 12"), never keys or identifiers: up to :data:`EXAMPLES` each
    missing_examples: list[str] = field(default_factory=list)
    mismatch_examples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.invalid or self.mismatched)

    def add(self, done: _Done) -> None:
        self.objects += 1
        if done.outcome is Outcome.COPIED:
            self.copied += 1
            self.copied_bytes += done.size
        elif done.outcome is Outcome.SKIPPED:
            self.skipped += 1
            self.skipped_bytes += done.size
        elif done.outcome is Outcome.MISSING:
            self.missing += 1
            _example(self.missing_examples, done.item.what)
        else:
            self.invalid += 1
            _example(self.missing_examples, f"{done.item.what} (not a key)")
        if done.verified is True:
            self.verified += 1
        elif done.verified is False:
            self.mismatched += 1
            _example(self.mismatch_examples, done.item.what)


def _example(examples: list[str], what: str) -> None:
    if len(examples) < EXAMPLES:
        examples.append(what)


def referenced_objects(sm: sessionmaker[Session], chunk: int = CHUNK) -> Iterator[Referenced]:
    """Every object a row names, a chunk of rows per query (keyset pagination by id)."""
    instances = select(Instance.id, Instance.spool_path, Instance.sha256).where(
        Instance.purged_at.is_(None)
    )
    for row_id, key, sha in _by_id(sm, instances, Instance.id, chunk):
        yield Referenced(key, f"instance {row_id}", sha.lower())
    results = select(Result.id, Result.file_path).where(Result.file_path.is_not(None))
    for row_id, path in _by_id(sm, results, Result.id, chunk):
        if path:
            yield Referenced(path, f"result {row_id}")
    conflicts = select(AuditEvent.id, AuditEvent.detail).where(AuditEvent.action == CONFLICT_ACTION)
    for row_id, detail in _by_id(sm, conflicts, AuditEvent.id, chunk):
        kept = detail.get("kept_copy") if isinstance(detail, dict) else None
        if isinstance(kept, str) and kept:
            yield Referenced(kept, f"conflicting copy of audit event {row_id}")


def _by_id(
    sm: sessionmaker[Session],
    stmt: Select[int, *_Columns],
    id_column: InstrumentedAttribute[int],
    chunk: int,
) -> Iterator[Row[int, *_Columns]]:
    """The rows of ``stmt`` (whose first column is ``id_column``) in id order, ``chunk`` rows
    per query, each query in a session of its own (keyset pagination)."""
    last = 0
    while True:
        with sm() as session:
            rows = session.execute(
                stmt.where(id_column > last).order_by(id_column).limit(chunk)
            ).all()
        if not rows:
            return
        yield from rows
        last = rows[-1][0]


def copy_referenced(
    sm: sessionmaker[Session],
    source: ByteStore,
    target: ByteStore,
    *,
    dry_run: bool,
    verify: bool,
    workers: int = 4,
    progress: Callable[[CopyReport], None] | None = None,
    chunk: int = CHUNK,
) -> CopyReport:
    """Copy every referenced object from ``source`` (the spool) to ``target`` (see the module
    docstring); ``progress`` is called after each ``chunk`` of objects. Store errors
    (:class:`~storage.bytestore.ByteStoreError`: an unreachable target, a refused write) end
    the copy; a rerun carries on where it stopped."""
    report = CopyReport(dry_run=dry_run, verify=verify)
    batch: list[Referenced] = []

    def run(pool: ThreadPoolExecutor) -> None:
        for done in pool.map(lambda item: _copy_one(source, target, item, dry_run, verify), batch):
            report.add(done)
            logger.debug("store copy: %s %s (%s)", done.item.key, done.outcome.value, done.size)
        batch.clear()
        if progress is not None:
            progress(report)

    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="store-copy") as pool:
        for item in referenced_objects(sm, chunk):
            batch.append(item)
            if len(batch) >= chunk:
                run(pool)
        if batch:
            run(pool)
    logger.info(
        "store copy%s: %d objects: %d copied (%d bytes), %d already there, %d missing, "
        "%d verified, %d mismatched",
        " (dry run)" if dry_run else "",
        report.objects,
        report.copied,
        report.copied_bytes,
        report.skipped,
        report.missing + report.invalid,
        report.verified,
        report.mismatched,
        extra={"copied": report.copied, "missing": report.missing, "dry_run": dry_run},
    )
    return report


def _size(store: ByteStore, key: str) -> int | None:
    try:
        return store.size(key)
    except ByteStoreNotFoundError:
        return None


def _copy_one(
    source: ByteStore, target: ByteStore, item: Referenced, dry_run: bool, verify: bool
) -> _Done:
    try:
        local = _size(source, item.key)
        there = _size(target, item.key)
    except InvalidKeyError:
        return _Done(item, Outcome.INVALID, 0)
    if local is None:
        if there is None:
            return _Done(item, Outcome.MISSING, 0)
        outcome, size = Outcome.SKIPPED, there
    elif there == local:
        outcome, size = Outcome.SKIPPED, local
    else:
        outcome, size = Outcome.COPIED, local
        if not dry_run:
            with source.fetch(item.key) as path:
                target.put_file(item.key, path)
            there = local
    verified = None
    if verify and there is not None:
        expected = item.sha256 if item.sha256 is not None else _digest_of(source, item.key)
        if expected is not None:
            verified = _digest_of(target, item.key) == expected
    return _Done(item, outcome, size, verified)


def _digest_of(store: ByteStore, key: str) -> str | None:
    """SHA-256 of the object as ``store`` holds it (None: it has none)."""
    try:
        with store.fetch(key) as path:
            return _digest(path)
    except ByteStoreNotFoundError:
        return None


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(_READ):
            digest.update(block)
    return digest.hexdigest()
