"""REST API v1 for administrators: callers, destinations (with C-ECHO), outbox, jobs (retry,
cancel), models (promote, rollback), audit trail, users and API tokens.

Every route needs the admin role (403 for radiologists). Lists answer
:class:`xrayd.web.paging.Page` (``{"items", "total", "limit", "offset"}``). Each change is one
call of :mod:`xrayd.admin` as ``api:<admin>``, which validates it by the rules the pages and the
CLI use and audits it in the change's transaction; its typed errors become the status codes
(unknown: 404, conflicting: 409, invalid: 422, see :mod:`xrayd.web.app`). The models are in
:mod:`xrayd.web.admin_schemas`, what the pages show too in :mod:`xrayd.web.admin_support`.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from config.settings import DEFAULT_SEND
from storage.audit import search_audit
from storage.model_versions import count_model_versions, list_model_versions
from storage.outbox import get_delivery
from storage.peers import (
    CallerRow,
    DestinationRow,
    count_callers,
    count_destinations,
    get_destination,
    list_callers,
    list_destinations,
)
from storage.status import status_counts
from storage.users import list_tokens, list_users, user_count
from xrayd.admin import jobs as admin_jobs
from xrayd.admin import models as admin_models
from xrayd.admin import peers as admin_peers
from xrayd.admin import users as admin_users
from xrayd.admin.actor import Actor
from xrayd.web.admin_schemas import (
    AuditOut,
    CallerIn,
    DeliveryOut,
    DestinationIn,
    EchoOut,
    JobOut,
    ModelsOut,
    ModelVersionOut,
    PasswordIn,
    PasswordSet,
    QueueOut,
    QueuesOut,
    Retried,
    TokenCreated,
    TokenIn,
    Unlocked,
    UserIn,
    UserOut,
    audit_out,
    delivery_out,
    job_out,
    user_out,
    version_out,
)
from xrayd.web.admin_support import (
    deliveries_page,
    echo_destination,
    jobs_page,
    model_bundle,
    retry_deliveries,
)
from xrayd.web.auth import Principal, admin, context
from xrayd.web.paging import MAX_OFFSET, Limit, Offset, Page, require_time_zone

__all__ = ["MAX_OFFSET", "echo_destination", "router"]

LOGGER = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1", tags=["admin"], dependencies=[Depends(admin)])

Admin = Annotated[Principal, Depends(admin)]
DeliveryStateName = Literal["pending", "sent", "dead"]
JobStateName = Literal["queued", "running", "done", "dead", "cancelled"]


def _actor(principal: Principal) -> Actor:
    return Actor.api(principal.name)


# -- callers -------------------------------------------------------------------------------------


@router.get("/callers", response_model=Page[CallerRow], summary="Calling AE titles allowed in")
def callers(request: Request, limit: Limit = 100, offset: Offset = 0) -> Page[CallerRow]:
    sm = context(request).sessions
    rows = list_callers(sm, limit=limit, offset=offset)
    return Page[CallerRow](items=rows, total=count_callers(sm), limit=limit, offset=offset)


@router.post("/callers", response_model=CallerRow, status_code=201, summary="Allow a caller")
def create_caller(request: Request, body: CallerIn, principal: Admin) -> CallerRow:
    sm = context(request).sessions
    return admin_peers.add_caller(sm, _actor(principal), body.ae_title, body.host)


@router.delete("/callers", status_code=204, summary="Remove a caller (exact AE title and host)")
def delete_caller(
    request: Request,
    principal: Admin,
    ae_title: Annotated[str, Query(max_length=64)],
    host: Annotated[str | None, Query(max_length=255)] = None,
) -> Response:
    admin_peers.remove_caller(context(request).sessions, _actor(principal), ae_title, host)
    return Response(status_code=204)


# -- destinations --------------------------------------------------------------------------------


@router.get("/destinations", response_model=Page[DestinationRow], summary="Result destinations")
def destinations(request: Request, limit: Limit = 100, offset: Offset = 0) -> Page[DestinationRow]:
    sm = context(request).sessions
    rows = list_destinations(sm, limit=limit, offset=offset)
    return Page[DestinationRow](
        items=rows, total=count_destinations(sm), limit=limit, offset=offset
    )


@router.post(
    "/destinations", response_model=DestinationRow, status_code=201, summary="Add a destination"
)
def create_destination(request: Request, body: DestinationIn, principal: Admin) -> DestinationRow:
    values = body.model_dump(exclude_none=True)
    values.setdefault("send", list(DEFAULT_SEND))
    return admin_peers.add_destination(context(request).sessions, _actor(principal), values)


@router.delete("/destinations/{name}", status_code=204, summary="Remove a destination")
def delete_destination(request: Request, name: str, principal: Admin) -> Response:
    admin_peers.remove_destination(context(request).sessions, _actor(principal), name)
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


@router.get(
    "/outbox", response_model=Page[DeliveryOut], summary="Deliveries of results, oldest first"
)
def outbox(
    request: Request,
    state: DeliveryStateName | None = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Page[DeliveryOut]:
    rows, total = deliveries_page(request, state, limit, offset)
    return Page[DeliveryOut].of(rows, delivery_out, total=total, limit=limit, offset=offset)


@router.post("/outbox/retry-dead", response_model=Retried, summary="Send every dead delivery again")
def retry_all_deliveries(request: Request, principal: Admin) -> Retried:
    return Retried(retried=retry_deliveries(request, _actor(principal), None))


@router.post(
    "/outbox/{delivery_id}/retry", response_model=DeliveryOut, summary="Send a dead delivery again"
)
def retry_one_delivery(request: Request, delivery_id: int, principal: Admin) -> DeliveryOut:
    retry_deliveries(request, _actor(principal), delivery_id)
    return delivery_out(get_delivery(context(request).sessions, delivery_id))


@router.get("/queues", response_model=QueuesOut, summary="The work queue: jobs by queue and state")
def queues(request: Request) -> QueuesOut:
    counts = status_counts(context(request).sessions)
    at = datetime.now(UTC)
    items = []
    for name, states in counts.queues.items():
        due = counts.oldest_due[name]
        waited = None if due is None or due > at else (at - due).total_seconds()
        items.append(QueueOut(name=name, states=states, oldest_waiting_seconds=waited))
    return QueuesOut(items=items)


@router.get("/jobs", response_model=Page[JobOut], summary="Analysis jobs, oldest first")
def jobs(
    request: Request,
    state: JobStateName | None = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Page[JobOut]:
    rows, total = jobs_page(request, state, limit, offset)
    return Page[JobOut].of(rows, job_out, total=total, limit=limit, offset=offset)


@router.post("/jobs/{job_id}/retry", response_model=Retried, summary="Queue a dead job again")
def retry_one_job(request: Request, job_id: int, principal: Admin) -> Retried:
    sm = context(request).sessions
    return Retried(retried=admin_jobs.retry_jobs(sm, _actor(principal), job_id))


@router.post("/jobs/{job_id}/cancel", status_code=204, summary="Cancel a queued job")
def cancel_one_job(request: Request, job_id: int, principal: Admin) -> Response:
    admin_jobs.cancel_job(context(request).sessions, _actor(principal), job_id)
    return Response(status_code=204)


# -- models, audit, users ------------------------------------------------------------------------


@router.get("/models", response_model=ModelsOut, summary="The model bundle in use and versions")
def models(request: Request, limit: Limit = 100, offset: Offset = 0) -> ModelsOut:
    ctx = context(request)
    rows = list_model_versions(ctx.sessions, limit=limit, offset=offset)
    return ModelsOut(
        bundle=model_bundle(ctx.settings),
        items=[version_out(v) for v in rows],
        total=count_model_versions(ctx.sessions),
        limit=limit,
        offset=offset,
    )


@router.post(
    "/models/{version}/promote", response_model=ModelVersionOut, summary="Serve this version"
)
def promote_model(request: Request, version: str, principal: Admin) -> ModelVersionOut:
    ctx = context(request)
    row = admin_models.promote(ctx.sessions, _actor(principal), version)
    ctx.model_changed()
    return version_out(row)


@router.post(
    "/models/rollback", response_model=ModelVersionOut, summary="Serve the previous version"
)
def rollback_model(request: Request, principal: Admin) -> ModelVersionOut:
    ctx = context(request)
    row = admin_models.rollback(ctx.sessions, _actor(principal))
    ctx.model_changed()
    return version_out(row)


@router.get("/audit", response_model=Page[AuditOut], summary="The audit trail, newest first")
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
) -> Page[AuditOut]:
    require_time_zone("since", since)
    require_time_zone("until", until)
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
    return Page[AuditOut].of(rows, audit_out, total=total, limit=limit, offset=offset)


@router.get("/users", response_model=Page[UserOut], summary="Web users and their API tokens")
def users(request: Request, limit: Limit = 100, offset: Offset = 0) -> Page[UserOut]:
    sm = context(request).sessions
    rows = list_users(sm, limit=limit, offset=offset)
    tokens = list_tokens(sm, user_names=[u.name for u in rows])
    return Page[UserOut].of(
        rows, lambda u: user_out(u, tokens), total=user_count(sm), limit=limit, offset=offset
    )


def _user(request: Request, name: str) -> UserOut:
    sm = context(request).sessions
    user = next(u for u in list_users(sm) if u.name == name)
    return user_out(user, list_tokens(sm, user_names=[name]))


@router.post("/users", response_model=UserOut, status_code=201, summary="Add a user")
def create_user(request: Request, body: UserIn, principal: Admin) -> UserOut:
    sm = context(request).sessions
    user = admin_users.add_user(sm, _actor(principal), body.name, body.role, body.password)
    return _user(request, user.name)


@router.post("/users/{name}/disable", response_model=UserOut, summary="Disable a user")
def disable_user(request: Request, name: str, principal: Admin) -> UserOut:
    admin_users.set_disabled(context(request).sessions, _actor(principal), name, True)
    return _user(request, name)


@router.post("/users/{name}/enable", response_model=UserOut, summary="Enable a user")
def enable_user(request: Request, name: str, principal: Admin) -> UserOut:
    admin_users.set_disabled(context(request).sessions, _actor(principal), name, False)
    return _user(request, name)


@router.post(
    "/users/{name}/password",
    response_model=PasswordSet,
    summary="Set a user's password (revokes their API tokens, ends their sessions)",
)
def set_password(request: Request, name: str, body: PasswordIn, principal: Admin) -> PasswordSet:
    sm = context(request).sessions
    tokens, sessions = admin_users.set_password(sm, _actor(principal), name, body.password)
    return PasswordSet(tokens_revoked=tokens, sessions_ended=sessions)


@router.post(
    "/users/{name}/unlock", response_model=Unlocked, summary="Forget a user's failed logins"
)
def unlock_user(request: Request, name: str, principal: Admin) -> Unlocked:
    cleared = admin_users.unlock(context(request).sessions, _actor(principal), name)
    return Unlocked(failures_cleared=cleared)


@router.post(
    "/users/{name}/tokens",
    response_model=TokenCreated,
    status_code=201,
    summary="Create an API token for a user (shown once)",
)
def create_token(request: Request, name: str, body: TokenIn, principal: Admin) -> TokenCreated:
    sm = context(request).sessions
    token = admin_users.create_token(sm, _actor(principal), name, body.label, body.days)
    return TokenCreated(token=token)


@router.post("/tokens/{token_id}/revoke", status_code=204, summary="Revoke an API token")
def revoke_token(request: Request, token_id: int, principal: Admin) -> Response:
    admin_users.revoke_token(context(request).sessions, _actor(principal), token_id)
    return Response(status_code=204)
