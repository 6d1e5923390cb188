"""One retraining run: fine-tune the current model on base + reviewed images, calibrate, score
candidate and current model on the locked validation set, judge, write the bundle atomically.

Steps of :func:`run_retraining` (plain inputs in, plain outcome out; no database, no prints):

1. Rebuild the locked validation set (:func:`retrain.validation.validation_tensors`); it must
   hold fractured and normal cases, else nothing is trained.
2. The calibration set (:func:`retrain.base_data.calibration_set`), the base images
   (:func:`retrain.base_data.base_training_set`) and the reviewed images
   (:func:`retrain.review_data.review_training_set`), each without anything locked.
3. Fine-tune from the CURRENT bundle's weights with :func:`models.fit.fit` (reviewed images
   repeated ``review_weight`` times; the best epoch is chosen on the calibration set).
4. :func:`models.train_bundle.finish_bundle`: float16 rounding, temperature and operating point
   on the calibration set (never on the locked set, never on training images) and the save,
   into ``<out_dir>/.<version>.partial-<random>``; then ``configs/manifest.json``.
5. Load the candidate back from that directory and score it and the current bundle with the
   same code on the same tensors (:func:`retrain.scoring.score_model`); apply the gate.
6. Write the report into ``<bundle>/report``; fsync everything; rename to ``<out_dir>/<version>``.

Any error removes the partial directory; a crash leaves it for :func:`clean_partial`.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.bundle import BundleInfo, LoadedModel, load_bundle
from models.fit import EpochRecord, FitConfig, fit
from models.limits import DEFAULT_LIMITS, ImageLimits
from models.operating_point import DEFAULT_TARGET_SENSITIVITY
from models.train_bundle import BundleSpec, finish_bundle
from retrain.atomic import (
    check_version,
    clean_partial,
    new_partial_dir,
    publish,
    write_file_atomic,
)
from retrain.base_data import BaseDataset, CalibrationSpec
from retrain.errors import RetrainError
from retrain.gate import GateConfig, GateVerdict, ModelScores, judge
from retrain.manifest import MANIFEST_PATH, build_manifest, manifest_bytes
from retrain.pool import WorkerPool
from retrain.report import BodyPartReviews, DriftCheck, write_retrain_report
from retrain.run_data import concat_repeated, prepare_data
from retrain.scoring import score_model
from retrain.validation import CaseLike
from storage.bytestore import ByteStore
from storage.training import ReviewedExample

logger = logging.getLogger(__name__)

__all__ = [
    "BaseDataset",
    "CalibrationSpec",
    "RetrainInputs",
    "RetrainOutcome",
    "clean_partial",
    "run_retraining",
]

REPORT_DIR = "report"


@dataclass(frozen=True)
class RetrainInputs:
    """Everything a run needs. ``salt``: the site's secret for patient groups (the same one
    the locked review cases were chosen with). ``version``: the candidate's version, also its
    directory name under ``out_dir``. ``new_reviews``, ``disagreements`` and ``drift`` only
    go into the report."""

    current_bundle: Path
    base: BaseDataset
    reviewed: Sequence[ReviewedExample]
    validation_cases: Sequence[CaseLike]
    spool_root: Path
    salt: str
    out_dir: Path
    name: str
    version: str
    review_weight: int = 5
    epochs: int = 3
    learning_rate: float = 1e-4
    batch_size: int = 16
    augment: bool = True
    device: str = "auto"
    progress: bool = False
    workers: int | None = None
    seed: int = 0
    calibration: CalibrationSpec = field(default_factory=CalibrationSpec)
    gate: GateConfig = field(default_factory=GateConfig)
    target_sensitivity: float | None = None
    n_bootstrap: int = 1000
    new_reviews: int | None = None
    disagreements: Sequence[BodyPartReviews] = ()
    drift: DriftCheck | None = None
    #: what one image may cost ([limits]); reviewed images beyond are skipped, never decoded
    limits: ImageLimits = DEFAULT_LIMITS
    #: where the reviewed images are (None: the spool at ``spool_root``)
    store: ByteStore | None = None

    def __post_init__(self) -> None:
        check_version(self.version)
        if not 1 <= self.review_weight <= 1000:
            raise ValueError("review_weight must be between 1 and 1000")
        if self.epochs < 1 or self.batch_size < 1 or not self.learning_rate > 0:
            raise ValueError("epochs and batch_size must be positive, learning_rate > 0")
        if not self.name:
            raise ValueError("the candidate needs a name")

    def settings(self) -> dict[str, Any]:
        """The knobs of the run, as recorded in the manifest."""
        return {
            "base": self.base.as_json(),
            "review_weight": self.review_weight,
            "epochs": self.epochs,
            "learning_rate": self.learning_rate,
            "batch_size": self.batch_size,
            "augment": self.augment,
            "seed": self.seed,
            "calibration": {"seed": self.calibration.seed, "count": self.calibration.count},
            "target_sensitivity": self.target_sensitivity,
        }


@dataclass(frozen=True)
class RetrainOutcome:
    """What a run produced. ``bundle_dir`` is the published bundle (``<out_dir>/<version>``),
    whatever the verdict; register it as candidate (passed) or rejected (failed)."""

    bundle_dir: Path
    name: str
    version: str
    weights_sha256: str
    manifest_sha256: str
    manifest_path: Path
    parent: BundleInfo
    candidate: ModelScores
    current: ModelScores
    verdict: GateVerdict
    reviews_used: int
    reviews_excluded: int
    reviews_skipped: Mapping[str, int]
    base_images: int
    calibration_images: int
    validation_cases: int
    validation_missing: tuple[tuple[str, str, str], ...]
    history: tuple[EpochRecord, ...]
    timings: Mapping[str, float]
    report_dir: Path
    report_files: tuple[Path, ...]

    def summary(self) -> dict[str, Any]:
        """Plain JSON for ``training_runs.detail``."""
        return {
            "version": self.version,
            "weights_sha256": self.weights_sha256,
            "manifest_sha256": self.manifest_sha256,
            "verdict": self.verdict.verdict,
            "reasons": self.verdict.reasons,
            "candidate": self.candidate.as_json(),
            "current": self.current.as_json(),
            "reviews_used": self.reviews_used,
            "reviews_excluded": self.reviews_excluded,
            "reviews_skipped": dict(self.reviews_skipped),
            "base_images": self.base_images,
            "calibration_images": self.calibration_images,
            "validation_cases": self.validation_cases,
            "validation_missing": len(self.validation_missing),
            "timings": dict(self.timings),
        }


def _finite(row: Mapping[str, Any]) -> dict[str, Any]:
    """``row`` with NaN/inf floats as None (the report is strict JSON)."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}


def _lineage(parent: LoadedModel, base_kind: str, base_images: int, reviews: int) -> dict[str, str]:
    """The candidate's training-data record: what this run added to what its parent saw.

    The parent's licence and attribution stay: the candidate's weights derive from them."""
    record = dict(parent.metadata.training_data)
    before = record.get("dataset", "unrecorded data")
    record["dataset"] = (
        f"{parent.info.name} {parent.info.version} ({before}), fine-tuned on {base_images} "
        f"{base_kind} images and {reviews} radiologist-reviewed images of this site"
    )
    record.setdefault("licence", "see the parent model")
    record.setdefault("attribution", "")
    return record


def run_retraining(inputs: RetrainInputs) -> RetrainOutcome:
    """Run the steps of the module docstring. Raises :class:`RetrainError` (nothing to train
    on, a version that exists already), :class:`ValidationSetError`, or ``BundleError`` for a
    bad current bundle; no bundle is published then."""
    final = inputs.out_dir / inputs.version
    if final.exists():
        raise RetrainError(f"model version {inputs.version} exists already at {final}")
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(now - clock, 3)
        clock = now

    started = clock
    current = load_bundle(inputs.current_bundle, inputs.device)
    meta = current.metadata
    with WorkerPool(inputs.workers) as pool:
        data = prepare_data(
            cases=list(inputs.validation_cases),
            reviewed=inputs.reviewed,
            base=inputs.base,
            calibration=inputs.calibration,
            spool_root=inputs.spool_root,
            salt=inputs.salt,
            review_weight=inputs.review_weight,
            body_parts=meta.body_parts,
            params=meta.preprocess,
            pool=pool,
            progress=inputs.progress,
            lap=lap,
            limits=inputs.limits,
            store=inputs.store,
        )
    validation, calibration, base, reviews = (
        data.validation,
        data.calibration,
        data.base,
        data.reviews,
    )
    train = concat_repeated([(base.tensors, 1), (reviews.tensors, inputs.review_weight)], "retrain")

    starting = load_bundle(inputs.current_bundle, inputs.device)
    config = FitConfig(
        epochs=inputs.epochs,
        batch_size=inputs.batch_size,
        learning_rate=inputs.learning_rate,
        patience=inputs.epochs,
        seed=inputs.seed,
        augment=inputs.augment,
        device=inputs.device,
        progress=inputs.progress,
    )
    result = fit(starting.network, train, calibration.tensors, config)
    lap("fit")

    training_images = (*base.images, *reviews.images)
    document = build_manifest(
        candidate={"name": inputs.name, "version": inputs.version},
        parent={
            "name": current.info.name,
            "version": current.info.version,
            "sha256": current.info.sha256,
        },
        training=training_images,
        calibration=calibration.images,
        validation=validation,
        settings=inputs.settings(),
    )
    manifest_data, manifest_sha = manifest_bytes(document)
    target = inputs.target_sensitivity
    if target is None:
        recorded = meta.metrics.get("target_sensitivity")
        target = float(recorded) if recorded is not None else DEFAULT_TARGET_SENSITIVITY
    spec = BundleSpec(
        name=inputs.name,
        version=inputs.version,
        preprocess=meta.preprocess,
        target_sensitivity=target,
        per_body_part=bool(meta.thresholds.per_body_part),
        training_data=_lineage(current, inputs.base.kind, len(base), len(reviews)),
        pretrained=meta.pretrained,
    )
    partial = new_partial_dir(inputs.out_dir, inputs.version)
    try:
        finished = finish_bundle(result, calibration.tensors, manifest_sha, partial, spec)
        write_file_atomic(partial / MANIFEST_PATH, manifest_data)
        lap("calibrate_and_save")

        candidate = load_bundle(partial, inputs.device)
        candidate_report, candidate_scores = score_model(
            candidate, validation, n_bootstrap=inputs.n_bootstrap, seed=inputs.seed
        )
        current_report, current_scores = score_model(
            current, validation, n_bootstrap=inputs.n_bootstrap, seed=inputs.seed
        )
        verdict = judge(candidate_scores, current_scores, inputs.gate)
        lap("score")

        timings["total"] = round(time.perf_counter() - started, 3)
        counts = {
            "reviews_used": len(reviews),
            "reviews_excluded_locked": reviews.excluded_locked,
            "reviews_skipped": dict(reviews.skipped),
            "base_images": len(base),
            "calibration_images": len(calibration),
            "validation_cases": len(validation),
            "validation_missing": [list(m) for m in validation.missing],
        }
        report_dir = partial / REPORT_DIR
        written = write_retrain_report(
            report_dir,
            verdict=verdict,
            candidate_roc=candidate_report.roc,
            current_roc=current_report.roc,
            new_reviews=inputs.new_reviews if inputs.new_reviews is not None else len(reviews),
            disagreements=inputs.disagreements,
            drift=inputs.drift,
            extra={
                "counts": counts,
                "manifest_sha256": manifest_sha,
                "weights_sha256": finished.info.sha256,
                "history": [_finite(vars(h)) for h in result.history],
                "best_epoch": result.best_epoch,
                "timings": timings,
            },
        )
        publish(partial, final)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    lap("report_and_publish")
    timings["total"] = round(time.perf_counter() - started, 3)
    logger.info(
        "retrained %s %s: gate %s (AUC %.3f vs %.3f) in %.0f s",
        inputs.name,
        inputs.version,
        verdict.verdict,
        candidate_scores.auc,
        current_scores.auc,
        timings["total"],
    )
    return RetrainOutcome(
        bundle_dir=final,
        name=inputs.name,
        version=inputs.version,
        weights_sha256=finished.info.sha256,
        manifest_sha256=manifest_sha,
        manifest_path=final / MANIFEST_PATH,
        parent=current.info,
        candidate=candidate_scores,
        current=current_scores,
        verdict=verdict,
        reviews_used=len(reviews),
        reviews_excluded=reviews.excluded_locked,
        reviews_skipped=dict(reviews.skipped),
        base_images=len(base),
        calibration_images=len(calibration),
        validation_cases=len(validation),
        validation_missing=validation.missing,
        history=result.history,
        timings=timings,
        report_dir=final / REPORT_DIR,
        report_files=tuple(final / REPORT_DIR / p.name for p in written),
    )
