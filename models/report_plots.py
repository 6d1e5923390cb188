"""Writing an :class:`~models.evaluation.EvaluationReport` as ``report.json`` and PNG plots.

Figures are drawn on :class:`matplotlib.figure.Figure` with an explicit Agg canvas: no
pyplot, no global backend switch, no figure registry to leak. Every file is written to a
temporary name in the target directory, fsynced and renamed, so a reader never sees half
a file.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from models.evaluation import EvaluationReport

__all__ = [
    "plot_body_parts",
    "plot_calibration",
    "plot_confusion",
    "plot_roc",
    "write_report",
]

DPI = 100


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o644)  # mkstemp's 0600 would hide reports from readers
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)  # attaches itself as figure.canvas
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def plot_roc(report: EvaluationReport) -> Figure:
    """ROC curve with the AUC (and its interval) in the legend and the operating point."""
    figure = Figure(figsize=(5.5, 5.0))
    ax = figure.add_subplot()
    label = f"AUC {report.auc:.3f}"
    if report.auc_ci is not None:
        label += f" (95% CI {report.auc_ci.low:.3f}-{report.auc_ci.high:.3f})"
    ax.plot(report.roc.fpr, report.roc.tpr, color="tab:blue", lw=2, label=label)
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="chance")
    at = report.at_threshold
    overrides = len(report.thresholds.per_body_part)
    per_part = f" (+{overrides} per-part)" if overrides else ""
    ax.plot(
        [1.0 - at.specificity],
        [at.sensitivity],
        "o",
        color="tab:red",
        ms=8,
        label=(
            f"threshold {report.point.threshold:.3f}{per_part}: "
            f"sens {at.sensitivity:.2f}, spec {at.specificity:.2f}"
        ),
    )
    ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), xlabel="1 - specificity", ylabel="sensitivity")
    ax.set_title(f"ROC (n={report.n}, {report.positives} with fracture)")
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    figure.tight_layout()
    return figure


def plot_calibration(report: EvaluationReport) -> Figure:
    """Reliability diagram (observed rate against mean probability per bin) and bin counts."""
    figure = Figure(figsize=(5.5, 6.0))
    top, bottom = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    bins = report.reliability
    centres = np.array([(b.low + b.high) / 2 for b in bins])
    widths = np.array([b.high - b.low for b in bins])
    filled = [b for b in bins if b.mean_probability is not None and b.observed_rate is not None]
    top.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="perfect calibration")
    top.bar(
        [(b.low + b.high) / 2 for b in filled],
        [b.observed_rate or 0.0 for b in filled],
        width=[(b.high - b.low) * 0.9 for b in filled],
        color="tab:blue",
        alpha=0.35,
        label="observed rate",
    )
    top.plot(
        [b.mean_probability for b in filled],
        [b.observed_rate for b in filled],
        "o-",
        color="tab:blue",
        label="bin mean",
    )
    top.set(xlim=(0, 1), ylim=(0, 1), ylabel="observed fracture rate")
    top.set_title(f"Calibration: ECE {report.ece:.3f}, log loss {report.log_loss:.3f}")
    top.grid(alpha=0.3)
    top.legend(loc="upper left", fontsize="small")
    bottom.bar(centres, [b.count for b in bins], width=widths * 0.9, color="tab:grey")
    bottom.set(xlabel="predicted probability", ylabel="cases")
    figure.tight_layout()
    return figure


def plot_confusion(report: EvaluationReport) -> Figure:
    """Decided cases as a 2x2 table with an indeterminate column, counts written in."""
    figure = Figure(figsize=(6.0, 4.0))
    ax = figure.add_subplot()
    matrix = np.array(report.confusion.rows(), dtype=np.float64)
    row_totals = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, row_totals, out=np.zeros_like(matrix), where=row_totals > 0)
    ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(
            j,
            i,
            f"{int(count)}\n({share[i, j]:.0%})",
            ha="center",
            va="center",
            color="white" if share[i, j] > 0.6 else "black",
        )
    ax.set_xticks(range(3), ["absent", "present", "indeterminate"])
    ax.set_yticks(range(2), ["no fracture", "fracture"])
    ax.set(xlabel="decision", ylabel="truth")
    rate = report.decisions.indeterminate_rate
    ax.set_title(f"Decisions (indeterminate {rate:.1%})")
    figure.tight_layout()
    return figure


def plot_body_parts(report: EvaluationReport) -> Figure:
    """AUC, sensitivity and specificity per body part (missing values left out)."""
    rows = report.body_parts
    figure = Figure(figsize=(max(6.0, 0.9 * len(rows) + 2.0), 4.5))
    ax = figure.add_subplot()
    x = np.arange(len(rows), dtype=np.float64)
    width = 0.27
    series: list[tuple[str, list[float | None], str]] = [
        ("AUC", [r.auc for r in rows], "tab:blue"),
        ("sensitivity", [r.sensitivity for r in rows], "tab:red"),
        ("specificity", [r.specificity for r in rows], "tab:green"),
    ]
    for k, (name, values, colour) in enumerate(series):
        present = [i for i, v in enumerate(values) if v is not None]
        ax.bar(
            x[present] + (k - 1) * width,
            [values[i] or 0.0 for i in present],
            width=width,
            color=colour,
            label=name,
        )
    ax.set_xticks(x, [f"{r.body_part}\n(n={r.n}, +{r.positives})" for r in rows], fontsize="small")
    ax.set(ylim=(0, 1.15), ylabel="value")
    ax.set_title("Per body part")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper center", ncol=3, fontsize="small")
    figure.tight_layout()
    return figure


def write_report(report: EvaluationReport, directory: Path) -> list[Path]:
    """Write ``report.json``, ``roc.png``, ``calibration.png``, ``confusion.png`` and, when
    the report has per-body-part rows, ``body_parts.png`` into ``directory``.

    Returns the paths written. The JSON is strict (no NaN/Infinity).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    blob = json.dumps(report.as_json(), indent=2, allow_nan=False) + "\n"
    written: list[Path] = []
    target = directory / "report.json"
    _atomic_write(target, blob.encode())
    written.append(target)
    plots: list[tuple[str, Callable[[EvaluationReport], Figure]]] = [
        ("roc.png", plot_roc),
        ("calibration.png", plot_calibration),
        ("confusion.png", plot_confusion),
    ]
    if report.body_parts:
        plots.append(("body_parts.png", plot_body_parts))
    for name, draw in plots:
        target = directory / name
        _atomic_write(target, _png(draw(report)))
        written.append(target)
    return written
