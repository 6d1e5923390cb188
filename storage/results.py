"""Results of an analysis (``results`` rows): what xrayd produced for a study.

For now only the placeholder "seen" result exists; SR/SC/PDF results and their deliveries
come with later issues.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from storage.schema import Instance, Result, utcnow

SEEN = "seen"


def record_seen(
    sm: sessionmaker[Session], study_id: int, job_id: int, *, now: datetime | None = None
) -> int:
    """Record that ``job_id`` saw study ``study_id`` and return its instance count.

    Idempotent per job: a retried attempt updates the job's one "seen" row. Commits.
    """
    with sm.begin() as session:
        count = int(
            session.scalar(
                select(func.count()).select_from(Instance).where(Instance.study_id == study_id)
            )
            or 0
        )
        detail = {"instance_count": count}
        existing = session.scalar(
            select(Result).where(Result.job_id == job_id, Result.kind == SEEN).limit(1)
        )
        if existing is None:
            session.add(
                Result(
                    study_id=study_id,
                    job_id=job_id,
                    kind=SEEN,
                    detail=detail,
                    created_at=now or utcnow(),
                )
            )
        else:
            existing.detail = detail
    return count
