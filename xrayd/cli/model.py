"""``xrayd train`` and ``xrayd evaluate``: the ML engineer's commands.

Heavy imports (torch, MONAI) happen inside the commands so that the DICOM-node commands start
fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from config.errors import XraydError
from config.settings import Settings
from xrayd.cli.bundle_summary import print_saved_bundle
from xrayd.cli.parsers import Subparsers

if TYPE_CHECKING:
    from models.preprocess import PreprocessParams
    from models.synthetic_data import LabelledTensors

logger = logging.getLogger(__name__)

DATASETS = ("synthetic", "mura", "fracatlas", "csv")
#: Backbones fine-tuned from ImageNet weights (by xrayd.cli.finetune); keep in step with
#: models.network.PRETRAINED_ARCHS (not imported here: torch loads slowly).
PRETRAINED_ARCHS = ("efficientnet_lite0",)
#: Seeds of the synthetic sets: training uses --seed, validation --seed + 1; evaluation
#: defaults to a seed no training command uses.
EVALUATION_SEED = 20261123


def _tensors(
    args: argparse.Namespace, params: PreprocessParams, part: str, n: int, seed: int
) -> LabelledTensors:
    from tqdm import tqdm

    from models.synthetic_data import synthetic_tensors

    if args.dataset != "synthetic":
        from retrain.datasets.tensors import dataset_tensors

        try:
            return dataset_tensors(
                args.dataset, Path(args.data), part, params, workers=args.workers or None
            )
        except ValueError as exc:
            raise XraydError(str(exc)) from exc
    cached = _cache_path(args, f"synthetic-{n}-{seed}-{params.input_size}")
    if cached is not None and cached.is_file():
        from models.synthetic_data import load_tensors

        print(f"{part}: {n} synthetic cases from cache {cached}", flush=True)
        return load_tensors(cached)
    with tqdm(
        total=n, desc=f"{part} cases", unit="case", disable=not args.progress, file=sys.stderr
    ) as bar:
        data = synthetic_tensors(n, seed, params, workers=args.workers or None, progress=bar.update)
    if cached is not None:
        from models.synthetic_data import save_tensors

        save_tensors(data, cached)
    return data


def _cache_path(args: argparse.Namespace, stem: str) -> Path | None:
    if not args.cache:
        return None
    Path(args.cache).mkdir(parents=True, exist_ok=True)
    return Path(args.cache) / f"{stem}.pt"


def cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    from models.fit import FitConfig, fit
    from models.network import build_network
    from models.preprocess import PreprocessParams
    from models.train_bundle import BundleSpec, finish_bundle

    if args.dataset != "synthetic" and not args.data:
        raise XraydError(f"--data is required for --dataset {args.dataset}")
    if args.arch in PRETRAINED_ARCHS:
        from xrayd.cli.finetune import run_finetune

        return run_finetune(args)
    params = PreprocessParams(input_size=args.input_size)
    train = _tensors(args, params, "train", args.n_train, args.seed)
    val = _tensors(args, params, "validation", args.n_val, args.seed + 1)
    labelled = val.targets.fracture[val.targets.fracture >= 0]
    if not ((labelled == 1).any() and (labelled == 0).any()):
        raise XraydError(
            f"the validation part has {len(val)} images but not both fractured and normal "
            "labelled ones: the operating point cannot be chosen (use a larger dataset)"
        )
    print(f"training {args.arch} on {len(train)} images, validating on {len(val)}", flush=True)
    config = FitConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        patience=args.patience,
        seed=args.seed,
        augment=not args.no_augment,
        workers=args.loader_workers,
        device=args.device,
        progress=args.progress,
    )
    result = fit(build_network(args.arch), train, val, config)
    spec = BundleSpec(
        name=args.name,
        version=args.version,
        preprocess=params,
        target_sensitivity=args.target_sensitivity,
        per_body_part=args.per_body_part_thresholds,
        half=not args.full_precision,
    )
    done = finish_bundle(result, val, train.manifest_sha256, Path(args.out), spec)
    history = [
        {"epoch": r.epoch, "train_loss": r.train_loss, "val_loss": r.val_loss, "val_auc": r.val_auc}
        for r in result.history
    ]
    (Path(args.out) / "configs" / "training.json").write_text(
        json.dumps(
            {
                "command": ["xrayd", *sys.argv[1:]],
                "dataset": args.dataset,
                "n_train": len(train),
                "n_val": len(val),
                "seed": args.seed,
                "fit": {
                    k: getattr(config, k)
                    for k in (
                        "epochs",
                        "batch_size",
                        "learning_rate",
                        "weight_decay",
                        "patience",
                        "augment",
                    )
                },
                "best_epoch": result.best_epoch,
                "stopped_early": result.stopped_early,
                "history": history,
            },
            indent=2,
        )
        + "\n",
        encoding="utf-8",
    )
    print_saved_bundle(done, args.out, result.best_epoch, len(result.history))
    return 0


def cmd_evaluate(args: argparse.Namespace, settings: Settings) -> int:
    if args.dataset == "fracatlas":
        from xrayd.cli.evaluate import evaluate_localised

        return evaluate_localised(args)

    import numpy as np

    from models.bundle import load_bundle
    from models.decision import apply_temperature
    from models.evaluation import evaluate_predictions
    from models.fit import float_batches
    from models.report_plots import write_report
    from models.training import collect

    model = load_bundle(Path(args.bundle), device=args.device)
    meta = model.metadata
    data = _tensors(args, meta.preprocess, "test", args.n, args.seed)
    collected = collect(model.network, float_batches(data, 32))
    keep = np.isfinite(collected.fracture) & (collected.fracture >= 0)
    probabilities = apply_temperature(collected.fracture_logits, meta.temperature)
    parts = [
        meta.body_parts[i] if 0 <= i < len(meta.body_parts) else None
        for i in collected.body_part.tolist()
    ]
    counted = collected.count >= 0
    hardware = np.isfinite(collected.hardware) & (collected.hardware >= 0)
    sub = keep & counted & hardware
    report = evaluate_predictions(
        probabilities[keep],
        collected.fracture[keep],
        point=meta.thresholds,
        body_parts=[p for p, k in zip(parts, keep, strict=True) if k],
        count_true=collected.count[keep] if sub[keep].all() else None,
        count_pred=collected.count_logits[keep].argmax(axis=1) if sub[keep].all() else None,
        hardware_scores=(
            1 / (1 + np.exp(-collected.hardware_logits[keep])) if sub[keep].all() else None
        ),
        hardware_labels=collected.hardware[keep] if sub[keep].all() else None,
        n_bootstrap=args.bootstrap,
        seed=args.seed,
    )
    out = Path(args.out)
    written = write_report(report, out)
    at = report.at_threshold
    ci = report.auc_ci
    print(
        f"evaluated {meta.name} {meta.version} on {report.n} labelled images "
        f"({args.dataset}, seed {args.seed})"
    )
    print(
        f"  AUC {report.auc:.4f}"
        + (f" (95% CI {ci.low:.4f}-{ci.high:.4f})" if ci is not None else "")
    )
    print(
        f"  at threshold {report.point.threshold:.4f}: sensitivity {at.sensitivity:.3f}, "
        f"specificity {at.specificity:.3f}; indeterminate "
        f"{report.decisions.indeterminate_rate:.1%}"
    )
    for path in written:
        print(f"  wrote {path}")
    return 0


def add_parsers(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    data = argparse.ArgumentParser(add_help=False)
    data.add_argument("--dataset", choices=DATASETS, default="synthetic")
    data.add_argument("--data", default=None, help="dataset root (not for synthetic)")
    data.add_argument(
        "--workers",
        type=int,
        default=0,
        help="processes generating synthetic cases (default: all CPUs)",
    )
    data.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    data.add_argument("--no-progress", dest="progress", action="store_false")
    data.add_argument(
        "--cache", default=None, help="directory keeping generated synthetic sets for the next run"
    )

    p = sub.add_parser("train", parents=[common, data], help="train a model bundle")
    p.add_argument("--out", required=True, help="bundle directory to write")
    p.add_argument("--name", default="xrayd-model")
    p.add_argument("--version", default="0.1.0")
    p.add_argument(
        "--arch",
        default="resnet18",
        choices=("resnet18", "resnet18_half", "densenet121", *PRETRAINED_ARCHS),
        help="efficientnet_lite0: fine-tune from ImageNet weights (real datasets)",
    )
    p.add_argument("--input-size", type=int, default=256)
    p.add_argument("--n-train", type=int, default=4000, help="synthetic training cases")
    p.add_argument("--n-val", type=int, default=1000, help="synthetic validation cases")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--patience", type=int, default=8)
    p.add_argument(
        "--loader-workers",
        type=int,
        default=0,
        help="DataLoader processes for augmentation (0: in the training process)",
    )
    p.add_argument("--no-augment", action="store_true")
    tune = p.add_argument_group("fine-tuning a pretrained backbone (--arch efficientnet_lite0)")
    tune.add_argument("--checkpoint-dir", default=None, help="default: <out>.checkpoints")
    tune.add_argument(
        "--resume", action="store_true", help="continue from the checkpoint of the last epoch"
    )
    tune.add_argument("--warmup-epochs", type=int, default=1, help="epochs training heads only")
    tune.add_argument(
        "--frozen-stages", type=int, default=3, help="early backbone stages kept frozen"
    )
    tune.add_argument("--bf16", action="store_true", help="bfloat16 autocast (CPUs with it)")
    tune.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    tune.add_argument(
        "--stop-after", type=int, default=0, help="checkpoint and stop after this epoch"
    )
    tune.add_argument("--limit", type=int, default=0, help="images per part (smoke runs)")
    tune.add_argument(
        "--no-pretrained", action="store_true", help="random backbone (for comparisons)"
    )
    p.add_argument("--target-sensitivity", type=float, default=0.95)
    p.add_argument("--per-body-part-thresholds", action="store_true")
    p.add_argument(
        "--full-precision",
        action="store_true",
        help="store float32 weights (default float16, half the size)",
    )
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "evaluate", parents=[common, data], help="evaluate a bundle: JSON report and PNG plots"
    )
    p.add_argument("--bundle", required=True)
    p.add_argument("--out", required=True, help="report directory")
    p.add_argument("--n", type=int, default=1000, help="synthetic test cases")
    p.add_argument("--seed", type=int, default=EVALUATION_SEED)
    p.add_argument("--bootstrap", type=int, default=1000)
    p.set_defaults(func=cmd_evaluate)
