"""The "seen" marker rows of the seen-only analyser (tests of the job machinery)."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from storage.schema import Instance, Result

SEEN = "seen"


def record_seen(sm: sessionmaker[Session], study_id: int, job_id: int) -> int:
    """Record that job ``job_id`` saw study ``study_id``; returns the study's instance count.

    Idempotent per job: running the same job again (after a crash) adds no second row.
    """
    with sm.begin() as session:
        count = (
            session.scalar(
                select(func.count()).select_from(Instance).where(Instance.study_id == study_id)
            )
            or 0
        )
        existing = session.scalar(
            select(Result).where(Result.job_id == job_id, Result.kind == SEEN)
        )
        if existing is None:
            session.add(
                Result(
                    study_id=study_id,
                    job_id=job_id,
                    kind=SEEN,
                    detail={"instances": int(count), "seen_only": True},
                )
            )
        return int(count)


def seen_results(sm: sessionmaker[Session], study_id: int) -> list[dict[str, object]]:
    """The "seen" records of a study, oldest first (tests of the job machinery)."""
    with sm() as session:
        rows = session.scalars(
            select(Result)
            .where(Result.study_id == study_id, Result.kind == SEEN)
            .order_by(Result.id)
        )
        return [dict(r.detail, job_id=r.job_id) for r in rows]
