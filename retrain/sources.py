"""The pixels of one image, prepared in a worker process: a synthetic case, a dataset file, or a
received DICOM file from the spool. No torch here, so worker processes start quickly.

Synthetic case ``index`` of ``seed`` is ``generate_case(case_seed(seed, index), size,
fracture=index % 2 == 0)``: the case ``models.synthetic.generate_dataset(n, seed, size=size)``
(balanced) and ``models.synthetic_data.synthetic_tensors`` produce at that index. Its key is
``synthetic:<seed>:<index>``; with the generation size it regenerates the same pixels.

A spool file's patient is ``sha256(salt, PatientID)`` (:func:`patient_group`); the PatientID
itself never leaves this module. A file without a PatientID is its own patient per study.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from pydicom.errors import InvalidDicomError

from models.errors import NotAnalysable
from models.limits import DEFAULT_LIMITS, ImageLimits
from models.preprocess import PreprocessParams, prepare
from models.reading import read_header, read_image
from models.synthetic import case_seed, generate_case, to_dicom

__all__ = [
    "FileResult",
    "SpoolRead",
    "SyntheticResult",
    "dataset_file_image",
    "parse_synthetic_key",
    "patient_group",
    "read_spool_file",
    "synthetic_image",
    "synthetic_key",
    "synthetic_labels",
]

Pixels = npt.NDArray[np.float16]


def synthetic_key(seed: int, index: int) -> str:
    return f"synthetic:{seed}:{index}"


def parse_synthetic_key(key: str) -> tuple[int, int]:
    """``(seed, index)`` of ``synthetic:<seed>:<index>``; ``ValueError`` for anything else."""
    parts = key.split(":")
    if len(parts) != 3 or parts[0] != "synthetic":
        raise ValueError(f"not a synthetic case key: {key!r}")
    seed, index = int(parts[1]), int(parts[2])
    if seed < 0 or index < 0:
        raise ValueError(f"not a synthetic case key: {key!r}")
    return seed, index


def patient_group(patient_id: str, salt: str) -> str:
    """The patient key stored instead of the PatientID: hex SHA-256 of salt and ID."""
    return hashlib.sha256(f"xrayd-patient\x00{salt}\x00{patient_id}".encode()).hexdigest()


@dataclass(frozen=True)
class SyntheticResult:
    """A prepared synthetic case and its true labels."""

    pixels: Pixels
    case_seed: int
    fracture_count: int
    body_part: str
    hardware: bool


def synthetic_image(job: tuple[int, int, int, PreprocessParams]) -> SyntheticResult:
    """``(seed, index, size, params)`` -> case ``index`` of ``seed`` through ``to_dicom`` and
    ``prepare``, as a received radiograph would go."""
    seed, index, size, params = job
    case = generate_case(case_seed(seed, index), size, fracture=index % 2 == 0)
    pixels = prepare(to_dicom(case), params).pixels.astype(np.float16)
    return SyntheticResult(pixels, case.seed, case.fracture_count, case.body_part, case.hardware)


def synthetic_labels(job: tuple[int, int, int]) -> tuple[int, int, str, bool]:
    """``(seed, index, size)`` -> ``(case seed, fracture count, body part, hardware)``."""
    seed, index, size = job
    case = generate_case(case_seed(seed, index), size, fracture=index % 2 == 0)
    return case.seed, case.fracture_count, case.body_part, case.hardware


@dataclass(frozen=True)
class FileResult:
    """A prepared dataset file, or why it could not be prepared."""

    pixels: Pixels | None
    problem: str | None


def dataset_file_image(job: tuple[str, PreprocessParams]) -> FileResult:
    """``(path, params)`` -> a MURA/FracAtlas/CSV image (DICOM or PNG/JPEG) prepared."""
    from retrain.datasets.errors import DatasetError  # imports torch: only where needed
    from retrain.datasets.images import prepare_image
    from retrain.datasets.records import FileImage

    path, params = job
    try:
        pixels = prepare_image(FileImage(Path(path)), params).pixels.astype(np.float16)
    except DatasetError as exc:
        return FileResult(None, exc.detail)
    return FileResult(pixels, None)


@dataclass(frozen=True)
class SpoolRead:
    """What was read from a spool file: its patient group, and with ``params`` its pixels and
    the file's SHA-256. ``problem`` is a reason code when the file could not be used:
    ``missing_file``, ``unreadable`` or ``not_analysable:<reason>``."""

    patient_group: str | None
    pixels: Pixels | None
    file_sha256: str | None
    problem: str | None


def read_spool_file(
    job: tuple[str, str, str, PreprocessParams | None]
    | tuple[str, str, str, PreprocessParams | None, ImageLimits],
) -> SpoolRead:
    """``(path, salt, fallback patient, params[, limits])``: with ``params`` None only the
    header. An image beyond the limits (default: the settings' defaults) is refused from its
    header, never decoded: ``not_analysable:image_too_large``."""
    path, salt, fallback, params = job[:4]
    limits = job[4] if len(job) > 4 else DEFAULT_LIMITS
    try:
        if params is None:
            ds = read_header(Path(path), limits, specific_tags=["PatientID"])
            data = b""
        else:
            data = Path(path).read_bytes()
            ds = read_image(data, limits)
    except FileNotFoundError:
        return SpoolRead(None, None, None, "missing_file")
    except NotAnalysable as exc:
        if params is not None:  # the patient is not known: the header alone is read again
            group = _patient_of(path, salt, fallback, limits)
            return SpoolRead(group, None, None, f"not_analysable:{exc.reason.value}")
        return SpoolRead(None, None, None, f"not_analysable:{exc.reason.value}")
    except (InvalidDicomError, OSError, ValueError, EOFError):
        return SpoolRead(None, None, None, "unreadable")
    patient = str(ds.get("PatientID", "") or "").strip()
    group = patient_group(patient or fallback, salt)
    if params is None:
        return SpoolRead(group, None, None, None)
    try:
        pixels = prepare(ds, params, limits=limits).pixels.astype(np.float16)
    except NotAnalysable as exc:
        return SpoolRead(group, None, None, f"not_analysable:{exc.reason.value}")
    except (ValueError, TypeError, AttributeError, KeyError):  # broken pixel data
        return SpoolRead(group, None, None, "unreadable")
    return SpoolRead(group, pixels, hashlib.sha256(data).hexdigest(), None)


def _patient_of(path: str, salt: str, fallback: str, limits: ImageLimits) -> str | None:
    """The patient group from the header alone (None if even that cannot be read)."""
    try:
        ds = read_header(Path(path), limits, specific_tags=["PatientID"])
    except (NotAnalysable, InvalidDicomError, OSError, ValueError, EOFError):
        return None
    patient = str(ds.get("PatientID", "") or "").strip()
    return patient_group(patient or fallback, salt)
