"""The evaluation report of a fracture classifier on a labelled set (pure numpy, no plots).

``evaluate_predictions`` takes calibrated probabilities, 0/1 labels and the operating point
(or per-body-part :class:`~models.decision.Thresholds`) and returns a frozen
:class:`EvaluationReport`; :mod:`models.report_plots` writes it as JSON and PNG files.

* AUC: :func:`models.metrics.roc_auc`, with a 95 % percentile bootstrap interval over
  *stratified* resamples (positives and negatives resampled separately, keeping their counts).
* Binary metrics at the threshold (``p >= threshold`` is positive; every case decided):
  sensitivity and specificity with 95 % Wilson intervals, PPV, NPV, F1, accuracy, kappa.
* Three-way decisions (present / absent / indeterminate): indeterminate rate, metrics on the
  decided cases, and a confusion matrix of decided cases plus indeterminate counts per class.
* Calibration: log loss, expected calibration error over 10 equal-width bins, the bins.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, is_dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from models.decision import OperatingPoint, Thresholds
from models.evaluation_stats import (
    CountReport,
    Interval,
    ReliabilityBin,
    RocCurve,
    bootstrap_auc,
    cohen_kappa,
    count_report,
    expected_calibration_error,
    log_loss,
    reliability_bins,
    roc_curve,
    wilson_interval,
)
from models.labels import BODY_PARTS
from models.metrics import roc_auc

__all__ = [
    "AtThreshold",
    "BodyPartRow",
    "ConfusionCounts",
    "DecidedMetrics",
    "EvaluationReport",
    "evaluate_predictions",
]

CALIBRATION_BINS = 10
ROC_MAX_POINTS = 200
CI_LEVEL = 0.95


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


@dataclass(frozen=True)
class ConfusionCounts:
    """Decided cases as a 2x2 table, plus the indeterminate cases of each true class."""

    tp: int
    fp: int
    fn: int
    tn: int
    indeterminate_positive: int = 0
    indeterminate_negative: int = 0

    def rows(self) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        """Rows true absent / present; columns called absent / present / indeterminate."""
        return (
            (self.tn, self.fp, self.indeterminate_negative),
            (self.fn, self.tp, self.indeterminate_positive),
        )


@dataclass(frozen=True)
class AtThreshold:
    """Binary metrics with every case called at its threshold (``p >= threshold``)."""

    sensitivity: float
    sensitivity_ci: Interval
    specificity: float
    specificity_ci: Interval
    ppv: float | None
    npv: float | None
    f1: float | None
    accuracy: float
    kappa: float | None
    counts: ConfusionCounts


@dataclass(frozen=True)
class DecidedMetrics:
    """Three-way decisions: how many are indeterminate and how the decided ones fare."""

    indeterminate: int
    indeterminate_rate: float
    decided: int
    sensitivity: float | None
    specificity: float | None
    accuracy: float | None
    kappa: float | None
    #: Positives not called "absent" (present or indeterminate) over all positives.
    positives_not_missed: float


@dataclass(frozen=True)
class BodyPartRow:
    """Metrics of the cases of one body part (``None`` where a class is missing)."""

    body_part: str
    n: int
    positives: int
    negatives: int
    auc: float | None
    sensitivity: float | None
    specificity: float | None
    indeterminate_rate: float
    point: OperatingPoint


@dataclass(frozen=True)
class EvaluationReport:
    """Everything the evaluation measured; ``as_json()`` gives plain JSON data."""

    n: int
    positives: int
    negatives: int
    thresholds: Thresholds
    auc: float
    auc_ci: Interval | None
    auc_ci_method: str
    n_bootstrap: int
    seed: int
    at_threshold: AtThreshold
    decisions: DecidedMetrics
    confusion: ConfusionCounts
    log_loss: float
    ece: float
    reliability: tuple[ReliabilityBin, ...]
    roc: RocCurve
    body_parts: tuple[BodyPartRow, ...]
    count: CountReport | None
    hardware_auc: float | None
    hardware_n: int

    @property
    def point(self) -> OperatingPoint:
        """The default operating point."""
        return self.thresholds.default

    def as_json(self) -> dict[str, Any]:
        """Plain dicts/lists/numbers/strings (non-finite floats become ``None``)."""
        plain = _plain(self)
        assert isinstance(plain, dict)
        return plain


def _plain(value: object) -> Any:
    if isinstance(value, Thresholds):
        return {
            "default": _plain(value.default),
            "per_body_part": {k: _plain(v) for k, v in sorted(value.per_body_part.items())},
        }
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        f = float(value)
        return f if math.isfinite(f) else None
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"cannot convert {type(value).__name__} to JSON")


def _counts(
    called: npt.NDArray[np.bool_], positive: npt.NDArray[np.bool_]
) -> tuple[int, int, int, int]:
    tp = int((called & positive).sum())
    fp = int((called & ~positive).sum())
    fn = int((~called & positive).sum())
    tn = int((~called & ~positive).sum())
    return tp, fp, fn, tn


def _binary_labels(labels: npt.ArrayLike, n: int, what: str) -> npt.NDArray[np.float64]:
    """0/1 labels with NaN where missing (NaN or negative in the input)."""
    y = np.asarray(labels, dtype=np.float64).ravel()
    if y.size != n:
        raise ValueError(f"{what}: {y.size} labels for {n} cases")
    y = np.where(np.isfinite(y) & (y >= 0), y, np.nan)
    known = y[np.isfinite(y)]
    if not np.all((known == 0) | (known == 1)):
        raise ValueError(f"{what}: labels must be 0 or 1 (NaN or -1 for missing)")
    return y


def _part_order(names: set[str]) -> list[str]:
    known = [p for p in BODY_PARTS if p in names]
    return known + sorted(names - set(BODY_PARTS))


def evaluate_predictions(
    probabilities: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    point: OperatingPoint | Thresholds,
    body_parts: Sequence[str | None] | None = None,
    count_true: npt.ArrayLike | None = None,
    count_pred: npt.ArrayLike | None = None,
    hardware_scores: npt.ArrayLike | None = None,
    hardware_labels: npt.ArrayLike | None = None,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> EvaluationReport:
    """The evaluation report of calibrated fracture ``probabilities`` against 0/1 ``labels``.

    ``point`` is one operating point, or :class:`Thresholds` whose per-body-part overrides
    apply to the cases of that part (``body_parts`` gives each case's part, ``None`` for
    unknown). ``count_true`` (class index, -1 if unknown) with ``count_pred`` (class index or
    (N, 3) scores) adds the count head; ``hardware_scores`` with ``hardware_labels`` (0/1,
    NaN or -1 if unknown) adds the hardware AUC. ``n_bootstrap=0`` skips the AUC interval.

    Raises ``ValueError`` for empty input, a single fracture class, labels other than 0/1,
    probabilities outside ``[0, 1]`` or mismatched lengths.
    """
    p = np.asarray(probabilities, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=np.float64).ravel()
    n = p.size
    if n == 0:
        raise ValueError("no cases to evaluate")
    if y.size != n:
        raise ValueError(f"{n} probabilities but {y.size} labels")
    if not np.all(np.isfinite(p)) or p.min() < 0.0 or p.max() > 1.0:
        raise ValueError("probabilities must be finite and in [0, 1] (calibrated)")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("fracture labels must be 0 or 1 (drop unlabelled cases first)")
    positive = y == 1
    n_pos = int(positive.sum())
    if n_pos in (0, n):
        raise ValueError("the evaluation set needs both fractured and normal cases")
    if n_bootstrap < 0:
        raise ValueError("n_bootstrap must be >= 0")
    if body_parts is not None and len(body_parts) != n:
        raise ValueError(f"{n} probabilities but {len(body_parts)} body parts")
    if (count_true is None) != (count_pred is None):
        raise ValueError("give both count_true and count_pred, or neither")
    if (hardware_scores is None) != (hardware_labels is None):
        raise ValueError("give both hardware_scores and hardware_labels, or neither")

    thresholds = point if isinstance(point, Thresholds) else Thresholds(point)
    parts: list[str | None] = list(body_parts) if body_parts is not None else [None] * n
    case_points = [thresholds.for_body_part(part) for part in parts]
    cut = np.array([c.threshold for c in case_points])
    low = np.array([c.indeterminate_low for c in case_points])
    high = np.array([c.indeterminate_high for c in case_points])
    called = p >= cut
    present = p >= high
    absent = p < low
    undecided = ~present & ~absent

    tp, fp, fn, tn = _counts(called, positive)
    n_neg = n - n_pos
    sens_ci = wilson_interval(tp, n_pos)
    spec_ci = wilson_interval(tn, n_neg)
    assert sens_ci is not None and spec_ci is not None
    at_threshold = AtThreshold(
        sensitivity=tp / n_pos,
        sensitivity_ci=sens_ci,
        specificity=tn / n_neg,
        specificity_ci=spec_ci,
        ppv=_ratio(tp, tp + fp),
        npv=_ratio(tn, tn + fn),
        f1=_ratio(2 * tp, 2 * tp + fp + fn),
        accuracy=(tp + tn) / n,
        kappa=cohen_kappa(tp, fp, fn, tn),
        counts=ConfusionCounts(tp, fp, fn, tn),
    )

    decided = ~undecided
    dtp, dfp, dfn, dtn = _counts(present[decided], positive[decided])
    confusion = ConfusionCounts(
        dtp,
        dfp,
        dfn,
        dtn,
        indeterminate_positive=int((undecided & positive).sum()),
        indeterminate_negative=int((undecided & ~positive).sum()),
    )
    n_undecided = int(undecided.sum())
    decisions = DecidedMetrics(
        indeterminate=n_undecided,
        indeterminate_rate=n_undecided / n,
        decided=n - n_undecided,
        sensitivity=_ratio(dtp, dtp + dfn),
        specificity=_ratio(dtn, dtn + dfp),
        accuracy=_ratio(dtp + dtn, n - n_undecided),
        kappa=cohen_kappa(dtp, dfp, dfn, dtn),
        positives_not_missed=1.0 - int((absent & positive).sum()) / n_pos,
    )

    bins = reliability_bins(p, y, CALIBRATION_BINS)
    rows: list[BodyPartRow] = []
    names = np.array([part if part is not None else "" for part in parts], dtype=object)
    for name in _part_order({part for part in parts if part is not None}):
        mask = names == name
        m_pos = int(positive[mask].sum())
        m_neg = int(mask.sum()) - m_pos
        m_tp, _, _, m_tn = _counts(called[mask], positive[mask])
        rows.append(
            BodyPartRow(
                body_part=name,
                n=int(mask.sum()),
                positives=m_pos,
                negatives=m_neg,
                auc=roc_auc(p[mask], y[mask]) if m_pos and m_neg else None,
                sensitivity=_ratio(m_tp, m_pos),
                specificity=_ratio(m_tn, m_neg),
                indeterminate_rate=float(undecided[mask].mean()),
                point=thresholds.for_body_part(name),
            )
        )

    count = None
    if count_true is not None and count_pred is not None:
        count = count_report(count_true, count_pred, n)
    hardware_auc, hardware_n = None, 0
    if hardware_scores is not None and hardware_labels is not None:
        h_scores = np.asarray(hardware_scores, dtype=np.float64).ravel()
        h_labels = _binary_labels(hardware_labels, n, "hardware")
        if h_scores.size != n:
            raise ValueError(f"hardware: {h_scores.size} scores for {n} cases")
        known = np.isfinite(h_labels)
        hardware_n = int(known.sum())
        h_known = h_labels[known]
        if (h_known == 1).any() and (h_known == 0).any():
            hardware_auc = roc_auc(h_scores[known], h_known)

    return EvaluationReport(
        n=n,
        positives=n_pos,
        negatives=n_neg,
        thresholds=thresholds,
        auc=roc_auc(p, y),
        auc_ci=bootstrap_auc(p, y, n_bootstrap=n_bootstrap, seed=seed, level=CI_LEVEL)
        if n_bootstrap
        else None,
        auc_ci_method="percentile bootstrap, stratified by class",
        n_bootstrap=n_bootstrap,
        seed=seed,
        at_threshold=at_threshold,
        decisions=decisions,
        confusion=confusion,
        log_loss=log_loss(p, y),
        ece=expected_calibration_error(bins),
        reliability=bins,
        roc=roc_curve(p, y, ROC_MAX_POINTS),
        body_parts=tuple(rows),
        count=count,
        hardware_auc=hardware_auc,
        hardware_n=hardware_n,
    )
