"""The model registry seen from the daemon and the CLI: which bundle is served.

At first start the ``[model]`` bundle (or the default bundle) becomes the registry's active
version. From then on the registry decides: ``xrayd models promote|rollback`` (or an
automatic promotion after retraining) changes what the analysis workers load, without a
restart. ``[model] bundle`` matters again only on a database with no active version.

The registry records each version's weights sha256: :func:`active_bundle_reader` hands it to
the loader with the path (a bundle whose weights changed is refused), and
:func:`verify_version` checks it before a promotion or rollback makes a version active.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from config.settings import Settings
from models.bundle import ExpectedBundle, bundle_identity, check_bundle, default_bundle_path
from models.errors import BundleError
from storage.db import Sessions
from storage.model_versions import (
    ModelVersionRow,
    RegistryError,
    active_version,
    ensure_active,
    relocate,
)
from xrayd.runtime.model_holder import RegisteredBundle

__all__ = [
    "active_bundle_reader",
    "expected_bundle",
    "register_configured_model",
    "verify_active_model",
    "verify_version",
]

LOGGER = logging.getLogger(__name__)


def register_configured_model(settings: Settings, sessions: Sessions) -> ModelVersionRow:
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


def expected_bundle(row: ModelVersionRow) -> ExpectedBundle:
    """What the registry recorded about ``row``'s bundle."""
    return ExpectedBundle(name=row.name, version=row.version, sha256=row.sha256)


def verify_version(row: ModelVersionRow) -> None:
    """Refuse (:class:`RegistryError`) a version whose bundle is not the one registered: its
    weights' sha256, name or version differ from the registry's record, or it cannot be read.
    Pass as ``check`` to :func:`storage.model_versions.promote` and ``rollback``."""
    try:
        check_bundle(Path(row.path), expected_bundle(row))
    except BundleError as exc:
        raise RegistryError(f"model {row.name} {row.version} cannot be served: {exc}") from None


def verify_active_model(sessions: Sessions) -> None:
    """At start: refuse (:class:`RegistryError`) to serve an active version whose bundle is
    not the one registered, with what to do about it."""
    row = active_version(sessions)
    if row is None:
        return
    try:
        verify_version(row)
    except RegistryError as exc:
        raise RegistryError(
            f"{exc}. Restore the bundle's files, or serve another registered version "
            "(xrayd models rollback, or xrayd models promote VERSION)"
        ) from None


def active_bundle_reader(sessions: Sessions) -> Callable[[], RegisteredBundle | None]:
    """For :class:`xrayd.runtime.model_holder.ModelHolder`: the active version's bundle directory
    and its registered identity (checked when it is loaded)."""

    def read() -> RegisteredBundle | None:
        row = active_version(sessions)
        return None if row is None else RegisteredBundle(Path(row.path), expected_bundle(row))

    return read
