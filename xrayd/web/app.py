"""The FastAPI application: pages, REST API, error handling and security headers.

Errors become answers by their type: :func:`storage_error_status` for the storage layer's
(404 not found, 409 conflict, 422 invalid input, 503 unavailable, 500 otherwise).

Middleware, outermost first: the Host allow-list (:mod:`xrayd.web.peers`; 400 before
anything else runs), then the security headers (CSP, no sniffing, no framing, no referrer,
no caching of pages; HSTS when xrayd serves HTTPS itself).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint

from storage.bytestore import ByteStoreUnavailableError
from storage.errors import (
    ConflictError,
    DatabaseUnavailableError,
    InvalidEntryError,
    NotFoundError,
    StorageError,
)
from xrayd.web import (
    admin_api,
    admin_pages,
    admin_validation,
    api,
    dashboards,
    ops,
    pages,
    wado,
    worklist_pages,
)
from xrayd.web.auth import CsrfError, Forbidden, NotAuthenticated
from xrayd.web.context import WebContext
from xrayd.web.peers import HostAllowList, allowed_hosts
from xrayd.web.render import login_page, render

__all__ = ["ROUTERS", "create_app", "storage_error_status"]

LOGGER = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"

CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
#: one year, this host only (a site decides about includeSubDomains/preload for its domain)
HSTS = "max-age=31536000"


#: every router of the app (the route-guard test walks these)
ROUTERS: tuple[APIRouter, ...] = (
    ops.router,
    pages.router,
    worklist_pages.router,
    wado.router,
    dashboards.router,
    admin_pages.router,
    api.router,
    dashboards.api_router,
    admin_api.router,
)


class SecurityHeaders(BaseHTTPMiddleware):
    def __init__(self, app: Any, *, hsts: bool = False) -> None:
        super().__init__(app)
        self.hsts = hsts

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        if self.hsts:
            response.headers.setdefault("Strict-Transport-Security", HSTS)
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("X-Frame-Options", "DENY")
        if not request.url.path.startswith("/static/"):
            # Pages and API answers may show patient data: never keep them in a cache.
            response.headers.setdefault("Cache-Control", "no-store")
        return response


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def _json_error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"detail": message, **extra}, status_code=status)


def storage_error_status(exc: StorageError) -> int:
    """The HTTP status of a storage error, from its type alone (never from its wording).

    Invalid input 422, something named that does not exist 404, a change the current state
    forbids 409, the database or object store unavailable 503; any other storage error is a
    fault the request did not cause (an impossible state, an unusable spool path): 500.
    """
    if isinstance(exc, InvalidEntryError):
        return 422
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, ConflictError):
        return 409
    if isinstance(exc, (DatabaseUnavailableError, ByteStoreUnavailableError)):
        return 503
    return 500


def _install_handlers(app: FastAPI) -> None:
    @app.exception_handler(NotAuthenticated)
    async def _unauthenticated(request: Request, exc: NotAuthenticated) -> Response:
        if _is_api(request):
            response = _json_error(401, "authentication required: a bearer token or a login")
            response.headers["WWW-Authenticate"] = "Bearer"
            return response
        # The login form itself, with a 401: no page content without a login.
        return login_page(request, status_code=401, next_url=request.url.path)

    @app.exception_handler(Forbidden)
    async def _forbidden(request: Request, exc: Forbidden) -> Response:
        if _is_api(request):
            return _json_error(403, "this needs the admin role")
        return render(request, "error.html", status_code=403, message="This needs the admin role.")

    @app.exception_handler(CsrfError)
    async def _csrf(request: Request, exc: CsrfError) -> Response:
        LOGGER.warning(
            "request refused: missing or wrong CSRF token", extra={"path": request.url.path}
        )
        if _is_api(request):
            return _json_error(403, "missing or wrong CSRF token (X-CSRF-Token header)")
        return render(
            request,
            "error.html",
            status_code=403,
            message="The form was out of date or not sent from xrayd. Reload the page and retry.",
        )

    @app.exception_handler(StorageError)
    async def _storage(request: Request, exc: StorageError) -> Response:
        status = storage_error_status(exc)
        if status >= 500:
            # Not the request's fault: the operator finds the cause in the log (storage
            # messages carry no patient data); the answer names only the kind of failure.
            LOGGER.error(
                "storage error answered %d: %s: %s",
                status,
                type(exc).__name__,
                exc,
                extra={"path": request.url.path},
            )
            message = (
                "the database or the object store is unavailable; try again later"
                if status == 503
                else "internal storage error; the server log has the details"
            )
        else:
            message = str(exc)
        if _is_api(request):
            return _json_error(status, message)
        return render(request, "error.html", status_code=status, message=message)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type")}
            for e in exc.errors()
        ]
        message = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors)
        if _is_api(request):
            return _json_error(422, message or "invalid request", errors=errors)
        # an admin form: its page again with the message beside the form (issue 19)
        refused = await run_in_threadpool(admin_validation.form_refusal, request, exc)
        if refused is not None:
            return refused
        return render(request, "error.html", status_code=422, message=message)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        if _is_api(request) or request.url.path.startswith("/static/"):
            return _json_error(exc.status_code, str(exc.detail))
        return render(request, "error.html", status_code=exc.status_code, message=str(exc.detail))


def create_app(ctx: WebContext) -> FastAPI:
    app = FastAPI(
        title="xrayd",
        summary="Fracture triage DICOM node: review, administration and statistics API",
        description=(
            "Authenticate with `Authorization: Bearer <token>` (create one with "
            "`xrayd users token NAME`). Research software, not for clinical use."
        ),
        version="0.1.0",
        openapi_url=None,  # served by xrayd.web.api behind authentication
        docs_url=None,  # Swagger UI would load assets from a CDN
        redoc_url=None,
    )
    app.state.ctx = ctx
    web = ctx.settings.web
    app.add_middleware(SecurityHeaders, hsts=web.tls_cert_file is not None)
    app.add_middleware(HostAllowList, allowed=allowed_hosts(web))  # outermost
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    _install_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    return app
