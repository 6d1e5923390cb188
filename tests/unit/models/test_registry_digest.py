"""A bundle is loaded only if it is the one the registry recorded (``ExpectedBundle``).

The bundle's own metadata cannot vouch for its weights: whoever rewrites the weights can
rewrite the metadata too (``save_bundle`` does both). These tests do exactly that and check that
the registry's record still refuses the bundle, with a message naming both digests.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from models.bundle import (
    METADATA_PATH,
    WEIGHTS_PATH,
    BundleMismatchError,
    ExpectedBundle,
    bundle_identity,
    check_bundle,
    load_bundle,
    phantom_bundle_path,
    save_bundle,
)
from models.errors import BundleError
from models.loading import load_classifier


@pytest.fixture
def bundle(tmp_path: Path) -> tuple[Path, ExpectedBundle]:
    """A copy of the phantom bundle and the registry's record of it."""
    directory = tmp_path / "bundle"
    shutil.copytree(phantom_bundle_path(), directory)
    info = bundle_identity(directory)
    return directory, ExpectedBundle(info.name, info.version, info.sha256)


def _resave_with_other_weights(directory: Path) -> str:
    """Rewrite the bundle as an attacker with write access would: other weights, and metadata
    that names their sha256 (same name and version). Returns the new sha256."""
    model = load_bundle(directory)
    with torch.no_grad():
        model.network.fracture_head.bias.add_(3.0)
    return save_bundle(directory, model.network, model.metadata).sha256


def test_the_registered_bundle_loads(bundle: tuple[Path, ExpectedBundle]) -> None:
    directory, expected = bundle
    model = load_bundle(directory, expected=expected)
    assert model.info.sha256 == expected.sha256
    assert check_bundle(directory, expected).sha256 == expected.sha256


def test_rewritten_weights_with_matching_metadata_are_refused(
    bundle: tuple[Path, ExpectedBundle],
) -> None:
    directory, expected = bundle
    new_sha = _resave_with_other_weights(directory)
    load_bundle(directory)  # the bundle is self-consistent: only the registry can tell
    for attempt in (
        lambda: load_bundle(directory, expected=expected),
        lambda: check_bundle(directory, expected),
        lambda: load_classifier(directory, runtime="eager", threads=1, expected=expected),
    ):
        with pytest.raises(BundleMismatchError) as err:
            attempt()
        message = str(err.value)
        assert "not the ones the model registry recorded" in message
        assert expected.sha256 in message and new_sha in message


def test_a_flipped_byte_in_the_weights_is_refused(bundle: tuple[Path, ExpectedBundle]) -> None:
    directory, expected = bundle
    weights = directory / WEIGHTS_PATH
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(BundleMismatchError, match="registry sha256"):
        load_bundle(directory, expected=expected)
    with pytest.raises(BundleError, match="weights sha256 mismatch"):
        load_bundle(directory)  # the metadata's own check, as before


def test_a_bundle_renamed_in_its_metadata_is_refused(
    bundle: tuple[Path, ExpectedBundle],
) -> None:
    directory, expected = bundle
    path = directory / METADATA_PATH
    doc = json.loads(path.read_text(encoding="utf-8"))
    doc["version"] += "-other"  # same weights, another identity
    path.write_text(json.dumps(doc), encoding="utf-8")
    with pytest.raises(BundleMismatchError, match="metadata names"):
        check_bundle(directory, expected)
