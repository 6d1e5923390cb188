"""The classifier: prepared images in, :class:`models.prediction.Prediction` out.

The weights are loaded once (:func:`models.bundle.load_bundle`). Per batch a backbone runtime
(:mod:`models.runtimes`; torch eager without autograd unless another is given, e.g. the one
:func:`models.runtime_choice.choose_runtime` picks) computes the last feature map; the heads
then run in torch on a copy of it with gradients enabled, so Grad-CAM (the fracture logit's
gradient with respect to that feature map, averaged over space, weighting its channels) costs
only a backward pass through the heads, whatever engine ran the backbone. A network with a
localisation head (trained on fracture boxes) gives its own map instead: the per-cell
probability of lying in a fracture box, upsampled; no gradient is needed then.

Boxes are drawn only where the decision is present or indeterminate: an "absent" result carries
its heatmap (for whoever wants to look) but no box, so nothing reads as a finding.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import Tensor

from models.bundle import LoadedModel
from models.decision import apply_temperature, decide
from models.geometry import Geometry
from models.labels import COUNT_CLASSES, Decision
from models.prediction import Prediction, StudyPrediction, aggregate_study
from models.preprocess import PreparedImage
from models.regions import strongest_regions
from models.runtimes import BackboneRuntime, EagerRuntime

logger = logging.getLogger(__name__)

__all__ = [
    "Classifier",
    "StudyPrediction",
    "aggregate_study",
    "content_mask",
    "grad_cam",
    "localisation_maps",
]


def grad_cam(features: Tensor, fracture_logits: Tensor, size: int) -> Tensor:
    """Grad-CAM maps (N, size, size) in [0, 1] from a feature map that requires grad.

    Each sample's logit depends only on its own features (eval mode), so the gradient of the
    summed logits gives every sample's own gradient.
    """
    (grads,) = torch.autograd.grad(fracture_logits.sum(), features)
    weights = grads.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * features).sum(dim=1, keepdim=True)).detach()
    cam = F.interpolate(cam, size=(size, size), mode="bilinear", align_corners=False)
    cam = cam.squeeze(1).clamp_min(0.0)
    peak = cam.amax(dim=(1, 2), keepdim=True)
    return torch.where(peak > 0, cam / peak.clamp_min(1e-12), torch.zeros_like(cam))


def localisation_maps(logits: Tensor, size: int) -> Tensor:
    """Localisation-head logits (N, h, w) -> probabilities (N, size, size), bilinear."""
    maps = torch.sigmoid(logits.detach().float()).unsqueeze(1)
    maps = F.interpolate(maps, size=(size, size), mode="bilinear", align_corners=False)
    return maps.squeeze(1).clamp(0.0, 1.0)


def content_mask(geometry: Geometry) -> npt.NDArray[np.bool_]:
    """True on the input pixels that hold image content (not letterbox padding)."""
    mask = np.zeros((geometry.input_size, geometry.input_size), dtype=bool)
    top, left = geometry.pad_top, geometry.pad_left
    mask[top : top + geometry.content_rows, left : left + geometry.content_cols] = True
    return mask


def _source_box(
    geometry: Geometry, box: tuple[int, int, int, int]
) -> tuple[float, float, float, float]:
    """A half-open input pixel box in source coordinates, as floats (clipping yields ints)."""
    r0, c0, r1, c1 = geometry.box_to_source(*(float(v) for v in box))
    return (float(r0), float(c0), float(r1), float(c1))


class Classifier:
    """Runs a loaded bundle on prepared images (thread-compatible, not thread-safe).

    ``runtime`` computes the backbone's feature map (default: torch eager on the model's
    device); it must have been built from ``model.network``.
    """

    def __init__(
        self,
        model: LoadedModel,
        *,
        batch_size: int = 8,
        max_boxes: int = 3,
        runtime: BackboneRuntime | None = None,
    ) -> None:
        if batch_size < 1 or max_boxes < 0:
            raise ValueError("batch_size must be positive and max_boxes non-negative")
        self.model = model
        self.network = model.network.eval()
        self.runtime = runtime if runtime is not None else EagerRuntime(self.network)
        self.metadata = model.metadata
        self.batch_size = batch_size
        self.max_boxes = max_boxes

    def predict(
        self,
        images: Sequence[PreparedImage],
        body_part_hints: Sequence[str | None] | None = None,
    ) -> list[Prediction]:
        """One prediction per image, in order.

        ``body_part_hints`` (e.g. from BodyPartExamined) choose the per-body-part operating
        point instead of the predicted body part; unknown hints fall back to the default.
        """
        if body_part_hints is not None and len(body_part_hints) != len(images):
            raise ValueError("body_part_hints must have one entry per image")
        size = self.metadata.input_size
        for image in images:
            if image.pixels.shape != (size, size):
                raise ValueError(f"image is {image.pixels.shape}, the model expects {size}x{size}")
        out: list[Prediction] = []
        for start in range(0, len(images), self.batch_size):
            batch = images[start : start + self.batch_size]
            hints = (
                body_part_hints[start : start + self.batch_size]
                if body_part_hints is not None
                else [None] * len(batch)
            )
            out.extend(self._batch(batch, hints))
        return out

    def _batch(
        self, images: Sequence[PreparedImage], hints: Sequence[str | None]
    ) -> list[Prediction]:
        size = self.metadata.input_size
        pixels = np.stack([np.asarray(i.pixels, dtype=np.float32) for i in images])[:, None]
        features = self.runtime(pixels).to(self.model.device, torch.float32)
        if self.network.localisation_head is not None:
            with torch.inference_mode():
                outputs = self.network.heads(features)
            cams = localisation_maps(outputs.localisation, size).cpu().numpy()  # type: ignore[arg-type]
        else:
            features = features.detach().requires_grad_(True)
            with torch.enable_grad():
                outputs = self.network.heads(features)
                cams = grad_cam(features, outputs.fracture, size).cpu().numpy()
        fracture = apply_temperature(
            outputs.fracture.detach().cpu().numpy(), self.metadata.temperature
        )
        counts = torch.softmax(outputs.count.detach(), dim=1).cpu().numpy()
        parts = torch.softmax(outputs.body_part.detach(), dim=1).cpu().numpy()
        hardware = torch.sigmoid(outputs.hardware.detach()).cpu().numpy()
        results = []
        for i, image in enumerate(images):
            heatmap = np.where(content_mask(image.geometry), cams[i], 0.0).astype(np.float32)
            peak = float(heatmap.max())
            if peak > 0.0:
                heatmap = heatmap / np.float32(peak)  # strongest evidence in the image is 1
            part_index = int(np.argmax(parts[i]))
            body_part = self.metadata.body_parts[part_index]
            chosen = hints[i] or body_part
            probability = float(fracture[i])
            decision = decide(probability, self.metadata.thresholds.for_body_part(chosen))
            regions = (
                []
                if decision is Decision.ABSENT
                else strongest_regions(heatmap, limit=self.max_boxes)
            )
            boxes = tuple(_source_box(image.geometry, r.box) for r in regions)
            count_p = tuple(float(v) for v in counts[i])
            results.append(
                Prediction(
                    fracture_probability=probability,
                    decision=decision,
                    count_probabilities=(count_p[0], count_p[1], count_p[2]),
                    count=COUNT_CLASSES[int(np.argmax(counts[i]))],
                    body_part=body_part,
                    body_part_probability=float(parts[i][part_index]),
                    hardware_probability=float(hardware[i]),
                    hardware=bool(hardware[i] >= 0.5),
                    heatmap=heatmap,
                    boxes=boxes,
                    model_name=self.metadata.name,
                    model_version=self.metadata.version,
                    threshold_body_part=chosen,
                )
            )
        logger.debug("predicted %d images", len(images))
        return results
