"""The composition root: builds storage, listener, timers and workers from the settings."""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
import ssl
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from config.errors import ConfigError
from config.settings import Settings
from dicom_node.scp import ListenerConfig, StoreSCP
from dicom_node.tls import server_context
from models.runtime_cache import RuntimeChoiceCache
from retrain.scheduler import RetrainScheduler, slot_time
from storage import jobs, notify
from storage.bytestore import process_alive, remove_orphaned_fetches
from storage.db import Sessions
from storage.opened import Storage, open_storage
from storage.spool import DiskUsage
from storage.training import list_runs
from storage.users import user_count
from xrayd.pipeline.analyse import StudyAnalyser
from xrayd.pipeline.delivery import DeliveryOptions, DeliveryReport, DeliveryWorker
from xrayd.pipeline.dispatch import Analyser
from xrayd.pipeline.receive import SpoolingSink, utcnow
from xrayd.pipeline.refusal_audit import RefusalAudit, RefusalAuditFlusher
from xrayd.pipeline.verified_sr import VerifiedSRWriter
from xrayd.runtime.limits import image_limits
from xrayd.runtime.listeners import ListenerProcesses, exit_with_parent, inherited_listen_fd
from xrayd.runtime.metrics import Metrics
from xrayd.runtime.model_holder import ModelHolder
from xrayd.runtime.roles import ALL_ROLES, QUEUES, ROLES
from xrayd.runtime.seed import seed_registry
from xrayd.runtime.served_model import (
    active_bundle_reader,
    register_configured_model,
    verify_active_model,
)
from xrayd.runtime.shutdown import SETTLE_SECONDS, block_stop_signals, exit_now, unfinished_threads
from xrayd.runtime.systemd import Notifier
from xrayd.web.context import WebContext
from xrayd.web.server import WebServer, check_bind_allowed
from xrayd.workers.analysis import CompletionTimer, Worker
from xrayd.workers.base import Wakeup
from xrayd.workers.retention import RetentionWorker
from xrayd.workers.retrain import RetrainService, RetrainWorker

LOGGER = logging.getLogger(__name__)


def listener_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The listener's TLS context from ``[node.tls]`` (None: plain DICOM); checks every TLS
    file of the settings first, raising :class:`ConfigError` naming the keys."""
    settings.check_tls_files()
    tls = settings.node.tls
    if tls is None:
        return None
    try:
        return server_context(tls.cert_file, tls.key_file, tls.ca_file, tls.require_client_cert)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise ConfigError(f"node.tls: cannot set up TLS ({type(exc).__name__})") from None


def recover_orphaned_jobs(sessions: Sessions, now: Callable[[], datetime] = utcnow) -> int:
    """Queue again the running jobs of workers on this host whose process is gone."""
    host = socket.gethostname()
    orphaned = []
    for job in jobs.list_jobs(sessions, "running"):
        parts = (job.worker_id or "").rsplit(":", 2)
        mine = len(parts) == 3 and parts[0] == host and parts[1].isdigit()
        if mine and (int(parts[1]) == os.getpid() or not process_alive(int(parts[1]))):
            orphaned.append(job.job_id)
    for job_id in orphaned:
        jobs.release_job(sessions, job_id, now())
    if orphaned:
        LOGGER.warning("%d job(s) left running by a stopped xrayd were queued again", len(orphaned))
    return len(orphaned)


class Node:
    """A running xrayd: listener, completion timer and workers sharing one database."""

    def __init__(
        self,
        settings: Settings,
        storage: Storage,
        analyser: Analyser | None = None,
        *,
        preload_model: bool = False,
        on_delivery: Callable[[DeliveryReport], None] | None = None,
        disk: Callable[[], DiskUsage] | None = None,
    ) -> None:
        """``disk`` measures the spool's filesystem (default ``Spool.usage``: ``os.statvfs``);
        the listener's low-water mark, ``/ready``, the metrics and retention all use it."""
        self.settings = settings
        self.storage = storage
        self.stop_event = threading.Event()
        self.wakeup = Wakeup()
        self.delivery_wakeup = Wakeup()
        self.retention_wakeup = Wakeup()
        self.retrain_wakeup = Wakeup()
        self.disk: Callable[[], DiskUsage] = disk or storage.spool.usage
        self.model = ModelHolder(
            settings.model,
            active=active_bundle_reader(storage.sessions),
            # measured once per bundle and host, not at every start of every worker process
            runtime_cache=RuntimeChoiceCache(
                settings.storage.data_dir / "cache" / "runtime-choice.json"
            ),
        )
        self.preload_model = preload_model
        self.on_delivery = on_delivery
        node = settings.node
        min_free_bytes = node.min_free_mb * 1024 * 1024
        self.metrics = Metrics(
            storage.sessions,
            self.disk,
            min_free_bytes=min_free_bytes,
            model=lambda: self.model.version,
        )
        self.analyser = analyser or StudyAnalyser(
            storage.sessions,
            storage.spool,
            self.model.get,
            store=storage.store,
            on_queued=self.delivery_wakeup.set,
            on_inference=self.metrics.inference,
            limits=image_limits(settings.limits),
            delivery_max_attempts=settings.delivery.max_attempts,
            uid_root=settings.node.uid_root,
        )
        self.refusals = RefusalAudit(storage.sessions)
        self.sink = SpoolingSink(
            storage.spool,
            storage.sessions,
            store=storage.store,
            min_free_bytes=min_free_bytes,
            release_ends_wait=settings.study.release_ends_wait,
            max_attempts=settings.jobs.max_attempts,
            on_jobs_created=self.wakeup.set,
            free_bytes=self.free_bytes,
            on_stored=self.metrics.instance_stored,
            on_rejected=self.metrics.association_rejected,
            on_low_disk=self.retention_wakeup.set,
            audit_rejection=self.refusals.audit_rejection,
        )
        self.scp = StoreSCP(
            ListenerConfig(
                ae_title=node.ae_title,
                host=node.host,
                port=node.port,
                accept_any_caller=node.accept_any_caller,
                max_associations=node.max_associations,
                max_pdu_bytes=node.max_pdu_bytes,
                idle_timeout_seconds=node.idle_timeout_seconds,
                extra_sop_classes=tuple(node.extra_sop_classes),
                new_stream_path=storage.spool.new_tmp_path,
                listen_fd=inherited_listen_fd(),
                ssl_context=listener_ssl_context(settings),
                free_bytes=self.free_bytes,
                min_free_bytes=min_free_bytes,
                artim_timeout_seconds=node.artim_timeout_seconds,
                max_connections_per_host=node.connections_per_host,
                max_instance_bytes=node.max_instance_mb * 1024 * 1024,
                on_connection_refused=self._connection_refused,
                max_inflated_bytes=settings.limits.max_inflated_mb * 1024 * 1024,
            ),
            self.sink,
        )
        self.threads: list[threading.Thread] = []
        self.roles: frozenset[str] = frozenset()

    def free_bytes(self) -> int:
        return self.disk().free_bytes

    def _connection_refused(self, host: str, reason: str) -> None:
        self.metrics.connection_refused(reason)
        self.refusals.connection_refused(host, reason)

    def _delivered(self, report: DeliveryReport) -> None:
        self.metrics.delivery(report)
        if self.on_delivery is not None:
            self.on_delivery(report)

    def start(self, roles: frozenset[str] = ALL_ROLES, *, concurrency: int | None = None) -> None:
        """Start what ``roles`` name (:data:`ROLES`; "web" and "retrain" are started by
        :func:`serve`). ``concurrency`` replaces ``[jobs] workers`` and ``[delivery] workers``
        for the worker roles started."""
        unknown = roles - ALL_ROLES
        if unknown:
            raise ValueError(f"unknown role(s) {sorted(unknown)}; known: {', '.join(ROLES)}")
        self.roles = roles
        sessions = self.storage.sessions
        seed_registry(self.settings, sessions)
        if "analysis" in roles:
            register_configured_model(self.settings, sessions)
            verify_active_model(sessions)  # a bundle altered since it was registered: no start
        orphaned = remove_orphaned_fetches(self.storage.spool)
        if orphaned:
            LOGGER.warning("removed %d image(s) a stopped xrayd process was reading", orphaned)
        if "listener" in roles:
            removed = self.storage.spool.cleanup_tmp()
            if removed:
                LOGGER.info("removed %d partial file(s) left by interrupted transfers", removed)
        if "analysis" in roles:
            recover_orphaned_jobs(sessions)
        if roles & {"listener", "analysis"}:
            # Promotes quiet studies and recovers expired leases: safe to run in every listener
            # and analysis process at once (row locks), so neither depends on the other's host.
            self.threads.append(
                CompletionTimer(
                    sessions,
                    self.settings.study,
                    self.settings.jobs,
                    utcnow,
                    self.stop_event,
                    self.wakeup,
                )
            )
        if "analysis" in roles:
            self._start_analysis(concurrency or self.settings.jobs.workers)
        if "delivery" in roles:
            self._start_delivery(concurrency or self.settings.delivery.workers)
        if "retention" in roles:
            self.threads.append(
                RetentionWorker(
                    sessions,
                    self.storage.spool,
                    self.settings.retention,
                    utcnow,
                    self.stop_event,
                    self.retention_wakeup,
                    disk=self.disk,
                    on_report=self.metrics.retention,
                    store=self.storage.store,
                )
            )
        if "listener" in roles:
            self.threads.append(RefusalAuditFlusher(self.refusals, self.stop_event))
        wakeups = {
            channel: wake
            for channel, wake, role in (
                (notify.ANALYSIS, self.wakeup.set, "analysis"),
                (notify.DELIVERY, self.delivery_wakeup.set, "delivery"),
                (notify.RETRAIN, self.retrain_wakeup.set, "retrain"),
            )
            if role in roles
        }
        if wakeups and self.storage.on_postgresql:
            # work queued by another process (a listener, another worker) wakes this one at
            # once instead of at its next poll
            self.threads.append(
                notify.NotificationListener(self.storage.engine, wakeups, self.stop_event)
            )
        if self.preload_model and "analysis" in roles:
            self.model.preload()
        for thread in self.threads:
            thread.start()
        if "listener" in roles:
            self.scp.start()

    def _start_analysis(self, workers: int) -> None:
        sessions = self.storage.sessions
        for i in range(workers):
            self.threads.append(
                Worker(
                    i,
                    sessions,
                    self.analyser,
                    self.settings.jobs,
                    utcnow,
                    self.stop_event,
                    self.wakeup,
                )
            )

    def _start_delivery(self, workers: int) -> None:
        sessions = self.storage.sessions
        d = self.settings.delivery
        options = DeliveryOptions(
            calling_ae_title=self.settings.node.ae_title,
            retry_base_seconds=d.retry_base_seconds,
            retry_max_seconds=d.retry_max_seconds,
            send_timeout_seconds=d.send_timeout_seconds,
            lease_seconds=d.lease_seconds,
            poll_seconds=d.poll_seconds,
            connect_timeout_seconds=d.connect_timeout_seconds,
            max_pdu_bytes=d.max_pdu_bytes,
        )
        for i in range(workers):
            self.threads.append(
                DeliveryWorker(
                    sessions,
                    self.storage.spool,
                    options,
                    utcnow,
                    self.stop_event,
                    self.delivery_wakeup,
                    index=i,
                    on_report=self._delivered,
                    store=self.storage.store,
                )
            )

    def stop(self, timeout: float = 20.0) -> None:
        """Stop accepting, let associations and the job in hand finish, then return."""
        if "listener" in self.roles:
            LOGGER.info("stopping: no new associations")
            self.scp.stop(timeout=timeout / 2)
        self.stop_event.set()
        self.wakeup.set()
        self.delivery_wakeup.set()
        self.retention_wakeup.set()
        for thread in self.threads:
            thread.join(timeout=timeout / 2)
        self.storage.close()
        LOGGER.info("stopped")


def web_context(settings: Settings, storage: Storage, node: Node) -> WebContext:
    """What the web app needs from a running node."""
    writer = VerifiedSRWriter(
        storage.sessions,
        storage.spool,
        settings,
        on_queued=node.delivery_wakeup.set,
        store=storage.store,
    )
    return WebContext(
        settings=settings,
        sessions=storage.sessions,
        spool=storage.spool,
        store=storage.store,
        write_verified_sr=writer.write,
        model_loaded=lambda: node.model.loaded,
        wake_delivery=node.delivery_wakeup.set,
        model_changed=node.model.refresh,
        metrics=node.metrics,
        disk=node.disk,
    )


def retrain_worker(settings: Settings, storage: Storage, node: Node) -> RetrainWorker:
    """The worker of the ``retrain`` queue (one per process: runs go one at a time anyway);
    a promotion reaches the analysis workers at once. A run requested by another process
    wakes it through the node's ``retrain`` notification (PostgreSQL)."""
    wakeup = node.retrain_wakeup
    service = RetrainService(
        settings,
        storage.sessions,
        storage.spool,
        on_promoted=node.model.refresh,
        on_requested=wakeup.set,
        store=storage.store,
    )
    return RetrainWorker(service, threading.Event(), wakeup)


def retrain_scheduler(settings: Settings, service: RetrainService) -> RetrainScheduler:
    """The retraining schedule of this deployment: each firing requests a run (a job of the
    ``retrain`` queue) that a retrain worker runs."""
    r = settings.retrain
    return RetrainScheduler(
        r.schedule, lambda slot: service.request(slot, "scheduled"), timezone=r.timezone
    )


def last_scheduled_slot(sessions: Sessions) -> datetime | None:
    """The fire time of the newest scheduled retraining slot claimed (run or skipped)."""
    times = [slot_time(r.slot) for r in list_runs(sessions, limit=100)]
    return max((t for t in times if t is not None), default=None)


def serve(
    settings: Settings,
    config_path: Path | None = None,
    *,
    listener_only: bool = False,
    roles: frozenset[str] = ALL_ROLES,
    concurrency: int | None = None,
) -> int:
    """Run until SIGTERM or SIGINT; returns the exit code.

    ``roles`` (:data:`ROLES`) says what this process runs: all of them for ``xrayd serve``,
    the listener and web UI for ``xrayd listener``, workers of some queues for ``xrayd
    worker`` (``concurrency`` threads per queue). ``listener_only`` runs just the DICOM
    listener: the extra processes of ``node.listener_processes`` (see
    :mod:`xrayd.runtime.listeners`).
    Under systemd (``Type=notify``) the main process reports ``READY=1`` once the listener and
    the web UI accept connections (a worker: once its threads run), and ``STOPPING=1`` when a
    stop signal arrives (:mod:`xrayd.runtime.systemd`).
    """
    # Block the stop signals before xrayd starts a thread, so that every thread inherits the
    # mask and the main thread alone takes them with sigwait() (a handler can miss a signal
    # that the kernel hands to another thread while the main thread sleeps on a lock).
    # ``xrayd serve`` blocks them already before importing torch, whose import starts a thread.
    stop_signals = block_stop_signals()
    # Type=notify: only the main process speaks for the service (unset for the children).
    systemd = Notifier(None) if listener_only else Notifier.from_environment()
    if listener_only:
        exit_with_parent()
    systemd.status("opening the database")
    if listener_only:
        roles = frozenset({"listener"})
    storage = open_storage(settings, create_if_empty=not listener_only, require_current=True)
    web_enabled = settings.web.enabled and "web" in roles
    if web_enabled:
        check_bind_allowed(settings.web, user_count(storage.sessions))
    node = Node(settings, storage, preload_model="analysis" in roles)
    extra: ListenerProcesses | None = None
    web: WebServer | None = None
    scheduler: RetrainScheduler | None = None
    retrainer: RetrainWorker | None = None

    def stop() -> list[str]:
        """Stop what runs, in order; returns the xrayd threads still running after that."""
        if scheduler is not None:
            scheduler.stop(wait=False)
        if retrainer is not None:
            # A run still training is given back to the queue (failed on its last attempt);
            # its unregistered bundle is removed by the next run.
            retrainer.shutdown(timeout=5.0)
        if web is not None:
            web.stop()
        if extra is not None:
            extra.stop()
        if listener_only:
            node.scp.stop(timeout=10)
            storage.close()
            return []
        if not node.roles:  # start-up failed before Node.start
            if "listener" in roles:
                node.scp.stop(timeout=1)
            storage.close()
            return unfinished_threads(SETTLE_SECONDS)
        if any(t.ident is not None for t in node.threads):
            node.stop()
        else:  # start-up failed before the threads ran
            node.scp.stop(timeout=1)
            storage.close()
        # the model loader and an analysis past Node.stop's join run native code: let them end
        return unfinished_threads(SETTLE_SECONDS)

    try:
        if listener_only:
            node.scp.start()
        else:
            node.start(roles, concurrency=concurrency)
            if "listener" in roles and settings.node.listener_processes > 1:
                extra = ListenerProcesses(
                    settings.node.listener_processes - 1,
                    node.scp.port,
                    config_path,
                    listen_fd=node.scp.listen_fd,
                )
                extra.start()
        role = "listener process" if listener_only else "xrayd"
        if "listener" in roles:
            listening = f"listening as {settings.node.ae_title} on port {node.scp.port}"
        else:
            listening = f"worker for {', '.join(q for q in QUEUES if q in roles)}"
        print(f"{role}: {listening}", flush=True)
        if web_enabled:
            web = WebServer(web_context(settings, storage, node))
            web.start()
            print(f"xrayd: web UI on {settings.web.host} port {web.port}", flush=True)
            listening += f", web UI on {settings.web.host} port {web.port}"
        if settings.retrain.enabled and "retrain" in roles:
            retrainer = retrain_worker(settings, storage, node)
            retrainer.start()
            scheduler = retrain_scheduler(settings, retrainer.service)
            scheduler.start()
            scheduler.catch_up(last_scheduled_slot(storage.sessions), utcnow())
    except BaseException:
        # e.g. a port in use: stop the threads already started before the error propagates
        try:
            stop()
        except Exception:
            LOGGER.exception("cleaning up after the failed start")
        raise
    # What is imported and started by now lives as long as the process: move it out of the
    # cyclic collector's reach, so that its occasional full passes do not walk torch's half a
    # million objects while holding the GIL (a pause of some 350 ms for every association).
    gc.freeze()
    systemd.ready(listening)
    signum = signal.sigwait(stop_signals)
    LOGGER.info("signal %d received: stopping", signum)
    systemd.stopping("stopping: finishing associations, the job and the sends in hand")
    left = stop()
    if left:
        LOGGER.warning(
            "stopping with %s still running; its work is taken up again at the next start",
            ", ".join(left),
        )
        exit_now(0)
    return 0
