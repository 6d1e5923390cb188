"""``xrayd evaluate --dataset fracatlas``: the honest report on FracAtlas's test part.

The test part of the fixed content-hash split (:func:`retrain.datasets.tensors.dataset_split`)
is prepared with its fracture boxes (:func:`retrain.datasets.localised.localised_tensors`;
truncated or unreadable JPEGs are skipped and counted). Every image then goes through the
production classifier (:class:`models.inference.Classifier`: the localisation head's map where
the network has one, Grad-CAM otherwise, masked to the image content and normalised), so the
heatmaps are exactly those a user would see. The content mask needs each image's
:class:`~models.geometry.Geometry`, which the prepared tensors do not keep: a second, cheap pass
prepares the images again for it and checks that the pixels are the same.

Written into ``--out``: :func:`models.report_plots.write_report`'s files (``report.json`` and
plots), ``subsets.json`` (with and without orthopaedic hardware, a shortcut in FracAtlas),
``localisation.json`` (peak / top-box hit rates and IoU against the fracture boxes, for the
model's heatmap and, for a network with a localisation head, Grad-CAM beside it),
``worst_false_negatives.png``, ``worst_false_positives.png`` and ``report.md``.

Torch stays in ``models``/``retrain``: this module only passes arrays between them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from config.errors import XraydError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from models.bundle import LoadedModel
    from models.evaluation import EvaluationReport
    from models.evaluation_stats import Interval
    from models.geometry import Geometry
    from models.labels import Decision
    from models.localisation_metrics import ImageLocalisation, LocalisationSummary
    from models.preprocess import PreprocessParams
    from models.report_thumbnails import Thumbnail
    from models.voi import VoiSource
    from retrain.datasets.localised import LocalisedTensors
    from retrain.datasets.records import ImageRecord

__all__ = ["ATTRIBUTION", "SPLIT_NOTE", "evaluate_localised"]

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
BATCH = 16
WORST = 8
MAX_BOXES = 3


def _key(record: ImageRecord, root: Path) -> str:
    """The key :func:`retrain.datasets.localised.localised_tensors` gives a record."""
    path = record.path
    return path.relative_to(root).as_posix() if path is not None else record.study_id


def _geometry(job: tuple[ImageRecord, PreprocessParams]) -> tuple[Geometry, VoiSource, str]:
    """Geometry, VOI source and the sha256 of the uint8 input of one record (worker)."""
    import numpy as np

    from retrain.datasets.images import prepare_image

    record, params = job
    prepared = prepare_image(record.image, params)
    pixels = np.rint(np.asarray(prepared.pixels) * 255.0).astype(np.uint8)
    return prepared.geometry, prepared.voi_source, hashlib.sha256(pixels.tobytes()).hexdigest()


@dataclass(frozen=True)
class _Scored:
    """One image through the classifier: the figures kept once its heatmap is dropped."""

    probability: float
    decision: Decision
    count_probabilities: tuple[float, float, float]
    hardware_probability: float
    boxes: tuple[tuple[int, int, int, int], ...]
    localisation: ImageLocalisation | None


def _run(
    model: LoadedModel,
    data: LocalisedTensors,
    geometries: Sequence[tuple[Geometry, VoiSource, str]],
    indices: Sequence[int],
    fractured: npt.NDArray[np.bool_],
) -> list[_Scored]:
    """Classify ``indices`` in batches; score heatmaps of fractured images against boxes."""
    import numpy as np

    from models.decision import decide
    from models.inference import Classifier
    from models.labels import Decision
    from models.localisation_metrics import localise_image
    from models.preprocess import PreparedImage
    from models.regions import strongest_regions

    point = model.metadata.thresholds.for_body_part(None)
    classifier = Classifier(model, batch_size=BATCH, max_boxes=0)
    blank = np.zeros((1, 1), dtype=np.uint8)
    out: list[_Scored] = []
    for start in range(0, len(indices), BATCH):
        chunk = indices[start : start + BATCH]
        images = []
        for i in chunk:
            geometry, voi_source, _ = geometries[i]
            pixels = data.pixels[i, 0].numpy().astype(np.float32) / np.float32(255.0)
            images.append(PreparedImage(pixels, geometry, blank, voi_source))
        for i, prediction in zip(chunk, classifier.predict(images), strict=True):
            decision = decide(prediction.fracture_probability, point)
            regions = strongest_regions(prediction.heatmap, limit=MAX_BOXES)
            boxes = tuple(r.box for r in regions)
            scored = (
                localise_image(
                    prediction.heatmap,
                    boxes,
                    data.boxes[i],
                    drawn=decision is not Decision.ABSENT,
                )
                if fractured[i]
                else None
            )
            out.append(
                _Scored(
                    probability=prediction.fracture_probability,
                    decision=decision,
                    count_probabilities=prediction.count_probabilities,
                    hardware_probability=prediction.hardware_probability,
                    boxes=boxes,
                    localisation=scored,
                )
            )
    return out


def _grad_cam_model(model: LoadedModel) -> LoadedModel:
    """The same network without its localisation head: the classifier falls back to Grad-CAM
    (the backbone and fracture head, hence Grad-CAM itself, are unchanged)."""
    import copy

    from models.bundle import LoadedModel

    network = copy.deepcopy(model.network)
    network.localisation_head = None
    return LoadedModel(network.eval(), model.metadata, model.info, model.device)


def _interval(ci: Interval | None) -> dict[str, float] | None:
    return None if ci is None else {"low": ci.low, "high": ci.high}


def _subset(
    name: str,
    mask: npt.NDArray[np.bool_],
    p: npt.NDArray[np.float64],
    y: npt.NDArray[np.float64],
    parts: Sequence[str | None],
    model: LoadedModel,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Core figures of the cases in ``mask``; AUC ``None`` where a class is missing."""
    import numpy as np

    from models.evaluation import evaluate_predictions
    from models.evaluation_stats import wilson_interval

    thresholds = model.metadata.thresholds
    sub_p, sub_y = p[mask], y[mask]
    sub_parts = [part for part, m in zip(parts, mask, strict=True) if m]
    positives = int((sub_y == 1).sum())
    negatives = int(sub_y.size) - positives
    doc: dict[str, Any] = {
        "subset": name,
        "n": int(sub_y.size),
        "positives": positives,
        "negatives": negatives,
        "auc": None,
        "auc_ci": None,
    }
    if positives and negatives:
        report = evaluate_predictions(
            sub_p,
            sub_y,
            point=thresholds,
            body_parts=sub_parts,
            n_bootstrap=args.bootstrap,
            seed=args.seed,
        )
        at = report.at_threshold
        doc["auc"] = report.auc
        doc["auc_ci"] = _interval(report.auc_ci)
        tp, tn = at.counts.tp, at.counts.tn
    else:  # evaluate_predictions refuses one class; sensitivity or specificity still exists
        cut = np.array([thresholds.for_body_part(part).threshold for part in sub_parts])
        called = sub_p >= cut
        tp = int((called & (sub_y == 1)).sum())
        tn = int((~called & (sub_y == 0)).sum())
    doc["sensitivity"] = tp / positives if positives else None
    doc["sensitivity_ci"] = _interval(wilson_interval(tp, positives))
    doc["specificity"] = tn / negatives if negatives else None
    doc["specificity_ci"] = _interval(wilson_interval(tn, negatives))
    return doc


def _thumbnails(
    data: LocalisedTensors, scored: Mapping[int, _Scored], order: Sequence[int]
) -> list[Thumbnail]:
    from models.report_thumbnails import Thumbnail

    tiles = []
    for i in order:
        s = scored[i]
        name = Path(data.keys[i]).name
        tiles.append(
            Thumbnail(
                data.pixels[i, 0].numpy(),
                tuple(data.boxes[i]),
                tuple((float(a), float(b), float(c), float(d)) for a, b, c, d in s.boxes),
                f"{name}\np={s.probability:.3f} {s.decision.value}",
            )
        )
    return tiles


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _ci_text(ci: dict[str, float] | Interval | None, digits: int = 3) -> str:
    if ci is None:
        return "n/a"
    low, high = (ci["low"], ci["high"]) if isinstance(ci, dict) else (ci.low, ci.high)
    return f"{low:.{digits}f}-{high:.{digits}f}"


def _markdown(
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
        f"| AUC | {report.auc:.3f} | {_ci_text(report.auc_ci)} |",
        f"| sensitivity at {point.threshold:.3f} | {at.sensitivity:.3f} | "
        f"{_ci_text(at.sensitivity_ci)} |",
        f"| specificity at {point.threshold:.3f} | {at.specificity:.3f} | "
        f"{_ci_text(at.specificity_ci)} |",
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
        f"| {r.body_part} | {r.n} | {r.positives} | {_fmt(r.auc)} | {_fmt(r.sensitivity)} | "
        f"{_fmt(r.specificity)} | {r.indeterminate_rate:.3f} |"
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
        f"{_fmt(s['auc'])} ({_ci_text(s['auc_ci'])}) | "
        f"{_fmt(s['sensitivity'])} ({_ci_text(s['sensitivity_ci'])}) | "
        f"{_fmt(s['specificity'])} ({_ci_text(s['specificity_ci'])}) |"
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
                f"{_fmt(figures.peak_hit.rate)} ({_ci_text(figures.peak_hit.ci)}) | "
                f"{_fmt(figures.top_box_hit.rate)} ({_ci_text(figures.top_box_hit.ci)}) | "
                f"{_fmt(figures.mean_best_iou)} |"
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


def evaluate_localised(args: argparse.Namespace) -> int:
    """Evaluate ``args.bundle`` on the FracAtlas test part under ``args.data`` into
    ``args.out`` (see the module docstring); print a short summary."""
    import numpy as np
    from tqdm import tqdm

    from models.bundle import load_bundle
    from models.evaluation import evaluate_predictions
    from models.labels import BODY_PARTS
    from models.localisation_metrics import summarise_localisation
    from models.parallel import process_map
    from models.report_plots import _atomic_write, write_report
    from models.report_thumbnails import write_thumbnail_grid
    from retrain.datasets.localised import localised_tensors
    from retrain.datasets.tensors import dataset_split

    if not args.data:
        raise XraydError("--data is required for --dataset fracatlas")
    root = Path(args.data)
    model = load_bundle(Path(args.bundle), device=args.device)
    meta = model.metadata
    try:
        records = dataset_split("fracatlas", root, "test")
    except ValueError as exc:
        raise XraydError(str(exc)) from exc
    if not records:
        raise XraydError(f"the test part of FracAtlas at {root} is empty")
    workers = args.workers or None
    with tqdm(
        total=len(records),
        desc="preparing test",
        unit="image",
        disable=not args.progress,
        file=sys.stderr,
    ) as bar:
        try:
            data = localised_tensors(
                records, meta.preprocess, root=root, workers=workers, progress=bar.update
            )
        except ValueError as exc:
            raise XraydError(f"FracAtlas test part at {root}: {exc}") from exc
    by_key = {_key(r, root): r for r in records}
    kept_keys = set(data.keys)
    skipped_files = sorted(k for k in by_key if k not in kept_keys)
    geometries, _ = process_map(
        _geometry, [(by_key[k], meta.preprocess) for k in data.keys], workers=workers
    )
    for i, (_, _, digest) in enumerate(geometries):
        if hashlib.sha256(data.pixels[i, 0].numpy().tobytes()).hexdigest() != digest:
            raise XraydError(f"{data.keys[i]} changed while it was being evaluated")

    y = data.targets.fracture.numpy().astype(np.float64)
    keep = np.isfinite(y) & (y >= 0)
    fractured = keep & (y == 1)
    indices = [int(i) for i in np.flatnonzero(keep)]
    scored_list = _run(model, data, geometries, indices, fractured)
    scored = dict(zip(indices, scored_list, strict=True))
    method = "localisation head" if model.network.localisation_head is not None else "Grad-CAM"
    fractured_keys = [i for i in indices if fractured[i]]
    own = summarise_localisation([scored[i].localisation for i in fractured_keys], method)
    summaries = [own]
    cam_scored: dict[int, _Scored] = {}
    if model.network.localisation_head is not None:
        boxed = [i for i in fractured_keys if data.boxes[i]]
        cam_scored = dict(
            zip(
                boxed, _run(_grad_cam_model(model), data, geometries, boxed, fractured), strict=True
            )
        )
        summaries.append(
            summarise_localisation(
                [cam_scored[i].localisation if i in cam_scored else None for i in fractured_keys],
                "Grad-CAM",
            )
        )

    p = np.array([scored[i].probability for i in indices], dtype=np.float64)
    labels = y[keep]
    codes = data.targets.body_part.numpy()[keep].tolist()
    parts = [BODY_PARTS[c] if 0 <= c < len(BODY_PARTS) else None for c in codes]
    try:
        report = evaluate_predictions(
            p,
            labels,
            point=meta.thresholds,
            body_parts=parts,
            count_true=data.targets.count.numpy()[keep],
            count_pred=np.array([scored[i].count_probabilities for i in indices]),
            hardware_scores=np.array([scored[i].hardware_probability for i in indices]),
            hardware_labels=data.targets.hardware.numpy()[keep],
            n_bootstrap=args.bootstrap,
            seed=args.seed,
        )
    except ValueError as exc:
        raise XraydError(f"cannot evaluate the FracAtlas test part: {exc}") from exc
    out = Path(args.out)
    written = write_report(report, out)

    hardware = data.targets.hardware.numpy()[keep]
    subsets = [
        _subset("all", np.ones_like(labels, dtype=bool), p, labels, parts, model, args),
        _subset("without hardware", hardware == 0, p, labels, parts, model, args),
        _subset("hardware only", hardware == 1, p, labels, parts, model, args),
    ]
    unknown = int(((hardware != 0) & (hardware != 1)).sum())
    dataset_doc = {
        "dataset": "fracatlas",
        "part": "test",
        "root": str(root),
        "records": len(records),
        "evaluated": report.n,
        "skipped": dict(sorted(data.skipped.items())),
        "skipped_files": skipped_files,
        "attribution": ATTRIBUTION,
    }
    documents: dict[str, Any] = {
        "subsets.json": {
            "bundle": {"name": meta.name, "version": meta.version, "sha256": model.info.sha256},
            "data": dataset_doc,
            "operating_point": {
                "threshold": report.point.threshold,
                "indeterminate_low": report.point.indeterminate_low,
                "indeterminate_high": report.point.indeterminate_high,
                "per_body_part_overrides": len(meta.thresholds.per_body_part),
            },
            "hardware_unknown": unknown,
            "subsets": subsets,
        },
        "localisation.json": {
            "bundle": {"name": meta.name, "version": meta.version, "sha256": model.info.sha256},
            "heatmap": method,
            "decisions": "at the default operating point (boxes are drawn where present or "
            "indeterminate)",
            "boxes": "models.regions.strongest_regions(heatmap, limit=3) of the content-masked "
            "heatmap normalised to max 1, as models.inference draws them; model-input pixels",
            "model": own.as_json(),
            "grad_cam": summaries[1].as_json() if len(summaries) > 1 else None,
            "images": [
                {
                    "key": data.keys[i],
                    "probability": scored[i].probability,
                    "decision": scored[i].decision.value,
                    "true_boxes": [list(b) for b in data.boxes[i]],
                    "predicted_boxes": [list(b) for b in scored[i].boxes],
                    **_outcome("model", scored[i].localisation),
                    **(_outcome("grad_cam", cam_scored[i].localisation) if i in cam_scored else {}),
                }
                for i in indices
                if fractured[i] and data.boxes[i]
            ],
        },
    }
    for name, doc in documents.items():
        target = out / name
        _atomic_write(target, (json.dumps(doc, indent=2, allow_nan=False) + "\n").encode())
        written.append(target)

    thumbnails: list[str] = []
    misses = sorted(fractured_keys, key=lambda i: (scored[i].probability, i))
    alarms = sorted((i for i in indices if y[i] == 0), key=lambda i: (-scored[i].probability, i))
    for name, order in (
        ("worst_false_negatives.png", misses[:WORST]),
        ("worst_false_positives.png", alarms[:WORST]),
    ):
        if order:
            written.append(write_thumbnail_grid(out / name, _thumbnails(data, scored, order)))
            thumbnails.append(name)

    text = _markdown(
        model=model,
        root=root,
        n_records=len(records),
        skipped=dict(data.skipped),
        skipped_files=skipped_files,
        report=report,
        subsets=subsets,
        summaries=summaries,
        thumbnails=thumbnails,
    )
    target = out / "report.md"
    _atomic_write(target, text.encode())
    written.append(target)

    at = report.at_threshold
    skipped_text = ", ".join(f"{k} {v}" for k, v in sorted(data.skipped.items())) or "none"
    print(
        f"evaluated {meta.name} {meta.version} on {report.n} FracAtlas test images "
        f"(skipped: {skipped_text})"
    )
    print(f"  AUC {report.auc:.4f} (95% CI {_ci_text(report.auc_ci, 4)})")
    print(
        f"  at threshold {report.point.threshold:.4f}: sensitivity {at.sensitivity:.3f} "
        f"({_ci_text(at.sensitivity_ci)}), specificity {at.specificity:.3f} "
        f"({_ci_text(at.specificity_ci)})"
    )
    for s in subsets[1:]:
        print(
            f"  {s['subset']}: n {s['n']} ({s['positives']} fractured), AUC {_fmt(s['auc'])}, "
            f"sensitivity {_fmt(s['sensitivity'])}, specificity {_fmt(s['specificity'])}"
        )
    for summary in summaries:
        rate = summary.all.peak_hit
        print(
            f"  localisation ({summary.method}): peak hit {_fmt(rate.rate)} "
            f"({_ci_text(rate.ci)}) on {rate.n} images with boxes"
        )
    for path in written:
        print(f"  wrote {path}")
    return 0


def _outcome(prefix: str, outcome: ImageLocalisation | None) -> dict[str, Any]:
    if outcome is None:
        return {}
    return {
        f"{prefix}_peak_hit": outcome.peak_hit,
        f"{prefix}_top_box_hit": outcome.top_box_hit,
        f"{prefix}_best_iou": outcome.best_iou,
    }
