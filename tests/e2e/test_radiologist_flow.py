"""A radiologist's night-shift flow in Chromium, driven by the keyboard (issue 19, "How it is
checked"), at 1440x900 and 1920x1080: log in, the worklist opens on "needs my attention" (two
flagged studies, the absent one not listed), keyboard to the first flagged study, window/level
by dragging and zoom at the AI box with the mouse (the box stays under the pointer), ``R``
resets, ``D`` corrects the label (absent, count 0 follows), "Save and next" lands on the
indeterminate study (its band explained, its form empty), back on the worklist a new flagged
study appears without a reload, ``A`` agrees with it, and the "All studies" view shows both
reviews. The keys and clicks each verdict cost, and the screenshots, are written to
``test-artifacts/ui/flow-<size>.json``. No console errors. Every wait is on page state.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from browser_helpers import (
    EXPECT_MS,
    REPO,
    Keys,
    artifacts,
    chromium,
    collect_errors,
    served_web,
    wait_for_viewport,
)
from integration.web.web_helpers import seed_study
from test_viewport import _large_images

from storage.opened import Storage
from storage.reviews import list_overrides

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

USER, PASSWORD = "rad", "radiologist-pw-456"
SIZES = [(1440, 900), (1920, 1080)]
ROW = 'tr[data-study-id="{}"]'
OPEN_ROW = ROW + ' a[data-focus="open"]'


@dataclass(frozen=True)
class Site:
    base: str
    storage: Storage

    def seed(self, hours_ago: float, **kwargs: Any) -> int:
        """An analysed study as the analysis job leaves it, with a 1024x820 image."""
        study = seed_study(
            self.storage.sessions,
            self.storage.spool,
            received_at=datetime.now(UTC) - timedelta(hours=hours_ago),
            **kwargs,
        )
        _large_images(self.storage, study)
        return study


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    with served_web(tmp_path / "data", {USER: ("radiologist", PASSWORD)}) as (base, storage):
        yield Site(base, storage)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


def _centre(rect: dict[str, float]) -> tuple[float, float]:
    return (rect["left"] + rect["right"]) / 2, (rect["top"] + rect["bottom"]) / 2


@pytest.mark.parametrize(("width", "height"), SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_the_night_shift_flow_by_keyboard(
    site: Site, browser: Any, width: int, height: int
) -> None:
    from playwright.sync_api import expect

    size = f"{width}x{height}"
    out = artifacts()
    shots: dict[str, str] = {}

    def screenshot(name: str) -> None:
        path = out / f"flow-{size}-{name}.png"
        page.screenshot(path=str(path))
        shots[name] = str(path.relative_to(REPO) if path.is_relative_to(REPO) else path)

    present = site.seed(3, decision="present", probability=0.97)
    unsure = site.seed(2, decision="indeterminate", probability=0.85)
    absent = site.seed(1, decision="absent", probability=0.05, count="0")

    context = browser.new_context(viewport={"width": width, "height": height})
    context.set_default_timeout(EXPECT_MS)
    page = context.new_page()
    errors = collect_errors(page)
    keys = Keys(page)
    clicks: Counter[str] = Counter()
    try:
        # 1. Log in (the user name field has the focus); the worklist needs my attention.
        page.goto(f"{site.base}/login")
        expect(page.locator("form.login input[name=username]")).to_be_focused()
        page.keyboard.type(USER)
        page.keyboard.press("Tab")
        page.keyboard.type(PASSWORD)
        page.keyboard.press("Enter")
        expect(page).to_have_url(f"{site.base}/worklist")
        expect(page.locator("nav.views a[aria-current=page]")).to_contain_text("Needs my attention")
        rows = page.locator("table.worklist tbody tr[data-study-id]")
        expect(rows).to_have_count(2)
        assert [r.get_attribute("data-study-id") for r in rows.all()] == [
            str(present),
            str(unsure),
        ]
        expect(page.locator(ROW.format(absent))).to_have_count(0)
        screenshot("1-worklist")

        # 2. N opens the first (oldest) flagged study. A review needs no claim: none is made.
        keys.press("n", "open first study")
        expect(page).to_have_url(f"{site.base}/studies/{present}")
        wait_for_viewport(page)
        assert page.evaluate("() => window.xraydViewer.failed") is None

        # ? lists every key of the page, the viewport's too; Esc hides the list.
        keys.press("?", "help")
        help_panel = page.locator("#key-help")
        expect(help_panel).to_be_visible()
        for text in ("Agree with the AI", "Disagree", "AI boxes", "heatmap", "Reset", "Invert"):
            expect(help_panel).to_contain_text(text)
        expect(help_panel.locator("kbd")).to_contain_text(
            ["A", "D", "Enter", "N", "?", "B", "H", "R", "I"]
        )
        keys.press("Escape", "help")
        expect(help_panel).to_be_hidden()

        # 3. Drag: the window changes. Wheel at the AI box: it stays under the pointer. R resets.
        original = page.evaluate("() => window.xraydViewer.voi(0)")
        image = page.evaluate("() => window.xraydViewer.imageRect(0)")
        x, y = _centre(image)
        page.mouse.move(x, y)
        page.mouse.down()
        page.mouse.move(x + 120, y + 60, steps=8)
        page.mouse.up()
        page.wait_for_function(
            "([lo, hi]) => { const v = window.xraydViewer.voi(0);"
            " return v.lower !== lo || v.upper !== hi; }",
            arg=[original["lower"], original["upper"]],
        )
        [box] = page.evaluate("() => window.xraydViewer.boxes(0)")
        bx, by = _centre(box)
        page.mouse.move(bx, by)
        notches = 3
        for _ in range(notches):
            zoom = page.evaluate("() => window.xraydViewer.zoom(0)")
            page.mouse.wheel(0, -100)
            page.wait_for_function("(z) => window.xraydViewer.zoom(0) > z + 0.01", arg=zoom)
        [zoomed] = page.evaluate("() => window.xraydViewer.boxes(0)")
        zx, zy = _centre(zoomed)
        assert abs(zx - bx) < 2 and abs(zy - by) < 2, ((bx, by), zoomed)
        assert zoomed["right"] - zoomed["left"] > (box["right"] - box["left"]) * 1.1
        screenshot("2-study-zoomed")
        # keys act right after the mouse was on the image (no click elsewhere first)
        keys.press("r", "image")
        page.wait_for_function(
            "([lo, hi]) => { const v = window.xraydViewer.voi(0);"
            " return v.lower === lo && v.upper === hi && !v.invert"
            " && Math.abs(window.xraydViewer.zoom(0) - 1) < 1e-6; }",
            arg=[original["lower"], original["upper"]],
        )
        reset = page.evaluate("() => window.xraydViewer.imageRect(0)")
        assert all(abs(reset[k] - image[k]) < 1 for k in image), (reset, image)
        screenshot("3-study-reset")

        # 4. D, absent (count 0 follows), Shift+Enter saves and opens the next: the indeterminate
        #    study.
        keys.press("d", "correct")
        expect(page.locator("#correction")).to_have_attribute("open", "")
        expect(page.locator('input[name="fracture"][value="present"]')).to_be_focused()
        keys.press("ArrowDown", "correct")
        expect(page.locator('input[name="fracture"][value="absent"]')).to_be_checked()
        expect(page.locator('input[name="count"][value="0"]')).to_be_checked()
        keys.press("Shift+Enter", "correct")
        expect(page).to_have_url(f"{site.base}/studies/{unsure}")
        [saved], _ = list_overrides(site.storage.sessions, study_id=present)
        assert saved.agree is False and saved.radiologist_label["fracture"] == "absent"
        assert saved.radiologist_label["count"] == "0"
        wait_for_viewport(page)
        expect(page.locator("#unsure")).to_contain_text("AI is unsure: p = 0.850")
        expect(page.locator("#unsure")).to_contain_text("neither flags nor clears")
        expect(page.locator("#agree")).to_be_disabled()
        expect(page.locator("#correction")).to_have_attribute("open", "")
        expect(page.locator('input[name="fracture"]:checked')).to_have_count(0)
        expect(page.locator('input[name="count"]:checked')).to_have_count(0)
        screenshot("4-indeterminate")

        # 5. Back on the worklist by keyboard: the reviewed study has left "needs my
        #    attention"; a new flagged study appears in the same document, without a reload.
        keys.tab_to('a[href="/worklist"]', "back to worklist")
        keys.press("Enter", "back to worklist")
        expect(page).to_have_url(f"{site.base}/worklist")
        expect(page.locator(ROW.format(unsure))).to_have_count(1)
        expect(page.locator(ROW.format(present))).to_have_count(0)
        page.evaluate("() => { window.xraydMarker = 'same document'; }")
        # poll often (the test's knob, as in test_worklist_live.py); the server's pace is 5 s
        page.locator("#worklist-live").evaluate("(el) => { el.dataset.pollMs = '250'; }")
        arrived = site.seed(0.1, decision="present", probability=0.96)
        expect(page.locator(ROW.format(arrived))).to_have_count(1)
        expect(page.locator("#live-status")).to_have_text("1 new study")
        expect(page.locator("#attention-count")).to_have_text("2")
        assert page.evaluate("() => window.xraydMarker") == "same document"
        expect(page.locator(ROW.format(present))).to_have_count(0)
        screenshot("5-worklist-new-study")

        # The new study, agreed with by one key.
        keys.tab_to(OPEN_ROW.format(arrived), "open new study")
        keys.press("Enter", "open new study")
        expect(page).to_have_url(f"{site.base}/studies/{arrived}")
        wait_for_viewport(page)
        keys.press("a", "agree")
        expect(page).to_have_url(re.compile(rf"/studies/{arrived}\?saved=\d+"))
        expect(page.locator("#saved")).to_contain_text("Review saved")
        [agreed], _ = list_overrides(site.storage.sessions, study_id=arrived)
        assert agreed.agree is True

        # "All studies" shows both reviews (the worklist's review column).
        keys.tab_to('a[href="/worklist"]', "back to worklist")
        keys.press("Enter", "back to worklist")
        expect(page).to_have_url(f"{site.base}/worklist")
        keys.tab_to('nav.views a[href*="view=all"]', "all studies")
        keys.press("Enter", "all studies")
        expect(page.locator("nav.views a[aria-current=page]")).to_contain_text("All studies")
        expect(page.locator(ROW.format(present) + " td.review-state")).to_contain_text(
            f"reviewed by {USER} (disagree)"
        )
        expect(page.locator(ROW.format(arrived) + " td.review-state")).to_contain_text(
            f"reviewed by {USER} (agree)"
        )
        screenshot("6-worklist-all")
    finally:
        context.close()

    # 6. What each verdict cost: keys and clicks (the mouse was used only on the image).
    counts = keys.counts
    report = {
        "size": size,
        "agree": {
            "keys": counts["agree"],
            "clicks": clicks["agree"],
            "sequence": keys.sequence["agree"],
        },
        "correct": {
            "keys": counts["correct"],
            "clicks": clicks["correct"],
            "sequence": keys.sequence["correct"],
            "note": "D, ArrowDown (absent; count 0 follows), Shift+Enter (save and next)",
        },
        "navigation_keys": {
            step: counts[step]
            for step in ("open first study", "back to worklist", "open new study", "all studies")
        },
        "image": {
            "drags": 1,
            "wheel_notches": notches,
            "keys": counts["image"],
            "clicks": clicks["image"],
            "note": "R resets, pressed right after the wheel (the image does not keep the keys)",
        },
        "screenshots": shots,
    }
    (out / f"flow-{size}.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    assert counts["agree"] == 1 and clicks["agree"] == clicks["correct"] == 0
    assert errors == [], errors


def test_keys_act_right_after_the_mouse_was_on_the_image(site: Site, browser: Any) -> None:
    from playwright.sync_api import expect

    study = site.seed(1, decision="present", probability=0.97)
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    context.set_default_timeout(EXPECT_MS)
    page = context.new_page()
    try:
        page.goto(f"{site.base}/login")
        expect(page.locator("form.login input[name=username]")).to_be_focused()
        page.keyboard.type(USER)
        page.keyboard.press("Tab")
        page.keyboard.type(PASSWORD)
        page.keyboard.press("Enter")
        expect(page).to_have_url(f"{site.base}/worklist")
        page.goto(f"{site.base}/studies/{study}")
        wait_for_viewport(page)
        original = page.evaluate("() => window.xraydViewer.voi(0)")
        x, y = _centre(page.evaluate("() => window.xraydViewer.imageRect(0)"))
        page.mouse.move(x, y)
        page.mouse.down()
        page.mouse.move(x + 120, y + 60, steps=8)
        page.mouse.up()
        page.wait_for_function(
            "(lo) => window.xraydViewer.voi(0).upper !== lo", arg=original["upper"]
        )
        # Both keys act in their keydown handlers, which have run when press() returns.
        page.keyboard.press("r")
        assert page.evaluate("() => window.xraydViewer.voi(0)") == original, "R did not reset"
        page.keyboard.press("d")
        assert page.evaluate("() => document.getElementById('correction').open"), "D: nothing"
        # and Tab leaves the image (no keyboard trap)
        page.mouse.click(x, y)
        page.keyboard.press("Tab")
        assert not page.evaluate("() => !!document.activeElement.closest('figure.vp')"), (
            "Tab stayed on the image"
        )
    finally:
        context.close()
