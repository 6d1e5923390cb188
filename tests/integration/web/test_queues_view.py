"""The work queue as the admin sees it: ``GET /api/v1/queues`` and the queue table of the
jobs page list every queue (analysis, delivery, retrain) with its jobs by state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from storage.jobs import claim_job, fail_job, promote_studies_now
from storage.schema import Study

from web_helpers import Web

UID = "1.2.826.0.1.3680043.8.498.77"


def _jobs(web: Web) -> datetime:
    """One dead and one queued analysis job; returns when the queued one fell due."""
    now = datetime.now(UTC) - timedelta(seconds=120)
    with web.sessions.begin() as session:
        for n in (1, 2):
            session.add(
                Study(
                    study_instance_uid=f"{UID}.{n}",
                    state="receiving",
                    first_received_at=now,
                    last_received_at=now,
                    instance_count=1,
                )
            )
    first, _second = promote_studies_now(
        web.sessions, [f"{UID}.1", f"{UID}.2"], now, max_attempts=1
    )
    claimed = claim_job(web.sessions, "w1", now, 60)
    assert claimed is not None and claimed.job_id == first
    assert fail_job(web.sessions, first, now, "NotAnalysable: no pixel data") == "dead"
    return now


def test_api_lists_every_queue_by_state(web: Web) -> None:
    _jobs(web)
    body = web.client.get("/api/v1/queues", headers=web.token("admin")).json()
    by_name = {q["name"]: q for q in body["items"]}
    assert list(by_name) == ["analysis", "delivery", "retrain"]
    assert by_name["analysis"]["states"] == {"dead": 1, "queued": 1}
    assert by_name["analysis"]["oldest_waiting_seconds"] >= 120
    assert by_name["delivery"] == {"name": "delivery", "states": {}, "oldest_waiting_seconds": None}
    assert web.client.get("/api/v1/queues").status_code == 401


def test_jobs_page_shows_the_queue_table(web: Web) -> None:
    _jobs(web)
    web.login("admin")
    page = web.client.get("/admin/jobs?state=all").text
    row = page[page.index('<tr data-queue="analysis">') :]
    row = row[: row.index("</tr>")]
    cells = [c.split("</td>")[0] for c in row.split("<td>")[1:]]
    assert cells == ["1", "0", "0", "1", "0"]  # queued, running, done, dead, cancelled
    assert '<tr data-queue="retrain">' in page
