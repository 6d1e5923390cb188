"""Web users and API tokens: add, disable/enable, set a password, unlock, create and revoke
tokens. Each change is audited in its own transaction by :mod:`storage.users` /
:mod:`storage.logins`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from storage import logins, users
from storage.errors import ConflictError, NotFoundError
from xrayd.admin import validation
from xrayd.admin.actor import Actor

if TYPE_CHECKING:
    from storage.db import Sessions

__all__ = [
    "add_user",
    "create_token",
    "revoke_token",
    "set_disabled",
    "set_password",
    "unlock",
]


def add_user(sm: Sessions, actor: Actor, name: str, role: str, password: str) -> users.UserRow:
    """A new enabled user (name and role checked, password by the policy). ConflictError
    (:class:`storage.users.UserExistsError`) if the name is taken."""
    return users.add_user(sm, name.strip(), role, password, actor=actor.name)


def set_disabled(sm: Sessions, actor: Actor, name: str, disabled: bool) -> None:
    """Disable (ending their sessions) or enable ``name``. Refused with ConflictError when an
    admin would disable their own account through the web, or the last enabled admin."""
    existing = {u.name: u for u in users.list_users(sm)}
    target = existing.get(name)
    if target is None:
        raise NotFoundError(f"no user {name!r}")
    if disabled and actor.door != "cli" and name == actor.user:
        raise ConflictError("you cannot disable your own account")
    others = [u for u in existing.values() if u.is_admin and not u.disabled and u.name != name]
    if disabled and target.is_admin and not target.disabled and not others:
        raise ConflictError("this is the last enabled admin; enable another one first")
    users.set_disabled(sm, name, disabled, actor=actor.name)


def set_password(sm: Sessions, actor: Actor, name: str, password: str) -> tuple[int, int]:
    """Set ``name``'s password; their API tokens are revoked and sessions ended:
    ``(tokens revoked, sessions ended)``."""
    return users.set_password(sm, name, password, actor=actor.name)


def unlock(sm: Sessions, actor: Actor, name: str) -> int:
    """Forget ``name``'s counted failed logins (ends a lock-out); how many were forgotten."""
    return logins.clear_failures(sm, name, actor=actor.name)


def create_token(
    sm: Sessions,
    actor: Actor,
    user_name: str,
    label: str,
    days: float | None = None,
) -> str:
    """A new API token for ``user_name``, valid for ``days`` (None: until revoked); shown once,
    only its hash is kept."""
    lifetime = validation.token_lifetime(days)
    return users.create_api_token(sm, user_name, label, actor=actor.name, lifetime=lifetime)


def revoke_token(sm: Sessions, actor: Actor, token_id: int) -> None:
    """Revoke an active API token. NotFoundError if there is no active token ``token_id``."""
    if not users.revoke_token(sm, token_id, actor=actor.name):
        raise NotFoundError(f"no active API token {token_id}")
