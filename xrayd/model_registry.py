"""The model registry seen from the daemon and the CLI: which bundle is served.

At first start the ``[model]`` bundle (or the default bundle) becomes the registry's active
version. From then on the registry decides: ``xrayd models promote|rollback`` (or an
automatic promotion after retraining) changes what the analysis workers load, without a
restart. ``[model] bundle`` matters again only on a database with no active version.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from config.settings import Settings
from models.bundle import bundle_identity, default_bundle_path
from storage.models_registry import ModelVersionRow, active_version, ensure_active, relocate

__all__ = ["active_bundle_reader", "register_configured_model"]

LOGGER = logging.getLogger(__name__)


def register_configured_model(
    settings: Settings, sessions: sessionmaker[Session]
) -> ModelVersionRow:
    """Make sure a version is active; registers the configured bundle when none is."""
    path = (settings.model.bundle or default_bundle_path()).resolve()
    info = bundle_identity(path)
    row = ensure_active(
        sessions,
        name=info.name,
        version=info.version,
        sha256=info.sha256,
        path=str(path),
        actor="xrayd",
    )
    if Path(row.path) != path and not Path(row.path).exists() and row.sha256 == info.sha256:
        # The same weights moved (a reinstall put the default bundle elsewhere): follow them.
        relocate(sessions, row.version, info.sha256, str(path))
        LOGGER.info("model %s %s moved to %s", row.name, row.version, path)
    elif Path(row.path) != path:
        LOGGER.info(
            "serving the registry's active model %s %s (not the [model] bundle %s %s)",
            row.name,
            row.version,
            info.name,
            info.version,
        )
    return row


def active_bundle_reader(sessions: sessionmaker[Session]) -> Callable[[], Path | None]:
    """For :class:`xrayd.model_holder.ModelHolder`: the active version's bundle directory."""

    def read() -> Path | None:
        row = active_version(sessions)
        return None if row is None else Path(row.path)

    return read
