"""models.decision: the decision bands, per-body-part overrides, temperature scaling."""

from __future__ import annotations

import numpy as np
import pytest

from models.decision import (
    OperatingPoint,
    Thresholds,
    apply_temperature,
    calibrate_temperature,
    decide,
    sigmoid,
)
from models.labels import BODY_PARTS, COUNT_CLASSES, Decision

POINT = OperatingPoint(threshold=0.5, indeterminate_low=0.3, indeterminate_high=0.7)


@pytest.mark.parametrize(
    ("p", "expected"),
    [
        (0.0, Decision.ABSENT),
        (0.2999, Decision.ABSENT),
        (0.3, Decision.INDETERMINATE),  # the low edge is indeterminate
        (0.5, Decision.INDETERMINATE),
        (0.6999, Decision.INDETERMINATE),
        (0.7, Decision.PRESENT),  # the high edge is present
        (1.0, Decision.PRESENT),
    ],
)
def test_decide_bands(p: float, expected: Decision) -> None:
    assert decide(p, POINT) is expected


def test_binary_point_has_no_indeterminate_band() -> None:
    point = OperatingPoint.binary(0.4)
    assert decide(0.4, point) is Decision.PRESENT
    assert decide(0.3999, point) is Decision.ABSENT


@pytest.mark.parametrize(
    "values", [(0.5, 0.6, 0.7), (0.5, 0.3, 0.4), (0.5, -0.1, 0.7), (0.5, 0.3, 1.5)]
)
def test_operating_point_validation(values: tuple[float, float, float]) -> None:
    with pytest.raises(ValueError):
        OperatingPoint(*values)


def test_decide_refuses_a_probability_outside_the_unit_interval() -> None:
    with pytest.raises(ValueError):
        decide(1.01, POINT)


def test_per_body_part_override() -> None:
    strict = OperatingPoint(0.2, 0.1, 0.25)
    thresholds = Thresholds(default=POINT, per_body_part={"wrist": strict})
    assert thresholds.for_body_part("wrist") == strict
    assert thresholds.for_body_part("hip") == POINT
    assert thresholds.for_body_part(None) == POINT
    assert decide(0.3, thresholds.for_body_part("wrist")) is Decision.PRESENT
    assert decide(0.3, thresholds.for_body_part("hip")) is Decision.INDETERMINATE
    with pytest.raises(TypeError):
        thresholds.per_body_part["hip"] = strict  # type: ignore[index]


@pytest.mark.parametrize("true_temperature", [0.5, 2.5])
def test_calibration_recovers_a_known_temperature(true_temperature: float) -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(0.0, 3.0, 20_000)
    labels = (rng.random(logits.size) < sigmoid(logits / true_temperature)).astype(float)
    fitted = calibrate_temperature(logits, labels)
    assert fitted == pytest.approx(true_temperature, rel=0.08)


def test_temperature_application_and_checks() -> None:
    assert apply_temperature([0.0, 2.0], 2.0) == pytest.approx([0.5, float(sigmoid(1.0))])
    assert sigmoid([-1000.0, 1000.0]) == pytest.approx([0.0, 1.0])
    with pytest.raises(ValueError):
        apply_temperature([1.0], 0.0)
    with pytest.raises(ValueError):
        calibrate_temperature([1.0, 2.0], [1, 2])
    with pytest.raises(ValueError):
        calibrate_temperature([], [])


def test_label_vocabularies() -> None:
    assert COUNT_CLASSES == ("0", "1", "2+")
    assert "wrist" in BODY_PARTS and len(set(BODY_PARTS)) == len(BODY_PARTS)
    assert [d.value for d in Decision] == ["present", "absent", "indeterminate"]
