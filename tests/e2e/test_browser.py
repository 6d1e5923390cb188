"""The radiologist's flow in a real browser (Debian's chromium, driven by Playwright) on a real
node: a study arrives over DICOM and is analysed by the demo model, then a radiologist logs in,
finds it on the worklist, looks at the radiograph in the viewport (heatmap and box toggles,
zoom), disagrees
with the AI and saves the correction; the override and its audit event end up in the
database."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_helpers import chromium
from pydicom.uid import generate_uid

from models.synthetic import generate_case, to_dicom
from storage import jobs
from storage.audit import list_audit
from storage.reviews import list_overrides
from storage.users import add_user
from xrayd.runtime.node import Node, open_storage, seed_registry
from xrayd.web.auth import COOKIE
from xrayd.web.context import WebContext
from xrayd.web.server import WebServer
from xrayd.workers.analysis import CompletionTimer, Worker
from xrayd.workers.base import Wakeup

from helpers import make_settings
from node_helpers import store_and_wait_for_release

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

USER = "dr_ray"
PASSWORD = "correct-horse-battery"  # 12+ characters
REPO = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EXPECT_MS = 30_000  # generous for a 2-core runner; expect() returns as soon as it holds


def _artifacts_dir() -> Path:
    path = Path(os.environ.get("XRAYD_TEST_ARTIFACTS") or REPO / "test-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    """A node with the real StudyAnalyser (committed demo model), listening on a free port."""
    settings = make_settings(
        tmp_path / "data",
        "",
        study={"quiet_seconds": 0, "release_ends_wait": True},
        # Plain http on 127.0.0.1 with the default [web] cookie_secure = true: Chromium counts
        # loopback origins as potentially trustworthy and keeps (and sends back) the Secure
        # session cookie over http there; the test checks the cookie it got is Secure.
        web={"host": "127.0.0.1", "port": 0},
    )
    storage = open_storage(settings, create_if_empty=True, require_current=True)
    try:
        n = Node(settings, storage)
        seed_registry(settings, storage.sessions)
        n.scp.start()
        try:
            yield n
        finally:
            n.scp.stop(timeout=5)
    finally:
        storage.engine.dispose()


@pytest.fixture
def web(node: Node) -> Iterator[WebServer]:
    ctx = WebContext(
        settings=node.settings, sessions=node.storage.sessions, spool=node.storage.spool
    )
    server = WebServer(ctx)
    server.start()
    try:
        yield server
    finally:
        server.stop(timeout=10)


@pytest.fixture
def page() -> Iterator[Any]:
    """A fresh Chromium page; browser and Playwright are closed even when the test fails."""
    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.set_default_timeout(EXPECT_MS)
        try:
            yield context.new_page()
        finally:
            context.close()


def _receive_and_analyse(node: Node) -> str:
    """Send one synthetic radiograph with a fracture over DICOM and run the analysis job."""
    study_uid = str(generate_uid())
    view = to_dicom(
        generate_case(30, 384, fracture=True),
        study_uid=study_uid,
        patient_id="SYNTH-B",
        instance_number=1,
    )
    # the release queues the study: wait until the node has handled it, not only sent it
    assert store_and_wait_for_release(node, [view]) == [0]
    stop = threading.Event()
    sessions = node.storage.sessions
    clock = node.sink.clock
    timer = CompletionTimer(
        sessions, node.settings.study, node.settings.jobs, clock, stop, Wakeup()
    )
    worker = Worker(0, sessions, node.analyser, node.settings.jobs, clock, stop, Wakeup())
    timer.tick()
    assert worker.run_once()
    [job] = jobs.list_jobs(sessions, "done")
    assert job.study_id is not None
    return study_uid


def _viewport_ready(page: Any) -> None:
    """Wait (Playwright polls; no sleeps) until the cornerstone viewport drew every image."""
    page.wait_for_function(
        "() => window.xraydViewer && (window.xraydViewer.ready || window.xraydViewer.failed)"
    )
    assert page.evaluate("() => window.xraydViewer.failed") is None
    page.wait_for_function(
        "() => Array.from({length: window.xraydViewer.count}, (_, i) => i)"
        ".every(i => window.xraydViewer.loaded(i))"
    )


def test_radiologist_reviews_a_study_in_the_browser(node: Node, web: WebServer, page: Any) -> None:
    from playwright.sync_api import expect

    _receive_and_analyse(node)
    add_user(node.storage.sessions, USER, "radiologist", PASSWORD)
    base = f"http://127.0.0.1:{web.port}"

    # Not logged in: the worklist answers 401 with the login form.
    response = page.goto(f"{base}/worklist")
    assert response is not None and response.status == 401
    login = page.locator("form.login")
    expect(login).to_be_visible()
    login.locator("input[name=username]").fill(USER)
    login.locator("input[name=password]").fill(PASSWORD)
    login.locator("button[type=submit]").click()

    # The worklist, with the analysed study: the Secure session cookie (the default) works.
    expect(page).to_have_url(f"{base}/worklist", timeout=EXPECT_MS)
    assert node.settings.web.cookie_secure is True
    [session] = [c for c in page.context.cookies(base) if c["name"] == COOKIE]
    assert session["secure"] is True and session["httpOnly"] is True, session
    assert session["sameSite"] == "Strict", session
    rows = page.locator("table.worklist tr[data-study-id]")
    expect(rows).to_have_count(1, timeout=EXPECT_MS)
    study_id = rows.first.get_attribute("data-study-id")
    assert study_id and study_id.isdigit()
    expect(rows.first.locator("td.review-state")).to_contain_text("not reviewed")
    rows.first.locator("a").click()

    # The study page: the radiograph drawn by the viewport from the node's own DICOM object;
    # the heatmap starts hidden and its checkbox shows it over the image.
    expect(page).to_have_url(f"{base}/studies/{study_id}", timeout=EXPECT_MS)
    expect(page.locator(".vp-element canvas")).to_have_count(1)
    _viewport_ready(page)
    size = page.evaluate("() => window.xraydViewer.imageSize(0)")
    assert size["columns"] > 0 and size["rows"] > 0, size
    image = page.evaluate("() => window.xraydViewer.imageRect(0)")
    heatmap = page.locator("img.vp-heatmap")
    expect(heatmap).to_be_hidden()
    page.locator("#show-heatmap").check()
    expect(heatmap).to_be_visible()
    drawn = heatmap.bounding_box()
    assert drawn is not None and abs(drawn["x"] - image["left"]) < 2, (drawn, image)
    page.locator("#show-heatmap").uncheck()
    expect(heatmap).to_be_hidden()
    expect(page.locator("#review-state")).to_contain_text("not reviewed")

    # The AI's boxes: drawn over the radiograph, hidden and shown by their own checkbox.
    boxes = page.locator(".vp-element svg rect")
    count = page.evaluate("() => window.xraydViewer.boxes(0).length")
    assert count >= 1, "the demo model found no region to box on a fracture case"
    expect(boxes).to_have_count(count)
    page.locator("#show-boxes").uncheck()
    expect(boxes).to_have_count(0)
    page.locator("#show-boxes").check()
    expect(boxes).to_have_count(count)

    # Zoom: the named buttons step the view's zoom, the boxes follow it; Reset restores it.
    before = page.evaluate("() => window.xraydViewer.boxes(0)[0]")
    page.get_by_role("button", name="Zoom in").click()
    page.wait_for_function("() => window.xraydViewer.zoom(0) > 1.2")
    after = page.evaluate("() => window.xraydViewer.boxes(0)[0]")
    assert after["right"] - after["left"] > (before["right"] - before["left"]) * 1.2
    page.get_by_role("button", name="Zoom out").click()
    page.get_by_role("button", name="Zoom out").click()
    page.wait_for_function("() => window.xraydViewer.zoom(0) < 0.9")
    page.get_by_role("button", name="Reset view").click()
    page.wait_for_function("() => Math.abs(window.xraydViewer.zoom(0) - 1) < 1e-6")
    assert page.evaluate("() => window.xraydViewer.imageRect(0)") == image

    # Disagree with the AI and correct it.
    form = page.locator("#review-form")
    page.locator("#disagree").click()
    form.locator("input[name=fracture][value=absent]").check()
    form.locator("input[name=count][value='0']").check()
    form.locator("select[name=body_part]").select_option("wrist")
    form.locator("input[name=hardware][value=no]").check()
    form.locator("textarea[name=comment]").fill("Nutrient canal, not a fracture line.")
    page.locator("#save-review").click()

    expect(page).to_have_url(re.compile(rf"/studies/{study_id}\?saved=\d+"), timeout=EXPECT_MS)
    expect(page.locator("#saved")).to_contain_text("Review saved")
    state = page.locator("#review-state")
    expect(state).to_contain_text(f"reviewed by {USER}")
    expect(state).to_contain_text("disagree")
    expect(page.locator("ul.history")).to_contain_text("Nutrient canal, not a fracture line.")

    # The screenshot artifact of the study page after the review.
    _viewport_ready(page)
    shot = _artifacts_dir() / "study-page.png"
    shot.unlink(missing_ok=True)
    page.screenshot(path=str(shot), full_page=True)
    data = shot.read_bytes()
    assert data[:8] == PNG_MAGIC, "the screenshot is not a PNG"
    assert 20_000 < len(data) < 30_000_000, f"implausible screenshot size: {len(data)} bytes"

    # Back on the worklist, filtered to reviewed studies.
    page.goto(f"{base}/worklist?view=all&reviewed=yes")  # (default: needs my attention)
    row = page.locator(f"table.worklist tr[data-study-id='{study_id}']")
    expect(row).to_have_count(1)
    expect(row.locator("td.review-state")).to_contain_text(f"reviewed by {USER}")
    expect(row.locator("td.review-state")).to_contain_text("disagree")

    # What the database holds.
    sessions = node.storage.sessions
    overrides, total = list_overrides(sessions, study_id=int(study_id))
    assert total == 1
    [override] = overrides
    assert override.user_name == USER and override.agree is False
    assert override.radiologist_label["fracture"] == "absent"
    assert override.radiologist_label["count"] == "0"
    assert override.radiologist_label["body_part"] == "wrist"
    assert override.comment == "Nutrient canal, not a fracture line."
    events = [e for e in list_audit(sessions, limit=500) if e.action == "override.created"]
    assert len(events) == 1 and events[0].actor == USER, events
