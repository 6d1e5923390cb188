"""The live worklist (issue 19): "needs my attention" by default, the patient columns read
from the stored headers (never logged), explicit claiming, "next", and the rows' poll answering
304 until something changes."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from storage.audit import list_audit
from storage.claims import claim
from storage.reviews import ReviewLabel, create_override
from storage.schema import Instance
from xrayd.web.worklist_pages import waiting

from web_helpers import Web, seed_study

ABSENT = ReviewLabel("absent", "0", "wrist", False)


def _rows(html: str) -> list[int]:
    return [int(x) for x in re.findall(r'data-study-id="(\d+)"', html)]


def _ago(hours: float) -> datetime:
    return datetime.now(UTC) - timedelta(hours=hours)


def _seed(web: Web, decision: str, hours: float, **kwargs: object) -> int:
    probability = {"present": 0.95, "indeterminate": 0.85, "absent": 0.05}[decision]
    count = "1" if decision == "present" else "0"
    return seed_study(
        web.sessions,
        web.ctx.spool,
        decision=decision,
        probability=probability,
        count=count,
        received_at=_ago(hours),
        **kwargs,  # type: ignore[arg-type]
    )


def test_default_view_is_what_needs_my_attention_oldest_first(web: Web) -> None:
    mine = _seed(web, "indeterminate", 6)
    theirs = _seed(web, "present", 5)
    unclaimed_old = _seed(web, "present", 4)
    reviewed = _seed(web, "present", 3)
    absent = _seed(web, "absent", 2)
    unclaimed_new = _seed(web, "indeterminate", 1, body_part="ankle")
    claim(web.sessions, mine, "rad")
    claim(web.sessions, theirs, "rad2")
    create_override(web.sessions, reviewed, "rad2", agree=True, label=None, comment=None)
    web.login("rad")

    page = web.client.get("/worklist")
    assert page.status_code == 200
    # flagged, not reviewed, unclaimed or mine; oldest waiting first
    assert _rows(page.text) == [mine, unclaimed_old, unclaimed_new]
    assert 'id="attention-count">3<' in page.text
    assert "claimed by you" in page.text and "Release" in page.text
    # the same for the other radiologist, with their own claim instead of mine
    other = web.login("rad2", web.new_client())
    assert _rows(other.get("/worklist").text) == [theirs, unclaimed_old, unclaimed_new]

    # All: not reviewed before reviewed (a reviewed flagged study does not stay on top),
    # flagged before absent, newest first
    everything = web.client.get("/worklist", params={"view": "all"})
    assert _rows(everything.text) == [unclaimed_new, unclaimed_old, theirs, mine, absent, reviewed]
    assert "claimed by rad2" in everything.text and "reviewed by rad2 (agree)" in everything.text
    assert "6 studies in this view" in everything.text and "not reviewed 5" in everything.text
    api = web.client.get("/api/v1/studies", params={"limit": 10}).json()
    assert [s["id"] for s in api["items"]] == _rows(everything.text)  # the API's order too
    mine_api = web.client.get("/api/v1/studies", params={"needs_attention": "true"}).json()
    assert [s["id"] for s in mine_api["items"]] == [mine, unclaimed_old, unclaimed_new]
    assert mine_api["total"] == 3 and mine_api["items"][0]["assigned_to"] == "rad"

    # the filters apply in either view
    assert _rows(web.client.get("/worklist", params={"body_part": "ankle"}).text) == [unclaimed_new]
    assert _rows(web.client.get("/worklist", params={"decision": "present"}).text) == [
        unclaimed_old
    ]
    assert _rows(
        web.client.get("/worklist", params={"view": "all", "decision": "absent"}).text
    ) == [absent]
    reviewed_only = web.client.get("/worklist", params={"view": "all", "reviewed": "yes"})
    assert _rows(reviewed_only.text) == [reviewed]
    day = _ago(2).strftime("%Y-%m-%d")
    dated = web.client.get("/worklist", params={"view": "all", "from": day, "to": day})
    assert absent in _rows(dated.text)
    bad = web.client.get("/worklist", params={"from": "23/11/2026"})
    assert bad.status_code == 422 and "YYYY-MM-DD" in bad.text
    assert web.client.get("/worklist", params={"view": "mine"}).status_code == 422

    # nothing left: the attention view says so
    for study in (mine, unclaimed_old, unclaimed_new):
        create_override(web.sessions, study, "rad", agree=False, label=ABSENT, comment=None)
    empty = web.client.get("/worklist")
    assert _rows(empty.text) == [] and "Nothing needs your attention." in empty.text


def test_patient_columns_come_from_the_headers_and_are_never_logged(
    web: Web, caplog: pytest.LogCaptureFixture
) -> None:
    study = _seed(web, "present", 1, patient_name="Doe^Jane", patient_id="PAT-SECRET-42")
    web.login("rad")
    caplog.set_level(logging.DEBUG)
    page = web.client.get("/worklist")
    row = re.search(rf'<tr[^>]*data-study-id="{study}".*?</tr>', page.text, re.S)
    assert row is not None
    cells = row.group(0)
    assert "Doe, Jane" in cells and "PAT-SECRET-42" in cells
    assert "ACC1" in cells and "HAND" in cells  # accession, body part examined
    received = re.search(r'<time datetime="([^"]+)" data-local>([^<]+)</time>', cells)
    assert received is not None and received.group(1).endswith("Z")
    assert received.group(2).endswith(" UTC")  # the readable fallback without JavaScript
    assert "60 min" in cells or "59 min" in cells or "1 h 00 min" in cells
    # Read once: the header is cached by its (immutable) store key, so the page still shows
    # the patient when the file is gone (the rows on the page are never read twice).
    (web.ctx.spool.absolute(f"instances/{study}/0.dcm")).unlink()
    again = web.client.get("/worklist/rows").text
    assert "Doe, Jane" in again and "PAT-SECRET-42" in again
    # an unreadable image: the row stays, named by its study id, and the log has ids only
    lost = _seed(web, "present", 2, patient_name="Roe^Richard", patient_id="MRN-LOST-7")
    (web.ctx.spool.absolute(f"instances/{lost}/0.dcm")).unlink()
    shown = web.client.get("/worklist").text
    assert f">Study {lost}</a>" in shown and "MRN-LOST-7" not in shown
    assert any(getattr(r, "study_id", None) == lost for r in caplog.records)
    # purged by retention (the row stays, its files go): named by its id, nothing to warn about
    purged = _seed(web, "present", 2.5)
    with web.sessions.begin() as session:
        session.execute(
            update(Instance).where(Instance.study_id == purged).values(purged_at=_ago(0))
        )
    (web.ctx.spool.absolute(f"instances/{purged}/0.dcm")).unlink()
    assert f">Study {purged}</a>" in web.client.get("/worklist").text
    assert not any(getattr(r, "study_id", None) == purged for r in caplog.records)
    for record in caplog.records:
        text = f"{record.getMessage()} {record.__dict__}"
        for secret in ("Doe", "Jane", "PAT-SECRET-42", "Roe^Richard", "MRN-LOST-7", "ACC1"):
            assert secret not in text, (secret, record.name, record.getMessage())


def test_claim_and_release_are_explicit_audited_and_exclusive(web: Web) -> None:
    study = _seed(web, "present", 1)
    web.login("rad")
    # opening a study no longer claims it
    assert web.client.get(f"/studies/{study}").status_code == 200
    assert not [e for e in list_audit(web.sessions) if e.action.startswith("study.claim")]
    assert "Claim" in web.client.get("/worklist").text

    csrf = web.csrf()
    refused = web.client.post(f"/studies/{study}/claim", data={}, follow_redirects=False)
    assert refused.status_code == 403  # no CSRF token
    r = web.client.post(
        f"/studies/{study}/claim",
        data={"csrf_token": csrf, "next": "/worklist?view=all"},
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/worklist?view=all"
    # again: already mine, nothing changes and nothing more is audited
    r = web.client.post(
        f"/studies/{study}/claim", data={"csrf_token": csrf}, follow_redirects=False
    )
    assert r.status_code == 303 and r.headers["location"] == "/worklist"
    claimed = [e for e in list_audit(web.sessions) if e.action == "study.claimed"]
    assert [(e.actor, e.object_type, e.object_id) for e in claimed] == [
        ("rad", "study", str(study))
    ]
    # a foreign next is not followed
    r = web.client.post(
        f"/studies/{study}/claim",
        data={"csrf_token": csrf, "next": "https://evil.example/"},
        follow_redirects=False,
    )
    assert r.headers["location"] == "/worklist"

    other = web.login("rad2", web.new_client())
    other_csrf = web.csrf(other)
    taken = other.post(f"/studies/{study}/claim", data={"csrf_token": other_csrf})
    assert taken.status_code == 409
    assert f"Study {study} is claimed by rad" in taken.text and "release" in taken.text
    assert (
        other.post(f"/studies/{study}/release", data={"csrf_token": other_csrf}).status_code == 409
    )
    assert study not in _rows(other.get("/worklist").text)  # not in their attention view

    r = web.client.post(
        f"/studies/{study}/release", data={"csrf_token": csrf}, follow_redirects=False
    )
    assert r.status_code == 303
    released = [e for e in list_audit(web.sessions) if e.action == "study.released"]
    assert [(e.actor, e.object_id) for e in released] == [("rad", str(study))]
    assert study in _rows(other.get("/worklist").text)  # free again
    r = other.post(f"/studies/{study}/claim", data={"csrf_token": other_csrf})
    assert r.status_code == 200 and "claimed by you" in r.text  # followed to the worklist
    missing = web.client.post("/studies/99999/claim", data={"csrf_token": csrf})
    assert missing.status_code == 404


def test_next_walks_the_attention_order_and_wraps(web: Web) -> None:
    first = _seed(web, "present", 4)
    _seed(web, "absent", 3)  # never needs attention
    second = _seed(web, "indeterminate", 2)
    theirs = _seed(web, "present", 1.5)
    third = _seed(web, "present", 1)
    claim(web.sessions, theirs, "rad2")
    web.login("rad")

    def next_of(start: int | None) -> str:
        params = {} if start is None else {"from": str(start)}
        r = web.client.get("/worklist/next", params=params, follow_redirects=False)
        assert r.status_code == 303
        return str(r.headers["location"])

    assert next_of(None) == f"/studies/{first}"
    assert next_of(first) == f"/studies/{second}"
    assert next_of(second) == f"/studies/{third}"  # skips the one claimed by rad2
    assert next_of(theirs) == f"/studies/{third}"  # from a study not in my view: its place
    assert next_of(third) == f"/studies/{first}"  # wraps round
    # just reviewed: the study left the list, the next one after its place comes
    create_override(web.sessions, second, "rad", agree=False, label=ABSENT, comment=None)
    assert next_of(second) == f"/studies/{third}"
    for study in (first, third):
        create_override(web.sessions, study, "rad", agree=False, label=ABSENT, comment=None)
    assert next_of(third) == "/worklist?none=1"
    page = web.client.get("/worklist?none=1")
    assert "Nothing else needs your attention" in page.text


def test_rows_answer_304_until_the_worklist_changes(web: Web) -> None:
    old = _seed(web, "present", 2)
    web.login("rad")
    page = web.client.get("/worklist")
    etag = re.search(r'id="worklist-rows" data-etag="([^"]+)"', page.text)
    assert etag is not None
    tag = etag.group(1).replace("&#34;", '"').replace("&quot;", '"')
    assert 'data-rows-url="/worklist/rows"' in page.text
    unchanged = web.client.get("/worklist/rows", headers={"If-None-Match": tag})
    assert unchanged.status_code == 304 and unchanged.headers["etag"] == tag
    assert unchanged.content == b""

    new = _seed(web, "indeterminate", 0.1)  # a new analysis arrives
    changed = web.client.get("/worklist/rows", headers={"If-None-Match": tag})
    assert changed.status_code == 200 and changed.headers["etag"] != tag
    assert _rows(changed.text) == [old, new]
    assert "<html" not in changed.text and 'id="worklist-rows"' in changed.text
    tag = changed.headers["etag"]
    assert web.client.get("/worklist/rows", headers={"If-None-Match": tag}).status_code == 304
    # a claim is a change too (audited); so is another query or another user
    claim(web.sessions, new, "rad2")
    claimed = web.client.get("/worklist/rows", headers={"If-None-Match": tag})
    assert claimed.status_code == 200 and _rows(claimed.text) == [old]
    tag = claimed.headers["etag"]
    other_query = web.client.get("/worklist/rows?view=all", headers={"If-None-Match": tag})
    assert other_query.status_code == 200 and _rows(other_query.text) == [new, old]
    other = web.login("rad2", web.new_client())
    assert other.get("/worklist/rows", headers={"If-None-Match": tag}).status_code == 200
    # the poll needs a login like the page
    assert web.new_client().get("/worklist/rows").status_code == 401


def test_waiting_times_read_like_a_clock() -> None:
    now = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
    assert waiting(now - timedelta(seconds=30), now) == "0 min"
    assert waiting(now - timedelta(minutes=12), now) == "12 min"
    assert waiting(now - timedelta(hours=3, minutes=5), now) == "3 h 05 min"
    assert waiting(now - timedelta(days=2, hours=4), now) == "2 d 4 h"
    assert waiting(now + timedelta(minutes=5), now) == "0 min"  # a clock ahead: never negative


def test_a_reviewed_row_and_the_study_page_lead_with_the_radiologists_reading(web: Web) -> None:
    overruled = _seed(web, "present", 2, patient_name="Doe^Jane^Q", patient_id="PAT-7")
    agreed = _seed(web, "present", 1)
    create_override(web.sessions, overruled, "rad", agree=False, label=ABSENT, comment=None)
    create_override(web.sessions, agreed, "rad", agree=True, label=None, comment=None)
    web.login("rad")
    page = web.client.get("/worklist", params={"view": "all"}).text
    rows = dict(
        zip(
            _rows(page),
            re.findall(r'<td class="ai">(.*?)</td>', page, flags=re.S),
            strict=True,
        )
    )
    # the radiologist's reading leads (its colour), the AI's answer follows in plain text
    assert rows[overruled].startswith('<span class="badge absent"')
    assert "radiologist: absent" in rows[overruled] and "AI said present" in rows[overruled]
    assert rows[agreed].startswith('<span class="badge present"')
    assert "radiologist: present" in rows[agreed]
    # the study page writes the name and date as people do, the arrival as a local-time <time>
    study = web.client.get(f"/studies/{overruled}").text
    assert "Doe, Jane Q · PAT-7" in study and "Doe^Jane" not in study
    assert re.search(r"\d{4}-\d{2}-\d{2}</dd>", study), "study date not as YYYY-MM-DD"
    assert re.search(r'<time datetime="[0-9T:-]+Z" data-local>', study)
