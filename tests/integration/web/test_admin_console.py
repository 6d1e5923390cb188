"""The admin console explains itself (issue 19): what needs attention on the home page (dead
deliveries and dead jobs), passwords, lock-outs and API tokens managed on the users page, and
refused forms answered on their own page with the message beside the form and what was typed
kept (422, 409 for a conflict), while the REST API keeps answering JSON."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

import pytest

from storage.audit import search_audit
from storage.jobs import claim_job, fail_job, list_jobs, promote_studies_now
from storage.outbox import claim_delivery, delivery_failed, get_delivery, queue_deliveries
from storage.peers import DestinationRow, add_destination, list_callers, list_destinations
from storage.schema import Result, Study
from storage.users import authenticate, list_tokens, user_for_token

from web_helpers import PASSWORDS, Web, seed_study


def _post(web: Web, url: str, data: dict[str, Any] | None = None, page: str = "/admin") -> Any:
    """A form post from the logged-in browser, with the session's CSRF token."""
    form = {"csrf_token": web.csrf(page=page), **(data or {})}
    return web.client.post(url, data=form, follow_redirects=False)


def _audit(web: Web, action: str) -> list[Any]:
    rows, _ = search_audit(web.sessions, action=action, limit=100)
    return rows


def _section(html: str, section_id: str) -> str:
    found = re.search(rf'<section id="{section_id}".*?</section>', html, re.S)
    assert found is not None, html[:2000]
    return found.group(0)


def _input(html: str, name: str) -> str:
    """The first ``<input name=NAME ...>`` tag of ``html``."""
    found = re.search(rf'<input name="{name}"[^>]*>', html)
    assert found is not None, name
    return found.group(0)


def _dead_delivery(web: Web) -> int:
    """A delivery to "pacs" made dead by a permanent failure, through storage.outbox."""
    study_id = seed_study(web.sessions, web.storage.spool)
    with web.sessions() as session:
        result_id = session.query(Result.id).filter_by(study_id=study_id, kind="analysis").scalar()
    add_destination(
        web.sessions,
        DestinationRow(name="pacs", ae_title="PACS", host="10.0.0.9", port=104, send=("sr",)),
    )
    (delivery_id,) = queue_deliveries(web.sessions, result_id, "sr")
    now = datetime.now(UTC)
    claim = claim_delivery(web.sessions, now, 60, worker_id="test:1:delivery-0")
    assert claim is not None and claim.delivery_id == delivery_id
    outcome = delivery_failed(
        web.sessions, claim, now, transient=False, status=0x0122, error="SOP class not supported"
    )
    assert outcome == "dead"
    return delivery_id


def _dead_job(web: Web, error: str) -> int:
    """An analysis job made dead by its last failed attempt, through storage.jobs."""
    uid = "1.2.826.0.1.3680043.8.498.77"
    now = datetime.now(UTC)
    with web.sessions.begin() as session:
        session.add(
            Study(
                study_instance_uid=uid,
                state="receiving",
                first_received_at=now,
                last_received_at=now,
                instance_count=1,
            )
        )
    (job_id,) = promote_studies_now(web.sessions, [uid], now, max_attempts=1)
    claimed = claim_job(web.sessions, "w1", now, 60)
    assert claimed is not None and claimed.job_id == job_id
    assert fail_job(web.sessions, job_id, now, error) == "dead"
    return job_id


# -- the home page: what needs attention ---------------------------------------------------------


def test_home_page_says_when_nothing_needs_attention(web: Web) -> None:
    web.login("admin")
    page = web.client.get("/admin").text
    attention = _section(page, "attention")
    assert "Nothing needs attention" in attention
    assert page.index('id="attention"') < page.index('id="connect"')  # at the top


def test_home_page_lists_a_dead_delivery_and_a_dead_job_with_their_retries(web: Web) -> None:
    delivery_id = _dead_delivery(web)
    job_id = _dead_job(web, "NotAnalysable: invalid value 'Doe^Jane' in (0010,0010)")
    woken: list[int] = []
    web.ctx.wake_delivery = lambda: woken.append(1)
    web.login("admin")

    attention = _section(web.client.get("/admin").text, "attention")
    assert "Nothing needs attention" not in attention
    assert 'href="/admin/outbox?state=dead">1 dead delivery</a>' in attention
    assert 'href="/admin/jobs?state=dead">1 dead analysis job</a>' in attention
    row = re.search(rf'<tr data-dead-delivery-id="{delivery_id}">.*?</tr>', attention, re.S)
    assert row is not None
    assert "pacs" in row.group(0) and "0x0122" in row.group(0)
    assert "SOP class not supported" in row.group(0)
    assert f'action="/admin/outbox/{delivery_id}/retry"' in row.group(0)
    assert 'action="/admin/outbox/retry-dead"' in attention
    job = re.search(rf'<tr data-dead-job-id="{job_id}">.*?</tr>', attention, re.S)
    assert job is not None
    assert "analysis" in job.group(0) and "NotAnalysable" in job.group(0)
    assert "Doe^Jane" not in attention  # the error as storage stored it: redacted
    assert f'action="/admin/jobs/{job_id}/retry"' in job.group(0)
    assert "1.2.826.0.1.3680043.8.498.77" not in attention  # internal ids only

    # the retries reachable from the home page are the outbox's and the jobs page's
    r = _post(web, f"/admin/outbox/{delivery_id}/retry")
    assert r.status_code == 303 and woken == [1]
    assert get_delivery(web.sessions, delivery_id).state == "pending"
    assert _post(web, f"/admin/jobs/{job_id}/retry").status_code == 303
    assert [j.state for j in list_jobs(web.sessions)] == ["queued"]
    assert "Nothing needs attention" in _section(web.client.get("/admin").text, "attention")


def test_home_page_lists_only_the_most_recent_dead_deliveries(web: Web) -> None:
    first = _dead_delivery(web)
    with web.sessions() as session:
        result_id = session.query(Result.id).filter_by(kind="analysis").scalar()
    ids = []
    for i in range(6):
        row = DestinationRow(
            name=f"pacs{i}", ae_title="PACS", host="10.0.0.9", port=104, send=("sr",)
        )
        add_destination(web.sessions, row)
        (delivery_id,) = queue_deliveries(web.sessions, result_id, "sr", [row])
        now = datetime.now(UTC)
        claim = claim_delivery(web.sessions, now, 60, worker_id="test:1:delivery-0")
        assert claim is not None and claim.delivery_id == delivery_id
        delivery_failed(web.sessions, claim, now, transient=False, status=0x0122, error="no")
        ids.append(delivery_id)
    web.login("admin")
    attention = _section(web.client.get("/admin").text, "attention")
    assert "7 dead deliveries" in attention
    listed = [int(i) for i in re.findall(r'data-dead-delivery-id="(\d+)"', attention)]
    assert listed == sorted(ids, reverse=True)[:5] and first not in listed


# -- users: password, unlock, tokens -------------------------------------------------------------


def test_admin_sets_a_password_twice_and_the_users_sessions_end(web: Web) -> None:
    other = web.login("rad", web.new_client())
    assert other.get("/worklist").status_code == 200
    web.login("admin")
    page = web.client.get("/admin/users").text
    assert 'action="/admin/users/rad/password"' in page and 'minlength="12"' in page

    differ = _post(
        web,
        "/admin/users/rad/password",
        {"password": "a-new-password-1", "password_again": "a-new-password-2"},
        page="/admin/users",
    )
    assert differ.status_code == 422 and "the two passwords differ" in differ.text
    assert 'role="alert"' in differ.text and "<h1>Users</h1>" in differ.text
    assert 'aria-describedby="password-error-' in differ.text
    assert "a-new-password-1" not in differ.text  # passwords are never sent back
    short = _post(
        web,
        "/admin/users/rad/password",
        {"password": "short", "password_again": "short"},
        page="/admin/users",
    )
    assert short.status_code == 422 and "at least 12 characters" in short.text
    assert other.get("/worklist").status_code == 200  # nothing changed yet

    r = _post(
        web,
        "/admin/users/rad/password",
        {"password": "a-new-password-1", "password_again": "a-new-password-1"},
        page="/admin/users",
    )
    assert r.status_code == 303 and r.headers["location"] == "/admin/users?done=password_set"
    assert "Password set" in web.client.get(r.headers["location"]).text
    assert other.get("/worklist").status_code == 401  # their session ended
    assert authenticate(web.sessions, "rad", PASSWORDS["rad"]) is None
    assert authenticate(web.sessions, "rad", "a-new-password-1") is not None
    (event,) = _audit(web, "user.password_changed")
    assert (event.actor, event.object_id) == ("web:admin", "rad")
    assert event.detail["sessions_ended"] == 1
    assert "a-new-password-1" not in json.dumps(event.detail)
    missing = {"password": "a-new-password-1", "password_again": "a-new-password-1"}
    assert _post(web, "/admin/users/nobody/password", missing, "/admin/users").status_code == 404


def test_admin_unlocks_a_user_locked_out_by_failed_logins(web: Web) -> None:
    rad = web.new_client()
    for _ in range(web.ctx.settings.web.login_max_failures):
        token = web.csrf(rad, page="/login")
        rad.post(
            "/login", data={"username": "rad", "password": "wrong-pw-000!", "csrf_token": token}
        )
    token = web.csrf(rad, page="/login")
    right = {"username": "rad", "password": PASSWORDS["rad"], "csrf_token": token}
    assert rad.post("/login", data=right).status_code == 429  # locked out

    web.login("admin")
    r = _post(web, "/admin/users/rad/unlock", page="/admin/users")
    assert r.status_code == 303
    assert "done=user_unlocked" in r.headers["location"]
    assert "failed logins forgotten" in web.client.get(r.headers["location"]).text
    web.login("rad", rad)  # in again
    (event,) = _audit(web, "user.login_unlocked")
    assert (event.actor, event.object_id) == ("web:admin", "rad")


def test_a_token_created_on_the_page_is_shown_once_and_never_kept(
    web: Web, caplog: pytest.LogCaptureFixture
) -> None:
    web.login("admin")
    with caplog.at_level(logging.DEBUG):
        r = _post(
            web, "/admin/users/rad/tokens", {"label": "ci-export", "days": "30"}, "/admin/users"
        )
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    found = re.search(r'id="new-token-value"[^>]*value="(xrd_[A-Za-z0-9_\-]+)"', r.text)
    assert found is not None, r.text[:3000]
    token = found.group(1)
    assert "shown only once" in r.text and "expires in 30 day(s)" in r.text
    user = user_for_token(web.sessions, token)
    assert user is not None and user.name == "rad"
    (row,) = list_tokens(web.sessions)
    assert (row.user_name, row.name) == ("rad", "ci-export") and row.expires_at is not None

    assert token not in web.client.get("/admin/users").text  # once: not on the next visit
    assert token not in caplog.text
    (event,) = _audit(web, "token.created")
    assert event.actor == "web:admin" and token not in json.dumps(event.detail)
    assert token not in r.headers.get("location", "")

    forever = _post(web, "/admin/users/rad2/tokens", {"label": "sync", "days": ""}, "/admin/users")
    assert forever.status_code == 200 and "valid until revoked" in forever.text
    assert next(t for t in list_tokens(web.sessions) if t.name == "sync").expires_at is None


def test_a_refused_token_form_stays_on_the_page_with_what_was_typed(web: Web) -> None:
    web.login("admin")
    for days, message in (("soon", "days must be a number"), ("0", "days must be more than 0")):
        r = _post(
            web, "/admin/users/rad/tokens", {"label": "ci-export", "days": days}, "/admin/users"
        )
        assert r.status_code == 422 and message in r.text, r.text[:500]
        assert "new-token-value" not in r.text
        form = re.search(r'action="/admin/users/rad/tokens".*?</form>', r.text, re.S)
        assert form is not None
        assert 'value="ci-export"' in form.group(0) and f'value="{days}"' in form.group(0)
        assert re.search(r'<input name="days"[^>]*aria-invalid="true"', form.group(0))
    assert list_tokens(web.sessions) == []
    r = _post(web, "/admin/users/nobody/tokens", {"label": "x", "days": "1"}, "/admin/users")
    assert r.status_code == 404


# -- inline form errors --------------------------------------------------------------------------


def test_a_17_character_ae_title_is_refused_beside_the_form_with_the_value_kept(web: Web) -> None:
    web.login("admin")
    typed = "CT_WARD_B_SCANNER"  # 17 characters
    r = _post(web, "/admin/callers", {"ae_title": typed, "host": "10.0.0.5"})
    assert r.status_code == 422
    callers = _section(r.text, "callers")
    assert re.search(r'<p class="error form-error" role="alert" id="caller-error">[^<]*16', callers)
    field = _input(callers, "ae_title")
    assert f'value="{typed}"' in field
    assert 'aria-invalid="true"' in field and 'aria-describedby="caller-error"' in field
    assert 'value="10.0.0.5"' in _input(callers, "host")
    assert 'maxlength="16"' not in field  # a browser would cut a pasted title silently
    assert "Cannot do that" not in r.text and 'id="connect"' in r.text  # still the admin page
    assert list_callers(web.sessions) == []

    assert _post(web, "/admin/callers", {"ae_title": "CT1"}).status_code == 303
    dup = _post(web, "/admin/callers", {"ae_title": "CT1"})
    assert dup.status_code == 409 and "allowed already" in _section(dup.text, "callers")
    assert 'value="CT1"' in _input(_section(dup.text, "callers"), "ae_title")


def test_a_refused_destination_keeps_every_value_typed(web: Web) -> None:
    web.login("admin")
    form = {"name": "pacs", "ae_title": "PACS", "host": "pacs.local", "port": "70000"}
    r = _post(web, "/admin/destinations", {**form, "send": ["pdf"], "ca_file": "/etc/ca.pem"})
    assert r.status_code == 422
    section = _section(r.text, "destinations")
    assert 'role="alert" id="destination-error">port must be between 1 and 65535' in section
    port = _input(section, "port")
    assert 'value="70000"' in port and 'aria-describedby="destination-error"' in port
    for name, value in (("name", "pacs"), ("ae_title", "PACS"), ("host", "pacs.local")):
        assert f'value="{value}"' in _input(section, name)
    assert 'value="/etc/ca.pem"' in _input(section, "ca_file")
    assert re.search(r'value="pdf"\s*checked', section)
    assert not re.search(r'value="sr"\s*checked', section)  # the default is not put back
    assert list_destinations(web.sessions) == []

    ok = _post(web, "/admin/destinations", {**form, "port": "104", "send": ["sr"]})
    assert ok.status_code == 303
    dup = _post(web, "/admin/destinations", {**form, "port": "104", "send": ["sr"]})
    assert dup.status_code == 409 and "exists already" in _section(dup.text, "destinations")
    assert 'aria-invalid="true"' in _input(_section(dup.text, "destinations"), "name")


def test_a_refused_user_keeps_the_name_and_role_but_not_the_password(web: Web) -> None:
    web.login("admin")
    r = _post(
        web,
        "/admin/users",
        {"name": "rad3", "role": "admin", "password": "tiny-pw"},
        page="/admin/users",
    )
    assert r.status_code == 422 and "at least 12 characters" in r.text
    assert 'id="user-error"' in r.text and 'value="rad3"' in r.text
    assert '<option value="admin" selected>' in r.text and "tiny-pw" not in r.text
    dup = _post(
        web,
        "/admin/users",
        {"name": "rad", "role": "radiologist", "password": "long-enough-pw-1"},
        page="/admin/users",
    )
    assert dup.status_code == 409 and "exists already" in dup.text
    assert re.search(r'<input name="name"[^>]*aria-invalid="true"', dup.text)
    me = _post(web, "/admin/users/admin/disable", page="/admin/users")
    assert me.status_code == 409 and "your own account" in me.text and "<h1>Users</h1>" in me.text


def test_the_api_keeps_answering_json_errors(web: Web) -> None:
    h = web.token("admin")
    r = web.client.post("/api/v1/callers", json={"ae_title": "A" * 17}, headers=h)
    assert r.status_code == 422 and "AE title must be 1 to 16" in r.json()["detail"]
    r = web.client.post("/api/v1/users/rad/tokens", json={"label": "x", "days": 0}, headers=h)
    assert r.status_code == 422 and r.headers["content-type"] == "application/json"
