"""The report of a retraining run: ``report.json`` and PNG plots, in one directory.

* ``report.json``: candidate and current scores with their intervals, the gate verdict, the
  reviews used, the radiologists' disagreement rate per body part, the drift check, and what
  the caller adds (counts, timings, manifest hash).
* ``metrics.png``: AUC, sensitivity and specificity of both models, 95 % intervals as error
  bars, the gate's floors as lines. ``roc.png``: both ROC curves with their operating points.
  ``disagreement.png``: disagreement rate per body part with Wilson intervals.

Drift rule (:func:`drift_check`): warn when the recent agreement rate is lower than the previous
one by more than ``max_drop`` AND their 95 % Wilson intervals do not overlap (the drop is both
large and unlikely to be chance). No warning when either period has no reviews.

Figures are drawn with matplotlib's Agg canvas (no pyplot); files are written atomically.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from models.evaluation_stats import Interval, RocCurve, wilson_interval
from retrain.atomic import write_file_atomic
from retrain.gate import GateVerdict, ModelScores

__all__ = [
    "REPORT_FILES",
    "BodyPartReviews",
    "DriftCheck",
    "drift_check",
    "write_retrain_report",
]

REPORT_FILES = ("report.json", "metrics.png", "roc.png", "disagreement.png")
DPI = 100


def _interval(value: Interval | None) -> list[float] | None:
    return None if value is None else [value.low, value.high]


@dataclass(frozen=True)
class BodyPartReviews:
    """Reviews of one body part and how many disagreed with the AI (from storage)."""

    body_part: str
    reviews: int
    disagreements: int

    def __post_init__(self) -> None:
        if not 0 <= self.disagreements <= self.reviews:
            raise ValueError("need 0 <= disagreements <= reviews")

    @property
    def rate(self) -> float | None:
        return self.disagreements / self.reviews if self.reviews else None

    @property
    def ci(self) -> Interval | None:
        return wilson_interval(self.disagreements, self.reviews)

    def as_json(self) -> dict[str, Any]:
        return {
            "body_part": self.body_part,
            "reviews": self.reviews,
            "disagreements": self.disagreements,
            "rate": self.rate,
            "rate_ci": _interval(self.ci),
        }


@dataclass(frozen=True)
class DriftCheck:
    """Agreement of radiologists with the AI, recent against previous period."""

    recent_agreement: float | None
    previous_agreement: float | None
    n_recent: int
    n_previous: int
    warning: bool
    max_drop: float = 0.05
    recent_ci: Interval | None = None
    previous_ci: Interval | None = None
    reason: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "recent_agreement": self.recent_agreement,
            "previous_agreement": self.previous_agreement,
            "n_recent": self.n_recent,
            "n_previous": self.n_previous,
            "warning": self.warning,
            "max_drop": self.max_drop,
            "recent_ci": _interval(self.recent_ci),
            "previous_ci": _interval(self.previous_ci),
            "reason": self.reason,
            "rule": "warn when previous - recent > max_drop and the 95% Wilson intervals "
            "do not overlap",
        }


def _ci_of(rate: float | None, n: int) -> Interval | None:
    if rate is None or n <= 0:
        return None
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"an agreement rate is in [0, 1], got {rate}")
    return wilson_interval(round(rate * n), n)


def drift_check(
    recent_agreement: float | None,
    n_recent: int,
    previous_agreement: float | None,
    n_previous: int,
    *,
    max_drop: float = 0.05,
) -> DriftCheck:
    """Apply the drift rule of the module docstring to two agreement rates (share of reviews
    agreeing with the AI) and the number of reviews behind each."""
    if n_recent < 0 or n_previous < 0 or not 0.0 <= max_drop <= 1.0:
        raise ValueError("need n_recent, n_previous >= 0 and 0 <= max_drop <= 1")
    recent_ci = _ci_of(recent_agreement, n_recent)
    previous_ci = _ci_of(previous_agreement, n_previous)
    if recent_ci is None or previous_ci is None:
        return DriftCheck(
            recent_agreement,
            previous_agreement,
            n_recent,
            n_previous,
            False,
            max_drop,
            recent_ci,
            previous_ci,
            "not enough reviews in one of the periods",
        )
    assert recent_agreement is not None and previous_agreement is not None
    drop = previous_agreement - recent_agreement
    separated = recent_ci.high < previous_ci.low
    warning = drop > max_drop and separated
    if warning:
        reason = f"agreement fell by {drop:.3f} (> {max_drop:.3f}), intervals do not overlap"
    elif drop > max_drop:
        reason = f"agreement fell by {drop:.3f}, but the intervals overlap (may be chance)"
    else:
        reason = f"agreement changed by {-drop:+.3f} (limit -{max_drop:.3f})"
    return DriftCheck(
        recent_agreement,
        previous_agreement,
        n_recent,
        n_previous,
        warning,
        max_drop,
        recent_ci,
        previous_ci,
        reason,
    )


def _png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def plot_metrics(verdict: GateVerdict) -> Figure:
    """Bars of AUC, sensitivity, specificity for current and candidate, with 95 % CIs."""
    figure = Figure(figsize=(6.5, 4.5))
    ax = figure.add_subplot()
    names = ("AUC", "sensitivity", "specificity")
    x = np.arange(len(names), dtype=np.float64)
    models: list[tuple[str, ModelScores, str, float]] = []
    if verdict.current is not None:
        models.append(("current " + verdict.current.version, verdict.current, "tab:grey", -0.2))
    models.append(("candidate " + verdict.candidate.version, verdict.candidate, "tab:blue", 0.2))
    for label, s, colour, offset in models:
        values = [s.auc, s.sensitivity, s.specificity]
        cis = [s.auc_ci, s.sensitivity_ci, s.specificity_ci]
        low = [v - (c.low if c else v) for v, c in zip(values, cis, strict=True)]
        high = [(c.high if c else v) - v for v, c in zip(values, cis, strict=True)]
        ax.bar(x + offset, values, width=0.38, color=colour, label=label)
        ax.errorbar(x + offset, values, yerr=[low, high], fmt="none", ecolor="black", capsize=4)
    cfg = verdict.config
    ax.hlines(
        [cfg.min_sensitivity, cfg.min_specificity],
        [0.6, 1.6],
        [1.4, 2.4],
        colors="tab:red",
        linestyles="--",
        label="gate floor",
    )
    ax.set_xticks(x, names)
    ax.set(ylim=(0, 1.1), ylabel="value (95% CI)")
    ax.set_title(f"Locked validation set (n={verdict.candidate.n}): gate {verdict.verdict}")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="lower left", fontsize="small")
    figure.tight_layout()
    return figure


def plot_roc(verdict: GateVerdict, candidate_roc: RocCurve, current_roc: RocCurve | None) -> Figure:
    """Both ROC curves, each with its operating point."""
    figure = Figure(figsize=(5.5, 5.0))
    ax = figure.add_subplot()
    curves: list[tuple[ModelScores, RocCurve, str]] = [
        (verdict.candidate, candidate_roc, "tab:blue")
    ]
    if verdict.current is not None and current_roc is not None:
        curves.insert(0, (verdict.current, current_roc, "tab:grey"))
    for s, roc, colour in curves:
        ax.plot(roc.fpr, roc.tpr, color=colour, lw=2, label=f"{s.version}: AUC {s.auc:.3f}")
        ax.plot([1 - s.specificity], [s.sensitivity], "o", color=colour, ms=7)
    ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1, label="chance")
    ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), xlabel="1 - specificity", ylabel="sensitivity")
    ax.set_title("ROC on the locked validation set")
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    figure.tight_layout()
    return figure


def plot_disagreement(rows: Sequence[BodyPartReviews]) -> Figure:
    """Disagreement rate per body part with Wilson intervals (a note when there is none)."""
    shown = [r for r in rows if r.reviews > 0]
    figure = Figure(figsize=(max(5.0, 0.8 * len(shown) + 2.0), 4.0))
    ax = figure.add_subplot()
    if not shown:
        ax.text(0.5, 0.5, "no reviews", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return figure
    x = np.arange(len(shown), dtype=np.float64)
    rates = [r.rate or 0.0 for r in shown]
    cis = [r.ci for r in shown]
    low = [v - (c.low if c else v) for v, c in zip(rates, cis, strict=True)]
    high = [(c.high if c else v) - v for v, c in zip(rates, cis, strict=True)]
    ax.bar(x, rates, color="tab:orange")
    ax.errorbar(x, rates, yerr=[low, high], fmt="none", ecolor="black", capsize=4)
    ax.set_xticks(x, [f"{r.body_part}\n(n={r.reviews})" for r in shown], fontsize="small")
    ax.set(ylim=(0, 1.05), ylabel="disagreement rate (95% CI)")
    ax.set_title("Radiologist disagreement with the AI per body part")
    ax.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    return figure


def write_retrain_report(
    directory: Path,
    *,
    verdict: GateVerdict,
    candidate_roc: RocCurve,
    current_roc: RocCurve | None,
    new_reviews: int,
    disagreements: Sequence[BodyPartReviews] = (),
    drift: DriftCheck | None = None,
    extra: Mapping[str, Any] | None = None,
) -> list[Path]:
    """Write :data:`REPORT_FILES` into ``directory``; returns their paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {
        "schema": "xrayd-retrain-report/1",
        "candidate": verdict.candidate.as_json(),
        "current": None if verdict.current is None else verdict.current.as_json(),
        "gate": verdict.as_json(),
        "new_reviews": new_reviews,
        "disagreement_by_body_part": [r.as_json() for r in disagreements],
        "drift": None if drift is None else drift.as_json(),
        **dict(extra or {}),
    }
    files: list[tuple[str, bytes]] = [
        ("report.json", (json.dumps(doc, indent=2, allow_nan=False) + "\n").encode()),
        ("metrics.png", _png(plot_metrics(verdict))),
        ("roc.png", _png(plot_roc(verdict, candidate_roc, current_roc))),
        ("disagreement.png", _png(plot_disagreement(disagreements))),
    ]
    written: list[Path] = []
    for name, data in files:
        target = directory / name
        write_file_atomic(target, data)
        written.append(target)
    return written
