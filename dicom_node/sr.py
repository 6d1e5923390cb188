"""The AI result as a DICOM Comprehensive 3D SR, a TID 1500 Measurement Report (highdicom).

Content tree (all codes from :mod:`dicom_node.codes`), in the form viewers load as measurements
(OHIF 3.13 draws each group's region as an editable rectangle labelled with its Comment)::

    CONTAINER Imaging Measurement Report (TID 1500)
      Language, Observation Context: observer = device (TID 1002/1004: xrayd, model name)
      Procedure reported: Imaging procedure (CID 100)
      CONTAINER Imaging Measurements
        per box of an image whose decision is present or indeterminate, one TID 1410 group
        (if no image has a box to show: one per image, its whole area as the region):
          Tracking Identifier "AI fracture region k of n" + Tracking UID (per study, image, k)
          Finding: Fracture of bone
          SCOORD Image Region: closed POLYLINE (5 points, column/row) SELECTED FROM the image
          Algorithm Identification (TID 4019: name, version, parameters incl. thresholds)
          Finding Site: the body part (SNOMED CT anatomic region)
          NUM Probability [Finding = Fracture of bone]: the image's probability,
              INFERRED FROM the same SCOORD (OHIF reads coordinates under a group's NUM)
          CODE Fracture of bone = Present | Absent | Undetermined   (CID 240)
          TEXT Comment "AI: Fracture of bone PRESENT (p=0.97)": the label viewers show
      CONTAINER Qualitative Evaluations (the study summary; TID 1500 allows CODE and TEXT)
          CODE Fracture of bone = the study's decision
          TEXT Comment: decision, probability, images analysed and not analysed
          TEXT AI result of image: "<SOP Instance UID>: fracture ABSENT (p=0.04), count 0, ..."
          TEXT Image not analysed: "<SOP Instance UID>: <reason>" (one per instance)
      CONTAINER Findings (only in a verified SR: the radiologist's review)
          Observation Context: observer = person (TID 1002: name, login name, organization)
          CODE Fracture of bone = Present | Absent
          CODE Number of fractures = none | one | two or more
          CODE Finding Site = the body part
          CODE Orthopedic device = Present | Absent
          CODE Agreement with prior findings = Yes | No    (with the AI result it supersedes)
          TEXT Comment (if the radiologist wrote one)

An image without a box (an "absent" result, or no region found) is not a measurement group when
another image of the study has one: a group without a region breaks OHIF's viewport ("Something
went wrong"), and every image's result is in the study summary anyway. When no image has a box,
each image's result gets its whole area as the region ("..., whole image"): OHIF 3.13 also fails
on an SR without any measurement. Boxes of an "absent" result are not shown, as in the
Secondary Capture and the presentation state: a box reads as a finding.

The AI's document is UNVERIFIED, COMPLETE and PRELIMINARY (nobody has reviewed it), sits in the
source study (patient and study attributes copied by highdicom) in a new series, and names xrayd
and the model in the Contributing Equipment Sequence. An amended result lists the SR it replaces
in the Predecessor Documents Sequence.

Given a :class:`~dicom_node.findings.RadiologistReview`, the same AI content plus the Findings
container above makes a radiologist-verified SR: VERIFIED (Verifying Observer Sequence: the
radiologist, the organization, the review time), COMPLETE and FINAL; the caller lists the AI SR
it supersedes as its predecessor. The AI measurement groups keep their device observer.

Deterministic: highdicom stamps the clock into Instance Creation Date/Time and its own Contributing
Equipment item; both are overwritten with ``content_datetime``, and every UID is either passed in
or derived by hashing (:func:`dicom_node.uids.derived_uid` under the site's ``uid_root``), so the
same inputs give the same bytes.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Mapping, Sequence
from datetime import datetime

import numpy as np
from highdicom.coding_schemes import CodingSchemeIdentificationItem
from highdicom.sr import (
    AlgorithmIdentification,
    CodeContentItem,
    CodedConcept,
    Comprehensive3DSR,
    ContainerContentItem,
    ContentItem,
    ContentSequence,
    DeviceObserverIdentifyingAttributes,
    FindingSite,
    GraphicTypeValues,
    ImageRegion,
    Measurement,
    MeasurementReport,
    MeasurementsAndQualitativeEvaluations,
    ObservationContext,
    ObserverContext,
    PersonObserverIdentifyingAttributes,
    PlanarROIMeasurementsAndQualitativeEvaluations,
    QualitativeEvaluation,
    RelationshipTypeValues,
    SourceImageForRegion,
    TextContentItem,
    TrackingIdentifier,
)
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code
from pydicom.uid import UID

from dicom_node import codes
from dicom_node.errors import DicomNodeError
from dicom_node.findings import Algorithm, Box, ImageFinding, RadiologistReview, StudyFindings
from dicom_node.provenance import (
    dt,
    index_sources,
    patient_study_header,
    pin_clock,
    processing_equipment,
)
from dicom_node.secondary_capture import dataset_bytes
from dicom_node.uids import derived_uid

__all__ = [
    "SRBuildError",
    "build_sr",
    "device_observer_uid",
    "finding_label",
    "shown_boxes",
    "sr_bytes",
    "tracking_uid",
]

LOGGER = logging.getLogger(__name__)

COMPREHENSIVE_3D_SR = UID("1.2.840.10008.5.1.4.1.1.88.34")
SERIES_DESCRIPTION = "xrayd AI fracture triage (research, not for clinical use)"
VERIFIED_SERIES_DESCRIPTION = "xrayd fracture triage, radiologist-verified (research use)"

_DECISION_WORD = {"present": "PRESENT", "absent": "ABSENT", "indeterminate": "INDETERMINATE"}

Predecessor = tuple[str, str, str, str]
"""(Study Instance UID, Series Instance UID, SOP Class UID, SOP Instance UID) of an earlier SR."""


class SRBuildError(DicomNodeError, ValueError):
    """The findings and the source headers cannot make a consistent SR (a caller bug)."""


def tracking_uid(
    study_instance_uid: str, sop_instance_uid: str, region: int, root: str | None = None
) -> UID:
    """The Tracking UID of the ``region``-th box (from 1) on an image: the same in every
    amendment of the study's SR that marks that many regions there (under the site's UID
    ``root``; None: a ``2.25.`` UID, see :mod:`dicom_node.uids`)."""
    return UID(
        derived_uid(
            root, "xrayd fracture region", study_instance_uid, sop_instance_uid, str(region)
        )
    )


def device_observer_uid(
    device_name: str, manufacturer: str, algorithm: Algorithm, root: str | None = None
) -> UID:
    """The Device Observer UID: stable per model (name, version, weights), device name and
    UID ``root``."""
    return UID(
        derived_uid(
            root,
            "xrayd device observer",
            device_name,
            manufacturer,
            algorithm.name,
            algorithm.version,
            algorithm.weights_sha256,
        )
    )


def build_sr(
    findings: StudyFindings,
    sources: Sequence[Dataset],
    *,
    sop_instance_uid: str,
    series_instance_uid: str,
    series_number: int,
    instance_number: int,
    content_datetime: datetime,
    device_name: str = "xrayd",
    manufacturer: str = "xrayd project",
    software_version: str,
    predecessor: Sequence[Predecessor] | None = None,
    device_uid: str | None = None,
    review: RadiologistReview | None = None,
    uid_root: str | None = None,
) -> Dataset:
    """The Comprehensive 3D SR (TID 1500) of one analysis of one study.

    ``sources`` are the headers (pixel data not needed) of the study's source instances: every
    analysed image must be among them; the first analysed one gives the patient and study
    attributes. ``predecessor`` lists the SR(s) this one amends. ``device_uid`` defaults to
    :func:`device_observer_uid`. ``review`` makes it the radiologist-verified SR: pass the AI
    SR it supersedes as ``predecessor``. ``uid_root``: the site's root of the UIDs derived here
    (tracking and device observer UIDs; None: ``2.25.`` UIDs).
    """
    by_uid = _check_inputs(findings, sources)
    if review is not None:
        _check_review(review)
    algorithm = findings.algorithm
    # TID 4019 without Algorithm Manufacturer (122405): the template PixelMed checks against has
    # no such row, and the Device Observer and Contributing Equipment already name it.
    algorithm_id = AlgorithmIdentification(
        name=algorithm.name,
        version=algorithm.version,
        parameters=algorithm_parameters(algorithm),
    )
    observer = ObserverContext(
        observer_type=CodedConcept.from_code(codes.DEVICE_OBSERVER),
        observer_identifying_attributes=DeviceObserverIdentifyingAttributes(
            uid=device_uid or device_observer_uid(device_name, manufacturer, algorithm, uid_root),
            name=device_name,
            manufacturer_name=manufacturer,
            model_name=algorithm.name,
        ),
    )
    groups = [
        group
        for image in findings.images
        for group in _region_groups(findings.study_instance_uid, image, algorithm_id, uid_root)
    ]
    if not groups:
        # Nothing to mark (e.g. every image "absent"): each image's result on its whole area,
        # so viewers still list it (OHIF 3.13 fails on an SR without any measurement).
        groups = [
            _whole_image_group(findings.study_instance_uid, image, algorithm_id, uid_root)
            for image in findings.images
        ]
    report = _measurement_report(ObservationContext(observer_device_context=observer), groups)
    report[0].ContentSequence.append(_study_summary(findings))
    if review is not None:
        report[0].ContentSequence.append(_review_findings(review))

    evidence = _evidence(findings, sources, by_uid)
    sr = Comprehensive3DSR(
        evidence=evidence,
        content=report,
        series_instance_uid=series_instance_uid,
        series_number=series_number,
        sop_instance_uid=sop_instance_uid,
        instance_number=instance_number,
        manufacturer=manufacturer,
        is_complete=True,
        is_final=review is not None,
        is_verified=review is not None,
        verifying_observer_name=None if review is None else review.person_name,
        verifying_organization=None if review is None else review.organization,
        previous_versions=_predecessor_datasets(predecessor) if predecessor else None,
        contributing_equipment=processing_equipment(
            algorithm,
            device_name=device_name,
            manufacturer=manufacturer,
            software_version=software_version,
            when=content_datetime,
            contribution="produced this report from the referenced images",
        ),
        coding_schemes=[
            CodingSchemeIdentificationItem(
                designator=codes.PRIVATE_SCHEME,
                name=codes.PRIVATE_SCHEME_NAME,
                responsible_organization=codes.PRIVATE_SCHEME_ORGANIZATION,
            )
        ],
        series_description=SERIES_DESCRIPTION if review is None else VERIFIED_SERIES_DESCRIPTION,
        specific_character_set="ISO_IR 192",  # UTF-8: names from any source, texts from anywhere
        manufacturer_model_name=device_name,
        software_versions=[software_version, f"{algorithm.name} {algorithm.version}"],
        content_date=content_datetime.date(),
        content_time=content_datetime.time(),
        series_date=content_datetime.date(),
        series_time=content_datetime.time(),
    )
    pin_clock(sr, content_datetime)
    if review is not None:
        sr.VerifyingObserverSequence[0].VerificationDateTime = dt(review.when)
    LOGGER.debug(
        "built fracture SR",
        extra={
            "sop_instance_uid": sop_instance_uid,
            "images": len(findings.images),
            "not_analysed": len(findings.not_analysed),
            "amends": len(predecessor or ()),
            "verified": review is not None,
        },
    )
    ds: Dataset = sr
    return ds


def algorithm_parameters(algorithm: Algorithm) -> list[str]:
    """TID 4019 Algorithm Parameters: ``key=value``, sorted, plus the weights' SHA-256."""
    params = [f"{key}={value}" for key, value in sorted(algorithm.parameters.items())]
    return [*params, f"weights_sha256={algorithm.weights_sha256}"]


#: The Part 10 file of an SR: the one writer of every result object (deterministic bytes).
sr_bytes = dataset_bytes


# --- content ---------------------------------------------------------------------------------


def shown_boxes(image: ImageFinding) -> tuple[Box, ...]:
    """The boxes a viewer is shown: none for an "absent" result (a box reads as a finding)."""
    return () if image.decision == "absent" else image.boxes


def finding_label(image: ImageFinding) -> str:
    """The short text a viewer shows beside a box: ``AI: Fracture of bone PRESENT (p=0.97)``."""
    return (
        f"AI: {codes.FRACTURE.meaning} {_DECISION_WORD[image.decision]} "
        f"(p={image.fracture_probability:.2f})"
    )


def _region_groups(
    study_instance_uid: str,
    image: ImageFinding,
    algorithm_id: AlgorithmIdentification,
    uid_root: str | None,
) -> list[PlanarROIMeasurementsAndQualitativeEvaluations]:
    """One TID 1410 measurement group per shown box of ``image``."""
    boxes = shown_boxes(image)
    label = finding_label(image)
    return [
        _group(
            image,
            algorithm_id,
            tracking_uid(study_instance_uid, image.sop_instance_uid, number, uid_root),
            f"AI fracture region {number} of {len(boxes)}",
            _box_polyline(image, box),
            label if len(boxes) == 1 else f"{label}, region {number} of {len(boxes)}",
        )
        for number, box in enumerate(boxes, 1)
    ]


def _whole_image_group(
    study_instance_uid: str,
    image: ImageFinding,
    algorithm_id: AlgorithmIdentification,
    uid_root: str | None,
) -> PlanarROIMeasurementsAndQualitativeEvaluations:
    """The image's result with the whole image as its region (used when no image of the
    study has a box, so that the SR still holds measurements)."""
    whole = Box(row0=0, col0=0, row1=image.rows, col1=image.columns)
    return _group(
        image,
        algorithm_id,
        tracking_uid(study_instance_uid, image.sop_instance_uid, 0, uid_root),
        "AI fracture result, whole image",
        _box_polyline(image, whole),
        f"{finding_label(image)}, whole image",
    )


def _group(
    image: ImageFinding,
    algorithm_id: AlgorithmIdentification,
    uid: str,
    identifier: str,
    polyline: np.ndarray,
    comment: str,
) -> PlanarROIMeasurementsAndQualitativeEvaluations:
    """A TID 1410 group: the region (a closed POLYLINE SELECTED FROM the image), its own
    Tracking Identifier and UID (viewers merge groups that share a Tracking UID), the finding,
    the model, the body part, the image's fracture probability INFERRED FROM the region, the
    decision, and a TEXT Comment viewers use as the annotation's label.

    The probability names the region as its INFERRED FROM coordinates too: OHIF 3.13 looks for
    a group's coordinates under its first NUM when it has one, and loads nothing otherwise.
    """
    source = SourceImageForRegion(
        referenced_sop_class_uid=image.sop_class_uid,
        referenced_sop_instance_uid=image.sop_instance_uid,
    )
    group = PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(uid=uid, identifier=identifier),
        referenced_region=ImageRegion(
            graphic_type=GraphicTypeValues.POLYLINE, graphic_data=polyline, source_image=source
        ),
        finding_type=codes.FRACTURE,
        algorithm_id=algorithm_id,
        finding_sites=[FindingSite(anatomic_location=codes.body_part_code(image.body_part))],
        measurements=[_probability(image.fracture_probability, codes.FINDING, codes.FRACTURE)],
        qualitative_evaluations=[
            QualitativeEvaluation(codes.FRACTURE, codes.PRESENCE[image.decision])
        ],
    )
    items = group[0].ContentSequence
    # highdicom refuses coordinates under a TID 1410 measurement: add them afterwards (TID 300
    # allows an INFERRED FROM SCOORD under the NUM).
    (region,) = [item for item in items if item.ValueType == "SCOORD"]
    (num,) = [item for item in items if item.ValueType == "NUM"]
    inferred = copy.deepcopy(region)
    inferred.RelationshipType = RelationshipTypeValues.INFERRED_FROM.value
    num.ContentSequence.append(inferred)
    items.append(
        TextContentItem(
            name=codes.COMMENT, value=comment, relationship_type=RelationshipTypeValues.CONTAINS
        )
    )
    return group


def _probability(value: float, modifier_name: Code, modifier_value: Code) -> Measurement:
    """TID 300: NUM Probability (no units), post-coordinated with what it is the probability of."""
    _check_probability(value)
    measurement = Measurement(name=codes.PROBABILITY, value=float(value), unit=codes.NO_UNITS)
    num = measurement[0]
    modifier = CodeContentItem(
        name=modifier_name,
        value=modifier_value,
        relationship_type=RelationshipTypeValues.HAS_CONCEPT_MOD,
    )
    children = list(getattr(num, "ContentSequence", []))
    num.ContentSequence = ContentSequence([modifier, *children])
    return measurement


def _box_polyline(image: ImageFinding, box: Box) -> np.ndarray:
    """A closed POLYLINE (5 points, column/row) around ``box`` on the source image.

    DICOM image coordinates put the top-left corner of the first pixel at (0, 0) and pixel
    (r, c) covers [c, c+1) x [r, r+1), exactly the convention of :class:`Box`.
    """
    if box.row1 > image.rows or box.col1 > image.columns:
        raise SRBuildError(
            f"box {box} outside the {image.rows}x{image.columns} image {image.sop_instance_uid}"
        )
    corners = [
        (box.col0, box.row0),
        (box.col1, box.row0),
        (box.col1, box.row1),
        (box.col0, box.row1),
        (box.col0, box.row0),
    ]
    return np.array(corners, dtype=np.float64)


def _measurement_report(
    context: ObservationContext,
    groups: Sequence[PlanarROIMeasurementsAndQualitativeEvaluations],
) -> MeasurementReport:
    """TID 1500. With no box to show there is no Imaging Measurements container at all.

    highdicom insists on at least one measurement group, but TID 1500 needs only one of its
    Imaging Measurements / Derived Imaging Measurements / Qualitative Evaluations containers; the
    study summary (Qualitative Evaluations) is always present, so a study without a box, or
    where nothing could be analysed, still gets a valid report that says so.
    """
    if groups:
        return MeasurementReport(
            observation_context=context,
            procedure_reported=codes.PROCEDURE_XR,
            imaging_measurements=groups,
            title=codes.MEASUREMENT_REPORT,
        )
    placeholder = MeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(uid="2.25.0", identifier="placeholder")
    )
    report = MeasurementReport(
        observation_context=context,
        procedure_reported=codes.PROCEDURE_XR,
        imaging_measurements=[placeholder],
        title=codes.MEASUREMENT_REPORT,
    )
    root = report[0]
    root.ContentSequence = ContentSequence(
        [
            item
            for item in root.ContentSequence
            if item.ConceptNameCodeSequence[0].CodeValue != "126010"  # Imaging Measurements
        ]
    )
    return report


def _study_summary(findings: StudyFindings) -> ContainerContentItem:
    """TID 1500 row 12: the study's decision (row 13, CODE) and its summary as TEXT (row 14).

    The template allows only CODE and TEXT items here: the study's probability and image counts
    are in the Comment, each analysed image's result (those without a box are not in Imaging
    Measurements) and each instance not analysed in a line of its own.
    """
    _check_probability(findings.fracture_probability)
    contains = RelationshipTypeValues.CONTAINS
    summary = (
        f"AI: {codes.FRACTURE.meaning} {_DECISION_WORD[findings.decision]} in the study "
        f"(p={findings.fracture_probability:.2f}); {len(findings.images)} image(s) analysed, "
        f"{len(findings.not_analysed)} not analysed. Research software, not for clinical use."
    )
    items: list[ContentItem] = [
        CodeContentItem(
            name=codes.FRACTURE,
            value=codes.PRESENCE[findings.decision],
            relationship_type=contains,
        ),
        TextContentItem(name=codes.COMMENT, value=summary, relationship_type=contains),
        *(
            TextContentItem(
                name=codes.IMAGE_RESULT,
                value=f"{image.sop_instance_uid}: {_image_result(image)}",
                relationship_type=contains,
            )
            for image in findings.images
        ),
        *(
            TextContentItem(
                name=codes.IMAGE_NOT_ANALYSED,
                value=f"{item.sop_instance_uid}: {item.reason}",
                relationship_type=contains,
            )
            for item in findings.not_analysed
        ),
    ]
    container = ContainerContentItem(name=codes.QUALITATIVE_EVALUATIONS, relationship_type=contains)
    container.ContentSequence = ContentSequence(items)
    return container


def _image_result(image: ImageFinding) -> str:
    """One image's whole result as a line of text (every probability with two decimals)."""
    _check_probability(image.body_part_probability)
    _check_probability(image.hardware_probability)
    boxes = len(shown_boxes(image))
    return (
        f"fracture {_DECISION_WORD[image.decision]} (p={image.fracture_probability:.2f}), "
        f"count {image.count}, {image.body_part} (p={image.body_part_probability:.2f}), "
        f"orthopedic device {'present' if image.hardware else 'absent'} "
        f"(p={image.hardware_probability:.2f}), {boxes} region(s) marked"
    )


def _review_findings(review: RadiologistReview) -> ContainerContentItem:
    """The radiologist's assessment, observed by the radiologist (TID 1002 Person Observer)."""
    contains = RelationshipTypeValues.CONTAINS
    observer = ObserverContext(
        observer_type=CodedConcept.from_code(codes.PERSON_OBSERVER),
        observer_identifying_attributes=PersonObserverIdentifyingAttributes(
            name=review.person_name,
            login_name=review.observer_name,
            organization_name=review.organization,
        ),
    )
    values = (
        (codes.FRACTURE, codes.PRESENCE[review.fracture]),
        (codes.NUMBER_OF_FRACTURES, codes.COUNT_CLASSES[review.count]),
        (codes.FINDING_SITE, codes.REVIEW_BODY_PARTS[review.body_part]),
        (codes.ORTHOPEDIC_DEVICE, codes.PRESENT if review.hardware else codes.ABSENT),
        (codes.AGREEMENT_WITH_PRIOR_FINDINGS, codes.YES if review.agree else codes.NO),
    )
    items: list[ContentItem] = [
        *observer,
        *(CodeContentItem(name=n, value=v, relationship_type=contains) for n, v in values),
    ]
    if review.comment and review.comment.strip():
        items.append(
            TextContentItem(name=codes.COMMENT, value=review.comment, relationship_type=contains)
        )
    container = ContainerContentItem(name=codes.FINDINGS, relationship_type=contains)
    container.ContentSequence = ContentSequence(items)
    return container


# --- header ----------------------------------------------------------------------------------


def _evidence(
    findings: StudyFindings, sources: Sequence[Dataset], by_uid: Mapping[str, Dataset]
) -> list[Dataset]:
    """All source headers; first the one highdicom copies patient/study from, type 2 filled."""
    head_uid = findings.images[0].sop_instance_uid if findings.images else sources[0].SOPInstanceUID
    head = patient_study_header(by_uid[head_uid])
    rest = [ds for ds in sources if ds.SOPInstanceUID != head_uid]
    return [head, *rest]


def _predecessor_datasets(predecessor: Sequence[Predecessor]) -> list[Dataset]:
    items = []
    for entry in predecessor:
        if len(entry) != 4 or not all(entry):
            raise SRBuildError(
                "a predecessor is (study uid, series uid, sop class uid, sop instance uid)"
            )
        ds = Dataset()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPClassUID, ds.SOPInstanceUID = entry
        items.append(ds)
    return items


def _check_inputs(findings: StudyFindings, sources: Sequence[Dataset]) -> dict[str, Dataset]:
    if not sources:
        raise SRBuildError("no source headers: the SR needs the study's patient and study data")
    by_uid = index_sources(findings.study_instance_uid, sources, SRBuildError)
    missing = [i.sop_instance_uid for i in findings.images if i.sop_instance_uid not in by_uid]
    if missing:
        raise SRBuildError(f"no source header for analysed image(s) {', '.join(missing)}")
    for image in findings.images:
        header = by_uid[image.sop_instance_uid]
        if header.SOPClassUID != image.sop_class_uid:
            raise SRBuildError(f"SOP class of {image.sop_instance_uid} differs from its header")
        if image.decision not in codes.PRESENCE or image.count not in codes.COUNT_CLASSES:
            raise SRBuildError(f"unknown decision or count class for {image.sop_instance_uid}")
        codes.body_part_code(image.body_part)  # ValueError for a label with no SNOMED CT code
    if findings.decision not in codes.PRESENCE:
        raise SRBuildError(f"unknown study decision {findings.decision!r}")
    return by_uid


def _check_review(review: RadiologistReview) -> None:
    if review.body_part not in codes.REVIEW_BODY_PARTS:
        raise SRBuildError(
            f"unknown body part {review.body_part!r} in the review; "
            f"known: {', '.join(sorted(codes.REVIEW_BODY_PARTS))}"
        )


def _check_probability(value: float) -> None:
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise SRBuildError(f"a probability must lie in [0, 1], got {value!r}")
