"""Synthetic training sets as tensors, generated in parallel through the production path.

Every case goes through :func:`models.synthetic.to_dicom` and :func:`models.preprocess.prepare`,
exactly as a received radiograph would, so the network never sees a shortcut that real input
lacks. Pixels are kept as float16 (half the memory of float32; the [0, 1] values lose nothing
a 12-bit source holds that matters at the model's input size).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from models.labels import BODY_PARTS
from models.losses import Targets
from models.parallel import default_workers, process_map
from models.preprocess import PreprocessParams, prepare
from models.synthetic import case_seed, generate_case, to_dicom

logger = logging.getLogger(__name__)

__all__ = [
    "LabelledTensors",
    "default_workers",
    "load_tensors",
    "save_tensors",
    "synthetic_tensors",
]

#: (seed, fracture_count, body part index, hardware) of one case.
CaseLabels = tuple[int, int, int, bool]


@dataclass(frozen=True, eq=False)
class LabelledTensors:
    """Model inputs (N, 1, S, S) float16 in [0, 1], their labels, and a manifest hash."""

    pixels: Tensor
    targets: Targets
    manifest_sha256: str
    source: str

    def __len__(self) -> int:
        return int(self.pixels.shape[0])


#: (case seed, image size, fracture, body part or None for a random one, preprocessing)
Job = tuple[int, int, bool, str | None, PreprocessParams]


def _one(args: Job) -> tuple[npt.NDArray[np.float16], CaseLabels]:
    seed, size, fracture, body_part, params = args
    case = generate_case(seed, size, fracture=fracture, body_part=body_part)
    pixels = prepare(to_dicom(case), params).pixels.astype(np.float16)
    return pixels, (seed, case.fracture_count, BODY_PARTS.index(case.body_part), case.hardware)


def synthetic_tensors(
    n: int,
    seed: int,
    params: PreprocessParams,
    *,
    size: int | None = None,
    workers: int | None = None,
    body_parts: Sequence[str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> LabelledTensors:
    """``n`` balanced synthetic cases (even index = fracture) as tensors.

    Cases are generated at ``size`` pixels (default twice the input size, at least 64) and are
    the same whatever ``workers`` is: each depends only on ``seed`` and its index.
    ``body_parts``: cycle through these parts instead of drawing one at random.
    ``progress`` is called with the number of cases finished since the last call.
    """
    if n < 1:
        raise ValueError("n must be positive")
    size = size or max(64, 2 * params.input_size)
    jobs: list[Job] = [
        (
            case_seed(seed, i),
            size,
            i % 2 == 0,
            body_parts[i % len(body_parts)] if body_parts else None,
            params,
        )
        for i in range(n)
    ]
    results, workers = process_map(_one, jobs, workers=workers, progress=progress)
    pixels = torch.from_numpy(np.stack([r[0] for r in results])).unsqueeze(1)
    labels = [r[1] for r in results]
    targets = Targets(
        fracture=torch.tensor([float(c > 0) for _, c, _, _ in labels], dtype=torch.float32),
        count=torch.tensor([c for _, c, _, _ in labels], dtype=torch.int64),
        body_part=torch.tensor([p for _, _, p, _ in labels], dtype=torch.int64),
        hardware=torch.tensor([float(h) for _, _, _, h in labels], dtype=torch.float32),
    )
    logger.info("generated %d synthetic cases (seed %d, %d px, %d workers)", n, seed, size, workers)
    return LabelledTensors(pixels, targets, _manifest(labels, size, params), "synthetic")


def _manifest(labels: Sequence[CaseLabels], size: int, params: PreprocessParams) -> str:
    blob = json.dumps(
        {
            "generator": "models.synthetic",
            "size": size,
            "input_size": params.input_size,
            "cases": [list(map(int, row)) for row in labels],
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def save_tensors(data: LabelledTensors, path: Path) -> None:
    """Keep a generated set (pixels, labels, manifest) in one torch file."""
    t = data.targets
    tmp = path.with_name(path.name + ".tmp")
    torch.save(
        {
            "pixels": data.pixels,
            "targets": [t.fracture, t.count, t.body_part, t.hardware],
            "manifest_sha256": data.manifest_sha256,
            "source": data.source,
        },
        tmp,
    )
    tmp.replace(path)


def load_tensors(path: Path) -> LabelledTensors:
    """A set written by :func:`save_tensors`."""
    doc = torch.load(path, map_location="cpu", weights_only=True)
    return LabelledTensors(
        doc["pixels"], Targets(*doc["targets"]), str(doc["manifest_sha256"]), str(doc["source"])
    )
