"""Prometheus metrics of a running node (served at ``GET /metrics`` by :mod:`xrayd.web.ops`).

A :class:`Metrics` owns its registry (never prometheus_client's global one) and is built by
the composition root. Counters and the inference histogram live in this process and start at
zero with it (with ``node.listener_processes`` > 1, the extra listener processes' instances
and rejections are not counted here). Gauges are read at scrape time: job, study and delivery
states and dead letters from the database, free space of the spool's filesystem, the model in
memory. No label ever carries patient data: label values are states, reasons, destination
names and the model's name, version and sha256.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from storage.schema import DeliveryState, JobState, StudyState, utcnow
from storage.spool import DiskUsage
from storage.status import status_counts

if TYPE_CHECKING:
    from storage.db import Sessions
    from storage.retention import RetentionReport
    from xrayd.pipeline.delivery import DeliveryReport

__all__ = ["CONTENT_TYPE", "Metrics"]

LOGGER = logging.getLogger(__name__)

#: the media type of :meth:`Metrics.render`
CONTENT_TYPE = CONTENT_TYPE_LATEST
#: seconds of one forward pass (a study's analysable images in one batch)
INFERENCE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

ModelVersion = Callable[[], "tuple[str, str, str] | None"]


class _ScrapeTime(Collector):
    """Gauges computed when Prometheus scrapes: database counts, disk, model."""

    def __init__(
        self,
        sessions: Sessions,
        disk: Callable[[], DiskUsage],
        min_free_bytes: int,
        model: ModelVersion,
    ) -> None:
        self.sessions = sessions
        self.disk = disk
        self.min_free_bytes = min_free_bytes
        self.model = model

    def describe(self) -> Iterable[Metric]:
        return []  # names are only known by scraping; never scrape at registration

    def collect(self) -> Iterable[Metric]:
        yield from self._database()
        yield from self._disk()
        yield from self._model()

    def _database(self) -> Iterable[Metric]:
        up = GaugeMetricFamily("xrayd_database_up", "1 if the database answered this scrape")
        try:
            counts = status_counts(self.sessions)
        except Exception as exc:  # a scrape must still answer (with database_up 0)
            LOGGER.warning("metrics: database unreachable (%s)", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        jobs = GaugeMetricFamily("xrayd_jobs", "Analysis jobs by state", labels=["state"])
        for state in JobState:
            jobs.add_metric([state.value], counts.jobs_by_state.get(state.value, 0))
        yield jobs
        studies = GaugeMetricFamily("xrayd_studies", "Studies by state", labels=["state"])
        for study_state in StudyState:
            studies.add_metric(
                [study_state.value], counts.studies_by_state.get(study_state.value, 0)
            )
        yield studies
        deliveries = GaugeMetricFamily(
            "xrayd_deliveries", "Deliveries of result objects by state", labels=["state"]
        )
        for delivery_state in DeliveryState:
            deliveries.add_metric(
                [delivery_state.value], counts.deliveries_by_state.get(delivery_state.value, 0)
            )
        yield deliveries
        dead = GaugeMetricFamily(
            "xrayd_dead_letters",
            "Dead jobs and dead deliveries waiting for an operator",
            labels=["kind"],
        )
        dead.add_metric(["job"], counts.jobs_by_state.get(JobState.DEAD.value, 0))
        dead.add_metric(["delivery"], counts.deliveries_by_state.get(DeliveryState.DEAD.value, 0))
        dead.add_metric(["retrain"], counts.queues["retrain"].get(JobState.DEAD.value, 0))
        yield dead
        queued = GaugeMetricFamily(
            "xrayd_queue_jobs",
            "Jobs of xrayd's work queue (analysis, delivery, retrain) by state",
            labels=["queue", "state"],
        )
        for name, states in counts.queues.items():
            for state in JobState:
                queued.add_metric([name, state.value], states.get(state.value, 0))
        yield queued
        waiting = GaugeMetricFamily(
            "xrayd_queue_oldest_due_seconds",
            "How long the oldest due queued job of each queue has waited (0: none waiting)",
            labels=["queue"],
        )
        now = utcnow()
        for name, due in counts.oldest_due.items():
            waited = 0.0 if due is None else max(0.0, (now - due).total_seconds())
            waiting.add_metric([name], waited)
        yield waiting

    def _disk(self) -> Iterable[Metric]:
        try:
            usage = self.disk()
        except OSError as exc:
            LOGGER.warning("metrics: cannot measure the spool (%s)", type(exc).__name__)
            return
        yield GaugeMetricFamily(
            "xrayd_spool_free_bytes",
            "Free bytes of the spool's filesystem (available to xrayd)",
            value=usage.free_bytes,
        )
        yield GaugeMetricFamily(
            "xrayd_spool_size_bytes", "Size of the spool's filesystem", value=usage.total_bytes
        )
        yield GaugeMetricFamily(
            "xrayd_spool_min_free_bytes",
            "Low-water mark: below it associations and C-STOREs are refused",
            value=self.min_free_bytes,
        )

    def _model(self) -> Iterable[Metric]:
        version = self.model()
        yield GaugeMetricFamily(
            "xrayd_model_loaded", "1 once the classifier is in memory", value=int(bool(version))
        )
        if version is not None:
            name, ver, sha256 = version
            info = InfoMetricFamily("xrayd_model", "The loaded model")
            info.add_metric([], {"name": name, "version": ver, "sha256": sha256})
            yield info


class Metrics:
    """The node's metrics; its observer methods are the hooks the parts call."""

    def __init__(
        self,
        sessions: Sessions,
        disk: Callable[[], DiskUsage],
        *,
        min_free_bytes: int = 0,
        model: ModelVersion = lambda: None,
    ) -> None:
        # Not auto-described: registering must not scrape (no database query at construction).
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.instances_received = Counter(
            "xrayd_instances_received",
            "Instances received and stored (acknowledged with success), by outcome",
            ["outcome"],
            registry=r,
        )
        for outcome in ("new", "duplicate", "conflict"):
            self.instances_received.labels(outcome)
        self.associations_rejected = Counter(
            "xrayd_associations_rejected",
            "Associations rejected (A-ASSOCIATE-RJ), by reason",
            ["reason"],
            registry=r,
        )
        self.connections_refused = Counter(
            "xrayd_connections_refused",
            "TCP connections closed at accept, before any association, by reason "
            "(connection_limit, per_host_limit)",
            ["reason"],
            registry=r,
        )
        for reason in ("connection_limit", "per_host_limit"):
            self.connections_refused.labels(reason)
        self.inference_seconds = Histogram(
            "xrayd_inference_seconds",
            "Seconds of one forward pass of the classifier (all analysable images of a study)",
            buckets=INFERENCE_BUCKETS,
            registry=r,
        )
        self.inference_images = Counter(
            "xrayd_inference_images", "Images through the classifier", registry=r
        )
        self.delivery_attempts = Counter(
            "xrayd_delivery_attempts",
            "Attempts to send a result object, by destination",
            ["destination"],
            registry=r,
        )
        self.delivery_failures = Counter(
            "xrayd_delivery_failures",
            "Failed attempts to send a result object, by destination and what followed "
            "(retry or dead)",
            ["destination", "result"],
            registry=r,
        )
        self.retention_studies = Counter(
            "xrayd_retention_purged_studies",
            "Studies whose files retention deleted, by reason (age, disk_pressure)",
            ["reason"],
            registry=r,
        )
        self.retention_bytes = Counter(
            "xrayd_retention_freed_bytes", "Bytes retention deleted from the spool", registry=r
        )
        self.web_logins = Counter(
            "xrayd_web_logins",
            "Login form submissions, by outcome: ok, failed (wrong name or password), "
            "refused (locked out: no password check, no audit event)",
            ["outcome"],
            registry=r,
        )
        for outcome in ("ok", "failed", "refused"):
            self.web_logins.labels(outcome)
        r.register(_ScrapeTime(sessions, disk, min_free_bytes, model))

    # -- observers (called on the threads that do the work) -------------------------------

    def instance_stored(self, outcome: str) -> None:
        self.instances_received.labels(outcome).inc()

    def association_rejected(self, reason: str) -> None:
        self.associations_rejected.labels(reason).inc()

    def connection_refused(self, reason: str) -> None:
        self.connections_refused.labels(reason).inc()

    def inference(self, seconds: float, images: int) -> None:
        self.inference_seconds.observe(seconds)
        self.inference_images.inc(images)

    def delivery(self, report: DeliveryReport) -> None:
        destination = report.claim.destination_name
        self.delivery_attempts.labels(destination).inc()
        if not report.outcome.ok:
            self.delivery_failures.labels(destination, report.recorded).inc()

    def login(self, outcome: str) -> None:
        self.web_logins.labels(outcome).inc()

    def retention(self, report: RetentionReport) -> None:
        if report.by_age:
            self.retention_studies.labels("age").inc(report.by_age)
        if report.by_pressure:
            self.retention_studies.labels("disk_pressure").inc(report.by_pressure)
        if report.bytes_freed:
            self.retention_bytes.inc(report.bytes_freed)

    # -- exposition -----------------------------------------------------------------------

    def render(self) -> bytes:
        """The text exposition format (version 0.0.4)."""
        return generate_latest(self.registry)
