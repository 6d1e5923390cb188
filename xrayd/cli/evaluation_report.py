"""``report.md`` of ``xrayd evaluate --dataset fracatlas``: the figures in words, with the
data's attribution (CC BY 4.0) and what the split can and cannot show."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from models.bundle import LoadedModel
    from models.evaluation import EvaluationReport
    from models.evaluation_stats import Interval
    from models.localisation_metrics import LocalisationSummary

__all__ = ["ATTRIBUTION", "SPLIT_NOTE", "ci_text", "fmt", "markdown_report"]

#: Required by FracAtlas's licence (CC BY 4.0) in every report that uses it.
ATTRIBUTION = (
    "FracAtlas: Abedeen I., Rahman M.A., Prottyasha F.Z., Ahmed T., Chowdhury T.M., "
    'Shatabda S. "FracAtlas: A Dataset for Fracture Classification, Localization and '
    'Segmentation of Musculoskeletal Radiographs". Scientific Data 10 (2023). '
    "doi:10.1038/s41597-023-02432-4. Licence CC BY 4.0."
)
SPLIT_NOTE = (
    "The test part is 15 % of each fracture x body-part stratum of the same FracAtlas share the "
    "model was developed on, held out by a fixed split. All FracAtlas images come from one "
    "source hospital group, so these figures cannot show how the model fares on other "
    "hospitals, scanners or populations. FracAtlas publishes no patient ids: images of one "
    "patient may sit in different splits (training and test), which can make the figures "
    "optimistic; only byte-identical files are kept together, by their content hash."
)


def fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def ci_text(ci: dict[str, float] | Interval | None, digits: int = 3) -> str:
    if ci is None:
        return "n/a"
    low, high = (ci["low"], ci["high"]) if isinstance(ci, dict) else (ci.low, ci.high)
    return f"{low:.{digits}f}-{high:.{digits}f}"


def markdown_report(
    *,
    model: LoadedModel,
    root: Path,
    n_records: int,
    skipped: dict[str, int],
    skipped_files: Sequence[str],
    report: EvaluationReport,
    subsets: Sequence[dict[str, Any]],
    summaries: Sequence[LocalisationSummary],
    thumbnails: Sequence[str],
) -> str:
    meta = model.metadata
    point = report.point
    at = report.at_threshold
    lines = [
        f"# Evaluation of {meta.name} {meta.version} on FracAtlas (test part)",
        "",
        f"- Bundle: **{meta.name} {meta.version}** ({meta.arch}, input {meta.input_size} px, "
        f"localisation head: {'yes' if meta.localisation_head else 'no'}), weights sha256 "
        f"`{model.info.sha256}`.",
        f"- Data: FracAtlas at `{root}`, part **test** of the fixed content-hash split "
        f"({n_records} images in the part, **{report.n} evaluated**).",
    ]
    total_skipped = sum(skipped.values())
    if total_skipped:
        reasons = ", ".join(f"{reason}: {count}" for reason, count in sorted(skipped.items()))
        shown = ", ".join(f"`{name}`" for name in skipped_files[:20])
        more = f" and {len(skipped_files) - 20} more" if len(skipped_files) > 20 else ""
        lines.append(
            f"- Skipped: **{total_skipped}** image(s) that could not be read ({reasons}; "
            f"truncated JPEGs end early and are refused, not guessed): {shown}{more}."
        )
    else:
        lines.append("- Skipped: none (every image of the part could be read).")
    overrides = len(meta.thresholds.per_body_part)
    lines += [
        f"- Operating point (stored in the bundle): threshold {point.threshold:.4f}, "
        f"indeterminate from {point.indeterminate_low:.4f} to {point.indeterminate_high:.4f}"
        + (f" (+{overrides} per-body-part overrides)" if overrides else "")
        + ".",
        f"- Intervals: 95 %; AUC by {report.auc_ci_method} ({report.n_bootstrap} resamples, "
        f"seed {report.seed}); proportions by Wilson score.",
        "",
        "## Figures",
        "",
        "| figure | value | 95 % CI |",
        "|---|---|---|",
        f"| images (fractured / normal) | {report.n} ({report.positives} / {report.negatives}) | |",
        f"| AUC | {report.auc:.3f} | {ci_text(report.auc_ci)} |",
        f"| sensitivity at {point.threshold:.3f} | {at.sensitivity:.3f} | "
        f"{ci_text(at.sensitivity_ci)} |",
        f"| specificity at {point.threshold:.3f} | {at.specificity:.3f} | "
        f"{ci_text(at.specificity_ci)} |",
        f"| indeterminate rate | {report.decisions.indeterminate_rate:.3f} | |",
        f"| fractures not called absent | {report.decisions.positives_not_missed:.3f} | |",
        f"| calibration error (ECE, 10 bins) | {report.ece:.3f} | |",
        "",
        "## Per body part",
        "",
        "| body part | n | fractured | AUC | sensitivity | specificity | indeterminate |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r.body_part} | {r.n} | {r.positives} | {fmt(r.auc)} | {fmt(r.sensitivity)} | "
        f"{fmt(r.specificity)} | {r.indeterminate_rate:.3f} |"
        for r in report.body_parts
    ]
    lines += [
        "",
        "## With and without orthopaedic hardware",
        "",
        "Nearly every FracAtlas image with hardware is fractured: a model can score well by "
        "spotting metal. The figures without hardware images are the fairer ones.",
        "",
        "| subset | n | fractured | normal | AUC (95 % CI) | sensitivity (95 % CI) | "
        "specificity (95 % CI) |",
        "|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {s['subset']} | {s['n']} | {s['positives']} | {s['negatives']} | "
        f"{fmt(s['auc'])} ({ci_text(s['auc_ci'])}) | "
        f"{fmt(s['sensitivity'])} ({ci_text(s['sensitivity_ci'])}) | "
        f"{fmt(s['specificity'])} ({ci_text(s['specificity_ci'])}) |"
        for s in subsets
    ]
    lines += [
        "",
        "## Localisation",
        "",
        "On fractured test images with at least one annotated box"
        + (
            f" ({summaries[0].excluded} fractured image(s) without a box left out)"
            if summaries and summaries[0].excluded
            else ""
        )
        + ". Peak hit: the heatmap's maximum lies in a true box. Top-box hit: the centre of "
        "the strongest predicted box lies in a true box. IoU: the strongest predicted box "
        "against its best-matching true box. *Drawn*: only images whose decision is present "
        "or indeterminate (where boxes are shown).",
        "",
        "| heatmap | images | peak hit (95 % CI) | top-box hit (95 % CI) | mean best IoU |",
        "|---|---|---|---|---|",
    ]
    for summary in summaries:
        for label, figures in (("all", summary.all), ("drawn", summary.drawn)):
            lines.append(
                f"| {summary.method}, {label} | {figures.n} | "
                f"{fmt(figures.peak_hit.rate)} ({ci_text(figures.peak_hit.ci)}) | "
                f"{fmt(figures.top_box_hit.rate)} ({ci_text(figures.top_box_hit.ci)}) | "
                f"{fmt(figures.mean_best_iou)} |"
            )
    lines += ["", "## Worst misses", ""]
    if thumbnails:
        lines.append(
            "Green: true fracture boxes; orange: the heatmap's strongest regions (also on "
            "tiles decided absent, where the product shows no box)."
        )
        lines += ["", *(f"![{name}]({name})" for name in thumbnails)]
    else:
        lines.append("No images to show.")
    lines += [
        "",
        "## What this split can and cannot show",
        "",
        SPLIT_NOTE,
        "",
        "## Data attribution",
        "",
        ATTRIBUTION,
        "",
        f"Command: `xrayd {' '.join(sys.argv[1:])}`" if sys.argv[1:] else "",
    ]
    return "\n".join(lines).rstrip() + "\n"
