"""One pool of worker processes for all the image preparation of a run.

``models.parallel.process_map`` starts a pool per call; a run prepares four sets (locked
validation, calibration, base, reviews), and each start re-imports the main module in every
spawned worker (seconds with torch). :class:`WorkerPool` starts its workers once, on first
use, and maps module-level functions in order. ``workers=1`` maps in this process.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from types import TracebackType
from typing import TypeVar

from models.parallel import default_workers

__all__ = ["WorkerPool"]

T = TypeVar("T")
R = TypeVar("R")


class WorkerPool:
    """``with WorkerPool(workers) as pool: pool.map(function, items, progress)``."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = max(1, workers or default_workers())
        self._executor: ProcessPoolExecutor | None = None

    def map(
        self,
        function: Callable[[T], R],
        items: Sequence[T],
        progress: Callable[[int], None] | None = None,
    ) -> list[R]:
        """``[function(i) for i in items]``; ``progress(1)`` after each item."""
        results: list[R] = []
        if self.workers == 1 or len(items) < 2:
            for item in items:
                results.append(function(item))
                if progress is not None:
                    progress(1)
            return results
        if self._executor is None:
            # spawn: forking a process that has started torch's thread pools is unsafe.
            context = multiprocessing.get_context("spawn")
            self._executor = ProcessPoolExecutor(self.workers, mp_context=context)
        chunk = max(1, min(16, len(items) // (4 * self.workers)))
        for result in self._executor.map(function, items, chunksize=chunk):
            results.append(result)
            if progress is not None:
                progress(1)
        return results

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
