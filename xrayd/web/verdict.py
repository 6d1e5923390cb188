"""The study page's verdict panel: what it shows and what its review form starts from.

The panel explains an indeterminate result (the model's band, from the decision parameters the
analysis recorded), puts the radiologist's label first once there is one, offers a claim when
nobody holds the study, and fills the review form: an indeterminate study starts empty (the
radiologist gives the label), any other from the newest review or the AI's label. A refused
form (:class:`ReviewForm` with errors) comes back with what was typed and a message per field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from fastapi import Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from storage.reviews import FRACTURE, ReviewLabel, ReviewRefused, StudyReview, ai_review_label

__all__ = [
    "FORM_FIELDS",
    "ReviewForm",
    "Verdict",
    "indeterminate_band",
    "posted_form",
    "posted_label",
    "refusal_json",
    "refused_form",
    "saved_answer",
    "verdict_view",
    "wants_json",
]

#: the review form's fields (what a refused form keeps); ``label``: the correction as a whole
FORM_FIELDS = ("fracture", "count", "body_part", "hardware", "comment")

Claim = Literal["claim", "mine", "other", "none"]


@dataclass(frozen=True)
class ReviewForm:
    """The review form's values (``hardware`` is ``yes``/``no``; empty: not chosen), its
    messages per field (``verdict``, a form field, or ``label``) and whether the correction
    fields are open."""

    values: Mapping[str, str]
    errors: Mapping[str, str] = field(default_factory=dict)
    open: bool = False

    def value(self, name: str) -> str:
        return self.values.get(name, "")


@dataclass(frozen=True)
class Verdict:
    """Everything the verdict panel shows besides the study's facts."""

    indeterminate: bool
    #: "AI is unsure: p = … lies in …; please give your reading" (indeterminate only)
    unsure: str | None
    #: why Agree is not possible (None: it is)
    agree_blocked: str | None
    #: the newest review's label (the radiologist's reading leads once there is one)
    radiologist: Mapping[str, Any] | None
    reviewer: str | None
    form: ReviewForm
    #: claim: nobody holds the unreviewed study; mine / other: assigned; none: reviewed
    claim: Claim


def _strongest(analysis: Mapping[str, Any]) -> Mapping[str, Any]:
    images = [i for i in analysis.get("images") or [] if isinstance(i, Mapping)]
    if not images:
        return {}
    return max(images, key=lambda i: float(i.get("fracture_probability") or 0.0))


def indeterminate_band(analysis: Mapping[str, Any]) -> tuple[float, float] | None:
    """The indeterminate band (low, high) the analysis decided with, from the model's decision
    parameters recorded with it (``model.parameters``); None when they were not recorded (an
    analysis from before they were) or a per-body-part point decided without its band."""
    params = (analysis.get("model") or {}).get("parameters") or {}
    top = _strongest(analysis)
    part = top.get("threshold_body_part") or top.get("body_part")
    if part and f"threshold_{part}" in params:
        low = params.get(f"indeterminate_low_{part}")
        high = params.get(f"indeterminate_high_{part}")
    else:
        low, high = params.get("indeterminate_low"), params.get("indeterminate_high")
    if low is None or high is None:
        return None
    try:
        return float(low), float(high)
    except (TypeError, ValueError):
        return None


def _unsure(review: StudyReview) -> str:
    p = review.item.fracture_probability
    band = indeterminate_band(review.analysis)
    where = (
        "this model's indeterminate band"
        if band is None
        else f"this model's indeterminate band {band[0]:.2f}\u2013{band[1]:.2f}"
    )
    return (
        f"AI is unsure: p = {p:.3f} lies in {where}; please give your reading. "
        "Between these two thresholds the model neither flags nor clears the study."
    )


def _starting_form(review: StudyReview, indeterminate: bool) -> ReviewForm:
    item = review.item
    last = review.overrides[-1].radiologist_label if review.overrides else None
    if last is not None:
        source: Mapping[str, Any] = last
    elif indeterminate:  # fracture and count are the radiologist's to give
        source = {"body_part": item.body_part, "hardware": item.hardware}
    else:
        source = {
            "fracture": item.decision,
            "count": item.count,
            "body_part": item.body_part,
            "hardware": item.hardware,
        }
    hardware = source.get("hardware")
    return ReviewForm(
        values={
            "fracture": str(source.get("fracture") or ""),
            "count": str(source.get("count") or ""),
            "body_part": str(source.get("body_part") or ""),
            "hardware": "" if hardware is None else ("yes" if hardware else "no"),
            "comment": "",
        },
        open=indeterminate,
    )


def verdict_view(review: StudyReview, user_name: str, refused: ReviewForm | None) -> Verdict:
    """The verdict panel of ``review`` for ``user_name``; ``refused``: a form sent back."""
    item = review.item
    indeterminate = item.decision not in FRACTURE
    if indeterminate:
        blocked: str | None = "The AI is unsure (indeterminate): give your reading instead."
    elif not _agreeable(review):
        blocked = _contradiction(review)
    else:
        blocked = None
    if item.reviewed:
        claim: Claim = "none"
    elif item.assigned_to is None:
        claim = "claim"
    else:
        claim = "mine" if item.assigned_to == user_name else "other"
    last = review.overrides[-1] if review.overrides else None
    return Verdict(
        indeterminate=indeterminate,
        unsure=_unsure(review) if indeterminate else None,
        agree_blocked=blocked,
        radiologist=last.radiologist_label if last is not None else None,
        reviewer=last.user_name if last is not None else None,
        form=refused if refused is not None else _starting_form(review, indeterminate),
        claim=claim,
    )


def _ai(review: StudyReview) -> dict[str, Any]:
    item = review.item
    return {
        "decision": item.decision,
        "count": item.count,
        "body_part": item.body_part,
        "hardware": item.hardware,
    }


def _agreeable(review: StudyReview) -> bool:
    return ai_review_label(_ai(review)) is not None


def _contradiction(review: StudyReview) -> str:
    item = review.item
    return (
        f"The AI's count ({item.count}) contradicts its finding ({item.decision}): "
        "give your reading instead."
    )


def posted_form(
    fracture: str | None,
    count: str | None,
    body_part: str | None,
    hardware: str | None,
    comment: str | None,
) -> dict[str, str]:
    """What a review form sent, as the form's values (kept when it is refused)."""
    return {
        "fracture": fracture or "",
        "count": count or "",
        "body_part": body_part or "",
        "hardware": hardware or "",
        "comment": comment or "",
    }


def refused_form(values: Mapping[str, str], problems: tuple[tuple[str, str], ...]) -> ReviewForm:
    """The form sent back: the values typed, the first message per field (capitalised)."""
    errors: dict[str, str] = {}
    for name, message in problems:
        errors.setdefault(name, message[:1].upper() + message[1:])
    return ReviewForm(values=dict(values), errors=errors, open=True)


def wants_json(request: Request) -> bool:
    """Whether the form was sent by the page's script (``Accept: application/json``)."""
    return "application/json" in request.headers.get("accept", "")


def posted_label(verdict: str | None, values: Mapping[str, str]) -> ReviewLabel | None:
    """The label a review form sent (None for an Agree), every problem with it at once."""
    if verdict == "agree":
        return None
    if verdict != "disagree":
        raise ReviewRefused((("verdict", "choose Agree or Disagree (verdict)"),))
    problems: list[tuple[str, str]] = []
    if values.get("hardware") not in ("yes", "no"):
        problems.append(("hardware", "hardware must be 'yes' or 'no'"))
    try:
        label = ReviewLabel(
            values.get("fracture", ""),  # type: ignore[arg-type]  # checked by ReviewLabel
            values.get("count", ""),  # type: ignore[arg-type]
            values.get("body_part", ""),
            values.get("hardware") == "yes",
        )
    except ReviewRefused as exc:
        problems[:0] = exc.problems
    if problems:
        raise ReviewRefused(tuple(problems))
    return label


def refusal_json(exc: ReviewRefused) -> JSONResponse:
    """A refused review for the page's script: 422 with a message per field."""
    return JSONResponse(
        {
            "detail": str(exc),
            "errors": [
                {"field": name, "message": message[:1].upper() + message[1:]}
                for name, message in exc.problems
            ],
        },
        status_code=422,
    )


def saved_answer(
    request: Request, study_id: int, override_id: int, sr: str, *, go_next: bool
) -> Response:
    """Where a saved review goes: the next study needing attention (save and next) or the
    study page saying it was saved; as JSON ``{"location": ...}`` for the page's script."""
    if go_next:
        location = f"/worklist/next?from={study_id}"
    else:
        location = f"/studies/{study_id}?saved={override_id}&sr={sr}"
    if wants_json(request):
        return JSONResponse({"override_id": override_id, "sr": sr, "location": location})
    return RedirectResponse(location, status_code=303)
