"""The base dataset trained on besides the reviews, and the calibration set.

``synthetic``: case ``i`` of ``seed`` for ``i < n_train`` (see :mod:`retrain.sources`);
``mura``/``fracatlas``/``csv``: up to ``n_train`` images of the dataset's ``train`` part (the
patient split of :mod:`retrain.datasets.tensors`, chosen by a seeded hash of each key).

Calibration (temperature, operating point, best epoch) needs labelled images that are neither
trained on nor in the locked validation set. ``synthetic``: ``count`` cases of the calibration
seed; datasets: the ``validation`` part minus the patients of the locked set (the locked set
takes only a share of that part's patients, see :func:`retrain.validation.base_validation_cases`).
Reviewed images are *not* used for calibration: every reviewed image not locked is trained on.

Anything whose case seed (synthetic) or patient (datasets) is in the locked set is left out of
both, and the synthetic training cases also avoid the calibration cases.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from models.labels import COUNT_CLASSES
from models.preprocess import PreprocessParams
from models.synthetic import case_seed
from models.synthetic_data import LabelledTensors
from retrain.datasets.records import ImageRecord, LabelCodes
from retrain.datasets.tensors import SPLIT_SEED, dataset_split
from retrain.errors import RetrainError
from retrain.labels import codes_from_label, digest, label_from_codes, stack_tensors
from retrain.pool import WorkerPool
from retrain.sources import (
    Pixels,
    dataset_file_image,
    parse_synthetic_key,
    synthetic_image,
    synthetic_key,
)

logger = logging.getLogger(__name__)

__all__ = [
    "CALIBRATION_SEED",
    "BaseDataset",
    "CalibrationSpec",
    "ImageSet",
    "TrainingImage",
    "base_group",
    "base_training_set",
    "calibration_set",
    "dataset_key",
    "locked_case_seeds",
    "record_label",
]

#: Seed of the synthetic calibration cases unless configured otherwise.
CALIBRATION_SEED = 7_300_002

Progress = Callable[[int], None]
_PRESENT = {True: "present", False: "absent"}


@dataclass(frozen=True)
class BaseDataset:
    """The base dataset of a site. ``root``: the dataset folder (``None`` for synthetic).
    ``n_train``: images trained on per run (0: reviews only). ``image_size``: synthetic
    generation size (default twice the model's input size, at least 64)."""

    kind: Literal["synthetic", "mura", "fracatlas", "csv"]
    root: Path | None = None
    n_train: int = 600
    seed: int = 0
    image_size: int | None = None
    split_seed: int = SPLIT_SEED

    def __post_init__(self) -> None:
        if self.kind not in ("synthetic", "mura", "fracatlas", "csv"):
            raise ValueError(f"unknown base dataset kind {self.kind!r}")
        if self.kind != "synthetic" and self.root is None:
            raise ValueError(f"base dataset {self.kind} needs a root folder")
        if self.n_train < 0 or self.seed < 0:
            raise ValueError("n_train and seed must not be negative")
        if self.image_size is not None and self.image_size < 64:
            raise ValueError("image_size must be at least 64")

    def generation_size(self, input_size: int) -> int:
        return self.image_size or max(64, 2 * input_size)

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "root": None if self.root is None else str(self.root),
            "n_train": self.n_train,
            "seed": self.seed,
            "image_size": self.image_size,
            "split_seed": self.split_seed,
        }


@dataclass(frozen=True)
class CalibrationSpec:
    """Synthetic calibration cases (``seed``, ``count``); for a dataset base, ``count`` caps
    the images taken from its validation part."""

    seed: int = CALIBRATION_SEED
    count: int = 200

    def __post_init__(self) -> None:
        if self.seed < 0 or self.count < 4:
            raise ValueError("the calibration set needs a seed >= 0 and at least 4 cases")


@dataclass(frozen=True)
class TrainingImage:
    """One image of a set, as the manifest lists it. ``sha256`` is of the prepared model
    input (``sha256_of="pixels"``, float16 bytes) or of the file (``"file"``)."""

    source: Literal["base", "review"]
    key: str
    sha256: str
    sha256_of: Literal["pixels", "file"]
    label: Mapping[str, Any]
    override_id: int | None = None
    study_id: int | None = None
    weight: int = 1

    def as_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "key": self.key,
            "sha256": self.sha256,
            "sha256_of": self.sha256_of,
            "label": dict(self.label),
            "override_id": self.override_id,
            "study_id": self.study_id,
            "weight": self.weight,
        }


@dataclass(frozen=True, eq=False)
class ImageSet:
    """Tensors and the image behind each row; what was left out and why."""

    tensors: LabelledTensors
    images: tuple[TrainingImage, ...]
    excluded_locked: int = 0
    skipped: Mapping[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)


def base_group(name: str) -> str:
    """The patient group of a base-dataset patient (``record.group``, or ``synthetic:<case
    seed>``: each synthetic case is its own patient)."""
    return hashlib.sha256(f"xrayd-base\x00{name}".encode()).hexdigest()


def dataset_key(record: ImageRecord, root: Path) -> str:
    """A dataset image's key: its path relative to the dataset root (POSIX)."""
    path = record.path
    if path is None:
        raise ValueError("a dataset record must name a file")
    return path.resolve().relative_to(root.resolve()).as_posix()


def record_label(record: ImageRecord) -> dict[str, Any]:
    """A record's labels in the stored form (``None`` where the dataset has none)."""
    return {
        "fracture": None if record.fracture is None else _PRESENT[record.fracture],
        "count": None if record.count is None else COUNT_CLASSES[record.count],
        "body_part": record.body_part,
        "hardware": record.hardware,
    }


def locked_case_seeds(keys: Collection[str]) -> frozenset[int]:
    """Case seeds of the synthetic keys among ``keys`` (other keys are ignored)."""
    seeds: set[int] = set()
    for key in keys:
        if key.startswith("synthetic:"):
            seed, index = parse_synthetic_key(key)
            seeds.add(case_seed(seed, index))
    return frozenset(seeds)


def _pixel_sha(pixels: Pixels) -> str:
    return hashlib.sha256(pixels.tobytes()).hexdigest()


def _synthetic_set(
    seed: int,
    indices: Sequence[int],
    size: int,
    params: PreprocessParams,
    body_parts: Sequence[str],
    *,
    source: str,
    excluded: int,
    pool: WorkerPool,
    progress: Progress | None,
) -> ImageSet:
    jobs = [(seed, i, size, params) for i in indices]
    results = pool.map(synthetic_image, jobs, progress)
    codes: list[LabelCodes] = []
    images: list[TrainingImage] = []
    for i, r in zip(indices, results, strict=True):
        code = codes_from_label(
            {
                "fracture": _PRESENT[r.fracture_count > 0],
                "count": COUNT_CLASSES[r.fracture_count],
                "body_part": r.body_part,
                "hardware": r.hardware,
            },
            body_parts,
        )
        codes.append(code)
        label = {**label_from_codes(code, body_parts), "image_size": size}
        images.append(
            TrainingImage("base", synthetic_key(seed, i), _pixel_sha(r.pixels), "pixels", label)
        )
    sha = digest([im.as_json() for im in images])
    tensors = stack_tensors(
        [r.pixels for r in results], codes, params.input_size, manifest_sha256=sha, source=source
    )
    return ImageSet(tensors, tuple(images), excluded)


def _records_set(
    records: Sequence[ImageRecord],
    root: Path,
    params: PreprocessParams,
    body_parts: Sequence[str],
    *,
    source: str,
    excluded: int,
    pool: WorkerPool,
    progress: Progress | None,
) -> ImageSet:
    jobs = [(str(r.path), params) for r in records]
    results = pool.map(dataset_file_image, jobs, progress)
    pixels: list[Pixels] = []
    codes: list[LabelCodes] = []
    images: list[TrainingImage] = []
    skipped: dict[str, int] = {}
    for record, result in zip(records, results, strict=True):
        if result.pixels is None:
            skipped["unreadable"] = skipped.get("unreadable", 0) + 1
            logger.warning("base image %s skipped: %s", record.path, result.problem)
            continue
        label = record_label(record)
        pixels.append(result.pixels)
        codes.append(codes_from_label(label, body_parts))
        key = dataset_key(record, root)
        images.append(TrainingImage("base", key, _pixel_sha(result.pixels), "pixels", label))
    sha = digest([im.as_json() for im in images])
    tensors = stack_tensors(pixels, codes, params.input_size, manifest_sha256=sha, source=source)
    return ImageSet(tensors, tuple(images), excluded, skipped)


def _ranked(records: Sequence[ImageRecord], root: Path, seed: int) -> list[ImageRecord]:
    """Records in a seeded pseudo-random order that does not depend on their listing order."""

    def rank(r: ImageRecord) -> str:
        return hashlib.sha256(f"{seed}\x00{dataset_key(r, root)}".encode()).hexdigest()

    return sorted(records, key=rank)


def _labelled(records: Sequence[ImageRecord]) -> list[ImageRecord]:
    return [r for r in records if r.path is not None]


def base_training_set(
    base: BaseDataset,
    params: PreprocessParams,
    body_parts: Sequence[str],
    *,
    locked_keys: Collection[str],
    locked_groups: Collection[str],
    calibration: CalibrationSpec,
    pool: WorkerPool | None = None,
    progress: Progress | None = None,
) -> ImageSet:
    """The base images of this run (``n_train`` of them, fewer where some are locked)."""
    if base.n_train == 0:
        empty = stack_tensors([], [], params.input_size, manifest_sha256=digest([]), source="base")
        return ImageSet(empty, ())
    if base.kind == "synthetic":
        avoid = locked_case_seeds(locked_keys) | {
            case_seed(calibration.seed, i) for i in range(calibration.count)
        }
        indices = [i for i in range(base.n_train) if case_seed(base.seed, i) not in avoid]
        return _synthetic_set(
            base.seed,
            indices,
            base.generation_size(params.input_size),
            params,
            body_parts,
            source="base:synthetic",
            excluded=base.n_train - len(indices),
            pool=pool or WorkerPool(1),
            progress=progress,
        )
    assert base.root is not None
    records = _labelled(dataset_split(base.kind, base.root, "train", split_seed=base.split_seed))
    groups = set(locked_groups)
    keys = set(locked_keys)
    usable = [
        r
        for r in records
        if base_group(r.group) not in groups and dataset_key(r, base.root) not in keys
    ]
    chosen = _ranked(usable, base.root, base.seed)[: base.n_train]
    return _records_set(
        chosen,
        base.root,
        params,
        body_parts,
        source=f"base:{base.kind}",
        excluded=len(records) - len(usable),
        pool=pool or WorkerPool(1),
        progress=progress,
    )


def calibration_set(
    base: BaseDataset,
    spec: CalibrationSpec,
    params: PreprocessParams,
    body_parts: Sequence[str],
    *,
    locked_keys: Collection[str],
    locked_groups: Collection[str],
    pool: WorkerPool | None = None,
    progress: Progress | None = None,
) -> ImageSet:
    """The calibration set (see the module docstring). Raises :class:`RetrainError` when it
    lacks fractured or normal cases."""
    if base.kind == "synthetic":
        avoid = locked_case_seeds(locked_keys)
        indices = [i for i in range(spec.count) if case_seed(spec.seed, i) not in avoid]
        result = _synthetic_set(
            spec.seed,
            indices,
            base.generation_size(params.input_size),
            params,
            body_parts,
            source="calibration:synthetic",
            excluded=spec.count - len(indices),
            pool=pool or WorkerPool(1),
            progress=progress,
        )
    else:
        assert base.root is not None
        records = [
            r
            for r in _labelled(
                dataset_split(base.kind, base.root, "validation", split_seed=base.split_seed)
            )
            if r.fracture is not None
        ]
        groups = set(locked_groups)
        keys = set(locked_keys)
        usable = [
            r
            for r in records
            if base_group(r.group) not in groups and dataset_key(r, base.root) not in keys
        ]
        result = _records_set(
            _ranked(usable, base.root, spec.seed)[: spec.count],
            base.root,
            params,
            body_parts,
            source=f"calibration:{base.kind}",
            excluded=len(records) - len(usable),
            pool=pool or WorkerPool(1),
            progress=progress,
        )
    fracture = result.tensors.targets.fracture
    if not bool((fracture == 1).any()) or not bool((fracture == 0).any()):
        raise RetrainError("the calibration set needs both fractured and normal images")
    return result
