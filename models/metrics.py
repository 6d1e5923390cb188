"""Evaluation metrics in numpy: rank-based ROC AUC, sensitivity and specificity."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["Metrics", "roc_auc", "sensitivity_specificity"]


def _average_ranks(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """1-based ranks, ties sharing the mean of their ranks."""
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    ranks = np.empty(values.size, dtype=np.float64)
    starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
    ends = np.concatenate((starts[1:], [values.size]))
    for start, end in zip(starts, ends, strict=True):
        ranks[order[start:end]] = (start + 1 + end) / 2.0
    return ranks


def roc_auc(scores: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Area under the ROC curve (Mann-Whitney U / (n_pos n_neg)); ties count one half.

    Raises ``ValueError`` when only one class is present.
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel()
    if s.shape != y.shape:
        raise ValueError("scores and labels differ in length")
    positive = y == 1
    n_pos, n_neg = int(positive.sum()), int((y == 0).sum())
    if n_pos + n_neg != y.size:
        raise ValueError("labels must be 0 or 1")
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUC needs both positive and negative labels")
    ranks = _average_ranks(s)
    u = float(ranks[positive].sum()) - n_pos * (n_pos + 1) / 2.0
    return u / (n_pos * n_neg)


def sensitivity_specificity(
    scores: npt.ArrayLike, labels: npt.ArrayLike, threshold: float
) -> tuple[float | None, float | None]:
    """(sensitivity, specificity) calling ``score >= threshold`` positive; None without cases."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel()
    called = s >= threshold
    positive, negative = y == 1, y == 0
    sens = float(called[positive].mean()) if positive.any() else None
    spec = float((~called[negative]).mean()) if negative.any() else None
    return sens, spec


@dataclass(frozen=True)
class Metrics:
    """Validation metrics; ``None`` where the labels needed are absent (e.g. one class)."""

    n: int
    fracture_auc: float | None
    sensitivity: float | None
    specificity: float | None
    threshold: float
    count_accuracy: float | None
    body_part_accuracy: float | None
    hardware_auc: float | None
    loss: float

    def as_dict(self) -> Mapping[str, float | None]:
        """Numbers only (``n`` as a float), for bundle metadata."""
        return {k: (None if v is None else float(v)) for k, v in asdict(self).items()}
