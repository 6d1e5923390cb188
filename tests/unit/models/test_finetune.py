"""models.finetune: the recipe's mechanics on tiny tensors (fast, no dataset needed)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from models.finetune import (
    CHECKPOINT,
    FineTuneConfig,
    InterruptedTraining,
    LocalisedArrays,
    augment_batch,
    fine_tune,
    localisation_targets,
)
from models.losses import Targets
from models.network import build_network

torch.set_num_threads(1)
SIZE = 64


def _arrays(n: int, seed: int) -> LocalisedArrays:
    g = torch.Generator().manual_seed(seed)
    fracture = (torch.arange(n) % 3 == 0).float()
    pixels = (torch.rand(n, 1, SIZE, SIZE, generator=g) * 120).to(torch.uint8)
    masks = torch.zeros(n, 1, SIZE, SIZE, dtype=torch.uint8)
    for i in range(n):
        if fracture[i]:  # a bright bar where the "fracture" is, and its box
            pixels[i, 0, 20:30, 10:50] = 250
            masks[i, 0, 18:32, 8:52] = 1
    return LocalisedArrays(
        pixels=pixels,
        masks=masks,
        mask_known=torch.ones(n, dtype=torch.bool),
        targets=Targets(
            fracture=fracture,
            count=fracture.long(),
            body_part=torch.full((n,), 3, dtype=torch.int64),
            hardware=torch.zeros(n),
        ),
    )


def _config(**changes: object) -> FineTuneConfig:
    values: dict[str, object] = {
        "epochs": 3,
        "warmup_epochs": 1,
        "batch_size": 8,
        "patience": 3,
        "frozen_stages": 2,
        "device": "cpu",
        "progress": False,
    }
    values.update(changes)
    return FineTuneConfig(**values)  # type: ignore[arg-type]


def test_an_interrupted_run_resumes_to_the_same_weights(tmp_path: Path) -> None:
    train, val = _arrays(24, 0), _arrays(12, 1)

    def net() -> torch.nn.Module:
        torch.manual_seed(0)
        return build_network("efficientnet_lite0", input_size=SIZE, localise=True)

    whole = fine_tune(net(), train, val, _config(), checkpoint_dir=tmp_path / "a")
    with pytest.raises(InterruptedTraining):
        fine_tune(net(), train, val, _config(stop_after=2), checkpoint_dir=tmp_path / "b")
    assert torch.load(tmp_path / "b" / CHECKPOINT, weights_only=False)["epoch"] == 2
    resumed = fine_tune(net(), train, val, _config(), checkpoint_dir=tmp_path / "b", resume=True)
    assert [h.epoch for h in resumed.history] == [1, 2, 3]
    assert resumed.best_epoch == whole.best_epoch
    for key, value in whole.network.state_dict().items():
        assert torch.equal(value, resumed.network.state_dict()[key]), key
    # The fracture logit is shifted back by log(pos_weight): probabilities are not inflated.
    assert whole.pos_weight == pytest.approx(16 / 8)
    # A checkpoint of another recipe is refused, not silently mixed in.
    with pytest.raises(ValueError, match="another recipe"):
        fine_tune(
            net(),
            train,
            val,
            _config(learning_rate=1e-3),
            checkpoint_dir=tmp_path / "b",
            resume=True,
        )


def test_warm_up_trains_the_heads_only_and_early_stages_stay_frozen(tmp_path: Path) -> None:
    torch.manual_seed(0)
    network = build_network("efficientnet_lite0", input_size=SIZE, localise=True)
    before = {k: v.clone() for k, v in network.state_dict().items()}
    with pytest.raises(InterruptedTraining):
        fine_tune(
            network, _arrays(16, 0), _arrays(8, 1), _config(stop_after=1), checkpoint_dir=tmp_path
        )
    after = {k: v.clone() for k, v in network.state_dict().items()}
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(not k.startswith("backbone.") for k in changed)
    assert "localisation_head.weight" in changed and "fracture_head.weight" in changed
    with pytest.raises(InterruptedTraining):
        fine_tune(
            network,
            _arrays(16, 0),
            _arrays(8, 1),
            _config(stop_after=2),
            checkpoint_dir=tmp_path,
            resume=True,
        )
    later = network.state_dict()
    moved = {k for k in after if not torch.equal(after[k], later[k])}
    assert any(k.startswith("backbone.net._blocks.5.") for k in moved)  # unfrozen stage
    stem = (
        "backbone.net._conv_stem.",
        "backbone.net._bn0.",
        "backbone.net._blocks.0.",
        "backbone.net._blocks.1.",
    )
    assert not any(k.startswith(stem) for k in moved)  # frozen: weights and BN statistics


def test_augmentation_moves_image_and_mask_together() -> None:
    g = torch.Generator().manual_seed(0)
    pixels = torch.zeros(6, 1, SIZE, SIZE)
    masks = torch.zeros(6, 1, SIZE, SIZE)
    pixels[:, :, 10:20, 40:50] = 1.0
    masks[:, :, 10:20, 40:50] = 1.0
    out, moved = augment_batch(pixels, masks, g)
    assert out.shape == pixels.shape and moved.shape == masks.shape
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert set(moved.unique().tolist()) <= {0.0, 1.0}
    for i in range(6):
        inside = out[i, 0][moved[i, 0] > 0]
        outside = out[i, 0][moved[i, 0] == 0]
        assert inside.numel() > 0 and float(inside.mean()) > 0.6 > float(outside.mean()) + 0.5


def test_localisation_targets_are_cell_shares() -> None:
    masks = torch.zeros(1, 1, 8, 8)
    masks[0, 0, 0:4, 0:2] = 1
    target = localisation_targets(masks, (2, 2))
    assert target.shape == (1, 2, 2)
    assert torch.allclose(target[0], torch.tensor([[0.5, 0.0], [0.0, 0.0]]))
    assert math.isclose(float(target.sum()), 0.5)
