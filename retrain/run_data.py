"""The data of a run: the locked validation set, the calibration set, the base and reviewed
training images, prepared in one pool of worker processes (see :mod:`retrain.run`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from models.limits import DEFAULT_LIMITS, ImageLimits
from models.losses import Targets
from models.preprocess import PreprocessParams
from models.synthetic_data import LabelledTensors
from retrain.base_data import (
    BaseDataset,
    CalibrationSpec,
    ImageSet,
    base_training_set,
    calibration_set,
)
from retrain.errors import RetrainError, ValidationSetError
from retrain.pool import WorkerPool
from retrain.review_data import review_training_set
from retrain.validation import CaseLike, ValidationSet, validation_tensors
from storage.bytestore import ByteStore
from storage.training import ReviewedExample

__all__ = ["RunData", "concat_repeated", "prepare_data"]


@dataclass(frozen=True, eq=False)
class RunData:
    validation: ValidationSet
    calibration: ImageSet
    base: ImageSet
    reviews: ImageSet


@contextmanager
def _bar(desc: str, total: int, enabled: bool) -> Iterator[Callable[[int], None]]:
    """A tqdm bar on stderr (nothing when disabled); yields its ``update``."""
    bar = tqdm(total=total, desc=desc, unit="image", disable=not enabled, leave=False)
    try:
        yield bar.update
    finally:
        bar.close()


def concat_repeated(parts: Sequence[tuple[LabelledTensors, int]], source: str) -> LabelledTensors:
    """Rows of each part repeated ``times`` (the oversampling of reviewed images)."""
    kept = [(data, times) for data, times in parts if len(data)]
    if not kept:
        raise RetrainError("nothing to train on: no base images and no usable reviewed images")
    pixels = torch.cat([data.pixels.repeat(times, 1, 1, 1) for data, times in kept])

    def cat(name: str) -> torch.Tensor:
        return torch.cat([getattr(d.targets, name).repeat(times) for d, times in kept])

    targets = Targets(cat("fracture"), cat("count"), cat("body_part"), cat("hardware"))
    return LabelledTensors(pixels, targets, "+".join(d.manifest_sha256 for d, _ in kept), source)


def prepare_data(
    *,
    cases: Sequence[CaseLike],
    reviewed: Sequence[ReviewedExample],
    base: BaseDataset,
    calibration: CalibrationSpec,
    spool_root: Path,
    salt: str,
    review_weight: int,
    body_parts: Sequence[str],
    params: PreprocessParams,
    pool: WorkerPool,
    progress: bool,
    lap: Callable[[str], None],
    limits: ImageLimits = DEFAULT_LIMITS,
    store: ByteStore | None = None,
) -> RunData:
    """Locked validation set (checked for both classes), calibration, base and reviews;
    the reviewed images from ``store`` (default: the spool at ``spool_root``)."""
    paths = {ex.sop_instance_uid: ex.spool_path for ex in reviewed}
    with _bar("locked validation set", len(cases), progress) as update:
        validation = validation_tensors(
            cases,
            base,
            spool_root,
            params,
            review_paths=paths,
            body_parts=body_parts,
            pool=pool,
            progress=update,
            store=store,
        )
    fracture = validation.tensors.targets.fracture
    if not bool((fracture == 1).any()) or not bool((fracture == 0).any()):
        raise ValidationSetError(
            "the locked validation set needs fractured and normal cases "
            f"({len(validation)} rebuilt, {len(validation.missing)} missing)"
        )
    lap("validation_set")
    locked_keys = {c.key for c in cases}
    locked_groups = {c.patient_group for c in cases}
    with _bar("calibration set", calibration.count, progress) as update:
        calibration_images = calibration_set(
            base,
            calibration,
            params,
            body_parts,
            locked_keys=locked_keys,
            locked_groups=locked_groups,
            pool=pool,
            progress=update,
        )
    with _bar("base images", base.n_train, progress) as update:
        base_images = base_training_set(
            base,
            params,
            body_parts,
            locked_keys=locked_keys,
            locked_groups=locked_groups,
            calibration=calibration,
            pool=pool,
            progress=update,
        )
    with _bar("reviewed images", len(reviewed), progress) as update:
        reviews = review_training_set(
            reviewed,
            spool_root,
            params,
            body_parts,
            salt=salt,
            locked=cases,
            weight=review_weight,
            pool=pool,
            progress=update,
            limits=limits,
            store=store,
        )
    lap("training_data")
    return RunData(validation, calibration_images, base_images, reviews)
