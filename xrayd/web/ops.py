"""Unauthenticated operational endpoints (no patient data): liveness, readiness, metrics.

``/ready`` only reads: it may be polled every few seconds by a load balancer or an
orchestrator, and anyone who can reach it may call it, so it must not turn into writes to the
database or the disk (no probe rows, no probe files).
"""

from __future__ import annotations

import logging
import os
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse, Response

from storage.bytestore import ByteStoreDeniedError, ByteStoreError, LocalByteStore
from storage.db import ping
from storage.spool import TMP_DIR, Spool
from xrayd.runtime.metrics import CONTENT_TYPE
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
    """Each check's outcome: database reachable and its schema readable, model loaded, spool
    writable, the spool's free space above the listener's low-water mark
    (``node.min_free_mb``), and, where the bytes live in an object store, that store usable
    (``store``: the server answers, the bucket exists, the credentials are accepted). Nothing
    is written."""
    checks: dict[str, Any] = {}
    try:
        # a read transaction (SQLite: DEFERRED): /ready takes no write lock and never waits
        # for the analysis or the listener writing
        ping(ctx.sessions)
        checks["database"] = "ok"
    except Exception as exc:  # any driver error means "not ready"
        LOGGER.warning("readiness: database unreachable (%s)", type(exc).__name__)
        checks["database"] = f"unreachable ({type(exc).__name__})"
    checks["model"] = "ok" if ctx.model_loaded() else "not loaded"
    checks["spool"] = _spool_check(ctx.spool)
    checks["disk"] = _disk_check(ctx)
    if ctx.store is not None and not isinstance(ctx.store, LocalByteStore):
        checks["store"] = _store_check(ctx)
    return checks


def _store_check(ctx: WebContext) -> str:
    """The object store's own check (``HeadBucket``: reads nothing else, writes nothing). The
    answer gives the cause only; the log line also names the endpoint and bucket (never the
    credentials): anyone may call /ready."""
    assert ctx.store is not None
    try:
        ctx.store.check()
    except ByteStoreDeniedError as exc:
        LOGGER.warning("readiness: object store denied: %s", exc)
        return f"denied ({exc.reason})"
    except ByteStoreError as exc:
        LOGGER.warning("readiness: object store unusable: %s", exc)
        return f"unreachable ({exc.reason})"
    except Exception as exc:  # an SDK error the store did not translate: still "not ready"
        LOGGER.warning("readiness: object store check failed (%s)", type(exc).__name__)
        return f"unreachable ({type(exc).__name__})"
    return "ok"


def _spool_check(spool: Spool) -> str:
    """Whether the spool could be written, judged without writing: its filesystem is not
    mounted read-only and this process may create files in the spool and its tmp directory
    (``os.access``, with the process's real ids: xrayd does not run set-uid)."""
    try:
        if os.statvfs(spool.root).f_flag & os.ST_RDONLY:
            return "not writable (read-only filesystem)"
    except OSError as exc:
        return f"not writable ({type(exc).__name__})"
    tmp = spool.root / TMP_DIR
    for directory in (spool.root, tmp) if tmp.is_dir() else (spool.root,):
        if not os.access(directory, os.W_OK | os.X_OK):
            return "not writable (permissions)"
    return "ok"


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


@router.get(
    "/ready",
    summary="Readiness: database, model, spool and its free space, and object store are usable",
)
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
