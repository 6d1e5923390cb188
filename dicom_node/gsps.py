"""The AI result drawn over the radiograph: a Grayscale Softcopy Presentation State (highdicom).

One GSPS per analysed image. A viewer that applies it shows the source image as the modality
intended, with xrayd's annotations on one graphic layer (:data:`LAYER`)::

    GSPS (Modality PR), in the source study, in a new series
      General Series: Body Part Examined copied; Laterality R/L from the source's (Image)
          Laterality, empty when unknown (dciodvfy warns), absent for an unpaired body part
      Presentation State Identification: Content Label XRAYD_AI, Content Description
          "AI fracture triage (research, not for clinical use)", Presentation Creation
          Date/Time = content_datetime
      Presentation State Relationship: Referenced Series Sequence -> the source image
      Displayed Area: the whole image, SCALE TO FIT
      Graphic Layer AI (order 1; recommended display: white on grey; in colour the decision's
          box colour from dicom_node.overlay_style: red for present, amber for indeterminate,
          yellow for a result without boxes)
      Graphic Annotation on the source image, layer AI:
          Text Object "AI: fracture PRESENT p=0.97" (ABSENT / INDETERMINATE likewise), bounding
              box in the top-left area of the image, PIXEL units, left-justified
          per box of the finding, only if the decision is "present" or "indeterminate":
              Graphic Object POLYLINE, 5 points (closed), PIXEL units, column/row, not filled,
              with a Line Style Sequence (PS3.3 C.10.5, Type 3): the box colour (CIELab),
              outline_width thick, SOLID for present, DASHED (Line Pattern 0xFFFF0000) for
              indeterminate, no shadow
      Overlay Plane 6000 (only with boxes drawn), activated on layer AI: the box outlines as a
          1-bit bitmap (type G, subtype AUTOMATED), over the bounding rectangle of the boxes only,
          dashed for indeterminate as in the Secondary Capture
      Modality LUT: the source's Rescale Slope/Intercept/Type, or its Modality LUT Sequence
      Softcopy VOI LUT: the source's first window (center, width, explanation, VOI LUT
          Function unless LINEAR, the default); else its first VOI LUT; else a window over
          the full range of stored values (after the Modality LUT)
      Softcopy Presentation LUT: the source's Presentation LUT Shape if it has one, else
          INVERSE for MONOCHROME1 and IDENTITY otherwise

An "absent" result draws no box: on a picture a box reads as a finding, whatever its label.
Colours and line styles are those of :mod:`dicom_node.overlay_style`, so a viewer applying the
presentation state shows the boxes as the Secondary Capture, the PDF and the web viewer do.
The Line Style Sequence is optional in the standard and many viewers ignore it (they draw the
layer's recommended colour, solid): the layer colour carries the decision's colour for them, and
the overlay bitmap is dashed for indeterminate, so the two styles stay apart there too.

Boxes twice (built in :mod:`dicom_node.gsps_boxes`). The vector POLYLINEs are the standard
way, what PACS viewers and Weasis draw. The same outlines are also stored as an overlay bitmap
(:data:`OVERLAY_GROUP`, activated on the AI layer) for software that shows presentation-state
overlays but no graphic annotations; the bitmap lies inside the boxes, :func:`outline_width`
pixels wide along their edges, so the two coincide. It covers only the bounding rectangle of
the boxes (Overlay Origin), not the whole image: a long-leg radiograph is 7,000 x 17,000
pixels. The text is a text annotation only.
DCMTK 3.6.7's ``dcmp2pgm`` reads both; it burns neither into its output bitmap (it renders
activated overlays as separate bitmaps, with the layer's display value, in verbose mode).

Windowing. In a presentation state, the Modality LUT, VOI LUT and Presentation LUT of the
state *replace* those of the image (PS3.4 N.2.1): an image transformation that is not repeated
in the GSPS is not applied. So each is copied from the source header, and the Presentation LUT
Shape is INVERSE for MONOCHROME1 images (the GSPS pipeline ends in P-values; the Photometric
Interpretation of the image is not applied on top). Only the first window / VOI LUT of the
source is kept: it is the one the modality offers as the default.

Deterministic: highdicom stamps the wall clock into Presentation Creation Date/Time, Instance
Creation Date/Time and its own Contributing Equipment item; all are overwritten with
``content_datetime``; every UID is passed in. The same inputs give the same bytes
(:func:`dicom_node.secondary_capture.dataset_bytes`).
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Sequence
from datetime import datetime

from highdicom import (
    ModalityLUTTransformation,
    PresentationLUTShapeValues,
    PresentationLUTTransformation,
)
from highdicom.color import CIELabColor
from highdicom.pr import (
    AnnotationUnitsValues,
    GraphicAnnotation,
    GraphicLayer,
    GrayscaleSoftcopyPresentationState,
    SoftcopyVOILUTTransformation,
    TextJustificationValues,
    TextObject,
)
from pydicom.dataset import Dataset
from pydicom.uid import UID

from dicom_node import codes
from dicom_node.errors import DicomNodeError
from dicom_node.findings import Algorithm, ImageFinding
from dicom_node.gsps_boxes import (
    DASH_PATTERN,
    LAYER,
    OVERLAY_GROUP,
    add_outline_overlay,
    box_polyline,
    outline_width,
)
from dicom_node.overlay_style import box_style
from dicom_node.provenance import patient_study_header, pin_clock, processing_equipment
from dicom_node.secondary_capture import UNPAIRED_BODY_PARTS

__all__ = [
    "CONTENT_DESCRIPTION",
    "CONTENT_LABEL",
    "DASH_PATTERN",
    "GRAYSCALE_SOFTCOPY_PRESENTATION_STATE",
    "LAYER",
    "OVERLAY_GROUP",
    "SERIES_DESCRIPTION",
    "GSPSBuildError",
    "build_gsps",
    "outline_width",
    "result_text",
]

LOGGER = logging.getLogger(__name__)

GRAYSCALE_SOFTCOPY_PRESENTATION_STATE = UID("1.2.840.10008.5.1.4.1.1.11.1")
SERIES_DESCRIPTION = "xrayd AI fracture annotations (research, not for clinical use)"
CONTENT_LABEL = "XRAYD_AI"
CONTENT_DESCRIPTION = "AI fracture triage (research, not for clinical use)"
LAYER_DESCRIPTION = "xrayd AI fracture triage: result and boxes (research use)"
#: Recommended display of the layer: white on a grayscale display; on a colour one the box
#: colour of the decision (overlay_style), yellow where no box is drawn (the text alone).
LAYER_GRAY = 0xFFFF
LAYER_COLOR = (255, 255, 0)
#: The decisions that draw their boxes; "absent" draws none.
DRAWN = frozenset({"present", "indeterminate"})
#: Pixel-value transformations that this module copies itself (highdicom would read some of
#: them from the referenced image, and fail on a header with both a window and a VOI LUT).
_TRANSFORMATIONS = (
    "RescaleSlope",
    "RescaleIntercept",
    "RescaleType",
    "ModalityLUTSequence",
    "WindowCenter",
    "WindowWidth",
    "WindowCenterWidthExplanation",
    "VOILUTFunction",
    "VOILUTSequence",
)
_PRESENTATION_LUT_SHAPES = frozenset({"IDENTITY", "INVERSE"})
#: VOI LUT Functions copied from the source. LINEAR is the default and is left implicit: some
#: viewers (OHIF 3.13) render an explicit LINEAR black.
_VOI_LUT_FUNCTIONS = frozenset({"LINEAR_EXACT", "SIGMOID"})


class GSPSBuildError(DicomNodeError, ValueError):
    """The finding and the source header cannot make a consistent GSPS (a caller bug)."""


def result_text(finding: ImageFinding) -> str:
    """The text annotation: ``AI: fracture PRESENT p=0.97`` (ABSENT, INDETERMINATE)."""
    return f"AI: fracture {finding.decision.upper()} p={finding.fracture_probability:.2f}"


def build_gsps(
    finding: ImageFinding,
    source: Dataset,
    *,
    sop_instance_uid: str,
    series_instance_uid: str,
    series_number: int,
    instance_number: int,
    content_datetime: datetime,
    algorithm: Algorithm,
    software_version: str,
    manufacturer: str = "xrayd project",
) -> Dataset:
    """The GSPS that shows ``finding`` over its source image.

    ``source`` is the header of the analysed image (pixel data not needed): the GSPS joins its
    study, references it and copies its pixel-value transformations. The caller chooses the
    UIDs and the date/time, so identical inputs give an identical data set.
    """
    _check_inputs(finding, source)
    head = _reference_header(source)
    style = box_style(finding.decision) if finding.decision in DRAWN else None
    layer = GraphicLayer(
        layer_name=LAYER,
        order=1,
        description=LAYER_DESCRIPTION,
        display_color=CIELabColor.from_rgb(*(LAYER_COLOR if style is None else style.colour)),
    )
    layer.GraphicLayerRecommendedDisplayGrayscaleValue = LAYER_GRAY
    width = outline_width(finding.rows, finding.columns)
    boxes = (
        [box_polyline(box, style.colour, width, dashed=style.dashed) for box in finding.boxes]
        if style is not None
        else []
    )
    annotation = GraphicAnnotation(
        referenced_images=[head],
        graphic_layer=layer,
        graphic_objects=boxes or None,
        text_objects=[_text(finding)],
    )
    gsps = GrayscaleSoftcopyPresentationState(
        referenced_images=[head],
        series_instance_uid=series_instance_uid,
        series_number=series_number,
        sop_instance_uid=sop_instance_uid,
        instance_number=instance_number,
        manufacturer=manufacturer,
        manufacturer_model_name="xrayd",
        software_versions=software_version,  # both versions are set below (highdicom's hint)
        device_serial_number=None,  # type: ignore[arg-type]  # documented as optional
        content_label=CONTENT_LABEL,
        content_description=CONTENT_DESCRIPTION,
        graphic_annotations=[annotation],
        graphic_layers=[layer],
        modality_lut_transformation=_rescale(source),
        voi_lut_transformations=[_window(source)],
        presentation_lut_transformation=PresentationLUTTransformation(
            presentation_lut_shape=_presentation_lut_shape(source)
        ),
        contributing_equipment=processing_equipment(
            algorithm,
            device_name="xrayd",
            manufacturer=manufacturer,
            software_version=software_version,
            when=content_datetime,
            contribution="drew the AI result over the referenced image",
        ),
        series_description=SERIES_DESCRIPTION,
        specific_character_set="ISO_IR 192",  # UTF-8: patient names from any source
        series_date=content_datetime.date(),
        series_time=content_datetime.time(),
    )
    ds: Dataset = gsps
    ds.SoftwareVersions = [software_version, f"{algorithm.name} {algorithm.version}"]
    _copy_lut_sequences(source, ds)
    overlay = add_outline_overlay(ds, finding) if boxes else None
    _series_anatomy(source, ds)
    pin_clock(
        ds,
        content_datetime,
        [
            ("PresentationCreationDate", "PresentationCreationTime"),
            *([("ContentDate", "ContentTime")] if "ContentDate" in ds else []),
        ],
    )
    LOGGER.debug(
        "built fracture GSPS",
        extra={
            "sop_instance_uid": sop_instance_uid,
            "decision": finding.decision,
            "boxes": len(boxes),
            "overlay": overlay,
        },
    )
    return ds


# --- annotations -----------------------------------------------------------------------------


def _text(finding: ImageFinding) -> TextObject:
    """The result line in a band along the top of the image (inside it, PIXEL units)."""
    rows, cols = finding.rows, finding.columns
    margin = max(1.0, float(round(min(rows, cols) * 0.02)))
    height = min(max(8.0, float(round(rows * 0.06))), rows - 2 * margin)
    return TextObject(
        text_value=result_text(finding),
        units=AnnotationUnitsValues.PIXEL,
        bounding_box=(margin, margin, cols - margin, margin + height),
        text_justification=TextJustificationValues.LEFT,
    )


# --- pixel-value transformations ------------------------------------------------------------


def _rescale(source: Dataset) -> ModalityLUTTransformation | None:
    """The source's Rescale Slope/Intercept (Type from the source, else US: unspecified)."""
    if "RescaleSlope" not in source or "RescaleIntercept" not in source:
        return None
    return ModalityLUTTransformation(
        rescale_intercept=float(source.RescaleIntercept),
        rescale_slope=float(source.RescaleSlope),
        rescale_type=str(source.get("RescaleType") or "US"),
    )


def _window(source: Dataset) -> SoftcopyVOILUTTransformation:
    """The source's default window, else a window over the full range of modality values.

    A source with a VOI LUT table but no window gets the full-range window here, which
    :func:`_copy_lut_sequences` then replaces with the table.
    """
    window = _source_window(source)
    if window is not None:
        center, width = window
        explanation = _first(source.get("WindowCenterWidthExplanation"))
        function = str(source.get("VOILUTFunction", "")).upper()
        voi = SoftcopyVOILUTTransformation(
            window_center=center,
            window_width=width,
            voi_lut_function=function if function in _VOI_LUT_FUNCTIONS else None,
        )
    else:
        low, high = _modality_range(source)
        voi = SoftcopyVOILUTTransformation(
            window_center=(low + high + 1) / 2, window_width=max(1.0, high - low + 1)
        )
        explanation = "FULL RANGE"
    if explanation:
        # Set here: highdicom 0.28 stores a str explanation as a list of its characters.
        voi.WindowCenterWidthExplanation = [str(explanation)]
    return voi


def _source_window(source: Dataset) -> tuple[float, float] | None:
    """(center, width) of the source's first window; None when it has no usable one."""
    center = _first(source.get("WindowCenter"))
    width = _first(source.get("WindowWidth"))
    if center is None or width is None:
        return None
    center_value, width_value = float(center), float(width)  # type: ignore[arg-type]
    if not (math.isfinite(center_value) and math.isfinite(width_value) and width_value >= 1):
        return None
    return center_value, width_value


def _copy_lut_sequences(source: Dataset, ds: Dataset) -> None:
    """Modality LUT and VOI LUT *tables* of the source, copied as they are (data untouched)."""
    if "RescaleSlope" not in ds and source.get("ModalityLUTSequence"):
        ds.ModalityLUTSequence = [copy.deepcopy(source.ModalityLUTSequence[0])]
    if _source_window(source) is None and source.get("VOILUTSequence"):
        voi = Dataset()
        voi.VOILUTSequence = [copy.deepcopy(source.VOILUTSequence[0])]
        ds.SoftcopyVOILUTSequence = [voi]


def _modality_range(source: Dataset) -> tuple[float, float]:
    """The lowest and highest value the Modality LUT can give for the stored bits."""
    bits = int(source.get("BitsStored") or source.get("BitsAllocated") or 16)
    if source.get("PixelRepresentation") == 1:
        low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    else:
        low, high = 0, 2**bits - 1
    if "RescaleSlope" in source and "RescaleIntercept" in source:
        slope, intercept = float(source.RescaleSlope), float(source.RescaleIntercept)
        ends = sorted((low * slope + intercept, high * slope + intercept))
        return ends[0], ends[1]
    if source.get("ModalityLUTSequence"):
        descriptor = source.ModalityLUTSequence[0].get("LUTDescriptor") or (0, 0, 16)
        return 0.0, float(2 ** int(descriptor[2]) - 1)
    return float(low), float(high)


def _presentation_lut_shape(source: Dataset) -> PresentationLUTShapeValues:
    shape = str(source.get("PresentationLUTShape", "")).upper()
    if shape in _PRESENTATION_LUT_SHAPES:
        return PresentationLUTShapeValues(shape)
    if source.get("PhotometricInterpretation") == "MONOCHROME1":
        return PresentationLUTShapeValues.INVERSE
    return PresentationLUTShapeValues.IDENTITY


def _first(value: object) -> object | None:
    """The first value of a possibly multi-valued attribute; None when absent or empty."""
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        value = value[0] if len(value) else None
    return None if value is None or value == "" else value


# --- header ----------------------------------------------------------------------------------


def _reference_header(source: Dataset) -> Dataset:
    """What highdicom reads: the source header, type 2 filled, transformations left out."""
    head = patient_study_header(source)
    for keyword in _TRANSFORMATIONS:
        if keyword in head:
            delattr(head, keyword)
    if "SamplesPerPixel" not in head:
        head.SamplesPerPixel = 1
    return head


def _series_anatomy(source: Dataset, ds: Dataset) -> None:
    """Body Part Examined (type 3) and Laterality (General Series, type 2C "paired part").

    As in :mod:`dicom_node.secondary_capture`: R/L from the source, else empty (unknown)
    unless the body part is a known unpaired one, where Laterality is left out.
    """
    body_part = str(source.get("BodyPartExamined") or "")
    if body_part:
        ds.BodyPartExamined = body_part
    for keyword in ("Laterality", "ImageLaterality"):
        value = source.get(keyword)
        if value in ("L", "R"):
            ds.Laterality = value
            return
    if body_part.upper() not in UNPAIRED_BODY_PARTS:
        ds.Laterality = ""


def _check_inputs(finding: ImageFinding, source: Dataset) -> None:
    for keyword in ("SOPInstanceUID", "SOPClassUID", "SeriesInstanceUID", "StudyInstanceUID"):
        if not source.get(keyword):
            raise GSPSBuildError(f"the source header has no {keyword}")
    if source.SOPInstanceUID != finding.sop_instance_uid:
        raise GSPSBuildError(
            f"the finding is about {finding.sop_instance_uid}, the header {source.SOPInstanceUID}"
        )
    if source.SOPClassUID != finding.sop_class_uid:
        raise GSPSBuildError(f"SOP class of {finding.sop_instance_uid} differs from its header")
    if (source.get("Rows"), source.get("Columns")) != (finding.rows, finding.columns):
        raise GSPSBuildError(
            f"the finding's image is {finding.rows}x{finding.columns}, the header says "
            f"{source.get('Rows')}x{source.get('Columns')}"
        )
    if int(source.get("SamplesPerPixel", 1)) != 1:
        raise GSPSBuildError("a grayscale presentation state needs a single-sample image")
    if finding.rows < 8 or finding.columns < 8:
        raise GSPSBuildError(f"image {finding.rows}x{finding.columns} too small to annotate")
    if finding.decision not in codes.PRESENCE:
        raise GSPSBuildError(f"unknown decision {finding.decision!r}")
    probability = finding.fracture_probability
    if not (math.isfinite(probability) and 0.0 <= probability <= 1.0):
        raise GSPSBuildError(f"a probability must lie in [0, 1], got {probability!r}")
    for box in finding.boxes:
        if box.row1 > finding.rows or box.col1 > finding.columns:
            raise GSPSBuildError(
                f"box {box} outside the {finding.rows}x{finding.columns} image "
                f"{finding.sop_instance_uid}"
            )
