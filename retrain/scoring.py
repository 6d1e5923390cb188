"""Scoring a bundle on the locked validation set, as it will be served.

The network runs in eval mode on the rebuilt validation tensors; probabilities are
``sigmoid(logit / T)`` with the bundle's own temperature and decisions use the bundle's own
thresholds (a per-body-part point applies to cases of that labelled body part, else to the
part the network predicts, as analysis does with and without a BodyPartExamined hint). The
candidate and the current model go through this same function in the same run.
"""

from __future__ import annotations

import numpy as np

from models.bundle import LoadedModel
from models.decision import apply_temperature, sigmoid
from models.evaluation import EvaluationReport, evaluate_predictions
from models.fit import float_batches
from models.training import collect
from retrain.gate import ModelScores
from retrain.validation import ValidationSet

__all__ = ["score_model"]


def score_model(
    model: LoadedModel,
    data: ValidationSet,
    *,
    batch_size: int = 32,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> tuple[EvaluationReport, ModelScores]:
    """The full evaluation report of ``model`` on ``data`` and the scores the gate reads."""
    if len(data) == 0:
        raise ValueError("the locked validation set is empty")
    collected = collect(model.network, float_batches(data.tensors, batch_size))
    meta = model.metadata
    probabilities = apply_temperature(collected.fracture_logits, meta.temperature)
    predicted = np.argmax(collected.body_part_logits, axis=1)
    parts = [
        known if known is not None else meta.body_parts[int(guess)]
        for known, guess in zip(data.body_parts, predicted, strict=True)
    ]
    report = evaluate_predictions(
        probabilities,
        collected.fracture,
        point=meta.thresholds,
        body_parts=parts,
        count_true=collected.count,
        count_pred=collected.count_logits,
        hardware_scores=sigmoid(collected.hardware_logits),
        hardware_labels=collected.hardware,
        n_bootstrap=n_bootstrap,
        seed=seed,
    )
    scores = ModelScores.from_report(
        report,
        name=model.info.name,
        version=model.info.version,
        sha256=model.info.sha256,
        validation_sha256=data.sha256,
    )
    return report, scores
