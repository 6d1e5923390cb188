"""Who made a result object, and when: shared by the SR, presentation state and KOS builders.

* :func:`processing_equipment`: the Contributing Equipment items naming xrayd (the software)
  and the model, both "Processing Equipment" (DCM 109102, CID 7005).
* :func:`patient_study_header`: a copy of a source header with the type 2 patient and study
  attributes highdicom copies present (empty when the source lacks them).
* :func:`pin_clock`: highdicom stamps the wall clock into creation dates/times and into its own
  Contributing Equipment item; overwriting them with the job's time makes a rebuild
  byte-identical (a re-run after a crash sends the same bytes under the same UIDs).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from highdicom import ContributingEquipment
from pydicom.dataset import Dataset

from dicom_node import codes
from dicom_node.findings import Algorithm

__all__ = [
    "da",
    "dt",
    "index_sources",
    "patient_study_header",
    "pin_clock",
    "processing_equipment",
    "tm",
]

#: Type 2 attributes highdicom copies from the first source header into a new object; a header
#: that lacks one gets it empty.
TYPE2_FROM_SOURCE = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)


def da(when: datetime) -> str:
    """A DA value."""
    return when.strftime("%Y%m%d")


def tm(when: datetime) -> str:
    """A TM value, with microseconds only when there are some."""
    return when.strftime("%H%M%S.%f" if when.microsecond else "%H%M%S")


def dt(when: datetime) -> str:
    """A DT value: date, time, microseconds if any, UTC offset if ``when`` is aware."""
    stamp = when.strftime("%Y%m%d%H%M%S") + (f".{when.microsecond:06d}" if when.microsecond else "")
    return stamp + when.strftime("%z")


def processing_equipment(
    algorithm: Algorithm,
    *,
    device_name: str,
    manufacturer: str,
    software_version: str,
    when: datetime,
    contribution: str,
) -> list[ContributingEquipment]:
    """xrayd (``contribution``: what it did, e.g. "drew the AI result over the referenced
    image") and the model (name, version, weights' SHA-256)."""
    return [
        ContributingEquipment(
            manufacturer=manufacturer,
            purpose_of_reference=codes.PROCESSING_EQUIPMENT,
            manufacturer_model_name=device_name,
            software_versions=software_version,
            contribution_datetime=when,
            contribution_description=(
                f"xrayd fracture triage: {contribution} (research software, not for clinical use)"
            ),
        ),
        ContributingEquipment(
            manufacturer=manufacturer,
            purpose_of_reference=codes.PROCESSING_EQUIPMENT,
            manufacturer_model_name=algorithm.name,
            software_versions=algorithm.version,
            contribution_datetime=when,
            contribution_description=(
                f"fracture classifier {algorithm.name} {algorithm.version}, "
                f"weights sha256 {algorithm.weights_sha256}"
            ),
        ),
    ]


def pin_clock(ds: Dataset, when: datetime, date_time: Sequence[tuple[str, str]] = ()) -> None:
    """Set Instance Creation Date/Time, each (date keyword, time keyword) pair of ``date_time``,
    every Contribution DateTime and, for an aware ``when``, Timezone Offset From UTC to
    ``when`` (byte-identical rebuilds)."""
    for date_keyword, time_keyword in (
        ("InstanceCreationDate", "InstanceCreationTime"),
        *date_time,
    ):
        setattr(ds, date_keyword, da(when))
        setattr(ds, time_keyword, tm(when))
    stamp = dt(when)
    for item in ds.get("ContributingEquipmentSequence", []):
        item.ContributionDateTime = stamp
    if when.utcoffset() is not None:
        ds.TimezoneOffsetFromUTC = when.strftime("%z")


def patient_study_header(source: Dataset) -> Dataset:
    """A copy of ``source`` (a new element dict: ``Dataset.copy()`` would share the caller's)
    with every attribute of :data:`TYPE2_FROM_SOURCE` present, empty where ``source`` has none."""
    head = Dataset()
    head.update(source)
    for keyword in TYPE2_FROM_SOURCE:
        if keyword not in head:
            setattr(head, keyword, None)
    return head


def index_sources(
    study_instance_uid: str, sources: Sequence[Dataset], error: type[Exception]
) -> dict[str, Dataset]:
    """The source headers by SOP Instance UID; ``error`` when one lacks an identifying UID or
    belongs to another study."""
    by_uid: dict[str, Dataset] = {}
    for ds in sources:
        for keyword in ("SOPInstanceUID", "SOPClassUID", "SeriesInstanceUID", "StudyInstanceUID"):
            if not ds.get(keyword):
                raise error(f"a source header has no {keyword}")
        if ds.StudyInstanceUID != study_instance_uid:
            raise error(f"source {ds.SOPInstanceUID} is not in study {study_instance_uid}")
        by_uid[str(ds.SOPInstanceUID)] = ds
    return by_uid
