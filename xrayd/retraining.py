"""One retraining run, end to end: claim, check the reviews, lock the validation set on the
first run, fine-tune and judge (``retrain.run``), register the candidate, promote it when
``[retrain] auto_promote`` allows, and record the run.

The candidate bundle is published atomically by ``retrain.run`` before it is registered; a
crash before the registration leaves a complete but unregistered directory, which the next run
removes (:meth:`RetrainService.clean_unregistered`), and a run row that the next claim marks
``failed`` once its lease is over. So no model is ever half-registered.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import socket
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from config.settings import Settings
from storage.bytestore import ByteStore
from storage.models_registry import (
    active_version,
    list_model_versions,
    promote,
    register_version,
)
from storage.spool import Spool
from storage.training import (
    RunRow,
    add_validation_cases,
    claim_run,
    finish_run,
    heartbeat,
    last_finished_run,
    reviewed_examples,
    reviews_since,
    validation_cases,
)
from xrayd.limits import image_limits
from xrayd.model_registry import register_configured_model, verify_version

__all__ = ["RetrainService"]

LOGGER = logging.getLogger(__name__)
ACTOR = "xrayd-retrain"


def utcnow() -> datetime:
    return datetime.now(UTC)


class RetrainService:
    """Runs retraining for one deployment (``xrayd serve``, ``xrayd scheduler`` or the CLI)."""

    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        spool: Spool,
        *,
        on_promoted: Callable[[], None] = lambda: None,
        clock: Callable[[], datetime] = utcnow,
        store: ByteStore | None = None,
    ) -> None:
        """``store`` holds the reviewed images (None: the spool itself)."""
        self.settings = settings
        self.sessions = sessions
        self.spool = spool
        self.store = store
        self.on_promoted = on_promoted
        self.clock = clock
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

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

    def run(self, slot: str, trigger: str, *, progress: bool = False) -> RunRow | None:
        """Run once for ``slot``; None when the slot was taken or another run is going."""
        r = self.settings.retrain
        lease = timedelta(seconds=r.lease_seconds)
        run = claim_run(
            self.sessions,
            slot=slot,
            trigger=trigger,
            worker=self.worker,
            now=self.clock(),
            lease=lease,
        )
        if run is None:
            LOGGER.info("retraining slot %s taken or a run is going: nothing to do", slot)
            return None
        try:
            last = last_finished_run(self.sessions)
            new = reviews_since(self.sessions, last.started_at if last else None)
            if trigger == "scheduled" and new < r.min_new_reviews:
                LOGGER.info(
                    "retraining skipped: %d new review(s), %d needed", new, r.min_new_reviews
                )
                return finish_run(
                    self.sessions,
                    run.id,
                    state="skipped",
                    now=self.clock(),
                    new_reviews=new,
                    detail={"reason": f"{new} new reviews < min_new_reviews {r.min_new_reviews}"},
                )
            return self._train(run, new, progress=progress)
        except Exception as exc:
            LOGGER.exception("retraining run %d failed", run.id)
            return finish_run(
                self.sessions,
                run.id,
                state="failed",
                now=self.clock(),
                error=f"{type(exc).__name__}: {exc}",
            )

    def _train(self, run: RunRow, new_reviews: int, *, progress: bool) -> RunRow:
        from retrain.gate import GateConfig
        from retrain.run import RetrainInputs, run_retraining

        r = self.settings.retrain
        current = register_configured_model(self.settings, self.sessions)
        active = active_version(self.sessions) or current
        verify_version(active)  # the bundle retrained from is the one registered
        self.models_dir.mkdir(parents=True, exist_ok=True)
        self.clean_unregistered()
        base = self._base()
        self._lock_validation_set(base)
        version = f"{active.version}+r{run.id}"[:64]
        disagreements, drift = self._monitoring()
        stop = threading.Event()
        beat = threading.Thread(
            target=self._heartbeat, args=(run.id, stop, r.lease_seconds / 4), daemon=True
        )
        beat.start()
        try:
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
        finally:
            stop.set()
            beat.join(timeout=5)
        verdict = outcome.verdict.verdict
        with self.sessions.begin() as session:
            register_version(
                session,
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
                run_id=run.id,
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

    def _heartbeat(self, run_id: int, stop: threading.Event, every: float) -> None:
        while not stop.wait(max(1.0, every)):
            heartbeat(self.sessions, run_id, self.clock())
