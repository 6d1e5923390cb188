"""Retraining runs as jobs of the ``retrain`` queue (:mod:`storage.training`): a schedule or
a person *requests* a run (:meth:`RetrainService.request`), a :class:`RetrainWorker` (or the
foreground command, :meth:`RetrainService.run_now`) claims it and runs it end to end: check the
reviews, lock the validation set on the first run, fine-tune and judge (``retrain.run``),
register the candidate, promote it when ``[retrain] auto_promote`` allows, and record the run.

While a run trains, a :class:`~xrayd.workers.analysis.LeaseKeeper` renews its job's lease (the run's
heartbeat). A worker that dies stops renewing: once the lease is over, the sweep of any retrain
worker (:func:`storage.training.requeue_expired`) queues the run again or, on its last attempt
(``max_attempts`` 1 by default), marks it ``failed``. A worker that lost its job neither
registers its candidate nor records an outcome.

The candidate bundle is published atomically by ``retrain.run`` before it is registered; a
crash before the registration leaves a complete but unregistered directory, which the next run
removes (:meth:`RetrainService.clean_unregistered`). So no model is ever half-registered.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from config.settings import Settings
from storage import queue
from storage.bytestore import ByteStore
from storage.db import Sessions
from storage.errors import JobLostError
from storage.model_versions import (
    active_version,
    list_model_versions,
    promote,
)
from storage.schema import JobState
from storage.spool import Spool
from storage.training import (
    ClaimedRun,
    RunRow,
    add_validation_cases,
    ensure_holds_run,
    finish_run,
    last_finished_run,
    register_candidate,
    request_run,
    requeue_expired,
    reviewed_examples,
    reviews_since,
    running_run,
    start_run,
    validation_cases,
)
from xrayd.runtime.limits import image_limits
from xrayd.runtime.served_model import register_configured_model, verify_version
from xrayd.workers.analysis import LeaseKeeper
from xrayd.workers.base import LoopWorker, Wakeup

__all__ = ["ForegroundRun", "RetrainService", "RetrainWorker"]

LOGGER = logging.getLogger(__name__)
ACTOR = "xrayd-retrain"


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class ForegroundRun:
    """What :meth:`RetrainService.run_now` did.

    ``outcome``: ``"finished"`` (``run`` holds the recorded outcome), ``"busy"`` (another run
    is going: nothing was run; a request made meanwhile was cancelled), ``"taken"`` (a retrain
    worker claimed the requested run first: it runs there), ``"slot_taken"`` (the slot was
    requested already) or ``"lost"`` (this process lost the run's job while it trained: the
    outcome was not recorded)."""

    outcome: Literal["finished", "busy", "taken", "slot_taken", "lost"]
    run: RunRow | None = None
    #: the worker that runs it, for "taken"
    worker: str | None = None


class RetrainService:
    """Requests and runs retraining for one deployment (``xrayd serve``, ``xrayd scheduler``,
    ``xrayd worker --queues retrain`` or the CLI)."""

    def __init__(
        self,
        settings: Settings,
        sessions: Sessions,
        spool: Spool,
        *,
        on_promoted: Callable[[], None] = lambda: None,
        on_requested: Callable[[], None] = lambda: None,
        clock: Callable[[], datetime] = utcnow,
        store: ByteStore | None = None,
        worker_id: str | None = None,
        max_attempts: int = 1,
        renew_interval: float | None = None,
    ) -> None:
        """``store`` holds the reviewed images (None: the spool itself). ``on_requested``
        wakes this process's retrain worker when a run was queued. ``max_attempts``: how
        many workers a requested run may be given (1: a run whose worker dies fails).
        ``renew_interval``: how often the lease of the run in hand is renewed (default a
        third of ``[retrain] lease_seconds``)."""
        self.settings = settings
        self.sessions = sessions
        self.spool = spool
        self.store = store
        self.on_promoted = on_promoted
        self.on_requested = on_requested
        self.clock = clock
        self.worker = worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self.max_attempts = max_attempts
        self.renew_interval = renew_interval or settings.retrain.lease_seconds / 3

    @property
    def models_dir(self) -> Path:
        r = self.settings.retrain
        return r.models_dir or (self.settings.storage.data_dir / "models")

    def salt(self) -> str:
        """The site's secret for patient groups (created once, kept beside the database)."""
        path = self.settings.storage.data_dir / "retrain-salt"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
        return path.read_text().strip()

    def clean_unregistered(self) -> list[Path]:
        """Remove partial bundles and bundles no registry row names (a crash's leftovers)."""
        from retrain.atomic import clean_partial

        removed = clean_partial(self.models_dir) if self.models_dir.exists() else []
        registered = {Path(v.path).resolve() for v in list_model_versions(self.sessions)}
        if self.models_dir.exists():
            for child in self.models_dir.iterdir():
                if child.is_dir() and child.resolve() not in registered:
                    shutil.rmtree(child)
                    removed.append(child)
        for path in removed:
            LOGGER.warning("removed an unregistered candidate bundle %s", path.name)
        return removed

    def _base(self) -> object:
        from retrain.base_data import BaseDataset

        r = self.settings.retrain
        return BaseDataset(
            kind=r.base_dataset,
            root=r.base_data,
            n_train=r.base_cases,
        )

    def _lock_validation_set(self, base: object) -> None:
        """Fix the site's locked validation set at the first run (base cases only)."""
        if validation_cases(self.sessions):
            return
        from retrain.base_data import BaseDataset
        from retrain.validation import ValidationParams, base_validation_cases

        assert isinstance(base, BaseDataset)
        params = ValidationParams(count=self.settings.retrain.validation_cases)
        cases = base_validation_cases(base, params)
        added = add_validation_cases(self.sessions, list(cases), actor=ACTOR)
        LOGGER.info("locked validation set fixed with %d base cases", added)

    # -- requesting and claiming -----------------------------------------------------------

    def request(self, slot: str, trigger: str) -> RunRow | None:
        """Queue a run for ``slot`` (a job of the ``retrain`` queue); None when the slot was
        requested already (another scheduler's firing, a restart's catch-up) or, for a
        scheduled run, when a run is queued already (firings coalesce)."""
        run = request_run(
            self.sessions,
            slot=slot,
            trigger=trigger,
            now=self.clock(),
            max_attempts=self.max_attempts,
            unless_waiting=trigger == "scheduled",
        )
        if run is None:
            LOGGER.info("retraining %s: a run was requested already, nothing to do", slot)
            return None
        self.on_requested()
        return run

    def claim(self, *, job_id: int | None = None) -> ClaimedRun | None:
        """Start the next queued run (the one of ``job_id`` only, if given); None when none is
        due or a run is going."""
        return start_run(
            self.sessions,
            self.worker,
            self.clock(),
            self.settings.retrain.lease_seconds,
            job_id=job_id,
        )

    def run_now(self, slot: str, trigger: str, *, progress: bool = False) -> ForegroundRun:
        """Request a run and run it in this thread (``xrayd retrain --now``), unless another
        run is going or a retrain worker takes the request first."""
        if running_run(self.sessions) is not None:
            return ForegroundRun("busy")
        run = request_run(self.sessions, slot=slot, trigger=trigger, now=self.clock())
        if run is None:
            return ForegroundRun("slot_taken")
        assert run.job_id is not None
        claimed = self.claim(job_id=run.job_id)
        if claimed is None:
            return self._not_claimed(run.job_id)
        finished = self.run_claimed(claimed, progress=progress)
        if finished is None:
            return ForegroundRun("lost", claimed.run)
        return ForegroundRun("finished", finished)

    def _not_claimed(self, job_id: int) -> ForegroundRun:
        """The requested job could not be claimed: a worker took it, or a run started in
        between (then the request is cancelled: this command runs now or not at all)."""
        if queue.cancel(self.sessions, job_id, self.clock()):
            return ForegroundRun("busy")
        state, worker = queue.job_holder(self.sessions, job_id) or (None, None)
        if state != JobState.RUNNING:
            worker = None  # it ran already (a fast worker) or was given up
        LOGGER.info("retraining job %d was taken by another worker (%s)", job_id, state)
        return ForegroundRun("taken", worker=worker)

    # -- running ----------------------------------------------------------------------------

    def run_claimed(self, claimed: ClaimedRun, *, progress: bool = False) -> RunRow | None:
        """Run a started run to its outcome, renewing its job's lease meanwhile, and record
        the outcome; None when this worker lost the run's job (nothing recorded)."""
        keeper = LeaseKeeper(
            self.sessions,
            claimed,
            claimed.worker_id,
            self.settings.retrain.lease_seconds,
            self.clock,
            self.renew_interval,
        )
        try:
            with keeper:
                return self._run(claimed, progress=progress)
        except JobLostError as exc:
            LOGGER.warning("retraining run %d: %s", claimed.run.id, exc)
            return None

    def _run(self, claimed: ClaimedRun, *, progress: bool) -> RunRow:
        r = self.settings.retrain
        run = claimed.run
        # e.g. claimed long ago by a process that stalled
        ensure_holds_run(self.sessions, claimed, "before it started")
        try:
            last = last_finished_run(self.sessions)
            new = reviews_since(self.sessions, last.started_at if last else None)
            if run.trigger == "scheduled" and new < r.min_new_reviews:
                LOGGER.info(
                    "retraining skipped: %d new review(s), %d needed", new, r.min_new_reviews
                )
                return finish_run(
                    self.sessions,
                    run.id,
                    worker_id=claimed.worker_id,
                    state="skipped",
                    now=self.clock(),
                    new_reviews=new,
                    detail={"reason": f"{new} new reviews < min_new_reviews {r.min_new_reviews}"},
                )
            return self._train(claimed, new, progress=progress)
        except JobLostError:
            raise
        except Exception as exc:
            LOGGER.exception("retraining run %d failed", run.id)
            return finish_run(
                self.sessions,
                run.id,
                worker_id=claimed.worker_id,
                state="failed",
                now=self.clock(),
                error=f"{type(exc).__name__}: {exc}",
            )

    def _train(self, claimed: ClaimedRun, new_reviews: int, *, progress: bool) -> RunRow:
        from retrain.gate import GateConfig
        from retrain.run import RetrainInputs, run_retraining

        r = self.settings.retrain
        run = claimed.run
        current = register_configured_model(self.settings, self.sessions)
        active = active_version(self.sessions) or current
        verify_version(active)  # the bundle retrained from is the one registered
        self.models_dir.mkdir(parents=True, exist_ok=True)
        self.clean_unregistered()
        base = self._base()
        self._lock_validation_set(base)
        version = f"{active.version}+r{run.id}"[:64]
        disagreements, drift = self._monitoring()
        outcome = run_retraining(
            RetrainInputs(
                current_bundle=Path(active.path),
                base=base,  # type: ignore[arg-type]
                reviewed=reviewed_examples(self.sessions),
                validation_cases=validation_cases(self.sessions),
                spool_root=self.spool.root,
                store=self.store,
                salt=self.salt(),
                out_dir=self.models_dir,
                name=active.name,
                version=version,
                review_weight=r.review_weight,
                epochs=r.epochs,
                learning_rate=r.learning_rate,
                batch_size=r.batch_size,
                device=r.device,
                progress=progress,
                gate=GateConfig(
                    auc_margin=r.gate.auc_margin,
                    min_sensitivity=r.gate.min_sensitivity,
                    min_specificity=r.gate.min_specificity,
                ),
                new_reviews=new_reviews,
                disagreements=disagreements,
                drift=drift,
                limits=image_limits(self.settings.limits),
            )
        )
        verdict = outcome.verdict.verdict
        register_candidate(
            self.sessions,
            claimed,
            name=outcome.name,
            version=outcome.version,
            sha256=outcome.weights_sha256,
            path=str(outcome.bundle_dir.resolve()),
            state="candidate" if verdict == "passed" else "rejected",
            actor=ACTOR,
            metrics=outcome.candidate.as_json(),
            gate=outcome.verdict.as_json(),
            manifest_sha256=outcome.manifest_sha256,
            parent_version=active.version,
        )
        if verdict == "passed" and r.auto_promote:
            promote(self.sessions, outcome.version, actor=ACTOR, check=verify_version)
            self.on_promoted()
        LOGGER.info(
            "retraining run %d: candidate %s %s (%s)",
            run.id,
            outcome.version,
            verdict,
            "; ".join(outcome.verdict.reasons) or "all rules met",
        )
        return finish_run(
            self.sessions,
            run.id,
            worker_id=claimed.worker_id,
            state="succeeded",
            now=self.clock(),
            new_reviews=new_reviews,
            candidate_version=outcome.version,
            verdict=verdict,
            report_path=str(outcome.report_dir),
            detail=outcome.summary(),
        )

    def _monitoring(self) -> tuple[list[Any], Any]:
        """Disagreement per body part over the last 90 days, and drift: agreement with the
        radiologists over the last 30 days against the 30 days before (for the run report)."""
        from retrain.report import BodyPartReviews, drift_check
        from storage.stats import agreement

        now = self.clock()
        window = agreement(self.sessions, now - timedelta(days=90), now)
        parts = [BodyPartReviews(row.key, row.n, row.n - row.agreed) for row in window.by_body_part]
        recent = agreement(self.sessions, now - timedelta(days=30), now).overall
        before = agreement(self.sessions, now - timedelta(days=60), now - timedelta(days=30))
        drift = drift_check(recent.rate, recent.n, before.overall.rate, before.overall.n)
        if drift.warning:
            LOGGER.warning("agreement with radiologists dropped: %s", drift.reason)
        return parts, drift


class RetrainWorker(LoopWorker):
    """Claims runs of the ``retrain`` queue and runs them, one at a time, until stopped; at
    each turn it first takes up the runs whose worker stopped (expired leases)."""

    what = "retrain worker"

    def __init__(
        self,
        service: RetrainService,
        stop: threading.Event,
        wakeup: Wakeup,
        *,
        poll_seconds: float = 10.0,
    ) -> None:
        super().__init__("xrayd-retrain", stop, wakeup, poll_seconds)
        self.service = service
        self._lock = threading.Lock()
        self._in_hand: ClaimedRun | None = None

    def turn(self) -> bool:
        return self.run_once() is not False  # None: a run whose job was lost, still a turn

    def run_once(self) -> RunRow | Literal[False] | None:
        """Sweep expired leases, then claim and run at most one run. Returns False when there
        was nothing to run, else the recorded outcome (None: the run's job was lost)."""
        recovered = requeue_expired(self.service.sessions, self.service.clock())
        if recovered:
            LOGGER.warning("%d retraining run(s) whose worker stopped were taken up", recovered)
        if self.stop_event.is_set():
            return False
        with self._lock:
            claimed = self.service.claim()
            self._in_hand = claimed
        if claimed is None:
            return False
        try:
            return self.service.run_claimed(claimed)
        finally:
            with self._lock:
                self._in_hand = None

    def shutdown(self, timeout: float) -> None:
        """Stop after the run in hand, waiting at most ``timeout`` seconds; a run still
        training then is given back to the queue (:func:`storage.queue.release`: failed on
        its last attempt), as its process is about to end."""
        self.stop(timeout)
        with self._lock:
            claimed = self._in_hand
            if claimed is not None and queue.release(
                self.service.sessions, claimed.job_id, self.service.clock()
            ):
                LOGGER.warning("retraining run %d given up: xrayd is stopping", claimed.run.id)
