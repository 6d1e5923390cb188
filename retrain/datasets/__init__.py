"""Training datasets: MURA, FracAtlas, a folder + labels CSV, and synthetic radiographs.

Typical use (``kind``/``root`` from the command line)::

    records = load_records("mura", Path("/data"))
    split = split_by_patient(records, seed=0, validation=0.1, test=0.0, keep_given=MURA_AS_GIVEN)
    train = DataLoader(RadiographDataset(split.train, params, augment), batch_size=16,
                       shuffle=True, collate_fn=collate)          # (N,1,S,S), Targets
    val_x, val_y = tensors_from_records(split.validation, params)
"""

from __future__ import annotations

from retrain.datasets.catalog import DATASET_KINDS, DatasetKind, load_records
from retrain.datasets.csv_folder import load_csv_folder
from retrain.datasets.errors import DatasetError
from retrain.datasets.fracatlas import load_fracatlas
from retrain.datasets.images import prepare_image, prepare_record
from retrain.datasets.mura import load_mura
from retrain.datasets.records import (
    MISSING,
    FileImage,
    GeneratedImage,
    ImageRecord,
    ImageSource,
    LabelCodes,
    label_codes,
)
from retrain.datasets.split import MURA_AS_GIVEN, Split, SplitName, split_by_patient
from retrain.datasets.synthetic import synthetic_records
from retrain.datasets.torch_data import (
    Augment,
    RadiographDataset,
    collate,
    targets_from,
    tensors_from_records,
)

__all__ = [
    "DATASET_KINDS",
    "MISSING",
    "MURA_AS_GIVEN",
    "Augment",
    "DatasetError",
    "DatasetKind",
    "FileImage",
    "GeneratedImage",
    "ImageRecord",
    "ImageSource",
    "LabelCodes",
    "RadiographDataset",
    "Split",
    "SplitName",
    "collate",
    "label_codes",
    "load_csv_folder",
    "load_fracatlas",
    "load_mura",
    "load_records",
    "prepare_image",
    "prepare_record",
    "split_by_patient",
    "synthetic_records",
    "targets_from",
    "tensors_from_records",
]
