"""Model bundles: a directory in MONAI bundle style.

```
<bundle>/configs/metadata.json   name, version, arch, labels, preprocessing, thresholds,
                                 temperature, training manifest hash, metrics, weights_sha256
<bundle>/models/model.pt         the state_dict (torch.save)
```

:func:`save_bundle` writes the weights first, then the metadata that names their sha256, each
through a temporary file and a rename. :func:`load_bundle` validates the metadata and checks the
weights' sha256 *before* unpickling them (and then only with ``weights_only=True``). A reader
that catches a bundle being overwritten between the two renames sees a sha256 mismatch and
refuses it; it never loads new weights with old metadata.

A bundle's own metadata only says which weights belong to it; whoever can rewrite the weights
can rewrite the metadata too. A model registry therefore records the sha256 (and name and
version) of each bundle it serves, and passes them as :class:`ExpectedBundle`:
:func:`load_bundle` and :func:`check_bundle` refuse a bundle that differs
(:class:`BundleMismatchError`). The weights are hashed from the very bytes that are then
unpickled, so a file swapped between the check and the load is never loaded.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from models.bundle_metadata import BundleMetadata, metadata_from_json, metadata_to_json
from models.digest import sha256_file
from models.errors import BundleError
from models.network import MultiTaskNet, build_network, resolve_device

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_BUNDLE",
    "METADATA_PATH",
    "PHANTOM_BUNDLE",
    "WEIGHTS_PATH",
    "BundleInfo",
    "BundleMismatchError",
    "ExpectedBundle",
    "LoadedModel",
    "bundle_identity",
    "check_bundle",
    "default_bundle_path",
    "load_bundle",
    "phantom_bundle_path",
    "round_to_half",
    "save_bundle",
    "sha256_file",
]

METADATA_PATH = Path("configs") / "metadata.json"
WEIGHTS_PATH = Path("models") / "model.pt"


@dataclass(frozen=True)
class BundleInfo:
    """Identity of a saved or loaded bundle."""

    name: str
    version: str
    sha256: str
    path: Path


@dataclass(frozen=True)
class ExpectedBundle:
    """What a model registry recorded about a bundle: the bundle loaded must be this one."""

    name: str
    version: str
    #: the weights file's sha256
    sha256: str


class BundleMismatchError(BundleError):
    """A bundle is not the one the registry recorded (its weights or identity changed)."""


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A network with its weights loaded (eval mode, on ``device``) and its metadata."""

    network: MultiTaskNet
    metadata: BundleMetadata
    info: BundleInfo
    device: torch.device


#: The bundle xrayd uses unless a site configures another: fine-tuned on real radiographs.
DEFAULT_BUNDLE = "xrayd-fracatlas-effnetlite0"
#: A small network trained on synthetic phantoms: for pipeline tests, never for patients.
PHANTOM_BUNDLE = "xrayd-phantom"


def default_bundle_path() -> Path:
    """The default bundle shipped with xrayd (EfficientNet-Lite0 fine-tuned on FracAtlas)."""
    return Path(__file__).resolve().parent / "bundles" / DEFAULT_BUNDLE


def phantom_bundle_path() -> Path:
    """The phantom bundle shipped with xrayd (trained on synthetic phantoms only: pipeline
    tests and demonstrations of the plumbing, not a fracture detector)."""
    return Path(__file__).resolve().parent / "bundles" / PHANTOM_BUNDLE


def _replace(tmp: Path, final: Path) -> None:
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    tmp.replace(final)
    fd = os.open(final.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_bundle(
    directory: Path, network: MultiTaskNet, metadata: BundleMetadata, *, half: bool = False
) -> BundleInfo:
    """Write ``network``'s weights and ``metadata`` as a bundle in ``directory``.

    ``half``: store floating-point weights as float16 (half the size; loading widens them back
    to float32, so the loaded network computes with exactly the float16-rounded values —
    round the network with :func:`round_to_half` before measuring the metrics it records).

    Raises :class:`BundleError`, before writing anything, if the metadata would not load back
    or the network does not match it (arch, heads).
    """
    if network.arch != metadata.arch:
        raise BundleError(f"network arch {network.arch!r} != metadata arch {metadata.arch!r}")
    if network.body_part_head.out_features != len(metadata.body_parts):
        raise BundleError("the network's body-part head does not match metadata.body_parts")
    if (network.localisation_head is not None) != metadata.localisation_head:
        raise BundleError("the network's localisation head does not match the metadata")
    metadata_from_json(metadata_to_json(metadata, "0" * 64))  # what load_bundle would refuse
    directory = Path(directory)
    weights = directory / WEIGHTS_PATH
    meta_path = directory / METADATA_PATH
    weights.parent.mkdir(parents=True, exist_ok=True)
    meta_path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        k: (v.detach().cpu().half() if half and v.is_floating_point() else v.detach().cpu())
        for k, v in network.state_dict().items()
    }
    tmp = weights.with_name(weights.name + ".tmp")
    torch.save(state, tmp)
    _replace(tmp, weights)
    digest = sha256_file(weights)
    doc = metadata_to_json(metadata, digest)
    tmp = meta_path.with_name(meta_path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    _replace(tmp, meta_path)
    logger.info("saved bundle %s %s (weights %s)", metadata.name, metadata.version, digest[:12])
    return BundleInfo(metadata.name, metadata.version, digest, directory)


def round_to_half(network: MultiTaskNet) -> None:
    """Round ``network``'s floating-point parameters and buffers to float16 values, in place."""
    with torch.no_grad():
        for tensor in [*network.parameters(), *network.buffers()]:
            if tensor.is_floating_point():
                tensor.copy_(tensor.half().to(tensor.dtype))


def bundle_identity(directory: Path) -> BundleInfo:
    """Name, version and weights sha256 of a bundle from its metadata, without loading the
    network (the sha256 is the one the metadata records; :func:`load_bundle` verifies it)."""
    directory = Path(directory)
    metadata, sha256 = _read_metadata(directory)
    return BundleInfo(metadata.name, metadata.version, sha256, directory)


def _read_metadata(directory: Path) -> tuple[BundleMetadata, str]:
    try:
        doc = json.loads((directory / METADATA_PATH).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"no {METADATA_PATH} in bundle {directory}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"cannot read {METADATA_PATH} in bundle {directory}: {exc}") from exc
    return metadata_from_json(doc)


def _read_weights(directory: Path) -> tuple[bytes, str]:
    """The weights file's bytes and their sha256 (one read: what is hashed is what loads)."""
    weights = directory / WEIGHTS_PATH
    if not weights.is_file():
        raise BundleError(f"no {WEIGHTS_PATH} in bundle {directory}")
    try:
        data = weights.read_bytes()
    except OSError as exc:
        raise BundleError(f"cannot read {WEIGHTS_PATH} in bundle {directory}: {exc}") from exc
    return data, hashlib.sha256(data).hexdigest()


def _verify(
    directory: Path,
    metadata: BundleMetadata,
    recorded: str,
    actual: str,
    expected: ExpectedBundle | None,
) -> None:
    """Refuse weights that differ from the registry's record, then from the metadata's."""
    if expected is not None:
        if actual != expected.sha256:
            raise BundleMismatchError(
                f"bundle {directory} refused: its weights are not the ones the model registry "
                f"recorded for {expected.name} {expected.version} (registry sha256 "
                f"{expected.sha256}, {WEIGHTS_PATH} has {actual}); the file was altered or "
                "replaced"
            )
        if (metadata.name, metadata.version) != (expected.name, expected.version):
            raise BundleMismatchError(
                f"bundle {directory} refused: its metadata names {metadata.name} "
                f"{metadata.version}, the model registry recorded {expected.name} "
                f"{expected.version}"
            )
    if actual != recorded:
        raise BundleError(
            f"weights sha256 mismatch in bundle {directory}: metadata says {recorded}, "
            f"{WEIGHTS_PATH} has {actual}"
        )


def check_bundle(directory: Path, expected: ExpectedBundle) -> BundleInfo:
    """Check, without building the network, that the bundle in ``directory`` is ``expected``:
    its weights hash to the recorded sha256 and its metadata names the recorded name and
    version (and records the same sha256). Raises :class:`BundleMismatchError` (or
    :class:`BundleError` for a bundle that cannot be read)."""
    directory = Path(directory)
    metadata, recorded = _read_metadata(directory)
    _, actual = _read_weights(directory)
    _verify(directory, metadata, recorded, actual, expected)
    return BundleInfo(metadata.name, metadata.version, actual, directory)


def load_bundle(
    directory: Path, device: str = "cpu", *, expected: ExpectedBundle | None = None
) -> LoadedModel:
    """Validate and load a bundle; ``device="auto"`` picks CUDA when available.

    ``expected``: what a model registry recorded about this bundle; a bundle whose weights
    (or name and version) differ is refused with :class:`BundleMismatchError`.

    Raises :class:`BundleError` naming what is wrong: missing files, invalid JSON, a missing
    or mistyped metadata key, an unknown arch, a weights sha256 mismatch, or weights that do
    not fit the network.
    """
    directory = Path(directory)
    metadata, recorded = _read_metadata(directory)
    data, actual = _read_weights(directory)
    _verify(directory, metadata, recorded, actual, expected)
    target = resolve_device(device)
    network = build_network(
        metadata.arch,
        dropout=metadata.dropout,
        body_parts=len(metadata.body_parts),
        input_size=metadata.input_size,
        localise=metadata.localisation_head,
    )
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        network.load_state_dict(state, strict=True)
    except Exception as exc:  # unpickling or key/shape mismatch: all mean a bad bundle
        raise BundleError(
            f"weights in bundle {directory} do not fit {metadata.arch}: {exc}"
        ) from exc
    del data
    network.to(target).eval()
    logger.info("loaded bundle %s %s on %s", metadata.name, metadata.version, target)
    info = BundleInfo(metadata.name, metadata.version, actual, directory)
    return LoadedModel(network, metadata, info, target)
