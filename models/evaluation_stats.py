"""Statistics behind the evaluation report: confidence intervals, kappa, log loss,
calibration error, ROC curve points. Pure numpy.

AUC itself is :func:`models.metrics.roc_auc`; this module adds its bootstrap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from models.labels import COUNT_CLASSES

__all__ = [
    "CountReport",
    "Interval",
    "ReliabilityBin",
    "RocCurve",
    "bootstrap_auc",
    "bootstrap_auc_samples",
    "cohen_kappa",
    "count_report",
    "expected_calibration_error",
    "log_loss",
    "reliability_bins",
    "roc_curve",
    "wilson_interval",
]

#: Two-sided 95 % normal quantile.
Z_95 = 1.959963984540054
#: Probabilities are clipped to [EPS, 1 - EPS] in the log loss (as scikit-learn once did).
LOG_LOSS_EPS = 1e-15


@dataclass(frozen=True)
class Interval:
    """A two-sided confidence interval."""

    low: float
    high: float

    def __contains__(self, value: object) -> bool:
        return isinstance(value, int | float) and self.low <= value <= self.high


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> Interval | None:
    """Wilson score interval for a binomial proportion; ``None`` without trials."""
    if trials < 0 or not 0 <= successes <= max(trials, 0):
        raise ValueError(f"need 0 <= successes <= trials, got {successes} / {trials}")
    if trials == 0:
        return None
    p = successes / trials
    z2 = z * z
    denominator = 1.0 + z2 / trials
    centre = (p + z2 / (2 * trials)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials))
    # Exact at the edges (p = 0 or 1), where rounding would otherwise leave 1e-17 gaps.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return Interval(low, high)


def cohen_kappa(tp: int, fp: int, fn: int, tn: int) -> float | None:
    """Cohen's kappa of a 2x2 table; ``None`` when chance agreement is 1 (undefined)."""
    n = tp + fp + fn + tn
    if n == 0:
        return None
    observed = (tp + tn) / n
    chance = ((tp + fp) * (tp + fn) + (fn + tn) * (fp + tn)) / (n * n)
    if chance >= 1.0:
        return None
    return (observed - chance) / (1.0 - chance)


def log_loss(probabilities: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Mean binary cross-entropy (natural log), probabilities clipped to ``[1e-15, 1 - 1e-15]``."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64).ravel(), LOG_LOSS_EPS, 1 - LOG_LOSS_EPS)
    y = np.asarray(labels, dtype=np.float64).ravel()
    if p.shape != y.shape or p.size == 0:
        raise ValueError("probabilities and labels must be non-empty and of the same length")
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


@dataclass(frozen=True)
class ReliabilityBin:
    """One bin ``[low, high)`` of a reliability diagram (the last bin includes 1.0)."""

    low: float
    high: float
    count: int
    mean_probability: float | None
    observed_rate: float | None


def reliability_bins(
    probabilities: npt.ArrayLike, labels: npt.ArrayLike, n_bins: int = 10
) -> tuple[ReliabilityBin, ...]:
    """Equal-width bins over ``[0, 1]``: mean predicted probability and observed rate."""
    if n_bins < 1:
        raise ValueError("need at least one bin")
    p = np.asarray(probabilities, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=np.float64).ravel()
    if p.shape != y.shape:
        raise ValueError("probabilities and labels differ in length")
    index = np.clip(np.floor(p * n_bins).astype(np.int64), 0, n_bins - 1)
    bins = []
    for b in range(n_bins):
        mask = index == b
        count = int(mask.sum())
        bins.append(
            ReliabilityBin(
                low=b / n_bins,
                high=(b + 1) / n_bins,
                count=count,
                mean_probability=float(p[mask].mean()) if count else None,
                observed_rate=float(y[mask].mean()) if count else None,
            )
        )
    return tuple(bins)


def expected_calibration_error(bins: tuple[ReliabilityBin, ...]) -> float:
    """``sum_b (n_b / n) |mean probability_b - observed rate_b|`` over non-empty bins."""
    total = sum(b.count for b in bins)
    if total == 0:
        raise ValueError("no cases in the bins")
    return float(
        sum(
            b.count / total * abs(b.mean_probability - b.observed_rate)
            for b in bins
            if b.mean_probability is not None and b.observed_rate is not None
        )
    )


@dataclass(frozen=True)
class RocCurve:
    """ROC points from (0, 0) to (1, 1); ``thresholds[i]`` calls ``score >= t`` positive
    (``inf`` at the origin)."""

    fpr: tuple[float, ...]
    tpr: tuple[float, ...]
    thresholds: tuple[float, ...]


def _drop_collinear(
    fpr: npt.NDArray[np.float64], tpr: npt.NDArray[np.float64]
) -> npt.NDArray[np.intp]:
    """Indices of the corners (interior points on a straight horizontal/vertical run dropped)."""
    if fpr.size <= 2:
        return np.arange(fpr.size)
    d_fpr, d_tpr = np.diff(fpr), np.diff(tpr)
    horizontal = d_tpr == 0
    vertical = d_fpr == 0
    interior = (horizontal[:-1] & horizontal[1:]) | (vertical[:-1] & vertical[1:])
    keep = np.concatenate(([True], ~interior, [True]))
    return np.flatnonzero(keep)


def roc_curve(scores: npt.ArrayLike, labels: npt.ArrayLike, max_points: int = 200) -> RocCurve:
    """The ROC curve at every distinct score, thinned to at most ``max_points`` points.

    Collinear interior points are dropped first (they change nothing), then, if still too
    many, points are kept evenly spaced along the curve's length (first and last kept).
    """
    if max_points < 2:
        raise ValueError("max_points must be at least 2")
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel()
    positive = y == 1
    n_pos, n_neg = int(positive.sum()), int((y == 0).sum())
    if s.shape != y.shape or n_pos + n_neg != y.size or n_pos == 0 or n_neg == 0:
        raise ValueError("ROC curve needs scores and 0/1 labels with both classes")
    order = np.argsort(-s, kind="mergesort")
    s_sorted, pos_sorted = s[order], positive[order]
    last_of_value = np.flatnonzero(np.concatenate((s_sorted[1:] != s_sorted[:-1], [True])))
    tp = np.cumsum(pos_sorted)[last_of_value]
    fp = (last_of_value + 1) - tp
    tpr = np.concatenate(([0.0], tp / n_pos))
    fpr = np.concatenate(([0.0], fp / n_neg))
    thresholds = np.concatenate(([np.inf], s_sorted[last_of_value]))
    keep = _drop_collinear(fpr, tpr)
    if keep.size > max_points:
        length = np.concatenate(
            ([0.0], np.cumsum(np.abs(np.diff(fpr[keep])) + np.abs(np.diff(tpr[keep]))))
        )
        targets = np.linspace(0.0, length[-1], max_points)
        chosen = np.unique(np.searchsorted(length, targets, side="left").clip(0, keep.size - 1))
        keep = keep[chosen]
    return RocCurve(
        fpr=tuple(float(v) for v in fpr[keep]),
        tpr=tuple(float(v) for v in tpr[keep]),
        thresholds=tuple(float(v) for v in thresholds[keep]),
    )


def bootstrap_auc_samples(
    scores: npt.ArrayLike,
    labels: npt.ArrayLike,
    n_bootstrap: int,
    rng: np.random.Generator,
    *,
    chunk_cells: int = 4_000_000,
) -> npt.NDArray[np.float64]:
    """AUCs of ``n_bootstrap`` stratified resamples (positives and negatives resampled
    separately with replacement, so each keeps its size and every resample has both classes).

    Vectorised: each resample's AUC is the Mann-Whitney statistic counted with one
    ``searchsorted`` over all resamples of a chunk at once (rows offset so they do not mix).
    """
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel()
    positive = y == 1
    n_pos, n_neg = int(positive.sum()), int((y == 0).sum())
    if s.shape != y.shape or n_pos + n_neg != y.size or n_pos == 0 or n_neg == 0:
        raise ValueError("bootstrap AUC needs scores and 0/1 labels with both classes")
    # Integer codes preserve order and ties, so rows can be offset without overlapping.
    _, codes = np.unique(s, return_inverse=True)
    codes = codes.astype(np.int64).ravel()
    span = int(codes.max()) + 1
    pos_codes, neg_codes = codes[positive], codes[~positive]
    per_row = n_pos + n_neg
    rows_per_chunk = max(1, chunk_cells // per_row)
    out = np.empty(n_bootstrap, dtype=np.float64)
    for start in range(0, n_bootstrap, rows_per_chunk):
        rows = min(rows_per_chunk, n_bootstrap - start)
        offset = (np.arange(rows, dtype=np.int64) * span)[:, None]
        pos = pos_codes[rng.integers(0, n_pos, size=(rows, n_pos))] + offset
        neg = np.sort(neg_codes[rng.integers(0, n_neg, size=(rows, n_neg))] + offset, axis=1)
        flat_neg = neg.ravel()  # globally sorted: row r's codes lie in [r*span, (r+1)*span)
        below = np.searchsorted(flat_neg, pos, side="left")
        upto = np.searchsorted(flat_neg, pos, side="right")
        row_start = (np.arange(rows, dtype=np.int64) * n_neg)[:, None]
        wins = (below - row_start) + 0.5 * (upto - below)
        out[start : start + rows] = wins.sum(axis=1) / (n_pos * n_neg)
    return out


def bootstrap_auc(
    scores: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> Interval:
    """Percentile bootstrap interval of the AUC over stratified resamples."""
    if n_bootstrap < 1:
        raise ValueError("n_bootstrap must be at least 1")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    samples = bootstrap_auc_samples(scores, labels, n_bootstrap, np.random.default_rng(seed))
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(samples, [alpha, 1.0 - alpha])
    return Interval(float(low), float(high))


@dataclass(frozen=True)
class CountReport:
    """The fracture-count head (classes 0 / 1 / 2+) over cases with a count label."""

    n: int
    accuracy: float
    #: ``confusion[true][predicted]`` over :data:`models.labels.COUNT_CLASSES`.
    confusion: tuple[tuple[int, ...], ...]
    classes: tuple[str, ...] = COUNT_CLASSES


def count_report(
    count_true: npt.ArrayLike, count_pred: npt.ArrayLike, n: int
) -> CountReport | None:
    """Accuracy and 3x3 confusion of the count head over cases with a label (>= 0).

    ``count_pred`` holds class indices or (N, 3) scores; ``None`` without labelled cases.
    """
    truth = np.asarray(count_true, dtype=np.int64).ravel()
    pred = np.asarray(count_pred)
    if pred.ndim == 2:  # per-class scores: take the most likely class
        pred = pred.argmax(axis=1)
    pred = pred.astype(np.int64).ravel()
    k = len(COUNT_CLASSES)
    if truth.size != n or pred.size != n:
        raise ValueError(f"count labels/predictions must have {n} entries")
    if np.any(pred < 0) or np.any(pred >= k) or np.any(truth >= k):
        raise ValueError(f"count classes must be in 0..{k - 1} (-1 for a missing label)")
    keep = truth >= 0
    if not keep.any():
        return None
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (truth[keep], pred[keep]), 1)
    return CountReport(
        n=int(keep.sum()),
        accuracy=float((truth[keep] == pred[keep]).mean()),
        confusion=tuple(tuple(int(v) for v in row) for row in confusion),
    )
