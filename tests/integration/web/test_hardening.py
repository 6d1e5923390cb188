"""Hostile clients against the web app: foreign Host headers (DNS rebinding), forged
X-Forwarded-For, password guessing aimed at locking an admin out, stale sessions and tokens,
and HTTPS with HSTS through the real uvicorn server."""

from __future__ import annotations

import re
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from storage.audit import list_audit
from storage.schema import ApiToken, WebSession, utcnow
from storage.users import create_api_token, set_password
from xrayd.runtime.metrics import Metrics
from xrayd.web.server import WebServer

from helpers import need
from web_helpers import BASE, PASSWORDS, Web, make_web

ATTACKER = ("198.51.100.66", 40000)
ADMIN_DESK = ("192.0.2.10", 40000)


def _client(web: Web, address: tuple[str, int] = ("testclient", 50000)) -> TestClient:
    return TestClient(web.client.app, base_url=BASE, client=address)


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found is not None, html[:300]
    return found.group(1)


def _login(c: Any, name: str, password: str, **kwargs: Any) -> Any:
    token = _csrf(c.get("/login").text)
    return c.post(
        "/login",
        data={"username": name, "password": password, "csrf_token": token},
        follow_redirects=False,
        **kwargs,
    )


def _audit(web: Web, action: str) -> list[Any]:
    return [e for e in list_audit(web.sessions) if e.action == action]


# -- Host allow-list -------------------------------------------------------------------------


def test_a_foreign_host_header_is_refused(tmp_path: Path) -> None:
    web = make_web(tmp_path / "data", web={"host": "10.1.2.3"})
    try:
        app = web.client.app
        for host in ("evil.example", "evil.example:8080", "127.0.0.1.evil.example", ""):
            c = TestClient(app, base_url="http://localhost")
            r = c.get("/login", headers={"Host": host})
            assert r.status_code == 400, host
            assert "allowed_hosts" in r.text and "csrf_token" not in r.text
            assert c.get("/health", headers={"Host": host}).status_code == 400
        # The defaults (loopback), the configured web.host, with and without ports.
        for host in ("localhost", "localhost:8080", "127.0.0.1:8080", "[::1]:8080", "10.1.2.3"):
            r = TestClient(app, base_url="http://localhost").get("/login", headers={"Host": host})
            assert r.status_code == 200, host
    finally:
        web.storage.engine.dispose()


def test_names_and_domains_can_be_allowed(tmp_path: Path) -> None:
    web = make_web(
        tmp_path / "data", web={"allowed_hosts": ["xrayd.example.org", "*.radiology.example"]}
    )
    try:
        c = TestClient(web.client.app, base_url="http://localhost")
        for host, status in (
            ("XRAYD.example.org", 200),
            ("xrayd.example.org:8443", 200),
            ("ws1.radiology.example", 200),
            ("radiology.example.evil", 400),
            ("localhost", 400),  # the list replaces the defaults
        ):
            assert c.get("/health", headers={"Host": host}).status_code == status, host
    finally:
        web.storage.engine.dispose()


# -- X-Forwarded-For ---------------------------------------------------------------------------


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Web, str]]:
    """The real uvicorn server of ``xrayd serve`` on loopback, plain http."""
    web = make_web(tmp_path / "data", web={"host": "127.0.0.1", "port": 0, "cookie_secure": False})
    server = WebServer(web.ctx)
    server.start()
    try:
        yield web, f"http://127.0.0.1:{server.port}"
    finally:
        server.stop(timeout=10)
        web.storage.engine.dispose()


def test_forwarded_for_from_a_peer_that_is_no_proxy_is_ignored(served: tuple[Web, str]) -> None:
    """A local process (peer 127.0.0.1) cannot choose the address that is audited and
    counted by the lock-out (uvicorn alone would believe it: its default trusts 127.0.0.1)."""
    web, base = served
    with httpx.Client(base_url=base, timeout=30) as c:
        r = _login(c, "rad", "wrong password!", headers={"X-Forwarded-For": "203.0.113.9"})
        assert r.status_code == 401
    [failed] = _audit(web, "user.login_failed")
    assert failed.detail["client"] == "127.0.0.1"


def test_forwarded_for_from_a_trusted_proxy_names_the_client(tmp_path: Path) -> None:
    web = make_web(tmp_path / "data", web={"trusted_proxies": ["10.0.0.0/8"]})
    try:
        proxy = _client(web, ("10.0.0.2", 5000))
        # The rightmost address that is no trusted proxy: what the client itself put in
        # front ("1.2.3.4") is not believed, the proxies' hops (10.0.0.7) are skipped.
        chain = "1.2.3.4, 198.51.100.1, 10.0.0.7"
        r = _login(proxy, "rad", "wrong password!", headers={"X-Forwarded-For": chain})
        assert r.status_code == 401
        r = _login(proxy, "rad", PASSWORDS["rad"], headers={"X-Forwarded-For": "198.51.100.2"})
        assert r.status_code == 303
        # Not from a proxy: the header means nothing.
        r = _login(_client(web, ("192.0.2.5", 5000)), "rad", "wrong password!",
                   headers={"X-Forwarded-For": "198.51.100.3"})  # fmt: skip
        assert r.status_code == 401
        clients = sorted(
            (e.id, e.detail["client"])
            for e in list_audit(web.sessions)
            if e.action in ("user.logged_in", "user.login_failed")
        )
        assert [c for _, c in clients] == ["198.51.100.1", "198.51.100.2", "192.0.2.5"]
    finally:
        web.storage.engine.dispose()


# -- lock-out ----------------------------------------------------------------------------------


def test_guessing_an_admins_password_does_not_lock_the_admin_out(web: Web) -> None:
    web.ctx.metrics = Metrics(web.sessions, web.ctx.spool.usage)
    attacker = _client(web, ATTACKER)
    statuses = [_login(attacker, "admin", f"guess number {i:03d}").status_code for i in range(40)]
    assert statuses == [401] * 5 + [429] * 35
    # Even the right password is refused from the guesser's address ...
    assert _login(attacker, "admin", PASSWORDS["admin"]).status_code == 429
    # ... but the admin at their own desk logs in.
    desk = _client(web, ADMIN_DESK)
    assert _login(desk, "admin", PASSWORDS["admin"]).status_code == 303
    assert desk.get("/admin").status_code == 200
    # 41 attempts wrote 5 failures, one lock-out and the admin's login: no row per refusal.
    actions = [e.action for e in list_audit(web.sessions) if e.action != "user.added"]
    assert sorted(actions) == ["user.logged_in", *["user.login_failed"] * 5, "user.login_locked"]
    [locked] = _audit(web, "user.login_locked")
    assert locked.object_id == "admin"
    assert locked.detail["client"] == ATTACKER[0] and locked.detail["scope"] == "user_client"
    metrics = web.client.get("/metrics").text
    assert 'xrayd_web_logins_total{outcome="refused"} 36.0' in metrics
    assert 'xrayd_web_logins_total{outcome="failed"} 5.0' in metrics
    assert 'xrayd_web_logins_total{outcome="ok"} 1.0' in metrics


def test_guessing_from_many_addresses_still_lets_a_fresh_address_in(web: Web) -> None:
    """A distributed guess: after 4 x 5 failures for a name over all addresses, each address
    that failed for it is refused at once, but an address without a failure still may try."""
    for n in range(20):
        bot = _client(web, (f"203.0.113.{n + 1}", 1))
        assert _login(bot, "admin", "wrong password!").status_code == 401
    again = _client(web, ("203.0.113.1", 1))
    assert _login(again, "admin", "wrong password!").status_code == 429
    fresh = _client(web, ("203.0.113.200", 1))
    assert _login(fresh, "admin", "wrong password!").status_code == 401
    assert _login(fresh, "admin", PASSWORDS["admin"]).status_code == 429  # it failed once now
    assert _login(_client(web, ADMIN_DESK), "admin", PASSWORDS["admin"]).status_code == 303
    scopes = sorted(e.detail["scope"] for e in _audit(web, "user.login_locked"))
    assert scopes == ["user"]
    assert len(_audit(web, "user.login_failed")) == 21


def test_a_good_login_clears_the_pairs_failures(web: Web) -> None:
    c = _client(web, ADMIN_DESK)
    for _ in range(4):
        assert _login(c, "rad", "wrong password!").status_code == 401
    assert _login(c, "rad", PASSWORDS["rad"]).status_code == 303
    for _ in range(4):  # a fresh budget, not one try left
        assert _login(_client(web, ADMIN_DESK), "rad", "wrong password!").status_code == 401
    assert not _audit(web, "user.login_locked")


# -- sessions and tokens -----------------------------------------------------------------------


def test_an_idle_session_ends(web: Web) -> None:
    c = web.login("rad")
    assert c.get("/worklist").status_code == 200

    def last_seen(minutes_ago: float | None = None) -> Any:
        with web.sessions.begin() as s:
            if minutes_ago is not None:
                when = utcnow() - timedelta(minutes=minutes_ago)
                s.execute(update(WebSession).values(last_seen_at=when))
            return s.scalar(select(WebSession.last_seen_at))

    # Used 20 minutes ago (idle limit 30): still valid, and the use is recorded ...
    old = last_seen(20)
    assert c.get("/worklist").status_code == 200
    seen = last_seen()
    assert seen > old + timedelta(minutes=19)
    # ... but not at every request (at most once a minute).
    assert c.get("/worklist").status_code == 200
    assert last_seen() == seen
    # Unused for 31 minutes: over, although session_hours (12) is far away.
    last_seen(31)
    assert c.get("/worklist").status_code == 401
    with web.sessions() as s:
        assert s.scalar(select(WebSession.id)) is None  # and gone from the table


def test_an_expired_token_is_refused(web: Web) -> None:
    token = create_api_token(
        web.sessions, "rad", "short-lived", actor="test", lifetime=timedelta(days=2)
    )
    headers = {"Authorization": f"Bearer {token}"}
    assert web.new_client().get("/api/v1/studies", headers=headers).status_code == 200
    with web.sessions.begin() as s:
        s.execute(update(ApiToken).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert web.new_client().get("/api/v1/studies", headers=headers).status_code == 401
    users = web.new_client().get("/api/v1/users", headers=web.token("admin")).json()["items"]
    [rad] = [u for u in users if u["name"] == "rad"]
    assert rad["tokens"][0]["expires_at"] is not None


def test_setting_a_password_revokes_tokens_and_sessions(web: Web) -> None:
    browser = web.login("rad")
    headers = web.token("rad")
    other_headers = web.token("rad2")
    set_password(web.sessions, "rad", "a brand new password", actor="test")
    assert web.new_client().get("/api/v1/studies", headers=headers).status_code == 401
    assert browser.get("/worklist").status_code == 401
    assert web.new_client().get("/api/v1/studies", headers=other_headers).status_code == 200
    [event] = _audit(web, "user.password_changed")
    assert event.detail == {"tokens_revoked": 1, "sessions_ended": 1}


def test_the_session_setting_a_password_may_stay(web: Web) -> None:
    first = web.login("rad")
    second = web.login("rad", web.new_client())
    keep = second.cookies.get("xrayd_session")
    assert keep
    tokens, sessions = set_password(
        web.sessions, "rad", "a brand new password", actor="test", keep_session=keep
    )
    assert (tokens, sessions) == (0, 1)
    assert first.get("/worklist").status_code == 401
    assert second.get("/worklist").status_code == 200


# -- HTTPS -------------------------------------------------------------------------------------


def _self_signed(directory: Path) -> tuple[Path, Path]:
    need(shutil.which("openssl") is not None, "the openssl command-line tool is not installed")
    cert, key = directory / "web.pem", directory / "web.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-new", "-nodes", "-newkey", "ec",
         "-pkeyopt", "ec_paramgen_curve:prime256v1", "-keyout", str(key), "-out", str(cert),
         "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


def test_https_answers_carry_hsts(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    web = make_web(
        tmp_path / "data",
        web={"host": "127.0.0.1", "port": 0, "tls_cert_file": str(cert), "tls_key_file": str(key)},
    )
    server = WebServer(web.ctx)
    server.start()
    try:
        trust = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(base_url=f"https://127.0.0.1:{server.port}", verify=trust) as c:
            for path in ("/health", "/login", "/worklist"):
                r = c.get(path)
                assert r.headers["strict-transport-security"] == "max-age=31536000", path
    finally:
        server.stop(timeout=10)
        web.storage.engine.dispose()
    plain = make_web(tmp_path / "plain")  # plain HTTP: no HSTS (browsers would ignore it)
    try:
        assert "strict-transport-security" not in plain.client.get("/login").headers
    finally:
        plain.storage.engine.dispose()
