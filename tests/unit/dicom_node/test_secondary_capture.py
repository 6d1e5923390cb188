"""The burned-in overlay and the Secondary Capture that carries it."""

from __future__ import annotations

import subprocess
from datetime import datetime
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from dicom_node.findings import Algorithm, Box
from dicom_node.overlay import (
    BANNER_BACKGROUND,
    HEATMAP_THRESHOLD,
    font_size,
    line_width,
    render_overlay,
)
from dicom_node.overlay_style import box_style
from dicom_node.secondary_capture import (
    SECONDARY_CAPTURE_IMAGE_STORAGE,
    build_secondary_capture,
    dataset_bytes,
)
from dicom_node.uids import IMPLEMENTATION_CLASS_UID, implementation_version_name

from dicom_factory import CR, make_radiograph
from helpers import need_tool

ALGORITHM = Algorithm(
    name="fracnet",
    version="1.2.0",
    weights_sha256="ab" * 32,
    parameters={"fracture_threshold": "0.50"},
)
WHEN = datetime(2026, 11, 23, 10, 30, 5)
#: The colour of a "present" box (overlay_style's solid red).
BOX_COLOUR = box_style("present").colour  # type: ignore[union-attr]
BANNER = ["AI: fracture PRESENT, probability 0.87", "fracnet 1.2.0", "AI result — not a diagnosis"]


def display_image(rows: int = 200, cols: int = 160) -> np.ndarray:
    """A smooth grey 'radiograph' with values well away from any overlay colour."""
    _, x = np.mgrid[0:rows, 0:cols]
    return (60 + 120 * np.exp(-(((x - cols / 2) / (cols / 6)) ** 2))).astype(np.uint8)


# --- overlay ----------------------------------------------------------------------------------


def test_overlay_draws_heatmap_boxes_and_banner_and_leaves_the_rest_alone() -> None:
    display = display_image()
    heat = np.zeros(display.shape, np.float32)
    heat[40:80, 30:70] = 0.9  # tinted
    heat[120:150, 100:140] = 0.25  # below the threshold: not drawn
    box = Box(100.0, 20.0, 180.0, 90.0)
    out = render_overlay(display, heat, [box], BANNER, decision="present")

    rows, cols = display.shape
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[1:] == (cols, 3)
    top = out.shape[0] - rows
    assert top > 0, "the banner is added, not drawn over the image"
    image, banner = out[top:], out[:top]

    # Box outline in the box colour, width scaled to the image.
    w = line_width(rows, cols)
    np.testing.assert_array_equal(image[100, 20:90], np.tile(BOX_COLOUR, (70, 1)))
    np.testing.assert_array_equal(image[179 - w + 1 : 180, 50], np.tile(BOX_COLOUR, (w, 1)))
    np.testing.assert_array_equal(image[140, 20 : 20 + w], np.tile(BOX_COLOUR, (w, 1)))
    np.testing.assert_array_equal(image[140, 89], BOX_COLOUR)
    inside = image[100 + w : 180 - w, 20 + w : 90 - w]
    np.testing.assert_array_equal(inside[..., 0], inside[..., 1])  # still grey inside

    # Heatmap: tinted towards the blue-cyan ramp (B up, R down) where above the threshold.
    hot = image[40:80, 30:70].astype(int)
    grey = display[40:80, 30:70].astype(int)
    assert (hot[..., 2] > grey).all() and (hot[..., 0] < grey).all()

    # Everything else is the windowed source, pixel for pixel.
    drawn = np.zeros(display.shape, bool)
    drawn[heat > HEATMAP_THRESHOLD] = True
    drawn[100:180, 20:90] = True
    expected = np.repeat(display[:, :, None], 3, axis=2)
    np.testing.assert_array_equal(image[~drawn], expected[~drawn])

    # Banner: the light band with dark text on it.
    band = np.all(banner == BANNER_BACKGROUND, axis=2)
    dark = banner.sum(axis=2) < 150
    assert band.mean() > 0.6
    assert dark.sum() > 100


def test_overlay_is_deterministic_and_text_scales_to_a_2k_radiograph() -> None:
    display = display_image(2048, 1600)
    heat = np.zeros(display.shape, np.float32)
    heat[500:900, 400:800] = np.linspace(0.0, 1.0, 400, dtype=np.float32)[None, :]
    boxes = [Box(450, 350, 950, 850)]
    a = render_overlay(display, heat, boxes, BANNER, decision="present")
    b = render_overlay(display, heat, boxes, BANNER, decision="present")
    np.testing.assert_array_equal(a, b)

    assert font_size(2048, 1600) >= 30 and line_width(2048, 1600) >= 6
    top = a.shape[0] - 2048
    assert top >= 3 * font_size(2048, 1600)  # three lines of readable text
    image = a[top:]
    w = line_width(2048, 1600)
    np.testing.assert_array_equal(image[450 : 450 + w, 600], np.tile(BOX_COLOUR, (w, 1)))
    # Dark text pixels on every banner line.
    dark_rows = np.flatnonzero((a[:top].sum(axis=2) < 150).any(axis=1))
    assert dark_rows.size > 0 and dark_rows.max() - dark_rows.min() > 2 * font_size(2048, 1600)


@pytest.mark.parametrize(("rows", "cols"), [(3000, 2500), (3000, 1000), (1000, 3000)])
def test_banner_stays_legible_when_the_capture_is_fitted_to_a_screen(rows: int, cols: int) -> None:
    """Fitted into a 1,000 px viewport (as viewers open an image), the banner's capital letters
    are still at least 12 px tall, whatever the image's shape."""
    display = np.full((rows, cols), 128, np.uint8)
    out = render_overlay(display, None, [], ["AI fracture: PRESENT (p=0.97)"], decision="present")
    top = out.shape[0] - rows
    dark = np.flatnonzero((out[:top].sum(axis=2) < 150).any(axis=1))
    assert dark.size
    # The first text line: a run of consecutive rows with dark (text) pixels.
    gaps = np.flatnonzero(np.diff(dark) > 1)
    first_line = dark[: gaps[0] + 1] if gaps.size else dark
    scale = 1000 / max(out.shape[0], out.shape[1])
    assert (first_line[-1] - first_line[0] + 1) * scale >= 12, (first_line, scale)


def test_overlay_without_heatmap_or_boxes_only_adds_the_banner() -> None:
    display = display_image(64, 48)
    out = render_overlay(
        display, None, [], ["a very long banner line that must wrap " * 3], decision="present"
    )
    top = out.shape[0] - 64
    np.testing.assert_array_equal(out[top:], np.repeat(display[:, :, None], 3, axis=2))
    one_line = render_overlay(display, None, [], ["x"], decision="present")
    assert top > one_line.shape[0] - 64, "a line wider than the image wraps"


def test_overlay_clips_boxes_and_rejects_bad_input() -> None:
    display = display_image(50, 40)
    out = render_overlay(display, None, [Box(45, 35, 500, 500)], [], decision="present")
    image = out[out.shape[0] - 50 :]
    np.testing.assert_array_equal(image[45, 35:40], np.tile(BOX_COLOUR, (5, 1)))
    with pytest.raises(ValueError, match="heatmap shape"):
        render_overlay(display, np.zeros((10, 10), np.float32), [], [], decision="present")
    with pytest.raises(ValueError, match="uint8"):
        render_overlay(display.astype(np.uint16), None, [], [], decision="present")
    with pytest.raises(ValueError, match="unknown decision"):  # not silently drawn as absent
        render_overlay(display, None, [Box(1, 1, 9, 9)], [], decision="PRESENT")


# --- Secondary Capture ------------------------------------------------------------------------


def build(source: Dataset, rgb: np.ndarray | None = None) -> Dataset:
    if rgb is None:
        rgb = render_overlay(
            display_image(), None, [Box(10, 10, 50, 50)], BANNER, decision="present"
        )
    return build_secondary_capture(
        source,
        rgb,
        sop_instance_uid="2.25.1001",
        series_instance_uid="2.25.1002",
        series_number=9001,
        instance_number=3,
        content_datetime=WHEN,
        algorithm=ALGORITHM,
        software_version="0.1.0",
    )


def header(**changes: object) -> Dataset:
    source = make_radiograph(rows=32, cols=32, patient_name="Müller^Jörg")
    del source.PixelData  # the builder needs the header only
    for keyword, value in changes.items():
        if value is None:
            delattr(source, keyword)
        else:
            setattr(source, keyword, value)
    return source


def dciodvfy_errors(tool: str, path: Path) -> tuple[list[str], str]:
    result = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60)
    report = result.stderr + result.stdout
    errors = [line for line in report.splitlines() if line.startswith("Error")]
    assert result.returncode == 0 or errors, report
    return errors, report


def test_secondary_capture_copies_identity_and_references_the_source() -> None:
    source = header(StudyDescription="XR HAND 3 VIEWS", PatientOrientation=["P", "FL"])
    rgb = render_overlay(display_image(), None, [], BANNER, decision="present")
    ds = dcmread(BytesIO(dataset_bytes(build(source, rgb))))

    assert ds.SOPClassUID == SECONDARY_CAPTURE_IMAGE_STORAGE
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID == "2.25.1001"
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert ds.file_meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert ds.file_meta.ImplementationVersionName == implementation_version_name()
    assert (ds.SeriesInstanceUID, ds.SeriesNumber, ds.InstanceNumber) == ("2.25.1002", 9001, 3)
    for keyword in (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "ReferringPhysicianName",
        "StudyID",
        "StudyDescription",
        "BodyPartExamined",
    ):
        assert ds[keyword].value == source[keyword].value, keyword
    assert str(ds.PatientName) == "Müller^Jörg"
    assert ds.Modality == "DX" and ds.ConversionType == "WSD"
    assert ds.BurnedInAnnotation == "YES"
    assert list(ds.ImageType) == ["DERIVED", "SECONDARY"]
    assert list(ds.PatientOrientation) == ["P", "FL"]
    assert "not a diagnosis" in ds.ImageComments and ds.DerivationDescription
    assert ds.SeriesDescription == "xrayd AI fracture overlay"
    assert ds.ContentDate == ds.DateOfSecondaryCapture == "20261123"
    assert ds.ContentTime == ds.InstanceCreationTime == "103005"

    (ref,) = ds.SourceImageSequence
    assert ref.ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert ref.ReferencedSOPClassUID == source.SOPClassUID
    (equipment,) = ds.ContributingEquipmentSequence
    assert equipment.Manufacturer == "xrayd" and equipment.ManufacturerModelName == "fracnet"
    assert "fracnet 1.2.0" in list(equipment.SoftwareVersions)
    assert ALGORITHM.weights_sha256 in equipment.ContributionDescription
    assert equipment.PurposeOfReferenceCodeSequence[0].CodeValue == "109102"

    assert (ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration) == (
        3,
        "RGB",
        0,
    )
    assert (ds.Rows, ds.Columns, ds.BitsAllocated) == (*rgb.shape[:2], 8)
    np.testing.assert_array_equal(ds.pixel_array, rgb)


def test_secondary_capture_bytes_are_deterministic() -> None:
    source = header()
    first = dataset_bytes(build(source))
    assert first == dataset_bytes(build(source))
    other = build(header(SOPInstanceUID="2.25.99"))
    assert dataset_bytes(other) != first


@pytest.mark.parametrize(
    ("changes", "laterality"),
    [
        ({}, ""),  # HAND is paired, laterality unknown
        ({"ImageLaterality": "L"}, "L"),
        ({"Laterality": "R"}, "R"),
        ({"BodyPartExamined": "CHEST"}, None),
        ({"BodyPartExamined": None, "Modality": None}, ""),
        ({"Modality": "CR", "SOPClassUID": CR, "LossyImageCompression": "01"}, ""),
    ],
)
def test_secondary_capture_passes_dciodvfy_and_dcmdump(
    tmp_path: Path, changes: dict[str, object], laterality: str | None
) -> None:
    tool = need_tool("dciodvfy")
    dump = need_tool("dcmdump")
    ds = build(header(**changes))
    assert ds.get("Laterality") == laterality
    if "Modality" in changes and changes["Modality"] is None:
        assert ds.Modality == "OT"
    path = tmp_path / "sc.dcm"
    path.write_bytes(dataset_bytes(ds))
    errors, report = dciodvfy_errors(tool, path)
    assert not errors, report
    result = subprocess.run([dump, str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "SecondaryCaptureImageStorage" in result.stdout
    assert "(0028,0301) CS [YES]" in result.stdout  # BurnedInAnnotation


def test_secondary_capture_rejects_what_it_cannot_encode() -> None:
    source = header()
    with pytest.raises(ValueError, match="rgb"):
        build(source, np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="rgb"):
        build(source, np.zeros((4, 4, 3), np.uint16))
    with pytest.raises(ValueError, match="Study Instance UID"):
        build(header(StudyInstanceUID=None))


def test_odd_sized_pixel_data_is_padded_and_reads_back(tmp_path: Path) -> None:
    rgb = np.arange(5 * 3 * 3, dtype=np.uint8).reshape(5, 3, 3)
    data = dataset_bytes(build(header(), rgb))
    ds = dcmread(BytesIO(data))
    assert len(ds.PixelData) == 46
    np.testing.assert_array_equal(ds.pixel_array, rgb)


def test_names_in_another_character_set_are_written_as_utf8() -> None:
    source = make_radiograph(rows=8, cols=8, patient_name="Müller^Jörg")
    source.SpecificCharacterSet = "ISO_IR 100"
    buffer = BytesIO()
    source.save_as(buffer, enforce_file_format=True)
    assert "Müller".encode("latin-1") in buffer.getvalue()
    header = dcmread(BytesIO(buffer.getvalue()), stop_before_pixels=True)
    data = dataset_bytes(build(header, np.zeros((2, 2, 3), np.uint8)))
    assert "Müller".encode() in data
    assert str(dcmread(BytesIO(data)).PatientName) == "Müller^Jörg"
