"""One part (train / validation / test) of a named dataset as in-memory tensors.

The split is by patient with a *fixed* split seed, independent of any training seed: the
``test`` part read by an evaluation run must be the same patients that training held out.
MURA: its ``valid`` set (the public stand-in for its hidden test set) is the ``test`` part and
10 % of its ``train`` patients are the ``validation`` part. FracAtlas: 70 / 15 / 15 % of its
content-hash groups, stratified by fracture label and body part. CSV folders: 80 / 10 / 10 % of
patients. Pixels are float16 like :func:`models.synthetic_data.synthetic_tensors`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import astuple
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from models.parallel import process_map
from models.preprocess import PreprocessParams
from models.synthetic_data import LabelledTensors
from retrain.datasets.catalog import load_records
from retrain.datasets.images import prepare_image
from retrain.datasets.records import GeneratedImage, ImageRecord, label_codes
from retrain.datasets.split import SPLIT_NAMES, split_by_patient, split_stratified
from retrain.datasets.torch_data import targets_from

logger = logging.getLogger(__name__)

__all__ = ["SPLIT_SEED", "dataset_split", "dataset_tensors", "records_tensors"]

#: The split seed of every dataset unless a caller deliberately chooses another one.
SPLIT_SEED = 0


def dataset_split(
    kind: str, root: Path | None, part: str, *, split_seed: int = SPLIT_SEED
) -> list[ImageRecord]:
    """The records of ``part`` (``train``, ``validation`` or ``test``) of dataset ``kind``."""
    name = next((n for n in SPLIT_NAMES if n == part), None)
    if name is None:
        raise ValueError(f"unknown part {part!r}; expected one of {SPLIT_NAMES}")
    records = load_records(kind, root)
    if kind == "fracatlas":
        split = split_stratified(records, seed=split_seed, validation=0.15, test=0.15)
    elif kind == "mura":
        split = split_by_patient(
            records, seed=split_seed, validation=0.1, test=0.0, keep_given={"valid": "test"}
        )
    else:
        split = split_by_patient(records, seed=split_seed, validation=0.1, test=0.1)
    return list(split.get(name))


def _pixels(job: tuple[ImageRecord, PreprocessParams]) -> npt.NDArray[np.float16]:
    record, params = job
    return prepare_image(record.image, params).pixels.astype(np.float16)


def _describe(record: ImageRecord, root: Path | None) -> str:
    if isinstance(record.image, GeneratedImage):
        return f"synthetic:{record.image.case.seed}"
    path = record.image.path
    if root is not None and path.is_relative_to(root):
        return path.relative_to(root).as_posix()
    return path.as_posix()


def _manifest(records: Sequence[ImageRecord], root: Path | None, extra: dict[str, object]) -> str:
    entries = [
        [_describe(r, root), r.source, r.patient_id, r.study_id, *astuple(label_codes(r))]
        for r in records
    ]
    blob = json.dumps({**extra, "images": entries}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def records_tensors(
    records: Sequence[ImageRecord],
    params: PreprocessParams,
    *,
    root: Path | None = None,
    source: str = "records",
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> LabelledTensors:
    """Prepare ``records`` (in ``workers`` processes; default all CPUs) into tensors.

    The manifest hash covers each image's path (relative to ``root`` when inside it), ids,
    label codes and the input size. Errors are :class:`retrain.datasets.errors.DatasetError`.
    """
    if not records:
        raise ValueError("no records")
    jobs = [(r, params) for r in records]
    arrays, workers = process_map(_pixels, jobs, workers=workers, progress=progress)
    pixels = torch.from_numpy(np.stack(arrays)).unsqueeze(1)
    targets = targets_from([label_codes(r) for r in records])
    manifest = _manifest(records, root, {"source": source, "input_size": params.input_size})
    logger.info("prepared %d images of %s (%d workers)", len(records), source, workers)
    return LabelledTensors(pixels, targets, manifest, source)


def dataset_tensors(
    kind: str,
    root: Path,
    part: str,
    params: PreprocessParams,
    *,
    split_seed: int = SPLIT_SEED,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> LabelledTensors:
    """Part ``part`` of dataset ``kind`` (``mura``, ``fracatlas``, ``csv``) as tensors.

    ``split_seed`` chooses the patient split; keep it the same for training and evaluation
    (the default), or the test patients of one run were training patients of another.
    """
    records = dataset_split(kind, root, part, split_seed=split_seed)
    if not records:
        raise ValueError(f"the {part} part of {kind} at {root} is empty")
    return records_tensors(
        records,
        params,
        root=root,
        source=f"{kind}:{part}",
        workers=workers,
        progress=progress,
    )
