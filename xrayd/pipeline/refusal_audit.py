"""Refused connections and rejected associations, audited in aggregate.

A hostile or misconfigured peer can open thousands of connections a minute. Each refused TCP
connection is counted (``/metrics``) but never written one row at a time: an attacker must not
be able to fill the audit log or keep the database busy. This keeps counts in memory and writes
one ``connections.refused`` audit row per period with the totals by reason and the busiest
source addresses.

Rejected associations (a complete A-ASSOCIATE-RQ from an unknown AE title, say) keep their own
``association.rejected`` row, but only the first per (address, calling AE title, reason) in a
period; the rest are counted into the period's aggregate row.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

from storage import audit

if TYPE_CHECKING:
    from storage.db import Sessions

LOGGER = logging.getLogger(__name__)

#: seconds between aggregate rows (and the window of one association.rejected row per key)
PERIOD_SECONDS = 300.0
#: addresses named in one aggregate row (the rest are summed as "other")
TOP_HOSTS = 20
#: distinct keys remembered per period; beyond it a new key is counted, not audited
MAX_KEYS = 10_000

ACTION = audit.Action.CONNECTIONS_REFUSED


class RefusalAudit:
    """In-memory counts of refusals, flushed to the audit log by :meth:`flush`."""

    def __init__(
        self,
        sessions: Sessions,
        *,
        period_seconds: float = PERIOD_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sessions = sessions
        self.period_seconds = period_seconds
        self.clock = clock
        self._lock = threading.Lock()
        self._by_reason: Counter[str] = Counter()
        self._by_host: Counter[str] = Counter()
        self._suppressed_rejections = 0
        self._audited: dict[tuple[str, str, str], float] = {}

    def connection_refused(self, host: str, reason: str) -> None:
        """A TCP connection was closed at accept (called on the accepting thread: no I/O)."""
        with self._lock:
            self._by_reason[reason] += 1
            if host in self._by_host or len(self._by_host) < MAX_KEYS:
                self._by_host[host] += 1
            else:
                self._by_host["other"] += 1

    def audit_rejection(self, host: str, calling_ae_title: str, reason: str) -> bool:
        """Whether this association rejection gets a row of its own (else it is counted)."""
        key = (host, calling_ae_title, reason)
        now = self.clock()
        with self._lock:
            last = self._audited.get(key)
            if last is not None and now - last < self.period_seconds:
                self._suppressed_rejections += 1
                self._by_reason[f"association_{reason}"] += 1
                self._by_host[host if len(self._by_host) < MAX_KEYS else "other"] += 1
                return False
            if len(self._audited) >= MAX_KEYS:
                self._audited = {
                    k: t for k, t in self._audited.items() if now - t < self.period_seconds
                }
                if len(self._audited) >= MAX_KEYS:
                    self._suppressed_rejections += 1
                    self._by_reason[f"association_{reason}"] += 1
                    return False
            self._audited[key] = now
            return True

    def pending(self) -> int:
        """Refusals counted since the last flush."""
        with self._lock:
            return sum(self._by_reason.values())

    def flush(self) -> bool:
        """Write one aggregate row if anything was counted; True when a row was written."""
        with self._lock:
            by_reason = dict(self._by_reason)
            by_host = self._by_host
            suppressed = self._suppressed_rejections
            self._by_reason = Counter()
            self._by_host = Counter()
            self._suppressed_rejections = 0
        total = sum(by_reason.values())
        if total == 0:
            return False
        top = dict(by_host.most_common(TOP_HOSTS))
        other = sum(by_host.values()) - sum(top.values())
        if other:
            top["other"] = top.get("other", 0) + other
        detail = {
            "count": total,
            "by_reason": by_reason,
            "by_host": top,
            "association_rejections_not_itemised": suppressed,
            "period_seconds": self.period_seconds,
        }
        try:
            audit.record(
                self.sessions,
                actor="dicom:listener",
                action=ACTION,
                object_type="connection",
                detail=detail,
            )
        except Exception:
            LOGGER.exception("could not audit %d refused connection(s)", total)
            return False
        LOGGER.warning(
            "%d connection(s) or association(s) refused in the last period: %s",
            total,
            ", ".join(f"{k} {v}" for k, v in sorted(by_reason.items())),
        )
        return True


class RefusalAuditFlusher(threading.Thread):
    """Flushes a :class:`RefusalAudit` every period, and once more when stopping."""

    def __init__(self, audit: RefusalAudit, stop_event: threading.Event) -> None:
        super().__init__(name="refusal-audit", daemon=True)
        self.audit = audit
        self.stop_event = stop_event

    def run(self) -> None:
        while not self.stop_event.wait(self.audit.period_seconds):
            self.audit.flush()
        self.audit.flush()
