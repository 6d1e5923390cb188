"""What the web app needs from the running node, passed in by the composition root."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.orm import Session, sessionmaker

from config.settings import Settings
from storage.spool import Spool

__all__ = ["WebContext"]


@dataclass
class WebContext:
    """Dependencies of :func:`xrayd.web.app.create_app` (nothing is built at import time).

    ``write_verified_sr`` (override id -> result id or None) is set when the site sends
    radiologist-verified SRs; ``model_loaded`` tells ``/ready`` whether the classifier is in
    memory; ``wake_delivery`` nudges the delivery worker after a retry.
    """

    settings: Settings
    sessions: sessionmaker[Session]
    spool: Spool
    write_verified_sr: Callable[[int], int | None] | None = None
    model_loaded: Callable[[], bool] = field(default=lambda: True)
    wake_delivery: Callable[[], None] = field(default=lambda: None)
