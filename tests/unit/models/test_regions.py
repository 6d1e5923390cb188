"""models.regions: connected components and the strongest heatmap regions."""

from __future__ import annotations

import numpy as np
import pytest

from models.regions import label_components, strongest_regions


def test_label_components_four_connectivity() -> None:
    mask = np.array(
        [
            [1, 1, 0, 0, 1],
            [0, 1, 0, 1, 1],
            [0, 0, 1, 0, 0],  # touches the others only diagonally
            [1, 0, 1, 1, 0],
        ],
        dtype=bool,
    )
    labels, count = label_components(mask)
    assert count == 4
    assert labels[0, 0] == labels[1, 1] != 0
    assert labels[0, 4] == labels[1, 3]
    assert labels[2, 2] == labels[3, 3] != labels[1, 1]
    assert labels[3, 0] not in (0, labels[0, 0], labels[2, 2], labels[0, 4])
    assert (labels == 0).sum() == (~mask).sum()


def test_u_shape_merges_into_one_component() -> None:
    mask = np.zeros((5, 5), dtype=bool)
    mask[0:4, 0] = mask[0:4, 4] = mask[4, :] = True
    _, count = label_components(mask)
    assert count == 1


def test_strongest_regions_boxes_and_order() -> None:
    heat = np.zeros((20, 30), dtype=np.float32)
    heat[2:5, 3:8] = 0.6
    heat[10:15, 20:26] = 1.0
    heat[17:19, 0:2] = 0.55
    heat[0, 29] = 0.2  # below half the peak
    regions = strongest_regions(heat, limit=2)
    assert [r.box for r in regions] == [(10, 20, 15, 26), (2, 3, 5, 8)]
    assert regions[0].peak == pytest.approx(1.0)
    assert len(strongest_regions(heat)) == 3
    assert strongest_regions(np.zeros((4, 4))) == []
