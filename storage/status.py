"""Counts for the status page and ``xrayd status``."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from storage.schema import Delivery, DeliveryState, Instance, Job, JobState, Study


@dataclass(frozen=True)
class StatusCounts:
    """Row counts; the ``*_by_state`` dicts list only states that have rows."""

    studies_by_state: dict[str, int]
    jobs_by_state: dict[str, int]
    deliveries_by_state: dict[str, int]
    dead_letters: int  # dead jobs + dead deliveries
    instances: int


def status_counts(sm: sessionmaker[Session]) -> StatusCounts:
    with sm() as session:
        studies = _by_state(session, Study)
        jobs = _by_state(session, Job)
        deliveries = _by_state(session, Delivery)
        instances = int(session.scalar(select(func.count()).select_from(Instance)) or 0)
    return StatusCounts(
        studies_by_state=studies,
        jobs_by_state=jobs,
        deliveries_by_state=deliveries,
        dead_letters=jobs.get(JobState.DEAD.value, 0) + deliveries.get(DeliveryState.DEAD.value, 0),
        instances=instances,
    )


def _by_state(session: Session, model: type[Study] | type[Job] | type[Delivery]) -> dict[str, int]:
    rows = session.execute(
        select(model.state, func.count()).group_by(model.state).order_by(model.state)
    ).all()
    return {str(state): int(count) for state, count in rows}
