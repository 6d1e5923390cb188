"""The masked multi-task loss: missing labels (``-1`` or NaN) contribute nothing.

A data set with only fracture labels still trains: the other heads then get a zero loss
(and zero gradient) instead of an error or a made-up label.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from models.network import NetworkOutput

__all__ = ["DEFAULT_WEIGHTS", "Targets", "head_losses", "multitask_loss"]

#: Weight of each head in the total loss.
DEFAULT_WEIGHTS: dict[str, float] = {
    "fracture": 1.0,
    "count": 0.5,
    "body_part": 0.5,
    "hardware": 0.25,
}


@dataclass(frozen=True, eq=False)
class Targets:
    """Labels of a batch, ``-1`` (or NaN for the binary ones) where missing.

    ``fracture`` and ``hardware``: float (N,) with 0/1; ``count``: int64 (N,) indexing
    :data:`models.labels.COUNT_CLASSES`; ``body_part``: int64 (N,) indexing the body parts.
    """

    fracture: Tensor
    count: Tensor
    body_part: Tensor
    hardware: Tensor

    def __post_init__(self) -> None:
        sizes = {t.shape for t in (self.fracture, self.count, self.body_part, self.hardware)}
        if len(sizes) != 1 or len(next(iter(sizes))) != 1:
            raise ValueError(f"targets must be 1-D tensors of one length, got {sizes}")

    def __len__(self) -> int:
        return int(self.fracture.shape[0])

    def to(self, device: torch.device) -> Targets:
        return Targets(
            self.fracture.to(device),
            self.count.to(device),
            self.body_part.to(device),
            self.hardware.to(device),
        )


def _binary(logits: Tensor, labels: Tensor) -> Tensor:
    labels = labels.to(logits.dtype)
    present = ~torch.isnan(labels) & (labels >= 0)
    if not bool(present.any()):
        return (logits * 0.0).sum()  # zero, but still part of the graph
    return F.binary_cross_entropy_with_logits(logits[present], labels[present])


def _categorical(logits: Tensor, labels: Tensor) -> Tensor:
    present = labels >= 0
    if not bool(present.any()):
        return (logits * 0.0).sum()
    if int(labels.max()) >= logits.shape[1]:
        raise ValueError(f"label {int(labels.max())} outside {logits.shape[1]} classes")
    return F.cross_entropy(logits[present], labels[present].long())


def head_losses(outputs: NetworkOutput, targets: Targets) -> dict[str, Tensor]:
    """The mean loss of each head over the samples that carry its label (0 if none do)."""
    return {
        "fracture": _binary(outputs.fracture, targets.fracture),
        "count": _categorical(outputs.count, targets.count),
        "body_part": _categorical(outputs.body_part, targets.body_part),
        "hardware": _binary(outputs.hardware, targets.hardware),
    }


def multitask_loss(
    outputs: NetworkOutput, targets: Targets, weights: dict[str, float] | None = None
) -> Tensor:
    """Weighted sum of :func:`head_losses` (weights default to :data:`DEFAULT_WEIGHTS`)."""
    chosen = DEFAULT_WEIGHTS if weights is None else weights
    parts = head_losses(outputs, targets)
    total = parts["fracture"] * chosen.get("fracture", 0.0)
    for name in ("count", "body_part", "hardware"):
        total = total + parts[name] * chosen.get(name, 0.0)
    return total
