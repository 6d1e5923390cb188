"""The images the AI flags, as a Key Object Selection document (highdicom, TID 2010).

A KOS is what PACS and viewers show as "key images": one per analysed study, listing the images
whose AI decision is "present" or "indeterminate" (none: no KOS). Content tree::

    CONTAINER (113000, DCM, "Of Interest")                           TID 2010, CID 7010
      HAS OBS CONTEXT Observer Type = Device (TID 1002/1004: Device Observer UID, name
          "xrayd", manufacturer, model name = the algorithm)
      CONTAINS TEXT Key Object Description: "AI fracture triage (<model> <version>) flagged
          N of M analysed image(s): fracture present in P, indeterminate in I. Research
          software, not for clinical use."
      CONTAINS IMAGE (no concept name, TID 2010 row 8) per flagged image, in analysis order

The header: Modality KO, in the source study (patient and study attributes of the first
flagged image), a new series; Current Requested Procedure Evidence Sequence = exactly the
flagged images; Content Date/Time, Instance Creation Date/Time and every Contribution
DateTime = ``content_datetime``; Contributing Equipment: xrayd and the model (processing
equipment), and highdicom.

Document title. CID 7010 offers no "selected by software" title; its members name a purpose a
person had in mind (For Teaching, For Research, For Surgery, For Diagnosis, For Physician
Review, Quality Issue, Best In Set, ...) or a manifest. An AI triage flag is none of these:
"For Diagnosis" / "For Physician Review" would claim a clinical role this research software
does not have, "For Research" means selected *for* a research collection, and "Best In Set"
ranks images. (113000, DCM, "Of Interest") is the generic member and says exactly what the
flag means: look at these images. The Key Object Description says who flagged them and why.

The observer is the same device as in the SR (:func:`dicom_node.sr.device_observer_uid` with
device name "xrayd"), so both documents name one observer.

Deterministic: every UID is passed in or derived by hashing, the clock values highdicom
stamps are overwritten with ``content_datetime``; the same inputs give the same bytes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

from highdicom.ko import KeyObjectSelection, KeyObjectSelectionDocument
from highdicom.sr import CodedConcept, DeviceObserverIdentifyingAttributes, ObserverContext
from pydicom.dataset import Dataset
from pydicom.uid import UID

from dicom_node import codes
from dicom_node.errors import DicomNodeError
from dicom_node.findings import Algorithm, ImageFinding, StudyFindings
from dicom_node.provenance import (
    index_sources,
    patient_study_header,
    pin_clock,
    processing_equipment,
)
from dicom_node.sr import device_observer_uid

__all__ = [
    "FLAGGED",
    "KEY_OBJECT_SELECTION_DOCUMENT",
    "SERIES_DESCRIPTION",
    "KOSBuildError",
    "build_kos",
    "key_object_description",
]

LOGGER = logging.getLogger(__name__)

KEY_OBJECT_SELECTION_DOCUMENT = UID("1.2.840.10008.5.1.4.1.1.88.59")
SERIES_DESCRIPTION = "xrayd AI fracture key images (research, not for clinical use)"
DEVICE_NAME = "xrayd"
#: The image decisions that put an image in the KOS.
FLAGGED = frozenset({"present", "indeterminate"})


class KOSBuildError(DicomNodeError, ValueError):
    """The findings and the source headers cannot make a consistent KOS (a caller bug)."""


def key_object_description(findings: StudyFindings, algorithm: Algorithm) -> str:
    """The Key Object Description: who flagged how many images, and why."""
    flagged = [image for image in findings.images if image.decision in FLAGGED]
    present = sum(image.decision == "present" for image in flagged)
    return (
        f"AI fracture triage ({algorithm.name} {algorithm.version}) flagged {len(flagged)} of "
        f"{len(findings.images)} analysed image(s): fracture present in {present}, "
        f"indeterminate in {len(flagged) - present}. "
        "Research software, not for clinical use."
    )


def build_kos(
    findings: StudyFindings,
    sources: Sequence[Dataset],
    *,
    sop_instance_uid: str,
    series_instance_uid: str,
    series_number: int,
    instance_number: int,
    content_datetime: datetime,
    algorithm: Algorithm,
    software_version: str,
    manufacturer: str = "xrayd project",
    uid_root: str | None = None,
) -> Dataset | None:
    """The KOS of the images of ``findings`` that the AI flags; None when it flags none.

    ``sources`` are the headers (pixel data not needed) of the study's source instances:
    every flagged image must be among them. The caller chooses the UIDs and the date/time,
    so identical inputs give an identical data set; the Device Observer UID is derived under
    ``uid_root`` (None: ``2.25.``), as in the SR.
    """
    flagged = [image for image in findings.images if image.decision in FLAGGED]
    if not flagged:
        LOGGER.debug("no flagged image: no KOS", extra={"images": len(findings.images)})
        return None
    by_uid = _check_inputs(findings, flagged, sources)
    references = [by_uid[image.sop_instance_uid] for image in flagged]
    observer = ObserverContext(
        observer_type=CodedConcept.from_code(codes.DEVICE_OBSERVER),
        observer_identifying_attributes=DeviceObserverIdentifyingAttributes(
            uid=device_observer_uid(DEVICE_NAME, manufacturer, algorithm, uid_root),
            name=DEVICE_NAME,
            manufacturer_name=manufacturer,
            model_name=algorithm.name,
        ),
    )
    content = KeyObjectSelection(
        document_title=codes.KEY_OBJECT_TITLE,
        referenced_objects=references,
        observer_device_context=observer,
        description=key_object_description(findings, algorithm),
    )
    kos = KeyObjectSelectionDocument(
        evidence=_evidence(references),
        content=content,
        series_instance_uid=series_instance_uid,
        series_number=series_number,
        sop_instance_uid=sop_instance_uid,
        instance_number=instance_number,
        manufacturer=manufacturer,
        contributing_equipment=processing_equipment(
            algorithm,
            device_name=DEVICE_NAME,
            manufacturer=manufacturer,
            software_version=software_version,
            when=content_datetime,
            contribution="selected the images the AI flags",
        ),
        specific_character_set="ISO_IR 192",  # UTF-8: patient names from any source
        series_description=SERIES_DESCRIPTION,
        manufacturer_model_name=DEVICE_NAME,
        software_versions=software_version,
        content_date=content_datetime.date(),
        content_time=content_datetime.time(),
        series_date=content_datetime.date(),
        series_time=content_datetime.time(),
    )
    ds: Dataset = kos
    ds.SoftwareVersions = [software_version, f"{algorithm.name} {algorithm.version}"]
    _unname_images(ds)
    pin_clock(ds, content_datetime, [("ContentDate", "ContentTime")])
    LOGGER.debug(
        "built fracture KOS",
        extra={
            "sop_instance_uid": sop_instance_uid,
            "flagged": len(flagged),
            "images": len(findings.images),
        },
    )
    return ds


def _unname_images(ds: Dataset) -> None:
    """TID 2010 row 8: the selected IMAGE items have no concept name.

    highdicom names each (260753009, SCT, "Source"), which PS3.3 C.17.3 allows for SR content
    in general but TID 2010 forbids (PixelMed's validator reports it as an error).
    """
    for item in ds.ContentSequence:
        if item.ValueType == "IMAGE" and "ConceptNameCodeSequence" in item:
            del item.ConceptNameCodeSequence


def _evidence(references: Sequence[Dataset]) -> list[Dataset]:
    """The flagged images' headers; the first (patient and study come from it) type 2 filled."""
    return [patient_study_header(references[0]), *references[1:]]


def _check_inputs(
    findings: StudyFindings, flagged: Sequence[ImageFinding], sources: Sequence[Dataset]
) -> dict[str, Dataset]:
    by_uid = index_sources(findings.study_instance_uid, sources, KOSBuildError)
    missing = [image.sop_instance_uid for image in flagged if image.sop_instance_uid not in by_uid]
    if missing:
        raise KOSBuildError(f"no source header for flagged image(s) {', '.join(missing)}")
    for image in flagged:
        header = by_uid[image.sop_instance_uid]
        if header.SOPClassUID != image.sop_class_uid:
            raise KOSBuildError(f"SOP class of {image.sop_instance_uid} differs from its header")
        if "Rows" not in header or "Columns" not in header:
            raise KOSBuildError(f"header of {image.sop_instance_uid} is not an image's")
    return by_uid
