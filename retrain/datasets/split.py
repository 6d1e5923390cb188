"""Deterministic train/validation/test split by patient, never by image.

Each patient (``record.group``: source and patient id) is placed by a keyed hash of its id: the
same seed always gives the same split, on any machine and Python version, and adding patients
never moves the others. :func:`split_stratified` instead fills each stratum (for example label
and body part) in proportion, groups ranked by the same keyed hash. A dataset's own split can be
kept instead (MURA's train/valid) through
``keep_given``; a patient with images in two given splits is an error, not a silent leak.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from retrain.datasets.errors import DatasetError
from retrain.datasets.records import ImageRecord

__all__ = [
    "MURA_AS_GIVEN",
    "SPLIT_NAMES",
    "Split",
    "SplitName",
    "assign",
    "split_by_patient",
    "split_stratified",
    "stratum_of",
]

SplitName = Literal["train", "validation", "test"]
SPLIT_NAMES: tuple[SplitName, SplitName, SplitName] = ("train", "validation", "test")
#: ``keep_given`` for MURA: its train set for training, its valid set for validation.
MURA_AS_GIVEN: Mapping[str, SplitName] = {"train": "train", "valid": "validation"}


@dataclass(frozen=True)
class Split:
    """The records of each set, in their original order."""

    train: tuple[ImageRecord, ...]
    validation: tuple[ImageRecord, ...]
    test: tuple[ImageRecord, ...]

    def get(self, name: SplitName) -> tuple[ImageRecord, ...]:
        return {"train": self.train, "validation": self.validation, "test": self.test}[name]

    def patients(self, name: SplitName) -> frozenset[str]:
        """The patient keys (``record.group``) in set ``name``."""
        return frozenset(r.group for r in self.get(name))


def assign(group: str, *, seed: int, validation: float, test: float) -> SplitName:
    """The set of patient key ``group``: a uniform number from SHA-256 of seed and key."""
    digest = hashlib.sha256(f"{seed}\x00{group}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < test:
        return "test"
    if u < test + validation:
        return "validation"
    return "train"


def split_by_patient(
    records: Iterable[ImageRecord],
    *,
    seed: int = 0,
    validation: float = 0.1,
    test: float = 0.1,
    keep_given: Mapping[str, SplitName] | None = None,
) -> Split:
    """Split ``records`` so that no patient is in two sets.

    A record whose ``given_split`` is a key of ``keep_given`` goes to the mapped set; the others
    go by :func:`assign` with the ``validation`` and ``test`` fractions (of patients, not
    images). Raises :class:`DatasetError` if one patient would end up in two sets.
    """
    if not (0.0 <= validation < 1.0 and 0.0 <= test < 1.0 and validation + test < 1.0):
        raise ValueError("need 0 <= validation, test and validation + test < 1")
    given = keep_given or {}
    where: dict[str, SplitName] = {}
    sets: dict[SplitName, list[ImageRecord]] = {name: [] for name in SPLIT_NAMES}
    for record in records:
        if record.given_split is not None and record.given_split in given:
            target = given[record.given_split]
        else:
            target = assign(record.group, seed=seed, validation=validation, test=test)
        previous = where.setdefault(record.group, target)
        if previous != target:
            raise DatasetError(
                record.path or Path(record.source),
                f"this image's patient would be in both the {previous} and the {target} set "
                "(check the dataset's own split)",
            )
        sets[target].append(record)
    return Split(tuple(sets["train"]), tuple(sets["validation"]), tuple(sets["test"]))


def stratum_of(record: ImageRecord) -> Hashable:
    """The default stratum: fracture label and body part."""
    return (record.fracture, record.body_part)


def _rank(group: str, seed: int) -> bytes:
    return hashlib.sha256(f"{seed}\x00{group}".encode()).digest()


def split_stratified(
    records: Iterable[ImageRecord],
    *,
    seed: int = 0,
    validation: float = 0.15,
    test: float = 0.15,
    stratum: Callable[[ImageRecord], Hashable] = stratum_of,
) -> Split:
    """Split by group (``record.group``), stratified: each stratum's groups are ranked by a
    keyed hash and the first ``round(test * n)`` go to test, the next ``round(validation *
    n)`` to validation, the rest to train.

    A group's stratum is that of its fractured record with the smallest study id (else of its
    record with the smallest study id), so a group is never split and the order of the
    records does not matter. The result depends on the seed and the groups,
    not on the order of the records.
    """
    if not (0.0 <= validation < 1.0 and 0.0 <= test < 1.0 and validation + test < 1.0):
        raise ValueError("need 0 <= validation, test and validation + test < 1")
    members: dict[str, list[ImageRecord]] = {}
    for record in records:
        members.setdefault(record.group, []).append(record)
    strata: dict[Hashable, list[str]] = {}
    for group, items in members.items():
        lead = min(items, key=lambda r: (not r.fracture, r.study_id, str(r.path)))
        strata.setdefault(stratum(lead), []).append(group)
    where: dict[str, SplitName] = {}
    for groups in strata.values():
        ranked = sorted(groups, key=lambda g: _rank(g, seed))
        n_test = round(test * len(ranked))
        n_val = round(validation * len(ranked))
        for i, group in enumerate(ranked):
            where[group] = "test" if i < n_test else "validation" if i < n_test + n_val else "train"
    sets: dict[SplitName, list[ImageRecord]] = {name: [] for name in SPLIT_NAMES}
    for group, items in members.items():
        sets[where[group]].extend(items)
    order = {id(r): i for i, r in enumerate(r for items in members.values() for r in items)}
    return Split(
        *(tuple(sorted(sets[name], key=lambda r: order[id(r)])) for name in SPLIT_NAMES)
    )
