"""The committed demo bundle: it loads (hash checked) and separates held-out synthetic cases.

The held-out cases come from a seed no training command used (training used seeds 0 and 1,
``configs/training.json`` records the command). The full figure (1000 cases, bootstrap CI) is in
``models/bundles/xrayd-phantom/report/report.json``; this test re-measures a smaller sample.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from models.bundle import load_bundle, phantom_bundle_path
from models.decision import apply_temperature
from models.fit import float_batches
from models.metrics import roc_auc
from models.synthetic_data import synthetic_tensors
from models.training import collect

HELD_OUT_SEED = 20261123


def test_demo_bundle_loads_with_its_documented_identity() -> None:
    model = load_bundle(phantom_bundle_path())
    assert (model.info.name, model.metadata.arch) == ("xrayd-phantom", "resnet18_half")
    training = json.loads((phantom_bundle_path() / "configs" / "training.json").read_text())
    assert training["dataset"] == "synthetic" and training["seed"] == 0
    report = json.loads((phantom_bundle_path() / "report" / "report.json").read_text())
    assert report["n"] == 1000 and report["auc"] >= 0.95


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_demo_bundle_reaches_auc_095_on_held_out_synthetic_cases() -> None:
    torch.set_num_threads(2)
    model = load_bundle(phantom_bundle_path())
    data = synthetic_tensors(120, HELD_OUT_SEED + 1, model.metadata.preprocess, workers=2)
    collected = collect(model.network, float_batches(data, 32))
    p = apply_temperature(collected.fracture_logits, model.metadata.temperature)
    auc = roc_auc(p, collected.fracture)
    assert auc >= 0.95, auc
    assert float(np.mean((p >= 0.5) == (collected.fracture == 1))) >= 0.85
