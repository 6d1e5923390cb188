"""The model the analysis workers use: the registry's active version, loaded once per version.

``get()`` returns the loaded classifier of the active model version; at most every
``check_seconds`` it asks the registry which version is active, and after a promotion or a
rollback it loads that one (the next job gets it; a job in progress keeps the classifier it
started with, see ``xrayd.pipeline.analyse``). Without a registry it serves the ``[model]`` bundle.

A registered bundle is loaded only if its weights hash to the sha256 the registry recorded
(:class:`RegisteredBundle`). A switch to a bundle that fails this (or any other check) is
refused with an error in the log, and the model already loaded goes on serving; the refused
bundle is not tried again until the registry names another one (or :meth:`refresh`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from config.settings import ModelSettings
from models.bundle import ExpectedBundle, default_bundle_path
from models.errors import BundleError
from models.loading import ReadyClassifier, load_classifier
from models.runtime_cache import RuntimeChoiceCache

LOGGER = logging.getLogger(__name__)

__all__ = ["ActiveBundle", "ModelHolder", "RegisteredBundle"]


@dataclass(frozen=True)
class RegisteredBundle:
    """A bundle directory and what the model registry recorded about it."""

    path: Path
    expected: ExpectedBundle


#: returns the bundle to serve (None: the configured one); a bare path is loaded unchecked
ActiveBundle = Callable[[], RegisteredBundle | Path | None]


class ModelHolder:
    """Loads the active bundle with its runtime; ``get()`` waits for it."""

    def __init__(
        self,
        settings: ModelSettings,
        active: ActiveBundle | None = None,
        *,
        check_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        runtime_cache: RuntimeChoiceCache | None = None,
    ) -> None:
        self.settings = settings
        #: the runtime "auto" chose per bundle and host (None: measure at every load)
        self.runtime_cache = runtime_cache
        self._active = active
        self._check_seconds = check_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._ready: ReadyClassifier | None = None
        self._target: RegisteredBundle | Path | None = None
        self._checked_at: float | None = None
        self._wanted: RegisteredBundle | Path | None = None
        #: a bundle whose load failed while another model was serving (not retried)
        self._refused: RegisteredBundle | Path | None = None

    def _configured(self) -> Path:
        return self.settings.bundle or default_bundle_path()

    def _wanted_target(self) -> RegisteredBundle | Path:
        now = self._clock()
        due = self._checked_at is None or now - self._checked_at >= self._check_seconds
        if self._active is not None and due:
            try:
                self._wanted = self._active()
            except Exception:  # the registry is unreachable: keep serving what we have
                LOGGER.exception("cannot read the active model version; keeping the current one")
            self._checked_at = now
        return self._wanted or self._target or self._configured()

    def get(self) -> ReadyClassifier:
        """The classifier to use; raises :class:`models.errors.BundleError` only when no model
        is loaded yet and the wanted one is refused."""
        with self._lock:
            target = self._wanted_target()
            if self._ready is not None and (target == self._target or target == self._refused):
                return self._ready
            path, expected = (
                (target.path, target.expected)
                if isinstance(target, RegisteredBundle)
                else (target, None)
            )
            s = self.settings
            previous = self._ready
            try:
                ready = load_classifier(
                    path,
                    device=s.device,
                    runtime=s.runtime,
                    threads=s.threads,
                    batch_size=s.batch_size,
                    expected=expected,
                    cache=self.runtime_cache,
                )
            except BundleError as exc:
                if previous is None:
                    LOGGER.error("model refused: %s", exc)
                    raise
                self._refused = target
                info = previous.model.info
                LOGGER.error(
                    "model switch refused, still serving %s %s (%s): %s",
                    info.name,
                    info.version,
                    info.sha256[:12],
                    exc,
                )
                return previous
            self._ready, self._target, self._refused = ready, target, None
            if previous is not None:
                info = ready.model.info
                LOGGER.info(
                    "switched to model %s %s (%s)", info.name, info.version, info.sha256[:12]
                )
            return ready

    def refresh(self) -> None:
        """Ask the registry again at the next ``get()`` (after a promotion or rollback), and
        try again a bundle refused before."""
        with self._lock:
            self._checked_at = None
            self._refused = None

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
