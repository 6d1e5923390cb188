"""Login lock-out that an attacker cannot turn against the site's users.

A password check is counted in ``login_failures`` *before* it runs (so a burst of parallel
guesses cannot all slip under the limit while their hashes are computed) and the row is
deleted again when the password was right. Within the window, an attempt is refused without
checking the password when

* this **(user name, client address)** pair has ``max_failures`` failures: a guesser locks
  out only itself; the same user logging in from any other address is not affected;
* this **client address** has ``CLIENT_FACTOR x max_failures`` failures over all names
  (password spraying; colleagues behind one proxy or workstation share that budget);
* this **user name** has ``USER_FACTOR x max_failures`` failures over all addresses (a
  distributed guess from many addresses) *and* this address has already failed for it: each
  further address gets one guess, while an address that has not failed is never refused.

So no sequence of wrong passwords sent from other addresses can stop an admin from logging in
with the right password from an address that has not failed (the last admin cannot be locked
out from outside); at worst the admin's own typos lock their own address until the window
passes, ``xrayd users unlock NAME`` is run, or they use another address. "Address" is what
:mod:`xrayd.web.peers` names: behind a reverse proxy missing from ``web.trusted_proxies``
everyone shares the proxy's address, and a guesser there does lock the others out.

Refused attempts write nothing: no failure row (the lock does not extend itself), no audit
event. Only a failure that *starts* a lock writes one ``user.login_locked`` audit event (with the
scope), so a flood of refused requests cannot fill the audit log; the caller counts refusals
in its metrics. Rows older than the window are deleted as attempts come in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import ColumnElement, and_, delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from storage import audit
from storage.schema import LoginFailure, utcnow

__all__ = [
    "CLIENT_FACTOR",
    "LOGIN_LOCKED",
    "USER_FACTOR",
    "Attempt",
    "LockState",
    "LoginLimits",
    "attempt_failed",
    "attempt_succeeded",
    "begin_attempt",
    "clear_failures",
    "lock_states",
]

LOGIN_LOCKED = audit.Action.LOGIN_LOCKED
#: failures allowed per client address (all names), in units of ``max_failures``
CLIENT_FACTOR = 4
#: failures per user name (all addresses) after which only addresses that have not failed for
#: that name may still try, in units of ``max_failures``
USER_FACTOR = 4

Scope = Literal["user_client", "client", "user"]


@dataclass(frozen=True)
class LoginLimits:
    max_failures: int
    window: timedelta


@dataclass(frozen=True)
class Attempt:
    """A login attempt let through to the password check (``row_id``), or refused (``None``
    with the ``refused`` scope)."""

    user_name: str
    client: str
    row_id: int | None
    refused: Scope | None = None


def _key(user_name: str, client: str) -> tuple[str, str]:
    return user_name[:64], client[:64]


def _count(session: Session, since: datetime, condition: ColumnElement[bool]) -> int:
    query = select(func.count(LoginFailure.id)).where(LoginFailure.at >= since, condition)
    return int(session.scalar(query) or 0)


def _counts(session: Session, user: str, client: str, since: datetime) -> dict[Scope, int]:
    return {
        "user_client": _count(
            session, since, and_(LoginFailure.user_name == user, LoginFailure.client == client)
        ),
        "client": _count(session, since, LoginFailure.client == client),
        "user": _count(session, since, LoginFailure.user_name == user),
    }


def _refusal(counts: dict[Scope, int], limits: LoginLimits) -> Scope | None:
    m = limits.max_failures
    if counts["user_client"] >= m:
        return "user_client"
    if counts["client"] >= CLIENT_FACTOR * m:
        return "client"
    if counts["user"] >= USER_FACTOR * m and counts["user_client"] > 0:
        return "user"
    return None


def begin_attempt(
    sm: sessionmaker[Session], user_name: str, client: str, limits: LoginLimits
) -> Attempt:
    """Refuse the attempt, or count it as a failure until :func:`attempt_succeeded`."""
    user, addr = _key(user_name, client)
    now = utcnow()
    since = now - limits.window
    with sm.begin() as session:
        session.execute(delete(LoginFailure).where(LoginFailure.at < since))
        refused = _refusal(_counts(session, user, addr, since), limits)
        if refused is not None:
            return Attempt(user, addr, None, refused)
        row = LoginFailure(at=now, user_name=user, client=addr)
        session.add(row)
        session.flush()
        return Attempt(user, addr, row.id)


def attempt_succeeded(sm: sessionmaker[Session], attempt: Attempt) -> None:
    """The password was right: forget this attempt and the pair's earlier failures."""
    with sm.begin() as session:
        session.execute(
            delete(LoginFailure).where(
                LoginFailure.user_name == attempt.user_name, LoginFailure.client == attempt.client
            )
        )


def attempt_failed(sm: sessionmaker[Session], attempt: Attempt, limits: LoginLimits) -> list[Scope]:
    """The password was wrong (the row stays): audit the failure (``user.login_failed``) and
    each lock it starts (``user.login_locked``), in one transaction."""
    since = utcnow() - limits.window
    m = limits.max_failures
    thresholds: dict[Scope, int] = {
        "user_client": m,
        "client": CLIENT_FACTOR * m,
        "user": USER_FACTOR * m,
    }
    with sm.begin() as session:
        audit.append(
            session,
            actor=attempt.user_name or "-",
            action=audit.Action.LOGIN_FAILED,
            object_type="user",
            object_id=attempt.user_name or "-",
            detail={"client": attempt.client},
        )
        counts = _counts(session, attempt.user_name, attempt.client, since)
        started: list[Scope] = [s for s, limit in thresholds.items() if counts[s] == limit]
        for scope in started:
            audit.append(
                session,
                actor=attempt.user_name or "-",
                action=LOGIN_LOCKED,
                object_type="user",
                object_id=attempt.user_name or "-",
                detail={
                    "client": attempt.client if scope != "user" else None,
                    "scope": scope,
                    "failures": counts[scope],
                    "window_seconds": int(limits.window.total_seconds()),
                },
            )
    return started


@dataclass(frozen=True)
class LockState:
    """A user name's counted failed logins within the window, and whether they lock it out:
    ``locked_until`` is when the last of its locks ends (None: not locked from anywhere),
    ``locked_addresses`` how many client addresses are refused for it now."""

    failures: int
    locked_until: datetime | None
    locked_addresses: int


def _lock_end(times: list[datetime], limit: int, window: timedelta) -> datetime | None:
    """When ``times`` (ascending, inside the window) stop reaching ``limit``; None if they
    do not reach it now: the count drops below the limit once the oldest that keep it there
    have left the window."""
    if len(times) < limit:
        return None
    return times[len(times) - limit] + window


def lock_states(
    sm: sessionmaker[Session], limits: LoginLimits, now: datetime | None = None
) -> dict[str, LockState]:
    """Every user name with counted failures in the window: how many, and the lock they make
    (a name + address pair at ``max_failures``; the name over all addresses at
    ``USER_FACTOR x max_failures``, which refuses the addresses that failed for it). Read
    only; addresses locked by password spraying over many names are not any one user's."""
    now = now or utcnow()
    since = now - limits.window
    with sm() as session:
        rows = session.execute(
            select(LoginFailure.user_name, LoginFailure.client, LoginFailure.at)
            .where(LoginFailure.at >= since)
            .order_by(LoginFailure.user_name, LoginFailure.at, LoginFailure.id)
        ).all()
    by_user: dict[str, dict[str, list[datetime]]] = {}
    for user, client, at in rows:
        if at.tzinfo is None:  # SQLite returns naive UTC
            at = at.replace(tzinfo=now.tzinfo)
        by_user.setdefault(user, {}).setdefault(client, []).append(at)
    states: dict[str, LockState] = {}
    m = limits.max_failures
    for user, clients in by_user.items():
        everywhere = sorted(at for times in clients.values() for at in times)
        user_lock = _lock_end(everywhere, USER_FACTOR * m, limits.window)
        ends: list[datetime] = []
        locked = 0
        for times in clients.values():
            end = _lock_end(times, m, limits.window)
            if user_lock is not None:  # every address that failed for the name is refused
                end = max(end or user_lock, user_lock)
            if end is not None:
                ends.append(end)
                locked += 1
        states[user] = LockState(len(everywhere), max(ends, default=None), locked)
    return states


def clear_failures(sm: sessionmaker[Session], user_name: str, *, actor: str | None = None) -> int:
    """Forget every counted failure for ``user_name`` (``xrayd users unlock``); how many.

    Given an ``actor``, the audit row (``user.login_unlocked``) commits in the same transaction.
    """
    with sm.begin() as session:
        result = session.execute(
            delete(LoginFailure).where(LoginFailure.user_name == user_name[:64])
        )
        cleared = int(getattr(result, "rowcount", 0) or 0)
        if actor is not None:
            audit.append(
                session,
                actor=actor,
                action=audit.Action.LOGIN_UNLOCKED,
                object_type="user",
                object_id=user_name[:64],
                detail={"failures_cleared": cleared},
            )
        return cleared
