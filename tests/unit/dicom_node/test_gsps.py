"""The AI result over the radiograph as a Grayscale Softcopy Presentation State (GSPS)."""

from __future__ import annotations

import logging
import re
import subprocess
from dataclasses import replace
from datetime import datetime
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from highdicom.color import CIELabColor
from pydicom import dcmread
from pydicom.dataset import Dataset

from dicom_node.findings import Algorithm, Box, ImageFinding
from dicom_node.gsps import (
    CONTENT_DESCRIPTION,
    CONTENT_LABEL,
    GRAYSCALE_SOFTCOPY_PRESENTATION_STATE,
    LAYER,
    OVERLAY_GROUP,
    SERIES_DESCRIPTION,
    GSPSBuildError,
    build_gsps,
    outline_width,
)
from dicom_node.overlay_style import box_style
from dicom_node.secondary_capture import dataset_bytes
from dicom_node.uids import IMPLEMENTATION_CLASS_UID, implementation_version_name

from dicom_factory import CR, DX, make_radiograph
from helpers import need_tool

STUDY = "1.2.826.0.1.3680043.8.498.4343"
SERIES = STUDY + ".1"
IMAGE_UID = STUDY + ".1.1"
GSPS_UID = STUDY + ".901.1"
GSPS_SERIES = STUDY + ".901"
WHEN = datetime(2021, 3, 4, 5, 6, 7)
PATIENT_NAME = "Doe^Jane"
PATIENT_ID = "PAT-SECRET-42"
SIZE = 256
ALGORITHM = Algorithm(
    name="xrayd-densenet121",
    version="2.1.0",
    weights_sha256="ab" * 32,
    parameters={"threshold_present": "0.62"},
)
#: Two boxes on the image, and the closed POLYLINE (column, row pairs) each must become.
BOXES = (
    Box(row0=60, col0=40, row1=140, col1=120),
    Box(row0=180.5, col0=150, row1=230, col1=200.25),
)
POLYLINES = (
    [40, 60, 120, 60, 120, 140, 40, 140, 40, 60],
    [150, 180.5, 200.25, 180.5, 200.25, 230, 150, 230, 150, 180.5],
)
TEXTS = {
    "present": "AI: fracture PRESENT p=0.97",
    "indeterminate": "AI: fracture INDETERMINATE p=0.55",
    "absent": "AI: fracture ABSENT p=0.04",
}
PROBABILITIES = {"present": 0.97, "indeterminate": 0.55, "absent": 0.04}


def radiograph(sop_class: str = DX, **attributes: Any) -> Dataset:
    """The source image, pixel data included (DCMTK renders it); attributes set or deleted."""
    ds = make_radiograph(
        sop_class=sop_class,
        rows=SIZE,
        cols=SIZE,
        study_uid=STUDY,
        series_uid=SERIES,
        sop_uid=IMAGE_UID,
        patient_id=PATIENT_ID,
        patient_name=PATIENT_NAME,
    )
    ds.ReferringPhysicianName = "Ref^Erring"
    for keyword, value in attributes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return ds


def header(image: Dataset) -> Dataset:
    """What the builder gets: the header, no pixel data."""
    ds = Dataset()
    ds.update(image)
    del ds.PixelData
    return ds


def finding(decision: str = "present", boxes: tuple[Box, ...] = BOXES, **kw: Any) -> ImageFinding:
    args: dict[str, Any] = {
        "sop_instance_uid": IMAGE_UID,
        "sop_class_uid": DX,
        "series_instance_uid": SERIES,
        "rows": SIZE,
        "columns": SIZE,
        "decision": decision,
        "fracture_probability": PROBABILITIES[decision],
        "count": "0" if decision == "absent" else "1",
        "body_part": "hand",
        "body_part_probability": 0.9,
        "hardware": False,
        "hardware_probability": 0.1,
        "boxes": boxes,
    }
    args.update(kw)
    return ImageFinding(**args)


def build(
    image_finding: ImageFinding | None = None, source: Dataset | None = None, **kw: Any
) -> Dataset:
    args: dict[str, Any] = {
        "sop_instance_uid": GSPS_UID,
        "series_instance_uid": GSPS_SERIES,
        "series_number": 901,
        "instance_number": 1,
        "content_datetime": WHEN,
        "algorithm": ALGORITHM,
        "software_version": "0.9.1",
    }
    args.update(kw)
    return build_gsps(image_finding or finding(), source or header(radiograph()), **args)


def annotation(gsps: Dataset) -> Dataset:
    item: Dataset
    (item,) = gsps.GraphicAnnotationSequence
    return item


def polylines(gsps: Dataset) -> list[list[float]]:
    return [
        [float(v) for v in g.GraphicData] for g in annotation(gsps).get("GraphicObjectSequence", [])
    ]


def has_overlay(gsps: Dataset) -> bool:
    return len(gsps.group_dataset(OVERLAY_GROUP)) > 0


def overlay_on_image(gsps: Dataset, shape: tuple[int, int]) -> np.ndarray:
    """The overlay bitmap as pydicom unpacks it, placed on the image at its Overlay Origin."""
    group = OVERLAY_GROUP << 16
    top, left = (int(v) - 1 for v in gsps[group | 0x0050].value)
    bitmap = gsps.overlay_array(OVERLAY_GROUP).astype(bool)
    out = np.zeros(shape, dtype=bool)
    out[top : top + bitmap.shape[0], left : left + bitmap.shape[1]] = bitmap
    return out


def outline_zones(
    boxes: tuple[Box, ...], shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(on, interior, away): pixels inside a box within 1 px of its outline, pixels inside a box
    more than 2 px from it, and pixels more than 2 px from every outline (inside or out)."""
    distance = np.minimum.reduce([outline_distance(box, shape) for box in boxes])
    inside = np.logical_or.reduce([in_extent(box, shape) for box in boxes])
    return inside & (distance <= 1.0), inside & (distance > 2.0), distance > 2.0


def in_extent(box: Box, shape: tuple[int, int]) -> np.ndarray:
    """The pixels the box touches (pixel (r, c) covers [r, r+1) x [c, c+1))."""
    r, c = np.mgrid[0 : shape[0], 0 : shape[1]]
    touches: np.ndarray = (r + 1 > box.row0) & (r < box.row1) & (c + 1 > box.col0) & (c < box.col1)
    return touches


# --- content ---------------------------------------------------------------------------------


def test_references_the_source_image_in_its_study() -> None:
    source = header(radiograph())
    gsps = build(source=source)
    assert (gsps.SOPClassUID, gsps.SOPInstanceUID, gsps.Modality) == (
        GRAYSCALE_SOFTCOPY_PRESENTATION_STATE,
        GSPS_UID,
        "PR",
    )
    (series,) = gsps.ReferencedSeriesSequence
    (image,) = series.ReferencedImageSequence
    assert (
        series.SeriesInstanceUID,
        image.ReferencedSOPClassUID,
        image.ReferencedSOPInstanceUID,
    ) == (
        SERIES,
        DX,
        IMAGE_UID,
    )
    (on,) = annotation(gsps).ReferencedImageSequence
    assert (on.ReferencedSOPClassUID, on.ReferencedSOPInstanceUID) == (DX, IMAGE_UID)
    for keyword in (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "StudyDate",
        "StudyTime",
        "StudyID",
        "AccessionNumber",
        "ReferringPhysicianName",
    ):
        assert gsps[keyword].value == source[keyword].value, keyword
    assert (gsps.SeriesInstanceUID, gsps.SeriesNumber, gsps.InstanceNumber) == (GSPS_SERIES, 901, 1)
    assert gsps.SeriesDescription == SERIES_DESCRIPTION
    assert (gsps.ContentLabel, gsps.ContentDescription) == (CONTENT_LABEL, CONTENT_DESCRIPTION)
    assert gsps.SpecificCharacterSet == "ISO_IR 192"
    assert gsps.BodyPartExamined == "HAND"
    # The source keeps its pixel data out of it and is not modified.
    assert "PixelData" not in gsps and "PixelData" not in source
    assert "WindowCenter" in source


def test_clock_and_equipment_are_pinned_to_content_datetime() -> None:
    gsps = build()
    for keyword, value in (
        ("PresentationCreationDate", "20210304"),
        ("PresentationCreationTime", "050607"),
        ("InstanceCreationDate", "20210304"),
        ("InstanceCreationTime", "050607"),
        ("SeriesDate", "20210304"),
        ("SeriesTime", "050607"),
    ):
        assert str(gsps[keyword].value) == value, keyword
    by_model = {item.ManufacturerModelName: item for item in gsps.ContributingEquipmentSequence}
    assert set(by_model) == {"xrayd", "xrayd-densenet121", "highdicom"}
    assert {str(item.ContributionDateTime) for item in by_model.values()} == {"20210304050607"}
    assert ALGORITHM.weights_sha256 in by_model["xrayd-densenet121"].ContributionDescription
    assert list(gsps.SoftwareVersions) == ["0.9.1", "xrayd-densenet121 2.1.0"]
    assert gsps.Manufacturer == "xrayd project"


@pytest.mark.parametrize("decision", ["present", "indeterminate"])
def test_one_closed_polyline_per_box(decision: str) -> None:
    gsps = build(finding(decision))
    assert annotation(gsps).GraphicLayer == LAYER
    objects = annotation(gsps).GraphicObjectSequence
    assert [g.GraphicType for g in objects] == ["POLYLINE"] * 2
    assert [g.GraphicAnnotationUnits for g in objects] == ["PIXEL"] * 2
    assert [g.NumberOfGraphicPoints for g in objects] == [5] * 2
    assert [g.GraphicFilled for g in objects] == ["N"] * 2
    assert polylines(gsps) == [[float(v) for v in line] for line in POLYLINES]
    (layer,) = gsps.GraphicLayerSequence
    assert layer.GraphicLayer == LAYER
    assert layer.GraphicLayerRecommendedDisplayGrayscaleValue == 0xFFFF


@pytest.mark.parametrize("decision", ["present", "indeterminate"])
def test_boxes_take_the_overlay_style_colour_and_line_style(decision: str) -> None:
    """Red solid for present, amber dashed for indeterminate: the layer's recommended colour
    (what most viewers use) and each outline's Line Style Sequence, as in the Secondary
    Capture, the PDF and the web viewer."""
    style = box_style(decision)
    assert style is not None
    lab = list(CIELabColor.from_rgb(*style.colour).value)
    gsps = build(finding(decision))
    (layer,) = gsps.GraphicLayerSequence
    assert list(layer.GraphicLayerRecommendedDisplayCIELabValue) == lab
    back = CIELabColor.from_dicom_value(layer.GraphicLayerRecommendedDisplayCIELabValue).to_rgb()
    assert np.abs(np.subtract(back, style.colour)).max() <= 2  # the palette's colour, in CIELab
    for graphic in annotation(gsps).GraphicObjectSequence:
        (line,) = graphic.LineStyleSequence
        assert list(line.PatternOnColorCIELabValue) == lab
        assert (line.PatternOnOpacity, line.LineThickness) == (1.0, outline_width(SIZE, SIZE))
        assert line.LineDashingStyle == ("DASHED" if style.dashed else "SOLID")
        assert ("LinePattern" in line) == style.dashed
        assert (line.ShadowStyle, line.ShadowOpacity) == ("OFF", 0.0)


def test_a_result_without_boxes_keeps_a_neutral_layer_colour() -> None:
    (layer,) = build(finding("absent")).GraphicLayerSequence
    yellow = list(CIELabColor.from_rgb(255, 255, 0).value)
    assert list(layer.GraphicLayerRecommendedDisplayCIELabValue) == yellow


def test_absent_draws_no_box_only_the_text() -> None:
    gsps = build(finding("absent"))  # the model's boxes are there; they are not drawn
    assert "GraphicObjectSequence" not in annotation(gsps)
    assert not has_overlay(gsps)
    (text,) = annotation(gsps).TextObjectSequence
    assert text.UnformattedTextValue == TEXTS["absent"]


def test_no_boxes_no_graphics_even_when_present() -> None:
    gsps = build(finding("present", boxes=()))
    assert "GraphicObjectSequence" not in annotation(gsps)
    assert not has_overlay(gsps)
    assert [t.UnformattedTextValue for t in annotation(gsps).TextObjectSequence] == [
        TEXTS["present"]
    ]


@pytest.mark.parametrize("decision", ["present", "indeterminate"])
def test_overlay_outlines_the_boxes_on_the_ai_layer(decision: str) -> None:
    gsps = build(finding(decision))
    group = OVERLAY_GROUP << 16
    assert gsps[group | 0x1001].value == LAYER  # Overlay Activation Layer
    assert (gsps[group | 0x0040].value, gsps[group | 0x0045].value) == ("G", "AUTOMATED")
    assert (gsps[group | 0x0100].value, gsps[group | 0x0102].value) == (1, 0)
    assert gsps[group | 0x1500].value == "AI fracture regions"
    assert "AI fracture regions" in gsps[group | 0x0022].value
    rows, columns = gsps[group | 0x0010].value, gsps[group | 0x0011].value
    data = gsps[group | 0x3000].value
    assert len(data) % 2 == 0 and len(data) - (rows * columns + 7) // 8 in (0, 1)
    drawn = overlay_on_image(gsps, (SIZE, SIZE))
    on, interior, away = outline_zones(BOXES, (SIZE, SIZE))
    if decision == "present":
        assert drawn[on].all()  # every side of every box, closed
    else:  # dashed (overlay_style): dashes of 3 widths, gaps of 2, corners drawn
        assert 0.5 < drawn[on].mean() < 0.75, drawn[on].mean()
        for box in BOXES:
            r0, c0 = int(box.row0), int(box.col0)
            top_side = drawn[r0, c0 : int(np.ceil(box.col1))]
            assert top_side[:6].all() and not top_side[6:10].any(), top_side[:12]
    assert not (drawn & interior).any() and not (drawn & away).any()
    inside = np.logical_or.reduce([in_extent(box, (SIZE, SIZE)) for box in BOXES])
    assert not (drawn & ~inside).any()  # drawn inside the boxes, as the polylines bound them
    assert outline_width(SIZE, SIZE) == 2


def test_overlay_covers_only_the_bounding_rectangle_of_the_boxes() -> None:
    group = OVERLAY_GROUP << 16
    gsps = build()
    bounding = (230 - 60) * (201 - 40)  # rows 60..229, columns 40..200 (200.25 rounded out)
    assert gsps[group | 0x0010].value * gsps[group | 0x0011].value <= bounding
    assert list(gsps[group | 0x0050].value) == [61, 41]  # 1-based row\column
    # A large image, one box: the bitmap is the box, not the image.
    rows, columns = 2000, 2500
    box = Box(row0=1200, col0=800, row1=1450.5, col1=1130)
    big = build(
        finding(boxes=(box,), rows=rows, columns=columns),
        header(radiograph(Rows=rows, Columns=columns)),
    )
    size = (big[group | 0x0010].value, big[group | 0x0011].value)
    assert size[0] * size[1] <= 251 * 330 < rows * columns // 50
    assert list(big[group | 0x0050].value) == [1201, 801]
    assert len(big[group | 0x3000].value) <= 251 * 330 // 8 + 2
    drawn = overlay_on_image(big, (rows, columns))
    width = outline_width(rows, columns)
    assert width == 8
    assert drawn[1200:1208, 800:1130].all() and drawn[1200:1451, 800:808].all()
    assert not drawn[1208:1443, 808:1122].any()  # hollow


@pytest.mark.parametrize("decision", sorted(TEXTS))
def test_result_text_in_the_top_left_area_inside_the_image(decision: str) -> None:
    (text,) = annotation(build(finding(decision))).TextObjectSequence
    assert text.UnformattedTextValue == TEXTS[decision]
    assert text.BoundingBoxAnnotationUnits == "PIXEL"
    assert text.BoundingBoxTextHorizontalJustification == "LEFT"
    left, top = (float(v) for v in text.BoundingBoxTopLeftHandCorner)
    right, bottom = (float(v) for v in text.BoundingBoxBottomRightHandCorner)
    assert 0 < left < SIZE / 10 and 0 < top < SIZE / 10  # top-left, inside
    assert left < right <= SIZE and top < bottom <= SIZE / 4


# --- pixel-value transformations --------------------------------------------------------------


def voi(gsps: Dataset) -> Dataset:
    item: Dataset
    (item,) = gsps.SoftcopyVOILUTSequence
    return item


def test_keeps_the_source_window() -> None:
    source = header(radiograph(WindowCenterWidthExplanation="BONE", VOILUTFunction="SIGMOID"))
    gsps = build(source=source)
    item = voi(gsps)
    assert (float(item.WindowCenter), float(item.WindowWidth)) == (2000.0, 4000.0)
    assert item.WindowCenterWidthExplanation == "BONE"  # not "B\O\N\E"
    assert item.VOILUTFunction == "SIGMOID"
    assert "ReferencedImageSequence" not in item  # applies to the one referenced image
    assert gsps.PresentationLUTShape == "IDENTITY"
    assert "RescaleSlope" not in gsps and "ModalityLUTSequence" not in gsps


def test_linear_voi_lut_function_left_implicit() -> None:
    item = voi(build(source=header(radiograph(VOILUTFunction="LINEAR"))))
    assert "VOILUTFunction" not in item  # LINEAR is the default


def test_first_of_several_windows() -> None:
    source = header(radiograph(WindowCenter=[1500, 2500], WindowWidth=[3000, 1000]))
    item = voi(build(source=source))
    assert (float(item.WindowCenter), float(item.WindowWidth)) == (1500.0, 3000.0)


@pytest.mark.parametrize(
    ("attributes", "center", "width"),
    [
        ({}, 2048.0, 4096.0),  # 12 bits stored, unsigned
        ({"RescaleSlope": 2, "RescaleIntercept": -1000}, 3095.5, 8191.0),  # -1000..7190
        ({"PixelRepresentation": 1}, 0.0, 4096.0),
    ],
)
def test_full_range_window_without_one_in_the_source(
    attributes: dict[str, Any], center: float, width: float
) -> None:
    source = header(radiograph(WindowCenter=None, WindowWidth=None, **attributes))
    item = voi(build(source=source))
    assert (float(item.WindowCenter), float(item.WindowWidth)) == (center, width)
    assert item.WindowCenterWidthExplanation == "FULL RANGE"


def test_copies_the_modality_rescale() -> None:
    source = header(radiograph(RescaleSlope=2, RescaleIntercept=-1000, RescaleType="US"))
    gsps = build(source=source)
    assert (float(gsps.RescaleSlope), float(gsps.RescaleIntercept), gsps.RescaleType) == (
        2.0,
        -1000.0,
        "US",
    )


def test_copies_lookup_tables_as_they_are() -> None:
    table = lut_item(np.arange(4096, dtype=np.uint16)[::-1].copy())
    source = header(
        radiograph(
            WindowCenter=None, WindowWidth=None, VOILUTSequence=[table], ModalityLUTSequence=[table]
        )
    )
    gsps = build(source=source)
    (copied,) = voi(gsps).VOILUTSequence
    assert copied.LUTData == table.LUTData and list(copied.LUTDescriptor) == [4096, 0, 12]
    assert "WindowCenter" not in voi(gsps)
    assert gsps.ModalityLUTSequence[0].LUTData == table.LUTData


@pytest.mark.parametrize(
    ("attributes", "shape"),
    [
        ({"PhotometricInterpretation": "MONOCHROME1"}, "INVERSE"),
        ({"PhotometricInterpretation": "MONOCHROME2"}, "IDENTITY"),
        (
            {"PhotometricInterpretation": "MONOCHROME1", "PresentationLUTShape": "INVERSE"},
            "INVERSE",
        ),
    ],
)
def test_presentation_lut_shape(attributes: dict[str, Any], shape: str) -> None:
    assert build(source=header(radiograph(**attributes))).PresentationLUTShape == shape


def lut_item(data: np.ndarray) -> Dataset:
    item = Dataset()
    item.LUTDescriptor = [len(data), 0, 12]
    item["LUTDescriptor"].VR = "US"
    item.LUTData = data.astype("<u2").tobytes()
    item["LUTData"].VR = "OW"
    item.ModalityLUTType = "US"
    return item


# --- determinism, files, privacy, bad input ----------------------------------------------------


def test_identical_inputs_give_identical_bytes() -> None:
    first = dataset_bytes(build())
    assert dataset_bytes(build()) == first
    assert dataset_bytes(build(content_datetime=WHEN.replace(hour=6))) != first
    back = dcmread(BytesIO(first))
    assert back.file_meta.MediaStorageSOPClassUID == GRAYSCALE_SOFTCOPY_PRESENTATION_STATE
    assert back.file_meta.MediaStorageSOPInstanceUID == GSPS_UID
    assert back.file_meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert back.file_meta.ImplementationVersionName == implementation_version_name()
    assert back.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"


def test_non_ascii_patient_name_survives() -> None:
    latin1 = radiograph(SpecificCharacterSet="ISO_IR 100", PatientName="Müller^Jörg")
    buffer = BytesIO()
    latin1.save_as(buffer, enforce_file_format=True)
    received = dcmread(BytesIO(buffer.getvalue()))  # raw ISO 8859-1 bytes, as received
    back = dcmread(BytesIO(dataset_bytes(build(source=header(received)))))
    assert back.SpecificCharacterSet == "ISO_IR 192"
    assert back.PatientName == "Müller^Jörg"


def test_no_patient_identity_in_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    build()
    assert caplog.records
    for record in caplog.records:
        text = record.getMessage() + repr(record.__dict__)
        for secret in ("Doe", "Jane", PATIENT_ID, "19700101"):
            assert secret not in text, record.name


def test_rejects_inconsistent_inputs() -> None:
    with pytest.raises(GSPSBuildError, match="is about"):
        build(finding(sop_instance_uid=IMAGE_UID + "9"))
    with pytest.raises(GSPSBuildError, match="SOP class"):
        build(finding(sop_class_uid=CR))
    with pytest.raises(GSPSBuildError, match="header says"):
        build(finding(rows=SIZE + 1))
    with pytest.raises(GSPSBuildError, match="outside"):
        build(finding(boxes=(Box(0, 0, SIZE + 1, 10),)))
    with pytest.raises(GSPSBuildError, match="probability"):
        build(finding(fracture_probability=float("nan")))
    with pytest.raises(GSPSBuildError, match="decision"):
        build(replace(finding(), decision="maybe"))  # type: ignore[arg-type]
    with pytest.raises(GSPSBuildError, match="single-sample"):
        build(source=header(radiograph(SamplesPerPixel=3)))


# --- the tools' verdicts ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("decision", "attributes", "accepted"),
    [
        # Laterality known: not a single warning.
        ("present", {"ImageLaterality": "R"}, set()),
        # A paired part (HAND) of unknown side: empty Laterality, dciodvfy's one warning.
        ("absent", {}, {"Laterality"}),
        ("indeterminate", {"BodyPartExamined": "CHEST"}, set()),  # unpaired: no Laterality
        (
            "present",
            {
                "ImageLaterality": "L",
                "PhotometricInterpretation": "MONOCHROME1",
                "RescaleSlope": 2,
                "RescaleIntercept": -1000,
                "RescaleType": "US",
                "WindowCenter": None,
                "WindowWidth": None,
            },
            set(),
        ),
    ],
)
def test_dciodvfy_reports_no_errors(
    tmp_path: Path, decision: str, attributes: dict[str, Any], accepted: set[str]
) -> None:
    tool = need_tool("dciodvfy")
    path = tmp_path / "gsps.dcm"
    gsps = build(finding(decision), header(radiograph(**attributes)))
    assert has_overlay(gsps) == (decision != "absent")  # the Overlay Plane is validated too
    path.write_bytes(dataset_bytes(gsps))
    result = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60)
    report = result.stderr + result.stdout
    assert result.returncode == 0, report
    assert "GrayscaleSoftcopyPresentationState" in report, report  # it did recognise the IOD
    assert not [line for line in report.splitlines() if line.startswith("Error")], report
    warnings = [line for line in report.splitlines() if line.startswith("Warning")]
    unexpected = [w for w in warnings if not any(f"<{a}>" in w for a in accepted)]
    assert not unexpected, report
    assert len(warnings) == len(accepted), report


# --- DCMTK applies it: dcmp2pgm ---------------------------------------------------------------
#
# dcmp2pgm (DCMTK 3.6.7) renders an image through a presentation state's grayscale pipeline
# (Modality LUT, VOI LUT, Presentation LUT) into its output bitmap. It burns neither graphic and
# text annotations nor activated overlays into that bitmap (dcmimgle adds a presentation
# state's overlay planes hidden; only a bitmap shutter would show): it parses the annotations
# and lists them in its verbose dump, and in verbose mode renders each activated overlay as a
# bitmap file of its own, in the layer's display value, with its position on the image. So the
# rendering is checked against DCMTK's own rendering of the image without the GSPS, and the
# boxes are DCMTK's rendering of the overlay, placed where DCMTK says, as a viewer showing the
# AI layer draws it.


def render(tmp_path: Path, image: Dataset, gsps: Dataset | None) -> tuple[np.ndarray, str]:
    """DCMTK's rendering (8-bit PGM) and its dump of the presentation state."""
    tool = need_tool("dcmp2pgm")
    image_path = tmp_path / "image.dcm"
    image.save_as(image_path, enforce_file_format=True)
    out = tmp_path / ("with.pgm" if gsps is not None else "plain.pgm")
    command = [tool, "-v"]
    if gsps is not None:
        gsps_path = tmp_path / "gsps.dcm"
        gsps_path.write_bytes(dataset_bytes(gsps))
        command += ["-p", str(gsps_path)]
    result = subprocess.run(
        [*command, str(image_path), str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log
    assert not [line for line in log.splitlines() if line.startswith(("E:", "F:"))], log
    return read_pgm(out), log


def read_pgm(path: Path) -> np.ndarray:
    data = path.read_bytes()
    magic, width, height, maxval, _ = data.split(maxsplit=4)
    assert (magic, maxval) == (b"P5", b"255")
    w, h = int(width), int(height)
    return np.frombuffer(data[-w * h :], np.uint8).reshape(h, w)


def dumped_polylines(log: str) -> list[list[tuple[float, float]]]:
    """The graphic objects as DCMTK read them: closed pixel-unit polylines, (x, y) points."""
    (count,) = re.findall(r"Number of graphic objects: (\d+)", log)
    found = re.findall(
        r"graphic \d+: points=(\d+) type=(\S+) filled=(\S+) units=(\S+)\s*\n.*coordinates: (.*)",
        log,
    )
    assert len(found) == int(count), log
    lines = []
    for points, kind, filled, units, coordinates in found:
        assert (points, kind, filled, units) == ("5", "polyline", "no", "pixel"), log
        pairs = [p.split("\\") for p in coordinates.strip().rstrip(",").split(", ")]
        lines.append([(float(x), float(y)) for x, y in pairs])
        assert lines[-1][0] == lines[-1][-1], log  # closed
    return lines


def with_dcmtk_overlays(tmp_path: Path, rendered: np.ndarray, log: str) -> np.ndarray:
    """DCMTK's rendering with the overlays DCMTK rendered (verbose mode) drawn where it says."""
    found = re.findall(
        r"columns=(\d+) rows=(\d+) left=(\d+) top=(\d+)\s*\n.*filename=\"([^\"/]+)\" - written",
        log,
    )
    (count,) = {int(n) for n in re.findall(r"Number of activated overlays: (\d+)", log)}
    assert len(found) == count, log
    out = rendered.copy()
    for columns, rows, left, top, name in found:
        bitmap = read_pgm(tmp_path / name)
        w, h, x, y = int(columns), int(rows), int(left), int(top)
        assert bitmap.shape == (h, w), log
        assert set(np.unique(bitmap)) <= {0, 255}, log  # the layer's white over transparent
        region = out[y : y + h, x : x + w]
        region[bitmap == 255] = 255
    return out


def outline_distance(box: Box, shape: tuple[int, int]) -> np.ndarray:
    """Per pixel centre, the distance to the box's outline (in pixels)."""
    r, c = np.mgrid[0 : shape[0], 0 : shape[1]] + 0.5
    dx = np.maximum(np.maximum(box.col0 - c, c - box.col1), 0)
    dy = np.maximum(np.maximum(box.row0 - r, r - box.row1), 0)
    outside = np.hypot(dx, dy)
    inside = np.minimum.reduce([c - box.col0, box.col1 - c, r - box.row0, box.row1 - r])
    distance: np.ndarray = np.where(outside > 0, outside, np.abs(inside))
    return distance


@pytest.mark.parametrize(
    "attributes",
    [
        {},
        {"PhotometricInterpretation": "MONOCHROME1"},
        {"RescaleSlope": 2, "RescaleIntercept": -1000, "WindowCenter": 3000, "WindowWidth": 8000},
    ],
    ids=["monochrome2", "monochrome1", "rescaled"],
)
def test_dcmtk_renders_the_image_as_the_modality_intended(
    tmp_path: Path, attributes: dict[str, Any]
) -> None:
    image = radiograph(**attributes)
    plain, _ = render(tmp_path, image, None)
    with_gsps, log = render(tmp_path, image, build(source=header(image)))
    assert with_gsps.shape == (SIZE, SIZE)
    assert plain.std() > 10  # a real picture, not a flat field
    np.testing.assert_array_equal(with_gsps, plain)
    assert f"Presentation Label: {CONTENT_LABEL}" in log


def test_dcmtk_renders_a_voi_lut_table_as_the_image_does(tmp_path: Path) -> None:
    curve = (np.sqrt(np.arange(4096) / 4095) * 4095).astype(np.uint16)  # not a straight window
    image = radiograph(WindowCenter=None, WindowWidth=None, VOILUTSequence=[lut_item(curve)])
    plain, _ = render(tmp_path, image, None)
    with_gsps, _ = render(tmp_path, image, build(source=header(image)))
    np.testing.assert_array_equal(with_gsps, plain)


def test_dcmtk_renders_the_full_range_window_like_no_window(tmp_path: Path) -> None:
    image = radiograph(WindowCenter=None, WindowWidth=None)
    plain, _ = render(tmp_path, image, None)  # DCMTK: no VOI, the stored range
    with_gsps, log = render(tmp_path, image, build(source=header(image)))
    assert "window center=2048 width=4096" in log
    assert np.abs(with_gsps.astype(int) - plain.astype(int)).max() <= 1  # rounding only


@pytest.mark.parametrize("decision", ["present", "indeterminate"])
def test_dcmtk_draws_the_boxes_on_their_outline(tmp_path: Path, decision: str) -> None:
    image = radiograph()
    plain, _ = render(tmp_path, image, None)
    rendered, log = render(tmp_path, image, build(finding(decision), header(image)))
    assert f'text 1: "{TEXTS[decision]}"' in log
    assert "units=pixel justification=left" in log
    lines = dumped_polylines(log)  # the vector outlines, as DCMTK read them
    assert [[v for point in line for v in point] for line in lines] == [
        [float(v) for v in line] for line in POLYLINES
    ]
    assert 'label="AI fracture regions"' in log and "type=graphic" in log
    drawn = with_dcmtk_overlays(tmp_path, rendered, log) != plain
    on, interior, away = outline_zones(BOXES, plain.shape)
    # the outlines (a pixel may be white already); indeterminate: dashed, 3/5 of the outline
    expected = 0.9 if decision == "present" else 0.5
    assert drawn[on].mean() > expected, drawn[on].mean()
    assert not (drawn & interior).any(), np.argwhere(drawn & interior)[:10]  # not filled
    assert not (drawn & away).any(), np.argwhere(drawn & away)[:10]  # nothing far from a box
    for box in BOXES:  # every side of every box is drawn
        r0, r1, c0, c1 = (
            int(box.row0),
            int(np.ceil(box.row1)),
            int(box.col0),
            int(np.ceil(box.col1)),
        )
        for side in (drawn[r0 : r0 + 1, c0:c1], drawn[r1 - 1 : r1, c0:c1]):
            assert side.mean() > expected, box
            if decision != "present":
                assert not side.all(), box  # gaps: dashed
        for side in (drawn[r0:r1, c0 : c0 + 1], drawn[r0:r1, c1 - 1 : c1]):
            assert side.mean() > expected, box


def test_dcmtk_draws_nothing_for_an_absent_finding(tmp_path: Path) -> None:
    image = radiograph()
    plain, _ = render(tmp_path, image, None)
    rendered, log = render(tmp_path, image, build(finding("absent"), header(image)))
    assert "Number of graphic objects: 0" in log
    assert "Number of activated overlays: 0" in log
    assert f'text 1: "{TEXTS["absent"]}"' in log
    assert dumped_polylines(log) == []
    np.testing.assert_array_equal(with_dcmtk_overlays(tmp_path, rendered, log), plain)
