"""The radiologists' reviews: what a study's page shows, and overrides (the worklist and
claiming a study: :mod:`storage.worklist`, :mod:`storage.claims`).

A study's *analysis* is its newest ``results`` row of kind ``analysis`` with a decision; its
*review* is its newest override. Overrides are never updated or deleted: a second review of
the same study adds a row, and the newest one counts (training data keeps the history).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from storage import audit
from storage.db import reading
from storage.errors import NotFoundError
from storage.peers import InvalidEntryError
from storage.rows import from_attributes
from storage.schema import Instance, Override, Result, ReviewAssignment, Series, Study, utcnow
from storage.worklist import ANALYSIS, WorklistItem, item_of

__all__ = [
    "ANALYSIS",
    "COUNTS",
    "FRACTURE",
    "OverrideRow",
    "ReviewLabel",
    "ReviewRefused",
    "StudyImage",
    "StudyReview",
    "ai_review_label",
    "create_override",
    "list_overrides",
    "override_row",
    "study_review",
]

FRACTURE = ("present", "absent")
COUNTS = ("0", "1", "2+")


#: the refusal of a disagreement that repeats the AI's labels (it would count as a disagreement)
SAME_AS_AI = "This is the AI's result — choose Agree, or change a field"


class ReviewRefused(InvalidEntryError):
    """A review refused, with the fields it is about, so a form can show each message beside
    its field. ``problems`` holds ``(field, message)`` pairs; a field is one of ``verdict``,
    ``fracture``, ``count``, ``body_part``, ``hardware``, ``comment``, or ``label`` (the
    corrected label as a whole). The message (``str()``) joins them all."""

    def __init__(self, problems: tuple[tuple[str, str], ...]) -> None:
        super().__init__("; ".join(message for _, message in problems))
        self.problems = problems


@dataclass(frozen=True)
class ReviewLabel:
    """What the radiologist says about a study (every rule checked at once: see
    :class:`ReviewRefused`)."""

    fracture: Literal["present", "absent"]
    count: Literal["0", "1", "2+"]
    body_part: str
    hardware: bool

    def __post_init__(self) -> None:
        problems: list[tuple[str, str]] = []
        if self.fracture not in FRACTURE:
            problems.append(("fracture", "fracture must be 'present' or 'absent'"))
        if self.count not in COUNTS:
            problems.append(("count", "count must be '0', '1' or '2+'"))
        elif self.fracture == "absent" and self.count != "0":
            problems.append(("count", "count must be '0' when no fracture is present"))
        elif self.fracture == "present" and self.count == "0":
            problems.append(("count", "count must be '1' or '2+' when a fracture is present"))
        if not 1 <= len(self.body_part) <= 32 or not self.body_part.isprintable():
            problems.append(("body_part", "body part must be 1 to 32 printable characters"))
        if problems:
            raise ReviewRefused(tuple(problems))

    def as_json(self) -> dict[str, Any]:
        return {
            "fracture": self.fracture,
            "count": self.count,
            "body_part": self.body_part,
            "hardware": self.hardware,
        }


@dataclass(frozen=True)
class OverrideRow:
    id: int
    study_id: int
    user_name: str
    created_at: datetime
    agree: bool | None
    ai_label: dict[str, Any] | None
    radiologist_label: dict[str, Any]
    comment: str | None
    result_id: int | None


@dataclass(frozen=True)
class StudyImage:
    instance_id: int
    sop_instance_uid: str
    spool_path: str
    prediction: dict[str, Any] | None  # None: not analysed
    not_analysed_reason: str | None
    heatmap_path: str | None


@dataclass(frozen=True)
class StudyReview:
    item: WorklistItem
    analysis_id: int
    analysis: dict[str, Any]
    images: tuple[StudyImage, ...]
    overrides: tuple[OverrideRow, ...]


def override_row(o: Override) -> OverrideRow:
    """The plain row of a saved review (its labels copied out of the JSON columns)."""
    return from_attributes(
        OverrideRow,
        o,
        ai_label=dict(o.ai_label) if o.ai_label is not None else None,
        radiologist_label=dict(o.radiologist_label),
    )


def _latest_analyses(session: Session, study_ids: list[int] | None = None) -> dict[int, Result]:
    query = select(Result).where(Result.kind == ANALYSIS)
    if study_ids is not None:
        query = query.where(Result.study_id.in_(study_ids))
    latest: dict[int, Result] = {}
    for r in session.scalars(query.order_by(Result.id)):
        if r.detail.get("decision") is not None:
            latest[r.study_id] = r
    return latest


def _latest_overrides(session: Session, study_ids: list[int]) -> dict[int, Override]:
    latest: dict[int, Override] = {}
    if not study_ids:
        return latest
    for o in session.scalars(
        select(Override).where(Override.study_id.in_(study_ids)).order_by(Override.id)
    ):
        latest[o.study_id] = o
    return latest


def study_review(sm: sessionmaker[Session], study_id: int) -> StudyReview | None:
    """Everything the study page shows; None if the study has no analysis with a decision."""
    with reading(sm) as session:
        study = session.get(Study, study_id)
        if study is None:
            return None
        analysis = _latest_analyses(session, [study_id]).get(study_id)
        if analysis is None:
            return None
        overrides = session.scalars(
            select(Override).where(Override.study_id == study_id).order_by(Override.id)
        ).all()
        assigned = session.scalar(
            select(ReviewAssignment.user_name).where(ReviewAssignment.study_id == study_id)
        )
        item = item_of(study, analysis, overrides[-1] if overrides else None, assigned)
        instances = session.execute(
            select(Instance)
            .join(Series, Series.id == Instance.series_id)
            .where(Instance.study_id == study_id)
            .order_by(Series.id, Instance.received_at, Instance.id)
        ).scalars()
        predictions = {p["sop_instance_uid"]: p for p in analysis.detail.get("images") or []}
        reasons = {
            n["sop_instance_uid"]: n.get("reason", "")
            for n in analysis.detail.get("not_analysed") or []
        }
        revision = analysis.detail.get("revision")
        heatmaps = {
            str(r.detail.get("source_sop_instance_uid")): r.file_path
            for r in session.scalars(
                select(Result).where(Result.study_id == study_id, Result.kind == "heatmap")
            )
            if r.detail.get("revision") == revision
        }
        images = tuple(
            StudyImage(
                i.id,
                i.sop_instance_uid,
                i.spool_path,
                predictions.get(i.sop_instance_uid),
                reasons.get(i.sop_instance_uid),
                heatmaps.get(i.sop_instance_uid),
            )
            for i in instances
        )
        return StudyReview(
            item,
            analysis.id,
            dict(analysis.detail),
            images,
            tuple(override_row(o) for o in overrides),
        )


def _ai_label(analysis: Result) -> dict[str, Any]:
    d = analysis.detail
    images = d.get("images") or []
    model = d.get("model") or {}
    return {
        "decision": d.get("decision"),
        "fracture_probability": d.get("fracture_probability"),
        "count": d.get("count"),
        "body_part": images[0].get("body_part") if images else None,
        "hardware": d.get("hardware"),
        "model": {k: model.get(k) for k in ("name", "version", "sha256")},
    }


def ai_review_label(ai: dict[str, Any]) -> ReviewLabel | None:
    """The AI's result (an override's ``ai_label``) as the label an Agree stores; None when it
    cannot be agreed with: indeterminate, or a count that contradicts the decision (the count
    and the decision come from different outputs of the model)."""
    if ai.get("decision") not in FRACTURE:
        return None
    try:
        return ReviewLabel(
            ai["decision"],
            ai.get("count") or "0",
            ai.get("body_part") or "unknown",
            bool(ai.get("hardware")),
        )
    except ReviewRefused:
        return None


def create_override(
    sm: sessionmaker[Session],
    study_id: int,
    user_name: str,
    *,
    agree: bool,
    label: ReviewLabel | None,
    comment: str | None,
) -> OverrideRow:
    """Store a review of the study's current analysis.

    ``agree=True`` confirms the AI (``label`` may be omitted: the AI's labels are taken; an
    indeterminate AI decision, or one whose count contradicts it, cannot be agreed with).
    ``agree=False`` needs the corrected ``label``, and it must differ from the AI's in at
    least one field (otherwise it would be stored as a disagreement with the same answer).
    Refusals are :class:`ReviewRefused` naming their fields. Audited in the same transaction.
    """
    if comment is not None and len(comment) > 2000:
        raise ReviewRefused((("comment", "comment must have at most 2000 characters"),))
    with sm.begin() as session:
        # Locked: spool retention (storage.retention) checks for overrides under the same lock.
        if session.get(Study, study_id, with_for_update=True) is None:
            raise NotFoundError(f"no study {study_id}")
        analysis = _latest_analyses(session, [study_id]).get(study_id)
        if analysis is None:
            raise InvalidEntryError("the study has no analysis to review")
        ai = _ai_label(analysis)
        confirmed = ai_review_label(ai)
        if agree:
            if ai["decision"] not in FRACTURE:
                raise ReviewRefused(
                    (
                        (
                            "verdict",
                            "an indeterminate result cannot be agreed with: the AI is unsure,"
                            " give your reading (the corrected label)",
                        ),
                    )
                )
            if confirmed is None:
                raise ReviewRefused(
                    (
                        (
                            "verdict",
                            f"the AI's count ({ai['count']}) contradicts its decision"
                            f" ({ai['decision']}): it cannot be agreed with, give the"
                            " corrected label",
                        ),
                    )
                )
            if label is not None and label != confirmed:
                raise ReviewRefused(
                    (("label", "agree was given with a label that differs from the AI's"),)
                )
            label = confirmed
        elif label is None:
            raise ReviewRefused((("label", "disagree needs the corrected label"),))
        elif label == confirmed:
            raise ReviewRefused((("label", SAME_AS_AI),))
        row = Override(
            study_id=study_id,
            user_name=user_name,
            ai_label=ai,
            radiologist_label=label.as_json(),
            comment=comment or None,
            created_at=utcnow(),
            result_id=analysis.id,
            agree=agree,
        )
        session.add(row)
        session.flush()
        audit.append(
            session,
            actor=user_name,
            action=audit.Action.OVERRIDE_CREATED,
            object_type="study",
            object_id=str(study_id),
            detail={"override_id": row.id, "agree": row.agree, "label": label.as_json()},
        )
        return override_row(row)


def list_overrides(
    sm: sessionmaker[Session],
    *,
    study_id: int | None = None,
    user_name: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[list[OverrideRow], int]:
    """Overrides newest first, and how many match in all."""
    with reading(sm) as session:
        query = select(Override)
        if study_id is not None:
            query = query.where(Override.study_id == study_id)
        if user_name is not None:
            query = query.where(Override.user_name == user_name)
        total = int(session.scalar(select(func.count()).select_from(query.subquery())) or 0)
        rows = session.scalars(query.order_by(Override.id.desc()).limit(limit).offset(offset)).all()
        return [override_row(o) for o in rows], total
