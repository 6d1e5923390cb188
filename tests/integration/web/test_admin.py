"""Admin pages and admin REST API: roles, CSRF, callers/destinations (with a real C-ECHO),
outbox and job retries, models, audit search and CSV export, users; and their audit trail."""

from __future__ import annotations

import csv
import io
import re
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from fastapi.routing import APIRoute
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from storage import audit
from storage.audit import Action, search_audit
from storage.jobs import claim_job, fail_job, list_jobs, promote_studies_now
from storage.outbox import claim_delivery, delivery_failed, get_delivery, queue_deliveries
from storage.peers import (
    DestinationRow,
    add_destination,
    list_callers,
    list_destinations,
)
from storage.schema import Result, Study
from storage.users import authenticate, list_tokens, list_users
from xrayd.web import admin_api, admin_pages

from web_helpers import PASSWORDS, Web, seed_study


def _routes(router: Any) -> list[tuple[str, str]]:
    out = []
    for route in router.routes:
        assert isinstance(route, APIRoute)
        path = re.sub(r"\{[^}]+\}", "1", route.path)
        out += [(method, path) for method in sorted((route.methods or set()) - {"HEAD"})]
    return out


def _post(web: Web, url: str, data: dict[str, Any] | None = None, page: str = "/admin") -> Any:
    """A form post from a logged-in browser, with the session's CSRF token."""
    form = {"csrf_token": web.csrf(page=page), **(data or {})}
    return web.client.post(url, data=form, follow_redirects=False)


def _audit(web: Web, action: str) -> list[Any]:
    rows, _ = search_audit(web.sessions, action=action, limit=100)
    return rows


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def echo_scp() -> Iterator[tuple[int, list[str]]]:
    """A loopback Verification SCP: (port, calling AE titles it was echoed by)."""
    ae = AE(ae_title="ECHOSCP")
    ae.add_supported_context(Verification)
    callers: list[str] = []

    def on_echo(event: Any) -> int:
        callers.append(str(event.assoc.requestor.ae_title).strip())
        return 0x0000

    server = ae.start_server(
        ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_ECHO, on_echo)]
    )
    assert server is not None
    try:
        yield int(server.server_address[1]), callers
    finally:
        server.shutdown()


# -- roles and CSRF ------------------------------------------------------------------------------


def test_radiologist_gets_403_on_every_admin_page_and_api_route(web: Web) -> None:
    pages = _routes(admin_pages.router)
    apis = _routes(admin_api.router)
    assert len(pages) >= 15 and len(apis) >= 15
    assert all(p.startswith("/admin") for _, p in pages)
    assert all(p.startswith("/api/v1/") for _, p in apis)

    web.login("rad")
    csrf = web.csrf()  # a valid token: the refusal must come from the role, not from CSRF
    for method, path in pages:
        r = web.client.request(method, path, headers={"X-CSRF-Token": csrf})
        assert r.status_code == 403, (method, path, r.status_code)
        assert "needs the admin role" in r.text
    headers = web.token("rad")
    for method, path in apis:
        r = web.client.request(method, path, headers=headers)
        assert r.status_code == 403, (method, path, r.status_code)
        assert r.json() == {"detail": "this needs the admin role"}
    assert "/admin" not in web.client.get("/worklist").text  # no admin link either


def test_admin_pages_render_with_the_link_row(web: Web) -> None:
    web.login("admin")
    for path in (
        "/admin",
        "/admin/outbox",
        "/admin/outbox?state=all",
        "/admin/jobs",
        "/admin/jobs?state=done",
        "/admin/models",
        "/admin/audit",
        "/admin/users",
    ):
        r = web.client.get(path)
        assert r.status_code == 200, (path, r.text[:300])
        for link in ("/admin/outbox", "/admin/jobs", "/admin/models", "/admin/audit"):
            assert f'href="{link}"' in r.text
        assert "<script>" not in r.text and 'style="' not in r.text  # the CSP forbids them
    assert web.client.get("/admin/outbox?state=bogus").status_code == 422
    assert "expected a date" in web.client.get("/admin/audit?from=yesterday").text


def test_admin_forms_refuse_a_missing_or_wrong_csrf_token(web: Web) -> None:
    web.login("admin")
    for data in ({}, {"csrf_token": "forged"}):
        r = web.client.post(
            "/admin/callers", data={"ae_title": "EVIL", **data}, follow_redirects=False
        )
        assert r.status_code == 403 and "out of date" in r.text
        r = web.client.post(
            "/admin/users",
            data={"name": "mallory", "role": "admin", "password": "x" * 20, **data},
            follow_redirects=False,
        )
        assert r.status_code == 403
    assert list_callers(web.sessions) == []
    assert "mallory" not in {u.name for u in list_users(web.sessions)}
    assert not _audit(web, "caller.added")


# -- callers and destinations --------------------------------------------------------------------


def test_callers_added_and_removed_through_the_page_are_audited(web: Web) -> None:
    web.login("admin")
    r = _post(web, "/admin/callers", {"ae_title": "CT1", "host": "10.0.0.5"})
    assert r.status_code == 303 and r.headers["location"] == "/admin?done=caller_added"
    page = web.client.get(r.headers["location"]).text
    assert "Caller added." in page and "10.0.0.5" in page
    assert ("CT1", "10.0.0.5", "web") in {
        (c.ae_title, c.host, c.source) for c in list_callers(web.sessions)
    }
    assert _post(web, "/admin/callers", {"ae_title": "CT1", "host": "10.0.0.5"}).status_code == 409
    bad = _post(web, "/admin/callers", {"ae_title": "A" * 17})
    assert bad.status_code == 422 and "AE title must be 1 to 16" in bad.text

    r = _post(web, "/admin/callers/remove", {"ae_title": "CT1", "host": "10.0.0.5"})
    assert r.status_code == 303
    assert "CT1" not in {c.ae_title for c in list_callers(web.sessions)}
    assert _post(web, "/admin/callers/remove", {"ae_title": "CT1"}).status_code == 404

    (added,) = _audit(web, "caller.added")
    (removed,) = _audit(web, "caller.removed")
    for event in (added, removed):
        assert (event.actor, event.object_type, event.object_id) == ("web:admin", "caller", "CT1")
        assert event.detail == {"host": "10.0.0.5"}


def test_destinations_added_and_removed_through_the_page(web: Web) -> None:
    web.login("admin")
    form = {"name": "pacs", "ae_title": "PACS", "host": "pacs.local", "port": "104"}
    r = _post(web, "/admin/destinations", {**form, "send": ["sr", "pdf"]})
    assert r.status_code == 303, r.text
    (row,) = list_destinations(web.sessions)
    assert (row.name, row.ae_title, row.host, row.port, row.send, row.tls, row.source) == (
        "pacs",
        "PACS",
        "pacs.local",
        104,
        ("sr", "pdf"),
        None,
        "web",
    )
    page = web.client.get("/admin").text
    assert "pacs.local" in page and "sr, pdf" in page
    assert 'action="/admin/destinations/pacs/echo"' in page

    tls = {"tls": "yes", "ca_file": "/etc/xrayd/ca.pem", "server_hostname": "pacs.example"}
    r = _post(web, "/admin/destinations", {**form, "name": "pacs-tls", "send": ["sr"], **tls})
    assert r.status_code == 303
    tls_row = next(d for d in list_destinations(web.sessions) if d.name == "pacs-tls")
    assert tls_row.tls == {"ca_file": "/etc/xrayd/ca.pem", "server_hostname": "pacs.example"}

    # invalid entries: a clear message and a 422 page, nothing stored
    for data, message in (
        ({**form, "name": "a/b", "send": ["sr"]}, "name"),
        ({**form, "name": "x", "port": "70000", "send": ["sr"]}, "port"),
        ({**form, "name": "x", "send": ["mp4"]}, "send"),
        ({**form, "name": "x", "send": ["sr"], "tls": "yes"}, "ca_file"),
        ({**form, "name": "x"}, "at least one object kind"),
    ):
        r = _post(web, "/admin/destinations", data)
        assert r.status_code == 422, (data, r.status_code)
        assert message in r.text and 'role="alert"' in r.text
    assert _post(web, "/admin/destinations", {**form, "send": ["sr"]}).status_code == 409
    assert len(list_destinations(web.sessions)) == 2

    assert _post(web, "/admin/destinations/pacs/remove").status_code == 303
    assert _post(web, "/admin/destinations/pacs/remove").status_code == 404
    assert [d.name for d in list_destinations(web.sessions)] == ["pacs-tls"]
    added = {e.object_id: e for e in _audit(web, "destination.added")}
    assert set(added) == {"pacs", "pacs-tls"} and added["pacs-tls"].detail["tls"] is True
    assert added["pacs"].actor == "web:admin" and added["pacs"].detail["send"] == ["sr", "pdf"]
    (removed,) = _audit(web, "destination.removed")
    assert (removed.actor, removed.object_id) == ("web:admin", "pacs")


def test_callers_and_destinations_through_the_api(web: Web) -> None:
    h = web.token("admin")
    c = web.client
    r = c.post("/api/v1/callers", json={"ae_title": "MR1", "host": "MRI.Local"}, headers=h)
    assert r.status_code == 201 and r.json() == {
        "ae_title": "MR1",
        "host": "mri.local",
        "source": "api",
    }
    assert (
        c.post("/api/v1/callers", json={"ae_title": "MR1", "host": "mri.local"}, headers=h)
    ).status_code == 409
    bad = c.post("/api/v1/callers", json={"ae_title": "bad\\title"}, headers=h)
    assert bad.status_code == 422 and "AE title" in bad.json()["detail"]
    page = c.get("/api/v1/callers", headers=h).json()
    assert page["total"] == 1 and {"items", "limit", "offset"} <= set(page)
    assert c.delete("/api/v1/callers?ae_title=MR1&host=mri.local", headers=h).status_code == 204
    assert c.delete("/api/v1/callers?ae_title=MR1&host=mri.local", headers=h).status_code == 404
    assert c.delete("/api/v1/callers", headers=h).status_code == 422  # ae_title is required

    body = {"name": "pacs", "ae_title": "PACS", "host": "10.1.2.3", "port": 11112}
    r = c.post("/api/v1/destinations", json=body, headers=h)
    assert r.status_code == 201
    assert r.json() == {**body, "send": ["sr", "sc", "gsps", "kos"], "tls": None, "source": "api"}
    assert c.post("/api/v1/destinations", json=body, headers=h).status_code == 409
    bad = c.post("/api/v1/destinations", json={**body, "name": "x", "port": 0}, headers=h)
    assert bad.status_code == 422 and "port" in bad.json()["detail"]
    with_tls = {**body, "name": "tls", "tls": {"ca_file": "/ca.pem"}}
    assert c.post("/api/v1/destinations", json=with_tls, headers=h).json()["tls"] == {
        "ca_file": "/ca.pem"
    }
    listed = c.get("/api/v1/destinations?limit=1&offset=1", headers=h).json()
    assert listed["total"] == 2 and [d["name"] for d in listed["items"]] == ["tls"]
    assert c.delete("/api/v1/destinations/tls", headers=h).status_code == 204
    assert c.delete("/api/v1/destinations/tls", headers=h).status_code == 404
    assert c.post("/api/v1/destinations/nope/echo", headers=h).status_code == 404

    # the door is in the actor: api:<admin> (the pages write web:<admin>, the CLI cli:<OS user>)
    actions = [(e.action, e.object_id, e.actor) for e in _audit_all(web)]
    assert ("caller.added", "MR1", "api:admin") in actions
    assert ("caller.removed", "MR1", "api:admin") in actions
    assert ("destination.added", "pacs", "api:admin") in actions
    assert ("destination.removed", "tls", "api:admin") in actions
    assert sum(1 for a in actions if a[0] == "caller.added") == 1  # the 409 was not audited


def _audit_all(web: Web) -> list[Any]:
    rows, _ = search_audit(web.sessions, limit=1000)
    return rows


def test_c_echo_against_a_real_scp_and_a_closed_port(
    web: Web, echo_scp: tuple[int, list[str]]
) -> None:
    port, callers = echo_scp
    for name, p in (("live", port), ("closed", _free_port())):
        add_destination(
            web.sessions,
            DestinationRow(name=name, ae_title="ECHOSCP", host="127.0.0.1", port=p, send=("sr",)),
        )
    web.login("admin")
    r = _post(web, "/admin/destinations/live/echo")
    assert r.status_code == 200
    assert 'id="echo-ok"' in r.text and "status 0x0000" in r.text
    assert callers == ["XRAYD"]  # the node's own AE title calls

    r = _post(web, "/admin/destinations/closed/echo")
    assert r.status_code == 200 and 'id="echo-failed"' in r.text
    assert "no association with ECHOSCP@127.0.0.1" in r.text

    h = web.token("admin")
    assert web.client.post("/api/v1/destinations/live/echo", headers=h).json() == {
        "ok": True,
        "status": 0,
        "detail": f"ECHOSCP@127.0.0.1:{port} answered the C-ECHO (status 0x0000)",
        "cause": "ok",
        "fix": None,
    }
    failed = web.client.post("/api/v1/destinations/closed/echo", headers=h).json()
    assert failed["ok"] is False and failed["status"] is None
    assert failed["detail"].startswith("no association with ECHOSCP@127.0.0.1")


def test_c_echo_with_unusable_tls_settings_says_why(web: Web) -> None:
    add_destination(
        web.sessions,
        DestinationRow(
            name="tls",
            ae_title="PACS",
            host="127.0.0.1",
            port=_free_port(),
            send=("sr",),
            tls={"ca_file": "/nonexistent/ca.pem"},
        ),
    )
    out = web.client.post("/api/v1/destinations/tls/echo", headers=web.token("admin")).json()
    assert out["ok"] is False and "TLS set-up failed" in out["detail"]


# -- outbox and jobs -----------------------------------------------------------------------------


def _dead_delivery(web: Web) -> int:
    """A delivery made dead through storage.outbox, as a permanent send failure leaves it."""
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


def test_outbox_lists_and_retries_a_dead_delivery(web: Web) -> None:
    delivery_id = _dead_delivery(web)
    woken: list[int] = []
    web.ctx.wake_delivery = lambda: woken.append(1)
    web.login("admin")
    page = web.client.get("/admin/outbox").text  # dead ones by default
    assert f'data-delivery-id="{delivery_id}"' in page
    assert "0x0122" in page and "SOP class not supported" in page and "Retry" in page
    sent = web.client.get("/admin/outbox?state=sent").text
    assert f'data-delivery-id="{delivery_id}"' not in sent

    r = _post(web, f"/admin/outbox/{delivery_id}/retry", page="/admin/outbox")
    assert r.status_code == 303 and "done=delivery_retried" in r.headers["location"]
    row = get_delivery(web.sessions, delivery_id)
    assert (row.state, row.attempts) == ("pending", 0) and woken == [1]
    again = _post(web, f"/admin/outbox/{delivery_id}/retry", page="/admin/outbox")
    assert again.status_code == 409 and "not dead" in again.text
    assert _post(web, "/admin/outbox/999/retry", page="/admin/outbox").status_code == 404
    r = _post(web, "/admin/outbox/retry-dead", page="/admin/outbox")
    assert "done=no_dead_deliveries" in r.headers["location"]
    (event,) = _audit(web, "delivery.retried")
    assert (event.actor, event.object_type, event.object_id) == (
        "web:admin",
        "delivery",
        str(delivery_id),
    )

    h = web.token("admin")
    listed = web.client.get("/api/v1/outbox?state=pending", headers=h).json()
    assert listed["total"] == 1 and listed["items"][0]["id"] == delivery_id
    assert listed["items"][0]["last_status"] == 0x0122
    assert web.client.post(f"/api/v1/outbox/{delivery_id}/retry", headers=h).status_code == 409
    assert web.client.post("/api/v1/outbox/999/retry", headers=h).json() == {
        "detail": "no delivery with id 999"
    }
    assert web.client.get("/api/v1/outbox?state=nope", headers=h).status_code == 422


def test_outbox_retry_through_the_api_and_retry_all(web: Web) -> None:
    delivery_id = _dead_delivery(web)
    h = web.token("admin")
    r = web.client.post(f"/api/v1/outbox/{delivery_id}/retry", headers=h)
    assert r.status_code == 200 and r.json()["state"] == "pending"
    assert web.client.post("/api/v1/outbox/retry-dead", headers=h).json() == {"retried": []}
    assert [e.detail for e in _audit(web, "delivery.retried")] == [{"all_dead": False}]


def _dead_job(web: Web) -> int:
    now = datetime.now(UTC)
    with web.sessions.begin() as session:
        study = Study(
            study_instance_uid="1.2.826.0.1.3680043.8.498.1",
            state="receiving",
            first_received_at=now,
            last_received_at=now,
            instance_count=1,
        )
        session.add(study)
    (job_id,) = promote_studies_now(
        web.sessions, ["1.2.826.0.1.3680043.8.498.1"], now, max_attempts=1
    )
    claimed = claim_job(web.sessions, "w1", now, 60)
    assert claimed is not None and claimed.job_id == job_id
    assert fail_job(web.sessions, job_id, now, "NotAnalysable: no pixel data") == "dead"
    return job_id


def test_dead_jobs_are_listed_with_their_reason_and_retried(web: Web) -> None:
    job_id = _dead_job(web)
    web.login("admin")
    page = web.client.get("/admin/jobs").text
    assert f'data-job-id="{job_id}"' in page and "NotAnalysable: no pixel data" in page
    assert "1.2.826.0.1.3680043.8.498.1" not in page  # internal ids only

    r = _post(web, f"/admin/jobs/{job_id}/retry", page="/admin/jobs")
    assert r.status_code == 303 and "done=job_retried" in r.headers["location"]
    (job,) = list_jobs(web.sessions)
    assert (job.state, job.attempts) == ("queued", 0)
    assert _post(web, f"/admin/jobs/{job_id}/retry", page="/admin/jobs").status_code == 409
    assert _post(web, "/admin/jobs/999/retry", page="/admin/jobs").status_code == 404
    (event,) = _audit(web, "job.retried")
    assert (event.actor, event.object_id) == ("web:admin", str(job_id))

    h = web.token("admin")
    listed = web.client.get("/api/v1/jobs?state=queued", headers=h).json()
    assert listed["total"] == 1 and listed["items"][0]["id"] == job_id
    assert "study_instance_uid" not in listed["items"][0]
    assert web.client.post("/api/v1/jobs/999/retry", headers=h).status_code == 404
    assert web.client.post(f"/api/v1/jobs/{job_id}/retry", headers=h).status_code == 409


def test_all_dead_jobs_retried_at_once(web: Web) -> None:
    job_id = _dead_job(web)
    web.login("admin")
    r = _post(web, "/admin/jobs/retry-dead", page="/admin/jobs")
    assert r.headers["location"] == "/admin/jobs?done=jobs_retried&n=1"
    assert "Dead jobs queued again. (1)" in web.client.get(r.headers["location"]).text
    assert [e.object_id for e in _audit(web, "job.retried")] == [str(job_id)]


# -- models --------------------------------------------------------------------------------------


def test_models_page_and_api_show_the_configured_bundle(web: Web) -> None:
    web.login("admin")
    page = web.client.get("/admin/models").text
    assert 'id="model-name">xrayd-phantom<' in page and 'id="model-version">1.0.0<' in page
    assert "AUC" in page and "0.994" in page and "0.991 \u2013 0.997" in page
    assert "sensitivity" in page and "specificity" in page
    assert "No model versions registered yet" in page

    out = web.client.get("/api/v1/models", headers=web.token("admin")).json()
    bundle = out["bundle"]
    # The test node is configured with the phantom bundle, not the shipped default.
    assert bundle["shipped"] is False and bundle["problems"] == []
    assert (bundle["name"], bundle["version"], bundle["arch"]) == (
        "xrayd-phantom",
        "1.0.0",
        "resnet18_half",
    )
    assert re.fullmatch(r"[0-9a-f]{64}", bundle["sha256"])
    auc = next(m for m in bundle["metrics"] if m["name"] == "AUC")
    assert auc["low"] < auc["value"] < auc["high"]
    assert (out["items"], out["total"], out["offset"]) == ([], 0, 0)


# -- audit ---------------------------------------------------------------------------------------


def test_audit_search_pages_and_csv_export(web: Web) -> None:
    long_ago = datetime(2020, 1, 2, 12, tzinfo=UTC)
    # hostile and unknown action names on purpose: the pages and the export must cope
    audit.record(
        web.sessions,
        actor='=HYPERLINK("http://x")',
        action=cast(Action, "caller_added"),
        object_type="caller",
        object_id="+X",
        at=long_ago,
    )
    audit.record(
        web.sessions,
        actor="admin",
        action=cast(Action, "@SUM(A1)"),
        object_type="user",
        object_id="-1",
        detail={"note": "=1+1"},
    )
    for n in range(60):
        audit.record(
            web.sessions,
            actor="bulk",
            action=cast(Action, "bulk_action"),
            object_type="thing",
            object_id=str(n),
            detail={"n": n},
        )
    web.login("admin")

    page = web.client.get("/admin/audit?actor=bulk").text
    assert "60 events" in page and "page 1 of 2" in page and "bulk_action" in page
    assert "page 2 of 2" in web.client.get("/admin/audit?actor=bulk&page=2").text
    one = web.client.get("/admin/audit?object_type=thing&object_id=7").text
    assert "1 event " in one
    dated = web.client.get("/admin/audit?from=2020-01-02&to=2020-01-02").text
    assert "1 event " in dated and "HYPERLINK" in dated
    assert "0 events" in web.client.get("/admin/audit?from=2020-01-03&to=2020-01-03").text

    r = web.client.get("/admin/audit.csv?actor=bulk")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert r.headers["content-disposition"].startswith('attachment; filename="xrayd-audit-')
    rows = list(csv.reader(io.StringIO(r.text)))
    assert rows[0] == ["id", "at", "actor", "action", "object_type", "object_id", "detail"]
    assert len(rows) == 61 and {row[2] for row in rows[1:]} == {"bulk"}
    assert rows[1][5] == "59"  # newest first, like the page

    everything = list(csv.reader(io.StringIO(web.client.get("/admin/audit.csv").text)))
    for row in everything[1:]:
        for cell in row:
            assert not cell.startswith(("=", "+", "-", "@")), row
    hyper = next(row for row in everything if "HYPERLINK" in row[2])
    assert hyper[2] == '\'=HYPERLINK("http://x")' and hyper[5] == "'+X"
    at_sum = next(row for row in everything if "SUM" in row[3])
    assert at_sum[3] == "'@SUM(A1)" and at_sum[5] == "'-1" and at_sum[6] == '{"note": "=1+1"}'
    exports = _audit(web, "audit.exported")
    assert len(exports) == 2 and exports[-1].detail["filters"] == {"actor": "bulk"}

    h = web.token("admin")
    api = web.client.get("/api/v1/audit?actor=bulk&limit=10&offset=5", headers=h).json()
    assert api["total"] == 60 and len(api["items"]) == 10 and api["items"][0]["object_id"] == "54"
    until = (long_ago + timedelta(hours=1)).isoformat()
    old = web.client.get("/api/v1/audit", params={"until": until}, headers=h).json()
    assert old["total"] == 1 and old["items"][0]["object_id"] == "+X"  # raw in JSON
    since = web.client.get("/api/v1/audit", params={"since": until, "actor": "x"}, headers=h)
    assert since.json()["total"] == 0
    naive = web.client.get("/api/v1/audit?since=2020-01-01T00:00:00", headers=h)
    assert naive.status_code == 422 and "time zone" in naive.json()["detail"]


# -- users ---------------------------------------------------------------------------------------


def test_users_added_disabled_enabled_and_tokens_revoked_through_the_page(web: Web) -> None:
    web.token("rad")  # an API token to revoke
    web.login("admin")
    page = web.client.get("/admin/users").text
    assert 'data-user="rad"' in page and 'data-token-id="1"' in page

    r = _post(
        web,
        "/admin/users",
        {"name": "rad3", "role": "radiologist", "password": "third-rad-pw-000"},
        page="/admin/users",
    )
    assert r.status_code == 303 and r.headers["location"] == "/admin/users?done=user_added"
    assert authenticate(web.sessions, "rad3", "third-rad-pw-000") is not None
    short = _post(
        web,
        "/admin/users",
        {"name": "rad4", "role": "radiologist", "password": "short"},
        "/admin/users",
    )
    assert short.status_code == 422 and "at least 12 characters" in short.text
    dup = _post(
        web,
        "/admin/users",
        {"name": "rad3", "role": "radiologist", "password": "third-rad-pw-000"},
        "/admin/users",
    )
    assert dup.status_code == 409 and "exists already" in dup.text
    bad_role = _post(
        web, "/admin/users", {"name": "x", "role": "root", "password": "p" * 12}, "/admin/users"
    )
    assert bad_role.status_code == 422 and "role must be one of" in bad_role.text
    assert [e.object_id for e in _audit(web, "user.added") if e.object_id == "rad3"] == ["rad3"]

    # a disabled radiologist can no longer log in; enabling lets them in again
    other = web.new_client()
    web.login("rad", other)
    assert _post(web, "/admin/users/rad/disable", page="/admin/users").status_code == 303
    assert other.get("/worklist").status_code == 401  # their session ended
    assert authenticate(web.sessions, "rad", PASSWORDS["rad"]) is None
    assert "disabled" in web.client.get("/admin/users").text
    assert _post(web, "/admin/users/rad/enable", page="/admin/users").status_code == 303
    assert authenticate(web.sessions, "rad", PASSWORDS["rad"]) is not None
    me = _post(web, "/admin/users/admin/disable", page="/admin/users")
    assert me.status_code == 409 and "your own account" in me.text
    assert _post(web, "/admin/users/nobody/disable", page="/admin/users").status_code == 404
    disabled = [(e.actor, e.object_id) for e in _audit(web, "user.disabled")]
    assert disabled == [("web:admin", "rad")]  # recorded once, by storage.users.set_disabled
    assert [(e.actor, e.object_id) for e in _audit(web, "user.enabled")] == [("web:admin", "rad")]

    (token,) = list_tokens(web.sessions)
    r = _post(web, f"/admin/tokens/{token.id}/revoke", page="/admin/users")
    assert r.status_code == 303
    assert list_tokens(web.sessions)[0].revoked_at is not None
    assert _post(web, f"/admin/tokens/{token.id}/revoke", page="/admin/users").status_code == 404
    assert [(e.actor, e.object_id) for e in _audit(web, "token.revoked")] == [
        ("web:admin", str(token.id))
    ]


def test_the_last_enabled_admin_cannot_be_disabled(web: Web) -> None:
    web.login("admin")
    _post(
        web,
        "/admin/users",
        {"name": "root2", "role": "admin", "password": "second-admin-pw-1"},
        page="/admin/users",
    )
    second = web.new_client()
    form = second.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert token is not None
    second.post(
        "/login",
        data={
            "username": "root2",
            "password": "second-admin-pw-1",
            "csrf_token": token.group(1),
        },
    )
    # root2 disables admin: allowed (root2 remains); then admin's session is gone
    csrf = web.csrf(second, page="/admin/users")
    r = second.post("/admin/users/admin/disable", data={"csrf_token": csrf}, follow_redirects=False)
    assert r.status_code == 303
    # root2 is now the last enabled admin and cannot disable themselves either way
    r = second.post("/admin/users/root2/disable", data={"csrf_token": csrf}, follow_redirects=False)
    assert r.status_code == 409


def test_users_api_lists_users_with_their_tokens(web: Web) -> None:
    h = web.token("admin")
    out = web.client.get("/api/v1/users", headers=h).json()
    assert out["total"] == 3 and {u["name"] for u in out["items"]} == {"admin", "rad", "rad2"}
    admin_user = next(u for u in out["items"] if u["name"] == "admin")
    assert admin_user["role"] == "admin" and len(admin_user["tokens"]) == 1
    assert "password_hash" not in admin_user and "token_sha256" not in admin_user["tokens"][0]


def test_admin_promotes_and_rolls_back_models(web: Web, monkeypatch: pytest.MonkeyPatch) -> None:
    from storage.model_versions import active_version, ensure_active, register_version

    # The versions here name no real bundle: skip the check of their files against the
    # registry (tested with real bundles in test_model_digest_web.py).
    monkeypatch.setattr("xrayd.runtime.served_model.verify_version", lambda row: None)

    ensure_active(web.sessions, name="m", version="1.0.0", sha256="a" * 64, path="/a", actor="t")
    with web.sessions.begin() as session:
        for version, state, verdict in (
            ("1.0.0+r1", "candidate", "passed"),
            ("1.0.0+r2", "rejected", "failed"),
        ):
            register_version(
                session,
                name="m",
                version=version,
                sha256=version.ljust(64, "0"),
                path=f"/{version}",
                state=state,
                actor="retrain",
                gate={"verdict": verdict},
            )
    changed: list[int] = []
    web.ctx.model_changed = lambda: changed.append(1)
    web.login("admin")
    page = web.client.get("/admin/models")
    assert page.status_code == 200 and "1.0.0+r2" in page.text and "Retraining runs" in page.text
    csrf = web.csrf(page="/admin/models")
    r = web.client.post("/admin/models/1.0.0+r2/promote", data={"csrf_token": csrf})
    assert r.status_code == 409 and "promotion gate" in r.text
    r = web.client.post("/admin/models/1.0.0+r1/promote", data={"csrf_token": csrf})
    assert r.status_code == 200 and "Model promoted" in r.text
    active = active_version(web.sessions)
    assert active is not None and active.version == "1.0.0+r1" and active.promoted_by == "web:admin"
    r = web.client.post("/admin/models/rollback", data={"csrf_token": csrf})
    assert r.status_code == 200 and "Rolled back" in r.text
    active = active_version(web.sessions)
    assert active is not None and active.version == "1.0.0" and changed == [1, 1]
    rad = web.login("rad", web.new_client())
    assert rad.post("/admin/models/rollback", data={"csrf_token": web.csrf(rad)}).status_code == 403
    # one audit row per change, by the admin who made it; the refused ones left none
    (promoted,) = _audit(web, "model.promoted")
    assert (promoted.actor, promoted.object_type, promoted.object_id) == (
        "web:admin",
        "model_version",
        "1.0.0+r1",
    )
    assert promoted.detail == {"previous": "1.0.0"}
    (rolled_back,) = _audit(web, "model.rolled_back")
    assert (rolled_back.actor, rolled_back.object_type, rolled_back.object_id) == (
        "web:admin",
        "model_version",
        "1.0.0",
    )
    assert rolled_back.detail == {"from": "1.0.0+r1"}
    assert promoted.at <= rolled_back.at
