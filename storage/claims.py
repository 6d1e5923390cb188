"""Claiming a study for review: an explicit action of the radiologist, never a side effect of
opening it. One claim per study (``review_assignments.study_id`` is unique); each claim and
release is audited (``study.claimed``, ``study.released``) in its own transaction."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from storage import audit
from storage.db import reading
from storage.errors import ConflictError, NotFoundError
from storage.schema import Result, ReviewAssignment, Study, utcnow
from storage.worklist import ANALYSIS

__all__ = ["ClaimedByOtherError", "claim", "claimed_by", "release"]


class ClaimedByOtherError(ConflictError):
    """The study is claimed by another user (the web answers 409)."""

    def __init__(self, study_id: int, holder: str) -> None:
        super().__init__(
            f"Study {study_id} is claimed by {holder}: ask them to release it, or pick "
            "another study."
        )
        self.study_id = study_id
        self.holder = holder


def claimed_by(sm: sessionmaker[Session], study_id: int) -> str | None:
    """Who holds the study's claim (None: nobody)."""
    with reading(sm) as session:
        return session.scalar(
            select(ReviewAssignment.user_name).where(ReviewAssignment.study_id == study_id)
        )


def claim(sm: sessionmaker[Session], study_id: int, user_name: str) -> bool:
    """Claim an analysed study for ``user_name``: True if claimed now, False if it was theirs
    already. Raises :class:`ClaimedByOtherError` if another user holds it and
    :class:`NotFoundError` if there is no analysed study with that id."""
    try:
        with sm.begin() as session:
            if session.get(Study, study_id) is None or not _analysed(session, study_id):
                raise NotFoundError(f"no analysed study {study_id}")
            holder = session.scalar(
                select(ReviewAssignment.user_name).where(ReviewAssignment.study_id == study_id)
            )
            if holder == user_name:
                return False
            if holder is not None:
                raise ClaimedByOtherError(study_id, holder)
            session.add(
                ReviewAssignment(study_id=study_id, user_name=user_name, assigned_at=utcnow())
            )
            session.flush()  # a concurrent claim fails here, before the audit row
            audit.append(
                session,
                actor=user_name,
                action=audit.Action.STUDY_CLAIMED,
                object_type="study",
                object_id=str(study_id),
            )
            return True
    except IntegrityError:  # someone claimed it at the same moment
        holder = claimed_by(sm, study_id)
        if holder == user_name:
            return False
        raise ClaimedByOtherError(study_id, holder or "another user") from None


def release(sm: sessionmaker[Session], study_id: int, user_name: str) -> bool:
    """Give up ``user_name``'s claim on the study: True if released now, False if nobody held
    it. Raises :class:`ClaimedByOtherError` if another user holds it."""
    with sm.begin() as session:
        holder = session.scalar(
            select(ReviewAssignment.user_name)
            .where(ReviewAssignment.study_id == study_id)
            .with_for_update()
        )
        if holder is None:
            return False
        if holder != user_name:
            raise ClaimedByOtherError(study_id, holder)
        session.execute(
            delete(ReviewAssignment).where(
                ReviewAssignment.study_id == study_id, ReviewAssignment.user_name == user_name
            )
        )
        audit.append(
            session,
            actor=user_name,
            action=audit.Action.STUDY_RELEASED,
            object_type="study",
            object_id=str(study_id),
        )
        return True


def _analysed(session: Session, study_id: int) -> bool:
    return (
        session.scalar(
            select(Result.id)
            .where(
                Result.study_id == study_id,
                Result.kind == ANALYSIS,
                Result.detail["decision"].as_string().is_not(None),
            )
            .limit(1)
        )
        is not None
    )
