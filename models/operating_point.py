"""Choosing operating points on validation data: a sensitivity target and an indeterminate band.

The threshold is the *highest* cut whose sensitivity on the (calibrated) validation
probabilities reaches the target: the most specific point that still meets the sensitivity
the triage promises. Sensitivity only changes at the score of a positive case, so that
threshold is exactly the k-th highest positive score, with k the smallest count of positives
such that ``k / n_positives >= target`` (compared in floating point exactly as the evaluation
compares it). A case is called positive when ``p >= threshold``, as in :mod:`models.decision`.

The indeterminate band is fixed in log-odds: ``logit(low) = logit(t) - w`` and
``logit(high) = logit(t) + w`` (default ``w = ln 2``: the band holds the cases whose odds
of a fracture are within a factor of two of the threshold's odds). Why this design:

* It does not depend on the validation set beyond the threshold itself. Bands read off
  validation quantiles ("sensitivity target + delta") rest on the few positives in the tail
  of the distribution and move a lot between validation sets; a fixed odds factor is stable,
  and the evaluation report measures what it costs (indeterminate rate) and buys (metrics on
  the decided cases).
* Log-odds is the scale on which temperature-scaled probabilities are comparable: a band of
  +-0.15 in probability would be nearly all of ``[0, 0.3]`` around a threshold of 0.15 but a
  thin sliver around 0.5, whereas an odds factor means the same uncertainty everywhere.
* ``low <= threshold``: every case scored at or above the threshold is "present" or
  "indeterminate", never "absent", so the positives called "absent" are at most the
  ``1 - target`` fraction missed at the threshold. Cases in the band are sent for reading
  as "indeterminate" instead of being guessed.

``band=0`` gives a binary point (no indeterminate cases).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from models.decision import OperatingPoint, Thresholds

__all__ = [
    "DEFAULT_BAND",
    "DEFAULT_MIN_NEGATIVES",
    "DEFAULT_MIN_POSITIVES",
    "DEFAULT_TARGET_SENSITIVITY",
    "band_around",
    "choose_operating_point",
    "choose_thresholds",
    "per_body_part_points",
    "threshold_for_sensitivity",
]

DEFAULT_TARGET_SENSITIVITY = 0.95
#: Half-width of the indeterminate band in log-odds (ln 2: odds within a factor of two).
DEFAULT_BAND = math.log(2.0)
#: A body part gets its own point only with this many positives and negatives. With fewer
#: than ``1 / (1 - 0.95) = 20`` positives the 95 % point is simply the lowest positive score.
DEFAULT_MIN_POSITIVES = 20
DEFAULT_MIN_NEGATIVES = 20


def _validated(
    probabilities: npt.ArrayLike, labels: npt.ArrayLike
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    p = np.asarray(probabilities, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=np.float64).ravel()
    if p.shape != y.shape:
        raise ValueError(f"{p.size} probabilities but {y.size} labels")
    if p.size == 0:
        raise ValueError("no cases: an operating point needs validation cases")
    if not np.all(np.isfinite(p)) or p.min() < 0.0 or p.max() > 1.0:
        raise ValueError("probabilities must be finite and in [0, 1]")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("labels must be 0 or 1")
    positive = y == 1
    if not positive.any():
        raise ValueError("no positive cases: sensitivity is undefined")
    if positive.all():
        raise ValueError("no negative cases: need both classes to choose an operating point")
    return p, positive


def _check_target(target_sensitivity: float) -> None:
    if not (math.isfinite(target_sensitivity) and 0.0 < target_sensitivity <= 1.0):
        raise ValueError(f"target sensitivity must be in (0, 1], got {target_sensitivity}")


def threshold_for_sensitivity(
    probabilities: npt.ArrayLike, labels: npt.ArrayLike, target_sensitivity: float
) -> float:
    """The highest threshold ``t`` with ``mean(p[positives] >= t) >= target_sensitivity``.

    Raises ``ValueError`` for empty input, one class only, labels other than 0/1,
    probabilities outside ``[0, 1]`` or a target outside ``(0, 1]``.
    """
    _check_target(target_sensitivity)
    p, positive = _validated(probabilities, labels)
    scores = np.sort(p[positive])[::-1]  # highest first
    n_pos = scores.size
    # Smallest k with k / n_pos >= target, using the same float comparison as the evaluation.
    k = max(1, min(n_pos, math.ceil(target_sensitivity * n_pos)))
    while k > 1 and (k - 1) / n_pos >= target_sensitivity:
        k -= 1
    while k < n_pos and k / n_pos < target_sensitivity:
        k += 1
    # Ties: every positive scored at scores[k-1] is called too, so sensitivity may exceed
    # k / n_pos; any higher threshold calls at most k - 1 positives.
    return float(scores[k - 1])


def band_around(threshold: float, band: float = DEFAULT_BAND) -> OperatingPoint:
    """``threshold`` with the band ``logit(threshold) -+ band`` (0 or 1 get an empty side)."""
    if not (math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    if not (math.isfinite(band) and band >= 0.0):
        raise ValueError(f"band must be a finite log-odds half-width >= 0, got {band}")
    if band == 0.0 or threshold in (0.0, 1.0):
        return OperatingPoint.binary(threshold)
    odds = threshold / (1.0 - threshold)
    factor = math.exp(band)
    low = odds / factor / (1.0 + odds / factor)
    high = odds * factor / (1.0 + odds * factor)
    # Rounding must never put the threshold outside its own band.
    return OperatingPoint(threshold, min(low, threshold), max(high, threshold))


def choose_operating_point(
    probabilities: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    target_sensitivity: float = DEFAULT_TARGET_SENSITIVITY,
    band: float = DEFAULT_BAND,
) -> OperatingPoint:
    """The operating point for calibrated validation ``probabilities`` and 0/1 ``labels``.

    The threshold is :func:`threshold_for_sensitivity`; the indeterminate band is
    :func:`band_around` (``band`` is its half-width in log-odds, 0 for none).
    """
    if not (math.isfinite(band) and band >= 0.0):
        raise ValueError(f"band must be a finite log-odds half-width >= 0, got {band}")
    return band_around(threshold_for_sensitivity(probabilities, labels, target_sensitivity), band)


def per_body_part_points(
    probabilities: npt.ArrayLike,
    labels: npt.ArrayLike,
    body_parts: Sequence[str | None],
    *,
    target_sensitivity: float = DEFAULT_TARGET_SENSITIVITY,
    band: float = DEFAULT_BAND,
    min_positives: int = DEFAULT_MIN_POSITIVES,
    min_negatives: int = DEFAULT_MIN_NEGATIVES,
) -> dict[str, OperatingPoint]:
    """A point for each body part with at least ``min_positives`` positives and
    ``min_negatives`` negatives; other parts (and cases without a part) get none and fall
    back to the default point of :class:`models.decision.Thresholds`.
    """
    _check_target(target_sensitivity)
    if min_positives < 1 or min_negatives < 1:
        raise ValueError("min_positives and min_negatives must be at least 1")
    p, positive = _validated(probabilities, labels)
    if len(body_parts) != p.size:
        raise ValueError(f"{p.size} probabilities but {len(body_parts)} body parts")
    parts = np.array([part if part is not None else "" for part in body_parts], dtype=object)
    points: dict[str, OperatingPoint] = {}
    for part in sorted({part for part in body_parts if part is not None}):
        mask = parts == part
        n_pos = int(positive[mask].sum())
        n_neg = int(mask.sum()) - n_pos
        if n_pos >= min_positives and n_neg >= min_negatives:
            points[part] = choose_operating_point(
                p[mask],
                positive[mask].astype(np.float64),
                target_sensitivity=target_sensitivity,
                band=band,
            )
    return points


def choose_thresholds(
    probabilities: npt.ArrayLike,
    labels: npt.ArrayLike,
    body_parts: Sequence[str | None] | None = None,
    *,
    target_sensitivity: float = DEFAULT_TARGET_SENSITIVITY,
    band: float = DEFAULT_BAND,
    min_positives: int = DEFAULT_MIN_POSITIVES,
    min_negatives: int = DEFAULT_MIN_NEGATIVES,
) -> Thresholds:
    """A default point over all cases plus :func:`per_body_part_points` when parts are given."""
    default = choose_operating_point(
        probabilities, labels, target_sensitivity=target_sensitivity, band=band
    )
    if body_parts is None:
        return Thresholds(default)
    overrides = per_body_part_points(
        probabilities,
        labels,
        body_parts,
        target_sensitivity=target_sensitivity,
        band=band,
        min_positives=min_positives,
        min_negatives=min_negatives,
    )
    return Thresholds(default, overrides)
