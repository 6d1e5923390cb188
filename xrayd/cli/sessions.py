"""The one way a CLI command opens the database: :func:`open_sessions`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from config.settings import Settings

if TYPE_CHECKING:
    from storage.db import Sessions

__all__ = ["open_sessions"]


def open_sessions(
    settings: Settings, *, create: bool = True, peers: bool = False, model: bool = False
) -> Sessions:
    """Open the settings' database at the current schema (creating an empty one unless
    ``create`` is False); with ``peers`` the settings file's callers and destinations are
    synced into it first, with ``model`` the configured model bundle is registered."""
    from storage.opened import open_storage
    from xrayd.runtime.seed import seed_registry

    sessions = open_storage(settings, create_if_empty=create, require_current=True).sessions
    if peers:
        seed_registry(settings, sessions)
    if model:
        from xrayd.runtime.served_model import register_configured_model  # imports torch

        register_configured_model(settings, sessions)
    return sessions
