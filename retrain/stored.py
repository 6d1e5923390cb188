"""Received images read out of the byte store for the worker pool.

The worker pool reads files by path (:func:`retrain.sources.read_spool_file`, in other
processes). The images are in the byte store (:mod:`storage.bytestore`): in the local spool
a fetch is the spool file itself; from an object store it is a private temporary copy. So the
images are fetched a batch at a time (at most :data:`FETCH_BATCH` local copies at once), read
by the pool, and the copies removed before the next batch.

A missing object is the problem ``missing_file``, a key no store accepts ``bad_path`` (or what
the caller names), an object that cannot be read back ``unreadable``. A store that cannot be
reached raises :class:`~storage.bytestore.ByteStoreUnavailableError`: a run that silently left
out images (of the locked validation set, say) would be judged on other data.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path

from models.limits import ImageLimits
from models.preprocess import PreprocessParams
from retrain.pool import WorkerPool
from retrain.sources import SpoolRead, read_spool_file
from storage.bytestore import (
    ByteStore,
    ByteStoreError,
    ByteStoreNotFoundError,
    ByteStoreUnavailableError,
    InvalidKeyError,
    LocalByteStore,
)
from storage.spool import Spool

__all__ = ["FETCH_BATCH", "StoredRead", "byte_store", "read_stored_files"]

#: local copies of images held at once (an object store's images are fetched in batches)
FETCH_BATCH = 32

#: ``(key, salt, fallback patient, params, limits)``: :func:`read_spool_file`'s job, by key
StoredRead = tuple[str, str, str, PreprocessParams | None, ImageLimits]


def byte_store(store: ByteStore | None, spool_root: Path) -> ByteStore:
    """``store``, else the spool at ``spool_root``."""
    return store if store is not None else LocalByteStore(Spool(spool_root))


def read_stored_files(
    store: ByteStore,
    items: Sequence[StoredRead],
    pool: WorkerPool | None = None,
    progress: Callable[[int], None] | None = None,
    *,
    invalid_key: str = "bad_path",
    batch: int = FETCH_BATCH,
) -> list[SpoolRead]:
    """:func:`read_spool_file` of each item's object, in order (see the module docstring)."""
    pool = pool or WorkerPool(1)
    results: list[SpoolRead] = []
    for start in range(0, len(items), max(1, batch)):
        with contextlib.ExitStack() as copies:
            slots: list[SpoolRead | None] = []
            jobs: list[tuple[str, str, str, PreprocessParams | None, ImageLimits]] = []
            for key, salt, fallback, params, limits in items[start : start + max(1, batch)]:
                problem = None
                try:
                    path = copies.enter_context(store.fetch(key))
                except ByteStoreUnavailableError:
                    raise
                except ByteStoreNotFoundError:
                    problem = "missing_file"
                except InvalidKeyError:
                    problem = invalid_key
                except ByteStoreError:
                    problem = "unreadable"
                if problem is not None:
                    slots.append(SpoolRead(None, None, None, problem))
                    if progress is not None:
                        progress(1)
                    continue
                slots.append(None)
                jobs.append((str(path), salt, fallback, params, limits))
            reads = iter(pool.map(read_spool_file, jobs, progress))
            results.extend(slot if slot is not None else next(reads) for slot in slots)
    return results
