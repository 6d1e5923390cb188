"""The one loop every worker thread runs: take a turn, and when there was nothing to do, idle.

A :class:`LoopWorker` calls :meth:`~LoopWorker.turn` until its stop event is set. A turn that
found work is followed at once by the next one; an idle turn (or one that raised: logged, the
loop goes on) is followed by :meth:`~LoopWorker.idle`, which by default waits on the worker's
:class:`Wakeup` for :meth:`~LoopWorker.idle_seconds`, so a producer (a new study, a new
delivery, a retraining request, low disk) wakes it at once. :meth:`~LoopWorker.stop` sets the
stop event and the wakeup and joins: the work in hand is finished first.

The analysis workers, the completion timer, the delivery senders, the retraining worker and the
retention thread all are such loops; only what a turn does and how long an idle worker waits
differ.
"""

from __future__ import annotations

import logging
import threading

LOGGER = logging.getLogger(__name__)


class Wakeup:
    """A level-triggered nudge: set by producers, waited on (with a timeout) by loops."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def wait(self, timeout: float) -> None:
        self._event.wait(timeout)
        self._event.clear()


class LoopWorker(threading.Thread):
    """A daemon thread running :meth:`turn` until ``stop`` is set (see the module docstring)."""

    #: what the thread is, for its log lines ("delivery loop error; continuing")
    what = "worker"

    def __init__(
        self, name: str, stop: threading.Event, wakeup: Wakeup, poll_seconds: float
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.stop_event = stop
        self.wakeup = wakeup
        self.poll_seconds = poll_seconds

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                busy = self.turn()
            except Exception:
                LOGGER.exception("%s loop error; continuing", self.what)
                busy = False
            if not busy and not self.stop_event.is_set():
                self.idle()

    def turn(self) -> bool:
        """Do at most one piece of work; return whether there was one."""
        raise NotImplementedError

    def idle_seconds(self) -> float:
        """How long an idle worker waits for its wakeup (default: ``poll_seconds``)."""
        return self.poll_seconds

    def idle(self) -> None:
        self.wakeup.wait(self.idle_seconds())

    def stop(self, timeout: float | None = None) -> None:
        """Ask the loop to end (the work in hand is finished first) and wait for it."""
        self.stop_event.set()
        self.wakeup.set()
        if self.ident is not None:
            self.join(timeout)
