"""The training loop: AdamW, one-cycle learning rate, MONAI augmentation, early stopping on AUC.

``fit`` trains a :class:`~models.network.MultiTaskNet` on labelled tensors (any dataset loader
produces them), evaluates the fracture AUC on the validation tensors after every epoch, and
returns the network with the weights of its best epoch. Progress bars (tqdm) show epochs and
batches when ``progress`` is on; every epoch is also logged.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from monai.data.dataloader import DataLoader
from monai.transforms.compose import Compose
from monai.transforms.intensity.array import RandAdjustContrast, RandGaussianNoise
from monai.transforms.spatial.array import RandAffine, RandFlip
from torch import Tensor
from torch.utils.data import Dataset
from tqdm import tqdm

from models.losses import Targets, multitask_loss
from models.network import MultiTaskNet, resolve_device
from models.synthetic_data import LabelledTensors
from models.training import Batch, collect, metrics_from

logger = logging.getLogger(__name__)

__all__ = ["EpochRecord", "FitConfig", "FitResult", "augmentation", "fit", "float_batches"]

Sample = tuple[Tensor, Tensor, Tensor, Tensor, Tensor]


@dataclass(frozen=True)
class FitConfig:
    """How to train. ``workers``: DataLoader processes (0 = in the training process)."""

    epochs: int = 40
    batch_size: int = 32
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 8
    seed: int = 0
    augment: bool = True
    workers: int = 0
    device: str = "auto"
    progress: bool = True

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 1 or self.workers < 0:
            raise ValueError("epochs, batch_size and patience must be positive, workers >= 0")
        if not self.learning_rate > 0 or self.weight_decay < 0:
            raise ValueError("learning_rate must be positive and weight_decay non-negative")


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    train_loss: float
    val_loss: float
    val_auc: float | None
    learning_rate: float


@dataclass(frozen=True, eq=False)
class FitResult:
    """The network with its best epoch's weights (eval mode), and the history."""

    network: MultiTaskNet
    best_epoch: int
    best_auc: float | None
    history: tuple[EpochRecord, ...]
    stopped_early: bool


def augmentation(input_size: int) -> Compose:
    """Geometric and intensity augmentation that keeps a radiograph a plausible radiograph.

    Left-right flips (laterality does not change a fracture label), small rotations, scaling
    and shifts with zero (black) padding like the preprocessing's, contrast (gamma) changes and
    a little noise. Rotations stay small: fracture lines are thin and interpolation blurs them.
    """
    shift = 0.05 * input_size
    return Compose(
        [
            RandFlip(prob=0.5, spatial_axis=1),
            RandAffine(
                prob=0.7,
                rotate_range=(0.15,),
                scale_range=(0.1, 0.1),
                translate_range=(shift, shift),
                padding_mode="zeros",
            ),
            RandAdjustContrast(prob=0.3, gamma=(0.8, 1.25)),
            RandGaussianNoise(prob=0.3, std=0.01),
        ]
    )


class _Samples(Dataset[Sample]):
    def __init__(self, data: LabelledTensors, transform: Compose | None) -> None:
        self.data = data
        self.transform = transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> Sample:
        pixels = self.data.pixels[index].float()
        if self.transform is not None:
            pixels = torch.as_tensor(self.transform(pixels)).float().clamp_(0.0, 1.0)
        t = self.data.targets
        return pixels, t.fracture[index], t.count[index], t.body_part[index], t.hardware[index]


def float_batches(data: LabelledTensors, batch_size: int) -> Iterator[Batch]:
    """``data`` in order, as float32 batches (evaluation)."""
    t = data.targets
    for start in range(0, len(data), batch_size):
        part = slice(start, start + batch_size)
        yield (
            data.pixels[part].float(),
            Targets(t.fracture[part], t.count[part], t.body_part[part], t.hardware[part]),
        )


def fit(
    network: MultiTaskNet, train: LabelledTensors, val: LabelledTensors, config: FitConfig
) -> FitResult:
    """Train ``network`` in place and return it with its best epoch's weights.

    The best epoch is the one with the highest validation fracture AUC (the lowest validation
    loss when the validation set has one class only). Training stops after ``patience``
    epochs without improvement.
    """
    torch.manual_seed(config.seed)
    np.random.seed(config.seed % 2**32)
    device = resolve_device(config.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    network.to(device)
    input_size = int(train.pixels.shape[-1])
    transform = augmentation(input_size) if config.augment else None
    if transform is not None:
        transform.set_random_state(seed=config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    loader = DataLoader(
        _Samples(train, transform),
        batch_size=config.batch_size,
        shuffle=True,
        drop_last=len(train) > config.batch_size,
        num_workers=config.workers,
        generator=generator,
        persistent_workers=config.workers > 0,
    )
    optimizer = torch.optim.AdamW(
        network.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    steps = config.epochs * len(loader)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=config.learning_rate,
        total_steps=steps,
        pct_start=min(0.3, 2 / config.epochs),
    )
    history: list[EpochRecord] = []
    best_score, best_epoch = -math.inf, 0
    best_state = copy.deepcopy(network.state_dict())
    epochs = tqdm(
        range(1, config.epochs + 1), desc="epochs", unit="epoch", disable=not config.progress
    )
    stopped = False
    for epoch in epochs:
        network.train()
        losses: list[float] = []
        for pixels, fracture, count, part, hardware in tqdm(
            loader, desc=f"epoch {epoch}", unit="batch", leave=False, disable=not config.progress
        ):
            targets = Targets(fracture, count, part, hardware).to(device)
            optimizer.zero_grad(set_to_none=True)
            loss = multitask_loss(network(pixels.to(device, non_blocking=True)), targets)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            schedule.step()
            losses.append(float(loss.detach()))
        metrics = metrics_from(collect(network, float_batches(val, 2 * config.batch_size)))
        record = EpochRecord(
            epoch=epoch,
            train_loss=float(np.mean(losses)) if losses else math.nan,
            val_loss=metrics.loss,
            val_auc=metrics.fracture_auc,
            learning_rate=float(schedule.get_last_lr()[0]),
        )
        history.append(record)
        score = record.val_auc if record.val_auc is not None else -record.val_loss
        logger.info(
            "epoch %d: train loss %.4f, validation loss %.4f, AUC %s",
            epoch,
            record.train_loss,
            record.val_loss,
            "n/a" if record.val_auc is None else f"{record.val_auc:.4f}",
        )
        epochs.set_postfix(loss=f"{record.train_loss:.3f}", auc=f"{record.val_auc or 0:.3f}")
        if score > best_score + 1e-4:
            best_score, best_epoch = score, epoch
            best_state = copy.deepcopy(network.state_dict())
        elif epoch - best_epoch >= config.patience:
            logger.info("no improvement for %d epochs: stopping", config.patience)
            stopped = True
            break
    network.load_state_dict(best_state)
    network.eval()
    best = history[best_epoch - 1] if best_epoch else history[-1]
    return FitResult(network, best.epoch, best.val_auc, tuple(history), stopped)
