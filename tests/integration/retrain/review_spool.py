"""Reviewed radiographs as real DICOM files in a spool, with their ReviewedExample rows."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from pydicom.uid import generate_uid

from models.labels import COUNT_CLASSES
from models.synthetic import case_seed, generate_case, to_dicom
from storage.spool import Spool
from storage.training import ReviewedExample


def write_reviewed_spool(
    spool_root: Path,
    *,
    patients: int,
    studies_per_patient: int = 2,
    size: int = 256,
    seed: int = 900,
    flip: bool = False,
) -> list[ReviewedExample]:
    """``patients`` x ``studies_per_patient`` one-image studies, alternately with and without
    a fracture; the radiologist's label is the true label (every label inverted with
    ``flip``: fracture <-> none, and hardware)."""
    spool = Spool(spool_root)
    examples: list[ReviewedExample] = []
    index = 0
    for p in range(patients):
        for s in range(studies_per_patient):
            case = generate_case(case_seed(seed, index), size, fracture=index % 2 == 0)
            study_uid, sop_uid = generate_uid(), generate_uid()
            ds = to_dicom(
                case,
                study_uid=study_uid,
                patient_id=f"PAT-{p:04d}",
                patient_name=f"Test^Patient{p}",
            )
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
            rel = spool.relative_path_for(study_uid, sop_uid)
            path = spool.absolute(rel)
            path.parent.mkdir(parents=True, exist_ok=True)
            ds.save_as(path, enforce_file_format=True)
            fracture = case.fracture != flip
            label = {
                "fracture": "present" if fracture else "absent",
                "count": COUNT_CLASSES[case.fracture_count if not flip else int(fracture)],
                "body_part": case.body_part,
                "hardware": case.hardware != flip,
            }
            study_id = p * studies_per_patient + s + 1
            examples.append(
                ReviewedExample(
                    override_id=1000 + index,
                    study_id=study_id,
                    instance_id=index + 1,
                    sop_instance_uid=str(sop_uid),
                    spool_path=rel,
                    label=label,
                    agree=not flip,
                    reviewed_at=datetime(2026, 1, 1, tzinfo=UTC),
                    user_name="radiologist",
                )
            )
            index += 1
    return examples
