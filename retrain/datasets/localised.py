"""Records -> model inputs with fracture-box masks, prepared once (and cached) for fine-tuning.

Each image goes through the production preparation (:func:`retrain.datasets.images.
prepare_image`); its FracAtlas boxes (normalised to the source image) are mapped through the
same :class:`models.geometry.Geometry` into input pixels and rasterised into a mask of the
input's size, so geometric augmentation can move image and mask together.

Images that cannot be prepared (the truncated JPEGs of FracAtlas, unreadable files) are skipped
with their reason counted in :attr:`LocalisedTensors.skipped` and logged by file name, never a
crash of the whole run. Pixels are uint8 (the [0, 1] input quantised to 1/255; the training
JPEGs are 8-bit) to keep a few thousand 448-pixel images in about a gigabyte.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from models.losses import Targets
from models.parallel import process_map
from models.preprocess import PreprocessParams
from retrain.datasets.errors import DatasetError
from retrain.datasets.fracatlas import fracatlas_boxes
from retrain.datasets.images import prepare_image
from retrain.datasets.records import FileImage, ImageRecord, label_codes
from retrain.datasets.torch_data import targets_from

logger = logging.getLogger(__name__)

__all__ = ["InputBox", "LocalisedTensors", "load_localised", "localised_tensors", "save_localised"]

#: A box in model-input pixels: ``(row0, col0, row1, col1)``, half-open.
InputBox = tuple[float, float, float, float]
_FORMAT = "xrayd-localised/1"


@dataclass(frozen=True, eq=False)
class LocalisedTensors:
    """``pixels`` uint8 (N, 1, S, S); ``masks`` uint8 (N, 1, S, S), 1 inside a fracture box;
    ``mask_known`` bool (N,): the boxes are annotated (or the image is not fractured, so the
    empty mask is right); ``boxes``: each image's boxes in input pixels; ``keys``: file names;
    ``skipped``: reason -> count of records left out."""

    pixels: Tensor
    masks: Tensor
    mask_known: Tensor
    targets: Targets
    boxes: tuple[tuple[InputBox, ...], ...]
    keys: tuple[str, ...]
    manifest_sha256: str
    skipped: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.pixels.shape[0])

    def float_pixels(self, index: slice | Tensor) -> Tensor:
        """Pixels ``index`` as float32 in [0, 1]."""
        return self.pixels[index].float().div_(255.0)


@dataclass(frozen=True)
class _Prepared:
    pixels: npt.NDArray[np.uint8] | None
    mask: npt.NDArray[np.uint8] | None
    boxes: tuple[InputBox, ...] | None
    problem: str | None


def _rasterise(size: int, boxes: Sequence[InputBox]) -> npt.NDArray[np.uint8]:
    mask = np.zeros((size, size), dtype=np.uint8)
    for r0, c0, r1, c1 in boxes:
        top, left = int(np.floor(r0)), int(np.floor(c0))
        bottom, right = int(np.ceil(r1)), int(np.ceil(c1))
        mask[max(top, 0) : min(bottom, size), max(left, 0) : min(right, size)] = 1
    return mask


def _prepare(job: tuple[ImageRecord, PreprocessParams]) -> _Prepared:
    record, params = job
    try:
        prepared = prepare_image(record.image, params)
        boxes = fracatlas_boxes(record.image.path) if isinstance(record.image, FileImage) else None
    except DatasetError as exc:
        return _Prepared(None, None, None, str(exc))
    geometry = prepared.geometry
    mapped: tuple[InputBox, ...] | None = None
    if boxes is not None:
        rows, cols = geometry.source_rows, geometry.source_cols
        mapped = tuple(
            geometry.box_to_input(
                (cy - h / 2) * rows, (cx - w / 2) * cols, (cy + h / 2) * rows, (cx + w / 2) * cols
            )
            for cx, cy, w, h in boxes
        )
    pixels = np.rint(np.asarray(prepared.pixels) * 255.0).astype(np.uint8)
    mask = _rasterise(params.input_size, mapped or ())
    return _Prepared(pixels, mask, mapped, None)


def _reason(problem: str) -> str:
    return "truncated" if "truncated" in problem else "unreadable"


def localised_tensors(
    records: Sequence[ImageRecord],
    params: PreprocessParams,
    *,
    root: Path | None = None,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> LocalisedTensors:
    """Prepare ``records`` with their box masks (see the module docstring)."""
    if not records:
        raise ValueError("no records")
    results, _ = process_map(
        _prepare, [(r, params) for r in records], workers=workers, progress=progress
    )
    kept: list[tuple[ImageRecord, _Prepared]] = []
    skipped: dict[str, int] = {}
    for record, result in zip(records, results, strict=True):
        if result.pixels is None:
            reason = _reason(result.problem or "")
            skipped[reason] = skipped.get(reason, 0) + 1
            logger.warning("skipped %s: %s", record.study_id, result.problem)
            continue
        kept.append((record, result))
    if not kept:
        raise ValueError("no record could be prepared")
    known = [r.fracture is False or (p.boxes is not None and len(p.boxes) > 0) for r, p in kept]
    keys = tuple(
        (r.path.relative_to(root).as_posix() if root is not None and r.path else r.study_id)
        for r, _ in kept
    )
    blob = json.dumps(
        {
            "format": _FORMAT,
            "params": repr(params),
            "images": [
                [k, r.group, *vars(label_codes(r)).values()]
                for k, (r, _) in zip(keys, kept, strict=True)
            ],
        },
        sort_keys=True,
    )
    return LocalisedTensors(
        pixels=torch.from_numpy(
            np.stack([p.pixels for _, p in kept if p.pixels is not None])
        ).unsqueeze(1),
        masks=torch.from_numpy(np.stack([p.mask for _, p in kept if p.mask is not None])).unsqueeze(
            1
        ),
        mask_known=torch.tensor(known, dtype=torch.bool),
        targets=targets_from([label_codes(r) for r, _ in kept]),
        boxes=tuple(p.boxes or () for _, p in kept),
        keys=keys,
        manifest_sha256=hashlib.sha256(blob.encode()).hexdigest(),
        skipped=skipped,
    )


def save_localised(data: LocalisedTensors, path: Path) -> None:
    """Write ``data`` to ``path`` (torch.save of plain tensors and lists; atomic rename)."""
    t = data.targets
    tmp = path.with_name(path.name + ".tmp")
    torch.save(
        {
            "format": _FORMAT,
            "pixels": data.pixels,
            "masks": data.masks,
            "mask_known": data.mask_known,
            "targets": [t.fracture, t.count, t.body_part, t.hardware],
            "boxes": [list(map(list, b)) for b in data.boxes],
            "keys": list(data.keys),
            "manifest_sha256": data.manifest_sha256,
            "skipped": dict(data.skipped),
        },
        tmp,
    )
    tmp.replace(path)


def load_localised(path: Path) -> LocalisedTensors:
    """Read what :func:`save_localised` wrote (``weights_only``: no code is unpickled)."""
    doc = torch.load(path, map_location="cpu", weights_only=True)
    if doc.get("format") != _FORMAT:
        raise ValueError(f"{path} is not a {_FORMAT} file")
    fracture, count, body_part, hardware = doc["targets"]
    return LocalisedTensors(
        pixels=doc["pixels"],
        masks=doc["masks"],
        mask_known=doc["mask_known"],
        targets=Targets(fracture, count, body_part, hardware),
        boxes=tuple(tuple((b[0], b[1], b[2], b[3]) for b in boxes) for boxes in doc["boxes"]),
        keys=tuple(doc["keys"]),
        manifest_sha256=str(doc["manifest_sha256"]),
        skipped={str(k): int(v) for k, v in doc["skipped"].items()},
    )
