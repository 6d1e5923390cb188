"""Retraining on the real base data: ``[retrain] base_dataset = "fracatlas"`` starts from the
default (real) model, trains on FracAtlas images of the train part, and the gate compares the
candidate with the current model on a locked set of real validation-part images.

Tiny sizes (2 CPU cores): the point is that the loop keeps working with the real model and data.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.bundle import default_bundle_path, load_bundle
from retrain.gate import GateConfig
from retrain.run import BaseDataset, CalibrationSpec, RetrainInputs, run_retraining
from retrain.validation import ValidationParams, base_validation_cases

from helpers import fracatlas_root

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def test_retraining_from_the_default_model_on_fracatlas(tmp_path: Path) -> None:
    root = fracatlas_root()
    base = BaseDataset("fracatlas", root, n_train=24, seed=3)
    cases = base_validation_cases(base, ValidationParams(dataset_fraction=0.15), workers=2)
    assert cases and all(c.source == "base" and c.key.startswith("images/") for c in cases)
    assert {c.label["fracture"] for c in cases} == {"present", "absent"}
    current = load_bundle(default_bundle_path())
    outcome = run_retraining(
        RetrainInputs(
            current_bundle=default_bundle_path(),
            base=base,
            reviewed=[],
            validation_cases=cases,
            spool_root=tmp_path / "spool",
            salt="salt",
            out_dir=tmp_path / "models",
            name=current.info.name,
            version="1.0.1-test",
            review_weight=1,
            epochs=1,
            learning_rate=1e-5,
            batch_size=8,
            device="cpu",
            workers=2,
            calibration=CalibrationSpec(count=40),
            gate=GateConfig(min_positives=5),
            n_bootstrap=100,
        )
    )
    report = json.loads((outcome.bundle_dir / "report" / "report.json").read_text())
    # The gate judged both models on the same locked real images.
    assert report["gate"]["verdict"] == outcome.verdict.verdict
    assert report["counts"]["validation_cases"] == len(cases)
    assert report["counts"]["base_images"] == 24
    candidate = load_bundle(outcome.bundle_dir)
    assert candidate.metadata.arch == current.metadata.arch == "efficientnet_lite0"
    assert candidate.metadata.localisation_head
    # The candidate keeps its lineage, licence and attribution.
    data = candidate.metadata.training_data
    assert data["licence"] == "CC BY 4.0" and "Abedeen" in data["attribution"]
    assert current.info.name in data["dataset"] and "24 fracatlas images" in data["dataset"]
