"""Who performs an administrator action, and through which door.

The audit trail records :attr:`Actor.name` (``web:<user>``, ``api:<user>``,
``cli:<operating-system user>``); rows that remember where they came from (callers,
destinations) store :attr:`Actor.source`. On the command line the actor is always the
operating-system user who ran the command: a free-text ``--actor`` is kept only as a note in
the audit detail, so it cannot stand in for someone else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["Actor", "Door"]

Door = Literal["web", "api", "cli"]


@dataclass(frozen=True)
class Actor:
    """An administrator acting through ``door`` (the web pages, the REST API or the CLI)."""

    door: Door
    user: str
    note: str | None = None

    @classmethod
    def web(cls, user: str) -> Actor:
        return cls("web", user)

    @classmethod
    def api(cls, user: str) -> Actor:
        return cls("api", user)

    @classmethod
    def cli(cls, note: str | None = None) -> Actor:
        """The operating-system user; ``note`` (e.g. ``--actor``) goes into the audit detail."""
        from xrayd.cli.actor import os_user  # the CLI's own rule; not loaded by the web

        return cls("cli", os_user(), note.strip() or None if note else None)

    @property
    def name(self) -> str:
        """The audit trail's actor: ``<door>:<user>``."""
        return f"{self.door}:{self.user}"

    @property
    def source(self) -> str:
        """The ``source`` label of callers and destinations this actor adds."""
        return self.door

    def detail(self, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Audit detail: ``extra`` plus the CLI's note, if any."""
        out = dict(extra or {})
        if self.note is not None:
            out["note"] = self.note[:200]
        return out
