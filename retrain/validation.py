"""The site's LOCKED validation set: which cases it holds, and their pixels rebuilt for a run.

Cases are rows ``(source, key, study_id, patient_group, label)`` of ``storage.training``
(:class:`LockedCase` is such a tuple; :class:`storage.training.ValidationCaseRow` has the same
fields). They are chosen once, by an explicit command, and never trained on:

* ``base`` + synthetic: case ``i`` of a fixed seed, key ``synthetic:<seed>:<i>``; the label
  records the generation size (``image_size``), so the same pixels are regenerated whatever the
  configuration says later.
* ``base`` + MURA/FracAtlas/CSV: a ``fraction`` of the patients of the dataset's ``validation``
  part (the rest of that part calibrates), keyed by the path relative to the dataset root.
* ``review``: reviewed images chosen by PATIENT (:func:`review_validation_candidates`), keyed by
  SOP Instance UID; the group is ``sha256(salt, PatientID)`` read from the file header.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from models.labels import BODY_PARTS, COUNT_CLASSES
from models.limits import DEFAULT_LIMITS
from models.preprocess import PreprocessParams
from models.synthetic import case_seed
from models.synthetic_data import LabelledTensors
from retrain.base_data import BaseDataset, base_group, dataset_key, record_label
from retrain.datasets.records import LabelCodes
from retrain.datasets.tensors import dataset_split
from retrain.errors import ValidationSetError
from retrain.labels import codes_from_label, digest, stack_tensors
from retrain.pool import WorkerPool
from retrain.sources import (
    Pixels,
    dataset_file_image,
    parse_synthetic_key,
    synthetic_image,
    synthetic_key,
    synthetic_labels,
)
from retrain.stored import StoredRead, byte_store, read_stored_files
from storage.bytestore import ByteStore
from storage.training import ReviewedExample

logger = logging.getLogger(__name__)

__all__ = [
    "VALIDATION_SEED",
    "CaseLike",
    "LockedCase",
    "ValidationParams",
    "ValidationSet",
    "base_validation_cases",
    "review_groups",
    "review_validation_candidates",
    "validation_tensors",
]

#: Seed of the synthetic locked validation cases unless configured otherwise.
VALIDATION_SEED = 7_300_001

Progress = Callable[[int], None]


class CaseLike(Protocol):
    """What a validation case has (``storage.training.ValidationCaseRow`` or LockedCase)."""

    @property
    def source(self) -> str: ...
    @property
    def key(self) -> str: ...
    @property
    def patient_group(self) -> str: ...
    @property
    def label(self) -> Mapping[str, Any]: ...


class LockedCase(NamedTuple):
    """A case to add with ``storage.training.add_validation_cases`` (it is such a tuple)."""

    source: str
    key: str
    study_id: int | None
    patient_group: str
    label: dict[str, Any]


@dataclass(frozen=True)
class ValidationParams:
    """The synthetic locked set (``seed``, ``count``, generation ``image_size``) and the share
    of a dataset's validation-part patients that are locked (``dataset_fraction``)."""

    seed: int = VALIDATION_SEED
    count: int = 400
    image_size: int = 512
    dataset_fraction: float = 0.5

    def __post_init__(self) -> None:
        if self.seed < 0 or self.count < 2 or self.image_size < 64:
            raise ValueError("need seed >= 0, count >= 2 and image_size >= 64")
        if not 0.0 < self.dataset_fraction <= 1.0:
            raise ValueError("dataset_fraction must be in (0, 1]")


def _unit(text: str) -> float:
    """A uniform number in [0, 1) from SHA-256 of ``text``."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64


def base_validation_cases(
    base: BaseDataset, params: ValidationParams, *, workers: int | None = None
) -> list[LockedCase]:
    """The base part of the locked set (see the module docstring); cases without a fracture
    label are left out (they cannot judge a fracture model). Synthetic cases are generated
    (in ``workers`` processes) to learn their labels."""
    if base.kind == "synthetic":
        jobs = [(params.seed, i, params.image_size) for i in range(params.count)]
        with WorkerPool(workers) as pool:
            results = pool.map(synthetic_labels, jobs)
        return [
            LockedCase(
                "base",
                synthetic_key(params.seed, i),
                None,
                base_group(f"synthetic:{seed}"),
                {
                    "fracture": "present" if count else "absent",
                    "count": COUNT_CLASSES[count],
                    "body_part": part,
                    "hardware": hardware,
                    "image_size": params.image_size,
                },
            )
            for i, (seed, count, part, hardware) in enumerate(results)
        ]
    assert base.root is not None
    cases: list[LockedCase] = []
    for record in dataset_split(base.kind, base.root, "validation", split_seed=base.split_seed):
        group = base_group(record.group)
        if record.path is None or record.fracture is None:
            continue
        if _unit(f"xrayd-locked\x00{group}") >= params.dataset_fraction:
            continue
        cases.append(
            LockedCase("base", dataset_key(record, base.root), None, group, record_label(record))
        )
    return cases


def review_groups(
    examples: Iterable[ReviewedExample],
    spool_root: Path,
    salt: str,
    *,
    store: ByteStore | None = None,
) -> dict[str, str]:
    """SOP Instance UID -> patient group of each readable reviewed image (header only);
    ``store`` holds the images (default: the spool at ``spool_root``)."""
    listed = list(examples)
    jobs: list[StoredRead] = [
        (ex.spool_path, salt, f"study:{ex.study_id}", None, DEFAULT_LIMITS) for ex in listed
    ]
    groups: dict[str, str] = {}
    for ex, read in zip(
        listed, read_stored_files(byte_store(store, spool_root), jobs), strict=True
    ):
        if read.patient_group is not None:
            groups[ex.sop_instance_uid] = read.patient_group
    return groups


def review_validation_candidates(
    examples: Sequence[ReviewedExample],
    fraction: float,
    spool_root: Path,
    *,
    salt: str,
    locked: Iterable[CaseLike] = (),
    trained_keys: Collection[str] = (),
    store: ByteStore | None = None,
) -> list[LockedCase]:
    """Reviewed images to add to the locked set, chosen by patient.

    A patient already in the locked set brings every new image of theirs. Another patient is
    chosen when a hash of their group is below ``fraction`` (the same patients on every call:
    calling again adds nothing new for patients seen before), unless one of their images was
    trained on already (``trained_keys``: SOP Instance UIDs, e.g. from the current bundle's
    manifest, :func:`retrain.manifest.trained_review_keys`). Images whose file cannot be read
    are left out. ``store`` holds the images (default: the spool at ``spool_root``).
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError("fraction must be in (0, 1)")
    locked_list = list(locked)
    locked_keys = {c.key for c in locked_list if c.source == "review"}
    locked_groups = {c.patient_group for c in locked_list}
    groups = review_groups(examples, spool_root, salt, store=store)
    trained = set(trained_keys)
    tainted = {groups[k] for k in trained if k in groups}
    chosen: list[LockedCase] = []
    for ex in examples:
        group = groups.get(ex.sop_instance_uid)
        if group is None or ex.sop_instance_uid in locked_keys:
            continue
        if group in locked_groups or (
            group not in tainted and _unit(f"xrayd-locked\x00{group}") < fraction
        ):
            chosen.append(
                LockedCase("review", ex.sop_instance_uid, ex.study_id, group, dict(ex.label))
            )
            locked_keys.add(ex.sop_instance_uid)
    return chosen


@dataclass(frozen=True, eq=False)
class ValidationSet:
    """The rebuilt locked set: ``tensors`` row ``i`` is case ``keys[i]`` (source, key).

    ``body_parts``: each case's labelled body part (``None`` if unknown), for per-body-part
    thresholds. ``missing``: ``(source, key, reason)`` of cases that could not be rebuilt
    (a deleted file, no fracture label). ``sha256`` identifies the cases and labels used.
    """

    tensors: LabelledTensors
    keys: tuple[tuple[str, str], ...]
    body_parts: tuple[str | None, ...]
    missing: tuple[tuple[str, str, str], ...]
    sha256: str

    def __len__(self) -> int:
        return len(self.keys)


def _check_synthetic(case: CaseLike, count: int, part: str, hardware: bool) -> None:
    label = case.label
    expected = ("present" if count else "absent", COUNT_CLASSES[count], part, hardware)
    recorded = (label.get("fracture"), label.get("count"), label.get("body_part"))
    if recorded != expected[:3] or label.get("hardware") != hardware:
        raise ValidationSetError(
            f"validation case {case.key} regenerates with labels {expected}, not the recorded "
            f"{(*recorded, label.get('hardware'))}: the synthetic generator changed"
        )


def validation_tensors(
    cases: Sequence[CaseLike],
    base: BaseDataset,
    spool_root: Path,
    params: PreprocessParams,
    *,
    review_paths: Mapping[str, str],
    body_parts: Sequence[str] = BODY_PARTS,
    pool: WorkerPool | None = None,
    progress: Progress | None = None,
    store: ByteStore | None = None,
) -> ValidationSet:
    """Rebuild the pixels of the locked ``cases`` (model input ``params``).

    Synthetic cases are regenerated (and must come back with their recorded labels, else
    :class:`ValidationSetError`); dataset files are read under ``base.root``; reviewed images
    are read from the byte store ``store``, default the spool at ``spool_root``
    (``review_paths``: SOP Instance UID -> spool path, i.e. key, from
    ``storage.training.reviewed_examples``). Labels are the recorded ones.
    """
    pixels: dict[int, Pixels] = {}
    missing: dict[int, str] = {}
    synthetic: list[tuple[int, tuple[int, int, int, PreprocessParams]]] = []
    files: list[tuple[int, tuple[str, PreprocessParams]]] = []
    spool_jobs: list[tuple[int, StoredRead]] = []
    for i, case in enumerate(cases):
        if case.label.get("fracture") not in ("present", "absent"):
            missing[i] = "no_fracture_label"
        elif case.source == "base" and case.key.startswith("synthetic:"):
            try:
                seed, index = parse_synthetic_key(case.key)
                size = int(case.label.get("image_size") or 512)
            except (TypeError, ValueError) as exc:
                raise ValidationSetError(f"bad synthetic validation case: {exc}") from exc
            synthetic.append((i, (seed, index, size, params)))
        elif case.source == "base":
            if base.root is None:
                missing[i] = "no_dataset_root"
                continue
            path = (base.root / case.key).resolve()
            if not path.is_relative_to(base.root.resolve()):
                missing[i] = "bad_path"
                continue
            files.append((i, (str(path), params)))
        elif case.source == "review":
            rel = review_paths.get(case.key)
            if not rel:
                missing[i] = "missing_file"
                continue
            spool_jobs.append((i, (rel, "", "", params, DEFAULT_LIMITS)))
        else:
            raise ValidationSetError(f"unknown validation case source {case.source!r}")

    pool = pool or WorkerPool(1)
    results = pool.map(synthetic_image, [job for _, job in synthetic], progress)
    for (i, (seed, index, _, _)), result in zip(synthetic, results, strict=True):
        if result.case_seed != case_seed(seed, index):  # pragma: no cover - defensive
            raise ValidationSetError(f"case {cases[i].key} regenerated another seed")
        _check_synthetic(cases[i], result.fracture_count, result.body_part, result.hardware)
        pixels[i] = result.pixels
    file_results = pool.map(dataset_file_image, [job for _, job in files], progress)
    for (i, _), file_result in zip(files, file_results, strict=True):
        if file_result.pixels is None:
            missing[i] = "unreadable"
        else:
            pixels[i] = file_result.pixels
    reads = read_stored_files(
        byte_store(store, spool_root),
        [job for _, job in spool_jobs],
        pool,
        progress,
        invalid_key="missing_file",
    )
    for (i, _), read in zip(spool_jobs, reads, strict=True):
        if read.pixels is None:
            missing[i] = read.problem or "unreadable"
        else:
            pixels[i] = read.pixels

    order = sorted(pixels)
    codes: list[LabelCodes] = [codes_from_label(cases[i].label, body_parts) for i in order]
    keys = tuple((cases[i].source, cases[i].key) for i in order)
    parts = tuple(
        part if isinstance(part := cases[i].label.get("body_part"), str) else None for i in order
    )
    described = sorted(
        ([source, key, dict(cases[i].label)] for i, (source, key) in zip(order, keys, strict=True)),
        key=lambda row: (row[0], row[1]),
    )
    sha = digest(described)
    tensors = stack_tensors(
        [pixels[i] for i in order],
        codes,
        params.input_size,
        manifest_sha256=sha,
        source="validation",
    )
    lost = tuple((cases[i].source, cases[i].key, reason) for i, reason in sorted(missing.items()))
    if lost:
        logger.warning("%d locked validation cases could not be rebuilt", len(lost))
    return ValidationSet(tensors, keys, parts, lost, sha)
