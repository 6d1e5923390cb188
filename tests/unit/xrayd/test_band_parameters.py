"""The indeterminate band a study page explains is the one its analysis decided with: the model's
decision parameters recorded with the analysis hold the default band and each body part's own."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from models.bundle import LoadedModel
from models.decision import OperatingPoint, Thresholds
from xrayd.pipeline.predictions_to_findings import algorithm_of
from xrayd.web.verdict import indeterminate_band

DEFAULT = OperatingPoint(threshold=0.86, indeterminate_low=0.79, indeterminate_high=0.94)
WRIST = OperatingPoint(threshold=0.5, indeterminate_low=0.4, indeterminate_high=0.6)


def _model() -> LoadedModel:
    # algorithm_of reads only these attributes of a loaded model
    meta = SimpleNamespace(
        name="m",
        version="1",
        temperature=1.0,
        input_size=224,
        arch="efficientnet",
        thresholds=Thresholds(default=DEFAULT, per_body_part={"wrist": WRIST}),
    )
    return cast(LoadedModel, SimpleNamespace(metadata=meta, info=SimpleNamespace(sha256="ab" * 32)))


def _analysis(body_part: str, threshold_body_part: str | None) -> dict[str, Any]:
    params = algorithm_of(_model()).parameters
    image = {
        "fracture_probability": 0.5,
        "body_part": body_part,
        "threshold_body_part": threshold_body_part,
    }
    return {"model": {"parameters": dict(params)}, "images": [image]}


def test_a_body_part_with_its_own_point_is_explained_with_its_own_band() -> None:
    assert indeterminate_band(_analysis("wrist", "wrist")) == (0.4, 0.6)


def test_other_body_parts_are_explained_with_the_default_band() -> None:
    assert indeterminate_band(_analysis("hip", None)) == (0.79, 0.94)
