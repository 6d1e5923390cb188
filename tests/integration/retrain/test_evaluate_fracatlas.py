"""``xrayd evaluate --dataset fracatlas`` on a small FracAtlas-layout folder.

A tiny EfficientNet-Lite0 (ImageNet backbone, untrained heads and localisation head,
64-pixel input) is evaluated on the test part of a 54-image folder with a truncated JPEG,
byte-identical files and fractured images without boxes. The figures of an untrained network
mean nothing; the test checks that every file is written, that the numbers add up, and that
nothing crashes on the traps.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from models.bundle import save_bundle
from models.bundle_metadata import BundleMetadata
from models.decision import OperatingPoint, Thresholds
from models.labels import BODY_PARTS
from models.network import build_network
from models.preprocess import PreprocessParams
from models.report_thumbnails import grid_size
from models.training_data import FRACATLAS
from retrain.datasets.fracatlas import FRACATLAS_COLUMNS, fracatlas_boxes
from retrain.datasets.tensors import dataset_split
from xrayd.cli.evaluation_report import ATTRIBUTION
from xrayd.cli.main import main

torch.set_num_threads(1)

SIZE = 64
ROWS, COLS = 96, 128  # letterboxed to 48 x 64 content rows 8..56 of the 64-pixel input
PARTS = ("hand", "leg", "hip", "shoulder")
#: What each image is: (body part, fractured, hardware), in file-name order.
PLAN: list[tuple[str, bool, bool]] = (
    [("hand", True, False)] * 14
    + [("leg", True, True)] * 8
    + [("hand", False, False)] * 24
    + [("hip", True, False)] * 4
    + [("shoulder", False, False)] * 4
)
TRUNCATED = [f"IMG{i:07d}.jpg" for i in range(50, 54)]  # the shoulders
COPIES = ("IMG0000030.jpg", "IMG0000031.jpg")
#: Fractured without a box: two hands, and the hips (one of them always in the test part).
NO_BOXES = {f"IMG{i:07d}.jpg" for i in (0, 1, 46, 47, 48, 49)}


def _picture(seed: int, fractured: bool) -> np.ndarray:
    rng = np.random.default_rng(seed)
    _, x = np.mgrid[0:ROWS, 0:COLS]
    bone = 150 * np.exp(-(((x - COLS / 2) / (COLS / 6)) ** 2))
    image = bone + rng.normal(40, 10, (ROWS, COLS))
    if fractured:
        image[20:30, 50:80] -= 80  # a dark crack where the box is
    out: np.ndarray = np.clip(image, 0, 255).astype(np.uint8)
    return out


def _row(name: str, part: str, fractured: bool, hardware: bool) -> list[str]:
    flags = ["1" if p == part else "0" for p in PARTS]
    f = str(int(fractured))
    return [name, *flags, "0", str(int(hardware)), "0", f, f, "1", "0", "0"]


def make_share(root: Path) -> Path:
    """54 images (:data:`PLAN`): 14 fractured hands (2 without annotation), 8 fractured legs
    with hardware, 24 normal hands (two byte-identical), 4 fractured hips without annotation
    and 4 truncated normal shoulders. 15 % of a stratum of 4 rounds to 1: one hip and one
    truncated shoulder are always in the test part."""
    table = [list(FRACATLAS_COLUMNS)]
    annotations = root / "Annotations" / "YOLO"
    annotations.mkdir(parents=True)
    for i, (part, fractured, hardware) in enumerate(PLAN):
        name = f"IMG{i:07d}.jpg"
        folder = root / "images" / ("Fractured" if fractured else "Non_fractured")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_picture(i, fractured)).save(folder / name, quality=92)
        if fractured and name not in NO_BOXES:
            # cx cy w h of rows 20..30, columns 50..80; a second box for every third image
            line = f"0 {65 / COLS} {25 / ROWS} {30 / COLS} {10 / ROWS}\n"
            if i % 3 == 0:
                line += f"0 {20 / COLS} {70 / ROWS} {16 / COLS} {12 / ROWS}\n"
            (annotations / f"IMG{i:07d}.txt").write_text(line)
        table.append(_row(name, part, fractured, hardware))
    normal = root / "images" / "Non_fractured"
    shutil.copyfile(normal / COPIES[0], normal / COPIES[1])
    for name in TRUNCATED:
        data = (normal / name).read_bytes()
        (normal / name).write_bytes(data[: len(data) // 2])
    (root / "dataset.csv").write_text("\n".join(",".join(r) for r in table) + "\n")
    return root


def make_bundle(directory: Path) -> Path:
    torch.manual_seed(0)
    meta = BundleMetadata(
        name="tiny-fracatlas",
        version="0.0.7",
        arch="efficientnet_lite0",
        body_parts=BODY_PARTS,
        preprocess=PreprocessParams(input_size=SIZE, stretch_after_voi=True),
        thresholds=Thresholds(OperatingPoint(0.5, 0.3, 0.6)),  # most untrained calls undecided
        localisation_head=True,
        training_data=dict(FRACATLAS),
    )
    # ImageNet weights (from the installed file): a randomly initialised Lite0 gives all but
    # zero features, hence one probability and a flat heatmap for every image.
    network = build_network("efficientnet_lite0", input_size=SIZE, localise=True, pretrained=True)
    head = network.localisation_head
    assert head is not None and head.bias is not None
    with torch.no_grad():  # cells of very different probability: boxes smaller than the image
        head.weight.mul_(10.0)
        head.bias.fill_(-3.0)
    save_bundle(directory, network, meta)
    return directory


def _png(path: Path) -> Image.Image:
    image = Image.open(io.BytesIO(path.read_bytes()))
    image.load()
    return image


def _check_rate(rate: dict[str, Any]) -> None:
    if rate["n"] == 0:
        assert rate["rate"] is None and rate["ci"] is None
        return
    assert rate["rate"] == pytest.approx(rate["hits"] / rate["n"])
    assert 0.0 <= rate["ci"]["low"] <= rate["rate"] <= rate["ci"]["high"] <= 1.0


@pytest.mark.slow
def test_evaluate_fracatlas_writes_an_honest_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in [k for k in os.environ if k.startswith("XRAYD_")]:
        monkeypatch.delenv(key)
    root = make_share(tmp_path / "FracAtlas")
    bundle = make_bundle(tmp_path / "bundle")
    out = tmp_path / "report"

    test_part = dataset_split("fracatlas", root, "test")
    names = [r.study_id for r in test_part]
    truncated = [n for n in names if n in TRUNCATED]
    assert len(truncated) == 1  # the test part really meets a truncated JPEG
    readable = [r for r in test_part if r.study_id not in TRUNCATED]
    fractured = [r for r in readable if r.fracture]
    boxed = [r for r in fractured if r.path is not None and fracatlas_boxes(r.path)]
    normal = [r for r in readable if not r.fracture]
    assert normal and boxed and len(boxed) < len(fractured)  # some fractured without a box
    homes = {
        part
        for part in ("train", "validation", "test")
        for r in dataset_split("fracatlas", root, part)
        if r.study_id in COPIES
    }
    assert len(homes) == 1  # identical files kept together

    code = main(
        [
            "evaluate",
            "--dataset",
            "fracatlas",
            "--data",
            str(root),
            "--bundle",
            str(bundle),
            "--out",
            str(out),
            "--workers",
            "1",
            "--device",
            "cpu",
            "--no-progress",
            "--bootstrap",
            "50",
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0
    expected = {
        "report.json",
        "roc.png",
        "calibration.png",
        "confusion.png",
        "body_parts.png",
        "subsets.json",
        "localisation.json",
        "worst_false_negatives.png",
        "worst_false_positives.png",
        "report.md",
    }
    assert {p.name for p in out.iterdir()} == expected  # no temporary files left

    report = json.loads((out / "report.json").read_text())
    assert report["n"] == len(test_part) - len(truncated) == len(readable)
    assert report["positives"] == len(fractured) and report["negatives"] == len(normal)
    assert 0.0 <= report["auc"] <= 1.0

    subsets = json.loads((out / "subsets.json").read_text())
    data = subsets["data"]
    assert data["part"] == "test" and data["records"] == len(test_part)
    assert data["evaluated"] == report["n"]
    assert data["skipped"] == {"truncated": 1}
    assert data["skipped_files"] == [f"images/Non_fractured/{truncated[0]}"]
    by_name = {s["subset"]: s for s in subsets["subsets"]}
    everything, without, only = (
        by_name["all"],
        by_name["without hardware"],
        by_name["hardware only"],
    )
    assert everything["auc"] == pytest.approx(report["auc"])
    assert everything["sensitivity"] == pytest.approx(report["at_threshold"]["sensitivity"])
    hardware = [r for r in readable if r.hardware]
    assert only["n"] == len(hardware) and only["positives"] == len(hardware)  # all fractured
    assert only["auc"] is None and only["negatives"] == 0  # one class: no AUC, no crash
    assert only["specificity"] is None and only["sensitivity"] is not None
    assert without["n"] + only["n"] == report["n"]
    assert without["positives"] + only["positives"] == report["positives"]
    assert without["negatives"] == report["negatives"]
    assert without["auc"] is not None and 0.0 <= without["auc"] <= 1.0
    for s in (everything, without, only):
        for figure in ("sensitivity", "specificity"):
            if s[figure] is not None:
                ci = s[f"{figure}_ci"]
                assert ci["low"] <= s[figure] <= ci["high"]

    loc = json.loads((out / "localisation.json").read_text())
    assert loc["heatmap"] == "localisation head"
    for summary in (loc["model"], loc["grad_cam"]):
        assert summary["all"]["n"] == len(boxed)
        assert summary["excluded_without_boxes"] == len(fractured) - len(boxed)
        for figures in (summary["all"], summary["drawn"]):
            _check_rate(figures["peak_hit"])
            _check_rate(figures["top_box_hit"])
            if figures["n"]:
                assert 0.0 <= figures["mean_best_iou"] <= 1.0
        assert 1 <= summary["drawn"]["n"] <= summary["all"]["n"]
    assert loc["model"]["method"] == "localisation head"
    assert loc["grad_cam"]["method"] == "Grad-CAM"
    images = loc["images"]
    assert sorted(i["key"].rsplit("/", 1)[1] for i in images) == sorted(r.study_id for r in boxed)
    assert sum(i["model_peak_hit"] for i in images) == loc["model"]["all"]["peak_hit"]["hits"]
    assert (
        sum(i["grad_cam_top_box_hit"] for i in images)
        == (loc["grad_cam"]["all"]["top_box_hit"]["hits"])
    )
    drawn = [i for i in images if i["decision"] != "absent"]
    assert len(drawn) == loc["model"]["drawn"]["n"]
    for image in images:
        assert 1 <= len(image["true_boxes"]) <= 2 and len(image["predicted_boxes"]) <= 3
        # Heatmaps are masked to the content: no predicted box reaches the letterbox padding.
        for r0, _, r1, _ in image["predicted_boxes"] + image["true_boxes"]:
            assert 8 <= r0 < r1 <= 56

    misses = _png(out / "worst_false_negatives.png")
    alarms = _png(out / "worst_false_positives.png")
    assert misses.size == grid_size(min(8, len(fractured)))
    assert alarms.size == grid_size(min(8, len(normal)))

    text = (out / "report.md").read_text()
    assert ATTRIBUTION in text
    assert (
        "FracAtlas: Abedeen I., Rahman M.A., Prottyasha F.Z., Ahmed T., Chowdhury T.M., "
        'Shatabda S. "FracAtlas: A Dataset for Fracture Classification, Localization and '
        'Segmentation of Musculoskeletal Radiographs". Scientific Data 10 (2023). '
        "doi:10.1038/s41597-023-02432-4. Licence CC BY 4.0."
    ) in text
    assert "tiny-fracatlas 0.0.7" in text and "**test**" in text
    assert "truncated: 1" in text and truncated[0] in text
    assert "no patient ids" in text and "one source hospital group" in text
    for heading in ("Per body part", "With and without orthopaedic hardware", "Localisation"):
        assert f"## {heading}" in text
    assert "| without hardware |" in text and "| hardware only |" in text
    assert "Grad-CAM, all" in text and "localisation head, drawn" in text

    assert "AUC" in printed and "peak hit" in printed and "report.md" in printed
