"""xrayd's TID 1500 SR in the OHIF viewer (the pinned npm ``@ohif/app`` dist, see tests/ohif.py),
served with a same-origin proxy to Orthanc's DICOMweb plugin and driven by Playwright with
Debian's chromium: the radiologist opens the SR, OHIF loads it as measurements, its panel lists
each finding with its comment, and each box is drawn where it belongs on its source image.

Cases: one box; two boxes on one image; an image without a box beside one with a box (no
measurement references it); a study where no image has a box (each image's result on its whole
area). Each for the AI SR and for the radiologist-verified SR that supersedes it (both in the
PACS, the verified one is opened). Screenshots and OHIF's console warnings go to
``test-artifacts/ohif/``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from browser_helpers import chromium
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from dicom_node.findings import Algorithm, Box, ImageFinding, RadiologistReview, StudyFindings
from dicom_node.sr import (
    SERIES_DESCRIPTION,
    VERIFIED_SERIES_DESCRIPTION,
    build_sr,
    shown_boxes,
    sr_bytes,
)

from dicom_factory import DX, make_radiograph
from helpers import need
from ohif import OhifServer, dist_dir
from orthanc import Orthanc, running_orthanc

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]
EXPECT_MS = 30_000  # generous for a 2-core runner; every wait returns as soon as it holds
ROWS, COLS = 320, 256  # not square: a swapped row/column shows
#: Geometry tolerances: image pixels (SR -> OHIF's annotation), CSS pixels (annotation -> SVG).
IMAGE_TOL, CANVAS_TOL = 0.01, 1.0
ALGORITHM = Algorithm("xrayd-phantom", "1.0.0", "ab" * 32, {"threshold": "0.5000"})


@dataclass(frozen=True)
class Case:
    name: str
    #: per source image: the AI's fracture probability and boxes (none: decision "absent")
    images: tuple[tuple[float, tuple[Box, ...]], ...]


CASES = (
    Case("one-box", ((0.93, (Box(60, 40, 140, 120),)),)),
    Case("two-boxes", ((0.88, (Box(30, 20, 90, 100), Box(180, 130, 260, 220))),)),
    Case("box-and-no-box", ((0.04, ()), (0.91, (Box(100, 60, 170, 150),)))),
    Case("no-box", ((0.03, ()), (0.06, ()))),
)


@dataclass
class Study:
    uid: str
    images: list[Dataset]
    findings: StudyFindings
    ai_sr: Dataset
    verified_sr: Dataset


@dataclass
class Viewer:
    orthanc: Orthanc
    server: OhifServer
    studies: dict[str, Study]


# --- the studies ---------------------------------------------------------------------------------


def _count(boxes: tuple[Box, ...]) -> Any:
    return "0" if not boxes else "1" if len(boxes) == 1 else "2+"


def make_study(case: Case) -> Study:
    study_uid = str(generate_uid())
    series_uid = str(generate_uid())
    images, findings = [], []
    for number, (probability, boxes) in enumerate(case.images, 1):
        ds = make_radiograph(
            sop_class=DX,
            rows=ROWS,
            cols=COLS,
            study_uid=study_uid,
            series_uid=series_uid,
            sop_uid=str(generate_uid()),
            seed=number,
            patient_id=f"OHIF-{case.name}",  # one study per patient: the browser lists only it
            patient_name=f"Ohif^{case.name}",
        )
        ds.InstanceNumber = number
        ds.SeriesDescription = "radiographs"
        images.append(ds)
        findings.append(
            ImageFinding(
                sop_instance_uid=ds.SOPInstanceUID,
                sop_class_uid=DX,
                series_instance_uid=series_uid,
                rows=ROWS,
                columns=COLS,
                decision="present" if boxes else "absent",
                fracture_probability=probability,
                count=_count(boxes),
                body_part="wrist",
                body_part_probability=0.9,
                hardware=False,
                hardware_probability=0.05,
                boxes=boxes,
            )
        )
    any_box = any(boxes for _, boxes in case.images)
    study_findings = StudyFindings(
        study_instance_uid=study_uid,
        decision="present" if any_box else "absent",
        fracture_probability=max(p for p, _ in case.images),
        images=tuple(findings),
        not_analysed=(),
        algorithm=ALGORITHM,
    )
    ai = build_sr(
        study_findings,
        images,
        sop_instance_uid=str(generate_uid()),
        series_instance_uid=str(generate_uid()),
        series_number=9901,
        instance_number=1,
        content_datetime=datetime(2026, 3, 4, 10, 0, 0),
        software_version="test",
    )
    review = RadiologistReview(
        observer_name="dr_ray",
        organization="xrayd test hospital",
        when=datetime(2026, 3, 4, 11, 30, tzinfo=UTC),
        agree=True,
        fracture="present" if any_box else "absent",
        count=_count(tuple(b for _, boxes in case.images for b in boxes)),
        body_part="wrist",
        hardware=False,
        comment="Agree with the AI result.",
    )
    verified = build_sr(
        study_findings,
        images,
        sop_instance_uid=str(generate_uid()),
        series_instance_uid=str(generate_uid()),
        series_number=9904,
        instance_number=1,
        content_datetime=datetime(2026, 3, 4, 11, 30, 0),
        software_version="test",
        review=review,
        predecessor=[(study_uid, ai.SeriesInstanceUID, ai.SOPClassUID, ai.SOPInstanceUID)],
    )
    return Study(study_uid, images, study_findings, ai, verified)


def part10(ds: Dataset) -> bytes:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@dataclass(frozen=True)
class Region:
    """One measurement group of the SR: its box on its source image and its comment."""

    sop_instance_uid: str
    box: tuple[float, float, float, float]  # col0, row0, col1, row1
    comment: str | None


def _name(item: Dataset) -> tuple[str, str]:
    code = item.ConceptNameCodeSequence[0]
    return code.CodingSchemeDesignator, code.CodeValue


def sr_regions(sr: Dataset) -> list[Region]:
    """The boxes the SR's Imaging Measurements hold (what OHIF can load), in order."""
    regions = []
    for container in sr.ContentSequence:
        if _name(container) != ("DCM", "126010"):  # Imaging Measurements
            continue
        for group in container.ContentSequence:
            items = list(group.get("ContentSequence", []))
            scoords = [i for i in items if i.ValueType == "SCOORD"]
            comments = [i.TextValue for i in items if _name(i) == ("DCM", "121106")]
            for scoord in scoords:
                xs, ys = scoord.GraphicData[0::2], scoord.GraphicData[1::2]
                [source] = scoord.ContentSequence
                regions.append(
                    Region(
                        source.ReferencedSOPSequence[0].ReferencedSOPInstanceUID,
                        (min(xs), min(ys), max(xs), max(ys)),
                        comments[0] if comments else None,
                    )
                )
    return regions


def expected_regions(study: Study, sr: Dataset) -> list[Region]:
    """The boxes of the findings, each with the comment ``sr`` gives it (checked on the way)."""
    regions = sr_regions(sr)
    wanted = {
        (image.sop_instance_uid, (box.col0, box.row0, box.col1, box.row1))
        for image in study.findings.images
        for box in shown_boxes(image)
    }
    if not wanted:  # nothing to mark: each image's result on its whole area
        wanted = {
            (image.sop_instance_uid, (0.0, 0.0, float(image.columns), float(image.rows)))
            for image in study.findings.images
        }
    got = {(r.sop_instance_uid, r.box) for r in regions}
    assert got == wanted, "the SR's Imaging Measurements do not hold exactly the boxes"
    probability = {i.sop_instance_uid: i.fracture_probability for i in study.findings.images}
    for region in regions:
        assert region.comment, f"no TEXT Comment (121106) beside the box {region}"
        assert f"{probability[region.sop_instance_uid]:.2f}" in region.comment, region.comment
    return regions


# --- fixtures ------------------------------------------------------------------------------------


def _artifacts_dir(*, fresh: bool = False) -> Path:
    path = Path(os.environ.get("XRAYD_TEST_ARTIFACTS") or REPO / "test-artifacts") / "ohif"
    if fresh:  # no screenshot or log of an earlier run left to mislead
        shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def viewer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Viewer]:
    """Orthanc with DICOMweb holding every case's study (images, AI SR, verified SR), and OHIF."""
    dist = dist_dir()
    need(dist is not None, "the OHIF viewer is not in .cache/ohif (run `make ohif`; needs npm)")
    assert dist is not None
    _artifacts_dir(fresh=True)
    studies = {case.name: make_study(case) for case in CASES}
    with running_orthanc(tmp_path_factory.mktemp("ohif-pacs"), dicomweb=True) as orthanc:
        for study in studies.values():
            for ds in [*study.images, study.ai_sr, study.verified_sr]:
                data = part10(ds) if ds in study.images else sr_bytes(ds)
                assert orthanc.upload(data)["Status"] == "Success"
        server = OhifServer(dist, orthanc.http_port).start()
        try:
            yield Viewer(orthanc, server, studies)
        finally:
            server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as browser:
        yield browser


class Console:
    """What the page logs and throws: errors fail the test, warnings go to the artifacts."""

    def __init__(self, page: Any) -> None:
        self.errors: list[str] = []
        self.warnings: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))
        page.on("console", self._message)

    def _message(self, message: Any) -> None:
        text = message.text
        if message.type == "error" or "Error Boundary" in text:
            self.errors.append(f"console.{message.type}: {text}")
        elif message.type == "warning":
            self.warnings.append(text)


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh context (no state left by another case) and page."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(EXPECT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()


# --- the viewer ----------------------------------------------------------------------------------

MEASUREMENTS_JS = """() => window.services.measurementService.getMeasurements().map(m => ({
    label: m.label, toolName: m.toolName, imageId: m.referencedImageId || ''}))"""

COUNT_JS = f"""(n) => {{ const m = ({MEASUREMENTS_JS})(); return m.length === n ? m : null; }}"""

#: Once the viewport shows image ``sop`` and has drawn exactly ``count`` RectangleROI boxes on it,
#: each SVG rectangle where the viewport now maps its box (within ``tol`` canvas pixels): each box
#: as OHIF holds it (image pixels, from its world coordinates), where the viewport puts it (canvas
#: pixels) and the SVG rectangle cornerstone drew. Null (keep waiting) before that: after a jump to
#: another image or a panel opening, the viewport resizes and the SVG layer is redrawn a frame
#: later, so a snapshot taken in between would compare the new mapping with the old drawing.
BOXES_JS = """([sop, count, tol]) => {
    const cs = window.cornerstone, tools = window.cornerstoneTools;
    if (!cs || !tools) return null;
    const viewports = cs.getEnabledElements().map(e => e.viewport)
        .filter(v => v && v.getCurrentImageId && v.getCurrentImageId());
    const vp = viewports.find(v => v.getCurrentImageId().includes('/instances/' + sop + '/'));
    if (!vp || !vp.getImageData || !vp.getImageData()) return null;
    const imageId = vp.getCurrentImageId();
    const svg = vp.element.querySelector('svg.svg-layer');
    if (!svg) return null;
    const annotations = (tools.annotation.state.getAllAnnotations() || []).filter(a =>
        a.metadata.toolName === 'RectangleROI' && a.metadata.referencedImageId === imageId);
    const drawn = svg.querySelectorAll('rect[data-id$="-rect"]');
    if (annotations.length !== count || drawn.length !== count) return null;
    const boxes = [];
    for (const a of annotations) {
        const rect = svg.querySelector(`rect[data-id="${a.annotationUID}-rect"]`);
        if (!rect) return null;
        const image = a.data.handles.points.map(p => cs.utilities.worldToImageCoords(imageId, p));
        const canvas = a.data.handles.points.map(p => vp.worldToCanvas(p));
        const bounds = pts => [
            Math.min(...pts.map(p => p[0])), Math.min(...pts.map(p => p[1])),
            Math.max(...pts.map(p => p[0])), Math.max(...pts.map(p => p[1]))];
        const n = name => Number(rect.getAttribute(name));
        const box = {
            label: a.data.label || '',
            image: bounds(image),
            canvas: bounds(canvas),
            svg: [n('x'), n('y'), n('x') + n('width'), n('y') + n('height')],
        };
        if (box.svg.some((v, i) => Math.abs(v - box.canvas[i]) > tol)) return null;
        boxes.push(box);
    }
    return boxes;
}"""


#: True once cornerstone has no image request queued or in flight and every stack viewport shows
#: the image it asked for. OHIF swaps viewports when the SR is opened, when its measurements are
#: tracked and when another image is opened; an image arriving after its viewport was torn down
#: makes OHIF 3.13 log a console error (IMAGE_LOAD_ERROR "handler is not a function", after
#: "Cannot read properties of null (reading 'getViewUp')", or "The stack viewport has been
#: destroyed"), so every such step waits for this first.
SETTLED_JS = """() => {
    const cs = window.cornerstone;
    if (!cs || !cs.imageLoadPoolManager || !cs.imageLoadPoolManager.numRequests) return false;
    const queued = pool => Array.isArray(pool) ? pool.length
        : Object.values(pool || {}).reduce((n, p) => n + queued(p), 0);
    const idle = m => !m || (Object.values(m.numRequests || {}).every(n => n === 0)
        && queued(m.getRequestPool ? m.getRequestPool() : {}) === 0);
    if (!idle(cs.imageLoadPoolManager) || !idle(cs.imageRetrievalPoolManager)) return false;
    const viewports = cs.getEnabledElements().map(e => e.viewport).filter(v => v);
    return viewports.every(v => {
        const wanted = v.getCurrentImageId ? v.getCurrentImageId() : null;
        return !wanted || (v.csImage && v.csImage.imageId === wanted);
    });
}"""


#: Logs each failed image load with its cause as a console warning (kept in the case's log):
#: OHIF's own handler only says "handler is not a function".
LOAD_ERRORS_JS = """(() => { const t = setInterval(() => {
    const cs = window.cornerstone;
    if (!cs || !cs.eventTarget) return;
    clearInterval(t);
    for (const ev of [cs.EVENTS.IMAGE_LOAD_ERROR, cs.EVENTS.IMAGE_LOAD_FAILED]) {
        cs.eventTarget.addEventListener(ev, e => {
            const d = e.detail || {}, er = d.error || {};
            console.warn(`${ev} ${d.imageId}: ${er.message || er.status || ''} ${er.stack || ''}`);
        });
    }
}, 5); })()"""


def _close(a: list[float], b: tuple[float, ...] | list[float], tol: float) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))


def _wait(page: Any, js: str, arg: Any, console: Console, what: str) -> Any:
    """page.wait_for_function, failing with what OHIF logged instead of a bare timeout."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        return page.wait_for_function(js, arg=arg).json_value()
    except PlaywrightTimeout:
        logged = "\n".join([*console.errors, *console.warnings][-12:])
        pytest.fail(f"OHIF never showed {what}; it logged:\n{logged}")


def _no_error_shown(page: Any, console: Console) -> None:
    from playwright.sync_api import expect

    expect(page.get_by_text("Something went wrong")).to_have_count(0)
    assert not console.errors, "\n".join(console.errors)


def _keep_log(case: str, console: Console, server: OhifServer) -> None:
    lines = [f"error: {e}" for e in console.errors] + [f"warning: {w}" for w in console.warnings]
    lines += [f"server: {p}" for p in server.problems]
    (_artifacts_dir() / f"{case}.log").write_text("".join(f"{line}\n" for line in lines))


@pytest.mark.parametrize("verified", [False, True], ids=["ai", "verified"])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_ohif_loads_the_sr_as_measurements(
    viewer: Viewer, page: Any, case: Case, verified: bool
) -> None:
    from playwright.sync_api import expect

    study = viewer.studies[case.name]
    regions = expected_regions(study, study.verified_sr if verified else study.ai_sr)
    name = f"{'verified' if verified else 'ai'}-{case.name}"
    problems = len(viewer.server.problems)  # the server is the module's: this case's only
    console = Console(page)
    shots = _artifacts_dir()
    try:
        page.add_init_script(LOAD_ERRORS_JS)
        page.goto(f"{viewer.server.url}/viewer?StudyInstanceUIDs={study.uid}")
        # the radiologist opens the SR from the study browser ...
        description = VERIFIED_SERIES_DESCRIPTION if verified else SERIES_DESCRIPTION
        sr_thumbnail = page.locator(
            '[data-cy="study-browser-thumbnail-no-image"]', has_text=description
        )
        expect(page.locator('[data-cy="study-browser-thumbnail"]')).to_have_count(len(study.images))
        _no_error_shown(page, console)
        _wait(page, SETTLED_JS, None, console, "every viewport showing its image")
        sr_thumbnail.dblclick()
        # ... and answers OHIF's prompt to track (load) its measurements
        prompt = page.get_by_text("Do you want to continue tracking measurements for this study?")
        expect(prompt).to_be_visible()
        _wait(page, SETTLED_JS, None, console, "every viewport showing its image")
        page.get_by_role("button", name="Yes").click()
        measurements = _wait(
            page,
            COUNT_JS,
            len(regions),
            console,
            f"{len(regions)} measurement(s) loaded from the SR",
        )
        assert sorted(m["label"] for m in measurements) == sorted(str(r.comment) for r in regions)
        assert {m["toolName"] for m in measurements} == {"RectangleROI"}, measurements

        # the measurements panel lists each finding with its comment
        panel = page.locator('[data-cy="trackedMeasurements-panel"]')
        if not panel.is_visible():
            tab = page.locator('[data-cy="trackedMeasurements-btn"]')
            if not tab.is_visible():
                page.locator('[data-cy="side-panel-header-right"]').click()
            tab.click()
        expect(panel.get_by_text(f"Measurements ({len(regions)})")).to_be_visible()
        for region in regions:
            assert region.comment is not None
            same = sum(r.comment == region.comment for r in regions)
            expect(panel.get_by_text(region.comment, exact=True)).to_have_count(same)
            expect(panel.get_by_text(region.comment, exact=True).first).to_be_visible()

        # each measurement on the image its region names, so none on an image without a box
        # (checked in OHIF's measurement model, which is what its viewports draw from: switching
        # the viewport to such an image right after the SR's hydration races OHIF 3.13's own
        # viewport teardown, "The stack viewport has been destroyed", an OHIF console error)
        for image in study.images:
            sop = image.SOPInstanceUID
            on_image = [m for m in measurements if f"/instances/{sop}/" in m["imageId"]]
            assert sorted(m["label"] for m in on_image) == sorted(
                str(r.comment) for r in _on(regions, image)
            ), (sop, measurements)

        # each image with boxes: a click on its finding in the panel jumps to it, and its boxes
        # are drawn where the SR puts them
        first_box_image = next(i for i, im in enumerate(study.images) if _on(regions, im))
        for index, image in enumerate(study.images):
            sop = image.SOPInstanceUID
            mine = _on(regions, image)
            if not mine:
                continue
            _wait(page, SETTLED_JS, None, console, "every viewport showing its image")
            assert mine[0].comment is not None
            panel.get_by_text(mine[0].comment, exact=True).first.click()
            drawn = _wait(
                page,
                BOXES_JS,
                [sop, len(mine), CANVAS_TOL],
                console,
                f"{len(mine)} box(es) on image {sop}, drawn where the viewport maps them",
            )
            _check_boxes(drawn, mine)
            suffix = "" if index == first_box_image else f"-image{index + 1}"
            page.screenshot(path=str(shots / f"{name}{suffix}.png"))
        _wait(page, SETTLED_JS, None, console, "every viewport showing its image")
        _no_error_shown(page, console)
        assert not viewer.server.problems[problems:], viewer.server.problems[problems:]
    except BaseException:
        page.screenshot(path=str(shots / f"{name}-failed.png"))
        raise
    finally:
        _keep_log(name, console, viewer.server)


def _on(regions: list[Region], image: Dataset) -> list[Region]:
    return [r for r in regions if r.sop_instance_uid == image.SOPInstanceUID]


def _check_boxes(drawn: list[dict[str, Any]], regions: list[Region]) -> None:
    """Each region once among the drawn boxes: same place in image pixels, labelled with its
    comment, and the SVG rectangle where the viewport maps it."""
    assert len(drawn) == len(regions)
    unmatched = list(drawn)
    for region in regions:
        match = [d for d in unmatched if _close(d["image"], region.box, IMAGE_TOL)]
        assert match, f"no box drawn at {region.box} (image pixels); drawn: {drawn}"
        box = match[0]
        unmatched.remove(box)
        assert box["label"] == region.comment
        assert _close(box["svg"], box["canvas"], CANVAS_TOL), box
        assert box["svg"][2] - box["svg"][0] > 5 and box["svg"][3] - box["svg"][1] > 5, box
