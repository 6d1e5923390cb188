"""One palette (dicom_node.overlay_style) wherever a result is drawn (issue 19, "Overlays with
meaning"): the Secondary Capture's pixels, the web viewer's heatmap PNG and the PDF report show
a present box in solid red, an indeterminate one in dashed amber, the heatmap as a blue-to-cyan
ramp, and nothing over the image for an absent result."""

from __future__ import annotations

import io
import subprocess
from datetime import datetime
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom import dcmread

from dicom_node.findings import Algorithm, Box, ImageFinding, StudyFindings
from dicom_node.overlay import render_overlay
from dicom_node.overlay_style import (
    HEATMAP_HIGH,
    HEATMAP_LOW,
    HEATMAP_THRESHOLD,
    LEGEND,
    box_style,
)
from dicom_node.secondary_capture import build_secondary_capture, dataset_bytes
from xrayd.pipeline.analyse import heatmap_png
from xrayd.pipeline.pdf_report import render_pdf_report
from xrayd.web.images import heatmap_overlay_png

from dicom_factory import make_radiograph
from helpers import need_tool

ALGORITHM = Algorithm(name="fracnet", version="1.2.0", weights_sha256="ab" * 32, parameters={})
WHEN = datetime(2026, 11, 23, 10, 30, 5)
ROWS, COLS = 240, 200
BOX = Box(60.0, 50.0, 180.0, 150.0)  # rows 60..179, columns 50..149
WIDTH = 2  # render_overlay's line width on a 240 x 200 image


def display() -> np.ndarray:
    """A smooth grey radiograph: no pixel is red, amber, blue or cyan."""
    _, x = np.mgrid[0:ROWS, 0:COLS]
    return (60 + 120 * np.exp(-(((x - COLS / 2) / (COLS / 6)) ** 2))).astype(np.uint8)


def heat() -> np.ndarray:
    """Hot inside the box (values that are exact in the 8-bit heatmap PNG), cold elsewhere."""
    out = np.zeros((ROWS, COLS), np.float32)
    out[80:160, 70:130] = np.linspace(0.0, 1.0, 60, dtype=np.float32)[None, :]
    return np.round(out * 255) / 255


def capture(decision: str, tmp_path: Path | None = None) -> np.ndarray:
    """The image part of the Secondary Capture of one result, as stored (pixels read back)."""
    rgb = render_overlay(
        display(), heat(), [BOX], [f"AI fracture: {decision.upper()}"], decision=decision
    )
    source = make_radiograph(rows=ROWS, cols=COLS)
    del source.PixelData
    sc = build_secondary_capture(
        source,
        rgb,
        sop_instance_uid="2.25.7001",
        series_instance_uid="2.25.7002",
        series_number=9001,
        instance_number=1,
        content_datetime=WHEN,
        algorithm=ALGORITHM,
        software_version="0.1.0",
    )
    data = dataset_bytes(sc)
    if tmp_path is not None:  # every capture still passes dciodvfy
        tool = need_tool("dciodvfy")
        path = tmp_path / f"sc-{decision}.dcm"
        path.write_bytes(data)
        result = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60)
        report = result.stderr + result.stdout
        assert not [line for line in report.splitlines() if line.startswith("Error")], report
    pixels = np.asarray(dcmread(io.BytesIO(data)).pixel_array)
    return pixels[pixels.shape[0] - ROWS :]


def banner(decision: str) -> np.ndarray:
    rgb = render_overlay(display(), heat(), [BOX], ["AI"], decision=decision)
    return rgb[: rgb.shape[0] - ROWS]


def is_colour(pixels: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    return np.all(pixels == np.asarray(colour, np.uint8), axis=-1)


def test_present_box_is_solid_in_the_palette_red(tmp_path: Path) -> None:
    style = box_style("present")
    assert style is not None and not style.dashed
    image = capture("present", tmp_path)
    for side in (
        image[60:62, 50:150],
        image[178:180, 50:150],
        image[60:180, 50:52],
        image[60:180, 148:150],
    ):
        assert is_colour(side, style.colour).all()  # no gap anywhere on the outline


def test_indeterminate_box_is_dashed_amber(tmp_path: Path) -> None:
    style = box_style("indeterminate")
    assert style is not None and style.dashed
    image = capture("indeterminate", tmp_path)
    grey = np.repeat(display()[:, :, None], 3, axis=2)
    for edge, plain in (
        (image[60, 50:150], grey[60, 50:150]),
        (image[60:180, 50], grey[60:180, 50]),
    ):
        amber = is_colour(edge, style.colour)
        assert 0.5 < amber.mean() < 0.75, amber.mean()  # dashes of 3 widths, gaps of 2
        assert amber[0] and amber[-1], "corners drawn"
        gaps = ~amber
        np.testing.assert_array_equal(edge[gaps], plain[gaps])  # gaps show the radiograph
    assert not is_colour(image, box_style("present").colour).any()  # type: ignore[union-attr]


def test_absent_draws_no_box_and_no_tint(tmp_path: Path) -> None:
    image = capture("absent", tmp_path)  # the model's box and heatmap are passed: not drawn
    np.testing.assert_array_equal(image, np.repeat(display()[:, :, None], 3, axis=2))


def test_banner_legend_samples_what_the_image_shows() -> None:
    red = box_style("present").colour  # type: ignore[union-attr]
    amber = box_style("indeterminate").colour  # type: ignore[union-attr]
    samples = {
        decision: {
            "red": is_colour(banner(decision), red).any(),
            "amber": is_colour(banner(decision), amber).any(),
            "ramp": is_colour(banner(decision), HEATMAP_HIGH).any(),
        }
        for decision in ("present", "indeterminate", "absent")
    }
    assert samples == {
        "present": {"red": True, "amber": False, "ramp": True},
        "indeterminate": {"red": False, "amber": True, "ramp": True},
        "absent": {"red": False, "amber": False, "ramp": False},  # "no box or tint" in words
    }
    # the legend lines make the banner taller than the result lines alone
    bare = render_overlay(display(), None, [], ["AI"], decision="absent", legend=False)
    assert banner("absent").shape[0] > bare.shape[0] - ROWS


def test_heatmap_png_uses_the_ramp_and_matches_the_capture_tint(tmp_path: Path) -> None:
    values = heat()
    png = Image.open(io.BytesIO(heatmap_overlay_png_bytes(values, tmp_path)))
    assert png.mode == "RGBA" and png.size == (COLS, ROWS)
    rgba = np.asarray(png)
    cold = values <= HEATMAP_THRESHOLD
    assert (rgba[cold][:, 3] == 0).all()  # transparent at and below the threshold
    assert (rgba[~cold][:, 3] > 0).all()
    np.testing.assert_array_equal(rgba[100, 129, :3], HEATMAP_HIGH)  # the maximum: cyan
    lowest = rgba[100, 70:130][rgba[100, 70:130, 3] > 0][0]
    assert np.abs(lowest[:3].astype(int) - HEATMAP_LOW).max() <= 12  # just above: blue
    # Laid over the windowed radiograph (as the browser composes it), the PNG gives the
    # Secondary Capture's tint: one ramp, one opacity.
    grey = display().astype(np.float64)[:, :, None]
    alpha = rgba[..., 3:].astype(np.float64) / 255.0
    composed = grey * (1 - alpha) + rgba[..., :3] * alpha
    image = capture("present")
    inside = np.zeros((ROWS, COLS), bool)
    inside[62:178, 52:148] = True  # within the box, off its outline
    assert np.abs(composed[inside] - image[inside]).max() <= 1.5


def heatmap_overlay_png_bytes(values: np.ndarray, tmp_path: Path) -> bytes:
    """What the web viewer gets: the stored heatmap PNG, coloured by xrayd.web.images."""
    stored = tmp_path / "heat.png"
    stored.write_bytes(heatmap_png(values))
    return heatmap_overlay_png(stored)


def test_pdf_has_the_legend_and_thumbnails_in_the_palette_colours(tmp_path: Path) -> None:
    finding = ImageFinding(
        series_instance_uid="2.25.11",
        sop_instance_uid="2.25.12",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.1.1",
        rows=ROWS,
        columns=COLS,
        decision="present",
        fracture_probability=0.97,
        count="1",
        body_part="hand",
        body_part_probability=0.9,
        hardware=False,
        hardware_probability=0.1,
        boxes=(BOX,),
    )
    findings = StudyFindings(
        study_instance_uid="2.25.10",
        decision="present",
        fracture_probability=0.97,
        images=(finding,),
        not_analysed=(),
        algorithm=ALGORITHM,
    )
    thumbnail = render_overlay(display(), heat(), [BOX], ["AI"], decision="present")
    pdf = render_pdf_report(
        findings,
        [("image 1: present", thumbnail)],
        study_description="XR HAND",
        patient_label="",
        timings={},
        generated_at=WHEN,
    )
    path = tmp_path / "report.pdf"
    path.write_bytes(pdf)
    text = subprocess.run(
        [need_tool("pdftotext"), "-layout", str(path), "-"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    flat = " ".join(text.split())
    for line in LEGEND:
        assert line in flat, line
    # The embedded thumbnail (JPEG) has its box in the palette red, within JPEG's error.
    subprocess.run(
        [need_tool("pdfimages"), "-png", str(path), str(tmp_path / "img")],
        check=True,
        timeout=60,
    )
    (embedded,) = sorted(tmp_path.glob("img-*.png"))
    picture = np.asarray(Image.open(embedded).convert("RGB")).astype(int)
    assert picture.shape[1] == COLS
    top = picture.shape[0] - ROWS
    red = box_style("present").colour  # type: ignore[union-attr]
    edge = picture[top + 60 : top + 62, 55:145]
    assert np.abs(edge - red).max() <= 40, edge[:, :4]
    # The legend's vector samples on the page are drawn in the palette's exact colours.
    subprocess.run(
        [need_tool("pdftoppm"), "-png", "-r", "200", str(path), str(tmp_path / "page")],
        check=True,
        timeout=60,
    )
    pages = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(tmp_path.glob("page-*"))]
    for decision in ("present", "indeterminate"):
        colour = box_style(decision).colour  # type: ignore[union-attr]
        assert any(is_colour(page, colour).sum() > 20 for page in pages), decision
