"""Administrator pages: callers and destinations (with C-ECHO), outbox, jobs, models, audit
trail (with CSV export); the users page is :mod:`xrayd.web.admin_user_pages`, included here.
The home page leads with what needs attention (dead deliveries and jobs).

Every route needs the admin role (radiologists get 403). Forms post with the session's CSRF
token and answer with a redirect back to their page (``?done=...`` names what happened: one of
:data:`DONE`, never free text); a refused form answers with its page again, the message beside
the form and the values typed (:mod:`xrayd.web.admin_forms`: 422, 409 for a conflict); the
C-ECHO form answers with the page and the echo's outcome.
Every change is one call of :mod:`xrayd.admin` as ``web:<admin>`` (the rules, the audit row
in the change's transaction and the typed errors are the CLI's and the REST API's too).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from config.settings import DEFAULT_SEND, OBJECT_KINDS
from storage.audit import Action, AuditRow, record, search_audit
from storage.errors import ConflictError, InvalidEntryError
from storage.model_versions import list_model_versions
from storage.peers import get_destination, list_callers, list_destinations
from storage.status import status_counts
from storage.training import get_run, list_runs
from xrayd.admin import jobs as admin_jobs
from xrayd.admin import models as admin_models
from xrayd.admin import peers as admin_peers
from xrayd.admin.actor import Actor
from xrayd.web import admin_user_pages
from xrayd.web.admin_attention import needs_attention
from xrayd.web.admin_forms import DONE, FieldWords, FormError, refusal
from xrayd.web.admin_forms import back as _back
from xrayd.web.admin_forms import flash as _flash
from xrayd.web.admin_schemas import EchoOut
from xrayd.web.admin_support import (
    deliveries_page,
    echo_destination,
    jobs_page,
    model_bundle,
    retry_deliveries,
)
from xrayd.web.auth import Principal, admin, context
from xrayd.web.render import render

__all__ = ["CSV_MAX_ROWS", "DONE", "csv_cell", "index_with_error", "router"]

LOGGER = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False, dependencies=[Depends(admin)])

Admin = Annotated[Principal, Depends(admin)]
PAGE_SIZE = 50
MAX_PAGE = 200  # outbox and jobs: storage lists oldest first, so deep pages cost a scan
CSV_MAX_ROWS = 100_000
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _pages(total: int, page_size: int = PAGE_SIZE) -> int:
    return max(1, -(-total // page_size))


# -- callers and destinations --------------------------------------------------------------------


def _listening_on(host: str) -> str:
    """The address a modality should use: the configured one, or this machine's name when the
    listener takes every address (0.0.0.0 / ::)."""
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - read, not bound
        return socket.getfqdn()
    return host


def _index(
    request: Request,
    echo: EchoOut | None = None,
    echo_name: str | None = None,
    form_error: FormError | None = None,
) -> Response:
    ctx = context(request)
    node = ctx.settings.node
    return render(
        request,
        "admin/index.html",
        status_code=200 if form_error is None else form_error.status,
        section="index",
        attention=needs_attention(ctx.sessions),
        form_error=form_error,
        callers=list_callers(ctx.sessions),
        destinations=list_destinations(ctx.sessions),
        accept_any_caller=ctx.settings.node.accept_any_caller,
        node_ae_title=node.ae_title,
        node_address=_listening_on(node.host),
        node_port=node.port,
        node_tls=node.tls is not None,
        echo=echo,
        echo_name=echo_name,
        flash=_flash(request),
        kinds=OBJECT_KINDS,
        default_send=DEFAULT_SEND,
    )


@router.get("/admin")
def admin_index(request: Request) -> Response:
    return _index(request)


def index_with_error(request: Request, form_error: FormError) -> Response:
    """The home page with a form FastAPI refused (:mod:`xrayd.web.admin_validation`)."""
    return _index(request, form_error=form_error)


def _actor(principal: Principal) -> Actor:
    return Actor.web(principal.name)


#: which input a refusal of the caller or destination form is about (see ``refusal``)
CALLER_FIELDS: FieldWords = (("ae_title", ("ae title", "caller")), ("host", ("host",)))
DESTINATION_FIELDS: FieldWords = (
    ("ca_file", ("ca_file",)),
    ("cert_file", ("cert_file",)),
    ("key_file", ("key_file",)),
    ("server_hostname", ("server_hostname",)),
    ("ae_title", ("ae title", "ae_title")),
    ("port", ("port",)),
    ("host", ("host",)),
    ("send", ("send", "object kind")),
    ("name", ("name",)),
)


@router.post("/admin/callers")
def caller_add(
    request: Request,
    principal: Admin,
    ae_title: Annotated[str, Form(max_length=64)],
    host: Annotated[str, Form(max_length=255)] = "",
) -> Response:
    try:
        admin_peers.add_caller(context(request).sessions, _actor(principal), ae_title, host)
    except (InvalidEntryError, ConflictError) as exc:
        typed = {"ae_title": ae_title, "host": host}
        return _index(request, form_error=refusal(exc, "caller", typed, CALLER_FIELDS))
    return _back("/admin", "caller_added")


@router.post("/admin/callers/remove")
def caller_remove(
    request: Request,
    principal: Admin,
    ae_title: Annotated[str, Form(max_length=64)],
    host: Annotated[str, Form(max_length=255)] = "",
) -> Response:
    admin_peers.remove_caller(context(request).sessions, _actor(principal), ae_title, host)
    return _back("/admin", "caller_removed")


@router.post("/admin/destinations")
def destination_add(
    request: Request,
    principal: Admin,
    name: Annotated[str, Form(max_length=255)],
    ae_title: Annotated[str, Form(max_length=64)],
    host: Annotated[str, Form(max_length=255)],
    port: Annotated[str, Form(max_length=16)],
    send: Annotated[list[str] | None, Form()] = None,
    tls: Annotated[str, Form()] = "",
    ca_file: Annotated[str, Form(max_length=1024)] = "",
    cert_file: Annotated[str, Form(max_length=1024)] = "",
    key_file: Annotated[str, Form(max_length=1024)] = "",
    server_hostname: Annotated[str, Form(max_length=253)] = "",
) -> Response:
    values: dict[str, Any] = {
        "name": name.strip(),
        "ae_title": ae_title,
        "host": host,
        "port": port,
        "send": send or [],
    }
    if tls == "yes":
        tls_values = {
            "ca_file": ca_file.strip(),
            "cert_file": cert_file.strip(),
            "key_file": key_file.strip(),
            "server_hostname": server_hostname.strip(),
        }
        values["tls"] = {k: v for k, v in tls_values.items() if v}
    try:
        admin_peers.add_destination(context(request).sessions, _actor(principal), values)
    except (InvalidEntryError, ConflictError) as exc:
        typed = {
            **values,
            "send": send or [],
            "tls": tls == "yes",
            "ca_file": ca_file,
            "cert_file": cert_file,
            "key_file": key_file,
            "server_hostname": server_hostname,
        }
        return _index(request, form_error=refusal(exc, "destination", typed, DESTINATION_FIELDS))
    return _back("/admin", "destination_added")


@router.post("/admin/destinations/{name}/remove")
def destination_remove(request: Request, name: str, principal: Admin) -> Response:
    admin_peers.remove_destination(context(request).sessions, _actor(principal), name)
    return _back("/admin", "destination_removed")


@router.post("/admin/destinations/{name}/echo")
async def destination_echo(request: Request, name: str) -> Response:
    ctx = context(request)
    row = await run_in_threadpool(get_destination, ctx.sessions, name)
    if row is None:
        raise HTTPException(404, f"No destination named {name!r}.")
    result = await echo_destination(ctx.settings, row)
    LOGGER.info("C-ECHO by an admin", extra={"destination": row.name, "ok": result.ok})
    return await run_in_threadpool(_index, request, result, row.name)


# -- outbox and jobs -----------------------------------------------------------------------------


@router.get("/admin/outbox")
def outbox_page(
    request: Request,
    state: Annotated[str, Query(pattern="^(pending|sent|dead|all)$")] = "dead",
    page: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1,
) -> Response:
    rows, total = deliveries_page(request, _state(state), PAGE_SIZE, (page - 1) * PAGE_SIZE)
    counts = status_counts(context(request).sessions)
    return _by_state_page(
        request,
        "outbox",
        state,
        ("dead", "pending", "sent", "all"),
        counts.deliveries_by_state,
        page,
        total,
        deliveries=rows,
    )


@router.post("/admin/outbox/retry-dead")
def outbox_retry_dead(request: Request, principal: Admin) -> Response:
    ids = retry_deliveries(request, _actor(principal), None)
    if not ids:
        return _back("/admin/outbox?state=dead", "no_dead_deliveries")
    return _back("/admin/outbox?state=pending", "deliveries_retried", len(ids))


@router.post("/admin/outbox/{delivery_id}/retry")
def outbox_retry(request: Request, delivery_id: int, principal: Admin) -> Response:
    retry_deliveries(request, _actor(principal), delivery_id)
    return _back("/admin/outbox?state=dead", "delivery_retried")


@router.get("/admin/jobs")
def jobs_page_view(
    request: Request,
    state: Annotated[str, Query(pattern="^(queued|running|done|dead|cancelled|all)$")] = "dead",
    page: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1,
) -> Response:
    rows, total = jobs_page(request, _state(state), PAGE_SIZE, (page - 1) * PAGE_SIZE)
    counts = status_counts(context(request).sessions)
    return _by_state_page(
        request,
        "jobs",
        state,
        ("dead", "queued", "running", "done", "cancelled", "all"),
        counts.jobs_by_state,
        page,
        total,
        jobs=rows,
        queues=counts.queues,
    )


def _state(state: str) -> str | None:
    return None if state == "all" else state


def _by_state_page(
    request: Request,
    section: str,
    state: str,
    states: tuple[str, ...],
    counts: dict[str, int],
    page: int,
    total: int,
    **rows: Any,
) -> Response:
    """The outbox or the jobs page (``admin/<section>.html``): one page of ``rows`` in
    ``state``, with links to the other ``states`` and their ``counts``."""
    return render(
        request,
        f"admin/{section}.html",
        section=section,
        total=total,
        counts=counts,
        state=state,
        states=states,
        page=page,
        pages=min(MAX_PAGE, _pages(total)),
        flash=_flash(request),
        **rows,
    )


@router.post("/admin/jobs/retry-dead")
def jobs_retry_dead(request: Request, principal: Admin) -> Response:
    # the page lists analysis jobs: "retry all" retries those (xrayd queue retry --dead: any)
    ids = admin_jobs.retry_jobs(
        context(request).sessions, _actor(principal), None, queue_name="analysis"
    )
    if not ids:
        return _back("/admin/jobs", "no_dead_jobs")
    return _back("/admin/jobs", "jobs_retried", len(ids))


@router.post("/admin/jobs/{job_id}/retry")
def job_retry(request: Request, job_id: int, principal: Admin) -> Response:
    admin_jobs.retry_jobs(context(request).sessions, _actor(principal), job_id)
    return _back("/admin/jobs", "job_retried")


@router.post("/admin/jobs/{job_id}/cancel")
def job_cancel(request: Request, job_id: int, principal: Admin) -> Response:
    """Cancel a queued job (unknown 404; no longer queued, e.g. running: 409)."""
    admin_jobs.cancel_job(context(request).sessions, _actor(principal), job_id)
    return _back("/admin/jobs?state=cancelled", "job_cancelled")


# -- models --------------------------------------------------------------------------------------


@router.get("/admin/models")
def models_page(request: Request) -> Response:
    ctx = context(request)
    return render(
        request,
        "admin/models.html",
        section="models",
        bundle=model_bundle(ctx.settings),
        versions=list_model_versions(ctx.sessions),
        runs=list_runs(ctx.sessions, limit=20),
        flash=_flash(request),
    )


REPORT_FILES = {
    "report.json": "application/json",
    "metrics.png": "image/png",
    "roc.png": "image/png",
    "disagreement.png": "image/png",
}


@router.get("/admin/runs/{run_id}/report/{name}")
def run_report_file(request: Request, run_id: int, name: str) -> Response:
    """A retraining run's report file (only the known names inside its report directory)."""
    if name not in REPORT_FILES:
        raise HTTPException(404, "no such report file")
    run = get_run(context(request).sessions, run_id)
    if run is None or not run.report_path:
        raise HTTPException(404, "this run has no report")
    path = Path(run.report_path) / name
    if not path.is_file():
        raise HTTPException(404, "this report file is missing")
    return Response(path.read_bytes(), media_type=REPORT_FILES[name])


@router.post("/admin/models/{version}/promote")
def model_promote(request: Request, version: str, principal: Admin) -> Response:
    ctx = context(request)
    admin_models.promote(ctx.sessions, _actor(principal), version)  # unknown 404, refused 409
    ctx.model_changed()
    return _back("/admin/models", "model_promoted")


@router.post("/admin/models/rollback")
def model_rollback(request: Request, principal: Admin) -> Response:
    ctx = context(request)
    admin_models.rollback(ctx.sessions, _actor(principal))
    ctx.model_changed()
    return _back("/admin/models", "model_rolled_back")


# -- audit ---------------------------------------------------------------------------------------


def _day(value: str, name: str) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise HTTPException(422, f"{name}: expected a date as YYYY-MM-DD") from None


AuditText = Annotated[str, Query(max_length=128)]


def _audit_filter(
    actor: AuditText = "",
    action: AuditText = "",
    object_type: AuditText = "",
    object_id: AuditText = "",
    date_from: Annotated[str, Query(alias="from", max_length=10)] = "",
    date_to: Annotated[str, Query(alias="to", max_length=10)] = "",
) -> dict[str, str]:
    return {
        "actor": actor.strip(),
        "action": action.strip(),
        "object_type": object_type.strip(),
        "object_id": object_id.strip(),
        "from": date_from.strip(),
        "to": date_to.strip(),
    }


AuditFilter = Annotated[dict[str, str], Depends(_audit_filter)]


def _search(
    request: Request, f: dict[str, str], limit: int, offset: int
) -> tuple[list[AuditRow], int]:
    until = _day(f["to"], "to")
    return search_audit(
        context(request).sessions,
        actor=f["actor"] or None,
        action=f["action"] or None,
        object_type=f["object_type"] or None,
        object_id=f["object_id"] or None,
        since=_day(f["from"], "from"),
        until=None if until is None else until + timedelta(days=1),  # "to" is inclusive
        limit=limit,
        offset=offset,
    )


@router.get("/admin/audit")
def audit_page(
    request: Request,
    filters: AuditFilter,
    page: Annotated[int, Query(ge=1, le=100_000)] = 1,
) -> Response:
    rows, total = _search(request, filters, PAGE_SIZE, (page - 1) * PAGE_SIZE)
    query = urlencode({k: v for k, v in filters.items() if v})
    return render(
        request,
        "admin/audit.html",
        section="audit",
        events=rows,
        total=total,
        filters=filters,
        query_string=query,
        page=page,
        pages=_pages(total),
        detail_json=_detail,
    )


def _detail(detail: dict[str, Any]) -> str:
    return json.dumps(detail, sort_keys=True, ensure_ascii=False, default=str)


def csv_cell(value: object) -> str:
    """A CSV cell a spreadsheet will not run: text starting with = + - @ (or tab/CR) gets a
    leading apostrophe (OWASP's advice against CSV formula injection)."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(FORMULA_START) else text


def _csv(rows: list[AuditRow]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["id", "at", "actor", "action", "object_type", "object_id", "detail"])
    for r in rows:
        writer.writerow(
            [
                csv_cell(v)
                for v in (
                    r.id,
                    r.at.isoformat(),
                    r.actor,
                    r.action,
                    r.object_type,
                    r.object_id,
                    _detail(r.detail),
                )
            ]
        )
    return out.getvalue()


@router.get("/admin/audit.csv")
def audit_csv(request: Request, principal: Admin, filters: AuditFilter) -> Response:
    rows, total = _search(request, filters, CSV_MAX_ROWS, 0)
    record(
        context(request).sessions,
        actor=_actor(principal).name,
        action=Action.AUDIT_EXPORTED,
        object_type="audit",
        detail={
            "filters": {k: v for k, v in filters.items() if v},
            "rows": len(rows),
            "total": total,
        },
    )
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return Response(
        _csv(rows),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="xrayd-audit-{stamp}.csv"'},
    )


# -- users: xrayd.web.admin_user_pages ---------------------------------------------------------

admin_user_pages.add_routes(router)
