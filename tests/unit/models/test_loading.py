"""models.loading: a bundle plus the [model] settings -> a classifier on the chosen runtime."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.bundle import default_bundle_path, phantom_bundle_path
from models.loading import load_classifier
from models.preprocess import PreparedImage, PreprocessParams, prepare
from models.synthetic import generate_case, to_dicom


def _prepared(params: PreprocessParams, n: int) -> list[PreparedImage]:
    return [prepare(to_dicom(generate_case(50 + i, 512)), params) for i in range(n)]


@pytest.mark.parametrize(
    "bundle",
    [
        pytest.param(phantom_bundle_path(), id="phantom"),
        pytest.param(default_bundle_path(), id="default", marks=pytest.mark.slow),
    ],
)
def test_auto_runtime_matches_eager(bundle: Path) -> None:
    eager = load_classifier(bundle, runtime="eager", threads=2)
    auto = load_classifier(bundle, runtime="auto", threads=2)
    assert eager.runtime == "eager" and eager.choice is None
    assert auto.choice is not None and auto.runtime == auto.choice.name
    passed = [r for r in auto.choice.records if r.passed]
    assert auto.runtime in {r.name for r in passed}
    assert all(r.max_abs_diff is not None and r.max_abs_diff <= 1e-3 for r in passed)
    images = _prepared(eager.model.metadata.preprocess, 3)
    a = eager.classifier.predict(images)
    b = auto.classifier.predict(images)
    for x, y in zip(a, b, strict=True):
        assert abs(x.fracture_probability - y.fracture_probability) <= 1e-3
        assert x.decision == y.decision and x.body_part == y.body_part


def test_a_named_runtime_is_used() -> None:
    ready = load_classifier(phantom_bundle_path(), runtime="channels_last", threads=1)
    assert ready.runtime == "channels_last"
