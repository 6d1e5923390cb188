"""How well a heatmap points at the annotated fracture boxes (pure numpy).

Boxes are ``(row0, col0, row1, col1)`` in model-input pixels, half-open, floats allowed;
pixel ``(i, j)`` covers ``[i, i + 1) x [j, j + 1)`` and its centre is ``(i + 0.5, j + 0.5)``
(as in :mod:`models.geometry`). Per image with at least one true box
(:func:`localise_image`):

* **peak hit**: the heatmap's maximum lies inside a true box. Where several pixels share the
  maximum (an upsampled coarse map has plateaus), the maximal pixel nearest to their centroid
  is taken; an all-zero heatmap shows no evidence and is a miss.
* **top-box hit**: the centre of the strongest predicted box (the first of
  :func:`models.regions.strongest_regions`) lies inside a true box; no predicted box is a miss.
* **best IoU**: the largest intersection over union of the strongest predicted box with a
  true box (0 without a predicted box).

:func:`summarise_localisation` aggregates the images into :class:`LocalisationSummary`: rates
with 95 % Wilson intervals and the mean best IoU, over all images and over those whose
decision draws boxes (present or indeterminate). Images without a true box are counted as
excluded, never as misses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from models.evaluation_stats import Interval, wilson_interval

__all__ = [
    "Box",
    "ImageLocalisation",
    "LocalisationFigures",
    "LocalisationSummary",
    "Rate",
    "best_iou",
    "box_centre",
    "contains",
    "iou",
    "localise_image",
    "peak_position",
    "summarise_localisation",
]

#: ``(row0, col0, row1, col1)``, half-open, in model-input pixels.
Box = tuple[float, float, float, float]


def contains(box: Box, point: tuple[float, float]) -> bool:
    """``point`` ``(row, col)`` lies in the half-open ``box``."""
    r0, c0, r1, c1 = box
    y, x = point
    return r0 <= y < r1 and c0 <= x < c1


def _in_any(boxes: Sequence[Box], point: tuple[float, float]) -> bool:
    return any(contains(b, point) for b in boxes)


def box_centre(box: Box) -> tuple[float, float]:
    """The centre ``(row, col)`` of ``box``."""
    r0, c0, r1, c1 = box
    return ((r0 + r1) / 2.0, (c0 + c1) / 2.0)


def _area(box: Box) -> float:
    r0, c0, r1, c1 = box
    return max(0.0, r1 - r0) * max(0.0, c1 - c0)


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes (0 when both are empty)."""
    rows = min(a[2], b[2]) - max(a[0], b[0])
    cols = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0.0, rows) * max(0.0, cols)
    union = _area(a) + _area(b) - inter
    return inter / union if union > 0.0 else 0.0


def best_iou(box: Box, truths: Sequence[Box]) -> float:
    """The largest IoU of ``box`` with any of ``truths`` (0 without truths)."""
    return max((iou(box, t) for t in truths), default=0.0)


def peak_position(heatmap: npt.NDArray[np.floating]) -> tuple[float, float] | None:
    """The centre ``(row, col)`` of the heatmap's maximal pixel; ``None`` when the map has no
    positive value. Ties: the maximal pixel nearest to the centroid of all maximal pixels."""
    if heatmap.ndim != 2:
        raise ValueError("heatmap must be 2-D")
    if heatmap.size == 0:
        return None
    values = np.nan_to_num(np.asarray(heatmap, dtype=np.float64), nan=0.0)
    peak = float(values.max())
    if not peak > 0.0:
        return None
    rows, cols = np.nonzero(values == peak)
    if rows.size > 1:
        d2 = (rows - rows.mean()) ** 2 + (cols - cols.mean()) ** 2
        k = int(np.argmin(d2))
    else:
        k = 0
    return (float(rows[k]) + 0.5, float(cols[k]) + 0.5)


@dataclass(frozen=True)
class ImageLocalisation:
    """One image's outcome; ``drawn``: its decision draws boxes (present or indeterminate)."""

    peak_hit: bool
    top_box_hit: bool
    best_iou: float
    drawn: bool


def _box(box: Sequence[float]) -> Box:
    if len(box) != 4:
        raise ValueError(f"a box has 4 values (row0, col0, row1, col1), got {len(box)}")
    r0, c0, r1, c1 = (float(v) for v in box)
    return (r0, c0, r1, c1)


def localise_image(
    heatmap: npt.NDArray[np.floating],
    predicted: Sequence[Sequence[float]],
    truths: Sequence[Sequence[float]],
    *,
    drawn: bool,
) -> ImageLocalisation | None:
    """Score ``heatmap`` and its ``predicted`` boxes (strongest first) against ``truths``.

    ``None`` when there is no true box (the image cannot be scored).
    """
    true_boxes = [_box(t) for t in truths]
    if not true_boxes:
        return None
    peak = peak_position(heatmap)
    top = _box(predicted[0]) if predicted else None
    return ImageLocalisation(
        peak_hit=peak is not None and _in_any(true_boxes, peak),
        top_box_hit=top is not None and _in_any(true_boxes, box_centre(top)),
        best_iou=best_iou(top, true_boxes) if top is not None else 0.0,
        drawn=drawn,
    )


@dataclass(frozen=True)
class Rate:
    """``hits`` of ``n`` with the rate and its 95 % Wilson interval (``None`` when ``n`` is 0)."""

    hits: int
    n: int
    rate: float | None
    ci: Interval | None

    @classmethod
    def of(cls, hits: int, n: int) -> Rate:
        return cls(hits, n, hits / n if n else None, wilson_interval(hits, n))


@dataclass(frozen=True)
class LocalisationFigures:
    """The three figures over ``n`` images."""

    n: int
    peak_hit: Rate
    top_box_hit: Rate
    mean_best_iou: float | None


def _figures(outcomes: Sequence[ImageLocalisation]) -> LocalisationFigures:
    n = len(outcomes)
    return LocalisationFigures(
        n=n,
        peak_hit=Rate.of(sum(o.peak_hit for o in outcomes), n),
        top_box_hit=Rate.of(sum(o.top_box_hit for o in outcomes), n),
        mean_best_iou=float(np.mean([o.best_iou for o in outcomes])) if n else None,
    )


def _interval(ci: Interval | None) -> dict[str, float] | None:
    return None if ci is None else {"low": ci.low, "high": ci.high}


def _rate_json(rate: Rate) -> dict[str, Any]:
    return {"hits": rate.hits, "n": rate.n, "rate": rate.rate, "ci": _interval(rate.ci)}


def _figures_json(figures: LocalisationFigures) -> dict[str, Any]:
    return {
        "n": figures.n,
        "peak_hit": _rate_json(figures.peak_hit),
        "top_box_hit": _rate_json(figures.top_box_hit),
        "mean_best_iou": figures.mean_best_iou,
    }


@dataclass(frozen=True)
class LocalisationSummary:
    """Figures of one heatmap ``method`` over the scored images (``all``) and over those whose
    decision draws boxes (``drawn``); ``excluded``: images given without a true box."""

    method: str
    all: LocalisationFigures
    drawn: LocalisationFigures
    excluded: int

    def as_json(self) -> dict[str, Any]:
        """Plain JSON data (intervals as ``{"low", "high"}``, missing values ``None``)."""
        return {
            "method": self.method,
            "excluded_without_boxes": self.excluded,
            "all": _figures_json(self.all),
            "drawn": _figures_json(self.drawn),
        }


def summarise_localisation(
    outcomes: Sequence[ImageLocalisation | None], method: str
) -> LocalisationSummary:
    """Aggregate per-image outcomes; ``None`` entries (no true box) are counted as excluded."""
    scored = [o for o in outcomes if o is not None]
    return LocalisationSummary(
        method=method,
        all=_figures(scored),
        drawn=_figures([o for o in scored if o.drawn]),
        excluded=len(outcomes) - len(scored),
    )
