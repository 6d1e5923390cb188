"""Bundles with float16 weights: half the size, and they load as the rounded network."""

from __future__ import annotations

from pathlib import Path

import torch

from models.bundle import WEIGHTS_PATH, load_bundle, round_to_half, save_bundle
from models.bundle_metadata import BundleMetadata
from models.decision import OperatingPoint, Thresholds
from models.labels import BODY_PARTS
from models.network import build_network
from models.preprocess import PreprocessParams

torch.set_num_threads(1)


def _metadata() -> BundleMetadata:
    return BundleMetadata(
        name="half",
        version="1",
        arch="resnet18_half",
        body_parts=BODY_PARTS,
        preprocess=PreprocessParams(input_size=64),
        thresholds=Thresholds(OperatingPoint(0.5, 0.4, 0.6)),
    )


def test_half_weights_load_as_the_rounded_network(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = build_network("resnet18_half").eval()
    save_bundle(tmp_path / "full", net, _metadata())
    round_to_half(net)
    save_bundle(tmp_path / "half", net, _metadata(), half=True)
    full_size = (tmp_path / "full" / WEIGHTS_PATH).stat().st_size
    half_size = (tmp_path / "half" / WEIGHTS_PATH).stat().st_size
    assert half_size < 0.6 * full_size
    loaded = load_bundle(tmp_path / "half")
    assert all(p.dtype == torch.float32 for p in loaded.network.parameters())
    x = torch.rand(3, 1, 64, 64)
    with torch.inference_mode():
        a, b = net(x), loaded.network(x)
    assert torch.equal(a.fracture, b.fracture) and torch.equal(a.body_part, b.body_part)


def test_round_to_half_changes_values_only_below_float16_precision() -> None:
    torch.manual_seed(1)
    net = build_network("resnet18_half")
    before = [p.detach().clone() for p in net.parameters()]
    round_to_half(net)
    for old, new in zip(before, net.parameters(), strict=True):
        assert torch.equal(new, old.half().float())
        assert torch.allclose(new, old, rtol=1e-3, atol=1e-7)
