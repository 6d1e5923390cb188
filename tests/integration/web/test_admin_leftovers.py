"""The admin console's leftovers of issue 19: FastAPI's own refusals of an admin form come back on
the form's page (422, the field named and marked, what was typed kept) while the API keeps its
422 JSON; each user's lock-out state with "Unlock" only for locked users; "Cancel" for queued
jobs; the models page shows the model's indeterminate band, not a single threshold."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from storage.audit import search_audit
from storage.jobs import list_jobs, promote_studies_now
from storage.logins import LoginLimits, attempt_failed, begin_attempt, lock_states
from storage.peers import list_callers
from storage.schema import Study

from web_helpers import Web


def _post(web: Web, url: str, data: dict[str, Any], page: str) -> Any:
    form = {"csrf_token": web.csrf(page=page), **data}
    return web.client.post(url, data=form, follow_redirects=False)


def _tag(html: str, pattern: str) -> str:
    found = re.search(pattern, html, re.S)
    assert found is not None, pattern
    return found.group(0)


def _row(html: str, user: str) -> str:
    return _tag(html, rf'<tr data-user="{user}">.*?</tr>')


# -- FastAPI's refusals of a form ----------------------------------------------------------------


def test_a_missing_field_comes_back_on_the_form_page_naming_the_field(web: Web) -> None:
    web.login("admin")
    r = _post(web, "/admin/callers", {"host": "10.1.2.3"}, "/admin")
    assert r.status_code == 422
    assert "Cannot do that" not in r.text  # not the generic error page
    error = _tag(r.text, r'<p class="error form-error" role="alert" id="caller-error">.*?</p>')
    assert "AE title is required." in error
    ae_input = _tag(r.text, r'<input name="ae_title"[^>]*>')
    assert 'aria-invalid="true"' in ae_input and 'aria-describedby="caller-error"' in ae_input
    assert 'value="10.1.2.3"' in _tag(r.text, r'<input name="host"[^>]*>')  # typed, kept
    assert list_callers(web.sessions) == []


def test_a_too_long_field_names_the_field_and_keeps_the_other_values(web: Web) -> None:
    web.login("admin")
    form = {"name": "pacs", "ae_title": "PACS", "host": "pacs.local", "port": "1" * 17}
    r = _post(web, "/admin/destinations", {**form, "send": ["sr", "pdf"]}, "/admin")
    assert r.status_code == 422
    error = _tag(r.text, r'id="destination-error">.*?</p>')
    assert "Port: string should have at most 16 characters." in error
    form_html = r.text[r.text.index('action="/admin/destinations"') :]
    assert 'aria-invalid="true"' in _tag(form_html, r'<input name="port"[^>]*>')
    assert 'value="pacs.local"' in _tag(form_html, r'<input name="host"[^>]*>')
    checked = re.findall(r'name="send" value="(\w+)" checked', r.text)
    assert checked == ["sr", "pdf"]


def test_a_refused_password_form_never_shows_the_password(web: Web) -> None:
    web.login("admin")
    secret = "typed-secret-password-1"
    r = _post(web, "/admin/users/rad/password", {"password": secret}, "/admin/users")
    assert r.status_code == 422
    row = _row(r.text, "rad")
    assert "Password (again) is required." in row
    assert '<details class="user-actions" open>' in row  # the refused form is shown
    assert secret not in r.text


def test_the_token_form_refused_by_fastapi_keeps_the_label(web: Web) -> None:
    web.login("admin")
    r = _post(web, "/admin/users/rad/tokens", {"label": "ci-bot", "days": "9" * 40}, "/admin/users")
    assert r.status_code == 422
    row = _row(r.text, "rad")
    assert "Valid for days: string should have at most 32 characters." in row
    assert 'value="ci-bot"' in row


def test_a_form_without_a_page_of_its_own_keeps_the_error_page(web: Web) -> None:
    web.login("admin")
    r = _post(web, "/admin/callers/remove", {}, "/admin")
    assert r.status_code == 422
    assert "Cannot do that" in r.text and "ae_title" in r.text


def test_the_api_keeps_answering_422_json(web: Web) -> None:
    r = web.client.post("/api/v1/callers", json={"host": "x"}, headers=web.token("admin"))
    assert r.status_code == 422
    body = r.json()
    assert body["errors"][0]["loc"] == ["body", "ae_title"]


# -- lock-out state ------------------------------------------------------------------------------


def _limits(web: Web) -> LoginLimits:
    w = web.ctx.settings.web
    return LoginLimits(w.login_max_failures, timedelta(seconds=w.login_window_seconds))


def _fail(web: Web, name: str, client: str, times: int) -> None:
    limits = _limits(web)
    for _ in range(times):
        attempt = begin_attempt(web.sessions, name, client, limits)
        assert attempt.row_id is not None
        attempt_failed(web.sessions, attempt, limits)


def test_users_page_shows_who_is_locked_out_and_offers_unlock_only_to_them(web: Web) -> None:
    limits = _limits(web)
    _fail(web, "rad", "192.0.2.1", limits.max_failures)
    _fail(web, "rad2", "192.0.2.2", 1)
    web.login("admin")
    page = web.client.get("/admin/users").text
    rad = _row(page, "rad")
    assert "locked out until" in rad
    assert f"({limits.max_failures} failed logins)" in rad
    until = re.search(r'data-locked-until="([^"]+)"', rad)
    assert until is not None
    assert datetime.fromisoformat(until.group(1)) > datetime.now(UTC)
    assert 'action="/admin/users/rad/unlock"' in rad
    rad2 = _row(page, "rad2")
    assert "1 failed login, not locked out" in rad2
    assert "/unlock" not in rad2
    assert "/unlock" not in _row(page, "admin") and "failed login" not in _row(page, "admin")

    r = _post(web, "/admin/users/rad/unlock", {}, "/admin/users")
    assert r.status_code == 303
    rad = _row(web.client.get("/admin/users").text, "rad")
    assert "locked out" not in rad and "/unlock" not in rad


def test_lock_states_say_until_when_each_lock_lasts(web: Web) -> None:
    limits = LoginLimits(max_failures=3, window=timedelta(minutes=15))
    _fail(web, "rad", "192.0.2.1", 2)  # not locked: 2 of 3
    states = lock_states(web.sessions, limits)
    assert states["rad"].failures == 2 and states["rad"].locked_until is None
    _fail(web, "rad", "192.0.2.1", 1)
    state = lock_states(web.sessions, limits)["rad"]
    assert state.failures == 3 and state.locked_addresses == 1
    assert state.locked_until is not None
    oldest = min(a.at for a in search_audit(web.sessions, action="user.login_failed")[0])
    # the lock ends when the oldest of the three leaves the window
    assert abs((state.locked_until - (oldest + limits.window)).total_seconds()) < 5
    # a name guessed from many addresses locks each address that failed for it
    for n in range(12):
        _fail(web, "rad2", f"198.51.100.{n}", 1)
    state = lock_states(web.sessions, limits)["rad2"]
    assert state.failures == 12 and state.locked_addresses == 12
    later = datetime.now(UTC) + limits.window + timedelta(seconds=1)
    assert lock_states(web.sessions, limits, now=later) == {}


# -- cancelling a queued job ---------------------------------------------------------------------


def _queued_job(web: Web) -> int:
    uid = "1.2.826.0.1.3680043.8.498.61"
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
    (job_id,) = promote_studies_now(web.sessions, [uid], now)
    return job_id


def test_a_queued_job_can_be_cancelled_from_the_jobs_page(web: Web) -> None:
    job_id = _queued_job(web)
    web.login("admin")
    page = web.client.get("/admin/jobs?state=queued").text
    row = _tag(page, rf'<tr data-job-id="{job_id}">.*?</tr>')
    form = _tag(row, rf'<form method="post" action="/admin/jobs/{job_id}/cancel"[^>]*>')
    assert f'data-confirm="Cancel job {job_id}' in form  # confirm.js asks first
    r = _post(web, f"/admin/jobs/{job_id}/cancel", {}, "/admin/jobs")
    assert r.status_code == 303
    assert r.headers["location"] == "/admin/jobs?state=cancelled&done=job_cancelled"
    assert "Job cancelled" in web.client.get(r.headers["location"]).text
    [job] = list_jobs(web.sessions, "cancelled")
    assert job.job_id == job_id
    [event] = search_audit(web.sessions, action="job.cancelled")[0]
    assert event.actor == "web:admin" and event.object_id == str(job_id)
    # no longer queued: no form, and a late post is refused with the reason
    page = web.client.get("/admin/jobs?state=all").text
    assert f"/admin/jobs/{job_id}/cancel" not in page
    late = _post(web, f"/admin/jobs/{job_id}/cancel", {}, "/admin/jobs")
    assert late.status_code == 409 and "is not queued" in late.text
    assert _post(web, "/admin/jobs/999999/cancel", {}, "/admin/jobs").status_code == 404


def test_a_radiologist_cannot_cancel_a_job(web: Web) -> None:
    job_id = _queued_job(web)
    web.login("rad")
    r = web.client.post(f"/admin/jobs/{job_id}/cancel", data={"csrf_token": web.csrf()})
    assert r.status_code == 403
    assert [j.job_id for j in list_jobs(web.sessions, "queued")] == [job_id]


# -- the model's indeterminate band --------------------------------------------------------------


def test_models_page_shows_the_indeterminate_band(web: Web) -> None:
    from models.bundle import METADATA_PATH, default_bundle_path

    path = web.ctx.settings.model.bundle or default_bundle_path()
    point = json.loads((path / METADATA_PATH).read_text())["thresholds"]["default"]
    low, high = point["indeterminate_low"], point["indeterminate_high"]
    assert low < high  # the bundle has a band (else this test shows nothing)
    web.login("admin")
    page = web.client.get("/admin/models").text
    band = _tag(page, r'<dd id="model-band">.*?</dd>')
    assert f"p {low:.2f} \u2013 {high:.2f}" in band
    assert f'<span id="model-band-low">{low:.4f}</span>' in band
    assert f'<span id="model-band-high">{high:.4f}</span>' in band
    assert "indeterminate" in band and "present" in band and "absent" in band
    api = web.client.get("/api/v1/models", headers=web.token("admin")).json()["bundle"]
    assert (api["indeterminate_low"], api["indeterminate_high"]) == (low, high)
    assert api["threshold"] == point["threshold"]
