"""MURA v1.1 (Stanford ML Group, musculoskeletal radiographs) in its published layout.

::

    MURA-v1.1/
        train_image_paths.csv       MURA-v1.1/train/XR_WRIST/patient00001/study1_positive/image1.png
        train_labeled_studies.csv   MURA-v1.1/train/XR_WRIST/patient00001/study1_positive/,1
        valid_image_paths.csv
        valid_labeled_studies.csv
        train/XR_<PART>/patient<NNNNN>/study<N>_<positive|negative>/image<N>.png
        valid/...

The CSV files have no header; paths are relative to the folder that contains ``MURA-v1.1``.
Labels are per study (all images of a study share it).

**MURA's label is "abnormal", not "fracture".** Abnormal studies include fractures but also
hardware, degenerative joint disease, lesions and other findings. It is mapped to
``fracture`` here as a *proxy*; a model trained on it learns "abnormal". ``count`` and
``hardware`` are unknown (``None``, masked in the loss). Patients do not overlap between
MURA's train and valid sets; its test set is not public.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from retrain.datasets.errors import DatasetError
from retrain.datasets.records import FileImage, ImageRecord
from retrain.datasets.tables import Row, inside, read_plain_rows

logger = logging.getLogger(__name__)

__all__ = ["MURA_BODY_PARTS", "MURA_DIR", "MURA_SPLITS", "load_mura"]

MURA_DIR = "MURA-v1.1"
#: MURA's own splits (its test set is not published).
MURA_SPLITS: tuple[str, str] = ("train", "valid")
#: MURA's study types and our body-part names.
MURA_BODY_PARTS: dict[str, str] = {
    "XR_ELBOW": "elbow",
    "XR_FINGER": "finger",
    "XR_FOREARM": "forearm",
    "XR_HAND": "hand",
    "XR_HUMERUS": "humerus",
    "XR_SHOULDER": "shoulder",
    "XR_WRIST": "wrist",
}
_PATIENT = re.compile(r"patient\d+")
_STUDY = re.compile(r"study\d+(?:_(positive|negative))?")


def _base(root: Path) -> Path:
    """The folder the CSV paths are relative to (the parent of ``MURA-v1.1``)."""
    if (root / MURA_DIR).is_dir():
        return root
    if root.name == MURA_DIR and root.is_dir():
        return root.parent
    raise DatasetError(root, f"no {MURA_DIR} folder here (expected {root / MURA_DIR})")


def _study_key(row: Row, column: str, split: str) -> tuple[str, ...]:
    """``(XR_PART, patientN, studyN_label)`` of a study or image path; checks the layout."""
    parts = PurePosixPath(row.text(column).rstrip("/")).parts
    if len(parts) < 5 or parts[0] != MURA_DIR or parts[1] != split:
        raise row.error(
            column, f"expected a path under {MURA_DIR}/{split}/, got {row.text(column)!r}"
        )
    part, patient, study = parts[2:5]
    if part not in MURA_BODY_PARTS:
        raise row.error(
            column, f"unknown study type {part!r}; expected one of {sorted(MURA_BODY_PARTS)}"
        )
    if not _PATIENT.fullmatch(patient) or not _STUDY.fullmatch(study):
        raise row.error(
            column, f"expected .../patientNNNNN/studyN_<label>/..., got {row.text(column)!r}"
        )
    return (part, patient, study)


def _labels(base: Path, split: str) -> dict[tuple[str, ...], bool]:
    path = base / MURA_DIR / f"{split}_labeled_studies.csv"
    labels: dict[tuple[str, ...], bool] = {}
    for row in read_plain_rows(path, 2):
        key = _study_key(row, "1", split)
        if len(PurePosixPath(row.text("1").rstrip("/")).parts) != 5:
            raise row.error("1", f"expected a study folder, got {row.text('1')!r}")
        abnormal = row.flag("2")
        if abnormal is None:
            raise row.error("2", "the label is empty")
        suffix = _STUDY.fullmatch(key[2])
        if suffix is not None and suffix.group(1) and (suffix.group(1) == "positive") != abnormal:
            raise row.error("2", f"label {int(abnormal)} contradicts the folder name {key[2]!r}")
        if key in labels:
            raise row.error("1", "study listed twice")
        labels[key] = abnormal
    return labels


def _split_records(base: Path, split: str, check_files: bool) -> list[ImageRecord]:
    labels = _labels(base, split)
    records: list[ImageRecord] = []
    for row in read_plain_rows(base / MURA_DIR / f"{split}_image_paths.csv", 1):
        key = _study_key(row, "1", split)
        if len(PurePosixPath(row.text("1")).parts) != 6:
            raise row.error("1", f"expected an image file in a study folder, got {row.text('1')!r}")
        if key not in labels:
            raise row.error("1", f"study {'/'.join(key)} is not in {split}_labeled_studies.csv")
        path = inside(base, row.text("1"), row, "1")
        if check_files and not path.is_file():
            raise row.error("1", f"image file not found: {path}")
        part, patient, study = key
        records.append(
            ImageRecord(
                image=FileImage(path),
                patient_id=patient,
                study_id=f"{patient}/{part}/{study}",
                fracture=labels[key],
                count=None,
                body_part=MURA_BODY_PARTS[part],
                hardware=None,
                source="mura",
                given_split=split,
            )
        )
    return records


def load_mura(
    root: Path, *, splits: Sequence[str] = MURA_SPLITS, check_files: bool = True
) -> list[ImageRecord]:
    """Records of MURA's ``splits``; ``root`` is ``MURA-v1.1`` itself or the folder holding it.

    ``fracture`` carries MURA's *abnormal* label (a proxy; see the module docstring);
    ``given_split`` is ``"train"`` or ``"valid"``. With ``check_files`` every listed image must
    exist. Raises :class:`DatasetError` naming the CSV file, line and column of a problem.
    """
    base = _base(root)
    records: list[ImageRecord] = []
    for split in splits:
        if split not in MURA_SPLITS:
            raise DatasetError(root, f"unknown MURA split {split!r}; expected one of {MURA_SPLITS}")
        records.extend(_split_records(base, split, check_files))
    logger.info("MURA: %d images from %s", len(records), ", ".join(splits))
    return records
