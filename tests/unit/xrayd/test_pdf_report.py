"""The study PDF report: content, rendering, determinism."""

from __future__ import annotations

import logging
import subprocess
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dicom_node.findings import Algorithm, Box, ImageFinding, NotAnalysed, StudyFindings
from dicom_node.overlay import render_overlay
from xrayd.pipeline.pdf_report import render_pdf_report

from helpers import need_tool

PATIENT = "PAT-SECRET-42"
ALGORITHM = Algorithm(
    name="fracnet",
    version="1.2.0",
    weights_sha256="0123456789abcdef" * 4,
    parameters={"fracture_threshold": "0.50", "indeterminate_band": "0.40-0.60"},
)
WHEN = datetime(2026, 11, 23, 10, 31, 0)


def finding(n: int, decision: str = "present", p: float = 0.87) -> ImageFinding:
    return ImageFinding(
        sop_instance_uid=f"2.25.100{n}",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.1.1",
        series_instance_uid="2.25.900",
        rows=256,
        columns=200,
        decision=decision,  # type: ignore[arg-type]
        fracture_probability=p,
        count="1",
        body_part="WRIST",
        body_part_probability=0.93,
        hardware=True,
        hardware_probability=0.71,
        boxes=(Box(40, 40, 120, 120),),
    )


def study(images: int = 2) -> StudyFindings:
    return StudyFindings(
        study_instance_uid="2.25.77",
        decision="present",
        fracture_probability=0.87,
        images=tuple(
            finding(n, "present" if n == 0 else "absent", 0.87 - n / 10) for n in range(images)
        ),
        not_analysed=(NotAnalysed("2.25.555", "1.2.840.10008.5.1.4.1.1.7", "not a radiograph"),),
        algorithm=ALGORITHM,
    )


def thumbnail() -> np.ndarray:
    _, x = np.mgrid[0:256, 0:200]
    display = (60 + 120 * np.exp(-(((x - 100) / 30) ** 2))).astype(np.uint8)
    heat = np.zeros(display.shape, np.float32)
    heat[50:110, 50:110] = 0.9
    return render_overlay(
        display, heat, [Box(40, 40, 120, 120)], ["AI: fracture PRESENT"], decision="present"
    )


def report(images: int = 2, thumbs: int = 2, when: datetime = WHEN) -> bytes:
    picture = thumbnail()
    return render_pdf_report(
        study(images),
        [(f"Series 1 image {n}", picture) for n in range(thumbs)],
        study_description="XR WRIST 2 VIEWS",
        patient_label=PATIENT,
        timings={"received → analysed s": 12.5, "inference s": 0.84},
        generated_at=when,
    )


def pdftotext(path: Path) -> str:
    tool = need_tool("pdftotext")
    result = subprocess.run(
        [tool, "-layout", str(path), "-"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def pages(tmp_path: Path, pdf: bytes, dpi: int = 50) -> list[np.ndarray]:
    tool = need_tool("pdftoppm")
    path = tmp_path / "report.pdf"
    path.write_bytes(pdf)
    subprocess.run(
        [tool, "-png", "-r", str(dpi), str(path), str(tmp_path / "page")],
        check=True,
        capture_output=True,
        timeout=60,
    )
    files = sorted(tmp_path.glob("page-*.png"))
    return [np.asarray(Image.open(f).convert("RGB")) for f in files]


def test_is_a_pdf_and_deterministic() -> None:
    pdf = report()
    assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF")
    assert pdf == report()
    assert pdf != report(when=datetime(2026, 11, 23, 10, 32, 0))


def test_renders_non_blank_pages_with_the_overlays(tmp_path: Path) -> None:
    rendered = pages(tmp_path, report())
    assert rendered
    for page in rendered:
        assert float(page.astype(np.float32).var()) > 0.0
    # The thumbnails' red ("present") boxes are on some page.
    red = [
        int(((p[..., 0] > 190) & (p[..., 1] < 110) & (p[..., 2] < 120)).sum()) for p in rendered
    ]
    assert max(red) > 20


def test_several_thumbnails_per_page(tmp_path: Path) -> None:
    assert len(pages(tmp_path, report(images=8, thumbs=8))) <= 4


def test_text_states_the_result_the_model_and_the_disclaimer(tmp_path: Path) -> None:
    path = tmp_path / "report.pdf"
    path.write_bytes(report())
    text = " ".join(pdftotext(path).split())
    for expected in (
        "AI result — not a diagnosis. Research software, not for clinical use.",
        "fracture PRESENT",
        "probability 0.87",
        PATIENT,
        "XR WRIST 2 VIEWS",
        "2.25.77",
        "2.25.1000",
        "2.25.1001",
        "present",
        "absent",
        "0.77",
        "WRIST (0.93)",
        "yes (0.71)",
        "not a radiograph",
        "2.25.555",
        "fracnet",
        "1.2.0",
        ALGORITHM.weights_sha256,
        "fracture_threshold",
        "0.40-0.60",
        "received -> analysed s",
        "12.50",
        "0.84",
        "Series 1 image 1",
        "2026-11-23 10:31:00",
    ):
        assert expected in text, expected


def test_patient_label_stays_out_of_metadata_and_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tool = need_tool("pdfinfo")
    caplog.set_level(logging.DEBUG)
    path = tmp_path / "report.pdf"
    path.write_bytes(report())
    info = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60)
    assert info.returncode == 0, info.stderr
    assert "xrayd AI fracture triage report" in info.stdout
    assert PATIENT not in info.stdout
    assert PATIENT not in caplog.text


def test_an_empty_study_still_reports(tmp_path: Path) -> None:
    empty = StudyFindings("2.25.1", "indeterminate", 0.5, (), (), ALGORITHM)
    pdf = render_pdf_report(
        empty, [], study_description="", patient_label="", timings={}, generated_at=WHEN
    )
    path = tmp_path / "empty.pdf"
    path.write_bytes(pdf)
    text = " ".join(pdftotext(path).split())
    assert "No image was analysed." in text and "not a diagnosis" in text


def test_rejects_a_thumbnail_that_is_not_rgb() -> None:
    with pytest.raises(ValueError, match="thumbnail"):
        render_pdf_report(
            study(),
            [("grey", np.zeros((8, 8), np.uint8))],
            study_description="",
            patient_label="",
            timings={},
            generated_at=WHEN,
        )
