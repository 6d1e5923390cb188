"""Operating points (a threshold with an indeterminate band) and temperature scaling.

Pure numpy: no torch here, so the thresholds can be fitted and checked anywhere.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
import numpy.typing as npt

from models.labels import Decision

__all__ = [
    "OperatingPoint",
    "Thresholds",
    "apply_temperature",
    "calibrate_temperature",
    "decide",
    "sigmoid",
]


@dataclass(frozen=True)
class OperatingPoint:
    """``p >= indeterminate_high``: present; ``p < indeterminate_low``: absent; else
    indeterminate. ``threshold`` is the binary cut (sensitivity/specificity are quoted at it).
    """

    threshold: float
    indeterminate_low: float
    indeterminate_high: float

    def __post_init__(self) -> None:
        values = (self.threshold, self.indeterminate_low, self.indeterminate_high)
        if not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in values):
            raise ValueError(f"operating point values must be in [0, 1], got {values}")
        if not self.indeterminate_low <= self.threshold <= self.indeterminate_high:
            raise ValueError(
                "need indeterminate_low <= threshold <= indeterminate_high, got "
                f"{self.indeterminate_low} / {self.threshold} / {self.indeterminate_high}"
            )

    @classmethod
    def binary(cls, threshold: float) -> OperatingPoint:
        """A point without an indeterminate band."""
        return cls(threshold, threshold, threshold)


def decide(probability: float, point: OperatingPoint) -> Decision:
    """The decision for a calibrated probability at ``point``."""
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"probability must be in [0, 1], got {probability}")
    if probability >= point.indeterminate_high:
        return Decision.PRESENT
    if probability < point.indeterminate_low:
        return Decision.ABSENT
    return Decision.INDETERMINATE


@dataclass(frozen=True)
class Thresholds:
    """A default operating point and overrides per body part."""

    default: OperatingPoint
    per_body_part: Mapping[str, OperatingPoint] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "per_body_part", MappingProxyType(dict(self.per_body_part)))

    def for_body_part(self, body_part: str | None) -> OperatingPoint:
        """The override for ``body_part`` if there is one, else the default."""
        if body_part is None:
            return self.default
        return self.per_body_part.get(body_part, self.default)


def sigmoid(logits: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Numerically stable logistic function."""
    z = np.asarray(logits, dtype=np.float64)
    out: npt.NDArray[np.float64] = np.exp(-np.logaddexp(0.0, -z))
    return out


def apply_temperature(logits: npt.ArrayLike, temperature: float) -> npt.NDArray[np.float64]:
    """Calibrated probabilities ``sigmoid(logits / temperature)``."""
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be positive, got {temperature}")
    return sigmoid(np.asarray(logits, dtype=np.float64) / temperature)


def _nll(logits: npt.NDArray[np.float64], labels: npt.NDArray[np.float64], t: float) -> float:
    z = logits / t
    # -log sigmoid(z) for positives, -log(1 - sigmoid(z)) = -log sigmoid(-z) for negatives.
    return float(np.mean(np.logaddexp(0.0, -z) * labels + np.logaddexp(0.0, z) * (1 - labels)))


def calibrate_temperature(
    logits: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    bounds: tuple[float, float] = (0.05, 20.0),
    tolerance: float = 1e-4,
) -> float:
    """The temperature that minimises the binary NLL (golden-section search on log T).

    The NLL of temperature scaling is unimodal in T for fixed logits; the result is clipped to
    ``bounds`` (a separable validation set otherwise drives T towards 0).
    """
    z = np.asarray(logits, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=np.float64).ravel()
    if z.shape != y.shape or z.size == 0:
        raise ValueError("logits and labels must be non-empty and of the same length")
    if not np.all(np.isfinite(z)) or not np.all((y == 0) | (y == 1)):
        raise ValueError("logits must be finite and labels 0 or 1")
    low, high = math.log(bounds[0]), math.log(bounds[1])
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = low + (1 - ratio) * (high - low), low + ratio * (high - low)
    fa, fb = _nll(z, y, math.exp(a)), _nll(z, y, math.exp(b))
    while high - low > tolerance:
        if fa <= fb:
            high, b, fb = b, a, fa
            a = low + (1 - ratio) * (high - low)
            fa = _nll(z, y, math.exp(a))
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = _nll(z, y, math.exp(b))
    return math.exp((low + high) / 2.0)
