"""models.operating_point: the highest threshold meeting a sensitivity target, the band."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.decision import OperatingPoint, decide
from models.labels import Decision
from models.metrics import sensitivity_specificity
from models.operating_point import (
    DEFAULT_BAND,
    band_around,
    choose_operating_point,
    choose_thresholds,
    per_body_part_points,
    threshold_for_sensitivity,
)

# Ten positives scored 0.95, 0.85, ..., 0.05 and five negatives.
POSITIVES = [0.95, 0.85, 0.75, 0.65, 0.55, 0.45, 0.35, 0.25, 0.15, 0.05]
NEGATIVES = [0.5, 0.3, 0.2, 0.1, 0.0]
P = POSITIVES + NEGATIVES
Y = [1] * 10 + [0] * 5


def logit(p: float) -> float:
    return math.log(p / (1 - p))


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (0.1, 0.95),  # one positive of ten is enough
        (0.8, 0.25),  # eight of ten
        (0.85, 0.15),  # 8.5 -> nine of ten
        (0.9, 0.15),
        (0.95, 0.05),  # 9.5 -> all ten
        (1.0, 0.05),
    ],
)
def test_threshold_is_the_kth_highest_positive_score(target: float, expected: float) -> None:
    assert threshold_for_sensitivity(P, Y, target) == expected


def test_threshold_is_the_highest_meeting_the_target() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300)
    p = np.round(rng.beta(2, 2, 300) * 0.5 + 0.4 * y, 2)  # rounded: many ties
    for target in (0.5, 0.8, 0.9, 0.95, 0.99, 1.0):
        t = threshold_for_sensitivity(p, y, target)
        sens, _ = sensitivity_specificity(p, y, t)
        assert sens is not None and sens >= target
        higher = np.unique(p[p > t])
        for candidate in higher:
            above, _ = sensitivity_specificity(p, y, float(candidate))
            assert above is not None and above < target


def test_ties_at_the_threshold_are_all_called() -> None:
    # Three positives tie at 0.5: the threshold for 50 % is 0.5 and calls all three (75 %).
    p, y = [0.5, 0.5, 0.5, 0.2, 0.1], [1, 1, 1, 1, 0]
    t = threshold_for_sensitivity(p, y, 0.5)
    assert t == 0.5
    assert sensitivity_specificity(p, y, t)[0] == pytest.approx(0.75)


def test_float_rounding_of_the_target_count() -> None:
    # 0.95 * 20 is 19 up to rounding: 19 of 20 positives must be enough (not all 20).
    p = [i / 100 for i in range(1, 21)] + [0.0]
    y = [1] * 20 + [0]
    assert threshold_for_sensitivity(p, y, 0.95) == 0.02
    # 0.07 * 100 is 7.000000000000001 in floating point, yet 7 / 100 >= 0.07: seven suffice.
    p = [i / 1000 for i in range(1, 101)] + [0.0]
    y = [1] * 100 + [0]
    t = threshold_for_sensitivity(p, y, 0.07)
    assert t == 0.094  # the 7th highest of 0.001 .. 0.100
    assert sensitivity_specificity(p, y, t)[0] == 0.07


@pytest.mark.parametrize(
    ("p", "y", "message"),
    [
        ([], [], "no cases"),
        ([0.2, 0.8], [1, 1], "no negative"),
        ([0.2, 0.8], [0, 0], "no positive"),
        ([0.2, 0.8], [0, 2], "0 or 1"),
        ([0.2, 1.3], [0, 1], r"\[0, 1\]"),
        ([0.2, float("nan")], [0, 1], "finite"),
        ([0.2, 0.8, 0.5], [0, 1], "labels"),
    ],
)
def test_degenerate_inputs_raise(p: list[float], y: list[int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        choose_operating_point(p, y)


@pytest.mark.parametrize("target", [0.0, -0.1, 1.01, float("nan")])
def test_target_outside_unit_interval_raises(target: float) -> None:
    with pytest.raises(ValueError, match="target"):
        choose_operating_point(P, Y, target_sensitivity=target)


def test_band_is_a_factor_of_two_in_odds_by_default() -> None:
    assert math.isclose(DEFAULT_BAND, math.log(2))
    point = band_around(0.5)
    assert point.indeterminate_low == pytest.approx(1 / 3)
    assert point.indeterminate_high == pytest.approx(2 / 3)
    # Threshold 0.2: odds 1/4 -> 1/8 and 1/2 -> probabilities 1/9 and 1/3.
    point = band_around(0.2)
    assert point.indeterminate_low == pytest.approx(1 / 9)
    assert point.indeterminate_high == pytest.approx(1 / 3)


@pytest.mark.parametrize("t", [0.01, 0.2, 0.5, 0.93])
def test_band_is_symmetric_in_log_odds(t: float) -> None:
    point = band_around(t, 1.5)
    assert logit(point.indeterminate_high) - logit(t) == pytest.approx(1.5)
    assert logit(t) - logit(point.indeterminate_low) == pytest.approx(1.5)


def test_zero_band_and_extreme_thresholds_are_binary() -> None:
    assert band_around(0.3, 0.0) == OperatingPoint.binary(0.3)
    assert band_around(0.0) == OperatingPoint.binary(0.0)
    assert band_around(1.0) == OperatingPoint.binary(1.0)
    with pytest.raises(ValueError, match="band"):
        band_around(0.3, -0.1)
    with pytest.raises(ValueError, match="band"):
        choose_operating_point(P, Y, band=float("inf"))


def test_no_case_at_or_above_the_threshold_is_called_absent() -> None:
    point = choose_operating_point(P, Y, target_sensitivity=0.8)
    assert point.threshold == 0.25
    assert point.indeterminate_low < 0.25 < point.indeterminate_high
    for p in P:
        if p >= point.threshold:
            assert decide(p, point) is not Decision.ABSENT
    # The positive at 0.15 (logit -1.73) is inside the band (0.25's logit -1.10 +- 0.69).
    assert decide(0.15, point) is Decision.INDETERMINATE
    assert decide(0.05, point) is Decision.ABSENT


def test_per_body_part_points_need_enough_of_each_class() -> None:
    rng = np.random.default_rng(0)
    parts: list[str | None] = []
    p: list[float] = []
    y: list[int] = []
    for part, n_pos, n_neg in [("wrist", 30, 30), ("hip", 30, 5), ("hand", 4, 40)]:
        parts += [part] * (n_pos + n_neg)
        p += list(rng.uniform(0.3, 1.0, n_pos)) + list(rng.uniform(0.0, 0.7, n_neg))
        y += [1] * n_pos + [0] * n_neg
    parts += [None] * 10
    p += list(rng.uniform(0, 1, 10))
    y += [1, 0] * 5
    points = per_body_part_points(p, y, parts, min_positives=20, min_negatives=20)
    assert set(points) == {"wrist"}
    wrist = np.array(parts) == "wrist"
    assert points["wrist"] == choose_operating_point(np.array(p)[wrist], np.array(y)[wrist])
    # Lower minimums admit hip (30 / 5) but not hand (4 positives).
    assert set(per_body_part_points(p, y, parts, min_positives=5, min_negatives=5)) == {
        "wrist",
        "hip",
    }
    thresholds = choose_thresholds(p, y, parts)
    assert thresholds.default == choose_operating_point(p, y)
    assert thresholds.for_body_part("wrist") == points["wrist"]
    assert thresholds.for_body_part("hand") == thresholds.default
    assert choose_thresholds(p, y).per_body_part == {}


def test_per_body_part_points_validate_their_arguments() -> None:
    with pytest.raises(ValueError, match="body parts"):
        per_body_part_points(P, Y, ["wrist"] * 3)
    with pytest.raises(ValueError, match="at least 1"):
        per_body_part_points(P, Y, ["wrist"] * len(P), min_positives=0)
