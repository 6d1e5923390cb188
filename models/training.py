"""One optimisation step, evaluation, and a tiny demo bundle trained on synthetic cases.

The demo bundle shows the plumbing end to end (preprocessing through ``to_dicom`` + ``prepare``
exactly as in production, training, calibration, metrics, bundle). Trained for a minute on a
few hundred synthetic phantoms, it is not a fracture detector: its metadata records whatever
its validation metrics measure.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from models.bundle import BundleInfo, save_bundle
from models.bundle_metadata import BundleMetadata
from models.decision import OperatingPoint, Thresholds, apply_temperature, calibrate_temperature
from models.labels import BODY_PARTS
from models.losses import Targets, multitask_loss
from models.metrics import Metrics, roc_auc, sensitivity_specificity
from models.network import MultiTaskNet, build_network
from models.preprocess import PreprocessParams, prepare
from models.synthetic import SyntheticCase, generate_dataset, to_dicom

logger = logging.getLogger(__name__)

__all__ = [
    "Collected",
    "batches",
    "collect",
    "evaluate",
    "make_demo_bundle",
    "manifest_sha256",
    "metrics_from",
    "refresh_batch_norm",
    "tensors_from_cases",
    "train_step",
]

Batch = tuple[Tensor, Targets]


def train_step(
    network: MultiTaskNet,
    optimizer: torch.optim.Optimizer,
    batch_pixels: Tensor,
    batch_targets: Targets,
) -> float:
    """One optimisation step on the masked multi-task loss; returns the loss before the step."""
    network.train()
    device = next(network.parameters()).device
    optimizer.zero_grad(set_to_none=True)
    loss = multitask_loss(network(batch_pixels.to(device)), batch_targets.to(device))
    loss.backward()  # type: ignore[no-untyped-call]
    optimizer.step()
    return float(loss.detach())


@dataclass(frozen=True, eq=False)
class Collected:
    """Network outputs (logits) and labels over an evaluation set, as numpy arrays."""

    fracture_logits: npt.NDArray[np.float64]
    count_logits: npt.NDArray[np.float64]
    body_part_logits: npt.NDArray[np.float64]
    hardware_logits: npt.NDArray[np.float64]
    fracture: npt.NDArray[np.float64]
    count: npt.NDArray[np.int64]
    body_part: npt.NDArray[np.int64]
    hardware: npt.NDArray[np.float64]
    loss: float


def collect(network: MultiTaskNet, loader: Iterable[Batch]) -> Collected:
    """Run ``network`` (eval mode, no gradients) over ``(pixels, targets)`` batches."""
    network.eval()
    device = next(network.parameters()).device
    parts: dict[str, list[npt.NDArray[np.generic]]] = {}
    total, seen = 0.0, 0
    with torch.inference_mode():
        for pixels, targets in loader:
            out = network(pixels.to(device))
            total += float(multitask_loss(out, targets.to(device))) * len(targets)
            seen += len(targets)
            pairs = {
                "fracture_logits": out.fracture,
                "count_logits": out.count,
                "body_part_logits": out.body_part,
                "hardware_logits": out.hardware,
                "fracture": targets.fracture,
                "count": targets.count,
                "body_part": targets.body_part,
                "hardware": targets.hardware,
            }
            for key, value in pairs.items():
                parts.setdefault(key, []).append(value.detach().cpu().numpy())
    if not seen:
        raise ValueError("evaluation set is empty")

    def floats(key: str) -> npt.NDArray[np.float64]:
        return np.concatenate(parts[key]).astype(np.float64)

    def ints(key: str) -> npt.NDArray[np.int64]:
        return np.concatenate(parts[key]).astype(np.int64)

    return Collected(
        fracture_logits=floats("fracture_logits"),
        count_logits=floats("count_logits"),
        body_part_logits=floats("body_part_logits"),
        hardware_logits=floats("hardware_logits"),
        fracture=floats("fracture"),
        count=ints("count"),
        body_part=ints("body_part"),
        hardware=floats("hardware"),
        loss=total / seen,
    )


def _auc(scores: npt.NDArray[np.float64], labels: npt.NDArray[np.float64]) -> float | None:
    keep = np.isfinite(labels) & (labels >= 0)
    y = labels[keep]
    if not (y == 1).any() or not (y == 0).any():
        return None
    return roc_auc(scores[keep], y)


def _accuracy(logits: npt.NDArray[np.float64], labels: npt.NDArray[np.int64]) -> float | None:
    keep = labels >= 0
    if not keep.any():
        return None
    return float((logits[keep].argmax(axis=1) == labels[keep]).mean())


def metrics_from(c: Collected, *, threshold: float = 0.5, temperature: float = 1.0) -> Metrics:
    """Metrics of collected outputs; sensitivity/specificity at calibrated ``threshold``."""
    probability = apply_temperature(c.fracture_logits, temperature)
    keep = np.isfinite(c.fracture) & (c.fracture >= 0)
    sens, spec = sensitivity_specificity(probability[keep], c.fracture[keep], threshold)
    return Metrics(
        n=int(c.fracture.size),
        fracture_auc=_auc(c.fracture_logits, c.fracture),
        sensitivity=sens,
        specificity=spec,
        threshold=threshold,
        count_accuracy=_accuracy(c.count_logits, c.count),
        body_part_accuracy=_accuracy(c.body_part_logits, c.body_part),
        hardware_auc=_auc(c.hardware_logits, c.hardware),
        loss=c.loss,
    )


def evaluate(
    network: MultiTaskNet,
    loader: Iterable[Batch],
    *,
    threshold: float = 0.5,
    temperature: float = 1.0,
) -> Metrics:
    """AUC, sensitivity/specificity at ``threshold``, count/body-part accuracy, mean loss."""
    return metrics_from(collect(network, loader), threshold=threshold, temperature=temperature)


def tensors_from_cases(
    cases: Iterable[SyntheticCase], params: PreprocessParams
) -> tuple[Tensor, Targets]:
    """Synthetic cases through ``to_dicom`` + ``prepare``: pixels (N, 1, S, S) and labels."""
    pixels: list[npt.NDArray[np.float32]] = []
    labels: list[tuple[float, int, int, float]] = []
    for case in cases:
        pixels.append(prepare(to_dicom(case), params).pixels)
        labels.append(
            (
                float(case.fracture),
                case.fracture_count,
                BODY_PARTS.index(case.body_part),
                float(case.hardware),
            )
        )
    if not pixels:
        raise ValueError("no cases")
    columns = list(zip(*labels, strict=True))
    targets = Targets(
        fracture=torch.tensor(columns[0], dtype=torch.float32),
        count=torch.tensor(columns[1], dtype=torch.int64),
        body_part=torch.tensor(columns[2], dtype=torch.int64),
        hardware=torch.tensor(columns[3], dtype=torch.float32),
    )
    return torch.from_numpy(np.stack(pixels)).unsqueeze(1), targets


def batches(
    pixels: Tensor, targets: Targets, batch_size: int, rng: np.random.Generator | None = None
) -> Iterator[Batch]:
    """Mini-batches, shuffled when ``rng`` is given."""
    n = pixels.shape[0]
    order = rng.permutation(n) if rng is not None else np.arange(n)
    for start in range(0, n, batch_size):
        index = torch.from_numpy(order[start : start + batch_size])
        yield (
            pixels[index],
            Targets(
                targets.fracture[index],
                targets.count[index],
                targets.body_part[index],
                targets.hardware[index],
            ),
        )


def refresh_batch_norm(network: MultiTaskNet, loader: Iterable[Batch]) -> None:
    """Recompute BatchNorm running statistics as plain averages over ``loader``.

    After a short training the exponential running averages still lag behind the weights,
    and evaluation-mode outputs are then far off; one forward pass over the training data
    fixes that.
    """
    norms = [m for m in network.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
    device = next(network.parameters()).device
    network.train()
    with torch.no_grad():
        for pixels, _ in loader:
            network(pixels.to(device))
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    network.eval()


def manifest_sha256(cases: Sequence[SyntheticCase], generator: str) -> str:
    """A hash identifying the training cases (seeds, sizes and labels)."""
    entries = [
        {
            "seed": c.seed,
            "size": int(c.image.shape[0]),
            "fracture_count": c.fracture_count,
            "body_part": c.body_part,
            "hardware": c.hardware,
        }
        for c in cases
    ]
    blob = json.dumps({"generator": generator, "cases": entries}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def make_demo_bundle(
    directory: Path,
    *,
    n_train: int = 96,
    n_val: int = 48,
    epochs: int = 4,
    input_size: int = 128,
    seed: int = 0,
    arch: str = "resnet18",
    batch_size: int = 16,
    name: str = "xrayd-phantom",
    version: str = "0.0.0-demo",
) -> BundleInfo:
    """Train a small network briefly on synthetic cases and save it as a bundle.

    Cases are generated at twice ``input_size`` (at least 64 px) and go through the production
    preprocessing. The temperature is fitted on the validation set (so the validation metrics
    are optimistic about calibration); the operating point is a fixed 0.5 with a 0.35-0.65
    indeterminate band.
    """
    if n_train < 2 or n_val < 2 or epochs < 1:
        raise ValueError("need n_train >= 2, n_val >= 2 and epochs >= 1")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    params = PreprocessParams(input_size=input_size)
    size = max(64, 2 * input_size)
    train_cases = list(generate_dataset(n_train, seed, size=size))
    val_cases = list(generate_dataset(n_val, seed + 1_000_003, size=size))
    train_x, train_y = tensors_from_cases(train_cases, params)
    val_x, val_y = tensors_from_cases(val_cases, params)
    network = build_network(arch)
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-3, weight_decay=1e-4)
    for epoch in range(epochs):
        losses = [
            train_step(network, optimizer, x, y)
            for x, y in batches(train_x, train_y, batch_size, rng)
        ]
        logger.info("demo epoch %d: mean training loss %.4f", epoch + 1, float(np.mean(losses)))
    refresh_batch_norm(network, batches(train_x, train_y, batch_size))
    collected = collect(network, batches(val_x, val_y, batch_size))
    temperature = calibrate_temperature(collected.fracture_logits, collected.fracture)
    metrics = metrics_from(collected, threshold=0.5, temperature=temperature)
    logger.info("demo validation metrics %s (temperature %.3f)", metrics, temperature)
    metadata = BundleMetadata(
        name=name,
        version=version,
        arch=arch,
        body_parts=BODY_PARTS,
        preprocess=params,
        thresholds=Thresholds(OperatingPoint(0.5, 0.35, 0.65)),
        temperature=temperature,
        training_manifest_sha256=manifest_sha256(train_cases, "models.synthetic"),
        metrics=metrics.as_dict(),
    )
    return save_bundle(directory, network, metadata)
