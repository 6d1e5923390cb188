"""models.localisation_metrics: hit tests, IoU, aggregation with Wilson intervals."""

from __future__ import annotations

import json

import numpy as np
import pytest

from models.evaluation_stats import wilson_interval
from models.localisation_metrics import (
    ImageLocalisation,
    best_iou,
    box_centre,
    contains,
    iou,
    localise_image,
    peak_position,
    summarise_localisation,
)


def test_contains_is_half_open() -> None:
    box = (2.0, 3.0, 6.0, 8.0)
    assert contains(box, (2.0, 3.0))
    assert contains(box, (5.99, 7.99))
    assert not contains(box, (6.0, 5.0))
    assert not contains(box, (4.0, 8.0))
    assert not contains(box, (1.99, 5.0))


def test_iou_of_hand_made_boxes() -> None:
    a = (0.0, 0.0, 10.0, 10.0)
    assert iou(a, a) == pytest.approx(1.0)
    assert iou(a, (0.0, 5.0, 10.0, 15.0)) == pytest.approx(50 / 150)
    assert iou(a, (2.0, 2.0, 4.0, 4.0)) == pytest.approx(4 / 100)
    assert iou(a, (10.0, 0.0, 20.0, 10.0)) == 0.0  # touching edges share no area
    assert iou((1.0, 1.0, 1.0, 1.0), (1.0, 1.0, 1.0, 1.0)) == 0.0
    assert best_iou(a, [(20.0, 20.0, 30.0, 30.0), (0.0, 5.0, 10.0, 15.0)]) == pytest.approx(1 / 3)
    assert best_iou(a, []) == 0.0
    assert box_centre((2.0, 4.0, 6.0, 10.0)) == (4.0, 7.0)


def test_peak_position_is_the_maximal_pixel_centre() -> None:
    heat = np.zeros((16, 16), dtype=np.float32)
    heat[3, 11] = 0.9
    heat[12, 2] = 0.5
    assert peak_position(heat) == (3.5, 11.5)
    assert peak_position(np.zeros((8, 8))) is None
    plateau = np.zeros((16, 16))
    plateau[4:9, 6:9] = 1.0  # 5 x 3 plateau: its middle pixel is (6, 7)
    assert peak_position(plateau) == (6.5, 7.5)


def test_localise_image_hit_tests_and_iou() -> None:
    truths = [(4.0, 4.0, 12.0, 12.0), (20.0, 20.0, 28.0, 28.0)]
    heat = np.zeros((32, 32), dtype=np.float32)
    heat[22, 25] = 1.0  # inside the second true box
    predicted = [(20.0, 20.0, 28.0, 24.0), (0.0, 0.0, 2.0, 2.0)]
    out = localise_image(heat, predicted, truths, drawn=True)
    assert out == ImageLocalisation(peak_hit=True, top_box_hit=True, best_iou=0.5, drawn=True)

    heat = np.zeros((32, 32), dtype=np.float32)
    heat[16, 16] = 1.0  # between the boxes
    # Strongest box first: its centre (1, 1) is outside; the second box does not count.
    out = localise_image(heat, [(0.0, 0.0, 2.0, 2.0), (4.0, 4.0, 12.0, 12.0)], truths, drawn=False)
    assert out == ImageLocalisation(peak_hit=False, top_box_hit=False, best_iou=0.0, drawn=False)

    # A box overlapping a true box whose centre is outside it: a miss with a positive IoU.
    out = localise_image(heat, [(8.0, 8.0, 20.0, 20.0)], truths, drawn=True)
    assert out is not None and not out.top_box_hit
    assert out.best_iou == pytest.approx(16 / (64 + 144 - 16))

    # No predicted box (all-zero heatmap): misses and IoU 0, still scored.
    out = localise_image(np.zeros((32, 32)), [], truths, drawn=True)
    assert out == ImageLocalisation(peak_hit=False, top_box_hit=False, best_iou=0.0, drawn=True)
    # No true box: not scorable.
    assert localise_image(heat, predicted, [], drawn=True) is None


def test_summary_rates_wilson_intervals_and_exclusions() -> None:
    outcomes = [
        ImageLocalisation(True, True, 0.6, True),
        ImageLocalisation(True, False, 0.2, True),
        ImageLocalisation(False, False, 0.0, False),
        ImageLocalisation(True, True, 0.8, False),
        None,
        None,
    ]
    summary = summarise_localisation(outcomes, "localisation head")
    assert summary.excluded == 2
    assert summary.all.n == 4
    assert (summary.all.peak_hit.hits, summary.all.peak_hit.n) == (3, 4)
    assert summary.all.peak_hit.rate == pytest.approx(0.75)
    assert summary.all.peak_hit.ci == wilson_interval(3, 4)
    assert summary.all.top_box_hit.rate == pytest.approx(0.5)
    assert summary.all.top_box_hit.ci == wilson_interval(2, 4)
    assert summary.all.mean_best_iou == pytest.approx(0.4)
    assert summary.drawn.n == 2
    assert summary.drawn.peak_hit.rate == pytest.approx(1.0)
    assert summary.drawn.top_box_hit.rate == pytest.approx(0.5)
    assert summary.drawn.mean_best_iou == pytest.approx(0.4)
    ci = summary.all.peak_hit.ci
    assert ci is not None and ci.low < 0.75 < ci.high

    doc = json.loads(json.dumps(summary.as_json(), allow_nan=False))
    assert doc["method"] == "localisation head"
    assert doc["excluded_without_boxes"] == 2
    assert doc["all"]["peak_hit"] == {
        "hits": 3,
        "n": 4,
        "rate": 0.75,
        "ci": {"low": ci.low, "high": ci.high},
    }
    assert doc["drawn"]["n"] == 2


def test_summary_without_scorable_images_has_no_rates() -> None:
    summary = summarise_localisation([None], "grad-cam")
    assert summary.excluded == 1 and summary.all.n == 0
    assert summary.all.peak_hit.rate is None and summary.all.peak_hit.ci is None
    assert summary.all.mean_best_iou is None
    doc = json.loads(json.dumps(summary.as_json(), allow_nan=False))
    assert doc["all"]["top_box_hit"] == {"hits": 0, "n": 0, "rate": None, "ci": None}
