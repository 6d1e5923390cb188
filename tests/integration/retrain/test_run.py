"""End to end: retrain the demo bundle from reviewed DICOM files in a spool.

A run with correct radiologist labels passes the gate; a sabotaged run (every reviewed label
flipped, no base images, a high learning rate) fails it on AUC. Sizes are tiny (2 CPU cores):
the point is the plumbing and the gate, not the model.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import retrain.run
from models.bundle import bundle_identity, load_bundle, phantom_bundle_path, sha256_file
from models.fit import EpochRecord, FitResult
from retrain.errors import RetrainError
from retrain.gate import GateConfig
from retrain.manifest import MANIFEST_PATH, trained_review_keys
from retrain.report import REPORT_FILES, BodyPartReviews, drift_check
from retrain.run import (
    BaseDataset,
    CalibrationSpec,
    RetrainInputs,
    RetrainOutcome,
    run_retraining,
)
from retrain.validation import (
    LockedCase,
    ValidationParams,
    base_validation_cases,
    review_groups,
    review_validation_candidates,
)
from storage.training import ReviewedExample

from review_spool import write_reviewed_spool

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

SALT = "site-salt"
SIZE = 256  # generation size = the demo bundle's input size: 4x cheaper than 512


class World:
    def __init__(self, root: Path) -> None:
        self.spool = root / "spool"
        self.examples = write_reviewed_spool(self.spool, patients=12, size=SIZE)
        self.base = BaseDataset("synthetic", None, n_train=16, seed=11, image_size=SIZE)
        cases: list[LockedCase] = base_validation_cases(
            self.base, ValidationParams(count=40, image_size=SIZE), workers=1
        )
        chosen = review_validation_candidates(self.examples, 0.25, self.spool, salt=SALT)
        assert chosen and len(chosen) < len(self.examples)
        # The second image of a locked patient arrived after the set was locked: it is not a
        # validation case, but it must not be trained on either (its patient is locked).
        self.late = chosen[1].key
        assert chosen[1].patient_group == chosen[0].patient_group
        self.cases = cases + [c for c in chosen if c.key != self.late]
        self.groups = review_groups(self.examples, self.spool, SALT)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return World(tmp_path_factory.mktemp("retrain"))


def _inputs(world: World, out: Path, **changes: Any) -> RetrainInputs:
    base = RetrainInputs(
        current_bundle=phantom_bundle_path(),
        base=world.base,
        reviewed=world.examples,
        validation_cases=world.cases,
        spool_root=world.spool,
        salt=SALT,
        out_dir=out,
        name="xrayd-phantom",
        version="1.0.1",
        review_weight=1,
        epochs=1,
        learning_rate=1e-4,
        batch_size=16,
        device="cpu",
        workers=2,
        calibration=CalibrationSpec(count=40),
        gate=GateConfig(min_sensitivity=0.75, min_specificity=0.6, min_positives=10),
        n_bootstrap=200,
        new_reviews=len(world.examples),
        disagreements=[BodyPartReviews("wrist", 10, 2), BodyPartReviews("hand", 6, 0)],
        drift=drift_check(0.7, 100, 0.9, 200),
    )
    return replace(base, **changes)


def _flipped(example: ReviewedExample) -> ReviewedExample:
    label = dict(example.label)
    present = label["fracture"] == "absent"
    label.update(fracture="present" if present else "absent", count="1" if present else "0")
    return replace(example, label=label)


def _check_bundle(outcome: RetrainOutcome, world: World) -> dict[str, Any]:
    final = outcome.bundle_dir
    assert final.name == outcome.version
    assert not [p for p in final.parent.iterdir() if ".partial-" in p.name]
    loaded = load_bundle(final)  # verifies the weights' sha256 against the metadata
    assert loaded.info.sha256 == outcome.weights_sha256 == bundle_identity(final).sha256
    assert loaded.metadata.training_manifest_sha256 == outcome.manifest_sha256
    assert sha256_file(final / MANIFEST_PATH) == outcome.manifest_sha256
    manifest: dict[str, Any] = json.loads((final / MANIFEST_PATH).read_text())
    locked = {(c.source, c.key) for c in world.cases}
    locked_groups = {c.patient_group for c in world.cases if c.source == "review"}
    assert world.groups[world.late] in locked_groups
    assert {tuple(c) for c in manifest["validation"]["cases"]} == locked
    trained = {(t["source"], t["key"]) for t in manifest["training"]}
    calibrated = {(t["source"], t["key"]) for t in manifest["calibration"]}
    assert not trained & locked and not calibrated & locked and not trained & calibrated
    reviews = [t for t in manifest["training"] if t["source"] == "review"]
    assert len(reviews) == outcome.reviews_used
    # every reviewed image not locked (by image or by patient) was trained on, none other
    expected = {
        e.sop_instance_uid
        for e in world.examples
        if ("review", e.sop_instance_uid) not in locked
        and world.groups[e.sop_instance_uid] not in locked_groups
    }
    assert world.late not in expected
    assert {t["key"] for t in reviews} == expected
    assert outcome.reviews_excluded == len(world.examples) - len(expected)
    assert trained_review_keys(final) == expected
    for name in REPORT_FILES:
        assert (final / "report" / name).stat().st_size > 0
    report = json.loads((final / "report" / "report.json").read_text())
    assert report["gate"]["verdict"] == outcome.verdict.verdict
    assert report["new_reviews"] == len(world.examples)
    assert report["drift"]["warning"] is True
    return manifest


def test_a_run_with_true_labels_passes_the_gate(world: World, tmp_path: Path) -> None:
    outcome = run_retraining(_inputs(world, tmp_path / "models"))
    assert outcome.verdict.verdict == "passed", outcome.verdict.reasons
    assert outcome.candidate.validation_sha256 == outcome.current.validation_sha256
    assert outcome.validation_cases == len(world.cases) and not outcome.validation_missing
    assert outcome.base_images == 16 and outcome.reviews_used > 0
    manifest = _check_bundle(outcome, world)
    base = [t for t in manifest["training"] if t["source"] == "base"]
    assert len(base) == 16 and all(t["key"].startswith("synthetic:11:") for t in base)
    assert outcome.timings["total"] > 0


def test_a_sabotaged_run_fails_the_gate(world: World, tmp_path: Path) -> None:
    sabotage = _inputs(
        world,
        tmp_path / "models",
        base=replace(world.base, n_train=0),
        reviewed=[_flipped(e) for e in world.examples],
        review_weight=2,
        epochs=2,
        learning_rate=3e-3,
        batch_size=8,
        augment=False,
        version="1.0.2-sabotaged",
    )
    outcome = run_retraining(sabotage)
    assert outcome.verdict.verdict == "failed"
    failed = {r.rule for r in outcome.verdict.rules if not r.passed}
    assert "auc_non_inferior" in failed, outcome.verdict.reasons
    # The operating point is re-chosen on the (correctly labelled) calibration set for 95 %
    # sensitivity, so a broken model pays at the threshold in specificity (or sensitivity).
    assert failed & {"min_sensitivity", "min_specificity"}, outcome.verdict.reasons
    assert outcome.candidate.auc < outcome.current.auc - 0.05
    assert outcome.base_images == 0
    _check_bundle(outcome, world)


def test_a_failure_before_the_rename_leaves_no_bundle(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_training(network: Any, train: Any, val: Any, config: Any) -> FitResult:
        record = EpochRecord(1, 0.0, 0.0, None, config.learning_rate)
        return FitResult(network.eval(), 1, None, (record,), False)

    def full_disk(partial: Path, final: Path) -> Path:
        assert (partial / MANIFEST_PATH).is_file()  # the bundle was complete but for the rename
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(retrain.run, "fit", no_training)
    monkeypatch.setattr(retrain.run, "publish", full_disk)
    out = tmp_path / "models"
    with pytest.raises(OSError, match="No space"):
        run_retraining(_inputs(world, out, calibration=CalibrationSpec(count=12)))
    assert list(out.iterdir()) == []


def test_an_existing_version_is_refused_before_any_work(world: World, tmp_path: Path) -> None:
    (tmp_path / "models" / "1.0.1").mkdir(parents=True)
    with pytest.raises(RetrainError, match="exists already"):
        run_retraining(_inputs(world, tmp_path / "models", current_bundle=tmp_path / "nowhere"))
