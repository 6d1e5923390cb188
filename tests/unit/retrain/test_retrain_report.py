"""retrain.report: the drift rule, the report files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from models.evaluation_stats import Interval, roc_curve
from retrain.gate import GateConfig, ModelScores, judge
from retrain.report import REPORT_FILES, BodyPartReviews, drift_check, write_retrain_report

PNG = b"\x89PNG\r\n\x1a\n"


def test_a_large_significant_drop_warns() -> None:
    check = drift_check(0.70, 100, 0.90, 200)
    assert check.warning
    assert check.recent_ci is not None and check.previous_ci is not None
    assert check.recent_ci.high < check.previous_ci.low
    assert "fell" in check.reason


def test_a_large_drop_on_few_reviews_does_not_warn() -> None:
    check = drift_check(0.70, 10, 0.90, 10)  # intervals overlap: could be chance
    assert not check.warning and "overlap" in check.reason


def test_a_small_drop_does_not_warn_however_many_reviews() -> None:
    check = drift_check(0.87, 100_000, 0.90, 100_000, max_drop=0.05)
    assert not check.warning  # significant, but only 0.03


def test_no_reviews_in_a_period_does_not_warn() -> None:
    assert not drift_check(None, 0, 0.9, 100).warning
    assert not drift_check(0.2, 50, 0.9, 0).warning
    assert not drift_check(0.95, 100, 0.70, 100).warning  # a rise


def test_drift_inputs_are_checked() -> None:
    with pytest.raises(ValueError):
        drift_check(1.5, 10, 0.5, 10)
    with pytest.raises(ValueError):
        drift_check(0.5, -1, 0.5, 10)


def test_body_part_rows() -> None:
    row = BodyPartReviews("wrist", 20, 5)
    assert row.rate == 0.25 and row.ci is not None and row.ci.low < 0.25 < row.ci.high
    assert BodyPartReviews("hip", 0, 0).rate is None
    with pytest.raises(ValueError):
        BodyPartReviews("hip", 2, 3)


def _scores(version: str, auc: float) -> ModelScores:
    return ModelScores(
        name="m",
        version=version,
        sha256="a" * 64,
        validation_sha256="v" * 64,
        n=100,
        n_positive=50,
        auc=auc,
        auc_ci=Interval(auc - 0.05, min(1.0, auc + 0.03)),
        sensitivity=0.92,
        sensitivity_ci=Interval(0.81, 0.97),
        specificity=0.84,
        specificity_ci=Interval(0.71, 0.92),
        threshold=0.4,
    )


@pytest.mark.parametrize("with_current", [True, False])
def test_the_report_files_are_written_and_valid(tmp_path: Path, with_current: bool) -> None:
    rng = np.random.default_rng(1)
    labels = np.repeat([0, 1], 50)
    roc = roc_curve(labels + rng.normal(0, 0.6, 100), labels)
    current = _scores("1", 0.93) if with_current else None
    verdict = judge(_scores("2", 0.95), current, GateConfig())
    rows = [BodyPartReviews("wrist", 30, 6), BodyPartReviews("hand", 12, 1)]
    written = write_retrain_report(
        tmp_path / "report",
        verdict=verdict,
        candidate_roc=roc,
        current_roc=roc if with_current else None,
        new_reviews=42,
        disagreements=rows if with_current else [],
        drift=drift_check(0.7, 100, 0.9, 200),
        extra={"timings": {"fit": 1.5}},
    )
    assert [p.name for p in written] == list(REPORT_FILES)
    assert not [p for p in (tmp_path / "report").iterdir() if p.name.endswith(".tmp")]
    for path in written[1:]:
        assert path.read_bytes().startswith(PNG)
    doc = json.loads(written[0].read_text())
    assert doc["gate"]["verdict"] == "passed"
    assert doc["candidate"]["auc"] == 0.95
    assert (doc["current"] is not None) == with_current
    assert doc["new_reviews"] == 42 and doc["timings"] == {"fit": 1.5}
    assert doc["drift"]["warning"] is True
    if with_current:
        assert doc["disagreement_by_body_part"][0] == {
            "body_part": "wrist",
            "reviews": 30,
            "disagreements": 6,
            "rate": 0.2,
            "rate_ci": doc["disagreement_by_body_part"][0]["rate_ci"],
        }
