"""The model the analysis workers use: the registry's active version, loaded once per version.

``get()`` returns the loaded classifier of the active model version; at most every
``check_seconds`` it asks the registry which version is active, and after a promotion or a
rollback it loads that one (the next job gets it; a job in progress keeps the classifier it
started with, see ``xrayd.analysis``). Without a registry it serves the ``[model]`` bundle.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from config.settings import ModelSettings
from models.bundle import default_bundle_path
from models.loading import ReadyClassifier, load_classifier

LOGGER = logging.getLogger(__name__)

__all__ = ["ModelHolder"]

#: returns the bundle directory to serve (None: the configured one)
ActiveBundle = Callable[[], Path | None]


class ModelHolder:
    """Loads the active bundle with its runtime; ``get()`` waits for it."""

    def __init__(
        self,
        settings: ModelSettings,
        active: ActiveBundle | None = None,
        *,
        check_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._active = active
        self._check_seconds = check_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._ready: ReadyClassifier | None = None
        self._path: Path | None = None
        self._checked_at: float | None = None
        self._wanted: Path | None = None

    def _configured(self) -> Path:
        return self.settings.bundle or default_bundle_path()

    def _wanted_path(self) -> Path:
        now = self._clock()
        due = self._checked_at is None or now - self._checked_at >= self._check_seconds
        if self._active is not None and due:
            try:
                self._wanted = self._active()
            except Exception:  # the registry is unreachable: keep serving what we have
                LOGGER.exception("cannot read the active model version; keeping the current one")
            self._checked_at = now
        return self._wanted or self._path or self._configured()

    def get(self) -> ReadyClassifier:
        with self._lock:
            path = self._wanted_path()
            if self._ready is None or path != self._path:
                s = self.settings
                previous = self._ready
                self._ready = load_classifier(
                    path,
                    device=s.device,
                    runtime=s.runtime,
                    threads=s.threads,
                    batch_size=s.batch_size,
                )
                self._path = path
                if previous is not None:
                    info = self._ready.model.info
                    LOGGER.info(
                        "switched to model %s %s (%s)", info.name, info.version, info.sha256[:12]
                    )
            return self._ready

    def refresh(self) -> None:
        """Ask the registry again at the next ``get()`` (after a promotion or rollback)."""
        with self._lock:
            self._checked_at = None

    @property
    def loaded(self) -> bool:
        return self._ready is not None

    @property
    def version(self) -> tuple[str, str, str] | None:
        """(name, version, sha256) of the loaded model, if any."""
        ready = self._ready
        if ready is None:
            return None
        info = ready.model.info
        return info.name, info.version, info.sha256

    def preload(self) -> threading.Thread:
        """Start loading in the background (a failure is logged; ``get()`` retries it)."""

        def run() -> None:
            try:
                self.get()
            except Exception:
                LOGGER.exception("loading the model failed; analysis jobs will retry")

        thread = threading.Thread(target=run, name="xrayd-model-load", daemon=True)
        thread.start()
        return thread
