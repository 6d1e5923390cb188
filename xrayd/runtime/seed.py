"""The settings file's callers and destinations, made the database's config-sourced rows.

Kept apart from the composition root (:mod:`xrayd.runtime.node`) so that the CLI commands that
sync them (``xrayd callers``, ``destinations``, ``status`` ...) load neither the model nor the
web app.
"""

from __future__ import annotations

from config.settings import Settings
from storage import peers
from storage.db import Sessions
from xrayd.pipeline.delivery import stored_tls

__all__ = ["seed_registry"]


def seed_registry(settings: Settings, sessions: Sessions) -> None:
    """Make the TOML's callers and destinations the config-sourced rows of the database."""
    peers.seed_callers(sessions, [(c.ae_title, c.host) for c in settings.node.callers])
    peers.seed_destinations(
        sessions,
        [
            peers.DestinationRow(
                name=d.name,
                ae_title=d.ae_title,
                host=d.host,
                port=d.port,
                send=tuple(d.send),
                source="config",
                tls=stored_tls(d.tls),
            )
            for d in settings.destinations
        ],
    )
