"""models.network: forward shapes of both backbones, the feature map, the factory's checks."""

from __future__ import annotations

import pytest
import torch

from models.labels import BODY_PARTS, COUNT_CLASSES
from models.network import ARCHS, GRADCAM_LAYERS, NetworkOutput, build_network, resolve_device

torch.set_num_threads(1)


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_forward_shapes(arch: str) -> None:
    torch.manual_seed(0)
    net = build_network(arch, input_size=64).eval()
    with torch.inference_mode():
        out = net(torch.rand(2, 1, 64, 64))
        features = net.feature_map(torch.rand(1, 1, 64, 64))
    assert isinstance(out, NetworkOutput)
    assert out.fracture.shape == (2,)
    assert out.count.shape == (2, len(COUNT_CLASSES))
    assert out.body_part.shape == (2, len(BODY_PARTS))
    assert out.hardware.shape == (2,)
    assert features.shape[:2] == (1, ARCHS[arch])
    assert float(features.min()) >= 0.0  # after the final activation, as Grad-CAM expects
    assert all(torch.isfinite(t).all() for t in (out.fracture, out.count, out.hardware))


def test_localisation_head_scores_every_feature_cell() -> None:
    net = build_network("efficientnet_lite0", input_size=96, localise=True).eval()
    with torch.inference_mode():
        out = net(torch.rand(2, 1, 96, 96))
    assert out.localisation is not None and out.localisation.shape == (2, 3, 3)
    assert build_network("resnet18").eval()(torch.rand(1, 1, 64, 64)).localisation is None


def test_sized_and_pretrained_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="input size"):
        build_network("efficientnet_lite0")
    with pytest.raises(ValueError, match="no pretrained weights"):
        build_network("resnet18", pretrained=True)


def test_body_part_head_follows_the_vocabulary_size() -> None:
    net = build_network("resnet18", body_parts=4, dropout=0.2)
    assert net.body_part_head.out_features == 4
    assert net.dropout.p == pytest.approx(0.2)


def test_resnet_uses_stride_two_in_the_first_convolution() -> None:
    net = build_network("resnet18")
    assert net.backbone.conv1.stride == (2, 2)


@pytest.mark.parametrize(
    ("arch", "dropout", "match"),
    [("vgg16", 0.0, "unknown arch"), ("resnet18", 1.0, "dropout"), ("resnet18", -0.1, "dropout")],
)
def test_build_network_refuses_bad_arguments(arch: str, dropout: float, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_network(arch, dropout=dropout)


def test_gradcam_layers_and_device() -> None:
    assert set(GRADCAM_LAYERS) == set(ARCHS)
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
