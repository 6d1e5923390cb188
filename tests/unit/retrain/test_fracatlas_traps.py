"""FracAtlas's traps: byte-identical duplicates stay in one split, truncated JPEGs are refused
with a reason (never a crash), boxes follow the image into the model input, the split is
stratified by label and body part."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.preprocess import PreprocessParams
from retrain.datasets import load_fracatlas
from retrain.datasets.errors import DatasetError
from retrain.datasets.fracatlas import FRACATLAS_COLUMNS, fracatlas_boxes
from retrain.datasets.images import prepare_image
from retrain.datasets.localised import load_localised, localised_tensors, save_localised
from retrain.datasets.records import FileImage
from retrain.datasets.split import split_stratified

PARTS = ("hand", "leg", "hip", "shoulder")


def _picture(seed: int, rows: int = 120, cols: int = 100) -> np.ndarray:
    rng = np.random.default_rng(seed)
    _, x = np.mgrid[0:rows, 0:cols]
    bone = 150 * np.exp(-(((x - cols / 2) / (cols / 6)) ** 2))
    return np.clip(bone + rng.normal(40, 10, (rows, cols)), 0, 255).astype(np.uint8)


def make_share(root: Path, n: int = 60) -> Path:  # n >= 8
    """A FracAtlas-layout folder: every 4th image fractured with a YOLO box, one group of
    three identical files, one truncated JPEG."""
    rows = [list(FRACATLAS_COLUMNS)]
    for i in range(n):
        fractured = i % 4 == 0
        part = PARTS[i % len(PARTS)]
        name = f"IMG{i:07d}.jpg"
        folder = root / "images" / ("Fractured" if fractured else "Non_fractured")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.stack([_picture(i)] * 3, axis=-1)).save(folder / name, quality=92)
        boxes = root / "Annotations" / "YOLO"
        boxes.mkdir(parents=True, exist_ok=True)
        (boxes / f"IMG{i:07d}.txt").write_text("0 0.5 0.25 0.2 0.1\n" if fractured else "")
        flags = ["1" if p == part else "0" for p in PARTS]
        rows.append(
            [name, *flags, "0", "0", "0", str(int(fractured)), str(int(fractured)), "1", "0", "0"]
        )
    # IMG0000001 and IMG0000002 become copies of IMG0000003 (all three not fractured).
    normal = root / "images" / "Non_fractured"
    for i in (1, 2):
        shutil.copyfile(normal / "IMG0000003.jpg", normal / f"IMG{i:07d}.jpg")
    # IMG0000005 ends early, like the truncated files of the share.
    data = (normal / "IMG0000005.jpg").read_bytes()
    (normal / "IMG0000005.jpg").write_bytes(data[: len(data) * 2 // 3])
    (root / "dataset.csv").write_text("\n".join(",".join(r) for r in rows) + "\n")
    return root


def test_identical_files_share_a_group_and_a_split(tmp_path: Path) -> None:
    records = load_fracatlas(make_share(tmp_path))
    groups = {r.study_id: r.group for r in records}
    assert groups["IMG0000001.jpg"] == groups["IMG0000002.jpg"] == groups["IMG0000003.jpg"]
    assert len(set(groups.values())) == len(records) - 2
    for seed in range(20):  # whatever the seed, the three copies are never split up
        split = split_stratified(records, seed=seed, validation=0.2, test=0.2)
        homes = {
            name
            for name in ("train", "validation", "test")
            for r in split.get(name)  # type: ignore[arg-type]
            if r.study_id in ("IMG0000001.jpg", "IMG0000002.jpg", "IMG0000003.jpg")
        }
        assert len(homes) == 1


def test_the_split_is_stratified_and_stable(tmp_path: Path) -> None:
    records = load_fracatlas(make_share(tmp_path, n=200))
    split = split_stratified(records, seed=0, validation=0.15, test=0.15)
    assert sum(len(split.get(n)) for n in ("train", "validation", "test")) == len(records)  # type: ignore[arg-type]
    for name in ("validation", "test"):
        part = split.get(name)  # type: ignore[arg-type]
        counts = Counter((r.fracture, r.body_part) for r in part)
        # every stratum (label x body part) is represented in proportion: 50 * 0.15 -> 7 or 8
        assert set(counts) == {(r.fracture, r.body_part) for r in records}
        assert all(5 <= c <= 9 for c in counts.values()), counts
    # The same seed gives the same split whatever the order of the records.
    again = split_stratified(list(reversed(records)), seed=0, validation=0.15, test=0.15)
    assert {r.study_id for r in again.test} == {r.study_id for r in split.test}
    other = split_stratified(records, seed=1, validation=0.15, test=0.15)
    assert {r.study_id for r in other.test} != {r.study_id for r in split.test}


def test_a_truncated_jpeg_is_refused_with_its_reason(tmp_path: Path) -> None:
    make_share(tmp_path)
    path = tmp_path / "images" / "Non_fractured" / "IMG0000005.jpg"
    with pytest.raises(DatasetError, match="truncated"):
        prepare_image(FileImage(path), PreprocessParams(input_size=64))


def test_preparation_skips_truncated_files_and_maps_boxes(tmp_path: Path) -> None:
    records = load_fracatlas(make_share(tmp_path, n=12))
    data = localised_tensors(records, PreprocessParams(input_size=64), root=tmp_path, workers=1)
    assert data.skipped == {"truncated": 1}
    assert len(data) == len(records) - 1 and "images/Non_fractured/IMG0000005.jpg" not in data.keys
    fractured = [i for i, k in enumerate(data.keys) if "/Fractured/" in k]
    assert fractured and bool(data.mask_known.all())
    for i in fractured:
        (box,) = data.boxes[i]
        mask = data.masks[i, 0].numpy()
        assert mask.sum() > 0
        rows, cols = np.nonzero(mask)
        # The box (centre x 0.5, y 0.25 of a 120 x 100 image) lands in the upper middle.
        assert rows.mean() < 32 and 24 < cols.mean() < 40
        r0, c0, r1, c1 = box
        # The mask covers every pixel the box touches, and no other.
        assert (rows.min(), rows.max() + 1) == (np.floor(r0), np.ceil(r1))
        assert (cols.min(), cols.max() + 1) == (np.floor(c0), np.ceil(c1))
    normal = [i for i, k in enumerate(data.keys) if "/Non_fractured/" in k]
    assert all(data.masks[i].sum() == 0 and data.boxes[i] == () for i in normal)
    save_localised(data, tmp_path / "cache.pt")
    back = load_localised(tmp_path / "cache.pt")
    assert back.keys == data.keys and back.boxes == data.boxes and back.skipped == data.skipped
    assert bool((back.pixels == data.pixels).all()) and back.manifest_sha256 == data.manifest_sha256


def test_yolo_boxes_are_read_and_checked(tmp_path: Path) -> None:
    make_share(tmp_path, n=8)
    image = tmp_path / "images" / "Fractured" / "IMG0000000.jpg"
    assert fracatlas_boxes(image) == ((0.5, 0.25, 0.2, 0.1),)
    assert fracatlas_boxes(tmp_path / "images" / "Fractured" / "IMG9999999.jpg") is None
    (tmp_path / "Annotations" / "YOLO" / "IMG0000000.txt").write_text("0 0.5 1.7 0.2\n")
    with pytest.raises(DatasetError, match="line 1"):
        fracatlas_boxes(image)
