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


def test_the_auto_choice_is_measured_once_per_bundle_and_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from models import loading
    from models.runtime_cache import RuntimeChoiceCache, host_fingerprint

    cache = RuntimeChoiceCache(tmp_path / "cache" / "runtime-choice.json")
    measured: list[int] = []
    choose = loading.choose_runtime

    def counting(*args: object, **kwargs: object) -> object:
        measured.append(1)
        return choose(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(loading, "choose_runtime", counting)
    first = load_classifier(phantom_bundle_path(), runtime="auto", threads=1, cache=cache)
    assert measured == [1] and first.choice is not None
    sha = first.model.info.sha256
    assert cache.get(sha, host_fingerprint(1)) == first.runtime

    again = load_classifier(phantom_bundle_path(), runtime="auto", threads=1, cache=cache)
    assert measured == [1]  # not measured again
    assert again.runtime == first.runtime and again.choice is None
    images = _prepared(again.model.metadata.preprocess, 2)
    for x, y in zip(
        first.classifier.predict(images), again.classifier.predict(images), strict=True
    ):
        assert abs(x.fracture_probability - y.fracture_probability) <= 1e-6

    # another thread count is another host configuration: measured again
    load_classifier(phantom_bundle_path(), runtime="auto", threads=2, cache=cache)
    assert measured == [1, 1]


def test_a_damaged_cache_or_an_unbuildable_runtime_means_choosing_again(tmp_path: Path) -> None:
    from models.runtime_cache import RuntimeChoiceCache, host_fingerprint

    path = tmp_path / "runtime-choice.json"
    path.write_text("{not json")
    cache = RuntimeChoiceCache(path)
    assert cache.get("ab" * 32, host_fingerprint(1)) is None
    ready = load_classifier(phantom_bundle_path(), runtime="auto", threads=1, cache=cache)
    assert ready.choice is not None  # measured; the file rewritten
    sha = ready.model.info.sha256
    assert RuntimeChoiceCache(path).get(sha, host_fingerprint(1)) == ready.runtime
    cache.put(sha, host_fingerprint(1), "no-such-runtime")
    again = load_classifier(phantom_bundle_path(), runtime="auto", threads=1, cache=cache)
    assert again.choice is not None and again.runtime != "no-such-runtime"
