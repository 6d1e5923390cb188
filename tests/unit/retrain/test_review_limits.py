"""Retraining skips images beyond the [limits] from their header, never decoding them, and
counts them by reason (issue 15)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from models.labels import BODY_PARTS
from models.limits import ImageLimits
from models.preprocess import PreprocessParams
from retrain.datasets.errors import DatasetError
from retrain.datasets.images import prepare_image
from retrain.datasets.records import FileImage
from retrain.review_data import review_training_set
from storage.spool import Spool
from storage.training import ReviewedExample

from bombs import MIB, deflate_bomb, pixel_bomb
from dicom_factory import make_radiograph, save

PARAMS = PreprocessParams(input_size=32)
LABEL = {"fracture": "present", "count": "1", "body_part": "wrist", "hardware": False}


def _reviewed(spool: Spool, n: int, write: object) -> ReviewedExample:
    study, sop = str(generate_uid()), str(generate_uid())
    rel = spool.relative_path_for(study, sop)
    path = spool.absolute(rel)
    path.parent.mkdir(parents=True, exist_ok=True)
    write(path)  # type: ignore[operator]
    return ReviewedExample(
        override_id=n,
        study_id=n,
        instance_id=n,
        sop_instance_uid=sop,
        spool_path=rel,
        label=LABEL,
        agree=False,
        reviewed_at=datetime(2026, 1, 1, tzinfo=UTC),
        user_name="r",
    )


def test_reviewed_images_too_large_are_skipped_and_counted(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    examples = [
        _reviewed(spool, 1, lambda p: save(make_radiograph(patient_id="P1"), p)),
        _reviewed(spool, 2, lambda p: save(pixel_bomb(8192, 8192, patient_id="P2"), p)),
        _reviewed(spool, 3, lambda p: save(pixel_bomb(65535, 65535, "rle", patient_id="P3"), p)),
        _reviewed(spool, 4, lambda p: deflate_bomb(p, 64 * MIB, patient_id="P4")),
    ]
    data = review_training_set(
        examples,
        spool.root,
        PARAMS,
        BODY_PARTS,
        salt="s",
        locked=[],
        limits=ImageLimits(max_inflated_bytes=16 * MIB),
    )
    assert data.skipped == {"not_analysable:image_too_large": 3}
    assert [im.override_id for im in data.images] == [1]


def test_a_dataset_file_too_large_is_refused_with_the_reason(tmp_path: Path) -> None:
    path = save(pixel_bomb(65535, 65535), tmp_path / "bomb.dcm")
    with pytest.raises(DatasetError) as err:
        prepare_image(FileImage(path), PARAMS)
    assert "not analysable: image too large: 65,535 x 65,535" in str(err.value)
