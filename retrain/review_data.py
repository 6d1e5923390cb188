"""Reviewed images as training data: the radiologist's label, the pixels from the byte store.

Each reviewed image (``storage.training.ReviewedExample``) is read from the byte store (the
spool, or an object store: :mod:`retrain.stored`) and prepared
exactly as analysis prepares it (:func:`models.preprocess.prepare`). Left out, and counted:

* images of the locked validation set, by SOP Instance UID *and* by patient (a new image of a
  patient whose images are locked is never trained on) -> ``excluded_locked``;
* images that cannot be used -> ``skipped`` by reason (``missing_file``, ``unreadable``,
  ``bad_path``, ``not_analysable:<reason>``, e.g. a colour secondary capture in the study, or
  ``not_analysable:image_too_large`` for an image beyond the ``[limits]``).

Labels: see :mod:`retrain.labels` (a body part the model has no class for is "missing").
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from models.limits import DEFAULT_LIMITS, ImageLimits
from models.preprocess import PreprocessParams
from retrain.base_data import ImageSet, TrainingImage
from retrain.datasets.records import LabelCodes
from retrain.labels import codes_from_label, digest, label_from_codes, stack_tensors
from retrain.pool import WorkerPool
from retrain.sources import Pixels
from retrain.stored import StoredRead, byte_store, read_stored_files
from retrain.validation import CaseLike
from storage.bytestore import ByteStore
from storage.training import ReviewedExample

logger = logging.getLogger(__name__)

__all__ = ["review_training_set"]


def review_training_set(
    examples: Sequence[ReviewedExample],
    spool_root: Path,
    params: PreprocessParams,
    body_parts: Sequence[str],
    *,
    salt: str,
    locked: Iterable[CaseLike],
    weight: int = 1,
    pool: WorkerPool | None = None,
    progress: Callable[[int], None] | None = None,
    limits: ImageLimits = DEFAULT_LIMITS,
    store: ByteStore | None = None,
) -> ImageSet:
    """The usable reviewed images not in the locked set, as tensors with manifest entries
    (``weight``: how often each is repeated in training, recorded in the entries). An image
    beyond ``limits`` is skipped from its header, never decoded, and counted as
    ``not_analysable:image_too_large``. ``store`` holds the images (default: the spool at
    ``spool_root``)."""
    locked_list = list(locked)
    locked_keys = {c.key for c in locked_list if c.source == "review"}
    locked_groups = {c.patient_group for c in locked_list}
    skipped: dict[str, int] = {}
    excluded = 0
    todo: list[ReviewedExample] = []
    jobs: list[StoredRead] = []
    for ex in examples:
        if ex.sop_instance_uid in locked_keys:
            excluded += 1
            continue
        todo.append(ex)
        jobs.append((ex.spool_path, salt, f"study:{ex.study_id}", params, limits))
    reads = read_stored_files(byte_store(store, spool_root), jobs, pool, progress)
    pixels: list[Pixels] = []
    codes: list[LabelCodes] = []
    images: list[TrainingImage] = []
    for ex, read in zip(todo, reads, strict=True):
        if read.patient_group is not None and read.patient_group in locked_groups:
            excluded += 1
            continue
        if read.pixels is None or read.file_sha256 is None:
            reason = read.problem or "unreadable"
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        code = codes_from_label(ex.label, body_parts)
        pixels.append(read.pixels)
        codes.append(code)
        images.append(
            TrainingImage(
                "review",
                ex.sop_instance_uid,
                read.file_sha256,
                "file",
                label_from_codes(code, body_parts),
                override_id=ex.override_id,
                study_id=ex.study_id,
                weight=weight,
            )
        )
    if skipped:
        logger.info("reviewed images skipped: %s", skipped)
    sha = digest([im.as_json() for im in images])
    tensors = stack_tensors(pixels, codes, params.input_size, manifest_sha256=sha, source="review")
    return ImageSet(tensors, tuple(images), excluded, skipped)
