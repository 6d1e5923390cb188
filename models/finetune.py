"""Fine-tuning a pretrained backbone on real radiographs, with checkpoints and resume.

The recipe (each step measured on FracAtlas, see the model card):

* **Heads first**: ``warmup_epochs`` with the whole backbone frozen train only the heads, so
  the random heads do not wreck the ImageNet features; then the backbone is unfrozen except
  its first ``frozen_stages`` stages (stem and early high-resolution blocks: generic edges,
  most of the CPU cost of a backward pass), whose batch-norm statistics stay fixed too.
* **Class imbalance**: the fracture loss weighs positives by ``pos_weight`` (negatives /
  positives of the training set); the learned logit is then shifted back by
  ``log(pos_weight)`` (logit adjustment) so that the probabilities are not inflated before
  temperature calibration.
* **Augmentation fit for radiographs**, on whole batches in torch: left-right flips, small
  rotations, scaling and shifts with black padding (image and box mask moved together),
  gamma and a little noise. No vertical flips, no colour.
* **Localisation**: the network's 1x1 localisation head learns, per feature-map cell, the
  share of the cell inside a fracture box (images with annotated boxes, and fracture-free
  images as all-zero maps; fractured images without boxes are masked out).
* **Early stopping** on validation AUC (``patience`` epochs), cosine learning rate after the
  warm-up, AdamW, optional bfloat16 autocast on CPUs that have it.
* **Checkpoints**: after every epoch ``checkpoint.pt`` (weights, optimiser, schedule, history,
  the best weights so far) is written atomically; ``resume`` continues from it bit for bit
  (each epoch's shuffling, augmentation, dropout and drop-connect are seeded by ``seed`` and
  the epoch number; with the same thread count).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.losses import Targets, head_losses
from models.metrics import roc_auc
from models.network import MultiTaskNet, build_network, resolve_device

logger = logging.getLogger(__name__)

__all__ = [
    "FineTuneConfig",
    "FineTuneResult",
    "InterruptedTraining",
    "LocalisedArrays",
    "augment_batch",
    "fine_tune",
    "localisation_targets",
    "seeded_network",
    "torch_threads",
]

CHECKPOINT = "checkpoint.pt"


class InterruptedTraining(Exception):
    """Training stopped after ``epoch`` as asked (``stop_after``); the checkpoint is saved."""

    def __init__(self, epoch: int) -> None:
        super().__init__(f"stopped after epoch {epoch}")
        self.epoch = epoch


@dataclass(frozen=True, eq=False)
class LocalisedArrays:
    """Training or validation images: ``pixels`` uint8 (N, 1, S, S) (0..255 = [0, 1]),
    ``masks`` uint8 (N, 1, S, S) fracture-box masks, ``mask_known`` bool (N,), ``targets``."""

    pixels: Tensor
    masks: Tensor
    mask_known: Tensor
    targets: Targets

    def __len__(self) -> int:
        return int(self.pixels.shape[0])


@dataclass(frozen=True)
class FineTuneConfig:
    epochs: int = 16
    warmup_epochs: int = 1
    batch_size: int = 16
    learning_rate: float = 4e-4
    head_learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    patience: int = 4
    frozen_stages: int = 3
    localisation_weight: float = 1.0
    seed: int = 0
    bf16: bool = False
    threads: int = 0
    device: str = "auto"
    progress: bool = True
    #: Stop (checkpointed, unfinished) after this epoch in this run; 0: run to the end.
    stop_after: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 2 or self.patience < 1:
            raise ValueError("epochs and patience must be positive, batch_size at least 2")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise ValueError("warmup_epochs must be in [0, epochs)")
        if self.learning_rate <= 0 or self.head_learning_rate <= 0 or self.weight_decay < 0:
            raise ValueError("learning rates must be positive, weight_decay non-negative")
        if self.frozen_stages < 0 or self.threads < 0:
            raise ValueError("frozen_stages and threads must not be negative")


@dataclass(frozen=True)
class EpochLog:
    epoch: int
    phase: str
    train_loss: float
    val_auc: float | None
    val_localisation_loss: float | None
    seconds: float
    learning_rate: float


@dataclass(frozen=True, eq=False)
class FineTuneResult:
    """The network with its best epoch's weights (logit-adjusted, eval mode)."""

    network: MultiTaskNet
    best_epoch: int
    best_auc: float | None
    history: tuple[EpochLog, ...]
    stopped_early: bool
    pos_weight: float
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def seeded_network(arch: str, input_size: int, *, seed: int, pretrained: bool) -> MultiTaskNet:
    """The network to fine-tune (with the localisation head), its random heads seeded."""
    torch.manual_seed(seed)
    return build_network(arch, input_size=input_size, localise=True, pretrained=pretrained)


def torch_threads() -> int:
    """The number of threads torch computes with in this process."""
    return torch.get_num_threads()


def augment_batch(
    pixels: Tensor, masks: Tensor, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Augment float images (N, 1, S, S) in [0, 1] and their masks with one random draw per
    image: flip, rotation (+-10 degrees), scale (0.9-1.1), shift (+-5 %), gamma, noise."""
    n = pixels.shape[0]

    def uniform(low: float, high: float) -> Tensor:
        return torch.rand(n, generator=generator) * (high - low) + low

    angle = uniform(-10.0, 10.0) * math.pi / 180.0
    scale = uniform(0.9, 1.1)
    flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    tx, ty = uniform(-0.1, 0.1), uniform(-0.1, 0.1)  # in [-1, 1] units: +-5 % of the side
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1
    )
    grid = F.affine_grid(theta, list(pixels.shape), align_corners=False)
    out = F.grid_sample(pixels, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    moved = F.grid_sample(masks, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    gamma = torch.exp(uniform(math.log(0.8), math.log(1.25))).view(n, 1, 1, 1)
    out = out.clamp(0.0, 1.0).pow(gamma)
    noise = torch.randn(out.shape, generator=generator) * 0.01
    return (out + noise).clamp_(0.0, 1.0), (moved > 0.5).float()


def localisation_targets(masks: Tensor, cells: tuple[int, int]) -> Tensor:
    """The share of each feature-map cell inside a box: (N, 1, S, S) -> (N, h, w)."""
    return F.adaptive_avg_pool2d(masks.float(), cells).squeeze(1)


def _batches(n: int, size: int, generator: torch.Generator | None) -> Iterator[Tensor]:
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    stop = n - n % size if generator is not None and n > size else n
    for start in range(0, stop, size):
        yield order[start : start + size]


def _stages(network: MultiTaskNet, count: int) -> list[nn.Module]:
    """The first ``count`` stages of the backbone (stem included) that stay frozen."""
    backbone = network.backbone
    net = getattr(backbone, "net", None)
    if net is None or count == 0:
        return []
    return [net._conv_stem, net._bn0, *list(net._blocks)[:count]]


def _set_trainable(network: MultiTaskNet, backbone: bool, frozen: list[nn.Module]) -> None:
    for p in network.backbone.parameters():
        p.requires_grad_(backbone)
    for module in frozen:
        for p in module.parameters():
            p.requires_grad_(False)


def _train_mode(network: MultiTaskNet, backbone: bool, frozen: list[nn.Module]) -> None:
    network.train()
    if not backbone:
        network.backbone.eval()
    for module in frozen:
        module.eval()


def _loss(
    network: MultiTaskNet,
    pixels: Tensor,
    targets: Targets,
    loc_target: Tensor | None,
    loc_known: Tensor,
    pos_weight: Tensor,
    config: FineTuneConfig,
) -> Tensor:
    out = network(pixels)
    fracture_loss = F.binary_cross_entropy_with_logits(
        out.fracture.float(), targets.fracture, pos_weight=pos_weight
    )
    parts = head_losses(out, targets)
    total = fracture_loss + 0.5 * parts["count"] + 0.3 * parts["body_part"]
    total = total + 0.25 * parts["hardware"]
    if out.localisation is not None and loc_target is not None and bool(loc_known.any()):
        logits = out.localisation.float()[loc_known]
        total = total + config.localisation_weight * F.binary_cross_entropy_with_logits(
            logits, loc_target[loc_known]
        )
    return total


@torch.no_grad()
def validate(
    network: MultiTaskNet, data: LocalisedArrays, batch_size: int, bf16: bool = False
) -> tuple[np.ndarray[Any, np.dtype[np.float64]], float | None, float | None]:
    """Fracture logits over ``data``, their AUC, and the localisation loss (mean BCE)."""
    network.eval()
    device = next(network.parameters()).device
    logits: list[Tensor] = []
    loc_total, loc_n = 0.0, 0
    for index in _batches(len(data), batch_size, None):
        pixels = data.pixels[index].float().div_(255.0).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = network(pixels)
        logits.append(out.fracture.float().cpu())
        known = data.mask_known[index]
        if out.localisation is not None and bool(known.any()):
            target = localisation_targets(data.masks[index], tuple(out.localisation.shape[1:]))
            loc = F.binary_cross_entropy_with_logits(
                out.localisation.float().cpu()[known], target[known], reduction="sum"
            )
            loc_total += float(loc)
            loc_n += int(target[known].numel())
    scores = torch.cat(logits).double().numpy()
    labels = data.targets.fracture.double().numpy()
    keep = labels >= 0
    auc = None
    if (labels[keep] == 1).any() and (labels[keep] == 0).any():
        auc = roc_auc(scores[keep], labels[keep])
    return scores, auc, (loc_total / loc_n if loc_n else None)


#: Settings that do not change what is trained (a run may resume with other values).
_RUNTIME_KEYS = frozenset({"threads", "device", "progress", "stop_after"})


def _recipe(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in _RUNTIME_KEYS}


def _save(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def fine_tune(
    network: MultiTaskNet,
    train: LocalisedArrays,
    val: LocalisedArrays,
    config: FineTuneConfig,
    *,
    checkpoint_dir: Path,
    resume: bool = False,
    report: Callable[[str], None] | None = None,
) -> FineTuneResult:
    """Fine-tune ``network`` (see the module docstring); returns the best epoch's network."""
    say = report or (lambda line: logger.info("%s", line))
    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    bf16 = config.bf16 and device.type == "cpu"
    network.to(device)
    if device.type == "cpu":
        network.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    labels = train.targets.fracture
    positives = float((labels == 1).sum())
    negatives = float((labels == 0).sum())
    if positives == 0 or negatives == 0:
        raise ValueError("the training set needs fractured and normal images")
    pos_weight = negatives / positives
    pos_weight_t = torch.tensor(pos_weight, device=device)
    frozen = _stages(network, config.frozen_stages)
    heads = [p for n, p in network.named_parameters() if not n.startswith("backbone.")]
    body = list(network.backbone.parameters())
    optimizer = torch.optim.AdamW(
        [
            {"params": heads, "lr": config.head_learning_rate},
            {"params": body, "lr": config.learning_rate},
        ],
        weight_decay=config.weight_decay,
    )
    steps_per_epoch = max(1, len(train) // config.batch_size)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    path = checkpoint_dir / CHECKPOINT
    history: list[EpochLog] = []
    best_auc, best_epoch = -math.inf, 0
    best_state = {k: v.detach().clone() for k, v in network.state_dict().items()}
    start_epoch, spent = 1, 0.0
    if resume and path.is_file():
        saved = torch.load(path, map_location=device, weights_only=False)
        if _recipe(saved["config"]) != _recipe(asdict(config)):
            raise ValueError(f"{path} was written with another recipe: {_recipe(saved['config'])}")
        network.load_state_dict(saved["network"])
        optimizer.load_state_dict(saved["optimizer"])
        history = [EpochLog(**h) for h in saved["history"]]
        best_auc, best_epoch = saved["best_auc"], saved["best_epoch"]
        best_state = saved["best_state"]
        start_epoch, spent = saved["epoch"] + 1, saved["seconds"]
        say(f"resumed from {path} after epoch {saved['epoch']} (best {best_epoch})")
    with torch.no_grad():
        network.eval()
        shape = network.backbone(train.pixels[:1].float().to(device)).shape
        cells = (int(shape[2]), int(shape[3]))
    stopped = False
    if history and history[-1].epoch - best_epoch >= config.patience:
        stopped = True
        start_epoch = config.epochs + 1
    for epoch in range(start_epoch, config.epochs + 1):
        began = time.monotonic()
        warm = epoch <= config.warmup_epochs
        _set_trainable(network, not warm, frozen)
        _train_mode(network, not warm, frozen)
        generator = torch.Generator().manual_seed(config.seed * 1_000_003 + epoch)
        # Drop-connect and dropout draw from torch's global generator: seed it per epoch too,
        # so that a resumed run draws what an uninterrupted one would.
        torch.manual_seed(config.seed * 1_000_003 + epoch)
        losses: list[float] = []
        batches = list(_batches(len(train), config.batch_size, generator))
        for step, index in enumerate(batches, start=1):
            if warm:
                lr_scale = 1.0
            else:
                done = (epoch - config.warmup_epochs - 1) * steps_per_epoch + step
                total = (config.epochs - config.warmup_epochs) * steps_per_epoch
                lr_scale = 0.5 * (1.0 + math.cos(math.pi * min(done / total, 1.0)))
            optimizer.param_groups[0]["lr"] = config.head_learning_rate * max(lr_scale, 0.02)
            optimizer.param_groups[1]["lr"] = (
                0.0 if warm else config.learning_rate * max(lr_scale, 0.02)
            )
            pixels, masks = augment_batch(
                train.pixels[index].float().div_(255.0), train.masks[index].float(), generator
            )
            targets = Targets(
                train.targets.fracture[index],
                train.targets.count[index],
                train.targets.body_part[index],
                train.targets.hardware[index],
            ).to(device)
            pixels = pixels.to(device).contiguous(memory_format=torch.channels_last)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loc_target = localisation_targets(masks, cells)
                loss = _loss(
                    network,
                    pixels,
                    targets,
                    loc_target.to(device),
                    train.mask_known[index].to(device),
                    pos_weight_t,
                    config,
                )
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            losses.append(float(loss.detach()))
            if config.progress and (step % 20 == 0 or step == len(batches)):
                rate = (time.monotonic() - began) / step
                say(
                    f"epoch {epoch}/{config.epochs} step {step}/{len(batches)} "
                    f"loss {np.mean(losses[-20:]):.4f} ({rate:.1f} s/batch, epoch ETA "
                    f"{rate * (len(batches) - step) / 60:.1f} min)"
                )
        _, auc, loc_loss = validate(network, val, 2 * config.batch_size, bf16)
        seconds = time.monotonic() - began
        spent += seconds
        entry = EpochLog(
            epoch=epoch,
            phase="heads" if warm else "fine-tune",
            train_loss=float(np.mean(losses)) if losses else math.nan,
            val_auc=auc,
            val_localisation_loss=loc_loss,
            seconds=seconds,
            learning_rate=float(optimizer.param_groups[1]["lr"]),
        )
        history.append(entry)
        score = auc if auc is not None else -math.inf
        if score > best_auc + 1e-4:
            best_auc, best_epoch = score, epoch
            best_state = {k: v.detach().clone() for k, v in network.state_dict().items()}
        say(
            f"epoch {epoch} ({entry.phase}): train loss {entry.train_loss:.4f}, validation AUC "
            f"{'n/a' if auc is None else f'{auc:.4f}'}, localisation loss "
            f"{'n/a' if loc_loss is None else f'{loc_loss:.4f}'}, {seconds / 60:.1f} min "
            f"(best epoch {best_epoch})"
        )
        stopped = epoch - best_epoch >= config.patience and epoch < config.epochs
        _save(
            path,
            {
                "config": asdict(config),
                "epoch": epoch,
                "network": network.state_dict(),
                "optimizer": optimizer.state_dict(),
                "history": [asdict(h) for h in history],
                "best_auc": best_auc,
                "best_epoch": best_epoch,
                "best_state": best_state,
                "seconds": spent,
            },
        )
        if stopped:
            say(f"no improvement for {config.patience} epochs: stopping")
            break
        if config.stop_after and epoch >= config.stop_after and epoch < config.epochs:
            say(f"stopping after epoch {epoch} as asked; --resume continues")
            raise InterruptedTraining(epoch)
    network.load_state_dict(best_state)
    with torch.no_grad():
        network.fracture_head.bias.sub_(math.log(pos_weight))
    network.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    network.eval()
    return FineTuneResult(
        network=network,
        best_epoch=best_epoch,
        best_auc=None if best_auc == -math.inf else best_auc,
        history=tuple(history),
        stopped_early=stopped,
        pos_weight=pos_weight,
        seconds=spent,
    )
