"""Who is asking: session cookies (pages) and bearer tokens (REST API), roles and CSRF.

Every route except ``/health``, ``/ready``, ``/metrics`` and the login page depends on
:func:`authenticated` or :func:`admin`. Unsafe methods authenticated by the session cookie
must carry the session's CSRF token (form field ``csrf_token`` or header ``X-CSRF-Token``);
bearer-token requests need none (a browser never sends the token by itself). The cookie is
HttpOnly and SameSite=Strict as well. A session ends ``web.session_hours`` after the login or
``web.session_idle_minutes`` after its last request, whichever comes first; an API token ends
when revoked, when it expires, or when its user's password is set.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from fastapi import Depends, Request

from storage.users import UserRow, user_for_session, user_for_token
from xrayd.web.context import WebContext

__all__ = [
    "COOKIE",
    "CsrfError",
    "Forbidden",
    "NotAuthenticated",
    "Principal",
    "admin",
    "authenticated",
    "context",
]

COOKIE = "xrayd_session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class NotAuthenticated(Exception):
    """No valid session or token (401)."""


class Forbidden(Exception):
    """Authenticated, but the role does not allow it (403)."""


class CsrfError(Exception):
    """An unsafe request with a session cookie and no valid CSRF token (403)."""


@dataclass(frozen=True)
class Principal:
    user: UserRow
    via: Literal["session", "token"]
    csrf_token: str | None = None  # the session's; None for token requests

    @property
    def name(self) -> str:
        return self.user.name


def context(request: Request) -> WebContext:
    ctx: WebContext = request.app.state.ctx
    return ctx


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return None


def principal_of(request: Request) -> Principal | None:
    """The caller, if any credentials are valid (no CSRF check)."""
    ctx = context(request)
    token = _bearer(request)
    if token is not None:
        user = user_for_token(ctx.sessions, token)
        return None if user is None else Principal(user, "token")
    cookie = request.cookies.get(COOKIE)
    if cookie:
        idle = timedelta(minutes=ctx.settings.web.session_idle_minutes)
        found = user_for_session(ctx.sessions, cookie, idle=idle)
        if found is not None:
            return Principal(found.user, "session", found.csrf_token)
    return None


async def authenticated(request: Request) -> Principal:
    principal = principal_of(request)
    if principal is None:
        raise NotAuthenticated
    if principal.via == "session" and request.method not in SAFE_METHODS:
        sent = request.headers.get("x-csrf-token")
        if sent is None and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")
        ):
            value = (await request.form()).get("csrf_token")
            sent = value if isinstance(value, str) else None
        expected = principal.csrf_token or ""
        if not sent or not hmac.compare_digest(sent.encode(), expected.encode()):
            raise CsrfError
    request.state.principal = principal
    return principal


async def admin(principal: Principal = Depends(authenticated)) -> Principal:  # noqa: B008
    if not principal.user.is_admin:
        raise Forbidden
    return principal
