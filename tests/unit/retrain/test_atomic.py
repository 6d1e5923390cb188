"""retrain.atomic: a bundle appears whole at its final path or not at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from retrain.atomic import (
    check_version,
    clean_partial,
    new_partial_dir,
    publish,
    write_file_atomic,
)


def test_a_partial_directory_is_hidden_and_unique(tmp_path: Path) -> None:
    a = new_partial_dir(tmp_path / "models", "1.2.0")
    b = new_partial_dir(tmp_path / "models", "1.2.0")
    assert a != b and a.is_dir() and b.is_dir()
    assert a.name.startswith(".1.2.0.partial-")
    assert not (tmp_path / "models" / "1.2.0").exists()


def test_publish_moves_the_whole_directory(tmp_path: Path) -> None:
    out = tmp_path / "models"
    partial = new_partial_dir(out, "2")
    write_file_atomic(partial / "configs" / "metadata.json", b"{}")
    write_file_atomic(partial / "models" / "model.pt", b"weights")
    final = publish(partial, out / "2")
    assert final == out / "2" and not partial.exists()
    assert (final / "models" / "model.pt").read_bytes() == b"weights"
    assert sorted(p.name for p in out.iterdir()) == ["2"]


def test_publish_never_overwrites_a_version(tmp_path: Path) -> None:
    out = tmp_path / "models"
    (out / "2").mkdir(parents=True)  # even an empty directory (rename would replace it)
    partial = new_partial_dir(out, "2")
    with pytest.raises(FileExistsError):
        publish(partial, out / "2")
    assert partial.is_dir()


def test_clean_partial_removes_only_left_overs(tmp_path: Path) -> None:
    out = tmp_path / "models"
    partial = new_partial_dir(out, "3")
    write_file_atomic(partial / "models" / "model.pt", b"half a bundle")
    done = new_partial_dir(out, "4")
    publish(done, out / "4")
    (out / ".hidden").mkdir()
    assert clean_partial(out) == [partial]
    assert sorted(p.name for p in out.iterdir()) == [".hidden", "4"]
    assert clean_partial(out) == []
    assert clean_partial(tmp_path / "missing") == []


def test_write_file_atomic_replaces_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "a" / "f.json"
    write_file_atomic(target, b"1")
    write_file_atomic(target, b"2")
    assert target.read_bytes() == b"2"
    assert [p.name for p in target.parent.iterdir()] == ["f.json"]


@pytest.mark.parametrize("bad", ["", "..", "a/b", "../x", ".hidden", "x" * 65, "a b", "1..2"])
def test_unsafe_versions_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        check_version(bad)


def test_usual_versions_are_accepted() -> None:
    assert check_version("1.0.1") == "1.0.1"
    assert check_version("2026.11.24-r3+retrain") == "2026.11.24-r3+retrain"


def test_a_bundle_without_manifest_has_no_trained_reviews() -> None:
    from models.bundle import phantom_bundle_path
    from retrain.manifest import read_manifest, trained_review_keys

    assert read_manifest(phantom_bundle_path()) is None
    assert trained_review_keys(phantom_bundle_path()) == frozenset()
