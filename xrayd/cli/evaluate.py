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
from xrayd.cli.evaluation_report import ATTRIBUTION, ci_text, fmt, markdown_report

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from models.bundle import LoadedModel
    from models.evaluation_stats import Interval
    from models.geometry import Geometry
    from models.labels import Decision
    from models.localisation_metrics import ImageLocalisation
    from models.preprocess import PreprocessParams
    from models.report_thumbnails import Thumbnail
    from models.voi import VoiSource
    from retrain.datasets.localised import LocalisedTensors
    from retrain.datasets.records import ImageRecord

__all__ = ["evaluate_localised"]

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

    text = markdown_report(
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
    print(f"  AUC {report.auc:.4f} (95% CI {ci_text(report.auc_ci, 4)})")
    print(
        f"  at threshold {report.point.threshold:.4f}: sensitivity {at.sensitivity:.3f} "
        f"({ci_text(at.sensitivity_ci)}), specificity {at.specificity:.3f} "
        f"({ci_text(at.specificity_ci)})"
    )
    for s in subsets[1:]:
        print(
            f"  {s['subset']}: n {s['n']} ({s['positives']} fractured), AUC {fmt(s['auc'])}, "
            f"sensitivity {fmt(s['sensitivity'])}, specificity {fmt(s['specificity'])}"
        )
    for summary in summaries:
        rate = summary.all.peak_hit
        print(
            f"  localisation ({summary.method}): peak hit {fmt(rate.rate)} "
            f"({ci_text(rate.ci)}) on {rate.n} images with boxes"
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
