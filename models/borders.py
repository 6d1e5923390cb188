"""Find uniform collimation (shutter) borders at the edges of a radiograph."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

Box = tuple[int, int, int, int]
#: an element-wise map of the given values to the values judged (e.g. the Modality LUT)
Transform = Callable[[npt.NDArray[Any]], npt.NDArray[np.floating]]


def _apply(sample: npt.NDArray[Any], transform: Transform | None) -> npt.NDArray[np.float64]:
    """The sampled pixels as float64 values, through ``transform`` when given."""
    return np.asarray(transform(sample) if transform is not None else sample, dtype=np.float64)


def _uniform_run(spread: npt.NDArray[np.float64], limit: float) -> tuple[int, int]:
    """Lengths of the runs of uniform lines at the start and at the end."""
    flat = spread <= limit
    n = flat.size
    head = n if flat.all() else int(np.argmin(flat))
    tail = n if flat.all() else int(np.argmin(flat[::-1]))
    return head, tail


def _line_spread(
    values: npt.NDArray[Any], step: int, transform: Transform | None
) -> npt.NDArray[np.float64]:
    """Per-row spread (2nd to 98th percentile) on every ``step``-th column."""
    sample = _apply(values[:, ::step], transform)
    low, high = np.percentile(sample, [2.0, 98.0], axis=1)
    return np.asarray(high - low, dtype=np.float64)


def find_uniform_borders(
    values: npt.NDArray[Any],
    *,
    tolerance: float,
    min_extent: int,
    transform: Transform | None = None,
) -> Box:
    """Return ``(row0, col0, row1, col1)`` without the nearly constant rows/columns at the edges.

    A line is "nearly constant" when its 2-98 percentile spread is at most ``tolerance`` times
    the image's robust range (0.5-99.5 percentiles). Rows are judged on the columns kept so far
    and vice versa, for a few rounds, so that a dark top border does not hide a bright side
    border. If less than ``min_extent`` would remain along an axis, that axis is not cropped.
    ``transform`` (element-wise) maps ``values`` to the values judged, applied to the sampled
    lines only: ``values`` may be the stored integers rather than a full-size float image.
    """
    rows, cols = values.shape
    step = max(1, max(rows, cols) // 512)
    low, high = np.percentile(_apply(values[::step, ::step], transform), [0.5, 99.5])
    limit = tolerance * float(high - low)
    if limit <= 0:
        return (0, 0, rows, cols)
    row0, col0, row1, col1 = 0, 0, rows, cols
    for _ in range(3):
        before = (row0, col0, row1, col1)
        head, tail = _uniform_run(_line_spread(values[:, col0:col1], step, transform), limit)
        if rows - head - tail >= min_extent:
            row0, row1 = head, rows - tail
        head, tail = _uniform_run(_line_spread(values[row0:row1, :].T, step, transform), limit)
        if cols - head - tail >= min_extent:
            col0, col1 = head, cols - tail
        if (row0, col0, row1, col1) == before:
            break
    return (row0, col0, row1, col1)
