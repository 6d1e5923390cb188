"""models.inference: Classifier.predict on prepared synthetic DICOMs, Grad-CAM, study rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.bundle import LoadedModel, load_bundle, save_bundle
from models.bundle_metadata import BundleMetadata
from models.decision import OperatingPoint, Thresholds, decide
from models.inference import Classifier, content_mask, grad_cam
from models.labels import BODY_PARTS, COUNT_CLASSES, Decision
from models.network import build_network
from models.prediction import Prediction, aggregate_study
from models.preprocess import PreparedImage, PreprocessParams, prepare
from models.regions import strongest_regions
from models.synthetic import generate_case, to_dicom

torch.set_num_threads(1)

SIZE = 64
DEFAULT = OperatingPoint(0.5, 0.4, 0.6)
THRESHOLDS = Thresholds(DEFAULT, {"wrist": OperatingPoint(0.0, 0.0, 0.0)})


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("bundle")
    meta = BundleMetadata(
        name="tiny",
        version="0.1",
        arch="resnet18",
        body_parts=BODY_PARTS,
        preprocess=PreprocessParams(input_size=SIZE),
        thresholds=THRESHOLDS,
        temperature=2.0,
    )
    save_bundle(directory, build_network("resnet18"), meta)
    return load_bundle(Path(directory))


@pytest.fixture(scope="module")
def images() -> list[PreparedImage]:
    params = PreprocessParams(input_size=SIZE)
    cases = [generate_case(3, 96, fracture=True), generate_case(4, 128, fracture=False)]
    tall = generate_case(5, 96, fracture=True)
    wide = to_dicom(tall)
    wide.PixelData = np.ascontiguousarray(tall.image[:, :64]).tobytes()
    wide.Columns = 64  # a non-square image: letterbox padding on the sides
    return [prepare(to_dicom(c), params) for c in cases] + [prepare(wide, params)]


def _check(prediction: Prediction, image: PreparedImage, model: LoadedModel) -> None:
    assert 0.0 <= prediction.fracture_probability <= 1.0
    assert prediction.count in COUNT_CLASSES
    assert sum(prediction.count_probabilities) == pytest.approx(1.0, abs=1e-5)
    assert prediction.body_part in BODY_PARTS
    assert 0.0 <= prediction.body_part_probability <= 1.0
    assert prediction.hardware == (prediction.hardware_probability >= 0.5)
    point = THRESHOLDS.for_body_part(prediction.threshold_body_part)
    assert prediction.decision is decide(prediction.fracture_probability, point)
    heat = prediction.heatmap
    assert heat.shape == (SIZE, SIZE) and heat.dtype == np.float32
    assert float(heat.min()) >= 0.0 and float(heat.max()) <= 1.0
    assert not heat.flags.writeable
    assert not heat[~content_mask(image.geometry)].any()
    assert len(prediction.boxes) <= 3
    # Grad-CAM may be all zero; an "absent" decision never carries a box.
    drawn = float(heat.max()) > 0.0 and prediction.decision is not Decision.ABSENT
    assert bool(prediction.boxes) == drawn
    g = image.geometry
    assert all(type(v) is float for box in prediction.boxes for v in box)
    for r0, c0, r1, c1 in prediction.boxes:
        assert 0 <= r0 < r1 <= g.source_rows and 0 <= c0 < c1 <= g.source_cols
    # Mapped back to the input, the boxes are those of the heatmap's strongest regions.
    regions = strongest_regions(heat) if drawn else []
    back = [g.box_to_input(*box) for box in prediction.boxes]
    assert len(back) == len(regions)
    if back:
        assert np.allclose(back, [r.box for r in regions], atol=1.0)  # clipped to the crop
    assert (prediction.model_name, prediction.model_version) == ("tiny", "0.1")


def test_predict_on_prepared_synthetic_dicoms(
    model: LoadedModel, images: list[PreparedImage]
) -> None:
    predictions = Classifier(model, batch_size=2).predict(images)
    assert len(predictions) == len(images)
    for prediction, image in zip(predictions, images, strict=True):
        _check(prediction, image, model)
        assert prediction.threshold_body_part == prediction.body_part
    for p in predictions:
        assert float(p.heatmap.max()) in (0.0, pytest.approx(1.0))
    assert any(p.boxes for p in predictions)


def test_batching_does_not_change_results(model: LoadedModel, images: list[PreparedImage]) -> None:
    one = Classifier(model, batch_size=1).predict(images)
    many = Classifier(model, batch_size=8).predict(images)
    for a, b in zip(one, many, strict=True):
        assert a.fracture_probability == pytest.approx(b.fracture_probability, abs=1e-5)
        assert np.allclose(a.heatmap, b.heatmap, atol=1e-4)


def test_temperature_is_applied(model: LoadedModel, images: list[PreparedImage]) -> None:
    prediction = Classifier(model).predict(images[:1])[0]
    with torch.inference_mode():
        logit = model.network(torch.from_numpy(np.array(images[0].pixels))[None, None])
    expected = torch.sigmoid(logit.fracture / 2.0).item()
    assert prediction.fracture_probability == pytest.approx(expected, abs=1e-5)


def test_body_part_hint_selects_the_override(
    model: LoadedModel, images: list[PreparedImage]
) -> None:
    # The "wrist" point calls everything present; the hint must choose it.
    predictions = Classifier(model).predict(images[:2], ["wrist", None])
    assert predictions[0].threshold_body_part == "wrist"
    assert predictions[0].decision is Decision.PRESENT
    assert predictions[1].threshold_body_part == predictions[1].body_part
    with pytest.raises(ValueError, match="one entry per image"):
        Classifier(model).predict(images[:2], ["wrist"])


def test_wrong_input_size_is_refused(model: LoadedModel) -> None:
    image = prepare(to_dicom(generate_case(1, 96)), PreprocessParams(input_size=32))
    with pytest.raises(ValueError, match="expects 64x64"):
        Classifier(model).predict([image])


def test_grad_cam_follows_the_gradient() -> None:
    features = torch.zeros(1, 2, 4, 4)
    features[0, 0, 1, 1] = 1.0  # channel 0 fires top-left, channel 1 bottom-right
    features[0, 1, 3, 3] = 1.0
    features.requires_grad_(True)
    logit = (features[:, 0].mean(dim=(1, 2)) - features[:, 1].mean(dim=(1, 2))).reshape(1)
    cam = grad_cam(features, logit, 8)
    assert cam.shape == (1, 8, 8)
    assert float(cam[0, :4, :4].max()) == pytest.approx(1.0)
    assert float(cam[0, 5:, 5:].max()) == 0.0


def _prediction(p: float, part: str, count: str, decision: Decision | None = None) -> Prediction:
    return Prediction(
        fracture_probability=p,
        decision=decision or decide(p, THRESHOLDS.for_body_part(part)),
        count_probabilities=(1.0, 0.0, 0.0),
        count=count,
        body_part=part,
        body_part_probability=0.9,
        hardware_probability=0.1,
        hardware=False,
        heatmap=np.zeros((4, 4), dtype=np.float32),
        boxes=(),
        model_name="tiny",
        model_version="0.1",
    )


def test_aggregate_study_max_rule() -> None:
    preds = [
        _prediction(0.2, "hand", "0"),
        _prediction(0.65, "hand", "2+"),
        _prediction(0.3, "hip", "1"),
    ]
    study = aggregate_study(preds, THRESHOLDS)
    assert study.fracture_probability == pytest.approx(0.65)
    assert study.mean_fracture_probability == pytest.approx((0.2 + 0.65 + 0.3) / 3)
    assert study.decision is Decision.PRESENT
    assert study.count == "2+"
    assert study.body_parts == ("hand", "hip")
    assert study.strongest_image == 1 and study.image_count == 3
    low = aggregate_study(
        [_prediction(0.45, "hand", "1"), _prediction(0.1, "hip", "0")], THRESHOLDS
    )
    assert low.decision is Decision.INDETERMINATE and low.count == "1"
    # The strongest image's body part chooses the operating point.
    wrist = aggregate_study([_prediction(0.05, "wrist", "0")], THRESHOLDS)
    assert wrist.decision is Decision.PRESENT
    with pytest.raises(ValueError):
        aggregate_study([], THRESHOLDS)


def test_prediction_validation() -> None:
    with pytest.raises(ValueError, match="fracture_probability"):
        _prediction(1.5, "hand", "0", Decision.PRESENT)
    with pytest.raises(ValueError, match="count"):
        _prediction(0.5, "hand", "3")
