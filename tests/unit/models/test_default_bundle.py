"""The default bundle: the real model, and it says what it was trained on and under which licence.

Its measured accuracy is in ``docs/model-card.md`` and ``report/`` beside the weights; these
tests check what ships, not the figures (those need the data set).
"""

from __future__ import annotations

import json

import numpy as np
import torch

from models.bundle import DEFAULT_BUNDLE, default_bundle_path, load_bundle
from models.inference import Classifier
from models.labels import Decision
from models.plain_image import prepare_array

torch.set_num_threads(1)


def test_the_default_bundle_loads_and_names_its_data_and_licence() -> None:
    model = load_bundle(default_bundle_path())  # weights sha256 checked
    meta = model.metadata
    assert model.info.name == DEFAULT_BUNDLE and meta.arch == "efficientnet_lite0"
    assert meta.localisation_head and meta.preprocess.stretch_after_voi
    assert "FracAtlas" in meta.training_data["dataset"]
    assert meta.training_data["licence"] == "CC BY 4.0"
    assert "Abedeen" in meta.training_data["attribution"]
    assert "doi:10.1038/s41597-023-02432-4" in meta.training_data["attribution"]
    assert "ImageNet" in meta.pretrained
    point = meta.thresholds.default
    assert 0.0 < point.indeterminate_low <= point.threshold <= point.indeterminate_high < 1.0
    assert meta.metrics["target_sensitivity"] == 0.9
    training = json.loads((default_bundle_path() / "configs" / "training.json").read_text())
    assert training["command"][:2] == ["xrayd", "train"] and training["dataset"] == "fracatlas"
    assert training["training_seconds"] > 0
    assert (default_bundle_path() / "report" / "report.md").is_file()


def test_the_default_model_runs_and_draws_boxes_only_when_not_absent() -> None:
    model = load_bundle(default_bundle_path())
    rng = np.random.default_rng(0)
    _, x = np.mgrid[0:400:1, 0:320:1]
    picture = 120 * np.exp(-(((x - 160) / 40.0) ** 2)) + rng.normal(40, 8, x.shape)
    prepared = prepare_array(np.clip(picture, 0, 255).astype(np.uint8), model.metadata.preprocess)
    (prediction,) = Classifier(model).predict([prepared])
    assert 0.0 <= prediction.fracture_probability <= 1.0
    assert prediction.heatmap.shape == (model.metadata.input_size,) * 2
    assert bool(prediction.boxes) == (prediction.decision is not Decision.ABSENT)
