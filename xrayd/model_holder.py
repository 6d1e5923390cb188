"""The model the analysis workers use: loaded once, on first use or ahead of time."""

from __future__ import annotations

import logging
import threading

from config.settings import ModelSettings
from models.loading import ReadyClassifier, load_classifier

LOGGER = logging.getLogger(__name__)

__all__ = ["ModelHolder"]


class ModelHolder:
    """Loads the ``[model]`` bundle with its runtime once; ``get()`` waits for it."""

    def __init__(self, settings: ModelSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._ready: ReadyClassifier | None = None

    def get(self) -> ReadyClassifier:
        with self._lock:
            if self._ready is None:
                s = self.settings
                self._ready = load_classifier(
                    s.bundle,
                    device=s.device,
                    runtime=s.runtime,
                    threads=s.threads,
                    batch_size=s.batch_size,
                )
            return self._ready

    @property
    def loaded(self) -> bool:
        return self._ready is not None

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
