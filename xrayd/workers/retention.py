"""The retention thread of ``xrayd serve``: applies ``[retention]`` every ``interval_minutes``.

It runs once at start, then at each interval, and early (at most once a minute) when the
listener refused work for lack of space (its :class:`~xrayd.workers.analysis.Wakeup` is set). The
rules are in :mod:`storage.retention`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from config.settings import RetentionSettings
from storage.bytestore import ByteStore
from storage.db import Sessions
from storage.retention import RetentionPolicy, RetentionReport, run_retention
from storage.spool import DiskUsage, Spool
from xrayd.workers.base import LoopWorker, Wakeup

LOGGER = logging.getLogger(__name__)

__all__ = ["RetentionWorker", "policy_from_settings"]

MIB = 1024 * 1024
#: the least time between two runs when woken early
MIN_GAP_SECONDS = 60.0


def policy_from_settings(settings: RetentionSettings) -> RetentionPolicy:
    return RetentionPolicy(
        max_age=timedelta(days=settings.max_age_days) if settings.max_age_days else None,
        min_free_bytes=settings.min_free_mb * MIB,
        target_free_percent=settings.target_free_percent,
    )


class RetentionWorker(LoopWorker):
    """Runs :func:`storage.retention.run_retention` periodically until ``stop`` is set."""

    def __init__(
        self,
        sessions: Sessions,
        spool: Spool,
        settings: RetentionSettings,
        clock: Callable[[], datetime],
        stop: threading.Event,
        wakeup: Wakeup,
        *,
        disk: Callable[[], DiskUsage] | None = None,
        on_report: Callable[[RetentionReport], None] | None = None,
        min_gap_seconds: float = MIN_GAP_SECONDS,
        store: ByteStore | None = None,
    ) -> None:
        super().__init__("xrayd-retention", stop, wakeup, settings.interval_minutes * 60)
        self.sessions = sessions
        self.spool = spool
        self.policy = policy_from_settings(settings)
        self.interval = settings.interval_minutes * 60
        self.clock = clock
        self.disk = disk
        self.on_report = on_report
        self.min_gap = min_gap_seconds
        #: where the bytes are deleted (None: the spool itself)
        self.store = store
        self._turn_started = time.monotonic()

    what = "retention"

    def turn(self) -> bool:
        self._turn_started = time.monotonic()
        self.run_once()
        return False  # periodic: idle until the next interval (or an early wakeup)

    def idle(self) -> None:
        """Until the interval ends; woken early (low disk), run again after the minimum gap."""
        started = self._turn_started
        deadline = started + self.interval
        while not self.stop_event.is_set() and time.monotonic() < deadline:
            self.wakeup.wait(deadline - time.monotonic())
            if time.monotonic() < deadline:  # woken early: run again after the gap
                self.stop_event.wait(max(0.0, started + self.min_gap - time.monotonic()))
                break

    def run_once(self) -> RetentionReport | None:
        try:
            report = run_retention(
                self.sessions,
                self.spool,
                self.policy,
                self.clock(),
                disk=self.disk,
                store=self.store,
            )
        except Exception:
            LOGGER.exception("retention run failed; trying again at the next interval")
            return None
        if self.on_report is not None:
            try:
                self.on_report(report)
            except Exception:
                LOGGER.exception("retention report hook failed")
        return report
