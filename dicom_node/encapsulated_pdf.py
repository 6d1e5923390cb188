"""The study PDF report as an Encapsulated PDF instance, for destinations that ask for one.

highdicom 0.28 has no Encapsulated Document class, so this is built with pydicom, sharing the
patient/study copy, equipment and file-meta helpers of :mod:`dicom_node.secondary_capture`.

IOD choices (Encapsulated PDF, PS3.3 A.45.1), accepted by dciodvfy without errors:

- Modality "DOC" (the Encapsulated Document Series module's enumerated value for documents).
- Conversion Type "WSD" (SC Equipment module, mandatory here too): the document is produced by
  software on a workstation, not scanned ("SD") or digitised.
- Burned In Annotation "YES" (type 1): the PDF shows patient and study identification.
- Concept Name Code Sequence: (18748-4, LN, "Diagnostic Imaging Report"), the generic document
  title of CID 7000 "Diagnostic Imaging Report Document Titles"; the Document Title and the
  PDF's first lines say that it is an AI result, not a diagnosis, so a reader of a document
  list is not misled by the generic code.
- Source Instance Sequence (type 1C, "the document incorporates information from other
  instances"): every analysed source image.
- Acquisition Date Time (type 2) and Content Date/Time: the caller's ``content_datetime``.
- Encapsulated Document Length gives the PDF's length before the even-length padding.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from pydicom.dataset import Dataset
from pydicom.uid import UID

from dicom_node.findings import Algorithm
from dicom_node.provenance import dt
from dicom_node.secondary_capture import (
    MANUFACTURER,
    contributing_equipment,
    copy_patient_and_study,
    set_common,
)

__all__ = ["ENCAPSULATED_PDF_STORAGE", "build_encapsulated_pdf"]

ENCAPSULATED_PDF_STORAGE = UID("1.2.840.10008.5.1.4.1.1.104.1")
SERIES_DESCRIPTION = "xrayd AI fracture report (PDF)"
DOCUMENT_CONCEPT = ("18748-4", "LN", "Diagnostic Imaging Report")


def build_encapsulated_pdf(
    sources: Sequence[Dataset],
    pdf: bytes,
    *,
    sop_instance_uid: str,
    series_instance_uid: str,
    series_number: int,
    instance_number: int,
    content_datetime: datetime,
    title: str,
    algorithm: Algorithm,
    software_version: str,
) -> Dataset:
    """An Encapsulated PDF Storage instance of ``pdf`` in the study of ``sources``.

    ``sources`` are the headers of the study's source images (at least one; all of one study);
    patient and study attributes come from the first. Identical inputs give an identical data
    set: the caller chooses the UIDs and the date/time.
    """
    if not sources:
        raise ValueError("an encapsulated PDF needs at least one source instance")
    if not pdf.startswith(b"%PDF-"):
        raise ValueError("document is not a PDF (no %PDF- header)")
    study_uids = {str(s.get("StudyInstanceUID", "")) for s in sources}
    if len(study_uids) != 1:
        raise ValueError(f"sources span {len(study_uids)} studies; a report covers one")
    if not title or len(title) > 1024:
        raise ValueError("document title must have 1 to 1024 characters (VR ST)")

    ds = Dataset()
    set_common(
        ds,
        sop_class_uid=ENCAPSULATED_PDF_STORAGE,
        sop_instance_uid=sop_instance_uid,
        series_instance_uid=series_instance_uid,
        series_number=series_number,
        instance_number=instance_number,
        content_datetime=content_datetime,
        algorithm=algorithm,
        software_version=software_version,
    )
    copy_patient_and_study(sources[0], ds)

    # Encapsulated Document Series.
    ds.Modality = "DOC"
    ds.SeriesDescription = SERIES_DESCRIPTION

    # SC Equipment.
    ds.ConversionType = "WSD"
    ds.SecondaryCaptureDeviceManufacturer = MANUFACTURER
    ds.SecondaryCaptureDeviceManufacturerModelName = "xrayd"
    ds.SecondaryCaptureDeviceSoftwareVersions = [software_version]

    # Encapsulated Document.
    ds.AcquisitionDateTime = dt(content_datetime)
    ds.BurnedInAnnotation = "YES"
    ds.DocumentTitle = title
    concept = Dataset()
    concept.CodeValue, concept.CodingSchemeDesignator, concept.CodeMeaning = DOCUMENT_CONCEPT
    ds.ConceptNameCodeSequence = [concept]
    ds.SourceInstanceSequence = [_reference(s) for s in _unique(sources)]
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocumentLength = len(pdf)
    ds.EncapsulatedDocument = pdf + b"\x00" if len(pdf) % 2 else pdf

    # SOP Common: who made it.
    ds.ContributingEquipmentSequence = [
        contributing_equipment(
            algorithm,
            software_version,
            content_datetime,
            "Wrote this AI fracture report of the study.",
        )
    ]
    return ds


def _unique(sources: Sequence[Dataset]) -> list[Dataset]:
    seen: set[str] = set()
    out: list[Dataset] = []
    for source in sources:
        for keyword in ("SOPClassUID", "SOPInstanceUID"):
            if not source.get(keyword):
                raise ValueError(f"source has no {keyword}")
        if source.SOPInstanceUID not in seen:
            seen.add(source.SOPInstanceUID)
            out.append(source)
    return out


def _reference(source: Dataset) -> Dataset:
    ref = Dataset()
    ref.ReferencedSOPClassUID = source.SOPClassUID
    ref.ReferencedSOPInstanceUID = source.SOPInstanceUID
    return ref
