"""Unauthenticated operational endpoints (no patient data): liveness and readiness."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from storage.errors import StorageError
from xrayd.web.auth import context
from xrayd.web.context import WebContext

__all__ = ["readiness", "router"]

LOGGER = logging.getLogger(__name__)
router = APIRouter(tags=["operations"])


@router.get("/health", summary="Liveness: the process answers")
def health() -> dict[str, str]:
    return {"status": "ok"}


def readiness(ctx: WebContext) -> dict[str, Any]:
    """Each check's outcome: database reachable, model loaded, spool writable."""
    checks: dict[str, Any] = {}
    try:
        with ctx.sessions() as session:
            session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # any driver error means "not ready"
        LOGGER.warning("readiness: database unreachable (%s)", type(exc).__name__)
        checks["database"] = f"unreachable ({type(exc).__name__})"
    checks["model"] = "ok" if ctx.model_loaded() else "not loaded"
    try:
        ctx.spool.check_writable()
        checks["spool"] = "ok"
    except (OSError, StorageError) as exc:
        checks["spool"] = f"not writable ({type(exc).__name__})"
    return checks


@router.get("/ready", summary="Readiness: database, model and spool are usable")
def ready(request: Request, ctx: Annotated[WebContext, Depends(context)]) -> JSONResponse:
    checks = readiness(ctx)
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ready" if ok else "not ready", "checks": checks}, status_code=200 if ok else 503
    )
