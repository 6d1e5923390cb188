"""Unauthenticated operational endpoints (no patient data): liveness, readiness, metrics."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import text

from storage.errors import StorageError
from xrayd.metrics import CONTENT_TYPE
from xrayd.web.auth import context
from xrayd.web.context import WebContext

__all__ = ["readiness", "router"]

MIB = 1024 * 1024

LOGGER = logging.getLogger(__name__)
router = APIRouter(tags=["operations"])


@router.get("/health", summary="Liveness: the process answers")
def health() -> dict[str, str]:
    return {"status": "ok"}


def readiness(ctx: WebContext) -> dict[str, Any]:
    """Each check's outcome: database reachable, model loaded, spool writable, and the spool's
    free space above the listener's low-water mark (``node.min_free_mb``)."""
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
    checks["disk"] = _disk_check(ctx)
    return checks


def _disk_check(ctx: WebContext) -> str:
    low_water = ctx.settings.node.min_free_mb * MIB
    try:
        free = ctx.disk_usage().free_bytes
    except OSError as exc:
        return f"unknown ({type(exc).__name__})"
    if free < low_water:
        LOGGER.warning(
            "readiness: spool below its low-water mark",
            extra={"free_mb": free // MIB, "min_free_mb": ctx.settings.node.min_free_mb},
        )
        return (
            f"below the low-water mark ({free // MIB} MiB free, "
            f"node.min_free_mb = {ctx.settings.node.min_free_mb})"
        )
    return "ok"


@router.get("/ready", summary="Readiness: database, model, spool and its free space are usable")
def ready(request: Request, ctx: Annotated[WebContext, Depends(context)]) -> JSONResponse:
    checks = readiness(ctx)
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ready" if ok else "not ready", "checks": checks}, status_code=200 if ok else 503
    )


@router.get("/metrics", summary="Prometheus metrics (no patient data)")
def metrics(ctx: Annotated[WebContext, Depends(context)]) -> Response:
    if ctx.metrics is None:
        raise HTTPException(404, "metrics are not collected by this process")
    return Response(ctx.metrics.render(), media_type=CONTENT_TYPE)
