"""Boxes around the strongest regions of a heatmap (connected components, no scipy).

Components are found on row runs with a union-find: O(rows x runs), fast enough for a
320 x 320 heatmap in pure numpy/Python. Connectivity is 4-neighbour.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["Region", "label_components", "strongest_regions"]


@dataclass(frozen=True)
class Region:
    """A component: half-open pixel box ``(row0, col0, row1, col1)``, peak and summed value."""

    box: tuple[int, int, int, int]
    peak: float
    mass: float


def _runs(row: npt.NDArray[np.bool_]) -> list[tuple[int, int]]:
    padded = np.concatenate(([False], row, [False])).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return [(int(s), int(e)) for s, e in zip(edges[::2], edges[1::2], strict=True)]


def label_components(mask: npt.NDArray[np.bool_]) -> tuple[npt.NDArray[np.int32], int]:
    """4-connected labels (0 = background, 1..n) of a 2-D boolean mask, and n."""
    if mask.ndim != 2:
        raise ValueError("mask must be 2-D")
    parent: list[int] = []

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    rows: list[list[tuple[int, int, int]]] = []  # per row: (start, end, run id)
    previous: list[tuple[int, int, int]] = []
    for r in range(mask.shape[0]):
        current: list[tuple[int, int, int]] = []
        for start, end in _runs(mask[r]):
            run = len(parent)
            parent.append(run)
            for p_start, p_end, p_run in previous:
                if p_start < end and start < p_end:
                    a, b = find(run), find(p_run)
                    if a != b:
                        parent[max(a, b)] = min(a, b)
            current.append((start, end, run))
        rows.append(current)
        previous = current
    labels = np.zeros(mask.shape, dtype=np.int32)
    numbers: dict[int, int] = {}
    for r, current in enumerate(rows):
        for start, end, run in current:
            root = find(run)
            labels[r, start:end] = numbers.setdefault(root, len(numbers) + 1)
    return labels, len(numbers)


def strongest_regions(
    heatmap: npt.NDArray[np.floating], *, fraction: float = 0.5, limit: int = 3
) -> list[Region]:
    """Components of ``heatmap >= fraction * max``, strongest peak first, at most ``limit``.

    An all-zero (or non-positive) heatmap has no regions.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError("fraction must be in (0, 1]")
    peak = float(heatmap.max()) if heatmap.size else 0.0
    if not peak > 0.0:
        return []
    labels, count = label_components(heatmap >= fraction * peak)
    regions: list[Region] = []
    for number in range(1, count + 1):
        where = labels == number
        rows = np.flatnonzero(where.any(axis=1))
        cols = np.flatnonzero(where.any(axis=0))
        values = heatmap[where]
        regions.append(
            Region(
                box=(int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1),
                peak=float(values.max()),
                mass=float(values.sum()),
            )
        )
    regions.sort(key=lambda g: (-g.peak, -g.mass))
    return regions[:limit]
