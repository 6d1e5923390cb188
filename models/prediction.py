"""What the classifier returns: one :class:`Prediction` per image, a :class:`StudyPrediction`.

Plain data (probabilities, codes, boxes, model version) for the result objects; no strings
formatted for people.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from models.decision import Thresholds, decide
from models.labels import COUNT_CLASSES, Decision

__all__ = ["Prediction", "StudyPrediction", "aggregate_study"]

SourceBox = tuple[float, float, float, float]


def _check_probability(name: str, value: float) -> None:
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"{name} must be in [0, 1], got {value}")


@dataclass(frozen=True, eq=False)
class Prediction:
    """The model's output for one image.

    ``fracture_probability`` is temperature-calibrated; ``decision`` applies the operating
    point of ``threshold_body_part`` (the hint if one was given, else the predicted part).
    ``heatmap``: the localisation head's map (or Grad-CAM of the fracture logit for a network
    without one), float32, input resolution, [0, 1], read-only; all zero when the map has no
    positive evidence (then there are no boxes), else its maximum over the image content is 1.
    ``boxes``: ``(row0, col0, row1, col1)`` in source image pixels (continuous, pixel
    ``(i, j)`` covers ``[i, i+1) x [j, j+1)``), one per region at >= half the heatmap's
    maximum, strongest first, at most three; none when the decision is absent.
    """

    fracture_probability: float
    decision: Decision
    count_probabilities: tuple[float, float, float]
    count: str
    body_part: str
    body_part_probability: float
    hardware_probability: float
    hardware: bool
    heatmap: npt.NDArray[np.float32]
    boxes: tuple[SourceBox, ...]
    model_name: str
    model_version: str
    threshold_body_part: str | None = None

    def __post_init__(self) -> None:
        _check_probability("fracture_probability", self.fracture_probability)
        _check_probability("body_part_probability", self.body_part_probability)
        _check_probability("hardware_probability", self.hardware_probability)
        if len(self.count_probabilities) != len(COUNT_CLASSES):
            raise ValueError("count_probabilities needs one value per count class")
        for value in self.count_probabilities:
            _check_probability("count probability", value)
        if self.count not in COUNT_CLASSES:
            raise ValueError(f"unknown count {self.count!r}")
        heatmap = np.array(self.heatmap, dtype=np.float32, copy=True)
        if heatmap.ndim != 2 or (heatmap.size and not 0.0 <= heatmap.min() <= heatmap.max() <= 1.0):
            raise ValueError("heatmap must be 2-D with values in [0, 1]")
        heatmap.setflags(write=False)
        object.__setattr__(self, "heatmap", heatmap)
        object.__setattr__(self, "decision", Decision(self.decision))


@dataclass(frozen=True)
class StudyPrediction:
    """Images of one study combined (MURA-style): the study is as positive as its most
    positive image. ``decision`` uses the operating point of that image's body part.
    ``count`` is the largest per-image count class.
    """

    fracture_probability: float
    mean_fracture_probability: float
    decision: Decision
    count: str
    body_parts: tuple[str, ...]
    hardware: bool
    image_count: int
    strongest_image: int
    model_name: str
    model_version: str


def aggregate_study(predictions: Sequence[Prediction], thresholds: Thresholds) -> StudyPrediction:
    """Combine the per-image predictions of one study (max rule; mean kept for reference)."""
    if not predictions:
        raise ValueError("a study needs at least one prediction")
    versions = {(p.model_name, p.model_version) for p in predictions}
    if len(versions) != 1:
        raise ValueError(f"predictions come from different models: {sorted(versions)}")
    probabilities = [p.fracture_probability for p in predictions]
    strongest = max(range(len(predictions)), key=probabilities.__getitem__)
    top = predictions[strongest]
    part = top.threshold_body_part or top.body_part
    parts = tuple(dict.fromkeys(p.body_part for p in predictions))
    count = max((p.count for p in predictions), key=COUNT_CLASSES.index)
    return StudyPrediction(
        fracture_probability=probabilities[strongest],
        mean_fracture_probability=statistics.fmean(probabilities),
        decision=decide(probabilities[strongest], thresholds.for_body_part(part)),
        count=count,
        body_parts=parts,
        hardware=any(p.hardware for p in predictions),
        image_count=len(predictions),
        strongest_image=strongest,
        model_name=top.model_name,
        model_version=top.model_version,
    )
