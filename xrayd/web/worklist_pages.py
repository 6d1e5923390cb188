"""The live worklist: its page, its rows for the page's poller, "next", and claiming a study.

* ``GET /worklist``: "needs my attention" (the default) or all studies, with filters.
* ``GET /worklist/rows``: the same rows alone, for ``static/worklist.js``, which polls it every
  few seconds with ``If-None-Match``: 304 while :func:`storage.worklist.version` (two
  primary-key maxima) is unchanged. Polling, not server-sent events: ``[web] request_threads``
  bounds the handler threads and an event stream would hold one for as long as a tab is open.
* ``GET /worklist/next?from=ID``: 303 to the study that needs the caller's attention after
  study ``ID`` (the study page's "next"), or to ``/worklist?none=1``.
* ``POST /studies/{id}/claim`` and ``/release``: a study is claimed by this explicit action
  only (never by opening it); 409 when someone else holds it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import RedirectResponse, Response

from storage.claims import claim, release
from storage.worklist import WorklistFilter, next_for, version
from storage.worklist import worklist as load_worklist
from xrayd.web.auth import Principal, authenticated, context
from xrayd.web.pages import BODY_PARTS
from xrayd.web.paging import query_day
from xrayd.web.render import render, safe_next
from xrayd.web.worklist_patients import patient_columns

__all__ = ["router", "waiting"]

router = APIRouter(include_in_schema=False)

DECISIONS = ("present", "indeterminate", "absent")
PAGE_SIZE = 50
#: how often an open worklist asks for changes (a 304 costs two index lookups)
POLL_MS = 5000
#: bumped when the rows' markup changes, so a poller never keeps rows of an older layout
ROWS_REVISION = "1"


@dataclass(frozen=True)
class ListQuery:
    """The worklist's query parameters, parsed once for the page and its rows."""

    view: Literal["attention", "all"]
    decision: str
    body_part: str
    reviewed: str
    date_from: str
    date_to: str
    page: int

    def params(self, **changes: Any) -> dict[str, str]:
        values = {
            "view": self.view,
            "decision": self.decision,
            "body_part": self.body_part,
            "reviewed": self.reviewed,
            "from": self.date_from,
            "to": self.date_to,
            "page": str(self.page),
        }
        values.update({k: str(v) for k, v in changes.items()})
        defaults = {"view": "attention", "page": "1"}
        return {k: v for k, v in values.items() if v and defaults.get(k) != v}

    def url(self, path: str = "/worklist", **changes: Any) -> str:
        query = urlencode(self.params(**changes))
        return f"{path}?{query}" if query else path

    def storage_filter(self, user: str) -> WorklistFilter:
        since = query_day(self.date_from, "from")
        until = query_day(self.date_to, "to")
        return WorklistFilter(
            decision=self.decision or None,
            body_part=self.body_part or None,
            reviewed=None if not self.reviewed else self.reviewed == "yes",
            since=since,
            until=None if until is None else until + timedelta(days=1),
            limit=PAGE_SIZE,
            offset=(self.page - 1) * PAGE_SIZE,
            attention_of=user if self.view == "attention" else None,
            count_attention_of=user,
        )


def list_query(
    view: Annotated[Literal["attention", "all"], Query()] = "attention",
    decision: Annotated[str | None, Query(pattern="^(present|absent|indeterminate)?$")] = None,
    body_part: Annotated[str | None, Query(max_length=32)] = None,
    reviewed: Annotated[str | None, Query(pattern="^(yes|no)?$")] = None,
    date_from: Annotated[str | None, Query(alias="from", max_length=10)] = None,
    date_to: Annotated[str | None, Query(alias="to", max_length=10)] = None,
    page: Annotated[int, Query(ge=1, le=100000)] = 1,
) -> ListQuery:
    return ListQuery(
        view, decision or "", body_part or "", reviewed or "", date_from or "", date_to or "", page
    )


def waiting(since: datetime, now: datetime | None = None) -> str:
    """How long a study has waited, as the page shows it ("12 min", "3 h 05 min", "2 d 4 h");
    ``static/worklist.js`` keeps it current in the same format."""
    minutes = max(0, int(((now or datetime.now(UTC)) - since).total_seconds() // 60))
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


def _etag(token: str, principal: Principal, q: ListQuery) -> str:
    """The rows' entity tag: the data version, for this user and this query."""
    scope = f"{principal.name}\n{q.url()}\n{ROWS_REVISION}".encode()
    return f'W/"{token}-{hashlib.sha256(scope).hexdigest()[:16]}"'


def _values(request: Request, principal: Principal, q: ListQuery) -> dict[str, Any]:
    """What the page and its rows render (the version is read first: a change that lands
    while the rows load moves it again, so the next poll fetches them)."""
    ctx = context(request)
    etag = _etag(version(ctx.sessions), principal, q)
    result = load_worklist(ctx.sessions, q.storage_filter(principal.name))
    return {
        "worklist": result,
        "patients": patient_columns(request, result.items),
        "q": q,
        "pages": max(1, -(-result.total // PAGE_SIZE)),
        "etag": etag,
        "now": datetime.now(UTC),
        "waiting": waiting,
        "me": principal.name,
        "decisions": DECISIONS,
        "body_parts": BODY_PARTS,
    }


@router.get("/worklist")
def worklist_page(
    request: Request,
    principal: Annotated[Principal, Depends(authenticated)],
    q: Annotated[ListQuery, Depends(list_query)],
    none: Annotated[int | None, Query(ge=0, le=1)] = None,
) -> Response:
    settings = context(request).settings.web
    return render(
        request,
        "worklist.html",
        nothing_else=bool(none),
        poll_ms=POLL_MS,
        idle_ms=int(settings.session_idle_minutes * 60_000),
        **_values(request, principal, q),
    )


@router.get("/worklist/rows")
def worklist_rows(
    request: Request,
    principal: Annotated[Principal, Depends(authenticated)],
    q: Annotated[ListQuery, Depends(list_query)],
) -> Response:
    """The rows of ``/worklist`` with the same query; 304 while nothing changed."""
    ctx = context(request)
    etag = _etag(version(ctx.sessions), principal, q)
    sent = request.headers.get("if-none-match", "")
    if etag in (t.strip() for t in sent.split(",")):
        return Response(status_code=304, headers={"ETag": etag})
    values = _values(request, principal, q)
    response = render(request, "_worklist_rows.html", **values)
    response.headers["ETag"] = values["etag"]
    return response


@router.get("/worklist/next")
def next_study(
    request: Request,
    principal: Annotated[Principal, Depends(authenticated)],
    after: Annotated[int | None, Query(alias="from", ge=1)] = None,
) -> Response:
    found = next_for(context(request).sessions, principal.name, after)
    target = "/worklist?none=1" if found is None else f"/studies/{found}"
    return RedirectResponse(target, status_code=303)


@router.post("/studies/{study_id}/claim")
def claim_study(
    request: Request,
    study_id: int,
    principal: Annotated[Principal, Depends(authenticated)],
    next: Annotated[str, Form(max_length=2000)] = "/worklist",
) -> Response:
    claim(context(request).sessions, study_id, principal.name)
    return RedirectResponse(safe_next(next), status_code=303)


@router.post("/studies/{study_id}/release")
def release_study(
    request: Request,
    study_id: int,
    principal: Annotated[Principal, Depends(authenticated)],
    next: Annotated[str, Form(max_length=2000)] = "/worklist",
) -> Response:
    release(context(request).sessions, study_id, principal.name)
    return RedirectResponse(safe_next(next), status_code=303)
