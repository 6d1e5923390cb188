"""Counts for the status page, ``xrayd status`` and ``/metrics``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from storage import queue
from storage.db import reading
from storage.schema import Delivery, DeliveryState, Instance, Job, JobState, Study

#: the queues of :mod:`storage.queue`, in the order they are shown
QUEUES = ("analysis", "delivery", "retrain")


@dataclass(frozen=True)
class StatusCounts:
    """Row counts; the ``*_by_state`` dicts list only states that have rows."""

    studies_by_state: dict[str, int]
    #: jobs of the analysis queue
    jobs_by_state: dict[str, int]
    deliveries_by_state: dict[str, int]
    #: every queue of :mod:`storage.queue` (each listed, even when empty): {queue: {state: n}}
    queues: dict[str, dict[str, int]]
    #: per queue, when its oldest queued job fell due (None: nothing queued)
    oldest_due: dict[str, datetime | None]
    dead_letters: int  # dead analysis and retraining jobs + dead deliveries
    instances: int


def status_counts(sm: sessionmaker[Session]) -> StatusCounts:
    with reading(sm) as session:
        studies = _by_state(session, Study)
        deliveries = _by_state(session, Delivery)
        by_queue: dict[str, dict[str, int]] = {name: {} for name in QUEUES}
        for (name, state), count in sorted(queue.counts(session).items()):
            by_queue.setdefault(name, {})[state] = count
        oldest = dict(
            session.execute(
                select(Job.queue, func.min(Job.next_attempt_at))
                .where(Job.state == JobState.QUEUED)
                .group_by(Job.queue)
            ).all()
        )
        instances = int(session.scalar(select(func.count()).select_from(Instance)) or 0)
    dead = JobState.DEAD.value
    return StatusCounts(
        studies_by_state=studies,
        jobs_by_state=dict(by_queue["analysis"]),
        deliveries_by_state=deliveries,
        queues=by_queue,
        oldest_due={name: oldest.get(name) for name in by_queue},
        dead_letters=by_queue["analysis"].get(dead, 0)
        + by_queue["retrain"].get(dead, 0)
        + deliveries.get(DeliveryState.DEAD.value, 0),
        instances=instances,
    )


def _by_state(session: Session, model: type[Study] | type[Delivery]) -> dict[str, int]:
    rows = session.execute(
        select(model.state, func.count()).group_by(model.state).order_by(model.state)
    ).all()
    return {str(state): int(count) for state, count in rows}
