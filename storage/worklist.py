"""The radiologists' worklist: analysed studies filtered, counted, ordered and paged in SQL.

Two views:

* **needs attention** (``WorklistFilter(attention_of=user)``): flagged (present or
  indeterminate), not reviewed, and unassigned or assigned to ``user``; the oldest waiting
  first, present and indeterminate alike (a reading queue in arrival order: nothing flagged
  waits behind a stream of newer studies, and the badge already tells them apart);
* **all**: not reviewed before reviewed, flagged before absent, then newest first.

:func:`next_for` walks the needs-attention order (the study page's "next"), and
:func:`version` is a cheap token that changes whenever a worklist could (the live page asks for
new rows only when it did).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from storage.db import reading
from storage.schema import (
    AuditEvent,
    Instance,
    Override,
    Result,
    ReviewAssignment,
    Study,
)

__all__ = [
    "ANALYSIS",
    "FLAGGED",
    "Worklist",
    "WorklistFilter",
    "WorklistItem",
    "item_of",
    "next_for",
    "version",
    "worklist",
]

ANALYSIS = "analysis"
#: AI decisions that need a radiologist's eyes
FLAGGED = ("present", "indeterminate")


@dataclass(frozen=True)
class WorklistItem:
    study_id: int
    study_instance_uid: str
    received_at: datetime
    analysed_at: datetime
    decision: str
    fracture_probability: float
    count: str | None
    body_part: str | None
    hardware: bool | None
    images: int
    model_version: str | None
    assigned_to: str | None
    reviewed_by: str | None
    reviewed_at: datetime | None
    agree: bool | None
    #: the byte store key of the study's first stored instance (whose header the page reads
    #: for patient, accession and exam; none of these is in the database); None if unknown
    first_instance_key: str | None = None
    #: the newest review's reading: "present" or "absent" (None: not reviewed)
    radiologist_fracture: str | None = None

    @property
    def reviewed(self) -> bool:
        return self.reviewed_by is not None

    @property
    def flagged(self) -> bool:
        return self.decision in FLAGGED


@dataclass(frozen=True)
class WorklistFilter:
    decision: str | None = None  # present | absent | indeterminate
    body_part: str | None = None
    reviewed: bool | None = None
    since: datetime | None = None  # received at or after
    until: datetime | None = None  # received before
    limit: int = 50
    offset: int = 0
    #: a user name: only what needs that user's attention, oldest first (None: all studies)
    attention_of: str | None = None
    #: a user name: also count what needs that user's attention (``Worklist.attention``)
    count_attention_of: str | None = None


@dataclass(frozen=True)
class Worklist:
    items: tuple[WorklistItem, ...]
    total: int  # matching the filter and view, before paging
    by_decision: dict[str, int]  # matching the filters other than reviewed, in any view
    reviewed: int
    unreviewed: int
    #: needing the attention of ``count_attention_of`` or ``attention_of`` (None: not asked)
    attention: int | None = None


def item_of(
    study: Study,
    analysis: Result,
    override: Override | None,
    assigned: str | None,
    first_instance_key: str | None = None,
) -> WorklistItem:
    """The worklist row of a study from its rows (its analysis, newest override, assignment)."""
    d = analysis.detail
    images = d.get("images") or []
    first = images[0] if images else {}
    model = d.get("model") or {}
    return WorklistItem(
        study_id=study.id,
        study_instance_uid=study.study_instance_uid,
        received_at=study.first_received_at,
        analysed_at=analysis.created_at,
        decision=str(d["decision"]),
        fracture_probability=float(d.get("fracture_probability", 0.0)),
        count=d.get("count"),
        body_part=first.get("body_part"),
        hardware=d.get("hardware"),
        images=len(images),
        model_version=model.get("version"),
        assigned_to=assigned,
        reviewed_by=override.user_name if override is not None else None,
        reviewed_at=override.created_at if override is not None else None,
        agree=override.agree if override is not None else None,
        first_instance_key=first_instance_key,
        radiologist_fracture=_radiologist_fracture(override),
    )


def _radiologist_fracture(override: Override | None) -> str | None:
    if override is None:
        return None
    label = override.radiologist_label or {}
    fracture = label.get("fracture")
    return str(fracture) if fracture in ("present", "absent") else None


def _decision() -> Any:
    return Result.detail["decision"].as_string()


def _body_part() -> Any:
    return Result.detail[("images", 0, "body_part")].as_string()


def _latest_analysis_ids() -> Any:
    """Per study, the id of its newest analysis with a decision (a subquery)."""
    return (
        select(Result.study_id.label("study_id"), func.max(Result.id).label("result_id"))
        .where(Result.kind == ANALYSIS, Result.detail["decision"].as_string().is_not(None))
        .group_by(Result.study_id)
        .subquery()
    )


def _latest_override_ids() -> Any:
    """Per reviewed study, the id of its newest override (a subquery)."""
    return (
        select(Override.study_id.label("study_id"), func.max(Override.id).label("override_id"))
        .group_by(Override.study_id)
        .subquery()
    )


@dataclass(frozen=True)
class _Parts:
    """The worklist's base query (one row per analysed study, the filters applied) and the
    columns the views are built from."""

    matching: Any  # select(Study.id) ... with the filters other than reviewed and the view
    review: Any  # the newest-override subquery
    decision: Any

    def attention(self, user: str) -> Any:
        """The condition "needs ``user``'s attention"."""
        return and_(
            self.decision.in_(FLAGGED),
            self.review.c.override_id.is_(None),
            or_(ReviewAssignment.user_name.is_(None), ReviewAssignment.user_name == user),
        )


def _parts(f: WorklistFilter | None = None) -> _Parts:
    f = f or WorklistFilter()
    analysis = _latest_analysis_ids()
    review = _latest_override_ids()
    decision = _decision()
    matching = (
        select(Study.id)
        .join(analysis, analysis.c.study_id == Study.id)
        .join(Result, Result.id == analysis.c.result_id)
        .outerjoin(review, review.c.study_id == Study.id)
        .outerjoin(ReviewAssignment, ReviewAssignment.study_id == Study.id)
    )
    if f.since is not None:
        matching = matching.where(Study.first_received_at >= f.since)
    if f.until is not None:
        matching = matching.where(Study.first_received_at < f.until)
    if f.decision:
        matching = matching.where(decision == f.decision)
    if f.body_part:
        matching = matching.where(_body_part() == f.body_part)
    return _Parts(matching, review, decision)


def _count(session: Session, query: Any) -> int:
    return int(session.scalar(select(func.count()).select_from(query.subquery())) or 0)


def worklist(sm: sessionmaker[Session], f: WorklistFilter) -> Worklist:
    """Analysed studies in the view and order of ``f`` (module docstring).

    Filtering, counting, sorting and paging happen in SQL; only the page's rows are loaded.
    """
    p = _parts(f)
    reviewed_flag = p.review.c.override_id.is_not(None)
    # grouped outside: PostgreSQL binds the JSON path as a parameter, so the same expression
    # in the select list and in GROUP BY would not be recognised as one
    per_study = p.matching.add_columns(
        p.decision.label("decision"), reviewed_flag.label("reviewed")
    ).subquery()
    counts = select(per_study.c.decision, per_study.c.reviewed, func.count()).group_by(
        per_study.c.decision, per_study.c.reviewed
    )
    view = p.matching
    if f.reviewed is not None:
        view = view.where(reviewed_flag if f.reviewed else p.review.c.override_id.is_(None))
    if f.attention_of is not None:
        view = view.where(p.attention(f.attention_of))
        order: tuple[Any, ...] = (Study.first_received_at.asc(), Study.id.asc())
    else:
        unreviewed_first = case((p.review.c.override_id.is_(None), 0), else_=1)
        flagged_first = case((p.decision.in_(FLAGGED), 0), else_=1)
        order = (
            unreviewed_first,
            flagged_first,
            Study.first_received_at.desc(),
            Study.id.desc(),
        )
    page_query = (
        view.add_columns(Result.id, p.review.c.override_id, ReviewAssignment.user_name)
        .order_by(*order)
        .limit(f.limit)
        .offset(f.offset)
    )
    attention_user = f.attention_of or f.count_attention_of
    with reading(sm) as session:
        by_decision: dict[str, int] = {}
        reviewed = unreviewed = 0
        for value, is_reviewed, n in session.execute(counts):
            by_decision[str(value)] = by_decision.get(str(value), 0) + int(n)
            if is_reviewed:
                reviewed += int(n)
            else:
                unreviewed += int(n)
        total = _count(session, view)
        attention = None
        if attention_user is not None:
            attention = _count(session, p.matching.where(p.attention(attention_user)))
        page = session.execute(page_query).all()
        items = _load_items(session, page)
    return Worklist(items, total, by_decision, reviewed, unreviewed, attention)


def _load_items(session: Session, page: Any) -> tuple[WorklistItem, ...]:
    """The page's rows (study id, analysis id, override id, assignee) as worklist items."""
    ids = [row[0] for row in page]
    studies = {s.id: s for s in session.scalars(select(Study).where(Study.id.in_(ids)))}
    results = {
        r.id: r
        for r in session.scalars(select(Result).where(Result.id.in_(row[1] for row in page)))
    }
    override_ids = [row[2] for row in page if row[2] is not None]
    overrides = {
        o.id: o for o in session.scalars(select(Override).where(Override.id.in_(override_ids)))
    }
    keys = _first_instance_keys(session, ids)
    return tuple(
        item_of(
            studies[sid],
            results[rid],
            overrides.get(oid) if oid is not None else None,
            assignee,
            keys.get(sid),
        )
        for sid, rid, oid, assignee in page
    )


def _first_instance_keys(session: Session, study_ids: list[int]) -> dict[int, str]:
    """Per study, the byte store key of its first stored instance whose file is still kept
    (none for a study whose files retention purged: its page row names the study instead)."""
    if not study_ids:
        return {}
    first = (
        select(func.min(Instance.id))
        .where(Instance.study_id.in_(study_ids), Instance.purged_at.is_(None))
        .group_by(Instance.study_id)
        .scalar_subquery()
    )
    rows = session.execute(
        select(Instance.study_id, Instance.spool_path).where(Instance.id.in_(first))
    )
    return {study_id: key for study_id, key in rows}


def next_for(sm: sessionmaker[Session], user: str, after: int | None = None) -> int | None:
    """The study that needs ``user``'s attention next after study ``after`` in the
    needs-attention order (oldest first), wrapping round to the first; never ``after`` itself.
    None: nothing (else) needs their attention.

    ``after`` need not be on the list any more (just reviewed, or claimed by someone else):
    its place in the order is taken from its arrival time.
    """
    p = _parts()
    candidates = p.matching.where(p.attention(user))
    if after is not None:
        candidates = candidates.where(Study.id != after)
    oldest_first = (Study.first_received_at.asc(), Study.id.asc())
    with reading(sm) as session:
        anchor = session.get(Study, after) if after is not None else None
        if anchor is not None:
            at, anchor_id = anchor.first_received_at, anchor.id
            later = candidates.where(
                or_(
                    Study.first_received_at > at,
                    and_(Study.first_received_at == at, Study.id > anchor_id),
                )
            )
            found = session.scalar(later.order_by(*oldest_first).limit(1))
            if found is not None:
                return int(found)
        first = session.scalar(candidates.order_by(*oldest_first).limit(1))
        return None if first is None else int(first)


def version(sm: sessionmaker[Session]) -> str:
    """A token that changes whenever any worklist may have changed (two primary-key maxima).

    New analyses add ``results`` rows; reviews, claims, releases and retention purges each
    append an audit row in their transaction. So the pair (newest result id, newest audit id)
    moves with every change a worklist shows. (It also moves with changes it does not show,
    such as a study being viewed: a spare refresh, never a missed one.)
    """
    with reading(sm) as session:
        result = session.scalar(select(func.max(Result.id))) or 0
        event = session.scalar(select(func.max(AuditEvent.id))) or 0
    return f"{result}.{event}"
