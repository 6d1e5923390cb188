"""models.synthetic_files (``xrayd synth``): files that decode, labels the CSV loader reads."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pydicom

from models.preprocess import PreprocessParams, prepare
from models.synthetic_files import LABEL_COLUMNS, transfer_syntaxes, write_synthetic_studies
from retrain.datasets.catalog import load_records


def test_studies_decode_and_labels_round_trip_through_the_csv_loader(tmp_path: Path) -> None:
    files = write_synthetic_studies(tmp_path / "s", 6, seed=5, size=128)
    rows = list(csv.DictReader((tmp_path / "s" / "labels.csv").open()))
    assert tuple(rows[0]) == LABEL_COLUMNS
    assert len(rows) == len(files) >= 6
    # Balanced: even studies are fractured, every view carries the study's label.
    by_patient: dict[str, set[str]] = {}
    for row in rows:
        by_patient.setdefault(row["patient_id"], set()).add(row["fracture"])
    assert [sorted(v) for v in by_patient.values()] == [["1"], ["0"]] * 3
    syntaxes = {f.transfer_syntax for f in files}
    assert syntaxes == set(transfer_syntaxes())  # six studies cover every syntax
    for item in files:
        ds = pydicom.dcmread(item.path)
        assert ds.file_meta.TransferSyntaxUID == item.transfer_syntax
        assert ds.StudyInstanceUID == item.study_uid and ds.PatientID == item.patient_id
        pixels = prepare(ds, PreprocessParams(input_size=64)).pixels
        assert pixels.shape == (64, 64) and 0.0 <= pixels.min() < pixels.max() <= 1.0
    records = load_records("csv", tmp_path / "s")
    assert [(r.patient_id, r.fracture, r.body_part) for r in records] == [
        (f.patient_id, f.fracture_count > 0, f.body_part) for f in files
    ]


def test_the_same_seed_writes_the_same_pixels(tmp_path: Path) -> None:
    a = write_synthetic_studies(tmp_path / "a", 2, seed=9, size=96)
    b = write_synthetic_studies(tmp_path / "b", 2, seed=9, size=96)
    c = write_synthetic_studies(tmp_path / "c", 2, seed=10, size=96)
    first = [pydicom.dcmread(f.path).pixel_array for f in a]
    assert all(
        np.array_equal(x, pydicom.dcmread(f.path).pixel_array)
        for x, f in zip(first, b, strict=True)
    )
    assert not np.array_equal(first[0], pydicom.dcmread(c[0].path).pixel_array)
