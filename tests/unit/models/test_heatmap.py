"""models.heatmap: input-space heatmaps land on the right source pixels."""

from __future__ import annotations

import numpy as np
import pytest

from models.geometry import Geometry
from models.heatmap import heatmap_to_source


def test_a_hot_spot_maps_to_the_same_place_in_the_source() -> None:
    # Source 200x100, crop rows 10..190 and cols 0..100, scaled by 0.5 into a 100 square:
    # content 90x50 placed at (5, 25).
    g = Geometry(200, 100, (10, 0, 190, 100), 0.5, 5, 25, 100, 90, 50)
    heat = np.zeros((100, 100), dtype=np.float32)
    heat[45:55, 45:55] = 1.0  # input rows 45..55 -> source 90..110; cols 45..55 -> 40..60
    out = heatmap_to_source(heat, g)
    assert out.shape == (200, 100) and out.dtype == np.float32
    rows, cols = np.nonzero(out > 0.5)
    assert 88 <= rows.min() <= 92 and 108 <= rows.max() <= 112
    assert 38 <= cols.min() <= 42 and 58 <= cols.max() <= 62
    assert out[:10].max() == 0.0 and out[190:].max() == 0.0  # outside the crop
    assert out.min() >= 0.0 and out.max() <= 1.0


def test_a_heatmap_of_the_wrong_size_is_refused() -> None:
    g = Geometry(64, 64, (0, 0, 64, 64), 1.0, 0, 0, 64, 64, 64)
    with pytest.raises(ValueError, match="expects 64x64"):
        heatmap_to_source(np.zeros((32, 32), dtype=np.float32), g)
