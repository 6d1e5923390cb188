"""A :class:`SyntheticCase` as a valid DX or CR DICOM object (passes dciodvfy)."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from models.synthetic_case import SYNTHETIC_BITS, SyntheticCase

DX_FOR_PRESENTATION = UID("1.2.840.10008.5.1.4.1.1.1.1")
CR_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.1")
LOSSLESS_SYNTAXES = frozenset(
    {ImplicitVRLittleEndian, ExplicitVRLittleEndian, RLELossless, JPEG2000Lossless, JPEGLSLossless}
)

#: BodyPartExamined and the SNOMED CT code of the anatomic region (PS3.16 Annex L).
_ANATOMY: dict[str, tuple[str, str, str]] = {
    "elbow": ("ELBOW", "16953009", "Elbow joint"),
    "finger": ("FINGER", "7569003", "Finger"),
    "forearm": ("FOREARM", "14975008", "Forearm"),
    "hand": ("HAND", "85562004", "Hand"),
    "humerus": ("HUMERUS", "85050009", "Humerus"),
    "shoulder": ("SHOULDER", "16982005", "Shoulder"),
    "wrist": ("WRIST", "74670003", "Wrist joint"),
    "leg": ("LEG", "30021000", "Lower leg"),
    "hip": ("HIP", "29836001", "Hip"),
    "other": ("EXTREMITY", "66019005", "Extremity"),
}
_VIEWS: dict[str, tuple[str, str]] = {
    "AP": ("399348003", "antero-posterior"),
    "PA": ("272479007", "postero-anterior"),
}
_ENTROPY = "xrayd-synthetic"


def _code(value: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = "SCT"
    item.CodeMeaning = meaning
    return item


def _uid(*parts: object) -> UID:
    return generate_uid(entropy_srcs=[_ENTROPY, *(str(p) for p in parts)])


def _pixels(case: SyntheticCase, bits_stored: int, inverted: bool) -> np.ndarray:
    top = 2**bits_stored - 1
    values = case.image.astype(np.float64) * top / (2**SYNTHETIC_BITS - 1)
    stored = np.rint(top - values if inverted else values)
    return np.asarray(stored, dtype=np.uint16 if bits_stored > 8 else np.uint8)


def to_dicom(
    case: SyntheticCase,
    *,
    modality: Literal["DX", "CR"] = "DX",
    study_uid: str | None = None,
    series_uid: str | None = None,
    patient_id: str = "SYNTH-0001",
    patient_name: str = "Synthetic^Phantom",
    photometric: Literal["MONOCHROME1", "MONOCHROME2"] = "MONOCHROME2",
    bits_stored: int = 12,
    transfer_syntax: str = ExplicitVRLittleEndian,
    study_date: str = "20260101",
    study_time: str = "120000",
    accession_number: str | None = None,
    series_number: int = 1,
    instance_number: int = 1,
    pixel_spacing_mm: float = 0.15,
) -> Dataset:
    """A DX (For Presentation) or CR image object of ``case``, with file meta information.

    UIDs not given are derived deterministically from the patient ID and the case seed.
    MONOCHROME1 stores inverted values (and a mirrored window) so it displays the same.
    ``bits_stored`` (8-16) rescales the 12-bit image. Only lossless transfer syntaxes.
    """
    if modality not in ("DX", "CR"):
        raise ValueError("modality must be DX or CR")
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ValueError("photometric must be MONOCHROME1 or MONOCHROME2")
    if not 8 <= bits_stored <= 16:
        raise ValueError("bits_stored must be 8..16")
    syntax = UID(transfer_syntax)
    if syntax not in LOSSLESS_SYNTAXES:
        raise ValueError(f"unsupported transfer syntax {syntax.name}")
    inverted = photometric == "MONOCHROME1"
    rows, cols = case.image.shape
    sop_class = DX_FOR_PRESENTATION if modality == "DX" else CR_IMAGE_STORAGE
    study = UID(study_uid) if study_uid else _uid("study", patient_id, case.seed)
    series = UID(series_uid) if series_uid else _uid("series", study, modality, series_number)
    instance = _uid("image", series, case.seed, rows, photometric, bits_stored, instance_number)
    part, region_code, region_meaning = _ANATOMY[case.body_part]

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = instance
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = instance
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = ds.AcquisitionDate = study_date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = ds.AcquisitionTime = study_time
    ds.AccessionNumber = accession_number if accession_number is not None else f"S{case.seed}"
    ds.Modality = modality
    ds.Manufacturer = "xrayd"
    ds.ManufacturerModelName = "synthetic phantom"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = f"XR {part} (synthetic)"
    ds.SeriesDescription = f"{case.view} {part}"
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.BodyPartExamined = part
    ds.ViewPosition = case.view
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.StudyID = "1"
    ds.SeriesNumber = series_number
    ds.InstanceNumber = instance_number
    ds.ImageLaterality = case.laterality  # (series Laterality must then be absent)
    ds.PatientOrientation = [
        "L" if case.view == "AP" else "R",
        "H" if case.body_part in ("finger", "hand", "wrist") else "F",
    ]
    ds.ImageComments = "Synthetic phantom generated by xrayd: not a patient image"
    ds.BurnedInAnnotation = "NO"
    ds.AnatomicRegionSequence = Sequence([_code(region_code, region_meaning)])
    if modality == "DX":
        ds.ViewCodeSequence = Sequence([_code(*_VIEWS[case.view])])
        ds.AcquisitionContextSequence = Sequence()
        ds.PositionerType = ""
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.DetectorType = "SCINTILLATOR"
        ds.ImagerPixelSpacing = [pixel_spacing_mm, pixel_spacing_mm]
        ds.PixelIntensityRelationship = "LOG"
        ds.PixelIntensityRelationshipSign = 1 if inverted else -1
        ds.PresentationLUTShape = "INVERSE" if inverted else "IDENTITY"
        ds.LossyImageCompression = "00"
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.RescaleType = "US"

    stored = _pixels(case, bits_stored, inverted)
    top = 2**bits_stored - 1
    r0, c0, r1, c1 = case.field
    low, high = np.percentile(_pixels(case, bits_stored, False)[r0:r1, c0:c1], [1.0, 99.5])
    center = (low + high) / 2
    ds.WindowCenter = round(float(top - center if inverted else center), 1)
    ds.WindowWidth = round(max(float(high - low), 2.0), 1)
    # No VOI LUT Function: LINEAR is its default (PS3.3 C.11.2.1.3), and OHIF 3.13
    # (cornerstone3D) renders an explicit LINEAR black.
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated = stored.dtype.itemsize * 8
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    ds.PixelData = stored.astype(stored.dtype.newbyteorder("<")).tobytes()
    if syntax == ImplicitVRLittleEndian:
        ds.file_meta.TransferSyntaxUID = syntax
    elif syntax != ExplicitVRLittleEndian:
        ds.compress(syntax)
    return ds
