"""REST API v1 for radiology: studies, predictions, overrides; and the OpenAPI document.

Lists are paginated with ``limit``/``offset`` and answer ``{"items", "total", "limit",
"offset"}``. Errors are JSON ``{"detail": message}`` (422 for invalid input).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, Field

from storage import audit
from storage.reviews import (
    OverrideRow,
    ReviewLabel,
    StudyReview,
    create_override,
    list_overrides,
    study_review,
)
from storage.worklist import WorklistFilter, WorklistItem, worklist
from xrayd.web.auth import Principal, authenticated, context
from xrayd.web.from_row import from_row
from xrayd.web.paging import Limit, Page, require_time_zone
from xrayd.web.verified import VerifiedOutcome, send_verified_sr

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["radiology"])

#: the worklist and overrides page in SQL (``storage.reviews``): any offset is cheap
Offset = Annotated[int, Query(ge=0, description="items to skip")]


class StudyOut(BaseModel):
    id: int
    study_instance_uid: str
    received_at: datetime
    analysed_at: datetime
    decision: Literal["present", "absent", "indeterminate"]
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


class StudyPage(Page[StudyOut]):
    by_decision: dict[str, int] = Field(
        description="studies matching the filters other than reviewed, per decision"
    )


class PredictionOut(BaseModel):
    sop_instance_uid: str
    decision: str | None = None
    fracture_probability: float | None = None
    count: str | None = None
    count_probabilities: list[float] | None = None
    body_part: str | None = None
    body_part_probability: float | None = None
    hardware: bool | None = None
    hardware_probability: float | None = None
    boxes: list[list[float]] = Field(default_factory=list)
    not_analysed_reason: str | None = None


class Predictions(BaseModel):
    study_id: int
    analysis_id: int
    model: dict[str, Any]
    decision: str
    fracture_probability: float
    images: list[PredictionOut]


class LabelIn(BaseModel):
    fracture: Literal["present", "absent"]
    count: Literal["0", "1", "2+"]
    body_part: str = Field(min_length=1, max_length=32)
    hardware: bool


class OverrideIn(BaseModel):
    study_id: int = Field(ge=1)
    agree: bool
    label: LabelIn | None = Field(
        default=None, description="the corrected label; required when agree is false"
    )
    comment: str | None = Field(default=None, max_length=2000)


class OverrideOut(BaseModel):
    id: int
    study_id: int
    user_name: str
    created_at: datetime
    agree: bool | None
    ai_label: dict[str, Any] | None
    radiologist_label: dict[str, Any]
    comment: str | None
    analysis_id: int | None
    verified_sr_result_id: int | None = None
    verified_sr: Literal["off", "queued", "no_ai_sr", "failed"] | None = Field(
        default=None,
        description="on create: whether a radiologist-verified SR was queued ([review] "
        "send_verified_sr), the study had no AI SR, or building it failed (see the log)",
    )


class OverridePage(Page[OverrideOut]):
    """Radiologists' reviews, newest first."""


def _study(i: WorklistItem) -> StudyOut:
    return from_row(StudyOut, i, id=i.study_id)


def _override(
    o: OverrideRow, verified: int | None = None, outcome: VerifiedOutcome | None = None
) -> OverrideOut:
    return from_row(
        OverrideOut, o, analysis_id=o.result_id, verified_sr_result_id=verified, verified_sr=outcome
    )


def _viewed_review(request: Request, study_id: int, principal: Principal) -> StudyReview:
    """The study's review, its viewing by ``principal`` through the API audited."""
    ctx = context(request)
    review = study_review(ctx.sessions, study_id)
    if review is None:
        raise HTTPException(404, "no analysed study with that id")
    audit.record(
        ctx.sessions,
        actor=principal.name,
        action=audit.Action.STUDY_VIEWED,
        object_type="study",
        object_id=str(study_id),
        detail={"via": "api"},
    )
    return review


@router.get("/openapi.json", include_in_schema=False)
def openapi(request: Request, _: Annotated[Principal, Depends(authenticated)]) -> dict[str, Any]:
    schema: dict[str, Any] = request.app.openapi()
    return schema


@router.get("/studies", response_model=StudyPage, summary="Analysed studies (worklist order)")
def studies(
    request: Request,
    principal: Annotated[Principal, Depends(authenticated)],
    needs_attention: Annotated[
        bool,
        Query(
            description="only what needs the caller's attention (flagged, not reviewed, "
            "unclaimed or claimed by the caller), oldest first; otherwise not reviewed first, "
            "flagged first, newest first"
        ),
    ] = False,
    decision: Literal["present", "absent", "indeterminate"] | None = None,
    body_part: Annotated[str | None, Query(max_length=32)] = None,
    reviewed: bool | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> StudyPage:
    require_time_zone("since", since)
    require_time_zone("until", until)
    result = worklist(
        context(request).sessions,
        WorklistFilter(
            decision,
            body_part,
            reviewed,
            since,
            until,
            limit,
            offset,
            attention_of=principal.name if needs_attention else None,
        ),
    )
    return StudyPage(
        items=[_study(i) for i in result.items],
        total=result.total,
        limit=limit,
        offset=offset,
        by_decision=result.by_decision,
    )


@router.get("/studies/{study_id}", response_model=StudyOut, summary="One analysed study")
def study(
    request: Request, study_id: int, principal: Annotated[Principal, Depends(authenticated)]
) -> StudyOut:
    return _study(_viewed_review(request, study_id, principal).item)


@router.get(
    "/studies/{study_id}/predictions",
    response_model=Predictions,
    summary="The AI's per-image predictions for a study",
)
def predictions(
    request: Request, study_id: int, principal: Annotated[Principal, Depends(authenticated)]
) -> Predictions:
    review = _viewed_review(request, study_id, principal)
    images = []
    for image in review.images:
        p = image.prediction or {}
        images.append(
            PredictionOut(
                **{
                    k: v
                    for k, v in p.items()
                    if k in PredictionOut.model_fields and k != "sop_instance_uid"
                },
                sop_instance_uid=image.sop_instance_uid,
                not_analysed_reason=image.not_analysed_reason,
            )
        )
    a = review.analysis
    return Predictions(
        study_id=study_id,
        analysis_id=review.analysis_id,
        model=dict(a.get("model") or {}),
        decision=str(a.get("decision")),
        fracture_probability=float(a.get("fracture_probability") or 0.0),
        images=images,
    )


@router.get(
    "/overrides", response_model=OverridePage, summary="Radiologists' reviews, newest first"
)
def overrides(
    request: Request,
    _: Annotated[Principal, Depends(authenticated)],
    study_id: int | None = None,
    user: Annotated[str | None, Query(max_length=64)] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> OverridePage:
    rows, total = list_overrides(
        context(request).sessions, study_id=study_id, user_name=user, limit=limit, offset=offset
    )
    return OverridePage(items=[_override(o) for o in rows], total=total, limit=limit, offset=offset)


@router.post(
    "/overrides",
    response_model=OverrideOut,
    status_code=201,
    summary="Review a study: agree with the AI, or disagree with the corrected label",
)
def create(
    request: Request, body: OverrideIn, principal: Annotated[Principal, Depends(authenticated)]
) -> OverrideOut:
    ctx = context(request)
    label = None if body.label is None else ReviewLabel(**body.label.model_dump())
    row = create_override(
        ctx.sessions,
        body.study_id,
        principal.name,
        agree=body.agree,
        label=label,
        comment=(body.comment or "").strip() or None,
    )
    outcome, verified = send_verified_sr(ctx, row.id)
    return _override(row, verified, outcome)
