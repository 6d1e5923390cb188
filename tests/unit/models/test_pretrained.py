"""models.efficientnet_lite: the ImageNet weights load completely, by a checked key map."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from models.efficientnet_lite import (
    PRETRAINED_SHA256,
    PretrainedWeightsError,
    build_lite0,
    load_pretrained,
    pretrained_path,
    pretrained_state,
)
from models.network import build_network

torch.set_num_threads(1)


def test_every_backbone_tensor_comes_from_the_file() -> None:
    features = build_lite0(64)
    state = pretrained_state(features)
    ours = features.net.state_dict()
    assert set(state) == set(ours)  # nothing missing
    stored = torch.load(pretrained_path(), map_location="cpu", weights_only=True)
    # Nothing left over but the ImageNet classifier.
    assert len(stored) - 2 == len(state) == 294
    assert "_fc.weight" in stored and "_fc.weight" not in state
    # One block by both names: the key map only drops the stage index.
    a = state["_blocks.3.5._depthwise_conv.weight"]
    assert torch.equal(a, stored["_blocks.5._depthwise_conv.weight"])
    # The grey stem is the sum of the RGB kernels (a grey image repeated in R, G and B).
    assert torch.allclose(
        state["_conv_stem.weight"], stored["_conv_stem.weight"].sum(dim=1, keepdim=True)
    )
    assert load_pretrained(features) == 294


def test_pretrained_network_differs_from_a_random_one_and_is_deterministic() -> None:
    a = build_network("efficientnet_lite0", input_size=64, pretrained=True)
    b = build_network("efficientnet_lite0", input_size=64, pretrained=True)
    key = "backbone.net._blocks.6.15._project_conv.weight"
    assert torch.equal(a.state_dict()[key], b.state_dict()[key])
    random = build_network("efficientnet_lite0", input_size=64)
    assert not torch.equal(a.state_dict()[key], random.state_dict()[key])


def test_an_altered_file_is_refused_before_loading(tmp_path: Path) -> None:
    copy = tmp_path / "weights.pth"
    shutil.copyfile(pretrained_path(), copy)
    with copy.open("r+b") as f:
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 1]))
    with pytest.raises(PretrainedWeightsError, match=PRETRAINED_SHA256):
        pretrained_state(build_lite0(64), copy)
    with pytest.raises(PretrainedWeightsError, match="not found"):
        pretrained_state(build_lite0(64), tmp_path / "missing.pth")


def test_relu6_and_no_squeeze_excitation() -> None:
    features = build_lite0(64)
    block = features.net._blocks[1][1]
    assert isinstance(block._swish, torch.nn.ReLU6) and not block.has_se
    out = features(torch.rand(1, 1, 64, 64))
    assert float(out.min()) >= 0.0 and float(out.max()) <= 6.0
