"""Web users, their passwords, browser sessions and API tokens.

Passwords are hashed with scrypt (RFC 7914, memory-hard; in the standard library) as
``scrypt$<log2 n>$<r>$<p>$<salt b64>$<hash b64>``, at the OWASP Password Storage Cheat
Sheet's parameters (N=2^17, r=8, p=1: 128 MiB and about 0.4 s per hash). A hash made with
other parameters still verifies and is replaced at the user's next successful login. At most
:data:`HASH_SLOTS` hashes run at once, so a flood of login requests cannot take more than
``HASH_SLOTS x 128 MiB`` of memory.

Session cookies and API tokens are 256-bit random strings; only their SHA-256 is stored, so a
database dump does not log anyone in. A session ends ``session_hours`` after the login or after
``session_idle_minutes`` without a request, whichever is first (its last use is written at most
once a minute). An API token may carry an expiry. Setting a password revokes the user's API
tokens and ends their sessions. Failed logins are audit events (``user.login_failed``); the
lock-out is :mod:`storage.logins`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TypeVar

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from storage import audit
from storage.errors import ConflictError, NotFoundError
from storage.peers import InvalidEntryError
from storage.schema import ApiToken, Role, User, WebSession, utcnow

_Credential = TypeVar("_Credential", WebSession, ApiToken)

__all__ = [
    "HASH_SLOTS",
    "LOGIN_FAILED",
    "SCRYPT_LOG2_N",
    "SCRYPT_P",
    "SCRYPT_R",
    "ApiTokenRow",
    "SessionUser",
    "UserExistsError",
    "UserRow",
    "add_user",
    "authenticate",
    "create_api_token",
    "create_session",
    "end_session",
    "hash_password",
    "list_tokens",
    "list_users",
    "needs_rehash",
    "revoke_token",
    "set_disabled",
    "set_password",
    "user_count",
    "user_for_session",
    "user_for_token",
    "verify_password",
]

LOGIN_FAILED = audit.Action.LOGIN_FAILED
MIN_PASSWORD = 12
MAX_PASSWORD = 1024
#: scrypt cost of new hashes: OWASP's minimum (N=2^17, r=8, p=1), 128 x r x N = 128 MiB and
#: ~0.4 s per hash. Module constants so that tests creating many users may lower them (the
#: web tests' conftest does, with a fixture named for it); production never does.
SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P = 17, 8, 1
#: memory ceiling of one hash (OpenSSL refuses parameters above it: 128 x r x (N + 2) bytes
#: plus a little must fit; 2^17 x 8 needs 128 MiB)
SCRYPT_MAXMEM = 256 << 20
#: password hashes computed at once (the others wait)
HASH_SLOTS = 4
_HASHING = threading.BoundedSemaphore(HASH_SLOTS)
#: last use of a session or token is written only when older than this
TOUCH_INTERVAL = timedelta(minutes=1)
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


class UserExistsError(ConflictError, ValueError):
    """A user of that name exists already."""


@dataclass(frozen=True)
class UserRow:
    id: int
    name: str
    role: str
    disabled: bool
    created_at: datetime

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN.value


@dataclass(frozen=True)
class SessionUser:
    """The user behind a browser session, with that session's CSRF token."""

    user: UserRow
    csrf_token: str
    expires_at: datetime


@dataclass(frozen=True)
class ApiTokenRow:
    id: int
    user_name: str
    name: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    expires_at: datetime | None = None

    def expired(self, now: datetime | None = None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or utcnow())


# -- passwords ---------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _scrypt(password: str, salt: bytes, log2_n: int, r: int, p: int) -> bytes:
    if not 1 <= log2_n <= 24:  # a stored hash is data: no 2^64 loop from a tampered row
        raise ValueError("scrypt log2 N out of range")
    with _HASHING:
        return hashlib.scrypt(
            password.encode("utf-8"),
            salt=salt,
            n=1 << log2_n,
            r=r,
            p=p,
            maxmem=SCRYPT_MAXMEM,
            dklen=32,
        )


def check_password_policy(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise InvalidEntryError(f"password must have at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise InvalidEntryError(f"password must have at most {MAX_PASSWORD} characters")


def hash_password(password: str) -> str:
    check_password_policy(password)
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P)
    return f"scrypt${SCRYPT_LOG2_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def needs_rehash(stored: str) -> bool:
    """True if ``stored`` was not made with the current scrypt parameters."""
    return not stored.startswith(f"scrypt${SCRYPT_LOG2_N}${SCRYPT_R}${SCRYPT_P}$")


def verify_password(password: str, stored: str) -> bool:
    """Constant-time check of ``password`` against a stored hash (False for malformed ones)."""
    try:
        scheme, log2_n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt" or len(password) > MAX_PASSWORD:
            return False
        expected = base64.b64decode(digest)
        actual = _scrypt(password, base64.b64decode(salt), int(log2_n), int(r), int(p))
    except (ValueError, TypeError, MemoryError):
        return False
    return hmac.compare_digest(actual, expected)


def _dummy_hash() -> str:
    """A hash to check against when the user does not exist, so both cases cost the same."""
    return f"scrypt${SCRYPT_LOG2_N}${SCRYPT_R}${SCRYPT_P}${_b64(bytes(16))}${_b64(bytes(32))}"


# -- users -------------------------------------------------------------------------------------


def _check_name(name: str) -> str:
    if not 1 <= len(name) <= 64 or not set(name) <= _NAME_CHARS:
        raise InvalidEntryError("user name must be 1 to 64 of A-Z a-z 0-9 . _ -")
    return name


def _check_role(role: str) -> str:
    if role not in {r.value for r in Role}:
        raise InvalidEntryError(f"role must be one of {', '.join(r.value for r in Role)}")
    return role


def _user_row(u: User) -> UserRow:
    return UserRow(u.id, u.name, u.role, u.disabled, u.created_at)


def add_user(
    sm: sessionmaker[Session], name: str, role: str, password: str, *, actor: str = "cli"
) -> UserRow:
    name, role = _check_name(name), _check_role(role)
    hashed = hash_password(password)
    with sm.begin() as session:
        if session.scalar(select(User.id).where(User.name == name)) is not None:
            raise UserExistsError(f"user {name!r} exists already")
        user = User(name=name, role=role, password_hash=hashed, disabled=False)
        session.add(user)
        try:
            session.flush()  # only the user's insert: a failing audit row is not "exists"
        except IntegrityError as exc:  # added concurrently
            raise UserExistsError(f"user {name!r} exists already") from exc
        audit.append(
            session,
            actor=actor,
            action=audit.Action.USER_ADDED,
            object_type="user",
            object_id=name,
            detail={"role": role},
        )
        return _user_row(user)


def set_password(
    sm: sessionmaker[Session],
    name: str,
    password: str,
    *,
    actor: str,
    keep_session: str | None = None,
) -> tuple[int, int]:
    """Set ``name``'s password; revoke all their API tokens and end their sessions (but
    ``keep_session``, the cookie of a session changing its own password). Whoever knew the
    old password may have made those. Returns ``(tokens revoked, sessions ended)``."""
    hashed = hash_password(password)
    now = utcnow()
    with sm.begin() as session:
        user = session.scalar(select(User).where(User.name == name))
        if user is None:
            raise NotFoundError(f"no user {name!r}")
        user.password_hash = hashed
        ended = delete(WebSession).where(WebSession.user_id == user.id)
        if keep_session is not None:
            ended = ended.where(WebSession.token_sha256 != _sha(keep_session))
        sessions = _rowcount(session.execute(ended))
        tokens = _rowcount(
            session.execute(
                update(ApiToken)
                .where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
                .values(revoked_at=now)
            )
        )
        detail = {"tokens_revoked": tokens, "sessions_ended": sessions}
        audit.append(
            session,
            actor=actor,
            action=audit.Action.PASSWORD_CHANGED,
            object_type="user",
            object_id=name,
            detail=detail,
        )
        return tokens, sessions


def _rowcount(result: object) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


def set_disabled(sm: sessionmaker[Session], name: str, disabled: bool, *, actor: str) -> None:
    with sm.begin() as session:
        user = session.scalar(select(User).where(User.name == name))
        if user is None:
            raise NotFoundError(f"no user {name!r}")
        user.disabled = disabled
        if disabled:
            session.execute(delete(WebSession).where(WebSession.user_id == user.id))
        action = audit.Action.USER_DISABLED if disabled else audit.Action.USER_ENABLED
        audit.append(session, actor=actor, action=action, object_type="user", object_id=name)


def list_users(
    sm: sessionmaker[Session], *, limit: int | None = None, offset: int = 0
) -> list[UserRow]:
    """Users by name; ``limit``/``offset`` select a page (in SQL)."""
    stmt = select(User).order_by(User.name).limit(limit).offset(offset)
    with sm() as session:
        return [_user_row(u) for u in session.scalars(stmt)]


def user_count(sm: sessionmaker[Session]) -> int:
    with sm() as session:
        return int(session.scalar(select(func.count(User.id))) or 0)


def authenticate(sm: sessionmaker[Session], name: str, password: str) -> UserRow | None:
    """The enabled user with that name and password, else None (same cost either way).

    A right password stored with older scrypt parameters is hashed again with the current
    ones (one more hash, once)."""
    with sm() as session:
        user = session.scalar(select(User).where(User.name == name[:64]))
        stored = user.password_hash if user is not None else _dummy_hash()
        ok = verify_password(password, stored)
        if user is None or not ok or user.disabled:
            return None
        row = _user_row(user)
    if needs_rehash(stored):
        rehashed = hash_password(password)
        with sm.begin() as session:
            # Only if nobody changed the password meanwhile.
            session.execute(
                update(User)
                .where(User.id == row.id, User.password_hash == stored)
                .values(password_hash=rehashed)
            )
    return row


# -- sessions ----------------------------------------------------------------------------------


def _with_user(
    session: Session, credential: type[_Credential], token: str
) -> tuple[_Credential, User] | None:
    """The browser session or API token row of ``token`` (found by its hash), with its user."""
    row = session.execute(
        select(credential, User)
        .join(User, User.id == credential.user_id)
        .where(credential.token_sha256 == _sha(token))
    ).first()
    return None if row is None else (row[0], row[1])


def _sha(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def create_session(
    sm: sessionmaker[Session], user: UserRow, lifetime: timedelta, *, client: str | None = None
) -> tuple[str, SessionUser]:
    """A new browser session: ``(cookie token, session user)``, audited (``user.logged_in``,
    from ``client``) in the same transaction."""
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    now = utcnow()
    with sm.begin() as session:
        session.execute(delete(WebSession).where(WebSession.expires_at < now))
        session.add(
            WebSession(
                user_id=user.id,
                token_sha256=_sha(token),
                csrf_token=csrf,
                created_at=now,
                expires_at=now + lifetime,
                last_seen_at=now,
            )
        )
        audit.append(
            session,
            actor=user.name,
            action=audit.Action.LOGIN_SUCCEEDED,
            object_type="user",
            object_id=user.name,
            detail={"client": client},
        )
    return token, SessionUser(user, csrf, now + lifetime)


def user_for_session(
    sm: sessionmaker[Session], token: str, *, idle: timedelta | None = None
) -> SessionUser | None:
    """The session's user, if the session is neither past its end nor unused for longer
    than ``idle`` (its last use is recorded at most once per :data:`TOUCH_INTERVAL`)."""
    now = utcnow()
    with sm() as session:
        row = _with_user(session, WebSession, token)
        if row is None:
            return None
        ws, user = row
        found = SessionUser(_user_row(user), ws.csrf_token, ws.expires_at)
        session_id, last_seen = ws.id, ws.last_seen_at
        if ws.expires_at <= now or user.disabled:
            return None
    if idle is not None and now - last_seen > idle:
        with sm.begin() as session:
            session.execute(delete(WebSession).where(WebSession.id == session_id))
        return None
    if now - last_seen > TOUCH_INTERVAL:
        with sm.begin() as session:
            session.execute(
                update(WebSession).where(WebSession.id == session_id).values(last_seen_at=now)
            )
    return found


def end_session(sm: sessionmaker[Session], token: str, *, actor: str | None = None) -> None:
    """End the browser session of ``token``; given an ``actor``, audit the logout
    (``user.logged_out``) in the same transaction."""
    with sm.begin() as session:
        session.execute(delete(WebSession).where(WebSession.token_sha256 == _sha(token)))
        if actor is not None:
            audit.append(
                session,
                actor=actor,
                action=audit.Action.LOGGED_OUT,
                object_type="user",
                object_id=actor,
            )


# -- API tokens --------------------------------------------------------------------------------


def create_api_token(
    sm: sessionmaker[Session],
    user_name: str,
    name: str,
    *,
    actor: str,
    lifetime: timedelta | None = None,
) -> str:
    """A new API token for ``user_name``, valid for ``lifetime`` (None: until revoked); the
    token is shown once and only its hash is kept."""
    if not 1 <= len(name) <= 64 or not name.isprintable():
        raise InvalidEntryError("token name must be 1 to 64 printable characters")
    if lifetime is not None and lifetime <= timedelta(0):
        raise InvalidEntryError("a token's lifetime must be positive")
    token = "xrd_" + secrets.token_urlsafe(32)
    now = utcnow()
    expires = None if lifetime is None else now + lifetime
    with sm.begin() as session:
        user = session.scalar(select(User).where(User.name == user_name))
        if user is None:
            raise NotFoundError(f"no user {user_name!r}")
        row = ApiToken(
            user_id=user.id, name=name, token_sha256=_sha(token), created_at=now, expires_at=expires
        )
        session.add(row)
        session.flush()
        detail = {"user": user_name, "expires_at": None if expires is None else expires.isoformat()}
        audit.append(
            session,
            actor=actor,
            action=audit.Action.TOKEN_CREATED,
            object_type="api_token",
            object_id=str(row.id),
            detail=detail,
        )
    return token


def user_for_token(sm: sessionmaker[Session], token: str) -> UserRow | None:
    now = utcnow()
    with sm.begin() as session:
        row = _with_user(session, ApiToken, token)
        if row is None:
            return None
        tok, user = row
        if tok.revoked_at is not None or user.disabled:
            return None
        if tok.expires_at is not None and tok.expires_at <= now:
            return None
        if tok.last_used_at is None or now - tok.last_used_at > TOUCH_INTERVAL:
            tok.last_used_at = now
        return _user_row(user)


def list_tokens(
    sm: sessionmaker[Session], *, user_names: Collection[str] | None = None
) -> list[ApiTokenRow]:
    """API tokens (of ``user_names`` only, if given), oldest first."""
    stmt = select(ApiToken, User.name).join(User, User.id == ApiToken.user_id)
    if user_names is not None:
        stmt = stmt.where(User.name.in_(list(user_names)))
    with sm() as session:
        rows = session.execute(stmt.order_by(ApiToken.id)).all()
        return [
            ApiTokenRow(t.id, n, t.name, t.created_at, t.last_used_at, t.revoked_at, t.expires_at)
            for t, n in rows
        ]


def revoke_token(sm: sessionmaker[Session], token_id: int, *, actor: str) -> bool:
    with sm.begin() as session:
        tok = session.get(ApiToken, token_id)
        if tok is None or tok.revoked_at is not None:
            return False
        tok.revoked_at = utcnow()
        audit.append(
            session,
            actor=actor,
            action=audit.Action.TOKEN_REVOKED,
            object_type="api_token",
            object_id=str(token_id),
        )
        return True
