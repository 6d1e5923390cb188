"""``configs/metadata.json`` of a model bundle: the typed form, and a small validator.

The validator is local (MONAI's ``verify_metadata`` downloads its schema). Every problem is a
:class:`models.errors.BundleError` naming the offending key, e.g. ``thresholds.default.threshold``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

from models.decision import OperatingPoint, Thresholds
from models.errors import BundleError
from models.labels import COUNT_CLASSES
from models.network import ARCHS
from models.preprocess import PreprocessParams

__all__ = ["SCHEMA", "BundleMetadata", "metadata_from_json", "metadata_to_json"]

#: Identifies the layout of ``metadata.json``; bump it on incompatible changes.
SCHEMA = "xrayd-bundle/1"


@dataclass(frozen=True)
class BundleMetadata:
    """What a bundle says about its network (everything but the weights' hash)."""

    name: str
    version: str
    arch: str
    body_parts: tuple[str, ...]
    preprocess: PreprocessParams
    thresholds: Thresholds
    temperature: float = 1.0
    training_manifest_sha256: str = ""
    metrics: Mapping[str, float | None] = field(default_factory=dict)
    count_classes: tuple[str, ...] = COUNT_CLASSES
    dropout: float = 0.0
    #: The network has the localisation head (boxes from it instead of Grad-CAM).
    localisation_head: bool = False
    #: ``dataset``, ``licence`` and ``attribution`` of the training data.
    training_data: Mapping[str, str] = field(default_factory=dict)
    #: The pretrained weights the backbone started from ("" for none).
    pretrained: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "metrics", MappingProxyType(dict(self.metrics)))
        object.__setattr__(self, "training_data", MappingProxyType(dict(self.training_data)))

    @property
    def input_size(self) -> int:
        return self.preprocess.input_size


def _point_to_json(point: OperatingPoint) -> dict[str, float]:
    return {
        "threshold": point.threshold,
        "indeterminate_low": point.indeterminate_low,
        "indeterminate_high": point.indeterminate_high,
    }


def metadata_to_json(meta: BundleMetadata, weights_sha256: str) -> dict[str, Any]:
    """The JSON document (a dict) for ``meta`` and the hash of its weights file."""
    preprocessing: dict[str, Any] = {}
    for f in fields(PreprocessParams):
        value = getattr(meta.preprocess, f.name)
        preprocessing[f.name] = sorted(value) if isinstance(value, frozenset) else value
    return {
        "schema": SCHEMA,
        "name": meta.name,
        "version": meta.version,
        "arch": meta.arch,
        "dropout": meta.dropout,
        "labels": {"body_parts": list(meta.body_parts), "count_classes": list(meta.count_classes)},
        "input_size": meta.input_size,
        "preprocessing": preprocessing,
        "thresholds": {
            "default": _point_to_json(meta.thresholds.default),
            "per_body_part": {
                part: _point_to_json(point)
                for part, point in sorted(meta.thresholds.per_body_part.items())
            },
        },
        "temperature": meta.temperature,
        "training_manifest_sha256": meta.training_manifest_sha256,
        "metrics": dict(meta.metrics),
        "localisation_head": meta.localisation_head,
        "training_data": dict(meta.training_data),
        "pretrained": meta.pretrained,
        "weights_sha256": weights_sha256,
    }


_TYPES: dict[type, str] = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "a boolean",
    dict: "an object",
    list: "a list",
}


def _get(doc: Mapping[str, Any], key: str, kind: type, path: str = "") -> Any:
    name = f"{path}{key}"
    if key not in doc:
        raise BundleError(f"bundle metadata: missing key {name!r}")
    value = doc[key]
    if kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        ok = ok and math.isfinite(value)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise BundleError(
            f"bundle metadata: key {name!r} must be {_TYPES[kind]}, got {type(value).__name__}"
        )
    return float(value) if kind is float else value


def _strings(doc: Mapping[str, Any], key: str, path: str) -> tuple[str, ...]:
    values = _get(doc, key, list, path)
    if not values or not all(isinstance(v, str) and v for v in values):
        raise BundleError(f"bundle metadata: key {path}{key!r} must be a non-empty list of strings")
    if len(set(values)) != len(values):
        raise BundleError(f"bundle metadata: key {path}{key!r} has duplicates")
    return tuple(values)


def _point(doc: Mapping[str, Any], path: str) -> OperatingPoint:
    try:
        return OperatingPoint(
            _get(doc, "threshold", float, path),
            _get(doc, "indeterminate_low", float, path),
            _get(doc, "indeterminate_high", float, path),
        )
    except ValueError as exc:
        raise BundleError(f"bundle metadata: key {path.rstrip('.')!r}: {exc}") from exc


def _preprocess(doc: Mapping[str, Any], input_size: int) -> PreprocessParams:
    kinds = {
        "input_size": int,
        "crop_borders": bool,
        "border_tolerance": float,
        "percentile_low": float,
        "percentile_high": float,
        "min_size": int,
    }
    values: dict[str, Any] = {k: _get(doc, k, t, "preprocessing.") for k, t in kinds.items()}
    values["modalities"] = frozenset(_strings(doc, "modalities", "preprocessing."))
    # Optional (bundles written before it existed did not stretch after a VOI window).
    values["stretch_after_voi"] = (
        _get(doc, "stretch_after_voi", bool, "preprocessing.")
        if "stretch_after_voi" in doc
        else False
    )
    if values["input_size"] != input_size:
        raise BundleError("bundle metadata: 'preprocessing.input_size' differs from 'input_size'")
    try:
        return PreprocessParams(**values)
    except ValueError as exc:
        raise BundleError(f"bundle metadata: key 'preprocessing': {exc}") from exc


def metadata_from_json(doc: Any) -> tuple[BundleMetadata, str]:
    """Validate a parsed ``metadata.json``; returns the metadata and the weights' sha256."""
    if not isinstance(doc, dict):
        raise BundleError("bundle metadata: the document must be a JSON object")
    schema = _get(doc, "schema", str)
    if schema != SCHEMA:
        raise BundleError(f"bundle metadata: key 'schema' is {schema!r}, expected {SCHEMA!r}")
    arch = _get(doc, "arch", str)
    if arch not in ARCHS:
        raise BundleError(
            f"bundle metadata: unknown arch {arch!r}; expected one of {sorted(ARCHS)}"
        )
    labels = _get(doc, "labels", dict)
    count_classes = _strings(labels, "count_classes", "labels.")
    if count_classes != COUNT_CLASSES:
        raise BundleError(f"bundle metadata: key 'labels.count_classes' must be {COUNT_CLASSES}")
    body_parts = _strings(labels, "body_parts", "labels.")
    input_size = _get(doc, "input_size", int)
    thresholds = _get(doc, "thresholds", dict)
    overrides = _get(thresholds, "per_body_part", dict, "thresholds.")
    unknown = sorted(set(overrides) - set(body_parts))
    if unknown:
        raise BundleError(
            f"bundle metadata: 'thresholds.per_body_part' has unknown parts {unknown}"
        )
    per_part = {}
    for part in overrides:
        _get(overrides, part, dict, "thresholds.per_body_part.")
        per_part[part] = _point(overrides[part], f"thresholds.per_body_part.{part}.")
    default = _point(_get(thresholds, "default", dict, "thresholds."), "thresholds.default.")
    temperature = _get(doc, "temperature", float)
    if temperature <= 0:
        raise BundleError("bundle metadata: key 'temperature' must be positive")
    dropout = _get(doc, "dropout", float)
    if not 0.0 <= dropout < 1.0:
        raise BundleError("bundle metadata: key 'dropout' must be in [0, 1)")
    metrics = _get(doc, "metrics", dict)
    for key, value in metrics.items():
        if value is not None:
            _get(metrics, key, float, "metrics.")
    sha = _get(doc, "weights_sha256", str)
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise BundleError("bundle metadata: key 'weights_sha256' must be 64 lowercase hex digits")
    for key in ("name", "version"):
        if not _get(doc, key, str).strip():
            raise BundleError(f"bundle metadata: key {key!r} must not be empty")
    localisation = _get(doc, "localisation_head", bool) if "localisation_head" in doc else False
    training_data: dict[str, str] = {}
    if "training_data" in doc:
        record = _get(doc, "training_data", dict)
        for key in record:
            training_data[key] = _get(record, key, str, "training_data.")
    pretrained = _get(doc, "pretrained", str) if "pretrained" in doc else ""
    meta = BundleMetadata(
        name=doc["name"],
        version=doc["version"],
        arch=arch,
        body_parts=body_parts,
        preprocess=_preprocess(_get(doc, "preprocessing", dict), input_size),
        thresholds=Thresholds(default, per_part),
        temperature=temperature,
        training_manifest_sha256=_get(doc, "training_manifest_sha256", str),
        metrics={k: (None if v is None else float(v)) for k, v in metrics.items()},
        count_classes=count_classes,
        dropout=dropout,
        localisation_head=localisation,
        training_data=training_data,
        pretrained=pretrained,
    )
    return meta, sha
