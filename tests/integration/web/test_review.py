"""The radiologist's flow: worklist, study page, images, and reviews by form and API."""

from __future__ import annotations

import io
import json
import re
from datetime import UTC, datetime, timedelta
from html import unescape
from typing import Any

from PIL import Image
from sqlalchemy import select

from storage.audit import list_audit
from storage.reviews import list_overrides
from storage.schema import Result

from web_helpers import Web, seed_study


def _rows(html: str) -> list[int]:
    return [int(x) for x in re.findall(r'data-study-id="(\d+)"', html)]


def test_worklist_puts_flagged_studies_first_then_newest(web: Web) -> None:
    now = datetime.now(UTC)
    old_positive = seed_study(web.sessions, web.ctx.spool, received_at=now - timedelta(hours=5))
    new_negative = seed_study(
        web.sessions,
        web.ctx.spool,
        decision="absent",
        probability=0.05,
        count="0",
        received_at=now - timedelta(hours=1),
    )
    indeterminate = seed_study(
        web.sessions,
        web.ctx.spool,
        decision="indeterminate",
        probability=0.4,
        count="0",
        received_at=now - timedelta(hours=3),
        body_part="ankle",
    )
    web.login("rad")
    page = web.client.get("/worklist", params={"view": "all"})  # (default: test_worklist_live)
    assert _rows(page.text) == [indeterminate, old_positive, new_negative]
    assert "3 studies" in page.text and "not reviewed 3" in page.text
    r = web.client.get("/worklist", params={"view": "all", "decision": "absent"})
    assert _rows(r.text) == [new_negative]
    assert _rows(web.client.get("/worklist", params={"body_part": "ankle"}).text) == [indeterminate]
    day = (now - timedelta(hours=1)).strftime("%Y-%m-%d")
    r = web.client.get("/worklist", params={"view": "all", "from": day, "to": day})
    assert new_negative in _rows(r.text)
    bad = web.client.get("/worklist", params={"from": "23/11/2026"})
    assert bad.status_code == 422 and "YYYY-MM-DD" in bad.text
    api = web.client.get("/api/v1/studies", params={"limit": 2}).json()
    assert api["total"] == 3 and [s["id"] for s in api["items"]] == [indeterminate, old_positive]
    assert api["by_decision"] == {"present": 1, "absent": 1, "indeterminate": 1}
    page2 = web.client.get("/api/v1/studies", params={"limit": 2, "offset": 2}).json()
    assert [s["id"] for s in page2["items"]] == [new_negative]


def test_study_page_shows_findings_images_and_heatmap_and_is_audited(web: Web) -> None:
    study = seed_study(web.sessions, web.ctx.spool, images=2, hardware=True)
    web.login("rad")
    page = web.client.get(f"/studies/{study}")
    assert page.status_code == 200
    text = page.text
    assert "Doe, Jane" in text and "PAT-SECRET-42" in text  # patient shown on the page only
    assert "xrayd-phantom 1.0.0" in text and "hardware yes" in text
    images = re.findall(r'src="(/studies/\d+/images/\d+\.png)"', text)
    # the viewport (templates/_viewport.html) gets the heatmap and boxes as data attributes
    heatmaps = re.findall(r'data-heatmap-url="(/studies/\d+/heatmaps/\d+\.png)"', text)
    assert len(images) == 2 and len(heatmaps) == 2
    png = Image.open(io.BytesIO(web.client.get(images[0]).content))
    assert png.size == (160, 200) and png.mode == "L"
    windowed = web.client.get(images[0], params={"wc": 1000, "ww": 200}).content
    assert windowed != web.client.get(images[0]).content
    overlay = Image.open(io.BytesIO(web.client.get(heatmaps[0]).content))
    assert overlay.mode == "RGBA"
    alpha = overlay.getchannel("A")
    assert alpha.getextrema()[0] == 0 and alpha.getextrema()[1] > 100  # hot box, clear elsewhere
    boxes = [json.loads(unescape(b)) for b in re.findall(r"data-boxes='([^']*)'", text)]
    assert [len(b) for b in boxes] == [1, 1]  # one box per image
    assert web.client.get(f"/studies/{study}/images/999.png").status_code == 404
    assert web.client.get("/studies/999").status_code == 404
    viewed = [e for e in list_audit(web.sessions) if e.action == "study.viewed"]
    assert viewed and viewed[0].actor == "rad" and viewed[0].object_id == str(study)
    # Opening a study does not claim it (claiming is an explicit action: test_worklist_live).
    assert "not reviewed" in web.client.get(f"/studies/{study}").text
    actions = {e.action for e in list_audit(web.sessions)}
    assert not actions & {"study.claimed", "review.assigned"}
    web.login("rad2", web.new_client())


def test_disagree_by_form_stores_the_override_and_shows_it(web: Web) -> None:
    study = seed_study(web.sessions, web.ctx.spool, decision="present", count="2+")
    web.login("rad")
    csrf = web.csrf(page=f"/studies/{study}")
    before = datetime.now(UTC)
    r = web.client.post(
        f"/studies/{study}/review",
        data={
            "csrf_token": csrf,
            "verdict": "disagree",
            "fracture": "absent",
            "count": "0",
            "body_part": "wrist",
            "hardware": "no",
            "comment": "growth plate, not a fracture",
        },
    )
    after = datetime.now(UTC)
    assert r.status_code == 200 and "Review saved" in r.text
    assert "reviewed by rad" in r.text and "growth plate" in r.text
    [override], total = list_overrides(web.sessions, study_id=study)
    assert total == 1 and override.agree is False and override.user_name == "rad"
    assert override.created_at.utcoffset() is not None
    assert before <= override.created_at <= after
    assert override.radiologist_label == {
        "fracture": "absent",
        "count": "0",
        "body_part": "wrist",
        "hardware": False,
    }
    assert override.ai_label is not None and override.ai_label["decision"] == "present"
    assert override.ai_label["model"]["version"] == "1.0.0" and override.result_id is not None
    audit = next(e for e in list_audit(web.sessions) if e.action == "override.created")
    assert audit.actor == "rad" and audit.detail["agree"] is False
    listed = web.client.get("/worklist", params={"view": "all", "reviewed": "yes"}).text
    assert _rows(listed) == [study] and "reviewed by rad (disagree)" in listed


def test_review_validation_errors_are_clear(web: Web) -> None:
    study = seed_study(web.sessions, web.ctx.spool, decision="indeterminate", count="0")
    web.login("rad")
    headers = {"X-CSRF-Token": web.csrf()}
    r = web.client.post(
        "/api/v1/overrides", json={"study_id": study, "agree": True}, headers=headers
    )
    assert r.status_code == 422 and "indeterminate" in r.json()["detail"]
    r = web.client.post(
        "/api/v1/overrides", json={"study_id": study, "agree": False}, headers=headers
    )
    assert r.status_code == 422 and "corrected label" in r.json()["detail"]
    bad = {"fracture": "maybe", "count": "3", "body_part": "", "hardware": True}
    r = web.client.post(
        "/api/v1/overrides", json={"study_id": study, "agree": False, "label": bad}, headers=headers
    )
    assert r.status_code == 422
    fields = {tuple(e["loc"][-1:]) for e in r.json()["errors"]}
    assert {("fracture",), ("count",), ("body_part",)} <= fields
    label = {"fracture": "absent", "count": "1", "body_part": "wrist", "hardware": False}
    r = web.client.post(
        "/api/v1/overrides",
        json={"study_id": study, "agree": False, "label": label},
        headers=headers,
    )
    assert r.status_code == 422 and "count must be '0'" in r.json()["detail"]
    r = web.client.post("/api/v1/overrides", json={"study_id": 999, "agree": True}, headers=headers)
    assert r.status_code == 404
    r = web.client.post(
        f"/studies/{study}/review", data={"csrf_token": headers["X-CSRF-Token"], "verdict": "maybe"}
    )
    assert r.status_code == 422 and "verdict" in r.text
    assert list_overrides(web.sessions, study_id=study)[1] == 0


def test_override_round_trip_through_the_api(web: Web) -> None:
    study = seed_study(web.sessions, web.ctx.spool, decision="present", body_part="ankle")
    headers = web.token("rad")
    before = datetime.now(UTC)
    r = web.client.post(
        "/api/v1/overrides",
        json={"study_id": study, "agree": True, "comment": "clear distal fibula fracture"},
        headers=headers,
    )
    after = datetime.now(UTC)
    assert r.status_code == 201
    created = r.json()
    assert created["agree"] is True and created["radiologist_label"]["body_part"] == "ankle"
    assert created["user_name"] == "rad"
    when = datetime.fromisoformat(created["created_at"])
    assert when.utcoffset() is not None  # an aware time, not a local one left to guess
    assert before <= when <= after  # stored when the request was made
    label = {"fracture": "present", "count": "2+", "body_part": "ankle", "hardware": True}
    second = web.client.post(
        "/api/v1/overrides",
        json={"study_id": study, "agree": False, "label": label},
        headers=web.token("rad2"),
    ).json()
    listed = web.client.get("/api/v1/overrides", params={"study_id": study}, headers=headers).json()
    assert listed["total"] == 2 and [o["id"] for o in listed["items"]] == [
        second["id"],
        created["id"],
    ]
    assert datetime.fromisoformat(listed["items"][1]["created_at"]) == when
    assert when <= datetime.fromisoformat(second["created_at"])
    mine = web.client.get("/api/v1/overrides", params={"user": "rad"}, headers=headers).json()
    assert [o["id"] for o in mine["items"]] == [created["id"]]
    one = web.client.get(f"/api/v1/studies/{study}", headers=headers).json()
    assert one["reviewed_by"] == "rad2" and one["agree"] is False  # the newest review counts
    preds = web.client.get(f"/api/v1/studies/{study}/predictions", headers=headers).json()
    assert preds["decision"] == "present" and preds["images"][0]["body_part"] == "ankle"
    assert preds["model"]["version"] == "1.0.0"


def test_a_study_viewed_through_the_api_is_audited(web: Web) -> None:
    study = seed_study(web.sessions, web.ctx.spool)

    def viewed() -> list[tuple[str, str, str | None, dict[str, object]]]:
        events = sorted(
            (e for e in list_audit(web.sessions) if e.action == "study.viewed"),
            key=lambda e: e.id,
        )
        return [(e.actor, e.object_type, e.object_id, e.detail) for e in events]

    listed = web.client.get("/api/v1/studies", headers=web.token("rad"))
    assert listed.status_code == 200 and viewed() == []  # the worklist shows no one study
    one = web.client.get(f"/api/v1/studies/{study}", headers=web.token("rad"))
    assert one.status_code == 200 and one.json()["id"] == study
    assert viewed() == [("rad", "study", str(study), {"via": "api"})]
    preds = web.client.get(f"/api/v1/studies/{study}/predictions", headers=web.token("rad2"))
    assert preds.status_code == 200
    assert viewed() == [
        ("rad", "study", str(study), {"via": "api"}),
        ("rad2", "study", str(study), {"via": "api"}),
    ]
    for missing in ("/api/v1/studies/999", "/api/v1/studies/999/predictions"):
        assert web.client.get(missing, headers=web.token("rad")).status_code == 404
    assert len(viewed()) == 2  # nothing was shown, nothing is recorded


def test_openapi_document_lists_the_api(web: Web) -> None:
    doc = web.client.get("/api/v1/openapi.json", headers=web.token("rad")).json()
    paths = set(doc["paths"])
    assert {
        "/api/v1/studies",
        "/api/v1/studies/{study_id}",
        "/api/v1/overrides",
        "/api/v1/studies/{study_id}/predictions",
        "/api/v1/stats",
    } <= paths
    admin = {
        "/api/v1/callers": {"get", "post", "delete"},
        "/api/v1/destinations": {"get", "post"},
        "/api/v1/destinations/{name}": {"delete"},
        "/api/v1/destinations/{name}/echo": {"post"},
        "/api/v1/outbox": {"get"},
        "/api/v1/outbox/retry-dead": {"post"},
        "/api/v1/outbox/{delivery_id}/retry": {"post"},
        "/api/v1/jobs": {"get"},
        "/api/v1/jobs/{job_id}/retry": {"post"},
        "/api/v1/models": {"get"},
        "/api/v1/audit": {"get"},
        "/api/v1/users": {"get", "post"},
    }
    for path, methods in admin.items():
        assert path in paths, path
        assert set(doc["paths"][path]) == methods, (path, set(doc["paths"][path]))
        for method in methods:
            assert doc["paths"][path][method]["tags"] == ["admin"], (path, method)
    paged = ("callers", "destinations", "outbox", "jobs", "audit", "users")
    for path in (f"/api/v1/{name}" for name in paged):
        parameters = {p["name"] for p in doc["paths"][path]["get"]["parameters"]}
        assert {"limit", "offset"} <= parameters, path
    models = {p["name"] for p in doc["paths"]["/api/v1/models"]["get"]["parameters"]}
    assert models == {"limit", "offset"}
    assert not any(p.startswith(("/studies", "/admin", "/login")) for p in paths)  # pages hidden


# -- the verdict form (issue 19, "One-key verdicts") ---------------------------------------

JSON = {"Accept": "application/json"}


def _band(web: Web, study: int, low: str = "0.7932", high: str = "0.9388") -> None:
    """Give the study's analysis the decision parameters the analysis job records."""
    with web.sessions.begin() as session:
        result = session.scalars(
            select(Result).where(Result.study_id == study, Result.kind == "analysis")
        ).one()
        detail = dict(result.detail)
        detail["model"] = {
            **detail["model"],
            "parameters": {
                "threshold": "0.8847",
                "indeterminate_low": low,
                "indeterminate_high": high,
            },
        }
        result.detail = detail


def _review(web: Web, study: int, headers: dict[str, str] | None = None, **fields: str) -> Any:
    csrf = web.csrf(page=f"/studies/{study}")
    return web.client.post(
        f"/studies/{study}/review",
        data={"csrf_token": csrf, **fields},
        headers=headers or {},
        follow_redirects=False,
    )


def _errors(r: Any) -> dict[str, str]:
    assert r.status_code == 422, r.text
    return {e["field"]: e["message"] for e in r.json()["errors"]}


CORRECT = {"verdict": "disagree", "body_part": "wrist", "hardware": "no"}


def test_a_refused_review_answers_json_with_a_message_per_field(web: Web) -> None:
    study = seed_study(web.sessions, web.ctx.spool, decision="present", count="1")
    web.login("rad")
    absent_one = _errors(_review(web, study, JSON, **CORRECT, fracture="absent", count="1"))
    assert list(absent_one) == ["count"] and "'0' when no fracture" in absent_one["count"]
    present_zero = _errors(_review(web, study, JSON, **CORRECT, fracture="present", count="0"))
    assert list(present_zero) == ["count"] and "'1' or '2+'" in present_zero["count"]
    empty = _errors(_review(web, study, JSON, verdict="disagree", body_part=""))
    assert set(empty) == {"fracture", "count", "body_part", "hardware"}
    nothing = _errors(_review(web, study, JSON))
    assert list(nothing) == ["verdict"] and "Agree or Disagree" in nothing["verdict"]
    same = _errors(_review(web, study, JSON, **CORRECT, fracture="present", count="1"))
    assert same == {"label": "This is the AI's result — choose Agree, or change a field"}
    long = _errors(
        _review(web, study, JSON, **CORRECT, fracture="absent", count="0", comment="x" * 2001)
    )
    assert list(long) == ["comment"]
    assert list_overrides(web.sessions, study_id=study)[1] == 0  # nothing was stored
    # The same refusal of a disagreement that repeats the AI through the API (storage's rule).
    label = {"fracture": "present", "count": "1", "body_part": "wrist", "hardware": False}
    r = web.client.post(
        "/api/v1/overrides",
        json={"study_id": study, "agree": False, "label": label},
        headers=web.token("rad"),
    )
    assert r.status_code == 422 and "AI's result" in r.json()["detail"]
    saved = _review(web, study, JSON, **CORRECT, fracture="absent", count="0")
    assert saved.status_code == 200, saved.text
    body = saved.json()
    assert body["location"] == f"/studies/{study}?saved={body['override_id']}&sr={body['sr']}"
    [override], _ = list_overrides(web.sessions, study_id=study)
    assert override.agree is False and override.radiologist_label["fracture"] == "absent"


def test_without_script_a_refused_review_comes_back_on_the_study_page(web: Web) -> None:
    study = seed_study(web.sessions, web.ctx.spool, decision="present", count="2+")
    web.login("rad")
    r = _review(web, study, **CORRECT, fracture="absent", count="1", comment="keep me")
    assert r.status_code == 422 and "text/html" in r.headers["content-type"]
    html = r.text
    assert f"<h1>Study {study}</h1>" in html  # the study page, not the error page
    assert re.search(r'id="review-errors" role="alert"[^>]*>\s*<p>The review was not saved', html)
    assert re.search(
        r'id="field-count" role="radiogroup" aria-required="true"\s+'
        r'aria-invalid="true" aria-describedby="error-count"',
        html,
    )
    assert re.search(r'id="error-count">Count must be &#39;0&#39; when no fracture', html)
    assert 'id="error-fracture" hidden' in html  # only the field at fault
    assert re.search(r'name="fracture" value="absent" required checked', html)  # what was typed
    assert re.search(r'name="count" value="1" required checked', html)
    assert ">keep me</textarea>" in html
    assert '<details class="correction" id="correction" open>' in html
    assert list_overrides(web.sessions, study_id=study)[1] == 0


def test_an_indeterminate_study_is_explained_and_its_form_starts_empty(web: Web) -> None:
    study = seed_study(
        web.sessions, web.ctx.spool, decision="indeterminate", probability=0.85, count="1"
    )
    _band(web, study)
    web.login("rad")
    html = unescape(web.client.get(f"/studies/{study}").text)
    assert (
        "AI is unsure: p = 0.850 lies in this model's indeterminate band 0.79\u20130.94;"
        " please give your reading." in html
    )
    assert not re.search(r'name="(fracture|count)" value="[^"]+" required checked', html)
    assert re.search(r'name="hardware" value="no" required checked', html)  # not in doubt
    assert re.search(r'id="agree"[^>]*\s+disabled aria-describedby="agree-blocked"', html)
    assert re.search(r'id="agree-blocked">The AI is unsure \(indeterminate\)', html)
    assert '<details class="correction" id="correction" open>' in html
    refused = _errors(_review(web, study, JSON, verdict="agree"))
    assert list(refused) == ["verdict"] and "indeterminate" in refused["verdict"]
    r = _review(web, study, JSON, **CORRECT, fracture="present", count="1")
    assert r.status_code == 200, r.text
    [override], _ = list_overrides(web.sessions, study_id=study)
    assert override.agree is False and override.radiologist_label["count"] == "1"


def test_an_analysis_without_recorded_parameters_still_says_what_indeterminate_means(
    web: Web,
) -> None:
    study = seed_study(web.sessions, web.ctx.spool, decision="indeterminate", probability=0.8)
    web.login("rad")
    html = unescape(web.client.get(f"/studies/{study}").text)
    assert "AI is unsure: p = 0.800 lies in this model's indeterminate band; please give" in html


def test_agree_is_refused_when_the_ai_count_contradicts_its_finding(web: Web) -> None:
    study = seed_study(web.sessions, web.ctx.spool, decision="present", count="0")
    web.login("rad")
    html = web.client.get(f"/studies/{study}").text
    assert re.search(r'id="agree-blocked">The AI&#39;s count \(0\) contradicts', html)
    refused = _errors(_review(web, study, JSON, verdict="agree"))
    assert list(refused) == ["verdict"] and "contradicts" in refused["verdict"]
    saved = _review(web, study, JSON, **CORRECT, fracture="present", count="1")
    assert saved.status_code == 200, saved.text


def test_save_and_next_goes_to_the_next_study_needing_attention(web: Web) -> None:
    study = seed_study(web.sessions, web.ctx.spool, decision="present", count="1")
    other = seed_study(web.sessions, web.ctx.spool, decision="present", count="1")
    web.login("rad")
    r = _review(web, study, verdict="agree", next="1")
    assert r.status_code == 303 and r.headers["location"] == f"/worklist/next?from={study}"
    r = _review(web, other, JSON, **CORRECT, fracture="absent", count="0", next="1")
    assert r.status_code == 200 and r.json()["location"] == f"/worklist/next?from={other}"
    # Without script the "Save and next" button names next=1 in its formaction's query.
    html = web.client.get(f"/studies/{other}").text
    assert f'formaction="/studies/{other}/review?next=1"' in html
    csrf = web.csrf(page=f"/studies/{other}")
    r = web.client.post(
        f"/studies/{other}/review?next=1",
        data={"csrf_token": csrf, **CORRECT, "fracture": "present", "count": "2+"},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == f"/worklist/next?from={other}"
    assert list_overrides(web.sessions, study_id=other)[1] == 2


def test_after_saving_the_radiologist_label_leads(web: Web) -> None:
    study = seed_study(web.sessions, web.ctx.spool, decision="absent", count="0", probability=0.1)
    web.login("rad")
    before = web.client.get(f"/studies/{study}").text
    assert (
        '<p class="lead" id="verdict-lead"><span class="badge absent">AI: absent</span>' in before
    )
    assert "Radiologist:" not in before
    assert re.search(r'name="fracture" value="absent" required checked', before)  # AI's label
    assert '<details class="correction" id="correction">' in before  # closed until D
    r = _review(web, study, **CORRECT, fracture="present", count="2+")
    assert r.status_code == 303
    after = web.client.get(r.headers["location"]).text
    assert "Review saved." in after
    lead = after.index('id="verdict-lead"')
    assert after.index("Radiologist: fracture present, count 2+</strong> — reviewed by rad") > lead
    assert lead < after.index("AI said: <span") < after.index('class="study-layout"')
    head = after[after.index('<div class="study-head">') : after.index('class="study-layout"')]
    assert 'class="badge absent"' not in head  # the AI's badge no longer leads
    # The correction now starts from the newest review.
    assert re.search(r'name="count" value="2\+" required checked', after)


def test_the_panel_offers_a_claim_only_for_an_unclaimed_unreviewed_study(web: Web) -> None:
    study = seed_study(web.sessions, web.ctx.spool)
    web.login("rad")
    html = web.client.get(f"/studies/{study}").text
    assert f'action="/studies/{study}/claim"' in html and 'id="claim"' in html
    csrf = web.csrf(page=f"/studies/{study}")
    claimed = web.client.post(
        f"/studies/{study}/claim", data={"csrf_token": csrf, "next": f"/studies/{study}"}
    )
    assert claimed.status_code == 200 and 'id="claim"' not in claimed.text
    assert "Claimed by you." in claimed.text
    other = web.login("rad2", web.new_client())
    assert "Assigned to rad." in other.get(f"/studies/{study}").text
