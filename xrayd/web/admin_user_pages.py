"""The admin users page: add, disable and enable users; set a user's password (twice, by the
password policy; their sessions end and their API tokens are revoked, as everywhere); forget
their counted failed logins (unlock, offered while they are locked out: the page shows each
user's failed logins and until when they lock them out); create an API token (shown once on
the answering page, only its hash is kept) and revoke one.

Every change is one call of :mod:`xrayd.admin.users` as ``web:<admin>`` (its audit row, its
rules and its errors are the CLI's and the REST API's). A refused form answers with this page
again, the message beside the form and what was typed kept (passwords never), 422 or 409
(:mod:`xrayd.web.admin_forms`). :func:`add_routes` puts the routes on
:data:`xrayd.web.admin_pages.router` (and so behind its admin dependency).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response

from storage.errors import ConflictError, InvalidEntryError
from storage.logins import LoginLimits, lock_states
from storage.schema import Role
from storage.users import MIN_PASSWORD, list_tokens, list_users
from xrayd.admin import users as admin_users
from xrayd.admin.actor import Actor
from xrayd.admin.validation import InvalidInputError
from xrayd.web.admin_forms import FieldWords, FormError, back, flash, refusal
from xrayd.web.auth import Principal, admin, context
from xrayd.web.render import render

__all__ = ["DEFAULT_TOKEN_DAYS", "add_routes", "page_with_error"]

LOGGER = logging.getLogger(__name__)

Admin = Annotated[Principal, Depends(admin)]
Password = Annotated[str, Form(max_length=1024)]
#: what the token form proposes (empty: valid until revoked)
DEFAULT_TOKEN_DAYS = 90

USER_FIELDS: FieldWords = (
    ("password", ("password",)),
    ("role", ("role",)),
    ("name", ("name", "exists already")),
)
TOKEN_FIELDS: FieldWords = (("label", ("token name",)), ("days", ("days", "lifetime")))


@dataclass(frozen=True)
class NewToken:
    """A token just created: shown on the answering page once, never again."""

    user: str
    label: str
    token: str
    #: valid for this many days (None: until revoked)
    days: float | None


def _actor(principal: Principal) -> Actor:
    return Actor.web(principal.name)


def _page(
    request: Request,
    *,
    form_error: FormError | None = None,
    new_token: NewToken | None = None,
) -> Response:
    ctx = context(request)
    sm, web = ctx.sessions, ctx.settings.web
    limits = LoginLimits(web.login_max_failures, timedelta(seconds=web.login_window_seconds))
    response = render(
        request,
        "admin/users.html",
        status_code=200 if form_error is None else form_error.status,
        section="users",
        users=list_users(sm),
        locks=lock_states(sm, limits),
        tokens=list_tokens(sm),
        roles=[r.value for r in Role],
        min_password=MIN_PASSWORD,
        default_token_days=DEFAULT_TOKEN_DAYS,
        form_error=form_error,
        new_token=new_token,
        flash=flash(request) if form_error is None and new_token is None else None,
    )
    if new_token is not None:
        response.headers["Cache-Control"] = "no-store"  # the token must not outlive the page
    return response


def users_page(request: Request) -> Response:
    return _page(request)


def page_with_error(request: Request, form_error: FormError) -> Response:
    """The users page with a form FastAPI refused (:mod:`xrayd.web.admin_validation`)."""
    return _page(request, form_error=form_error)


def user_add(
    request: Request,
    principal: Admin,
    name: Annotated[str, Form(max_length=64)],
    role: Annotated[str, Form(max_length=16)],
    password: Password,
) -> Response:
    try:
        admin_users.add_user(context(request).sessions, _actor(principal), name, role, password)
    except (InvalidEntryError, ConflictError) as exc:
        typed = {"name": name, "role": role}
        return _page(request, form_error=refusal(exc, "user", typed, USER_FIELDS))
    LOGGER.info("user added by an admin", extra={"role": role})
    return back("/admin/users", "user_added")


def _set_disabled(request: Request, principal: Principal, name: str, disabled: bool) -> Response:
    try:
        admin_users.set_disabled(context(request).sessions, _actor(principal), name, disabled)
    except ConflictError as exc:
        return _page(request, form_error=refusal(exc, f"state:{name}", {}))
    return back("/admin/users", "user_disabled" if disabled else "user_enabled")


def user_disable(request: Request, name: str, principal: Admin) -> Response:
    return _set_disabled(request, principal, name, True)


def user_enable(request: Request, name: str, principal: Admin) -> Response:
    return _set_disabled(request, principal, name, False)


def user_password(
    request: Request,
    name: str,
    principal: Admin,
    password: Password,
    password_again: Password,
) -> Response:
    """Set ``name``'s password (typed twice, as the CLI asks); unknown user: 404."""
    form = f"password:{name}"
    if password != password_again:
        refused = FormError(form, "the two passwords differ", 422, field="password_again")
        return _page(request, form_error=refused)
    try:
        admin_users.set_password(context(request).sessions, _actor(principal), name, password)
    except InvalidEntryError as exc:
        return _page(request, form_error=refusal(exc, form, {}, (("password", ("password",)),)))
    return back("/admin/users", "password_set")


def user_unlock(request: Request, name: str, principal: Admin) -> Response:
    cleared = admin_users.unlock(context(request).sessions, _actor(principal), name)
    return back("/admin/users", "user_unlocked", cleared)


def _days(value: str) -> float | None:
    """The token form's days: blank for no expiry, else a number (checked by the service)."""
    if not value.strip():
        return None
    try:
        return float(value)
    except ValueError:
        raise InvalidInputError(f"days must be a number, not {value.strip()[:20]!r}") from None


def token_create(
    request: Request,
    name: str,
    principal: Admin,
    label: Annotated[str, Form(max_length=64)],
    days: Annotated[str, Form(max_length=32)] = "",
) -> Response:
    """A new API token for ``name``, on the answering page only (not a redirect: it is never
    in a URL, a log or the audit detail); unknown user: 404."""
    typed = {"label": label, "days": days}
    try:
        lifetime = _days(days)
        token = admin_users.create_token(
            context(request).sessions, _actor(principal), name, label.strip(), lifetime
        )
    except InvalidEntryError as exc:
        return _page(request, form_error=refusal(exc, f"token:{name}", typed, TOKEN_FIELDS))
    LOGGER.info("API token created by an admin", extra={"days": lifetime})
    return _page(request, new_token=NewToken(name, label.strip(), token, lifetime))


def token_revoke(request: Request, token_id: int, principal: Admin) -> Response:
    admin_users.revoke_token(context(request).sessions, _actor(principal), token_id)
    return back("/admin/users", "token_revoked")


def add_routes(router: APIRouter) -> None:
    """The users page's routes, on ``router`` (the admin pages' router)."""
    router.get("/admin/users")(users_page)
    router.post("/admin/users")(user_add)
    router.post("/admin/users/{name}/disable")(user_disable)
    router.post("/admin/users/{name}/enable")(user_enable)
    router.post("/admin/users/{name}/password")(user_password)
    router.post("/admin/users/{name}/unlock")(user_unlock)
    router.post("/admin/users/{name}/tokens")(token_create)
    router.post("/admin/tokens/{token_id}/revoke")(token_revoke)
