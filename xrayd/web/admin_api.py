"""REST API v1 for administrators: callers, destinations (with C-ECHO), outbox, jobs, models,
audit trail and users.

Every route needs the admin role (403 for radiologists). Lists answer ``{"items", "total",
"limit", "offset"}``; unknown ids answer 404, invalid input 422 with a message. Every change is
recorded in the audit trail with the admin's name as actor. The helpers shared with the admin
pages (:mod:`xrayd.web.admin_pages`) live here too: destination validation, C-ECHO, paging of
the outbox and jobs, and the summary of the configured model bundle.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from pydantic import BaseModel, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from config.settings import DEFAULT_SEND, DestinationSettings, ObjectKind, Settings
from dicom_node.errors import PeerUnreachableError
from dicom_node.scu import RemoteAE, echo
from dicom_node.tls import ClientTLS
from storage.errors import JobNotFoundError
from storage.jobs import JobRow, list_jobs, retry_dead
from storage.model_versions import ModelVersionRow, list_model_versions
from storage.outbox import (
    DeliveryNotFoundError,
    DeliveryRow,
    get_delivery,
    list_deliveries,
    retry_dead_deliveries,
    retry_delivery,
)
from storage.peers import (
    AuditRow,
    CallerRow,
    DestinationRow,
    InvalidEntryError,
    add_caller,
    add_destination,
    get_destination,
    list_callers,
    list_destinations,
    record_audit,
    remove_caller,
    remove_destination,
    search_audit,
)
from storage.schema import JobState, Source
from storage.status import status_counts
from storage.users import ApiTokenRow, UserRow, list_tokens, list_users
from xrayd.pipeline.delivery import outgoing_limits, stored_tls
from xrayd.web.auth import Principal, admin, context

__all__ = [
    "ECHO_TIMEOUT",
    "MAX_OFFSET",
    "BundleOut",
    "EchoOut",
    "checked_destination",
    "deliveries_page",
    "echo_destination",
    "jobs_page",
    "model_bundle",
    "retry_dead_jobs",
    "retry_deliveries",
    "router",
]

LOGGER = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1", tags=["admin"], dependencies=[Depends(admin)])

#: seconds a C-ECHO may take at most (connection, association and response each)
ECHO_TIMEOUT = 5.0
#: outbox and job listings page through storage's oldest-first lists; deeper pages are refused
MAX_OFFSET = 10_000
REPORT_PATH = Path("report") / "report.json"

Admin = Annotated[Principal, Depends(admin)]
Limit = Annotated[int, Query(ge=1, le=500, description="page size")]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="items to skip")]
DeliveryStateName = Literal["pending", "sent", "dead"]
JobStateName = Literal["queued", "running", "done", "dead", "cancelled"]
T = TypeVar("T")


# -- shared helpers (pages and API) --------------------------------------------------------------


def now() -> datetime:
    return datetime.now(UTC)


def checked_destination(values: Mapping[str, Any]) -> DestinationRow:
    """A web-added destination (``source="cli"``: kept across restarts) from form or JSON
    values, checked by the same rules as the settings file; InvalidEntryError names the field."""
    try:
        d = DestinationSettings.model_validate(dict(values))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'destination'}: {e['msg']}"
            for e in exc.errors()
        )
        raise InvalidEntryError(f"invalid destination: {problems}") from None
    return DestinationRow(
        name=d.name,
        ae_title=d.ae_title,
        host=d.host,
        port=d.port,
        send=tuple(d.send),
        source=Source.CLI.value,
        tls=stored_tls(d.tls),
    )


class EchoOut(BaseModel):
    ok: bool
    status: int | None = Field(description="the C-ECHO's DIMSE status; null without a response")
    detail: str


async def echo_destination(settings: Settings, row: DestinationRow) -> EchoOut:
    """C-ECHO ``row`` (over TLS when it has TLS settings) from the node's AE title, in a
    worker thread, with the deliveries' bounds (``[delivery]`` connection and read timeouts,
    maximum PDU), each timeout at most :data:`ECHO_TIMEOUT` seconds."""
    try:
        tls = None if row.tls is None else ClientTLS.from_mapping(row.tls)
    except ValueError as exc:
        return EchoOut(ok=False, status=None, detail=f"the TLS settings are unusable: {exc}")
    remote = RemoteAE(row.ae_title, row.host, row.port, tls=tls)
    limits = outgoing_limits(settings.delivery, at_most=ECHO_TIMEOUT)
    try:
        status = await run_in_threadpool(echo, remote, settings.node.ae_title, limits=limits)
    except PeerUnreachableError as exc:
        return EchoOut(ok=False, status=None, detail=str(exc))
    except (OSError, ValueError, RuntimeError) as exc:
        LOGGER.warning("C-ECHO failed: %s", type(exc).__name__, extra={"destination": row.name})
        return EchoOut(ok=False, status=None, detail=f"{remote}: {type(exc).__name__}")
    if status == 0:
        return EchoOut(ok=True, status=0, detail=f"{remote} answered the C-ECHO (status 0x0000)")
    return EchoOut(ok=False, status=status, detail=f"{remote} answered with status 0x{status:04X}")


def _page(rows: Sequence[T], limit: int, offset: int) -> list[T]:
    return list(rows[offset : offset + limit])


def deliveries_page(
    request: Request, state: str | None, limit: int, offset: int
) -> tuple[list[DeliveryRow], int]:
    """One page of deliveries (oldest first) and how many there are in ``state`` (or at all)."""
    sm = context(request).sessions
    counts = status_counts(sm).deliveries_by_state
    total = counts.get(state, 0) if state else sum(counts.values())
    return _page(list_deliveries(sm, state, limit=offset + limit), limit, offset), total


def jobs_page(
    request: Request, state: str | None, limit: int, offset: int
) -> tuple[list[JobRow], int]:
    """One page of jobs (oldest first) and how many there are in ``state`` (or at all)."""
    sm = context(request).sessions
    counts = status_counts(sm).jobs_by_state
    total = counts.get(state, 0) if state else sum(counts.values())
    return _page(list_jobs(sm, state, limit=offset + limit), limit, offset), total


def retry_deliveries(request: Request, actor: str, delivery_id: int | None) -> list[int]:
    """Queue one dead delivery (or every dead one when ``delivery_id`` is None) again, audit
    each, and wake the sender. 404/409 for an unknown or not-dead delivery. Their queue jobs
    are revived (one dead before the one queue gets a job with ``[delivery] max_attempts``)."""
    ctx = context(request)
    attempts = ctx.settings.delivery.max_attempts
    if delivery_id is None:
        ids = retry_dead_deliveries(ctx.sessions, now(), max_attempts=attempts)
    else:
        try:
            row = get_delivery(ctx.sessions, delivery_id)
            done = retry_delivery(ctx.sessions, delivery_id, now(), max_attempts=attempts)
        except DeliveryNotFoundError:
            raise HTTPException(404, f"no delivery with id {delivery_id}") from None
        if not done:
            raise HTTPException(409, f"delivery {delivery_id} is {row.state}, not dead")
        ids = [delivery_id]
    for i in ids:
        record_audit(
            ctx.sessions,
            actor,
            "delivery_retried",
            "delivery",
            str(i),
            {"all_dead": delivery_id is None},
        )
    if ids:
        ctx.wake_delivery()
        LOGGER.info("dead deliveries queued again by an admin", extra={"count": len(ids)})
    return ids


def retry_dead_jobs(request: Request, actor: str, job_id: int | None) -> list[int]:
    """Queue one dead job (or every dead one when ``job_id`` is None) again and audit each.
    404/409 for an unknown or not-dead job."""
    ctx = context(request)
    if job_id is None:
        wanted = [j.job_id for j in list_jobs(ctx.sessions, JobState.DEAD.value)]
    else:
        wanted = [job_id]
    ids = []
    for i in wanted:
        try:
            if retry_dead(ctx.sessions, i, now()):
                ids.append(i)
        except JobNotFoundError:
            raise HTTPException(404, f"no job with id {i}") from None
    if job_id is not None and not ids:
        raise HTTPException(409, f"job {job_id} is not dead")
    for i in ids:
        record_audit(
            ctx.sessions, actor, "job_retried", "job", str(i), {"all_dead": job_id is None}
        )
    if ids:
        LOGGER.info("dead jobs queued again by an admin", extra={"count": len(ids)})
    return ids


class MetricOut(BaseModel):
    name: str
    value: float | None
    low: float | None = Field(default=None, description="95 % CI, lower end")
    high: float | None = Field(default=None, description="95 % CI, upper end")


class BundleOut(BaseModel):
    path: str
    shipped: bool = Field(description="the default bundle shipped with xrayd (none configured)")
    trained_on: str | None = Field(default=None, description="the training data it names")
    licence: str | None = Field(default=None, description="the training data's licence")
    name: str | None = None
    version: str | None = None
    sha256: str | None = Field(default=None, description="of the weights file")
    arch: str | None = None
    input_size: int | None = None
    threshold: float | None = None
    training_manifest_sha256: str | None = None
    metrics: list[MetricOut] = Field(
        default_factory=list, description="from the bundle's report/report.json"
    )
    report_n: int | None = Field(default=None, description="cases in the evaluation report")
    training_metrics: dict[str, float | None] = Field(default_factory=dict)
    problems: list[str] = Field(default_factory=list)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _metric(name: str, doc: Mapping[str, Any], key: str) -> MetricOut | None:
    value = _number(doc.get(key))
    if value is None:
        return None
    ci = doc.get(f"{key}_ci")
    ci = ci if isinstance(ci, Mapping) else {}
    return MetricOut(
        name=name, value=value, low=_number(ci.get("low")), high=_number(ci.get("high"))
    )


def _report_metrics(report: Mapping[str, Any]) -> list[MetricOut]:
    at = report.get("at_threshold")
    at = at if isinstance(at, Mapping) else {}
    decisions = report.get("decisions")
    decisions = decisions if isinstance(decisions, Mapping) else {}
    wanted: list[tuple[str, Mapping[str, Any], str]] = [
        ("AUC", report, "auc"),
        ("sensitivity", at, "sensitivity"),
        ("specificity", at, "specificity"),
        ("PPV", at, "ppv"),
        ("NPV", at, "npv"),
        ("F1", at, "f1"),
        ("accuracy", at, "accuracy"),
        ("Cohen's kappa", at, "kappa"),
        ("indeterminate rate", decisions, "indeterminate_rate"),
        ("calibration error (ECE)", report, "ece"),
        ("log loss", report, "log_loss"),
    ]
    return [m for name, doc, key in wanted if (m := _metric(name, doc, key)) is not None]


def model_bundle(settings: Settings) -> BundleOut:
    """What the configured bundle (or the default bundle) says about itself; never raises for a
    broken bundle: ``problems`` says what could not be read."""
    from models.bundle import METADATA_PATH, default_bundle_path  # torch: only when asked
    from models.bundle_metadata import metadata_from_json
    from models.errors import BundleError

    path = settings.model.bundle or default_bundle_path()
    out = BundleOut(path=str(path), shipped=settings.model.bundle is None)
    try:
        doc = json.loads((path / METADATA_PATH).read_text(encoding="utf-8"))
        meta, sha = metadata_from_json(doc)
    except (OSError, ValueError, BundleError) as exc:
        out.problems.append(f"{METADATA_PATH}: {exc}")
    else:
        out.name, out.version, out.sha256, out.arch = meta.name, meta.version, sha, meta.arch
        out.input_size = meta.input_size
        out.trained_on = meta.training_data.get("dataset")
        out.licence = meta.training_data.get("licence")
        out.threshold = meta.thresholds.default.threshold
        out.training_manifest_sha256 = meta.training_manifest_sha256 or None
        out.training_metrics = {k: v for k, v in meta.metrics.items()}
    try:
        report = json.loads((path / REPORT_PATH).read_text(encoding="utf-8"))
        if not isinstance(report, Mapping):
            raise ValueError("not a JSON object")
    except FileNotFoundError:
        out.problems.append(f"{REPORT_PATH}: the bundle has no evaluation report")
    except (OSError, ValueError) as exc:
        out.problems.append(f"{REPORT_PATH}: {exc}")
    else:
        out.metrics = _report_metrics(report)
        n = report.get("n")
        out.report_n = n if isinstance(n, int) and not isinstance(n, bool) else None
    return out


# -- API models ----------------------------------------------------------------------------------


class CallerIn(BaseModel):
    ae_title: str = Field(min_length=1, max_length=16)
    host: str | None = Field(default=None, max_length=255, description="null: from any host")


class CallerOut(BaseModel):
    ae_title: str
    host: str | None
    source: str


class CallerPage(BaseModel):
    items: list[CallerOut]
    total: int
    limit: int
    offset: int


class TLSIn(BaseModel):
    ca_file: str = Field(min_length=1, description="CA bundle that signs the peer's certificate")
    cert_file: str | None = None
    key_file: str | None = None
    server_hostname: str | None = None
    check_hostname: bool = Field(
        default=True,
        description="check the certificate's name (server_hostname, else host); false: any "
        "certificate the CA signed is accepted",
    )


class DestinationIn(BaseModel):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    ae_title: str = Field(min_length=1, max_length=16)
    host: str = Field(min_length=1, max_length=255)
    port: int = Field(ge=1, le=65535)
    send: list[ObjectKind] = Field(default_factory=lambda: list(DEFAULT_SEND))
    tls: TLSIn | None = Field(default=None, description="DICOM TLS; null: plain DICOM")


class DestinationOut(BaseModel):
    name: str
    ae_title: str
    host: str
    port: int
    send: list[str]
    tls: dict[str, Any] | None = Field(description="the TLS settings (file paths only)")
    source: str


class DestinationPage(BaseModel):
    items: list[DestinationOut]
    total: int
    limit: int
    offset: int


class DeliveryOut(BaseModel):
    id: int
    result_id: int
    study_id: int
    kind: str
    destination: str
    state: str
    attempts: int
    #: its queue job's due time, or the end of the running attempt's lease; None once sent
    #: or dead
    next_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime


class DeliveryPage(BaseModel):
    items: list[DeliveryOut]
    total: int
    limit: int
    offset: int


class Retried(BaseModel):
    retried: list[int]


class JobOut(BaseModel):
    id: int
    study_id: int
    kind: str
    state: str
    attempts: int
    max_attempts: int
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


class JobPage(BaseModel):
    items: list[JobOut]
    total: int
    limit: int
    offset: int


class QueueOut(BaseModel):
    """One queue of xrayd's work queue: jobs by state, and how long the oldest due one has
    waited (None: nothing queued, or nothing due yet)."""

    name: str
    states: dict[str, int]
    oldest_waiting_seconds: float | None


class QueuesOut(BaseModel):
    items: list[QueueOut]


class ModelVersionOut(BaseModel):
    id: int
    name: str
    version: str
    sha256: str
    path: str
    state: str
    metrics: dict[str, Any] | None
    created_at: datetime
    promoted_at: datetime | None


class ModelsOut(BaseModel):
    bundle: BundleOut = Field(description="the bundle the settings name (or the default bundle)")
    items: list[ModelVersionOut] = Field(description="the model_versions table, newest first")
    total: int
    limit: int
    offset: int


class AuditOut(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    object_type: str
    object_id: str | None
    detail: dict[str, Any]


class AuditPage(BaseModel):
    items: list[AuditOut]
    total: int
    limit: int
    offset: int


class TokenOut(BaseModel):
    id: int
    name: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    expires_at: datetime | None = Field(description="None: valid until revoked")


class UserOut(BaseModel):
    name: str
    role: str
    disabled: bool
    created_at: datetime
    tokens: list[TokenOut]


class UserPage(BaseModel):
    items: list[UserOut]
    total: int
    limit: int
    offset: int


def _caller(c: CallerRow) -> CallerOut:
    return CallerOut(ae_title=c.ae_title, host=c.host, source=c.source)


def _destination(d: DestinationRow) -> DestinationOut:
    return DestinationOut(
        name=d.name,
        ae_title=d.ae_title,
        host=d.host,
        port=d.port,
        send=list(d.send),
        tls=None if d.tls is None else dict(d.tls),
        source=d.source,
    )


def _delivery(d: DeliveryRow) -> DeliveryOut:
    return DeliveryOut(
        id=d.delivery_id,
        result_id=d.result_id,
        study_id=d.study_id,
        kind=d.kind,
        destination=d.destination_name,
        state=d.state,
        attempts=d.attempts,
        next_attempt_at=d.next_attempt_at,
        last_status=d.last_status,
        last_error=d.last_error,
        created_at=d.created_at,
        updated_at=d.updated_at,
    )


def _job(j: JobRow) -> JobOut:
    return JobOut(
        id=j.job_id,
        study_id=j.study_id,
        kind=j.kind,
        state=j.state,
        attempts=j.attempts,
        max_attempts=j.max_attempts,
        next_attempt_at=j.next_attempt_at,
        last_error=j.last_error,
        created_at=j.created_at,
        updated_at=j.updated_at,
        finished_at=j.finished_at,
    )


def _version(v: ModelVersionRow) -> ModelVersionOut:
    return ModelVersionOut(**{k: getattr(v, k) for k in ModelVersionOut.model_fields})


def _audit(a: AuditRow) -> AuditOut:
    return AuditOut(**{k: getattr(a, k) for k in AuditOut.model_fields})


def _user(u: UserRow, tokens: Sequence[ApiTokenRow]) -> UserOut:
    return UserOut(
        name=u.name,
        role=u.role,
        disabled=u.disabled,
        created_at=u.created_at,
        tokens=[
            TokenOut(
                id=t.id,
                name=t.name,
                created_at=t.created_at,
                last_used_at=t.last_used_at,
                revoked_at=t.revoked_at,
                expires_at=t.expires_at,
            )
            for t in tokens
            if t.user_name == u.name
        ],
    )


def _aware(name: str, value: datetime | None) -> None:
    if value is not None and value.tzinfo is None:
        raise HTTPException(422, f"{name}: give a time zone (e.g. 2026-11-23T00:00:00Z)")


# -- callers -------------------------------------------------------------------------------------


@router.get("/callers", response_model=CallerPage, summary="Calling AE titles allowed in")
def callers(request: Request, limit: Limit = 100, offset: Offset = 0) -> CallerPage:
    rows = list_callers(context(request).sessions)
    return CallerPage(
        items=[_caller(c) for c in _page(rows, limit, offset)],
        total=len(rows),
        limit=limit,
        offset=offset,
    )


@router.post("/callers", response_model=CallerOut, status_code=201, summary="Allow a caller")
def create_caller(request: Request, body: CallerIn, principal: Admin) -> CallerOut:
    sm = context(request).sessions
    if not add_caller(sm, body.ae_title, body.host, Source.CLI.value):
        raise HTTPException(409, "that caller is allowed already")
    host = (body.host or "").strip().lower() or None
    title = body.ae_title.strip()
    record_audit(sm, principal.name, "caller_added", "caller", title, {"host": host, "via": "api"})
    return CallerOut(ae_title=title, host=host, source=Source.CLI.value)


@router.delete("/callers", status_code=204, summary="Remove a caller (exact AE title and host)")
def delete_caller(
    request: Request,
    principal: Admin,
    ae_title: Annotated[str, Query(min_length=1, max_length=16)],
    host: Annotated[str | None, Query(max_length=255)] = None,
) -> Response:
    sm = context(request).sessions
    if not remove_caller(sm, ae_title, host):
        raise HTTPException(404, "no such caller")
    record_audit(
        sm,
        principal.name,
        "caller_removed",
        "caller",
        ae_title.strip(),
        {"host": host, "via": "api"},
    )
    return Response(status_code=204)


# -- destinations --------------------------------------------------------------------------------


@router.get("/destinations", response_model=DestinationPage, summary="Result destinations")
def destinations(request: Request, limit: Limit = 100, offset: Offset = 0) -> DestinationPage:
    rows = list_destinations(context(request).sessions)
    return DestinationPage(
        items=[_destination(d) for d in _page(rows, limit, offset)],
        total=len(rows),
        limit=limit,
        offset=offset,
    )


@router.post(
    "/destinations", response_model=DestinationOut, status_code=201, summary="Add a destination"
)
def create_destination(request: Request, body: DestinationIn, principal: Admin) -> DestinationOut:
    sm = context(request).sessions
    row = checked_destination(body.model_dump(exclude_none=True))
    if not add_destination(sm, row):
        raise HTTPException(409, f"a destination named {row.name!r} exists already")
    record_audit(
        sm,
        principal.name,
        "destination_added",
        "destination",
        row.name,
        {
            "remote": f"{row.ae_title}@{row.host}:{row.port}",
            "send": list(row.send),
            "tls": row.tls is not None,
            "via": "api",
        },
    )
    return _destination(get_destination(sm, row.name) or row)


@router.delete("/destinations/{name}", status_code=204, summary="Remove a destination")
def delete_destination(request: Request, name: str, principal: Admin) -> Response:
    sm = context(request).sessions
    if not remove_destination(sm, name):
        raise HTTPException(404, f"no destination named {name!r}")
    record_audit(sm, principal.name, "destination_removed", "destination", name, {"via": "api"})
    return Response(status_code=204)


@router.post(
    "/destinations/{name}/echo",
    response_model=EchoOut,
    summary="C-ECHO a destination (verification), over TLS if it is configured so",
)
async def echo_one(request: Request, name: str) -> EchoOut:
    ctx = context(request)
    row = await run_in_threadpool(get_destination, ctx.sessions, name)
    if row is None:
        raise HTTPException(404, f"no destination named {name!r}")
    return await echo_destination(ctx.settings, row)


# -- outbox and jobs -----------------------------------------------------------------------------


@router.get("/outbox", response_model=DeliveryPage, summary="Deliveries of results, oldest first")
def outbox(
    request: Request,
    state: DeliveryStateName | None = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> DeliveryPage:
    rows, total = deliveries_page(request, state, limit, offset)
    return DeliveryPage(items=[_delivery(d) for d in rows], total=total, limit=limit, offset=offset)


@router.post("/outbox/retry-dead", response_model=Retried, summary="Send every dead delivery again")
def retry_all_deliveries(request: Request, principal: Admin) -> Retried:
    return Retried(retried=retry_deliveries(request, principal.name, None))


@router.post(
    "/outbox/{delivery_id}/retry", response_model=DeliveryOut, summary="Send a dead delivery again"
)
def retry_one_delivery(request: Request, delivery_id: int, principal: Admin) -> DeliveryOut:
    retry_deliveries(request, principal.name, delivery_id)
    return _delivery(get_delivery(context(request).sessions, delivery_id))


@router.get("/queues", response_model=QueuesOut, summary="The work queue: jobs by queue and state")
def queues(request: Request) -> QueuesOut:
    counts = status_counts(context(request).sessions)
    at = now()
    items = []
    for name, states in counts.queues.items():
        due = counts.oldest_due[name]
        waited = None if due is None or due > at else (at - due).total_seconds()
        items.append(QueueOut(name=name, states=states, oldest_waiting_seconds=waited))
    return QueuesOut(items=items)


@router.get("/jobs", response_model=JobPage, summary="Analysis jobs, oldest first")
def jobs(
    request: Request,
    state: JobStateName | None = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> JobPage:
    rows, total = jobs_page(request, state, limit, offset)
    return JobPage(items=[_job(j) for j in rows], total=total, limit=limit, offset=offset)


@router.post("/jobs/{job_id}/retry", response_model=Retried, summary="Queue a dead job again")
def retry_one_job(request: Request, job_id: int, principal: Admin) -> Retried:
    return Retried(retried=retry_dead_jobs(request, principal.name, job_id))


# -- models, audit, users ------------------------------------------------------------------------


@router.get("/models", response_model=ModelsOut, summary="The model bundle in use and versions")
def models(request: Request, limit: Limit = 100, offset: Offset = 0) -> ModelsOut:
    ctx = context(request)
    rows = list_model_versions(ctx.sessions)
    return ModelsOut(
        bundle=model_bundle(ctx.settings),
        items=[_version(v) for v in _page(rows, limit, offset)],
        total=len(rows),
        limit=limit,
        offset=offset,
    )


@router.get("/audit", response_model=AuditPage, summary="The audit trail, newest first")
def audit(
    request: Request,
    actor: Annotated[str | None, Query(max_length=128)] = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    object_type: Annotated[str | None, Query(max_length=64)] = None,
    object_id: Annotated[str | None, Query(max_length=128)] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Limit = 50,
    offset: Annotated[int, Query(ge=0, description="items to skip")] = 0,
) -> AuditPage:
    _aware("since", since)
    _aware("until", until)
    rows, total = search_audit(
        context(request).sessions,
        actor=actor or None,
        action=action or None,
        object_type=object_type or None,
        object_id=object_id or None,
        since=since,
        until=until,
        limit=limit,
        offset=offset,
    )
    return AuditPage(items=[_audit(a) for a in rows], total=total, limit=limit, offset=offset)


@router.get("/users", response_model=UserPage, summary="Web users and their API tokens")
def users(request: Request, limit: Limit = 100, offset: Offset = 0) -> UserPage:
    sm = context(request).sessions
    rows, tokens = list_users(sm), list_tokens(sm)
    return UserPage(
        items=[_user(u, tokens) for u in _page(rows, limit, offset)],
        total=len(rows),
        limit=limit,
        offset=offset,
    )
