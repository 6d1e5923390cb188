"""Model versions: promote one, or roll back to the one served before. The bundle's files are
verified against the recorded sha256 first; the change and its audit row are one transaction
(:mod:`storage.model_versions`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from storage import model_versions
from xrayd.admin.actor import Actor

if TYPE_CHECKING:
    from storage.db import Sessions

__all__ = ["promote", "rollback"]


def promote(sm: Sessions, actor: Actor, version: str) -> model_versions.ModelVersionRow:
    """Serve ``version`` from now on. VersionNotFoundError (a NotFoundError) for an unknown
    version; RegistryError (a ConflictError) when it may not be served."""
    from xrayd.runtime.served_model import verify_version  # imports models (torch): only here

    return model_versions.promote(sm, version, actor=actor.name, check=verify_version)


def rollback(sm: Sessions, actor: Actor) -> model_versions.ModelVersionRow:
    """Serve the version that was active before the current one again."""
    from xrayd.runtime.served_model import verify_version

    return model_versions.rollback(sm, actor=actor.name, check=verify_version)
