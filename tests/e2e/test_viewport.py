"""The study page's cornerstone3D viewport in Chromium (issue 19, "A real viewport"): a
1024-pixel radiograph fits at 1440x900, dragging changes the window, the wheel zooms at the
pointer (the AI box under it stays under it), presets and Reset, pan, the box toggle (also by
key, never while typing), the heatmap off by default beside a visible legend, no box or heatmap
for an "absent" result, two views side by side; no console errors.

The state is read from the viewport itself through the page's ``window.xraydViewer`` hook;
every wait is on that state or the DOM (Playwright polls), never a sleep.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from browser_helpers import chromium, served_web
from integration.web.web_helpers import seed_study
from pydicom import dcmread
from sqlalchemy import select

from dicom_node.overlay_style import LEGEND, box_style
from storage.opened import Storage
from storage.schema import Result

from bombs import pixel_bomb
from dicom_factory import make_radiograph, save

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

USER, PASSWORD = "rad", "radiologist-pw-456"
EXPECT_MS = 30_000  # generous for a 2-core runner; waits return as soon as they hold
ROWS, COLS = 1024, 820
BOX = [300.0, 200.0, 420.0, 340.0]  # top, left, bottom, right (image pixels)
REPO = Path(__file__).resolve().parents[2]


def _screenshot(page: Any, name: str) -> None:
    """Kept as a CI artifact (test-artifacts/ui/, or under XRAYD_TEST_ARTIFACTS)."""
    root = Path(os.environ.get("XRAYD_TEST_ARTIFACTS") or REPO / "test-artifacts")
    (root / "ui").mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(root / "ui" / f"viewport-{name}.png"))


@dataclass(frozen=True)
class Site:
    base: str
    storage: Storage


def _large_images(storage: Storage, study: int, images: int = 1) -> None:
    """Replace the seeded 200x160 images by 1024x820 ones (same UIDs), box and heatmap kept."""
    for n in range(images):
        path = storage.spool.absolute(f"instances/{study}/{n}.dcm")
        old = dcmread(path)
        save(
            make_radiograph(
                rows=ROWS,
                cols=COLS,
                study_uid=old.StudyInstanceUID,
                series_uid=old.SeriesInstanceUID,
                sop_uid=old.SOPInstanceUID,
                seed=n,
            ),
            path,
        )
    with storage.sessions.begin() as session:
        analysis = session.scalars(
            select(Result).where(Result.study_id == study, Result.kind == "analysis")
        ).one()
        detail = dict(analysis.detail)
        detail["images"] = [
            {**p, "boxes": [BOX] if p["decision"] != "absent" else []} for p in detail["images"]
        ]
        analysis.detail = detail


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    with served_web(tmp_path / "data", {USER: ("radiologist", PASSWORD)}) as (base, storage):
        yield Site(base, storage)


@pytest.fixture
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


class Page:
    """A logged-in page that records console errors."""

    def __init__(self, browser: Any, site: Site, width: int, height: int) -> None:
        context = browser.new_context(viewport={"width": width, "height": height})
        context.set_default_timeout(EXPECT_MS)
        self.page = context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        self.page.on("console", self._console)
        self.site = site
        self.page.goto(f"{site.base}/login")
        self.page.locator("form.login input[name=username]").fill(USER)
        self.page.locator("form.login input[name=password]").fill(PASSWORD)
        self.page.locator("form.login button[type=submit]").click()
        self.page.wait_for_url(f"{site.base}/worklist")

    def _console(self, message: Any) -> None:
        if message.type == "error":
            self.errors.append(f"console: {message.text} at {message.location}")

    def open(self, study: int) -> Any:
        self.page.goto(f"{self.site.base}/studies/{study}")
        self.page.wait_for_function(
            "() => window.xraydViewer && (window.xraydViewer.ready || window.xraydViewer.failed)"
        )
        assert self.page.evaluate("() => window.xraydViewer.failed") is None
        count = self.page.evaluate("() => window.xraydViewer.count")
        for i in range(count):
            self.page.wait_for_function(f"() => window.xraydViewer.loaded({i})")
        return self.page

    def js(self, expression: str) -> Any:
        return self.page.evaluate(expression)


def _centre(rect: dict[str, float]) -> tuple[float, float]:
    return (rect["left"] + rect["right"]) / 2, (rect["top"] + rect["bottom"]) / 2


def _within(inner: dict[str, float], outer: dict[str, float], slack: float = 1.0) -> bool:
    return (
        inner["left"] >= outer["left"] - slack
        and inner["top"] >= outer["top"] - slack
        and inner["right"] <= outer["right"] + slack
        and inner["bottom"] <= outer["bottom"] + slack
    )


def _drawn_boxes(page: Any) -> int:
    """Rectangles cornerstone drew in the annotation layer (hidden annotations are not)."""
    return int(page.evaluate("() => document.querySelectorAll('.vp-element svg rect').length"))


def test_the_viewport_fits_windows_zooms_at_the_pointer_and_toggles(
    site: Site, browser: Any
) -> None:
    from playwright.sync_api import expect

    study = seed_study(site.storage.sessions, site.storage.spool, decision="present")
    _large_images(site.storage, study)
    p = Page(browser, site, 1440, 900)
    page = p.open(study)

    # The whole 1024-pixel image is visible, fitted to its viewport, without page scrolling.
    assert p.js("() => window.xraydViewer.imageSize(0)") == {"columns": COLS, "rows": ROWS}
    image = p.js("() => window.xraydViewer.imageRect(0)")
    element = p.js("() => document.querySelector('.vp-element').getBoundingClientRect().toJSON()")
    window = {"left": 0, "top": 0, "right": 1440, "bottom": 900}
    assert _within(image, element) and _within(image, window), (image, element)
    fitted = (image["bottom"] - image["top"], image["right"] - image["left"])
    assert abs(fitted[0] - (element["height"] - 4)) < 3 or abs(fitted[1] - element["width"]) < 5
    assert p.js("() => document.documentElement.scrollHeight") <= 900
    _screenshot(page, "present-1440x900")

    # The AI box: drawn (locked annotation) in the "present" style, where the model put it.
    assert _drawn_boxes(page) == 1
    style = box_style("present")
    assert style is not None
    stroke = page.locator(".vp-element svg rect").first.get_attribute("stroke")
    assert stroke is not None and stroke.lower() == style.hex
    [box] = p.js("() => window.xraydViewer.boxes(0)")
    scale = (image["right"] - image["left"]) / COLS
    assert abs(box["left"] - (image["left"] + BOX[1] * scale)) < 2, (box, image)
    assert abs(box["top"] - (image["top"] + BOX[0] * scale)) < 2, (box, image)

    # Heatmap off by default, the legend visible; H shows it over the image, H hides it.
    heatmap = page.locator("img.vp-heatmap")
    expect(heatmap).to_be_hidden()
    legend = page.locator(".vp-legend")
    expect(legend).to_be_visible()
    for line in LEGEND:
        expect(legend).to_contain_text(line)
    page.locator("body").press("h")
    expect(heatmap).to_be_visible()
    page.wait_for_function("() => document.querySelector('img.vp-heatmap').complete")
    drawn = heatmap.bounding_box()
    assert drawn is not None
    assert abs(drawn["x"] - image["left"]) < 2 and abs(drawn["width"] - fitted[1]) < 2
    page.locator("body").press("h")
    expect(heatmap).to_be_hidden()

    # Dragging with the primary button changes the window.
    original = p.js("() => window.xraydViewer.voi(0)")
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
    dragged = p.js("() => window.xraydViewer.voi(0)")
    assert dragged != original

    # The wheel zooms at the pointer: the box under the pointer stays under it, and grows.
    bx, by = _centre(box)
    page.mouse.move(bx, by)
    for _ in range(3):  # each notch zooms a few per cent
        zoom = p.js("() => window.xraydViewer.zoom(0)")
        page.mouse.wheel(0, -100)
        page.wait_for_function("(z) => window.xraydViewer.zoom(0) > z + 0.01", arg=zoom)
    [zoomed] = p.js("() => window.xraydViewer.boxes(0)")
    zx, zy = _centre(zoomed)
    assert abs(zx - bx) < 2 and abs(zy - by) < 2, ((bx, by), zoomed)
    assert zoomed["right"] - zoomed["left"] > (box["right"] - box["left"]) * 1.1
    svg_box = page.locator(".vp-element svg rect").first.bounding_box()  # what is drawn
    assert svg_box is not None
    assert abs(svg_box["x"] + svg_box["width"] / 2 - bx) < 3, (svg_box, bx)

    # Shift+drag pans: the image moves with the pointer, the window stays.
    before = p.js("() => window.xraydViewer.imageRect(0)")
    page.keyboard.down("Shift")
    page.mouse.move(bx, by)
    page.mouse.down()
    page.mouse.move(bx + 50, by + 30, steps=5)
    page.mouse.up()
    page.keyboard.up("Shift")
    page.wait_for_function(
        "(left) => Math.abs(window.xraydViewer.imageRect(0).left - left) > 20",
        arg=before["left"],
    )
    assert p.js("() => window.xraydViewer.voi(0)") == dragged

    # A preset moves the window; Reset gives back the fit and the image's own window.
    page.get_by_role("button", name="Bone").click()
    page.wait_for_function("(lo) => window.xraydViewer.voi(0).lower !== lo", arg=dragged["lower"])
    page.get_by_role("button", name="Invert").click()
    page.wait_for_function("() => window.xraydViewer.voi(0).invert")
    page.get_by_role("button", name="Reset view").click()
    page.wait_for_function(
        "([lo, hi]) => { const v = window.xraydViewer.voi(0);"
        " return v.lower === lo && v.upper === hi && !v.invert"
        " && Math.abs(window.xraydViewer.zoom(0) - 1) < 1e-6; }",
        arg=[original["lower"], original["upper"]],
    )
    reset = p.js("() => window.xraydViewer.imageRect(0)")
    assert all(abs(reset[k] - image[k]) < 1 for k in image), (reset, image)

    # Boxes: B hides and shows them, the checkbox follows; no key while typing in a field.
    page.locator("body").press("b")
    page.wait_for_function("() => !window.xraydViewer.boxesShown")
    expect(page.locator("#show-boxes")).not_to_be_checked()
    page.wait_for_function("() => document.querySelectorAll('.vp-element svg rect').length === 0")
    page.locator("#show-boxes").check()
    page.wait_for_function("() => window.xraydViewer.boxesShown")
    page.wait_for_function("() => document.querySelectorAll('.vp-element svg rect').length === 1")
    comment = page.locator("textarea").first
    comment.focus()
    comment.press("b")
    comment.press("h")
    expect(comment).to_have_value("bh")
    assert p.js("() => window.xraydViewer.boxesShown && !window.xraydViewer.heatmapShown")

    assert p.errors == []


def test_an_indeterminate_box_is_dashed_amber(site: Site, browser: Any) -> None:
    study = seed_study(site.storage.sessions, site.storage.spool, decision="indeterminate")
    _large_images(site.storage, study)
    p = Page(browser, site, 1440, 900)
    page = p.open(study)
    style = box_style("indeterminate")
    assert style is not None and style.dashed
    rect = page.locator(".vp-element svg rect").first
    stroke = rect.get_attribute("stroke")
    assert stroke is not None and stroke.lower() == style.hex
    assert rect.get_attribute("stroke-dasharray")
    assert p.errors == []


def test_an_absent_result_gets_no_box_and_no_heatmap(site: Site, browser: Any) -> None:
    from playwright.sync_api import expect

    study = seed_study(
        site.storage.sessions, site.storage.spool, decision="absent", probability=0.1
    )
    _large_images(site.storage, study)
    p = Page(browser, site, 1440, 900)
    page = p.open(study)
    assert p.js("() => window.xraydViewer.boxes(0)") == []
    assert _drawn_boxes(page) == 0
    expect(page.locator("img.vp-heatmap")).to_have_count(0)
    expect(page.locator("#show-heatmap")).to_be_disabled()
    expect(page.locator("#show-boxes")).to_be_disabled()
    expect(page.locator(".vp-legend")).to_be_visible()
    page.locator("body").press("h")
    expect(page.locator("img.vp-heatmap")).to_have_count(0)
    assert p.errors == []


def test_two_views_sit_side_by_side_on_a_wide_screen(site: Site, browser: Any) -> None:
    study = seed_study(site.storage.sessions, site.storage.spool, decision="present", images=2)
    _large_images(site.storage, study, images=2)
    p = Page(browser, site, 1920, 1080)
    p.open(study)
    rects = p.js(
        "() => Array.from(document.querySelectorAll('.vp-element'))"
        ".map(e => e.getBoundingClientRect().toJSON())"
    )
    assert len(rects) == 2
    assert abs(rects[0]["top"] - rects[1]["top"]) < 1 and rects[1]["left"] > rects[0]["right"]
    _screenshot(p.page, "two-views-1920x1080")
    used = rects[1]["right"] - rects[0]["left"]
    assert used > 0.6 * 1920, rects  # the views use the width beside the verdict panel
    window = {"left": 0, "top": 0, "right": 1920, "bottom": 1080}
    for i in range(2):
        image = p.js(f"() => window.xraydViewer.imageRect({i})")
        assert _within(image, window), image
        assert len(p.js(f"() => window.xraydViewer.boxes({i})")) == 1
    assert p.errors == []


def test_an_image_the_node_refuses_says_so_in_its_place(site: Site, browser: Any) -> None:
    from playwright.sync_api import expect

    study = seed_study(site.storage.sessions, site.storage.spool, decision="present")
    path = site.storage.spool.absolute(f"instances/{study}/0.dcm")
    old = dcmread(path)
    bomb = pixel_bomb(
        65535,
        65535,
        study_uid=str(old.StudyInstanceUID),
        series_uid=str(old.SeriesInstanceUID),
        sop_uid=str(old.SOPInstanceUID),
    )
    save(bomb, path)
    p = Page(browser, site, 1440, 900)
    page = p.page
    page.goto(f"{site.base}/studies/{study}")
    page.wait_for_function("() => window.xraydViewer && window.xraydViewer.ready")
    expect(page.locator("figure.vp .vp-error")).to_be_visible()
    expect(page.locator("figure.vp .vp-error")).to_contain_text("cannot be shown")
    assert not p.js("() => window.xraydViewer.loaded(0)")
    # the refused object is the only error: an HTTP 422 for the DICOM, nothing thrown
    assert [e for e in p.errors if "status of 422" not in e] == [], p.errors
