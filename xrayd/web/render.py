"""Rendering pages: one Jinja2 environment, autoescaped, with the caller and CSRF token."""

from __future__ import annotations

import functools
import secrets
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from xrayd.web.formats import dicom_date, person_name

__all__ = ["LOGIN_CSRF_COOKIE", "login_page", "render", "safe_next", "templates"]

LOGIN_CSRF_COOKIE = "xrayd_login_csrf"


def _when(value: datetime | None) -> str:
    return "" if value is None else value.strftime("%Y-%m-%d %H:%M UTC")


def _pct(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{100 * value:.{digits}f} %"


@functools.cache
def templates() -> Jinja2Templates:
    """The pages' Jinja2 environment (autoescaped), built at the first page rendered."""
    made = Jinja2Templates(directory=Path(__file__).parent / "templates")
    made.env.filters["when"] = _when
    made.env.filters["pct"] = _pct
    made.env.filters["dicom_date"] = dicom_date
    made.env.filters["person_name"] = person_name
    return made


def render(request: Request, name: str, *, status_code: int = 200, **values: Any) -> HTMLResponse:
    principal = getattr(request.state, "principal", None)
    values.setdefault("principal", principal)
    values.setdefault("status_code", status_code)
    values.setdefault("csrf_token", getattr(principal, "csrf_token", None) or "")
    response: HTMLResponse = templates().TemplateResponse(
        request, name, values, status_code=status_code
    )
    return response


def safe_next(value: str | None) -> str:
    """A local path to go to after login (never another site: no scheme, no '//')."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/worklist"
    return value


def login_page(
    request: Request,
    *,
    status_code: int = 200,
    next_url: str | None = None,
    error: str | None = None,
) -> HTMLResponse:
    """The login form, with a fresh double-submit CSRF token in a cookie and the form."""
    token = secrets.token_urlsafe(32)
    response = render(
        request,
        "login.html",
        status_code=status_code,
        principal=None,
        login_csrf=token,
        next_url=safe_next(next_url),
        error=error,
    )
    ctx = request.app.state.ctx
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=ctx.settings.web.cookie_secure,
        path="/login",
    )
    return response
