"""The burned-in Secondary Capture: one RGB picture per analysed radiograph that any viewer shows.

Built with pydicom rather than ``highdicom.sc.SCImage``: that class stamps the wall clock into
five attributes (creation, content and capture date/time, its own Contributing Equipment item),
hard-codes Modality "OT" and only accepts single-letter Patient Orientation values, so it can be
neither deterministic nor faithful to a radiograph's orientation (e.g. ``FL``). The item of the
Contributing Equipment Sequence is still built with highdicom (it checks the purpose code and
the value lengths), with our own contribution date/time.

IOD choices (Secondary Capture Image, PS3.3 A.8.1), all accepted by dciodvfy without errors:

- Modality is copied from the source (DX/CR/...). In this IOD the SC Equipment module redefines
  Modality as the modality of the *source equipment* of the captured image, which is exactly
  what a rendering of a DX image is; "OT" would also pass, but copying it lets hanging protocols
  and worklists place the capture beside its radiograph. Sources without a Modality give "OT".
- Conversion Type "WSD" (workstation): the picture is synthesised by software, not digitised.
- Image Type DERIVED\\SECONDARY, Burned In Annotation YES, Lossy Image Compression copied as
  "01" when the source was lossy (the capture inherits its losses), "00" otherwise.
- Source Image Sequence (General Reference) names the source SOP instance with purpose
  (DCM 121322, "Source image for image processing operation"), and Derivation Description says
  what was drawn.
- Patient Orientation is copied (the banner is added above the image, so the row and column
  directions are unchanged); empty (type 2) when the source has none. Pixel spacing is not
  copied: the capture is for viewing, not for measuring.
- Laterality (General Series, type 2C "if the body part is paired"): R/L from the source's
  Laterality or Image Laterality; otherwise empty ("unknown", a dciodvfy *warning* for paired
  parts) unless Body Part Examined is a known unpaired term, where it is left out (present
  there would be a dciodvfy error). dciodvfy treats unknown and missing body parts as paired.
- Specific Character Set "ISO_IR 192" (UTF-8), since copied patient names may be non-ASCII;
  values read from a source in another character set are re-encoded.
"""

from __future__ import annotations

from datetime import datetime
from io import BytesIO

import numpy as np
from highdicom import ContributingEquipment
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import UID

from dicom_node.findings import Algorithm
from dicom_node.provenance import da, dt, tm
from dicom_node.uids import file_meta

__all__ = [
    "SECONDARY_CAPTURE_IMAGE_STORAGE",
    "build_secondary_capture",
    "contributing_equipment",
    "copy_patient_and_study",
    "dataset_bytes",
]

SECONDARY_CAPTURE_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.7")
MANUFACTURER = "xrayd"
SERIES_DESCRIPTION = "xrayd AI fracture overlay"
DISCLAIMER = "AI result - not a diagnosis. Research software, not for clinical use."
DERIVATION = (
    "Windowed source image rendered in RGB with the AI fracture heatmap, boxes and a result "
    "banner burned in (banner added above the image)."
)
#: The attributes of the Patient and General Study modules copied from the source (type 2).
PATIENT_STUDY_TYPE2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "ReferringPhysicianName",
    "StudyID",
)
#: Copied when present (type 3): they help a PACS file the result with its study.
PATIENT_STUDY_OPTIONAL = ("IssuerOfPatientID", "StudyDescription")
#: Body Part Examined terms of unpaired structures (no Laterality); each checked with dciodvfy.
UNPAIRED_BODY_PARTS = frozenset(
    {
        "ABDOMEN",
        "ABDOMENPELVIS",
        "BRAIN",
        "CHEST",
        "CHESTABDOMEN",
        "CHESTABDPELVIS",
        "COCCYX",
        "CSPINE",
        "CTSPINE",
        "FACE",
        "HEAD",
        "HEADNECK",
        "HEART",
        "JAW",
        "LARYNX",
        "LSPINE",
        "LSSPINE",
        "MAXILLA",
        "NECK",
        "NOSE",
        "PELVIS",
        "SKULL",
        "SPINE",
        "SSPINE",
        "STERNUM",
        "TLSPINE",
        "TSPINE",
        "WHOLEBODY",
    }
)


def copy_patient_and_study(source: Dataset, target: Dataset) -> None:
    """Patient and study identity of ``source`` onto ``target`` (the result joins the study)."""
    if "StudyInstanceUID" not in source or not source.StudyInstanceUID:
        raise ValueError("source has no Study Instance UID")
    target.StudyInstanceUID = source.StudyInstanceUID
    for keyword in PATIENT_STUDY_TYPE2:
        value = source.get(keyword)
        setattr(target, keyword, "" if value is None else value)
    for keyword in PATIENT_STUDY_OPTIONAL:
        value = source.get(keyword)
        if value not in (None, ""):
            setattr(target, keyword, value)


def contributing_equipment(
    algorithm: Algorithm, software_version: str, when: datetime, description: str
) -> Dataset:
    """The Contributing Equipment item naming xrayd and the model (purpose: processing)."""
    return ContributingEquipment(
        manufacturer=MANUFACTURER,
        manufacturer_model_name=algorithm.name,
        software_versions=[software_version, f"{algorithm.name} {algorithm.version}"],
        purpose_of_reference=codes.DCM.ProcessingEquipment,
        contribution_datetime=dt(when),
        contribution_description=(
            f"{description} Model {algorithm.name} {algorithm.version}, "
            f"weights sha256 {algorithm.weights_sha256}. {DISCLAIMER}"
        ),
    )


def set_common(
    ds: Dataset,
    *,
    sop_class_uid: str,
    sop_instance_uid: str,
    series_instance_uid: str,
    series_number: int,
    instance_number: int,
    content_datetime: datetime,
    algorithm: Algorithm,
    software_version: str,
) -> None:
    """File meta, SOP Common, General Equipment and the series/instance numbering."""
    ds.file_meta = file_meta(sop_class_uid, sop_instance_uid)
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_instance_uid
    ds.InstanceCreationDate = da(content_datetime)
    ds.InstanceCreationTime = tm(content_datetime)
    if content_datetime.utcoffset() is not None:
        ds.TimezoneOffsetFromUTC = content_datetime.strftime("%z")
    ds.SeriesInstanceUID = series_instance_uid
    ds.SeriesNumber = series_number
    ds.SeriesDate = da(content_datetime)
    ds.SeriesTime = tm(content_datetime)
    ds.InstanceNumber = instance_number
    ds.ContentDate = da(content_datetime)
    ds.ContentTime = tm(content_datetime)
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = "xrayd"
    ds.SoftwareVersions = [software_version, f"{algorithm.name} {algorithm.version}"]


def build_secondary_capture(
    source: Dataset,
    rgb: np.ndarray,
    *,
    sop_instance_uid: str,
    series_instance_uid: str,
    series_number: int,
    instance_number: int,
    content_datetime: datetime,
    algorithm: Algorithm,
    software_version: str,
) -> Dataset:
    """An SC Image Storage instance of ``rgb`` (uint8 (rows, cols, 3)) in the source's study.

    ``source`` is the header of the analysed image (pixel data not needed). The caller chooses
    the UIDs and the date/time, so identical inputs give an identical data set.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"rgb must be uint8 (rows, cols, 3), got {rgb.dtype} {rgb.shape}")
    rows, cols = rgb.shape[:2]
    if not (0 < rows <= 0xFFFF and 0 < cols <= 0xFFFF):
        raise ValueError(f"image size {rows}x{cols} does not fit Rows/Columns")
    for keyword in ("SOPClassUID", "SOPInstanceUID"):
        if not source.get(keyword):
            raise ValueError(f"source has no {keyword}")

    ds = Dataset()
    set_common(
        ds,
        sop_class_uid=SECONDARY_CAPTURE_IMAGE_STORAGE,
        sop_instance_uid=sop_instance_uid,
        series_instance_uid=series_instance_uid,
        series_number=series_number,
        instance_number=instance_number,
        content_datetime=content_datetime,
        algorithm=algorithm,
        software_version=software_version,
    )
    copy_patient_and_study(source, ds)

    # General Series (Modality: see the module docstring).
    ds.Modality = source.get("Modality") or "OT"
    ds.SeriesDescription = SERIES_DESCRIPTION
    if source.get("BodyPartExamined"):
        ds.BodyPartExamined = source.BodyPartExamined
    laterality = _laterality(source)
    if laterality is not None:
        ds.Laterality = laterality

    # SC Equipment.
    ds.ConversionType = "WSD"
    ds.SecondaryCaptureDeviceManufacturer = MANUFACTURER
    ds.SecondaryCaptureDeviceManufacturerModelName = "xrayd"
    ds.SecondaryCaptureDeviceSoftwareVersions = [software_version]

    # General Image + General Reference.
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.PatientOrientation = source.get("PatientOrientation") or ""
    ds.BurnedInAnnotation = "YES"
    ds.LossyImageCompression = "01" if source.get("LossyImageCompression") == "01" else "00"
    ds.ImageComments = f"AI fracture overlay by {algorithm.name} {algorithm.version}. {DISCLAIMER}"
    ds.DerivationDescription = DERIVATION
    ref = Dataset()
    ref.ReferencedSOPClassUID = source.SOPClassUID
    ref.ReferencedSOPInstanceUID = source.SOPInstanceUID
    purpose = Dataset()
    purpose.CodeValue = "121322"
    purpose.CodingSchemeDesignator = "DCM"
    purpose.CodeMeaning = "Source image for image processing operation"
    ref.PurposeOfReferenceCodeSequence = [purpose]
    ds.SourceImageSequence = [ref]

    # SC Image.
    ds.DateOfSecondaryCapture = da(content_datetime)
    ds.TimeOfSecondaryCapture = tm(content_datetime)

    # Image Pixel: RGB, colour-by-pixel.
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    data = np.ascontiguousarray(rgb).tobytes()
    ds.PixelData = data + b"\x00" if len(data) % 2 else data
    ds["PixelData"].VR = "OB"

    # SOP Common: who made it.
    ds.ContributingEquipmentSequence = [
        contributing_equipment(
            algorithm,
            software_version,
            content_datetime,
            "Rendered this AI fracture overlay from the source radiograph.",
        )
    ]
    return ds


def _laterality(source: Dataset) -> str | None:
    """Series Laterality (type 2C): R or L when the source says so, else empty, else absent.

    The condition is "body part is paired"; dciodvfy treats every Body Part Examined term that
    is not known to be unpaired (and a missing one) as paired, so the attribute is left out
    only for the unpaired terms below and is empty (unknown) otherwise.
    """
    for keyword in ("Laterality", "ImageLaterality"):
        value = source.get(keyword)
        if value in ("L", "R"):
            return str(value)
    if str(source.get("BodyPartExamined", "")).upper() in UNPAIRED_BODY_PARTS:
        return None
    return ""


def dataset_bytes(ds: Dataset) -> bytes:
    """The Part 10 file bytes of ``ds``: explicit VR little endian, file meta from the data set.

    Deterministic: the same data set gives the same bytes (no clock, no random UIDs).
    ``ds`` is not modified.
    """
    out = ds.copy()
    out.file_meta = file_meta(ds.SOPClassUID, ds.SOPInstanceUID)
    out.preamble = b"\x00" * 128
    buffer = BytesIO()
    out.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
