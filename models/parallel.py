"""Mapping a function over items in worker processes, in order, with progress callbacks."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import TypeVar

__all__ = ["default_workers", "process_map"]

T = TypeVar("T")
R = TypeVar("R")


def default_workers() -> int:
    """The CPUs this process may use."""
    return max(1, len(os.sched_getaffinity(0)))


def process_map(
    function: Callable[[T], R],
    items: Sequence[T],
    *,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[R], int]:
    """``[function(i) for i in items]`` in up to ``workers`` processes; also the count used.

    ``function`` must be a module-level function (it is pickled). ``progress`` is called with
    1 per finished item. One worker runs in this process.
    """
    count = max(1, min(workers or default_workers(), len(items)))
    results: list[R] = []
    if count == 1:
        for item in items:
            results.append(function(item))
            if progress:
                progress(1)
        return results, count
    # spawn: forking a process that has started torch's thread pools is unsafe.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(count, mp_context=context) as pool:
        chunk = max(1, min(32, len(items) // (4 * count)))
        for result in pool.map(function, items, chunksize=chunk):
            results.append(result)
            if progress:
                progress(1)
    return results, count
