"""Labels as stored (review and validation-case JSON) <-> the codes of ``models.losses.Targets``.

The stored form is the radiologist's: ``{"fracture": "present"|"absent", "count": "0"|"1"|"2+",
"body_part": str, "hardware": bool}``. Anything else (a missing key, ``"unknown"``, a body part
the model has no class for) becomes :data:`retrain.datasets.records.MISSING` (-1), which every
head of the masked loss ignores.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from models.labels import COUNT_CLASSES
from models.losses import Targets
from models.synthetic_data import LabelledTensors
from retrain.datasets.records import MISSING, LabelCodes
from retrain.datasets.torch_data import targets_from

__all__ = [
    "codes_from_label",
    "digest",
    "label_from_codes",
    "stack_tensors",
]

_FRACTURE: dict[str, float] = {"present": 1.0, "absent": 0.0}


def codes_from_label(label: Mapping[str, Any], body_parts: Sequence[str]) -> LabelCodes:
    """The Targets codes of a stored label; -1 for what is missing or unknown to the model."""
    fracture = _FRACTURE.get(str(label.get("fracture")), float(MISSING))
    count_text = label.get("count")
    count = COUNT_CLASSES.index(count_text) if count_text in COUNT_CLASSES else MISSING
    if fracture >= 0 and count >= 0 and (count > 0) != (fracture > 0):
        count = MISSING  # contradicts the fracture label: trust the fracture label only
    part = label.get("body_part")
    body_part = body_parts.index(part) if isinstance(part, str) and part in body_parts else MISSING
    hardware = label.get("hardware")
    return LabelCodes(
        fracture=fracture,
        count=count,
        body_part=body_part,
        hardware=float(hardware) if isinstance(hardware, bool) else float(MISSING),
    )


def label_from_codes(codes: LabelCodes, body_parts: Sequence[str]) -> dict[str, Any]:
    """The stored form of ``codes`` (``None`` where missing)."""
    return {
        "fracture": None if codes.fracture < 0 else ("present" if codes.fracture else "absent"),
        "count": None if codes.count < 0 else COUNT_CLASSES[codes.count],
        "body_part": None if codes.body_part < 0 else body_parts[codes.body_part],
        "hardware": None if codes.hardware < 0 else bool(codes.hardware),
    }


def digest(document: object) -> str:
    """SHA-256 of a JSON document in canonical form (sorted keys, no spaces)."""
    blob = json.dumps(document, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def stack_tensors(
    pixels: Sequence[npt.NDArray[np.float16]],
    codes: Sequence[LabelCodes],
    input_size: int,
    *,
    manifest_sha256: str,
    source: str,
) -> LabelledTensors:
    """``(N, 1, S, S)`` float16 pixels and their Targets; N may be 0."""
    if len(pixels) != len(codes):
        raise ValueError(f"{len(pixels)} images but {len(codes)} labels")
    if pixels:
        stacked = torch.from_numpy(np.stack(pixels).astype(np.float16)).unsqueeze(1)
    else:
        stacked = torch.zeros((0, 1, input_size, input_size), dtype=torch.float16)
    if codes:
        targets = targets_from(codes)
    else:
        none = torch.zeros(0, dtype=torch.int64)
        targets = Targets(none.float(), none, none.clone(), none.float())
    return LabelledTensors(stacked, targets, manifest_sha256, source)
