"""Password hashes at the production cost (OWASP scrypt parameters), older hashes verified and
replaced at login, and the login lock-out's counting, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import hashlib
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from storage import users
from storage.audit import list_audit
from storage.logins import (
    LoginLimits,
    attempt_failed,
    attempt_succeeded,
    begin_attempt,
    clear_failures,
)
from storage.schema import LoginFailure, User, utcnow
from storage.users import add_user, authenticate, hash_password, verify_password

LIMITS = LoginLimits(max_failures=3, window=timedelta(minutes=15))


def _parts(stored: str) -> tuple[str, int, int, int, bytes, bytes]:
    scheme, log2_n, r, p, salt, digest = stored.split("$")
    return scheme, int(log2_n), int(r), int(p), base64.b64decode(salt), base64.b64decode(digest)


def test_new_hashes_use_the_owasp_scrypt_parameters() -> None:
    stored = hash_password("a long passphrase")
    scheme, log2_n, r, p, salt, digest = _parts(stored)
    # OWASP Password Storage Cheat Sheet: scrypt N=2^17 (128 MiB), r=8, p=1 at least.
    assert (scheme, log2_n, r, p) == ("scrypt", 17, 8, 1)
    # The digest is what the standard library computes with exactly those parameters.
    expected = hashlib.scrypt(
        b"a long passphrase", salt=salt, n=2**17, r=8, p=1, maxmem=256 << 20, dklen=32
    )
    assert digest == expected and len(salt) == 16
    assert verify_password("a long passphrase", stored)
    assert not verify_password("a long passphrasE", stored)


def test_an_old_hash_verifies_and_is_replaced_at_the_next_login(
    sm: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as m:  # the cost before issue 15
        m.setattr(users, "SCRYPT_LOG2_N", 15)
        add_user(sm, "old", "admin", "password from 2025")
    with sm() as s:
        before = s.scalar(select(User.password_hash).where(User.name == "old"))
    assert before is not None and before.startswith("scrypt$15$8$1$")
    assert authenticate(sm, "old", "wrong password!!") is None
    with sm() as s:
        assert s.scalar(select(User.password_hash).where(User.name == "old")) == before
    user = authenticate(sm, "old", "password from 2025")
    assert user is not None and user.name == "old"
    with sm() as s:
        after = s.scalar(select(User.password_hash).where(User.name == "old"))
    assert after is not None and after.startswith("scrypt$17$8$1$")
    assert verify_password("password from 2025", after)
    assert authenticate(sm, "old", "password from 2025") is not None


# -- lock-out counting -------------------------------------------------------------------------


def _fail(sm: sessionmaker[Session], user: str, client: str) -> str | None:
    attempt = begin_attempt(sm, user, client, LIMITS)
    if attempt.refused is not None:
        return attempt.refused
    attempt_failed(sm, attempt, LIMITS)
    return None


def test_lock_out_scopes(sm: sessionmaker[Session]) -> None:
    # The pair locks after 3; the same name from elsewhere is not affected.
    assert [_fail(sm, "admin", "10.0.0.1") for _ in range(4)] == [None, None, None, "user_client"]
    ok = begin_attempt(sm, "admin", "10.0.0.2", LIMITS)
    assert ok.refused is None
    attempt_succeeded(sm, ok)
    # One address guessing many names: refused after 4 x 3 (12) over all names.
    results = [_fail(sm, f"name{i}", "10.9.9.9") for i in range(13)]
    assert results == [None] * 12 + ["client"]
    with sm() as s:
        rows = s.scalar(select(func.count(LoginFailure.id)))
    assert rows == 3 + 12  # refused attempts and the success left no row
    locked = [e for e in list_audit(sm) if e.action == "user.login_locked"]
    assert sorted(e.detail["scope"] for e in locked) == ["client", "user_client"]
    assert clear_failures(sm, "admin") == 3
    assert begin_attempt(sm, "admin", "10.0.0.1", LIMITS).refused is None


def test_old_failures_fall_out_of_the_window(sm: sessionmaker[Session]) -> None:
    for _ in range(3):
        _fail(sm, "rad", "10.0.0.1")
    assert begin_attempt(sm, "rad", "10.0.0.1", LIMITS).refused == "user_client"
    with sm.begin() as s:
        s.execute(update(LoginFailure).values(at=utcnow() - timedelta(minutes=16)))
    attempt = begin_attempt(sm, "rad", "10.0.0.1", LIMITS)
    assert attempt.refused is None
    with sm() as s:  # the old rows were deleted, only this attempt's is left
        assert s.scalar(select(func.count(LoginFailure.id))) == 1
