"""Callers (AE titles allowed to send to us) and destinations (where results go): add and
remove, each audited in the same transaction as the change."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from storage import peers
from storage.errors import ConflictError, NotFoundError
from xrayd.admin import validation
from xrayd.admin.actor import Actor

if TYPE_CHECKING:
    from storage.db import Sessions

__all__ = ["add_caller", "add_destination", "remove_caller", "remove_destination"]


def add_caller(
    sm: Sessions, actor: Actor, ae_title: str, host: str | None = None
) -> peers.CallerRow:
    """Allow ``ae_title`` from ``host`` (None or blank: from any host). ConflictError if that
    caller is allowed already."""
    title, host_ = validation.ae_title(ae_title), validation.host(host)
    if not peers.add_caller(
        sm, title, host_, actor.source, actor=actor.name, detail=actor.detail()
    ):
        raise ConflictError("that caller is allowed already")
    return peers.CallerRow(ae_title=title, host=host_, source=actor.source)


def remove_caller(sm: Sessions, actor: Actor, ae_title: str, host: str | None = None) -> None:
    """Remove the exact (AE title, host) entry. NotFoundError if there is none."""
    title, host_ = validation.ae_title(ae_title), validation.host(host)
    if not peers.remove_caller(sm, title, host_, actor=actor.name, detail=actor.detail()):
        raise NotFoundError("no such caller")


def add_destination(sm: Sessions, actor: Actor, values: Mapping[str, Any]) -> peers.DestinationRow:
    """Add a destination from ``values`` (name, ae_title, host, port, send, tls), checked by
    :func:`validation.destination`. ConflictError if the name is taken."""
    row = validation.destination(values, source=actor.source)
    if not peers.add_destination(sm, row, actor=actor.name, detail=actor.detail()):
        raise ConflictError(f"a destination named {row.name!r} exists already")
    return peers.get_destination(sm, row.name) or row


def remove_destination(sm: Sessions, actor: Actor, name: str) -> None:
    """Remove the destination named ``name``. NotFoundError if there is none."""
    if not peers.remove_destination(sm, name, actor=actor.name, detail=actor.detail()):
        raise NotFoundError(f"no destination named {name.strip()!r}")
