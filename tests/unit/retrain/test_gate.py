"""retrain.gate: each rule, the verdict, and what the registry stores."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from models.decision import OperatingPoint
from models.evaluation import evaluate_predictions
from models.evaluation_stats import Interval
from retrain.gate import GateConfig, ModelScores, judge


def scores(auc: float = 0.95, sens: float = 0.93, spec: float = 0.85, **kw: object) -> ModelScores:
    base = ModelScores(
        name="m",
        version="2",
        sha256="a" * 64,
        validation_sha256="v" * 64,
        n=400,
        n_positive=200,
        auc=auc,
        auc_ci=Interval(auc - 0.02, min(1.0, auc + 0.02)),
        sensitivity=sens,
        sensitivity_ci=Interval(sens - 0.04, min(1.0, sens + 0.03)),
        specificity=spec,
        specificity_ci=Interval(spec - 0.05, min(1.0, spec + 0.04)),
        threshold=0.3,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


CURRENT = scores(auc=0.955, version="1")


def failed(candidate: ModelScores, current: ModelScores | None = CURRENT) -> set[str]:
    return {r.rule for r in judge(candidate, current, GateConfig()).rules if not r.passed}


def test_a_good_candidate_passes_every_rule() -> None:
    verdict = judge(scores(), CURRENT, GateConfig())
    assert verdict.verdict == "passed" and verdict.passed and verdict.reasons == []
    assert {r.rule for r in verdict.rules} == {
        "validation_positives",
        "validation_negatives",
        "same_validation_set",
        "auc_non_inferior",
        "min_sensitivity",
        "min_specificity",
    }


def test_auc_within_the_margin_passes_and_below_it_fails() -> None:
    assert failed(scores(auc=0.945)) == set()  # 0.955 - 0.01 = 0.945 exactly
    assert failed(scores(auc=0.94)) == {"auc_non_inferior"}
    verdict = judge(scores(auc=0.90), CURRENT, GateConfig())
    rule = next(r for r in verdict.rules if r.rule == "auc_non_inferior")
    assert rule.measured == 0.90 and rule.limit == pytest.approx(0.945)
    assert verdict.verdict == "failed"
    assert any("AUC 0.900" in reason and "0.945" in reason for reason in verdict.reasons)


def test_sensitivity_and_specificity_floors() -> None:
    assert failed(scores(sens=0.89)) == {"min_sensitivity"}
    assert failed(scores(spec=0.79)) == {"min_specificity"}
    assert failed(scores(sens=0.5, spec=0.5, auc=0.5)) == {
        "auc_non_inferior",
        "min_sensitivity",
        "min_specificity",
    }
    assert failed(scores(sens=0.80), None) == {"min_sensitivity"}
    loose = GateConfig(min_sensitivity=0.8, min_specificity=0.5)
    assert judge(scores(sens=0.80, spec=0.5), CURRENT, loose).passed


def test_without_a_current_model_auc_is_not_compared() -> None:
    verdict = judge(scores(auc=0.6), None, GateConfig())
    assert verdict.passed
    rule = next(r for r in verdict.rules if r.rule == "auc_non_inferior")
    assert rule.limit is None and "not applicable" in rule.message
    assert "same_validation_set" not in {r.rule for r in verdict.rules}
    assert verdict.as_json()["current"] is None


def test_scores_on_another_validation_set_do_not_compare() -> None:
    assert failed(scores(validation_sha256="w" * 64)) == {"same_validation_set"}


def test_a_validation_set_too_small_to_judge_fails() -> None:
    assert failed(scores(n=30, n_positive=5), None) == {"validation_positives"}
    assert failed(scores(n=30, n_positive=25), None) == {"validation_negatives"}
    assert "same_validation_set" in failed(scores(n=399))


def test_as_json_holds_config_measurements_and_verdict() -> None:
    doc = judge(scores(spec=0.7), CURRENT, GateConfig(auc_margin=0.02)).as_json()
    json.dumps(doc, allow_nan=False)
    assert doc["verdict"] == "failed"
    assert doc["config"]["auc_margin"] == 0.02 and doc["config"]["min_specificity"] == 0.8
    assert doc["candidate"]["specificity"] == 0.7 and doc["candidate"]["auc_ci"] == pytest.approx(
        [0.93, 0.97]
    )
    assert doc["current"]["version"] == "1"
    spec = next(r for r in doc["rules"] if r["rule"] == "min_specificity")
    assert spec == {
        "rule": "min_specificity",
        "passed": False,
        "measured": 0.7,
        "limit": 0.8,
        "message": spec["message"],
    }
    assert doc["reasons"] == [spec["message"]]


def test_scores_from_an_evaluation_report() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat([0.0, 1.0], 50)
    probabilities = np.clip(labels * 0.5 + rng.uniform(0, 0.5, 100), 0, 1)
    report = evaluate_predictions(
        probabilities, labels, point=OperatingPoint.binary(0.5), n_bootstrap=50
    )
    s = ModelScores.from_report(report, name="m", version="1", sha256="x", validation_sha256="y")
    assert (s.n, s.n_positive, s.n_negative) == (100, 50, 50)
    assert s.auc == report.auc and s.auc_ci == report.auc_ci and s.threshold == 0.5
    assert s.sensitivity == report.at_threshold.sensitivity


def test_gate_config_is_checked() -> None:
    with pytest.raises(ValueError, match="auc_margin"):
        GateConfig(auc_margin=1.5)
    with pytest.raises(ValueError, match="min_positives"):
        GateConfig(min_positives=0)
