"""What the admin pages and the admin REST API both show: a C-ECHO of a destination, a page
of the outbox or of the jobs, and the summary of the configured model bundle."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from config.settings import Settings
from dicom_node.echo_diagnosis import EchoCause
from dicom_node.scu import RemoteAE, diagnose_echo
from dicom_node.tls import ClientTLS
from storage.jobs import JobRow, list_jobs
from storage.outbox import DeliveryRow, list_deliveries
from storage.peers import DestinationRow
from storage.status import StatusCounts, status_counts
from xrayd.admin import jobs as admin_jobs
from xrayd.admin.actor import Actor
from xrayd.pipeline.delivery import outgoing_limits
from xrayd.web.admin_schemas import BundleOut, EchoOut, MetricOut
from xrayd.web.auth import context

__all__ = [
    "ECHO_TIMEOUT",
    "deliveries_page",
    "echo_destination",
    "jobs_page",
    "model_bundle",
    "retry_deliveries",
]

LOGGER = logging.getLogger(__name__)

#: seconds a C-ECHO may take at most (connection, association and response each)
ECHO_TIMEOUT = 5.0
REPORT_PATH = Path("report") / "report.json"

R = TypeVar("R")


async def echo_destination(settings: Settings, row: DestinationRow) -> EchoOut:
    """C-ECHO ``row`` (over TLS when it has TLS settings) from the node's AE title, in a
    worker thread, with the deliveries' bounds (``[delivery]`` connection and read timeouts,
    maximum PDU), each timeout at most :data:`ECHO_TIMEOUT` seconds. A failure names its
    cause and the fix to try (:mod:`dicom_node.echo_diagnosis`)."""
    try:
        tls = None if row.tls is None else ClientTLS.from_mapping(row.tls)
    except ValueError as exc:
        return EchoOut(
            ok=False,
            status=None,
            detail=f"the TLS settings are unusable: {exc}",
            cause=EchoCause.TLS_SETUP,
            fix="correct the destination's TLS settings (ca_file, cert_file, key_file)",
        )
    remote = RemoteAE(row.ae_title, row.host, row.port, tls=tls)
    limits = outgoing_limits(settings.delivery, at_most=ECHO_TIMEOUT)
    try:
        diagnosis = await run_in_threadpool(
            diagnose_echo, remote, settings.node.ae_title, limits=limits
        )
    except (OSError, ValueError, RuntimeError) as exc:
        LOGGER.warning("C-ECHO failed: %s", type(exc).__name__, extra={"destination": row.name})
        return EchoOut(
            ok=False,
            status=None,
            detail=f"{remote}: {type(exc).__name__}",
            cause=EchoCause.LOCAL_ERROR,
            fix="see xrayd's log",
        )
    if not diagnosis.ok:
        LOGGER.info(
            "C-ECHO failed: %s",
            diagnosis.cause.value,
            extra={"destination": row.name},
        )
    return EchoOut(
        ok=diagnosis.ok,
        status=diagnosis.status,
        detail=diagnosis.explanation,
        cause=diagnosis.cause,
        fix=diagnosis.fix,
    )


def deliveries_page(
    request: Request, state: str | None, limit: int, offset: int
) -> tuple[list[DeliveryRow], int]:
    """One page of deliveries (oldest first) and how many there are in ``state`` (or at all)."""
    return _page(request, list_deliveries, lambda c: c.deliveries_by_state, state, limit, offset)


def jobs_page(
    request: Request, state: str | None, limit: int, offset: int
) -> tuple[list[JobRow], int]:
    """One page of jobs (oldest first) and how many there are in ``state`` (or at all)."""
    return _page(request, list_jobs, lambda c: c.jobs_by_state, state, limit, offset)


def _page(
    request: Request,
    list_rows: Callable[..., list[R]],
    by_state: Callable[[StatusCounts], dict[str, int]],
    state: str | None,
    limit: int,
    offset: int,
) -> tuple[list[R], int]:
    """``list_rows(sessions, state, limit=, offset=)``, and the total of ``by_state``'s counts
    in ``state`` (of all of them for None)."""
    sm = context(request).sessions
    counts = by_state(status_counts(sm))
    total = counts.get(state, 0) if state else sum(counts.values())
    return list_rows(sm, state, limit=limit, offset=offset), total


def retry_deliveries(request: Request, actor: Actor, delivery_id: int | None) -> list[int]:
    """:func:`xrayd.admin.jobs.retry_deliveries` with the node's ``[delivery] max_attempts``,
    waking the sender when something was queued."""
    ctx = context(request)
    return admin_jobs.retry_deliveries(
        ctx.sessions,
        actor,
        delivery_id,
        max_attempts=ctx.settings.delivery.max_attempts,
        wake=ctx.wake_delivery,
    )


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
        point = meta.thresholds.default
        out.threshold = point.threshold
        out.indeterminate_low, out.indeterminate_high = (
            point.indeterminate_low,
            point.indeterminate_high,
        )
        out.per_body_part = {
            part: (p.indeterminate_low, p.threshold, p.indeterminate_high)
            for part, p in sorted(meta.thresholds.per_body_part.items())
        }
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
