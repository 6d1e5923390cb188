"""retrain.datasets: MURA, FracAtlas, CSV folder and synthetic loaders, patient split, preparation.

Fixtures are written at test time, laid out like the published datasets (tiny images).
"""

from __future__ import annotations

import csv
import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from models.errors import NotAnalysable
from models.labels import BODY_PARTS
from models.losses import head_losses
from models.network import NetworkOutput
from models.plain_image import prepare_array
from models.preprocess import PreprocessParams, prepare
from models.synthetic import generate_dataset
from models.training import tensors_from_cases
from retrain.datasets import (
    MISSING,
    MURA_AS_GIVEN,
    DatasetError,
    FileImage,
    ImageRecord,
    RadiographDataset,
    collate,
    label_codes,
    load_csv_folder,
    load_fracatlas,
    load_mura,
    load_records,
    prepare_image,
    split_by_patient,
    synthetic_records,
    tensors_from_records,
)
from retrain.datasets.fracatlas import FRACATLAS_COLUMNS
from retrain.datasets.split import assign
from retrain.datasets.tensors import dataset_split, dataset_tensors

from dicom_factory import make_radiograph, save

PARAMS = PreprocessParams(input_size=32)


def radiograph(rows: int = 96, cols: int = 80, seed: int = 0, peak: float = 200.0) -> np.ndarray:
    """A bright vertical 'bone' band on a darker background with noise (float64)."""
    rng = np.random.default_rng(seed)
    _, x = np.mgrid[0:rows, 0:cols]
    band = np.exp(-(((x - cols / 2) / (cols / 6)) ** 2)) * peak
    return np.asarray(30.0 + band + rng.normal(0.0, 4.0, (rows, cols)))


def write_png(path: Path, pixels: np.ndarray, mode: str = "L") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "L":
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path)
    elif mode == "I;16":
        Image.fromarray(np.clip(pixels, 0, 65535).astype(np.uint16)).save(path)
    elif mode == "RGB":
        grey = np.clip(pixels, 0, 255).astype(np.uint8)
        Image.fromarray(np.stack([grey] * 3, axis=-1)).save(path)
    else:  # pragma: no cover - test helper misuse
        raise ValueError(mode)
    return path


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return path


# --- MURA -----------------------------------------------------------------------------------

MURA_STUDIES = {
    # (split, study type, patient, study folder): number of images
    ("train", "XR_WRIST", "patient00001", "study1_positive"): 2,
    ("train", "XR_ELBOW", "patient00002", "study1_negative"): 1,
    ("train", "XR_FINGER", "patient00003", "study1_negative"): 1,
    ("train", "XR_FINGER", "patient00003", "study2_positive"): 1,
    ("valid", "XR_HUMERUS", "patient11185", "study1_positive"): 1,
    ("valid", "XR_SHOULDER", "patient11186", "study1_negative"): 1,
}


def make_mura(root: Path) -> Path:
    """``root/MURA-v1.1`` with the four CSV files and PNG images (one stored as RGB)."""
    base = root / "MURA-v1.1"
    images: dict[str, list[list[str]]] = {"train": [], "valid": []}
    studies: dict[str, list[list[str]]] = {"train": [], "valid": []}
    for k, ((split, part, patient, study), n) in enumerate(MURA_STUDIES.items()):
        folder = f"MURA-v1.1/{split}/{part}/{patient}/{study}/"
        studies[split].append([folder, "1" if study.endswith("positive") else "0"])
        for i in range(1, n + 1):
            mode = "RGB" if k == 0 and i == 2 else "L"
            write_png(root / folder / f"image{i}.png", radiograph(seed=10 * k + i), mode)
            images[split].append([f"{folder}image{i}.png"])
    for split in ("train", "valid"):
        write_csv(base / f"{split}_image_paths.csv", images[split])
        write_csv(base / f"{split}_labeled_studies.csv", studies[split])
    return base


def test_mura_records_labels_and_body_parts(tmp_path: Path) -> None:
    make_mura(tmp_path)
    records = load_mura(tmp_path)
    assert len(records) == 7
    by_study = {(r.study_id, r.path.name if r.path else ""): r for r in records}
    wrist = by_study[("patient00001/XR_WRIST/study1_positive", "image2.png")]
    assert (
        wrist.path == tmp_path / "MURA-v1.1/train/XR_WRIST/patient00001/study1_positive/image2.png"
    )
    assert (wrist.patient_id, wrist.fracture, wrist.body_part) == ("patient00001", True, "wrist")
    assert (wrist.count, wrist.hardware, wrist.source, wrist.given_split) == (
        None,
        None,
        "mura",
        "train",
    )
    parts = {r.patient_id: r.body_part for r in records}
    assert parts == {
        "patient00001": "wrist",
        "patient00002": "elbow",
        "patient00003": "finger",
        "patient11185": "humerus",
        "patient11186": "shoulder",
    }
    finger = sorted((r.study_id, r.fracture) for r in records if r.patient_id == "patient00003")
    assert finger == [
        ("patient00003/XR_FINGER/study1_negative", False),
        ("patient00003/XR_FINGER/study2_positive", True),
    ]
    assert {r.given_split for r in records if r.patient_id.startswith("patient111")} == {"valid"}
    codes = label_codes(wrist)
    assert (codes.fracture, codes.count, codes.hardware) == (1.0, MISSING, float(MISSING))
    assert codes.body_part == BODY_PARTS.index("wrist")


def test_mura_root_may_be_the_mura_folder_and_splits_can_be_chosen(tmp_path: Path) -> None:
    base = make_mura(tmp_path)
    valid = load_mura(base, splits=("valid",))
    assert sorted(r.patient_id for r in valid) == ["patient11185", "patient11186"]
    with pytest.raises(DatasetError, match="unknown MURA split"):
        load_mura(base, splits=("test",))
    with pytest.raises(DatasetError, match=r"no MURA-v1\.1 folder"):
        load_mura(tmp_path / "MURA-v1.1" / "train")


def test_mura_errors_name_file_line_and_column(tmp_path: Path) -> None:
    base = make_mura(tmp_path)
    paths = base / "valid_image_paths.csv"
    lines = paths.read_text().splitlines()
    paths.write_text(
        "\n".join([*lines, "MURA-v1.1/valid/XR_HAND/patient11187/study1_positive/image1.png"])
        + "\n"
    )
    with pytest.raises(DatasetError) as caught:
        load_mura(tmp_path)
    error = caught.value
    assert (error.file, error.line, error.column) == (paths, 3, "1")
    assert "valid_image_paths.csv, line 3, column '1'" in str(error)
    assert "not in valid_labeled_studies.csv" in str(error)

    paths.write_text("\n".join(lines) + "\n")
    labels = base / "train_labeled_studies.csv"
    text = labels.read_text().replace("study1_negative/,0", "study1_negative/,1", 1)
    labels.write_text(text)
    with pytest.raises(DatasetError, match=r"line 2, column '2': label 1 contradicts"):
        load_mura(tmp_path)


def test_mura_missing_image_file_is_reported(tmp_path: Path) -> None:
    make_mura(tmp_path)
    missing = tmp_path / "MURA-v1.1/valid/XR_SHOULDER/patient11186/study1_negative/image1.png"
    missing.unlink()
    with pytest.raises(
        DatasetError, match=r"valid_image_paths.csv, line 2, column '1': image file"
    ):
        load_mura(tmp_path)
    assert len(load_mura(tmp_path, check_files=False)) == 7


# --- FracAtlas ------------------------------------------------------------------------------

# image_id, hand, leg, hip, shoulder, mixed, hardware, multiscan, fractured, fracture_count,
# frontal, lateral, oblique
FRACATLAS_ROWS = [
    ["IMG0000000.jpg", "1", "0", "0", "0", "0", "0", "0", "0", "0", "1", "0", "0"],
    ["IMG0000001.jpg", "0", "1", "0", "0", "0", "1", "0", "1", "3", "1", "1", "0"],
    ["IMG0000002.jpg", "0", "0", "1", "0", "0", "0", "1", "1", "1", "1", "0", "0"],
    ["IMG0000003.jpg", "0", "0", "0", "1", "0", "1", "0", "0", "0", "0", "1", "0"],
    ["IMG0000004.jpg", "1", "1", "0", "0", "1", "0", "0", "0", "0", "1", "0", "1"],
    ["IMG0000005.jpg", "0", "0", "0", "0", "0", "0", "0", "1", "2", "1", "0", "0"],
]


def make_fracatlas(root: Path, rows: list[list[str]] | None = None) -> Path:
    """``root/FracAtlas`` with ``dataset.csv`` and RGB JPEGs in images/Fractured|Non_fractured."""
    folder = root / "FracAtlas"
    rows = FRACATLAS_ROWS if rows is None else rows
    for k, row in enumerate(rows):
        sub = "Fractured" if row[8] == "1" else "Non_fractured"
        path = folder / "images" / sub / row[0]
        path.parent.mkdir(parents=True, exist_ok=True)
        grey = np.clip(radiograph(seed=k), 0, 255).astype(np.uint8)
        Image.fromarray(np.stack([grey] * 3, axis=-1)).save(path, quality=95)
    write_csv(folder / "dataset.csv", [list(FRACATLAS_COLUMNS), *rows])
    return folder


def test_fracatlas_records_labels_and_body_parts(tmp_path: Path) -> None:
    folder = make_fracatlas(tmp_path)
    records = load_fracatlas(tmp_path)
    assert [r.study_id for r in records] == [row[0] for row in FRACATLAS_ROWS]
    # The split group is the file's content hash (FracAtlas has byte-identical duplicates).
    assert all(r.patient_id.startswith("sha256:") and r.source == "fracatlas" for r in records)
    assert len({r.patient_id for r in records}) == len(records)
    assert records[1].path == folder / "images" / "Fractured" / "IMG0000001.jpg"
    assert records[0].path == folder / "images" / "Non_fractured" / "IMG0000000.jpg"
    got = [(r.fracture, r.count, r.body_part, r.hardware) for r in records]
    assert got == [
        (False, 0, "hand", False),
        (True, 2, "leg", True),  # three fractures: the "2+" class
        (True, 1, "hip", False),
        (False, 0, "shoulder", True),
        (False, 0, "other", False),  # mixed
        (True, 2, None, False),  # no body-part flag: unknown
    ]
    assert label_codes(records[5]).body_part == MISSING
    assert load_fracatlas(folder) == records  # the FracAtlas folder itself works too


def test_fracatlas_count_contradicting_fractured_is_treated_as_unknown(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = [["IMG0000007.jpg", "1", "0", "0", "0", "0", "0", "0", "0", "1", "1", "0", "0"]]
    make_fracatlas(tmp_path, rows)
    with caplog.at_level(logging.WARNING, logger="retrain.datasets.fracatlas"):
        (record,) = load_fracatlas(tmp_path)
    assert (record.fracture, record.count) == (False, None)
    assert "line 2: fracture_count 1 contradicts fractured=0" in caplog.text


def test_fracatlas_errors(tmp_path: Path) -> None:
    folder = make_fracatlas(tmp_path)
    table = folder / "dataset.csv"
    text = table.read_text()
    table.write_text(text.replace("fracture_count", "fractures", 1))
    with pytest.raises(DatasetError) as caught:
        load_fracatlas(tmp_path)
    assert (caught.value.line, caught.value.column) == (1, "fracture_count")
    assert "required column is missing" in str(caught.value)

    table.write_text(text.replace("IMG0000003.jpg,0,0,0,1,0,1", "IMG0000003.jpg,0,0,0,x,0,1"))
    with pytest.raises(
        DatasetError, match=r"dataset.csv, line 5, column 'shoulder': expected 0 or 1"
    ):
        load_fracatlas(tmp_path)

    table.write_text(text)
    (folder / "images" / "Fractured" / "IMG0000002.jpg").unlink()
    with pytest.raises(DatasetError, match=r"line 4, column 'image_id': image file not found"):
        load_fracatlas(tmp_path)


# --- CSV folder (DICOM and PNG) -------------------------------------------------------------


def make_csv_folder(root: Path) -> Path:
    folder = root / "site"
    save(make_radiograph(rows=96, cols=80, seed=1), folder / "p1" / "a.dcm")
    save(make_radiograph(rows=80, cols=96, seed=2), folder / "p1" / "noext")
    write_png(folder / "p2" / "b.png", radiograph(peak=3000.0) * 10, "I;16")
    write_png(folder / "p3" / "c.png", radiograph(seed=3), "L")
    write_csv(
        folder / "labels.csv",
        [
            [
                "path",
                "patient_id",
                "study_id",
                "fracture",
                "fracture_count",
                "body_part",
                "hardware",
            ],
            ["p1/a.dcm", "P1", "S1", "1", "2+", "wrist", "0"],
            ["p1/noext", "P1", "S1", "", "", "", ""],
            ["p2/b.png", "P2", "", "", "0", "Hip", "1"],
            ["p3/c.png", "P3", "S3", "0", "", "other", ""],
        ],
    )
    return folder


def test_csv_folder_records_and_masked_labels(tmp_path: Path) -> None:
    folder = make_csv_folder(tmp_path)
    records = load_csv_folder(folder)
    got = [
        (r.patient_id, r.study_id, r.fracture, r.count, r.body_part, r.hardware) for r in records
    ]
    assert got == [
        ("P1", "S1", True, 2, "wrist", False),
        ("P1", "S1", None, None, None, None),
        ("P2", "P2", False, 0, "hip", True),  # fracture from the count; study defaults to patient
        ("P3", "S3", False, None, "other", None),
    ]
    assert records[0].path == folder / "p1" / "a.dcm"
    codes = [label_codes(r) for r in records]
    assert codes[1].fracture == codes[1].hardware == float(MISSING)
    assert codes[1].count == codes[1].body_part == MISSING
    assert codes[3].count == MISSING and codes[3].fracture == 0.0
    assert load_records("csv", folder) == records


def test_csv_folder_with_a_labels_csv_elsewhere(tmp_path: Path) -> None:
    folder = make_csv_folder(tmp_path)
    table = (folder / "labels.csv").rename(tmp_path / "elsewhere.csv")
    records = load_csv_folder(folder, table, source="hospital-a")
    assert len(records) == 4
    assert {r.group for r in records} == {"hospital-a:P1", "hospital-a:P2", "hospital-a:P3"}


@pytest.mark.parametrize(
    ("header", "row", "line", "column", "message"),
    [
        (["path", "patient_id", "fractured"], None, 1, "fractured", "unknown column"),
        (["path", "fracture"], None, 1, "patient_id", "required column is missing"),
        (["path", "patient_id", "path"], None, 1, "path", "duplicate column"),
        (["path", "patient_id", "fracture"], ["p3/c.png", "P3", "maybe"], 3, "fracture", "0 or 1"),
        (
            ["path", "patient_id", "fracture_count"],
            ["p3/c.png", "P3", "-1"],
            3,
            "fracture_count",
            "count",
        ),
        (
            ["path", "patient_id", "body_part"],
            ["p3/c.png", "P3", "knee"],
            3,
            "body_part",
            "unknown body",
        ),
        (["path", "patient_id"], ["p3/missing.png", "P3"], 3, "path", "image file not found"),
        (["path", "patient_id"], ["../site/p3/c.png", "P3"], 3, "path", "relative path inside"),
        (["path", "patient_id"], ["/etc/passwd", "P3"], 3, "path", "relative path inside"),
        (["path", "patient_id"], ["p3/c.png", ""], 3, "patient_id", "empty"),
        (["path", "patient_id"], ["p3/c.png", "P3"], 3, "path", "listed twice"),
        (
            ["path", "patient_id", "fracture", "fracture_count"],
            ["p3/c.png", "P3", "0", "1"],
            3,
            "fracture_count",
            "contradicts",
        ),
    ],
)
def test_csv_folder_errors_name_file_line_and_column(
    tmp_path: Path,
    header: list[str],
    row: list[str] | None,
    line: int,
    column: str,
    message: str,
) -> None:
    folder = make_csv_folder(tmp_path)
    good = ["p3/c.png", "P3", *([""] * (len(header) - 2))]
    if "listed twice" in message:
        good = ["p3/c.png", "P3"]
    table = write_csv(tmp_path / "bad.csv", [header, good, *([row] if row else [])])
    with pytest.raises(DatasetError) as caught:
        load_csv_folder(folder, table)
    error = caught.value
    assert (error.file, error.line, error.column) == (table, line, column)
    assert str(error).startswith(f"{table}, line {line}, column {column!r}: ")
    assert message in str(error)


def test_csv_folder_missing_table_and_ragged_rows(tmp_path: Path) -> None:
    folder = make_csv_folder(tmp_path)
    with pytest.raises(DatasetError, match="file not found"):
        load_csv_folder(folder, tmp_path / "nope.csv")
    table = write_csv(tmp_path / "ragged.csv", [["path", "patient_id"], ["p3/c.png"]])
    with pytest.raises(DatasetError, match=r"line 2: expected 2 fields"):
        load_csv_folder(folder, table)


def test_dataset_error_pickles() -> None:
    error = DatasetError(Path("a.csv"), "bad", line=3, column="x")
    again = pickle.loads(pickle.dumps(error))
    assert (str(again), again.line, again.column) == (str(error), 3, "x")


# --- split ----------------------------------------------------------------------------------


def fake_records(patients: int, source: str = "csv") -> list[ImageRecord]:
    return [
        ImageRecord(
            image=FileImage(Path(f"/nowhere/{p}/{i}.png")),
            patient_id=f"P{p}",
            study_id=f"P{p}/S{i % 2}",
            fracture=bool(i % 2),
            count=None,
            body_part=None,
            hardware=None,
            source=source,
        )
        for p in range(patients)
        for i in range(1 + p % 3)
    ]


def test_split_keeps_patients_together_and_is_deterministic() -> None:
    records = fake_records(1500)
    split = split_by_patient(records, seed=7, validation=0.2, test=0.1)
    names = ("train", "validation", "test")
    sets = {name: split.patients(name) for name in names}
    assert not sets["train"] & sets["validation"]
    assert not sets["train"] & sets["test"]
    assert not sets["validation"] & sets["test"]
    assert sorted(map(id, split.train + split.validation + split.test)) == sorted(map(id, records))
    assert abs(len(sets["validation"]) / 1500 - 0.2) < 0.04
    assert abs(len(sets["test"]) / 1500 - 0.1) < 0.03
    again = split_by_patient(list(records), seed=7, validation=0.2, test=0.1)
    assert again == split
    other = split_by_patient(records, seed=8, validation=0.2, test=0.1)
    assert other.patients("validation") != sets["validation"]
    # Adding patients never moves the others.
    grown = split_by_patient(
        records + fake_records(1600)[len(records) :], seed=7, validation=0.2, test=0.1
    )
    assert sets["validation"] <= grown.patients("validation")
    assert assign("csv:P1", seed=7, validation=0.2, test=0.1) == assign(
        "csv:P1", seed=7, validation=0.2, test=0.1
    )


def test_split_tells_sources_apart_and_checks_fractions() -> None:
    records = fake_records(300, "a") + fake_records(300, "b")
    split = split_by_patient(records, seed=0, validation=0.3, test=0.0)
    assert not split.test
    a_val = {g.split(":")[1] for g in split.patients("validation") if g.startswith("a:")}
    b_val = {g.split(":")[1] for g in split.patients("validation") if g.startswith("b:")}
    assert a_val != b_val  # the same patient id in two sources is two patients
    with pytest.raises(ValueError, match="validation"):
        split_by_patient(records, validation=0.6, test=0.5)


def test_split_respects_mura_given_split(tmp_path: Path) -> None:
    make_mura(tmp_path)
    records = load_mura(tmp_path)
    split = split_by_patient(records, seed=3, validation=0.45, test=0.45, keep_given=MURA_AS_GIVEN)
    assert {r.given_split for r in split.train} == {"train"}
    assert {r.given_split for r in split.validation} == {"valid"}
    assert len(split.train) == 5 and not split.test
    hashed = split_by_patient(records, seed=3, validation=0.5, test=0.0)
    assert any(r.given_split == "train" for r in hashed.validation) or any(
        r.given_split == "valid" for r in hashed.train
    )


def test_split_refuses_a_patient_in_two_given_splits() -> None:
    mixed = [
        ImageRecord(
            image=FileImage(Path(f"/nowhere/{given}.png")),
            patient_id="patient00042",
            study_id=f"patient00042/{given}",
            fracture=None,
            count=None,
            body_part=None,
            hardware=None,
            source="mura",
            given_split=given,
        )
        for given in ("train", "valid")
    ]
    split_by_patient(mixed[:1], keep_given=MURA_AS_GIVEN)
    with pytest.raises(DatasetError, match=r"valid\.png: .* both the train and the validation set"):
        split_by_patient(mixed, keep_given=MURA_AS_GIVEN)


# --- preparation ----------------------------------------------------------------------------


def test_png_and_dicom_of_the_same_pixels_prepare_identically(tmp_path: Path) -> None:
    """A 16-bit PNG goes through the same crop/window/letterbox as DICOM without VOI."""
    ramp = np.linspace(0.0, 1000.0, 120)[:, None]  # every anatomy column varies
    stored = np.clip(np.rint(radiograph(rows=120, cols=90, peak=2500.0) + ramp), 0, 4095)
    stored[:, :12] = 4000.0  # a uniform (collimator) border to crop
    ds = make_radiograph(rows=120, cols=90)
    del ds.WindowCenter, ds.WindowWidth
    ds.PixelData = stored.astype(np.uint16).tobytes()
    dcm = save(ds, tmp_path / "x.dcm")
    png = write_png(tmp_path / "x.png", stored, "I;16")
    from_dicom = prepare_image(FileImage(dcm), PARAMS)
    from_png = prepare_image(FileImage(png), PARAMS)
    assert from_png.geometry == from_dicom.geometry
    assert from_png.geometry.crop[1] == 12
    np.testing.assert_allclose(from_png.pixels, from_dicom.pixels, atol=1e-6)
    np.testing.assert_allclose(from_dicom.pixels, prepare(ds, PARAMS).pixels, atol=0)


@pytest.mark.parametrize("name", ["a.dcm", "noext", "b.png", "c.png"])
def test_every_file_kind_prepares_to_a_unit_square(tmp_path: Path, name: str) -> None:
    folder = make_csv_folder(tmp_path)
    path = next(p for p in folder.rglob(name))
    prepared = prepare_image(FileImage(path), PARAMS)
    assert prepared.pixels.shape == (32, 32)
    assert prepared.pixels.dtype == np.float32
    assert float(prepared.pixels.min()) >= 0.0 and float(prepared.pixels.max()) <= 1.0
    # Windowed: a bright band on a dark background, not a blank square.
    assert float(prepared.pixels.max()) - float(np.median(prepared.pixels)) > 0.4


def test_rgb_png_prepares_like_its_greyscale_twin(tmp_path: Path) -> None:
    pixels = radiograph(seed=5)
    grey = prepare_image(FileImage(write_png(tmp_path / "g.png", pixels, "L")), PARAMS)
    rgb = prepare_image(FileImage(write_png(tmp_path / "c.png", pixels, "RGB")), PARAMS)
    np.testing.assert_allclose(rgb.pixels, grey.pixels, atol=1e-6)
    jpeg_path = tmp_path / "j.jpg"
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).convert("RGB").save(jpeg_path)
    jpeg = prepare_image(FileImage(jpeg_path), PARAMS)
    assert float(np.abs(jpeg.pixels - grey.pixels).mean()) < 0.05


def test_prepare_array_refuses_what_it_cannot_use() -> None:
    with pytest.raises(NotAnalysable, match="too_small"):
        prepare_array(np.zeros((32, 200), np.uint8), PARAMS)
    with pytest.raises(NotAnalysable, match="colour"):
        prepare_array(np.zeros((80, 80, 2), np.uint8), PARAMS)
    with pytest.raises(NotAnalysable, match="corrupt_pixels"):
        prepare_array(np.full((80, 80), np.nan), PARAMS)


def test_unreadable_or_unanalysable_files_name_the_file(tmp_path: Path) -> None:
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all")
    with pytest.raises(DatasetError, match=r"junk\.png: cannot read the image"):
        prepare_image(FileImage(junk), PARAMS)
    tiny = write_png(tmp_path / "tiny.png", radiograph(rows=20, cols=20), "L")
    with pytest.raises(DatasetError, match=r"tiny\.png: not analysable") as caught:
        prepare_image(FileImage(tiny), PARAMS)
    assert isinstance(caught.value.__cause__, NotAnalysable)
    with pytest.raises(DatasetError, match="image file not found"):
        prepare_image(FileImage(tmp_path / "gone.png"), PARAMS)


# --- torch data and the synthetic source ----------------------------------------------------


def test_dataloader_batches_feed_the_masked_loss(tmp_path: Path) -> None:
    make_mura(tmp_path)
    records = load_mura(tmp_path)
    loader = DataLoader(RadiographDataset(records, PARAMS), batch_size=4, collate_fn=collate)
    batches = list(loader)
    assert [len(targets) for _, targets in batches] == [4, 3]
    pixels, targets = batches[0]
    assert pixels.shape == (4, 1, 32, 32) and pixels.dtype == torch.float32
    assert torch.equal(targets.count, torch.full((4,), MISSING))
    assert torch.equal(targets.hardware, torch.full((4,), float(MISSING)))
    assert set(targets.fracture.tolist()) <= {0.0, 1.0}
    outputs = NetworkOutput(
        fracture=torch.randn(4, requires_grad=True),
        count=torch.randn(4, 3, requires_grad=True),
        body_part=torch.randn(4, len(BODY_PARTS), requires_grad=True),
        hardware=torch.randn(4, requires_grad=True),
    )
    losses = head_losses(outputs, targets)
    value = {name: float(loss.detach()) for name, loss in losses.items()}
    assert value["count"] == 0.0 and value["hardware"] == 0.0
    assert value["fracture"] > 0.0 and value["body_part"] > 0.0


def test_augment_hook_takes_monai_transforms(tmp_path: Path) -> None:
    from monai.transforms import RandFlip, Resize

    folder = make_csv_folder(tmp_path)
    records = load_csv_folder(folder)
    plain = RadiographDataset(records, PARAMS)[3][0]
    flipped, codes = RadiographDataset(records, PARAMS, RandFlip(prob=1.0, spatial_axis=1))[3]
    assert type(flipped) is torch.Tensor and flipped.shape == (1, 32, 32)
    assert torch.equal(flipped, torch.flip(plain, dims=[2]))
    assert codes == label_codes(records[3])
    with pytest.raises(ValueError, match="augment changed the shape"):
        RadiographDataset(records, PARAMS, Resize((16, 16)))[0]


def test_synthetic_records_prepare_like_the_demo_training() -> None:
    records = synthetic_records(4, seed=11, size=64)
    cases = list(generate_dataset(4, 11, size=64))
    labels = [(r.fracture, r.count, r.body_part, r.hardware) for r in records]
    assert labels == [(c.fracture, c.fracture_count, c.body_part, c.hardware) for c in cases]
    assert len({r.patient_id for r in records}) == 4 and records[0].path is None
    pixels, targets = tensors_from_records(records, PARAMS)
    want_pixels, want_targets = tensors_from_cases(cases, PARAMS)
    assert torch.equal(pixels, want_pixels)
    for head in ("fracture", "count", "body_part", "hardware"):
        assert torch.equal(getattr(targets, head), getattr(want_targets, head))
    assert len(load_records("synthetic", n=2, seed=11, size=64)) == 2


def test_load_records_rejects_unknown_kinds_and_missing_roots() -> None:
    with pytest.raises(ValueError, match="unknown dataset kind"):
        load_records("chexpert", Path("."))
    with pytest.raises(ValueError, match="needs a root"):
        load_records("mura")


def test_records_validate_their_labels() -> None:
    image = FileImage(Path("x.png"))
    with pytest.raises(ValueError, match="contradicts"):
        ImageRecord(image, "p", "s", False, 1, None, None, "csv")
    with pytest.raises(ValueError, match="unknown body part"):
        ImageRecord(image, "p", "s", None, None, "knee", None, "csv")
    with pytest.raises(ValueError, match="count class"):
        ImageRecord(image, "p", "s", True, 3, None, None, "csv")


def test_dataset_tensors_hold_out_the_same_patients_whatever_the_caller(tmp_path: Path) -> None:
    make_mura(tmp_path)
    parts = {p: dataset_split("mura", tmp_path, p) for p in ("train", "validation", "test")}
    assert {r.given_split for r in parts["test"]} == {"valid"}
    assert {r.given_split for r in parts["train"] + parts["validation"]} == {"train"}
    assert sum(map(len, parts.values())) == 7
    groups = [{r.group for r in records} for records in parts.values()]
    assert not (groups[0] & groups[1]) and not (groups[0] & groups[2])
    test = dataset_tensors("mura", tmp_path, "test", PARAMS, workers=1)
    assert test.pixels.shape == (2, 1, 32, 32) and test.pixels.dtype == torch.float16
    assert test.source == "mura:test" and len(test.targets) == 2
    assert torch.equal(test.targets.count, torch.full((2,), MISSING))
    again = dataset_tensors("mura", tmp_path, "test", PARAMS, workers=1)
    assert again.manifest_sha256 == test.manifest_sha256
    assert torch.equal(again.pixels, test.pixels)
    other = dataset_tensors("mura", tmp_path, "test", PreprocessParams(input_size=16), workers=1)
    assert other.manifest_sha256 != test.manifest_sha256
    fracatlas = make_fracatlas(tmp_path / "fa")
    whole = sum(
        len(dataset_split("fracatlas", fracatlas, p)) for p in ("train", "validation", "test")
    )
    assert whole == len(FRACATLAS_ROWS)
