"""What needs an administrator on the admin home page: dead deliveries and dead jobs, counted
and the most recent few listed, each read through storage's paged queries (counts grouped in
SQL, one short page of rows each)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from storage.outbox import DeliveryRow, list_deliveries
from storage.queue import QueueJobRow, list_queue
from storage.schema import DeliveryState, JobState
from storage.status import status_counts

if TYPE_CHECKING:
    from storage.db import Sessions

__all__ = ["RECENT", "Attention", "needs_attention"]

#: how many of the most recent dead deliveries and dead jobs the home page lists
RECENT = 5
#: queues whose dead jobs are listed one by one (a dead delivery is listed as a delivery)
LISTED_QUEUES = ("analysis", "retrain")


@dataclass(frozen=True)
class Attention:
    dead_deliveries: int
    #: dead jobs per queue, only the queues that have some
    dead_jobs: dict[str, int]
    #: the most recent dead deliveries and jobs, newest first (their errors stored redacted)
    deliveries: list[DeliveryRow]
    jobs: list[QueueJobRow]

    @property
    def empty(self) -> bool:
        return not self.dead_deliveries and not self.dead_jobs


def _last(total: int, limit: int) -> int:
    """The offset of the last ``limit`` of ``total`` rows listed oldest first."""
    return max(0, total - limit)


def needs_attention(sm: Sessions, limit: int = RECENT) -> Attention:
    """Dead deliveries and dead jobs: counts, and the ``limit`` most recent of each (the
    highest ids: storage lists oldest first, so the last page is read)."""
    dead, dead_delivery = JobState.DEAD.value, DeliveryState.DEAD.value
    counts = status_counts(sm)
    n_deliveries = counts.deliveries_by_state.get(dead_delivery, 0)
    dead_jobs = {q: by[dead] for q, by in counts.queues.items() if by.get(dead)}
    deliveries = (
        list_deliveries(sm, dead_delivery, limit=limit, offset=_last(n_deliveries, limit))
        if n_deliveries
        else []
    )
    jobs: list[QueueJobRow] = []
    for name in LISTED_QUEUES:
        n = dead_jobs.get(name, 0)
        if n:
            jobs += list_queue(sm, queue=name, state=dead, limit=limit, offset=_last(n, limit))
    jobs.sort(key=lambda j: j.job_id, reverse=True)
    return Attention(
        dead_deliveries=n_deliveries,
        dead_jobs=dead_jobs,
        deliveries=sorted(deliveries, key=lambda d: d.delivery_id, reverse=True),
        jobs=jobs[:limit],
    )
