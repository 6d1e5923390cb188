"""models.runtimes / models.runtime_choice: every backbone runtime gives eager's outputs.

A small randomly initialised resnet18 with non-trivial BatchNorm (random affine parameters,
running statistics from train-mode passes) runs on prepared synthetic DICOMs; ONNX Runtime,
OpenVINO and channels-last must match torch eager within 1e-3 on every head's probability,
``choose_runtime`` must pick a passing runtime and reject wrong ones, and the Classifier must
give eager's predictions with any of them.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import torch
from torch import Tensor

from models.bundle import BundleInfo, LoadedModel
from models.bundle_metadata import BundleMetadata
from models.decision import OperatingPoint, Thresholds
from models.inference import Classifier
from models.labels import BODY_PARTS
from models.network import MultiTaskNet, build_network
from models.preprocess import PreparedImage, PreprocessParams, prepare
from models.runtime_choice import choose_runtime, head_probabilities
from models.runtimes import (
    BackboneRuntime,
    EagerRuntime,
    OnnxRuntime,
    OpenVinoRuntime,
    RuntimeUnavailable,
    build_runtime,
    export_onnx,
)
from models.synthetic import generate_case, to_dicom

from helpers import need_module

SIZE = 64
TOLERANCE = 1e-3
THREADS = 2


@pytest.fixture(scope="module")
def images() -> list[PreparedImage]:
    params = PreprocessParams(input_size=SIZE)
    cases = [generate_case(seed, 96, fracture=seed % 2 == 0) for seed in range(5)]
    return [prepare(to_dicom(case), params) for case in cases]


@pytest.fixture(scope="module")
def batch(images: list[PreparedImage]) -> npt.NDArray[np.float32]:
    return np.stack([np.asarray(i.pixels) for i in images])[:, None].astype(np.float32)


@pytest.fixture(scope="module")
def network(batch: npt.NDArray[np.float32]) -> MultiTaskNet:
    torch.manual_seed(0)
    net = build_network("resnet18")
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=gen))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
                m.momentum = None  # running statistics = plain average over the passes
        net.train()
        x = torch.from_numpy(batch)
        for _ in range(3):
            net(torch.cat([x, torch.rand(x.shape, generator=gen)]))
    return net.eval()


@pytest.fixture(scope="module")
def onnx_file(network: MultiTaskNet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "backbone.onnx"
    return export_onnx(network, path, SIZE)  # the default path: dynamo exporter first


def _max_diff(network: MultiTaskNet, a: Tensor, b: Tensor) -> float:
    return float((head_probabilities(network, a) - head_probabilities(network, b)).abs().max())


def _build(name: str, network: MultiTaskNet, onnx_file: Path, tmp_path: Path) -> BackboneRuntime:
    if name == "onnxruntime-torchscript":
        path = export_onnx(network, tmp_path / "ts.onnx", SIZE, dynamo=False)
        return OnnxRuntime(path, threads=THREADS)
    if name == "openvino-from-torch":
        need_module("openvino")
        return OpenVinoRuntime.from_torch(network, SIZE, threads=THREADS)
    if name in ("onnxruntime", "openvino"):
        need_module(name)
    return build_runtime(name, network, threads=THREADS, onnx_file=onnx_file)


@pytest.mark.parametrize(
    "name",
    [
        "channels_last",
        "onnxruntime",
        "openvino",
        "onnxruntime-torchscript",
        "openvino-from-torch",
    ],
)
def test_runtime_matches_eager(
    name: str,
    network: MultiTaskNet,
    batch: npt.NDArray[np.float32],
    onnx_file: Path,
    tmp_path: Path,
) -> None:
    runtime = _build(name, network, onnx_file, tmp_path)
    assert isinstance(runtime, BackboneRuntime)
    eager = EagerRuntime(network)
    # Batch sizes other than the export's example (2) work: the batch axis is dynamic.
    for part in (batch[:1], batch):
        expected, got = eager(part), runtime(part)
        assert got.shape == expected.shape and got.dtype == torch.float32
        assert got.is_contiguous()
        assert float(expected.abs().max()) > 0.1  # a feature map worth comparing
        assert torch.allclose(got, expected, atol=1e-3, rtol=1e-3)
        assert _max_diff(network, got, expected) <= TOLERANCE
    # Different images give different features (the runtime is not returning a constant).
    assert not torch.allclose(runtime(batch[:1]), runtime(batch[1:2]))


def test_export_has_a_dynamic_batch_axis(onnx_file: Path) -> None:
    onnx = need_module("onnx")
    model = onnx.load(str(onnx_file))
    (inp,) = model.graph.input
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].HasField("dim_value")
    assert [d.dim_value for d in dims[1:]] == [1, SIZE, SIZE]


def test_bad_input_and_unknown_runtime_are_refused(network: MultiTaskNet) -> None:
    eager = EagerRuntime(network)
    with pytest.raises(ValueError, match="N, 1, S, S"):
        eager(np.zeros((2, SIZE, SIZE), dtype=np.float32))
    with pytest.raises(ValueError, match="unknown runtime"):
        build_runtime("tensorrt", network)
    with pytest.raises(ValueError, match="unknown runtime"):
        choose_runtime(network, np.zeros((1, 1, SIZE, SIZE), np.float32), candidates=["tvm"])


class _Perturbed:
    """Eager features, slightly scaled and shifted: close, but not close enough."""

    name = "perturbed"

    def __init__(self, network: MultiTaskNet) -> None:
        self.eager = EagerRuntime(network)

    def __call__(self, pixels: npt.NDArray[np.float32]) -> Tensor:
        return self.eager(pixels) * 1.3 + 0.05


class _Broken:
    name = "broken"

    def __call__(self, pixels: npt.NDArray[np.float32]) -> Tensor:
        raise RuntimeError("engine crashed")


class _WrongShape:
    name = "wrong_shape"

    def __call__(self, pixels: npt.NDArray[np.float32]) -> Tensor:
        return torch.zeros(pixels.shape[0], 512, 1, 1)


def test_choose_runtime_picks_the_fastest_passing_and_rejects_wrong_ones(
    network: MultiTaskNet, batch: npt.NDArray[np.float32], onnx_file: Path
) -> None:
    candidates: list[str | BackboneRuntime] = [
        _Perturbed(network),
        _Broken(),
        _WrongShape(),
        "openvino",
        "onnxruntime",
        "channels_last",
        "eager",
    ]
    choice = choose_runtime(
        network, batch, candidates=candidates, threads=THREADS, repeats=2, onnx_file=onnx_file
    )
    records = {r.name: r for r in choice.records}
    assert list(records) == [
        "perturbed", "broken", "wrong_shape", "openvino", "onnxruntime", "channels_last", "eager"
    ]  # fmt: skip
    perturbed = records["perturbed"]
    assert not perturbed.passed and perturbed.max_abs_diff is not None
    assert perturbed.max_abs_diff > TOLERANCE and "tolerance" in perturbed.reason
    assert not records["broken"].passed and "engine crashed" in records["broken"].reason
    assert not records["wrong_shape"].passed and "feature map" in records["wrong_shape"].reason
    passing = [r for r in choice.records if r.passed]
    assert {r.name for r in passing} == {"openvino", "onnxruntime", "channels_last", "eager"}
    for r in passing:
        assert r.available and r.max_abs_diff is not None and r.max_abs_diff <= TOLERANCE
        assert r.ms_per_image is not None and r.ms_per_image > 0
    assert records["eager"].max_abs_diff == 0.0
    fastest = min(passing, key=lambda r: r.ms_per_image or float("inf"))
    assert choice.name == fastest.name
    assert _max_diff(network, choice.runtime(batch), EagerRuntime(network)(batch)) <= TOLERANCE


def test_only_wrong_candidates_fall_back_to_eager(
    network: MultiTaskNet, batch: npt.NDArray[np.float32]
) -> None:
    choice = choose_runtime(network, batch[:2], candidates=[_Perturbed(network)], repeats=1)
    assert isinstance(choice.runtime, EagerRuntime)
    assert [r.passed for r in choice.records] == [False]


def test_unavailable_runtimes_are_reported_and_torch_used(
    network: MultiTaskNet, batch: npt.NDArray[np.float32], monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_export(*args: object, **kwargs: object) -> Path:
        raise RuntimeUnavailable("ONNX export failed: simulated")

    monkeypatch.setattr("models.runtime_choice.export_onnx", no_export)
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    choice = choose_runtime(
        network, batch[:2], candidates=("openvino", "onnxruntime", "eager"), repeats=1
    )
    records = {r.name: r for r in choice.records}
    assert not records["onnxruntime"].available and "simulated" in records["onnxruntime"].reason
    assert not records["openvino"].available and "openvino" in records["openvino"].reason
    assert choice.name == "eager" and records["eager"].passed


def test_a_model_off_the_cpu_uses_eager(network: MultiTaskNet) -> None:
    # The meta device stands in for CUDA: nothing is run or exported for it.
    on_meta = copy.deepcopy(network).to("meta")
    choice = choose_runtime(on_meta, np.zeros((1, 1, SIZE, SIZE), np.float32))
    assert isinstance(choice.runtime, EagerRuntime) and choice.runtime.device.type == "meta"
    assert [r.name for r in choice.records if r.passed] == ["eager"]
    assert all(not r.available and "meta" in r.reason for r in choice.records if r.name != "eager")


def test_choose_runtime_needs_eval_mode(network: MultiTaskNet) -> None:
    training = copy.deepcopy(network).train()
    with pytest.raises(ValueError, match="eval mode"):
        choose_runtime(training, np.zeros((1, 1, SIZE, SIZE), np.float32))


@pytest.fixture(scope="module")
def model(network: MultiTaskNet) -> LoadedModel:
    meta = BundleMetadata(
        name="tiny",
        version="0.1",
        arch="resnet18",
        body_parts=BODY_PARTS,
        preprocess=PreprocessParams(input_size=SIZE),
        thresholds=Thresholds(OperatingPoint(0.5, 0.4, 0.6)),
        temperature=0.5,  # sharpens the probabilities: a harder test of the tolerance
    )
    info = BundleInfo("tiny", "0.1", "0" * 64, Path("unused"))
    return LoadedModel(network, meta, info, torch.device("cpu"))


@pytest.mark.parametrize("name", ["channels_last", "onnxruntime", "openvino"])
def test_classifier_with_a_runtime_predicts_as_eager(
    name: str,
    model: LoadedModel,
    images: list[PreparedImage],
    onnx_file: Path,
    tmp_path: Path,
) -> None:
    runtime = _build(name, model.network, onnx_file, tmp_path)
    expected = Classifier(model, batch_size=3).predict(images)
    got = Classifier(model, batch_size=3, runtime=runtime).predict(images)
    assert len({round(p.fracture_probability, 3) for p in expected}) > 1  # not all alike
    for a, b in zip(expected, got, strict=True):
        assert abs(a.fracture_probability - b.fracture_probability) <= TOLERANCE
        assert a.decision is b.decision
        assert np.allclose(a.count_probabilities, b.count_probabilities, atol=TOLERANCE)
        assert (a.count, a.body_part, a.hardware) == (b.count, b.body_part, b.hardware)
        assert abs(a.body_part_probability - b.body_part_probability) <= TOLERANCE
        assert abs(a.hardware_probability - b.hardware_probability) <= TOLERANCE
        assert np.allclose(a.heatmap, b.heatmap, atol=1e-3)
        assert len(a.boxes) == len(b.boxes)


def test_classifier_default_runtime_is_eager(model: LoadedModel) -> None:
    assert isinstance(Classifier(model).runtime, EagerRuntime)
