"""``xrayd synth``, ``predict``, ``train`` and ``evaluate`` as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

XRAYD = str(Path(sys.executable).parent / "xrayd")
DEFAULT = "xrayd-fracatlas-effnetlite0"


def xrayd(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("XRAYD_")}
    return subprocess.run([XRAYD, *args], capture_output=True, text=True, timeout=600, env=env)


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    done = xrayd("synth", "--out", str(out), "--studies", "2", "--seed", "4", "--no-progress")
    assert done.returncode == 0, done.stderr
    assert "wrote 2 synthetic studies" in done.stdout
    return out


def test_predict_reports_each_file_or_why_it_was_not_analysed(
    studies: Path, tmp_path: Path
) -> None:
    files = sorted(studies.glob("*/*.dcm"))
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not a DICOM file")
    done = xrayd("predict", "--json", *map(str, files), str(junk))
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert [r["file"] for r in results] == [*map(str, files), str(junk)]
    for result in results[:-1]:
        assert result["analysed"] is True
        assert result["decision"] in ("present", "absent", "indeterminate")
        assert result["model"] == {"name": DEFAULT, "version": "1.0.0"}  # the real model
        assert 0.0 <= result["fracture_probability"] <= 1.0 and result["seconds"] > 0
        assert result["body_part"] and len(result["count_probabilities"]) == 3
    assert results[-1]["analysed"] is False and "cannot read DICOM" in results[-1]["reason"]
    text = xrayd("predict", str(files[0]))
    assert text.returncode == 0 and f"model {DEFAULT} 1.0.0" in text.stdout
    assert "not a diagnosis" in text.stdout


def test_predict_with_a_missing_bundle_is_a_usage_error(studies: Path, tmp_path: Path) -> None:
    done = xrayd("predict", "--bundle", str(tmp_path / "nope"), str(next(studies.glob("*/*.dcm"))))
    assert done.returncode == 2
    assert "no configs/metadata.json" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
def test_train_then_evaluate_writes_a_bundle_and_a_report(tmp_path: Path) -> None:
    bundle, report = tmp_path / "bundle", tmp_path / "report"
    common = ["--input-size", "64", "--workers", "2", "--no-progress"]
    done = xrayd(
        "train",
        "--out",
        str(bundle),
        "--arch",
        "resnet18_half",
        "--n-train",
        "24",
        "--n-val",
        "16",
        "--epochs",
        "2",
        "--name",
        "tiny",
        "--version",
        "0.0.1",
        *common,
    )
    assert done.returncode == 0, done.stderr
    assert "saved bundle tiny 0.0.1" in done.stdout
    training = json.loads((bundle / "configs" / "training.json").read_text())
    assert training["n_train"] == 24 and len(training["history"]) == 2
    done = xrayd(
        "evaluate",
        "--bundle",
        str(bundle),
        "--out",
        str(report),
        "--n",
        "16",
        "--workers",
        "2",
        "--no-progress",
        "--bootstrap",
        "50",
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads((report / "report.json").read_text())
    assert doc["n"] == 16 and 0.0 <= doc["auc"] <= 1.0
    assert {p.name for p in report.glob("*.png")} >= {"roc.png", "calibration.png"}
    assert "AUC" in done.stdout


def test_train_on_a_dataset_without_data_is_a_clear_error(tmp_path: Path) -> None:
    done = xrayd("train", "--dataset", "mura", "--out", str(tmp_path / "b"))
    assert done.returncode == 1
    assert "--data is required for --dataset mura" in done.stderr


@pytest.mark.slow
def test_train_on_a_synthetic_csv_folder_splits_by_patient(tmp_path: Path) -> None:
    data = tmp_path / "studies"
    done = xrayd(
        "synth",
        "--out",
        str(data),
        "--studies",
        "60",
        "--seed",
        "2",
        "--size",
        "96",
        "--no-progress",
    )
    assert done.returncode == 0, done.stderr
    done = xrayd(
        "train",
        "--dataset",
        "csv",
        "--data",
        str(data),
        "--out",
        str(tmp_path / "b"),
        "--input-size",
        "64",
        "--epochs",
        "1",
        "--arch",
        "resnet18_half",
        "--no-progress",
    )
    assert done.returncode == 0, done.stderr
    training = json.loads((tmp_path / "b" / "configs" / "training.json").read_text())
    assert training["dataset"] == "csv"
    # 111 images of 60 patients: every image is in exactly one of train/validation/test.
    assert 60 < training["n_train"] + training["n_val"] < 111


def test_a_validation_part_with_one_class_is_a_clear_error(tmp_path: Path) -> None:
    data = tmp_path / "studies"
    assert (
        xrayd(
            "synth",
            "--out",
            str(data),
            "--studies",
            "30",
            "--seed",
            "2",
            "--size",
            "64",
            "--no-progress",
        ).returncode
        == 0
    )
    done = xrayd(
        "train",
        "--dataset",
        "csv",
        "--data",
        str(data),
        "--out",
        str(tmp_path / "b"),
        "--input-size",
        "64",
        "--epochs",
        "1",
        "--no-progress",
    )
    assert done.returncode == 1
    assert "not both fractured and normal" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
def test_fine_tune_on_fracatlas_resumes_then_evaluates(tmp_path: Path) -> None:
    """``xrayd train --arch efficientnet_lite0 --dataset fracatlas`` as the model card says,
    on a small subset: stopped after the first epoch, resumed, then ``xrayd evaluate``."""
    from helpers import fracatlas_root

    root = str(fracatlas_root())
    bundle, report = tmp_path / "bundle", tmp_path / "report"
    train = [
        "train", "--dataset", "fracatlas", "--data", root, "--arch", "efficientnet_lite0",
        "--input-size", "96", "--epochs", "2", "--warmup-epochs", "1", "--limit", "32",
        "--batch-size", "8", "--lr", "4e-4", "--target-sensitivity", "0.9", "--workers", "2",
        "--name", "tiny-real", "--version", "0.0.1", "--out", str(bundle),
        "--cache", str(tmp_path / "cache"), "--no-progress",
    ]  # fmt: skip
    done = xrayd(*train, "--stop-after", "1")
    assert done.returncode == 0, done.stderr
    assert "stopping after epoch 1" in done.stderr and not bundle.exists()
    done = xrayd(*train, "--resume")
    assert done.returncode == 0, done.stderr
    assert "resumed from" in done.stderr and "saved bundle tiny-real 0.0.1" in done.stdout
    training = json.loads((bundle / "configs" / "training.json").read_text())
    assert [h["epoch"] for h in training["history"]] == [1, 2]
    assert training["history"][0]["phase"] == "heads"
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert meta["training_data"]["licence"] == "CC BY 4.0" and meta["localisation_head"]
    done = xrayd(
        "evaluate", "--dataset", "fracatlas", "--data", root, "--bundle", str(bundle),
        "--out", str(report), "--workers", "2", "--no-progress", "--bootstrap", "50",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (report / "report.md").is_file() and (report / "localisation.json").is_file()
    assert "AUC" in done.stdout
