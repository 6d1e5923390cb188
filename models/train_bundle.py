"""From a trained network to a bundle: rounding, calibration, operating point, metrics, save.

Everything recorded in the bundle is measured on the network exactly as it will load: with
``half`` the weights are rounded to float16 *before* calibration and validation.
The temperature and the operating point are fitted on the validation set, so the metrics
recorded here are validation metrics (optimistic about calibration); an independent test set
goes through ``xrayd evaluate``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.bundle import BundleInfo, round_to_half, save_bundle
from models.bundle_metadata import BundleMetadata
from models.decision import Thresholds, apply_temperature, calibrate_temperature
from models.fit import FitResult, float_batches
from models.labels import BODY_PARTS
from models.metrics import Metrics
from models.operating_point import (
    DEFAULT_BAND,
    DEFAULT_TARGET_SENSITIVITY,
    choose_thresholds,
)
from models.preprocess import PreprocessParams
from models.synthetic_data import LabelledTensors
from models.training import collect, metrics_from

logger = logging.getLogger(__name__)

__all__ = ["BundleSpec", "FinishedBundle", "finish_bundle"]


@dataclass(frozen=True)
class BundleSpec:
    """What to call the bundle and how to choose its operating point."""

    name: str
    version: str
    preprocess: PreprocessParams
    target_sensitivity: float = DEFAULT_TARGET_SENSITIVITY
    band: float = DEFAULT_BAND
    per_body_part: bool = False
    half: bool = True
    batch_size: int = 64
    training_data: Mapping[str, str] = field(default_factory=dict)
    pretrained: str = ""


@dataclass(frozen=True)
class FinishedBundle:
    info: BundleInfo
    metadata: BundleMetadata
    metrics: Metrics


def finish_bundle(
    result: FitResult,
    val: LabelledTensors,
    train_manifest_sha256: str,
    directory: Path,
    spec: BundleSpec,
) -> FinishedBundle:
    """Calibrate and threshold ``result.network`` on ``val`` and save it as a bundle."""
    network = result.network.eval()
    if spec.half:
        round_to_half(network)
    collected = collect(network, float_batches(val, spec.batch_size))
    labelled = np.isfinite(collected.fracture) & (collected.fracture >= 0)
    if not labelled.any():
        raise ValueError("the validation set has no fracture labels")
    temperature = calibrate_temperature(
        collected.fracture_logits[labelled], collected.fracture[labelled]
    )
    probabilities = apply_temperature(collected.fracture_logits, temperature)
    parts = [
        BODY_PARTS[i] if 0 <= i < len(BODY_PARTS) else None
        for i in collected.body_part[labelled].tolist()
    ]
    thresholds: Thresholds = choose_thresholds(
        probabilities[labelled],
        collected.fracture[labelled],
        parts if spec.per_body_part else None,
        target_sensitivity=spec.target_sensitivity,
        band=spec.band,
    )
    metrics = metrics_from(
        collected, threshold=thresholds.default.threshold, temperature=temperature
    )
    recorded: dict[str, float | None] = dict(metrics.as_dict())
    recorded.update(
        {
            "best_epoch": float(result.best_epoch),
            "epochs_run": float(len(result.history)),
            "target_sensitivity": spec.target_sensitivity,
            "weights_float16": 1.0 if spec.half else 0.0,
        }
    )
    metadata = BundleMetadata(
        name=spec.name,
        version=spec.version,
        arch=network.arch,
        body_parts=BODY_PARTS,
        preprocess=spec.preprocess,
        thresholds=thresholds,
        temperature=temperature,
        training_manifest_sha256=train_manifest_sha256,
        metrics=recorded,
        localisation_head=network.localisation_head is not None,
        training_data=spec.training_data,
        pretrained=spec.pretrained,
    )
    info = save_bundle(directory, network, metadata, half=spec.half)
    logger.info(
        "bundle %s %s: validation AUC %s, threshold %.4f, temperature %.3f",
        spec.name,
        spec.version,
        metrics.fracture_auc,
        thresholds.default.threshold,
        temperature,
    )
    return FinishedBundle(info, metadata, metrics)
