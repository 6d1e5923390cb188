"""models.training: a step lowers the loss, evaluation, the data path, the demo bundle."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from models.bundle import load_bundle
from models.inference import Classifier
from models.labels import BODY_PARTS
from models.losses import Targets
from models.network import build_network
from models.preprocess import PreprocessParams, prepare
from models.synthetic import generate_case, to_dicom
from models.training import (
    batches,
    collect,
    evaluate,
    make_demo_bundle,
    manifest_sha256,
    metrics_from,
    refresh_batch_norm,
    tensors_from_cases,
    train_step,
)

torch.set_num_threads(1)


def _batch(n: int = 4, size: int = 32) -> tuple[torch.Tensor, Targets]:
    g = torch.Generator().manual_seed(0)
    pixels = torch.rand(n, 1, size, size, generator=g)
    targets = Targets(
        fracture=torch.tensor([1.0, 0.0] * (n // 2)),
        count=torch.tensor([1, 0] * (n // 2)),
        body_part=torch.tensor([-1] * n),  # missing labels must not stop training
        hardware=torch.full((n,), math.nan),
    )
    return pixels, targets


def test_train_step_decreases_the_loss_on_a_fixed_batch() -> None:
    torch.manual_seed(0)
    net = build_network("resnet18")
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    pixels, targets = _batch()
    losses = [train_step(net, optimizer, pixels, targets) for _ in range(6)]
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.5 * losses[0]


def test_evaluate_reports_metrics_from_collected_outputs() -> None:
    torch.manual_seed(0)
    net = build_network("resnet18")
    pixels, targets = _batch(6)
    metrics = evaluate(net, batches(pixels, targets, 4))
    assert metrics.n == 6
    assert metrics.fracture_auc is not None and 0.0 <= metrics.fracture_auc <= 1.0
    assert metrics.sensitivity is not None and metrics.specificity is not None
    assert metrics.count_accuracy is not None
    assert metrics.body_part_accuracy is None  # no body-part labels at all
    assert metrics.hardware_auc is None
    assert metrics.loss > 0
    collected = collect(net, batches(pixels, targets, 4))
    # Everything called positive at threshold 0: sensitivity 1, specificity 0.
    forced = metrics_from(collected, threshold=0.0)
    assert (forced.sensitivity, forced.specificity) == (1.0, 0.0)
    assert set(metrics.as_dict()) >= {"fracture_auc", "sensitivity", "n"}


def test_batches_cover_every_sample_once() -> None:
    pixels, targets = _batch(6)
    seen = [b[1].fracture for b in batches(pixels, targets, 4, np.random.default_rng(0))]
    assert [len(t) for t in seen] == [4, 2]
    assert float(torch.cat(seen).sum()) == float(targets.fracture.sum())


def test_refresh_batch_norm_matches_train_mode_statistics() -> None:
    torch.manual_seed(0)
    net = build_network("resnet18")
    pixels, targets = _batch(4)
    refresh_batch_norm(net, batches(pixels, targets, 4))
    bn = net.backbone.get_submodule("bn1")
    conv = net.backbone.get_submodule("conv1")
    assert isinstance(bn, torch.nn.BatchNorm2d)
    assert not net.training and bn.momentum == pytest.approx(0.1)
    with torch.no_grad():
        first = conv(pixels)
    assert bn.running_mean is not None
    assert torch.allclose(bn.running_mean, first.mean(dim=(0, 2, 3)), atol=1e-5)


def test_tensors_from_cases_use_the_production_preprocessing() -> None:
    cases = [generate_case(1, 64, fracture=True), generate_case(2, 64, fracture=False)]
    params = PreprocessParams(input_size=32)
    pixels, targets = tensors_from_cases(cases, params)
    assert pixels.shape == (2, 1, 32, 32) and pixels.dtype == torch.float32
    assert np.array_equal(pixels[0, 0].numpy(), prepare(to_dicom(cases[0]), params).pixels)
    assert targets.fracture.tolist() == [1.0, 0.0]
    assert targets.body_part.tolist() == [BODY_PARTS.index(c.body_part) for c in cases]
    assert manifest_sha256(cases, "g") != manifest_sha256(cases[:1], "g")
    assert manifest_sha256(cases, "g") == manifest_sha256(list(cases), "g")


def test_demo_bundle_trains_saves_and_loads(tmp_path: Path) -> None:
    info = make_demo_bundle(tmp_path / "demo", n_train=4, n_val=4, epochs=1, input_size=32)
    loaded = load_bundle(tmp_path / "demo")
    assert loaded.info.sha256 == info.sha256
    meta = loaded.metadata
    assert meta.arch == "resnet18" and meta.input_size == 32
    assert meta.temperature > 0 and len(meta.training_manifest_sha256) == 64
    assert meta.metrics["n"] == 4.0 and "fracture_auc" in meta.metrics
    image = prepare(to_dicom(generate_case(9, 64)), meta.preprocess)
    (prediction,) = Classifier(loaded).predict([image])
    assert 0.0 <= prediction.fracture_probability <= 1.0
    assert prediction.model_name == "xrayd-phantom"
