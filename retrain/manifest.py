"""The training manifest of a retrained bundle: ``configs/manifest.json``.

It lists every training image (base or review, with its SHA-256, label, weight and for a
review the override and study ids), the calibration images, and the keys of the locked
validation set the candidate was judged on. Its SHA-256 (of the file's bytes) is the bundle's
``training_manifest_sha256`` and is stored in the registry. No patient identifier is in it:
reviewed images are named by SOP Instance UID.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from retrain.base_data import TrainingImage
from retrain.validation import ValidationSet

__all__ = [
    "MANIFEST_PATH",
    "MANIFEST_SCHEMA",
    "build_manifest",
    "manifest_bytes",
    "read_manifest",
    "trained_review_keys",
]

MANIFEST_PATH = Path("configs") / "manifest.json"
MANIFEST_SCHEMA = "xrayd-training-manifest/1"


def build_manifest(
    *,
    candidate: Mapping[str, str],
    parent: Mapping[str, str],
    training: Sequence[TrainingImage],
    calibration: Sequence[TrainingImage],
    validation: ValidationSet,
    settings: Mapping[str, Any],
) -> dict[str, Any]:
    """The manifest document (plain JSON data)."""
    return {
        "schema": MANIFEST_SCHEMA,
        "candidate": dict(candidate),
        "parent": dict(parent),
        "settings": dict(settings),
        "training": [image.as_json() for image in training],
        "calibration": [image.as_json() for image in calibration],
        "validation": {
            "sha256": validation.sha256,
            "cases": [[source, key] for source, key in validation.keys],
            "missing": [list(row) for row in validation.missing],
        },
    }


def manifest_bytes(document: Mapping[str, Any]) -> tuple[bytes, str]:
    """The file's bytes (sorted keys, strict JSON) and their SHA-256."""
    data = (json.dumps(document, indent=1, sort_keys=True, allow_nan=False) + "\n").encode()
    return data, hashlib.sha256(data).hexdigest()


def read_manifest(bundle_dir: Path) -> dict[str, Any] | None:
    """A bundle's manifest, or ``None`` when it has none (e.g. the shipped default bundle)."""
    path = Path(bundle_dir) / MANIFEST_PATH
    if not path.is_file():
        return None
    doc = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or doc.get("schema") != MANIFEST_SCHEMA:
        raise ValueError(f"{path} is not a training manifest")
    return doc


def trained_review_keys(bundle_dir: Path) -> frozenset[str]:
    """SOP Instance UIDs of the reviewed images a bundle was trained on (none without a
    manifest). Pass them to ``review_validation_candidates`` as ``trained_keys``."""
    doc = read_manifest(bundle_dir)
    if doc is None:
        return frozenset()
    return frozenset(
        str(entry["key"]) for entry in doc.get("training", []) if entry.get("source") == "review"
    )
