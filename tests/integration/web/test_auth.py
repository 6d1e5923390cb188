"""Authentication, roles, CSRF, tokens, login rate limiting and their audit trail."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.routing import APIRoute

from config.errors import ConfigError
from storage.audit import list_audit
from storage.users import (
    add_user,
    hash_password,
    revoke_token,
    set_disabled,
    verify_password,
)
from xrayd.web.app import ROUTERS
from xrayd.web.server import check_bind_allowed

from helpers import make_settings
from web_helpers import PASSWORDS, Web, make_web, seed_study

PUBLIC = {"/health", "/ready", "/metrics", "/login"}


def _routes(web: Web) -> list[tuple[str, str]]:
    out = []
    for route in (r for router in ROUTERS for r in router.routes):
        if not isinstance(route, APIRoute):
            continue
        path = re.sub(r"\{[^}]+\}", "1", route.path)
        for method in sorted(route.methods - {"HEAD"}):
            out.append((method, path))
    return out


def test_every_route_but_the_public_ones_needs_credentials(web: Web) -> None:
    routes = _routes(web)
    assert len(routes) > 10
    checked = 0
    for method, path in routes:
        if path in PUBLIC:
            continue
        r = web.client.request(method, path)
        assert r.status_code == 401, (method, path, r.status_code)
        if path.startswith("/api/"):
            assert r.json()["detail"].startswith("authentication required")
            assert r.headers["www-authenticate"] == "Bearer"
        else:
            assert 'action="/login"' in r.text  # the login form, and no page content
        checked += 1
    assert checked == len([r for r in routes if r[1] not in PUBLIC])
    assert web.client.get("/health").json() == {"status": "ok"}
    assert web.client.get("/openapi.json").status_code == 404
    assert web.client.get("/docs").status_code in (401, 404)


def test_login_page_and_session_cookie(web: Web) -> None:
    r = web.client.get("/login")
    assert r.status_code == 200
    assert "Content-Security-Policy" in r.headers and r.headers["X-Frame-Options"] == "DENY"
    web.login("rad")
    cookie = next(c for c in web.client.cookies.jar if c.name == "xrayd_session")
    assert cookie.secure and cookie.has_nonstandard_attr("HttpOnly")
    page = web.client.get("/worklist")
    assert page.status_code == 200 and "rad (radiologist)" in page.text
    assert page.headers["cache-control"] == "no-store"
    events = [e.action for e in list_audit(web.sessions)]
    assert "user.logged_in" in events


def test_wrong_password_is_refused_audited_and_rate_limited(web: Web) -> None:
    c = web.client
    for _ in range(5):
        token = web.csrf(page="/login")
        r = c.post(
            "/login", data={"username": "rad", "password": "wrong-password!!", "csrf_token": token}
        )
        assert r.status_code == 401 and "Wrong user name or password" in r.text
    token = web.csrf(page="/login")
    r = c.post(
        "/login", data={"username": "rad", "password": PASSWORDS["rad"], "csrf_token": token}
    )
    assert r.status_code == 429 and "Too many failed logins" in r.text  # even the right one
    actions = [e.action for e in list_audit(web.sessions)]
    # One event per password checked and one for the lock-out: none for the refusal.
    assert actions.count("user.login_failed") == 5 and actions.count("user.login_locked") == 1
    locked = next(e for e in list_audit(web.sessions) if e.action == "user.login_locked")
    assert locked.detail["scope"] == "user_client" and locked.detail["client"] == "testclient"
    failed = next(e for e in list_audit(web.sessions) if e.action == "user.login_failed")
    assert failed.object_id == "rad" and failed.detail["client"] == "testclient"
    # Another user is not locked out by that, even from the same address (a shared
    # workstation) until that address has failed 4 x 5 times.
    web.login("rad2", web.new_client())
    for i in range(15):
        token = web.csrf(page="/login")
        c.post("/login", data={"username": f"x{i}", "password": "y" * 12, "csrf_token": token})
    token = web.csrf(page="/login")
    r = c.post(
        "/login", data={"username": "rad2", "password": PASSWORDS["rad2"], "csrf_token": token}
    )
    assert r.status_code == 429


def test_unknown_user_costs_a_failure_too(web: Web) -> None:
    token = web.csrf(page="/login")
    r = web.client.post(
        "/login", data={"username": "nobody", "password": "x" * 12, "csrf_token": token}
    )
    assert r.status_code == 401
    assert any(
        e.action == "user.login_failed" and e.object_id == "nobody"
        for e in list_audit(web.sessions)
    )


def test_login_needs_its_csrf_token(web: Web) -> None:
    web.client.get("/login")
    r = web.client.post(
        "/login", data={"username": "rad", "password": PASSWORDS["rad"], "csrf_token": "forged"}
    )
    assert r.status_code == 403 and "xrayd_session" not in web.client.cookies


def test_login_redirects_only_to_local_paths(web: Web) -> None:
    for target, expected in (
        ("/dashboards", "/dashboards"),
        ("https://evil.example/", "/worklist"),
        ("//evil.example/x", "/worklist"),
    ):
        c = web.new_client()
        token = web.csrf(c, page="/login")
        r = c.post(
            "/login",
            data={
                "username": "rad",
                "password": PASSWORDS["rad"],
                "csrf_token": token,
                "next": target,
            },
            follow_redirects=False,
        )
        assert r.status_code == 303 and r.headers["location"] == expected


def test_forms_without_the_csrf_token_are_refused(web: Web) -> None:
    study = seed_study(web.sessions, web.ctx.spool)
    web.login("rad")
    form = {"verdict": "agree"}
    r = web.client.post(f"/studies/{study}/review", data=form)
    assert r.status_code == 403
    r = web.client.post(f"/studies/{study}/review", data={**form, "csrf_token": "nope"})
    assert r.status_code == 403
    # The API with the session cookie needs the header; with a bearer token it does not.
    body = {"study_id": study, "agree": True}
    assert web.client.post("/api/v1/overrides", json=body).status_code == 403
    csrf = web.csrf()
    r = web.client.post("/api/v1/overrides", json=body, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 201
    bare = web.new_client()
    assert bare.post("/api/v1/overrides", json=body, headers=web.token("rad")).status_code == 201


def test_logout_ends_the_session(web: Web) -> None:
    web.login("rad")
    old = web.client.cookies.get("xrayd_session")
    r = web.client.post("/logout", data={"csrf_token": web.csrf()}, follow_redirects=False)
    assert r.status_code == 303
    replay = web.new_client()
    replay.cookies.set("xrayd_session", old or "", domain="testserver")
    assert replay.get("/worklist").status_code == 401


def test_disabled_users_and_revoked_tokens_lose_access(web: Web) -> None:
    web.login("rad")
    headers = web.token("rad")
    assert web.client.get("/api/v1/studies", headers=headers).status_code == 200
    set_disabled(web.sessions, "rad", True, actor="test")
    assert web.client.get("/worklist").status_code == 401
    assert web.new_client().get("/api/v1/studies", headers=headers).status_code == 401
    set_disabled(web.sessions, "rad", False, actor="test")
    assert web.new_client().get("/api/v1/studies", headers=headers).status_code == 200
    from storage.users import list_tokens

    for t in list_tokens(web.sessions):
        revoke_token(web.sessions, t.id, actor="test")
    assert web.new_client().get("/api/v1/studies", headers=headers).status_code == 401
    bogus = {"Authorization": "Bearer xrd_not-a-token"}
    assert web.new_client().get("/api/v1/studies", headers=bogus).status_code == 401


def test_passwords_are_hashed_with_scrypt() -> None:
    # At this directory's lowered cost (conftest); the production cost: test_user_credentials.
    stored = hash_password("a long passphrase")
    assert stored.startswith("scrypt$10$8$1$") and "passphrase" not in stored
    assert verify_password("a long passphrase", stored)
    assert not verify_password("a long passphrasE", stored)
    assert not verify_password("a long passphrase", "md5$abc")
    assert hash_password("a long passphrase") != stored  # salted


def test_weak_passwords_and_bad_names_are_refused(web: Web) -> None:
    from storage.peers import InvalidEntryError

    with pytest.raises(InvalidEntryError, match="at least 12"):
        add_user(web.sessions, "short", "radiologist", "short")
    with pytest.raises(InvalidEntryError, match="user name"):
        add_user(web.sessions, "../etc", "radiologist", "long enough password")
    with pytest.raises(InvalidEntryError, match="role"):
        add_user(web.sessions, "root", "superuser", "long enough password")


def test_the_web_ui_stays_on_loopback_until_a_user_exists(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "d", web={"host": "0.0.0.0"})
    with pytest.raises(ConfigError, match="no web user exists"):
        check_bind_allowed(settings.web, 0)
    check_bind_allowed(settings.web, 1)
    for host in ("127.0.0.1", "::1", "localhost"):
        check_bind_allowed(make_settings(tmp_path / "e", web={"host": host}).web, 0)


def test_postgresql_login_and_review(pg_url: str, tmp_path: Path) -> None:
    w = make_web(tmp_path / "pg", pg_url)
    try:
        study = seed_study(w.sessions, w.ctx.spool)
        w.login("rad")
        r = w.client.post(
            "/api/v1/overrides",
            json={"study_id": study, "agree": True},
            headers={"X-CSRF-Token": w.csrf()},
        )
        assert r.status_code == 201 and r.json()["agree"] is True
    finally:
        w.storage.engine.dispose()
