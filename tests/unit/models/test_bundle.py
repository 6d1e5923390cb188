"""models.bundle: round trip, tampering, schema checks, unknown arch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from models.bundle import METADATA_PATH, WEIGHTS_PATH, load_bundle, save_bundle
from models.bundle_metadata import BundleMetadata
from models.decision import OperatingPoint, Thresholds
from models.errors import BundleError, ModelsError
from models.labels import BODY_PARTS
from models.network import build_network
from models.preprocess import PreprocessParams

torch.set_num_threads(1)


def _metadata(**changes: Any) -> BundleMetadata:
    values: dict[str, Any] = {
        "name": "test-model",
        "version": "1.2.3",
        "arch": "resnet18",
        "body_parts": BODY_PARTS,
        "preprocess": PreprocessParams(input_size=64),
        "thresholds": Thresholds(
            OperatingPoint(0.5, 0.4, 0.6), {"wrist": OperatingPoint(0.3, 0.2, 0.4)}
        ),
        "temperature": 1.7,
        "training_manifest_sha256": "ab" * 32,
        "metrics": {"fracture_auc": 0.75, "sensitivity": None},
    }
    values.update(changes)
    return BundleMetadata(**values)


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    save_bundle(tmp_path / "b", build_network("resnet18"), _metadata())
    return tmp_path / "b"


def _edit(directory: Path, change: Any) -> None:
    path = directory / METADATA_PATH
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


@pytest.mark.parametrize("arch", ["resnet18", "densenet121"])
def test_round_trip_gives_identical_outputs(tmp_path: Path, arch: str) -> None:
    torch.manual_seed(0)
    net = build_network(arch).eval()
    info = save_bundle(tmp_path / "b", net, _metadata(arch=arch))
    loaded = load_bundle(tmp_path / "b", device="auto")
    assert info.sha256 == loaded.info.sha256 and len(info.sha256) == 64
    assert (loaded.info.name, loaded.info.version) == ("test-model", "1.2.3")
    assert loaded.metadata == _metadata(arch=arch)
    assert not loaded.network.training
    x = torch.rand(2, 1, 64, 64)
    with torch.inference_mode():
        a, b = net(x), loaded.network(x)
    for name in ("fracture", "count", "body_part", "hardware"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert not list((tmp_path / "b").rglob("*.tmp"))


def test_tampered_weights_are_refused_before_loading(bundle: Path) -> None:
    weights = bundle / WEIGHTS_PATH
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleError, match="sha256"):
        load_bundle(bundle)


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (lambda d: d.pop("temperature"), "temperature"),
        (lambda d: d.update(temperature="warm"), "temperature"),
        (lambda d: d.update(name=3), "name"),
        (lambda d: d["thresholds"]["default"].pop("indeterminate_low"), "indeterminate_low"),
        (lambda d: d["thresholds"]["default"].update(threshold=True), "threshold"),
        (lambda d: d["preprocessing"].update(input_size=65), "input_size"),
        (lambda d: d["labels"].update(count_classes=["0", "1"]), "count_classes"),
        (lambda d: d["metrics"].update(auc="high"), "metrics.auc"),
        (lambda d: d.update(weights_sha256="0" * 10), "weights_sha256"),
        (lambda d: d["thresholds"]["per_body_part"].update(knee={}), "knee"),
        (lambda d: d.pop("dropout"), "dropout"),
        (lambda d: d.update(dropout=1.5), "dropout"),
        (lambda d: d.update(schema="xrayd-bundle/99"), "schema"),
        (lambda d: d.pop("labels"), "labels"),
        (lambda d: d["preprocessing"].update(modalities="DX"), "modalities"),
        (lambda d: d["thresholds"]["per_body_part"]["wrist"].update(threshold=0.9), "wrist"),
    ],
)
def test_metadata_problems_name_the_key(bundle: Path, change: Any, key: str) -> None:
    _edit(bundle, change)
    with pytest.raises(BundleError, match=key):
        load_bundle(bundle)


def test_unknown_arch_is_refused(bundle: Path) -> None:
    _edit(bundle, lambda d: d.update(arch="vgg16"))
    with pytest.raises(BundleError, match="unknown arch 'vgg16'"):
        load_bundle(bundle)


def test_weights_of_another_arch_are_refused(bundle: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    save_bundle(
        other,
        build_network("resnet18", body_parts=3),
        _metadata(body_parts=("a", "b", "c"), thresholds=Thresholds(OperatingPoint(0.5, 0.5, 0.5))),
    )
    (bundle / WEIGHTS_PATH).write_bytes((other / WEIGHTS_PATH).read_bytes())
    _edit(
        bundle,
        lambda d: d.update(
            weights_sha256=json.loads((other / METADATA_PATH).read_text())["weights_sha256"]
        ),
    )
    with pytest.raises(BundleError, match="do not fit"):
        load_bundle(bundle)


def test_missing_files_and_bad_json(tmp_path: Path, bundle: Path) -> None:
    with pytest.raises(BundleError, match=r"metadata\.json"):
        load_bundle(tmp_path / "nowhere")
    (bundle / METADATA_PATH).write_text("{not json")
    with pytest.raises(ModelsError, match="cannot read"):
        load_bundle(bundle)


def test_missing_weights(bundle: Path) -> None:
    (bundle / WEIGHTS_PATH).unlink()
    with pytest.raises(BundleError, match=r"model\.pt"):
        load_bundle(bundle)


def test_save_refuses_a_network_that_does_not_match(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="arch"):
        save_bundle(tmp_path / "b", build_network("resnet18"), _metadata(arch="densenet121"))
    with pytest.raises(BundleError, match="body-part"):
        save_bundle(tmp_path / "b", build_network("resnet18", body_parts=2), _metadata())


def test_save_refuses_metadata_that_would_not_load(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="name"):
        save_bundle(tmp_path / "b", build_network("resnet18"), _metadata(name=" "))
    assert not (tmp_path / "b").exists()
