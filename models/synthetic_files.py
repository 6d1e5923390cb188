"""Synthetic studies as DICOM files plus a labels CSV (``xrayd synth``).

Each study is one synthetic patient with one to three views of one body part; every view
carries the study's fracture label (each view places its own fractures). Files vary the way a
hospital's do: DX and CR, MONOCHROME1 and MONOCHROME2, 12/14/16 bits stored, uncompressed,
RLE, JPEG 2000 and JPEG-LS lossless (JPEG-LS only where its encoder, pyjpegls, is installed).
``labels.csv`` uses the generic "folder + labels CSV" layout that ``xrayd train --dataset csv``
reads. The same ``seed`` always writes the same pixels and labels.
"""

from __future__ import annotations

import csv
import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from models.synthetic import BODY_PARTS, case_seed, generate_case, to_dicom

logger = logging.getLogger(__name__)

__all__ = ["LABEL_COLUMNS", "SyntheticFile", "transfer_syntaxes", "write_synthetic_studies"]

LABEL_COLUMNS = (
    "path",
    "patient_id",
    "study_id",
    "fracture",
    "fracture_count",
    "body_part",
    "hardware",
)


@dataclass(frozen=True)
class SyntheticFile:
    path: Path
    patient_id: str
    study_uid: str
    fracture_count: int
    body_part: str
    hardware: bool
    transfer_syntax: str


def transfer_syntaxes() -> tuple[str, ...]:
    """The lossless transfer syntaxes this installation can encode."""
    syntaxes = [ExplicitVRLittleEndian, RLELossless, JPEG2000Lossless]
    if importlib.util.find_spec("jpeg_ls") is not None:
        syntaxes.append(JPEGLSLossless)
    return tuple(str(s) for s in syntaxes)


def write_synthetic_studies(
    out: Path,
    studies: int,
    seed: int,
    *,
    size: int = 512,
    progress: Callable[[int], None] | None = None,
) -> list[SyntheticFile]:
    """Write ``studies`` synthetic studies under ``out`` and ``out/labels.csv``."""
    if studies < 1:
        raise ValueError("studies must be positive")
    out.mkdir(parents=True, exist_ok=True)
    syntaxes = transfer_syntaxes()
    written: list[SyntheticFile] = []
    for index in range(studies):
        rng = np.random.default_rng(case_seed(seed, index))
        patient_id = f"SYN{seed % 10_000:04d}{index:05d}"
        part = str(rng.choice(BODY_PARTS))
        fracture = bool(index % 2 == 0)  # balanced, like the training sets
        views = int(rng.integers(1, 4))
        modality: Literal["DX", "CR"] = "DX" if rng.random() < 0.6 else "CR"
        photometric: Literal["MONOCHROME1", "MONOCHROME2"] = (
            "MONOCHROME1" if rng.random() < 0.3 else "MONOCHROME2"
        )
        bits = int(rng.choice([12, 14, 16]))
        syntax = syntaxes[index % len(syntaxes)]
        folder = out / patient_id
        folder.mkdir(exist_ok=True)
        study_uid: str | None = None
        for view in range(views):
            case = generate_case(
                case_seed(seed + 7919, index * 3 + view), size, fracture=fracture, body_part=part
            )
            ds = to_dicom(
                case,
                modality=modality,
                study_uid=study_uid,
                patient_id=patient_id,
                patient_name=f"Synthetic^{patient_id}",
                photometric=photometric,
                bits_stored=bits,
                transfer_syntax=syntax,
                accession_number=f"A{patient_id}",
                instance_number=view + 1,
            )
            study_uid = str(ds.StudyInstanceUID)
            path = folder / f"view{view + 1}.dcm"
            ds.save_as(path, enforce_file_format=True)
            written.append(
                SyntheticFile(
                    path, patient_id, study_uid, case.fracture_count, part, case.hardware, syntax
                )
            )
        if progress:
            progress(1)
    _write_labels(out, written)
    logger.info("wrote %d synthetic studies (%d files) to %s", studies, len(written), out)
    return written


def _write_labels(out: Path, files: list[SyntheticFile]) -> None:
    tmp = out / "labels.csv.tmp"
    with tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(LABEL_COLUMNS)
        for item in files:
            writer.writerow(
                [
                    item.path.relative_to(out).as_posix(),
                    item.patient_id,
                    item.study_uid,
                    int(item.fracture_count > 0),
                    "2+" if item.fracture_count >= 2 else str(item.fracture_count),
                    item.body_part,
                    int(item.hardware),
                ]
            )
    tmp.replace(out / "labels.csv")
