"""``xrayd predict FILE...`` and ``xrayd synth``: checking a model by hand.

``predict`` prints, per file, the decision, probabilities, count, body part, hardware, boxes,
model version and the time taken, or the reason the file was not analysed. It exits non-zero
only on usage errors (no such bundle, bad arguments), never because a file is unreadable.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from config.errors import XraydError
from config.settings import Settings
from xrayd.cli.parsers import Subparsers

if TYPE_CHECKING:
    from models.inference import Classifier
    from models.prediction import Prediction


@dataclass(frozen=True)
class Outcome:
    file: str
    prediction: Prediction | None
    reason: str | None
    seconds: float


def _bundle_dir(args: argparse.Namespace, settings: Settings) -> Path:
    from models.bundle import default_bundle_path

    if args.bundle:
        return Path(args.bundle)
    return settings.model.bundle or default_bundle_path()


def load_classifier(args: argparse.Namespace, settings: Settings) -> Classifier:
    from models.loading import load_classifier as load

    ready = load(
        _bundle_dir(args, settings),
        device=args.device or settings.model.device,
        runtime=args.runtime,
        threads=settings.model.threads,
        batch_size=settings.model.batch_size,
    )
    return ready.classifier


def _one(classifier: Classifier, path: Path) -> Outcome:
    from pydicom.errors import InvalidDicomError

    from models.errors import NotAnalysable
    from models.limits import DEFAULT_LIMITS
    from models.preprocess import prepare
    from models.reading import read_image

    start = time.perf_counter()
    try:
        ds = read_image(path, DEFAULT_LIMITS)  # header first: an image too large is not read
    except NotAnalysable as exc:
        return Outcome(str(path), None, str(exc), time.perf_counter() - start)
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        return Outcome(str(path), None, f"cannot read DICOM: {exc}", time.perf_counter() - start)
    try:
        prepared = prepare(ds, classifier.metadata.preprocess)
    except NotAnalysable as exc:
        return Outcome(str(path), None, str(exc), time.perf_counter() - start)
    hint = str(getattr(ds, "BodyPartExamined", "") or "").lower() or None
    known = hint if hint in classifier.metadata.body_parts else None
    prediction = classifier.predict([prepared], [known])[0]
    return Outcome(str(path), prediction, None, time.perf_counter() - start)


def _as_json(o: Outcome) -> dict[str, Any]:
    doc: dict[str, Any] = {"file": o.file, "seconds": round(o.seconds, 4)}
    if o.prediction is None:
        doc["analysed"] = False
        doc["reason"] = o.reason
        return doc
    p = o.prediction
    doc.update(
        analysed=True,
        decision=str(p.decision),
        fracture_probability=p.fracture_probability,
        count=p.count,
        count_probabilities=list(p.count_probabilities),
        body_part=p.body_part,
        body_part_probability=p.body_part_probability,
        hardware=p.hardware,
        hardware_probability=p.hardware_probability,
        boxes=[[round(v, 1) for v in box] for box in p.boxes],
        threshold_body_part=p.threshold_body_part,
        model={"name": p.model_name, "version": p.model_version},
    )
    return doc


def _text(o: Outcome) -> str:
    if o.prediction is None:
        return f"{o.file}: not analysed: {o.reason}"
    p = o.prediction
    boxes = (
        "; ".join(f"rows {b[0]:.0f}-{b[2]:.0f} cols {b[1]:.0f}-{b[3]:.0f}" for b in p.boxes)
        or "none"
    )
    return (
        f"{o.file}: fracture {p.decision} (p={p.fracture_probability:.3f}), count {p.count}, "
        f"{p.body_part} (p={p.body_part_probability:.2f}), hardware "
        f"{'yes' if p.hardware else 'no'} (p={p.hardware_probability:.2f}); boxes: {boxes}; "
        f"model {p.model_name} {p.model_version}; {o.seconds * 1000:.0f} ms"
    )


def cmd_predict(args: argparse.Namespace, settings: Settings) -> int:
    try:
        classifier = load_classifier(args, settings)
    except XraydError as exc:
        print(f"xrayd predict: {exc}", file=sys.stderr)
        return 2
    outcomes = [_one(classifier, Path(name)) for name in args.files]
    if args.json:
        print(json.dumps([_as_json(o) for o in outcomes], indent=2))
    else:
        for outcome in outcomes:
            print(_text(outcome))
        trained_on = classifier.metadata.training_data.get("dataset", "unrecorded data")
        print(f"AI result, not a diagnosis. Research software; trained on {trained_on}.")
    return 0


def cmd_synth(args: argparse.Namespace, settings: Settings) -> int:
    from tqdm import tqdm

    from models.synthetic_files import write_synthetic_studies

    out = Path(args.out)
    with tqdm(
        total=args.studies, desc="studies", unit="study", disable=not args.progress, file=sys.stderr
    ) as bar:
        files = write_synthetic_studies(
            out, args.studies, args.seed, size=args.size, progress=bar.update
        )
    positives = sum(1 for f in files if f.fracture_count > 0)
    print(
        f"wrote {args.studies} synthetic studies ({len(files)} DICOM files, "
        f"{positives} with fractures) to {out}; labels in {out / 'labels.csv'}"
    )
    return 0


def add_parsers(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("predict", parents=[common], help="run the model on DICOM files")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument(
        "--bundle",
        default=None,
        help="model bundle directory (default: [model] bundle, else the default model)",
    )
    p.add_argument("--device", default=None, help="auto, cpu, cuda (default: [model] device)")
    p.add_argument(
        "--runtime",
        default="eager",
        choices=("auto", "eager", "channels_last", "onnxruntime", "openvino"),
        help="inference runtime (default eager: no start-up export; 'auto' picks the fastest "
        "that matches eager within 1e-3, as the daemon does)",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "synth", parents=[common], help="write synthetic radiograph studies (DICOM) and labels.csv"
    )
    p.add_argument("--out", required=True)
    p.add_argument("--studies", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=512, help="image side in pixels")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(func=cmd_synth)
