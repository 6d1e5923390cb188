"""Radiologist pages: login, study viewer and the review form (the worklist:
:mod:`xrayd.web.worklist_pages`)."""

from __future__ import annotations

import hmac
import logging
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from models.errors import NotAnalysable, RefusalReason
from models.labels import BODY_PARTS as MODEL_BODY_PARTS
from models.limits import ImageLimits
from storage import audit
from storage.bytestore import ByteStore, ByteStoreError, ByteStoreUnavailableError
from storage.logins import LoginLimits, attempt_failed, attempt_succeeded, begin_attempt
from storage.reviews import ReviewRefused, create_override, study_review
from storage.users import authenticate, create_session, end_session
from xrayd.runtime.limits import image_limits
from xrayd.web.auth import COOKIE, Principal, authenticated, context
from xrayd.web.images import heatmap_overlay_png, radiograph_png, read_header
from xrayd.web.peers import client_address
from xrayd.web.render import LOGIN_CSRF_COOKIE, login_page, render, safe_next
from xrayd.web.verdict import (
    posted_form,
    posted_label,
    refusal_json,
    refused_form,
    saved_answer,
    verdict_view,
    wants_json,
)
from xrayd.web.verified import send_verified_sr
from xrayd.web.viewport import viewport_page

__all__ = ["BODY_PARTS", "router"]

LOGGER = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)

#: the body parts the model knows (``models.labels``): the review form and filters offer these
BODY_PARTS: tuple[str, ...] = tuple(MODEL_BODY_PARTS)
PNG_HEADERS = {"Cache-Control": "private, max-age=300"}


def _client(request: Request) -> str:
    return client_address(request, context(request).settings.web.trusted_proxies)


# -- login -------------------------------------------------------------------------------------


@router.get("/login")
def login_form(request: Request, next: str | None = None) -> Response:
    return login_page(request, next_url=next)


@router.post("/login")
def login(
    request: Request,
    username: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=1024)],
    csrf_token: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/worklist",
) -> Response:
    ctx = context(request)
    web = ctx.settings.web
    client = _client(request)
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not cookie or not hmac.compare_digest(cookie.encode(), csrf_token.encode()):
        return login_page(
            request, status_code=403, next_url=next, error="The form expired; please try again."
        )
    # The lock-out (storage.logins): per (name, address), per address, and per name only for
    # addresses that failed; a refused attempt checks no password and writes no audit event.
    limits = LoginLimits(web.login_max_failures, timedelta(seconds=web.login_window_seconds))
    attempt = begin_attempt(ctx.sessions, username, client, limits)
    if attempt.refused is not None:
        _count_login(request, "refused")
        LOGGER.debug("login refused: locked out (%s)", attempt.refused)
        minutes = max(1, round(web.login_window_seconds / 60))
        return login_page(
            request,
            status_code=429,
            next_url=next,
            error=f"Too many failed logins. Try again in up to {minutes} minutes.",
        )
    user = authenticate(ctx.sessions, username, password)
    if user is None:  # audited by attempt_failed
        _count_login(request, "failed")
        LOGGER.info("login failed", extra={"client": client})
        for scope in attempt_failed(ctx.sessions, attempt, limits):
            LOGGER.warning("login lock-out started (%s)", scope, extra={"client": client})
        return login_page(
            request, status_code=401, next_url=next, error="Wrong user name or password."
        )
    attempt_succeeded(ctx.sessions, attempt)
    _count_login(request, "ok")
    token, _ = create_session(ctx.sessions, user, timedelta(hours=web.session_hours), client=client)
    response = RedirectResponse(safe_next(next), status_code=303)
    response.set_cookie(
        COOKIE,
        token,
        max_age=int(web.session_hours * 3600),
        httponly=True,
        samesite="strict",
        secure=web.cookie_secure,
        path="/",
    )
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return response


def _count_login(request: Request, outcome: str) -> None:
    metrics = context(request).metrics
    if metrics is not None:
        metrics.login(outcome)


@router.post("/logout")
def logout(request: Request, principal: Annotated[Principal, Depends(authenticated)]) -> Response:
    ctx = context(request)
    cookie = request.cookies.get(COOKIE)
    if cookie:
        end_session(ctx.sessions, cookie, actor=principal.name)
    else:
        audit.record(
            ctx.sessions,
            actor=principal.name,
            action=audit.Action.LOGGED_OUT,
            object_type="user",
            object_id=principal.name,
        )
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


# -- worklist ----------------------------------------------------------------------------------


@router.get("/")
def home(principal: Annotated[Principal, Depends(authenticated)]) -> Response:
    return RedirectResponse("/worklist", status_code=303)


# -- study -------------------------------------------------------------------------------------


@router.get("/studies/{study_id}")
def study_page(
    request: Request, study_id: int, principal: Annotated[Principal, Depends(authenticated)]
) -> Response:
    ctx = context(request)
    review = study_review(ctx.sessions, study_id)
    if review is None:
        raise HTTPException(404, "no analysed study with that id")
    headers = {}
    store = ctx.byte_store()
    for image in review.images:
        try:
            with store.fetch(image.spool_path) as path:
                headers[image.instance_id] = read_header(path, image_limits(ctx.settings.limits))
        except (OSError, ValueError, NotAnalysable, ByteStoreError):
            LOGGER.warning("stored image unreadable", extra={"instance_id": image.instance_id})
    audit.record(
        ctx.sessions,
        actor=principal.name,
        action=audit.Action.STUDY_VIEWED,
        object_type="study",
        object_id=str(study_id),
    )
    first = next(iter(headers.values()), None)
    return render(
        request,
        "study.html",
        review=review,
        headers=headers,
        patient=first,
        body_parts=BODY_PARTS,
        flash=request.query_params.get("saved"),
        verdict=verdict_view(review, principal.name, getattr(request.state, "review_form", None)),
        viewport=viewport_page(review, ctx.settings.web),
    )


def _image_of(request: Request, study_id: int, instance_id: int) -> tuple[str, str | None]:
    review = study_review(context(request).sessions, study_id)
    if review is not None:
        for image in review.images:
            if image.instance_id == instance_id:
                return image.spool_path, image.heatmap_path
    raise HTTPException(404, "no such image in this study")


@router.get("/studies/{study_id}/images/{instance_id}.png")
async def image_png(
    request: Request,
    study_id: int,
    instance_id: int,
    principal: Annotated[Principal, Depends(authenticated)],
    wc: Annotated[float | None, Query()] = None,
    ww: Annotated[float | None, Query(gt=0)] = None,
) -> Response:
    spool_path, _ = _image_of(request, study_id, instance_id)
    store = context(request).byte_store()
    limits = image_limits(context(request).settings.limits)
    try:
        data = await run_in_threadpool(_radiograph, store, spool_path, wc, ww, limits)
    except ByteStoreUnavailableError as exc:
        LOGGER.warning("image store unavailable", extra={"instance_id": instance_id})
        raise HTTPException(503, "the image store is unavailable; try again") from exc
    except (
        NotAnalysable,
        ValueError,
        OSError,
        NotImplementedError,
        RuntimeError,
        ByteStoreError,
    ) as exc:
        LOGGER.warning(
            "image cannot be shown: %s", type(exc).__name__, extra={"instance_id": instance_id}
        )
        if isinstance(exc, NotAnalysable) and exc.reason == RefusalReason.IMAGE_TOO_LARGE:
            # refused from its header, before any decoding ([limits] in the settings)
            raise HTTPException(422, "image too large to show") from exc
        raise HTTPException(422, "this image cannot be shown") from exc
    return Response(data, media_type="image/png", headers=PNG_HEADERS)


@router.get("/studies/{study_id}/heatmaps/{instance_id}.png")
async def heatmap_png(
    request: Request,
    study_id: int,
    instance_id: int,
    principal: Annotated[Principal, Depends(authenticated)],
) -> Response:
    _, heatmap = _image_of(request, study_id, instance_id)
    if heatmap is None:
        raise HTTPException(404, "no heatmap for this image")
    try:
        data = await run_in_threadpool(_heatmap, context(request).byte_store(), heatmap)
    except ByteStoreUnavailableError as exc:
        raise HTTPException(503, "the image store is unavailable; try again") from exc
    except ByteStoreError as exc:
        LOGGER.warning("heatmap unreadable", extra={"instance_id": instance_id})
        raise HTTPException(404, "no heatmap for this image") from exc
    return Response(data, media_type="image/png", headers=PNG_HEADERS)


def _radiograph(
    store: ByteStore,
    key: str,
    center: float | None,
    width: float | None,
    limits: ImageLimits,
) -> bytes:
    """The stored image as a PNG (a worker thread: fetched from the store, then rendered)."""
    with store.fetch(key) as path:
        return radiograph_png(path, center=center, width=width, limits=limits)


def _heatmap(store: ByteStore, key: str) -> bytes:
    with store.fetch(key) as path:
        return heatmap_overlay_png(path)


# -- review ------------------------------------------------------------------------------------


@router.post("/studies/{study_id}/review")
def save_review(
    request: Request,
    study_id: int,
    principal: Annotated[Principal, Depends(authenticated)],
    verdict: Annotated[str | None, Form()] = None,
    fracture: Annotated[str | None, Form()] = None,
    count: Annotated[str | None, Form()] = None,
    body_part: Annotated[str | None, Form()] = None,
    hardware: Annotated[str | None, Form()] = None,
    comment: Annotated[str | None, Form()] = None,
    go_next: Annotated[str | None, Form(alias="next")] = None,
) -> Response:
    """Agree, or disagree with the corrected label (storage.reviews checks every rule). A
    refusal never leaves the page: 422 with a message per field, as JSON for the page's script
    (``Accept: application/json``) or as the study page again with what was typed. ``next=1``
    (a form field, or the query of the no-script "Save and next" button) goes on to the next
    study needing attention."""
    ctx = context(request)
    values = posted_form(fracture, count, body_part, hardware, comment)
    try:
        override = create_override(
            ctx.sessions,
            study_id,
            principal.name,
            agree=verdict == "agree",
            label=posted_label(verdict, values),
            comment=values["comment"].strip() or None,
        )
    except ReviewRefused as exc:
        if wants_json(request):
            return refusal_json(exc)
        request.state.review_form = refused_form(values, exc.problems)
        page = study_page(request, study_id, principal)
        page.status_code = 422
        return page
    outcome, _ = send_verified_sr(ctx, override.id)
    go = "1" in (go_next, request.query_params.get("next"))
    return saved_answer(request, study_id, override.id, outcome, go_next=go)
