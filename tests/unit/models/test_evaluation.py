"""models.evaluation, models.evaluation_stats, models.report_plots: hand-computed cases."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.decision import OperatingPoint, Thresholds
from models.evaluation import EvaluationReport, evaluate_predictions
from models.evaluation_stats import (
    bootstrap_auc,
    bootstrap_auc_samples,
    cohen_kappa,
    count_report,
    expected_calibration_error,
    log_loss,
    reliability_bins,
    roc_curve,
    wilson_interval,
)
from models.metrics import roc_auc
from models.report_plots import write_report

POINT = OperatingPoint(threshold=0.5, indeterminate_low=0.3, indeterminate_high=0.7)
# Three positives (0.9 present, 0.6 indeterminate, 0.2 absent), three negatives likewise.
P6 = [0.9, 0.6, 0.2, 0.8, 0.4, 0.1]
Y6 = [1, 1, 1, 0, 0, 0]


def scored(n: int, seed: int, separation: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Balanced labels and calibrated-looking probabilities from two normal logits."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    z = rng.normal(0.0, 1.0, n) + separation * (2 * y - 1)
    return 1.0 / (1.0 + np.exp(-z)), y


# --- statistics -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("k", "n", "low", "high"),
    [(0, 10, 0.0, 0.2775), (5, 10, 0.2366, 0.7634), (8, 10, 0.4902, 0.9433), (10, 10, 0.7225, 1.0)],
)
def test_wilson_interval_known_values(k: int, n: int, low: float, high: float) -> None:
    ci = wilson_interval(k, n)
    assert ci is not None
    assert ci.low == pytest.approx(low, abs=5e-5)
    assert ci.high == pytest.approx(high, abs=5e-5)


def test_wilson_interval_edge_cases() -> None:
    assert wilson_interval(0, 0) is None
    with pytest.raises(ValueError):
        wilson_interval(3, 2)
    wide, narrow = wilson_interval(8, 10), wilson_interval(800, 1000)
    assert wide is not None and narrow is not None
    assert narrow.high - narrow.low < wide.high - wide.low
    assert 0.8 in narrow and 0.8 in wide


def test_cohen_kappa_hand_computed() -> None:
    # p_o = 35/50 = 0.7; p_e = (25*30 + 25*20) / 2500 = 0.5; kappa = 0.2 / 0.5.
    assert cohen_kappa(tp=20, fp=5, fn=10, tn=15) == pytest.approx(0.4)
    assert cohen_kappa(tp=5, fp=0, fn=0, tn=5) == pytest.approx(1.0)
    # Every call wrong: p_o = 0, p_e = 0.5 -> -1.
    assert cohen_kappa(tp=0, fp=5, fn=5, tn=0) == pytest.approx(-1.0)
    # Calls independent of truth: p_o = p_e -> 0.
    assert cohen_kappa(tp=2, fp=2, fn=2, tn=2) == pytest.approx(0.0)
    assert cohen_kappa(tp=5, fp=0, fn=0, tn=0) is None  # chance agreement 1: undefined


def test_log_loss_hand_computed() -> None:
    assert log_loss([0.8, 0.4], [1, 0]) == pytest.approx(-(math.log(0.8) + math.log(0.6)) / 2)
    assert log_loss([0.5] * 4, [1, 0, 1, 0]) == pytest.approx(math.log(2))
    # A confident miss is clipped, not infinite.
    assert log_loss([0.0], [1]) == pytest.approx(-math.log(1e-15))


def test_expected_calibration_error_hand_computed() -> None:
    # Bin 0: p 0.05, rate 0; bin 1: p 0.15, rate 1/2; bin 9: p 0.95, rate 1.
    # ECE = 1/4 * 0.05 + 2/4 * 0.35 + 1/4 * 0.05 = 0.2.
    bins = reliability_bins([0.05, 0.15, 0.15, 0.95], [0, 1, 0, 1])
    assert len(bins) == 10
    assert [b.count for b in bins] == [1, 2, 0, 0, 0, 0, 0, 0, 0, 1]
    assert bins[1].mean_probability == pytest.approx(0.15)
    assert bins[1].observed_rate == pytest.approx(0.5)
    assert bins[2].mean_probability is None
    assert expected_calibration_error(bins) == pytest.approx(0.2)
    # p = 1.0 falls in the last bin; perfectly calibrated bins give 0.
    perfect = reliability_bins([1.0, 1.0, 0.0], [1, 1, 0])
    assert perfect[9].count == 2
    assert expected_calibration_error(perfect) == pytest.approx(0.0)


def test_roc_curve_hand_computed() -> None:
    roc = roc_curve([0.8, 0.4, 0.5, 0.3, 0.1], [1, 1, 0, 0, 0])
    # (2/3, 1) at 0.3 lies on the final horizontal run and is dropped.
    assert roc.fpr == pytest.approx((0, 0, 1 / 3, 1 / 3, 1))
    assert roc.tpr == pytest.approx((0, 0.5, 0.5, 1, 1))
    assert roc.thresholds == (math.inf, 0.8, 0.5, 0.4, 0.1)


def test_roc_curve_is_thinned_and_monotone() -> None:
    p, y = scored(5000, seed=1)
    roc = roc_curve(p, y, max_points=200)
    assert 100 <= len(roc.fpr) <= 200
    assert (roc.fpr[0], roc.tpr[0]) == (0.0, 0.0)
    assert (roc.fpr[-1], roc.tpr[-1]) == (1.0, 1.0)
    assert np.all(np.diff(roc.fpr) >= 0) and np.all(np.diff(roc.tpr) >= 0)
    assert np.all(np.diff(roc.thresholds) < 0)
    # The thinned curve's trapezoid area stays close to the exact AUC.
    area = float(np.sum(np.diff(roc.fpr) * (np.array(roc.tpr[1:]) + roc.tpr[:-1]) / 2))
    assert area == pytest.approx(roc_auc(p, y), abs=0.005)


def test_vectorised_bootstrap_matches_roc_auc_on_each_resample() -> None:
    p, y = scored(200, seed=2)
    p = np.round(p, 1)  # ties across classes
    samples = bootstrap_auc_samples(p, y, 5, np.random.default_rng(7), chunk_cells=1)
    rng = np.random.default_rng(7)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    for value in samples:
        index = np.concatenate(
            (pos[rng.integers(0, pos.size, pos.size)], neg[rng.integers(0, neg.size, neg.size)])
        )
        assert value == pytest.approx(roc_auc(p[index], y[index]), abs=1e-12)


def test_auc_interval_contains_estimate_and_narrows_with_n() -> None:
    widths = []
    for n in (100, 2000):
        p, y = scored(n, seed=n)
        ci = bootstrap_auc(p, y, n_bootstrap=500, seed=0)
        assert roc_auc(p, y) in ci
        widths.append(ci.high - ci.low)
    assert widths[1] < widths[0] / 2  # ~sqrt(20) narrower
    # Deterministic for a seed.
    p, y = scored(100, seed=100)
    assert bootstrap_auc(p, y, n_bootstrap=200, seed=4) == bootstrap_auc(
        p, y, n_bootstrap=200, seed=4
    )


def test_count_report_hand_computed() -> None:
    report = count_report([0, 1, 2, -1], [0, 2, 2, 1], 4)
    assert report is not None
    assert report.n == 3
    assert report.accuracy == pytest.approx(2 / 3)
    assert report.confusion == ((1, 0, 0), (0, 0, 1), (0, 0, 1))
    scores = np.eye(3)[[0, 2, 2, 1]]  # the same predictions as per-class scores
    assert count_report([0, 1, 2, -1], scores, 4) == report
    assert count_report([-1, -1], [0, 1], 2) is None
    with pytest.raises(ValueError):
        count_report([0, 3], [0, 1], 2)


# --- the report -----------------------------------------------------------------------


def test_report_at_threshold_and_decisions_hand_computed() -> None:
    r = evaluate_predictions(P6, Y6, point=POINT, n_bootstrap=0)
    assert (r.n, r.positives, r.negatives) == (6, 3, 3)
    at = r.at_threshold
    # Called at 0.5: 0.9, 0.6 (positives) and 0.8 (negative).
    assert (at.counts.tp, at.counts.fp, at.counts.fn, at.counts.tn) == (2, 1, 1, 2)
    assert at.sensitivity == pytest.approx(2 / 3)
    assert at.specificity == pytest.approx(2 / 3)
    assert at.f1 == pytest.approx(2 / 3)
    assert at.accuracy == pytest.approx(4 / 6)
    assert at.kappa == pytest.approx(1 / 3)  # (2/3 - 1/2) / (1 - 1/2)
    assert at.sensitivity_ci == wilson_interval(2, 3)
    # Three-way: one of each class present, indeterminate, absent.
    c = r.confusion
    assert (c.tp, c.fp, c.fn, c.tn) == (1, 1, 1, 1)
    assert (c.indeterminate_positive, c.indeterminate_negative) == (1, 1)
    assert c.rows() == ((1, 1, 1), (1, 1, 1))
    d = r.decisions
    assert (d.indeterminate, d.decided) == (2, 4)
    assert d.indeterminate_rate == pytest.approx(1 / 3)
    assert d.sensitivity == pytest.approx(0.5)
    assert d.positives_not_missed == pytest.approx(2 / 3)
    assert r.auc == pytest.approx(roc_auc(P6, Y6))
    assert r.auc_ci is None
    assert r.log_loss == pytest.approx(log_loss(P6, Y6))


def test_auc_of_perfect_inverted_and_random_scores() -> None:
    y = np.array([0, 1] * 50)
    perfect = evaluate_predictions(0.1 + 0.8 * y, y, point=POINT, n_bootstrap=200)
    assert perfect.auc == 1.0
    assert perfect.auc_ci is not None and (perfect.auc_ci.low, perfect.auc_ci.high) == (1.0, 1.0)
    assert perfect.at_threshold.sensitivity == 1.0 and perfect.at_threshold.specificity == 1.0
    assert perfect.decisions.indeterminate == 0
    inverted = evaluate_predictions(0.9 - 0.8 * y, y, point=POINT, n_bootstrap=0)
    assert inverted.auc == 0.0
    assert inverted.at_threshold.kappa == pytest.approx(-1.0)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 4000)
    noise = evaluate_predictions(rng.random(4000), y, point=POINT, n_bootstrap=300)
    assert noise.auc_ci is not None and 0.5 in noise.auc_ci
    assert noise.auc == pytest.approx(0.5, abs=0.03)


def test_per_body_part_rows_and_overrides() -> None:
    parts = ["wrist", "wrist", "hip", "wrist", "hip", None]
    strict = OperatingPoint.binary(0.15)  # for hip: 0.2 (positive) and 0.4 called
    r = evaluate_predictions(
        P6, Y6, point=Thresholds(POINT, {"hip": strict}), body_parts=parts, n_bootstrap=0
    )
    # Called: 0.9, 0.6 (>= 0.5), 0.2 (hip, >= 0.15), 0.8, 0.4 (hip): tp 3, fp 2.
    assert r.at_threshold.sensitivity == 1.0
    assert r.at_threshold.specificity == pytest.approx(1 / 3)
    rows = {row.body_part: row for row in r.body_parts}
    assert [row.body_part for row in r.body_parts] == ["wrist", "hip"]  # BODY_PARTS order
    wrist, hip = rows["wrist"], rows["hip"]
    assert (wrist.n, wrist.positives, wrist.negatives) == (3, 2, 1)
    assert wrist.auc == pytest.approx(0.5)  # 0.9 beats 0.8, 0.6 does not
    assert (wrist.sensitivity, wrist.specificity) == (1.0, 0.0)
    assert wrist.point == POINT
    assert (hip.n, hip.positives, hip.negatives) == (2, 1, 1)
    assert hip.auc == 0.0
    assert (hip.sensitivity, hip.specificity) == (1.0, 0.0)
    assert hip.point == strict
    assert hip.indeterminate_rate == 0.0


def test_one_class_part_has_no_auc() -> None:
    r = evaluate_predictions(P6, Y6, point=POINT, body_parts=["hand"] * 3 + ["leg"] * 3)
    rows = {row.body_part: row for row in r.body_parts}
    assert rows["hand"].auc is None and rows["hand"].specificity is None
    assert rows["leg"].sensitivity is None and rows["leg"].specificity == pytest.approx(2 / 3)


def test_count_and_hardware_heads() -> None:
    r = evaluate_predictions(
        P6,
        Y6,
        point=POINT,
        count_true=[1, 2, 1, 0, 0, -1],
        count_pred=[1, 1, 1, 0, 0, 2],
        hardware_scores=[0.9, 0.1, 0.8, 0.2, 0.5, 0.7],
        hardware_labels=[1, 0, 1, 0, float("nan"), -1],
        n_bootstrap=0,
    )
    assert r.count is not None and r.count.n == 5 and r.count.accuracy == pytest.approx(0.8)
    assert r.hardware_n == 4 and r.hardware_auc == 1.0
    plain = evaluate_predictions(P6, Y6, point=POINT, n_bootstrap=0)
    assert plain.count is None and plain.hardware_auc is None and plain.hardware_n == 0


@pytest.mark.parametrize(
    ("p", "y", "kwargs", "message"),
    [
        ([], [], {}, "no cases"),
        ([0.2, 0.8], [1, 1], {}, "both"),
        ([0.2, 0.8], [0, 0], {}, "both"),
        ([0.2, 0.8], [0, 1, 1], {}, "labels"),
        ([0.2, 1.8], [0, 1], {}, r"\[0, 1\]"),
        ([0.2, 0.8], [0, 0.5], {}, "0 or 1"),
        ([0.2, 0.8], [0, 1], {"body_parts": ["hip"]}, "body parts"),
        ([0.2, 0.8], [0, 1], {"count_true": [0, 1]}, "count"),
        ([0.2, 0.8], [0, 1], {"hardware_scores": [0.1, 0.2]}, "hardware"),
        ([0.2, 0.8], [0, 1], {"n_bootstrap": -1}, "n_bootstrap"),
    ],
)
def test_degenerate_inputs_raise(
    p: list[float], y: list[float], kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        evaluate_predictions(p, y, point=POINT, **kwargs)  # type: ignore[arg-type]


def full_report(n: int = 400) -> EvaluationReport:
    p, y = scored(n, seed=9, separation=1.2)
    parts = [("wrist", "hip", "elbow", None)[i % 4] for i in range(n)]
    return evaluate_predictions(
        p,
        y,
        point=Thresholds(POINT, {"hip": OperatingPoint(0.4, 0.25, 0.6)}),
        body_parts=parts,
        count_true=np.arange(n) % 3,
        count_pred=np.zeros(n, dtype=int),
        hardware_scores=p,
        hardware_labels=y,
        n_bootstrap=200,
    )


def test_report_json_round_trips() -> None:
    report = full_report()
    data = report.as_json()
    text = json.dumps(data, allow_nan=False)
    assert json.loads(text) == data
    assert data["roc"]["thresholds"][0] is None  # inf at the origin
    assert data["thresholds"]["per_body_part"]["hip"]["threshold"] == 0.4
    assert data["at_threshold"]["sensitivity_ci"]["low"] <= data["at_threshold"]["sensitivity"]
    assert len(data["reliability"]) == 10
    assert data["auc_ci_method"].startswith("percentile bootstrap")


def _assert_real_png(path: Path) -> None:
    assert path.stat().st_size > 0
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.width > 100 and image.height > 100
        pixels = np.asarray(image.convert("L"), dtype=np.float64)
    assert pixels.var() > 0  # not blank


def test_write_report_writes_json_and_plots(tmp_path: Path) -> None:
    report = full_report()
    written = write_report(report, tmp_path / "out")
    names = sorted(p.name for p in written)
    expected = ["body_parts.png", "calibration.png", "confusion.png", "report.json", "roc.png"]
    assert names == expected
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == names  # no temp files left
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    assert data == report.as_json()
    for path in written:
        if path.suffix == ".png":
            _assert_real_png(path)


def test_write_report_without_body_parts_skips_that_plot(tmp_path: Path) -> None:
    report = evaluate_predictions(P6, Y6, point=POINT, n_bootstrap=0)
    written = write_report(report, tmp_path)
    assert sorted(p.name for p in written) == [
        "calibration.png",
        "confusion.png",
        "report.json",
        "roc.png",
    ]
    for path in written[1:]:
        _assert_real_png(path)
