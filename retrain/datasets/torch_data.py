"""Records as torch data: a lazy ``Dataset`` with an augmentation hook, and in-memory tensors.

``RadiographDataset`` prepares each image when it is asked for (no cache), so it suits large
datasets and ``DataLoader`` worker processes; :func:`collate` turns its samples into the
``(pixels (N, 1, S, S), Targets)`` batches that ``models.training`` consumes. For small sets
(validation, smoke runs) :func:`tensors_from_records` prepares everything once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from models.losses import Targets
from models.preprocess import PreprocessParams
from retrain.datasets.images import prepare_record
from retrain.datasets.records import ImageRecord, LabelCodes

__all__ = [
    "Augment",
    "RadiographDataset",
    "Sample",
    "collate",
    "targets_from",
    "tensors_from_records",
]

#: A transform of one ``(1, S, S)`` float32 tensor, e.g. a MONAI ``Compose`` of array transforms.
Augment = Callable[[Tensor], Any]
#: One training sample: pixels ``(1, S, S)`` and the image's label codes.
Sample = tuple[Tensor, LabelCodes]


def targets_from(codes: Sequence[LabelCodes]) -> Targets:
    """Stack label codes into :class:`models.losses.Targets` (-1 stays "missing")."""
    return Targets(
        fracture=torch.tensor([c.fracture for c in codes], dtype=torch.float32),
        count=torch.tensor([c.count for c in codes], dtype=torch.int64),
        body_part=torch.tensor([c.body_part for c in codes], dtype=torch.int64),
        hardware=torch.tensor([c.hardware for c in codes], dtype=torch.float32),
    )


def collate(samples: Sequence[Sample]) -> tuple[Tensor, Targets]:
    """``DataLoader`` ``collate_fn``: samples -> ``(pixels (N, 1, S, S), Targets)``."""
    if not samples:
        raise ValueError("empty batch")
    return torch.stack([pixels for pixels, _ in samples]), targets_from([c for _, c in samples])


class RadiographDataset(Dataset[Sample]):
    """Prepared pixels ``(1, S, S)`` float32 and label codes of each record, on demand.

    ``augment`` (training only) receives the ``(1, S, S)`` tensor and returns a tensor or array
    of the same shape (MONAI array transforms do; a ``MetaTensor`` is turned into a plain
    tensor). Errors reading an image are :class:`retrain.datasets.errors.DatasetError`.
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        params: PreprocessParams,
        augment: Augment | None = None,
    ) -> None:
        self.records = tuple(records)
        self.params = params
        self.augment = augment

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Sample:
        pixels, codes = prepare_record(self.records[index], self.params)
        image = torch.from_numpy(np.array(pixels, dtype=np.float32)).unsqueeze(0)
        if self.augment is not None:
            out = self.augment(image)
            augmented = torch.as_tensor(out, dtype=torch.float32)
            image = augmented.as_subclass(Tensor).contiguous()
            if image.shape != (1, self.params.input_size, self.params.input_size):
                raise ValueError(
                    f"augment changed the shape to {tuple(image.shape)}; expected "
                    f"(1, {self.params.input_size}, {self.params.input_size})"
                )
        return image, codes


def tensors_from_records(
    records: Sequence[ImageRecord], params: PreprocessParams
) -> tuple[Tensor, Targets]:
    """Every record prepared once: pixels ``(N, 1, S, S)`` float32 and their Targets."""
    if not records:
        raise ValueError("no records")
    return collate([RadiographDataset(records, params)[i] for i in range(len(records))])
