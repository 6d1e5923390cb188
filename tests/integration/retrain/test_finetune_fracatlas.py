"""A short fine-tuning run on a small FracAtlas subset beats the untrained network.

Fixed seed; the validation images are of the validation part (never trained on). Small sizes
(2 CPU cores): 96 training images at 192 pixels, three epochs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.finetune import FineTuneConfig, LocalisedArrays, fine_tune, validate
from models.network import build_network
from models.preprocess import PreprocessParams
from retrain.datasets.localised import LocalisedTensors, localised_tensors
from retrain.datasets.records import ImageRecord
from retrain.datasets.tensors import dataset_split

from helpers import fracatlas_root

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
PARAMS = PreprocessParams(input_size=192, stretch_after_voi=True)


def _subset(records: list[ImageRecord], n: int) -> list[ImageRecord]:
    fractured = [r for r in records if r.fracture][: n // 2]
    return fractured + [r for r in records if not r.fracture][: n - len(fractured)]


def _arrays(data: LocalisedTensors) -> LocalisedArrays:
    return LocalisedArrays(data.pixels, data.masks, data.mask_known, data.targets)


def test_fine_tuning_raises_validation_auc(tmp_path: Path) -> None:
    root = fracatlas_root()
    train = localised_tensors(
        _subset(dataset_split("fracatlas", root, "train"), 96), PARAMS, root=root, workers=2
    )
    val = localised_tensors(
        _subset(dataset_split("fracatlas", root, "validation"), 80), PARAMS, root=root, workers=2
    )
    torch.manual_seed(0)
    network = build_network("efficientnet_lite0", input_size=192, localise=True, pretrained=True)
    _, untrained, _ = validate(network, _arrays(val), 16)
    assert untrained is not None
    result = fine_tune(
        network,
        _arrays(train),
        _arrays(val),
        FineTuneConfig(
            epochs=3, warmup_epochs=1, batch_size=16, patience=3, device="cpu", progress=False
        ),
        checkpoint_dir=tmp_path,
    )
    assert result.best_auc is not None
    print(f"validation AUC untrained {untrained:.3f}, fine-tuned {result.best_auc:.3f}")
    assert result.best_auc > untrained + 0.05
