"""What the web app needs from the running node, passed in by the composition root."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from config.settings import Settings
from storage.bytestore import ByteStore, LocalByteStore
from storage.db import Sessions
from storage.spool import DiskUsage, Spool
from xrayd.runtime.metrics import Metrics

__all__ = ["WebContext"]


@dataclass
class WebContext:
    """Dependencies of :func:`xrayd.web.app.create_app` (nothing is built at import time).

    ``write_verified_sr`` (override id -> result id or None) is set when the site sends
    radiologist-verified SRs; ``model_loaded`` tells ``/ready`` whether the classifier is in
    memory; ``wake_delivery`` nudges the delivery worker after a retry. ``metrics`` is served
    at ``/metrics`` (None: 404); ``disk`` measures the spool's filesystem for ``/ready`` (None:
    ``Spool.usage``). ``store`` holds the images and result objects the pages show (None: the
    spool itself); read it through :meth:`byte_store`.
    """

    settings: Settings
    sessions: Sessions
    spool: Spool
    write_verified_sr: Callable[[int], int | None] | None = None
    model_loaded: Callable[[], bool] = field(default=lambda: True)
    wake_delivery: Callable[[], None] = field(default=lambda: None)
    #: after a promotion or rollback: the analysis workers load the new active model
    model_changed: Callable[[], None] = field(default=lambda: None)
    metrics: Metrics | None = None
    disk: Callable[[], DiskUsage] | None = None
    store: ByteStore | None = None

    def byte_store(self) -> ByteStore:
        """Where the bytes of images and results are (``store``, else the spool)."""
        if self.store is None:
            self.store = LocalByteStore(self.spool)
        return self.store

    def disk_usage(self) -> DiskUsage:
        """The spool filesystem's space, measured as the node measures it."""
        return (self.disk or self.spool.usage)()
