"""Wake workers in other processes when work is queued: PostgreSQL LISTEN/NOTIFY.

In one process a :class:`threading.Event` wakes the workers; across processes and hosts they
would only find new work at their next poll (``[jobs] poll_seconds``, ``[delivery]
poll_seconds``). On PostgreSQL the transaction that queues work also sends ``NOTIFY`` on a
channel; PostgreSQL delivers it when (and only if) that transaction commits, so a worker is
never woken for work it cannot see yet. A :class:`NotificationListener` in each worker process
holds one connection that ``LISTEN``\\ s and calls the wake-up of the channel.

Polling stays as the fallback: a notification lost while a listener reconnects costs at most
one poll interval, and the listener wakes every channel once after each (re)connection.
On SQLite (one host) :func:`notify` does nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

logger = logging.getLogger(__name__)

__all__ = ["ANALYSIS", "DELIVERY", "RETRAIN", "NotificationListener", "channel_for_queue", "notify"]

#: channel names (fixed identifiers: never built from data)
ANALYSIS = "xrayd_analysis"
DELIVERY = "xrayd_delivery"
RETRAIN = "xrayd_retrain"
_CHANNELS = frozenset({ANALYSIS, DELIVERY, RETRAIN})
_QUEUE_CHANNELS = {"analysis": ANALYSIS, "delivery": DELIVERY, "retrain": RETRAIN}


def channel_for_queue(queue: str) -> str:
    """The NOTIFY channel that wakes the workers of ``queue`` (see :mod:`storage.queue`)."""
    try:
        return _QUEUE_CHANNELS[queue]
    except KeyError:
        raise ValueError(f"unknown queue {queue!r}") from None


def notify(session: Session, channel: str) -> None:
    """Queue a notification on ``channel``, sent when ``session``'s transaction commits."""
    if channel not in _CHANNELS:
        raise ValueError(f"unknown channel {channel!r}")
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        session.execute(text(f"NOTIFY {channel}"))


class NotificationListener(threading.Thread):
    """LISTENs on the channels of ``wakeups`` and calls each one's wake-up when notified."""

    def __init__(
        self,
        engine: Engine,
        wakeups: Mapping[str, Callable[[], None]],
        stop: threading.Event,
        *,
        reconnect_seconds: float = 5.0,
        on_listening: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(name="xrayd-notifications", daemon=True)
        unknown = set(wakeups) - _CHANNELS
        if unknown:
            raise ValueError(f"unknown channel(s) {sorted(unknown)}")
        self.engine = engine
        self.wakeups = dict(wakeups)
        self.stop_event = stop
        self.reconnect_seconds = reconnect_seconds
        #: called once LISTEN is in effect and the catch-up wakes are done (each connection)
        self.on_listening = on_listening

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                self._listen()
            except Exception as exc:  # the database restarted, the network dropped
                logger.warning(
                    "notifications interrupted (%s); polling until reconnected",
                    type(exc).__name__,
                )
            self.stop_event.wait(self.reconnect_seconds)

    def _listen(self) -> None:
        raw = self.engine.raw_connection()
        try:
            conn = raw.dbapi_connection
            assert conn is not None
            conn.autocommit = True
            cursor = conn.cursor()
            for channel in self.wakeups:
                cursor.execute(f"LISTEN {channel}")
            for wake in self.wakeups.values():  # what was queued while nobody listened
                wake()
            if self.on_listening is not None:
                self.on_listening()
            while not self.stop_event.is_set():
                for note in conn.notifies(timeout=1.0):
                    woken = self.wakeups.get(note.channel)
                    if woken is not None:
                        woken()
        finally:
            raw.invalidate()  # a LISTENing connection must not go back to the pool
