"""Records of a dataset by name: ``mura``, ``fracatlas``, ``csv`` (folder + CSV), ``synthetic``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

from retrain.datasets.csv_folder import load_csv_folder
from retrain.datasets.fracatlas import load_fracatlas
from retrain.datasets.mura import load_mura
from retrain.datasets.records import ImageRecord
from retrain.datasets.synthetic import synthetic_records

__all__ = ["DATASET_KINDS", "DatasetKind", "load_records"]

DatasetKind = Literal["mura", "fracatlas", "csv", "synthetic"]
DATASET_KINDS: tuple[str, ...] = get_args(DatasetKind)


def load_records(
    kind: str,
    root: Path | None = None,
    *,
    labels_csv: Path | None = None,
    n: int = 256,
    seed: int = 0,
    size: int = 512,
) -> list[ImageRecord]:
    """The records of dataset ``kind`` found at ``root``.

    ``root``: the ``MURA-v1.1`` folder (or its parent), the ``FracAtlas`` folder (or its
    parent), or the image folder of a ``csv`` dataset (``labels_csv`` defaults to
    ``root / "labels.csv"``). ``synthetic`` takes no root: ``n`` cases of ``size`` pixels
    from ``seed``. Raises :class:`ValueError` for an unknown kind or a missing root.
    """
    if kind == "synthetic":
        return synthetic_records(n, seed, size=size)
    if kind not in DATASET_KINDS:
        raise ValueError(f"unknown dataset kind {kind!r}; expected one of {DATASET_KINDS}")
    if root is None:
        raise ValueError(f"dataset kind {kind!r} needs a root folder")
    if kind == "mura":
        return load_mura(root)
    if kind == "fracatlas":
        return load_fracatlas(root)
    return load_csv_folder(root, labels_csv)
