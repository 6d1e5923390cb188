"""Deterministic train/validation/test split by patient, never by image.

Each patient (``record.group``: source and patient id) is placed by a keyed hash of its id: the
same seed always gives the same split, on any machine and Python version, and adding patients
never moves the others. A dataset's own split can be kept instead (MURA's train/valid) through
``keep_given``; a patient with images in two given splits is an error, not a silent leak.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from retrain.datasets.errors import DatasetError
from retrain.datasets.records import ImageRecord

__all__ = ["MURA_AS_GIVEN", "SPLIT_NAMES", "Split", "SplitName", "assign", "split_by_patient"]

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
