"""What one xrayd process runs: ``xrayd serve`` everything, ``xrayd listener`` the DICOM
listener and the web UI, ``xrayd worker --queues ...`` the workers of the queues it names.

Every process of a site shares one database (PostgreSQL when they are on several hosts) and one
spool; work passes between them through the database, so any of them can stop at any time and
another, or the same after a restart, picks the work up.
"""

from __future__ import annotations

__all__ = [
    "ALL_ROLES",
    "DEFAULT_WORKER_QUEUES",
    "LISTENER_ROLES",
    "QUEUES",
    "ROLES",
    "parse_queues",
]

ROLES = ("listener", "web", "analysis", "delivery", "retention", "retrain")
#: The queues a worker process can take (``xrayd worker --queues``): analysis jobs, deliveries
#: of result objects, spool retention, scheduled retraining runs.
QUEUES = ("analysis", "delivery", "retention", "retrain")
DEFAULT_WORKER_QUEUES = ("analysis", "delivery")
ALL_ROLES = frozenset(ROLES)
LISTENER_ROLES = frozenset({"listener", "web"})


def parse_queues(text: str) -> frozenset[str]:
    """``"analysis,delivery"`` (or ``"analysis-delivery"``: a systemd instance name, which has
    no commas) -> the queue names; ValueError naming unknown ones."""
    names = [part.strip() for part in text.replace("-", ",").split(",") if part.strip()]
    unknown = [name for name in names if name not in QUEUES]
    if unknown or not names:
        raise ValueError(f"unknown queue(s) {unknown or [text]}; known: {', '.join(QUEUES)}")
    return frozenset(names)
