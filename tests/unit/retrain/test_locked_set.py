"""The locked validation set and reviewed training images: patient grouping, exclusion,
labels, regeneration. Tiny DICOM files (64 px) in a temporary spool."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from pydicom.uid import generate_uid

from models.labels import BODY_PARTS
from models.preprocess import PreprocessParams
from models.synthetic import case_seed, generate_case, to_dicom
from retrain.base_data import BaseDataset, CalibrationSpec, base_training_set, calibration_set
from retrain.errors import RetrainError, ValidationSetError
from retrain.labels import codes_from_label, label_from_codes
from retrain.review_data import review_training_set
from retrain.sources import parse_synthetic_key, patient_group
from retrain.validation import (
    LockedCase,
    ValidationParams,
    base_validation_cases,
    review_groups,
    review_validation_candidates,
    validation_tensors,
)
from storage.spool import Spool
from storage.training import ReviewedExample

PARAMS = PreprocessParams(input_size=32)
SYNTH = BaseDataset("synthetic", None, n_train=4, seed=3, image_size=64)
LABEL = {"fracture": "present", "count": "1", "body_part": "wrist", "hardware": False}


def _example(spool: Spool, patient: str | None, n: int, **label: object) -> ReviewedExample:
    ds = to_dicom(generate_case(case_seed(77, n), 64), patient_id=patient or "X")
    if patient is None:
        del ds.PatientID
    study, sop = generate_uid(), generate_uid()
    ds.StudyInstanceUID, ds.SOPInstanceUID = study, sop
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    rel = spool.relative_path_for(study, sop)
    path = spool.absolute(rel)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return ReviewedExample(
        override_id=n,
        study_id=n,
        instance_id=n,
        sop_instance_uid=str(sop),
        spool_path=rel,
        label={**LABEL, **label},
        agree=False,
        reviewed_at=datetime(2026, 1, 1, tzinfo=UTC),
        user_name="r",
    )


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    return Spool(tmp_path / "spool")


@pytest.fixture
def examples(spool: Spool) -> list[ReviewedExample]:
    """40 patients with 1-3 images each, interleaved."""
    out: list[ReviewedExample] = []
    n = 0
    for round_ in range(3):
        for p in range(40):
            if round_ < 1 + p % 3:
                out.append(_example(spool, f"PAT{p:03d}", n))
                n += 1
    return out


def _sides(chosen: list[LockedCase], groups: dict[str, str]) -> dict[str, set[bool]]:
    keys = {c.key for c in chosen}
    sides: dict[str, set[bool]] = {}
    for sop, group in groups.items():
        sides.setdefault(group, set()).add(sop in keys)
    return sides


def test_reviewed_images_are_chosen_by_patient(
    spool: Spool, examples: list[ReviewedExample]
) -> None:
    chosen = review_validation_candidates(examples, 0.3, spool.root, salt="a")
    groups = review_groups(examples, spool.root, "a")
    assert len(set(groups.values())) == 40
    sides = _sides(chosen, groups)
    assert all(len(s) == 1 for s in sides.values())  # a patient is all in or all out
    n_in = sum(True in s for s in sides.values())
    assert 4 <= n_in <= 20
    for case in chosen:
        assert case.source == "review" and case.label == LABEL
        assert case.patient_group == groups[case.key] and len(case.patient_group) == 64
        assert "PAT" not in case.patient_group
    assert {c.patient_group for c in chosen} <= {
        patient_group(f"PAT{p:03d}", "a") for p in range(40)
    }
    # the same call chooses the same patients (idempotent)
    assert review_validation_candidates(examples, 0.3, spool.root, salt="a") == chosen


def test_the_salt_changes_the_hashes_not_the_grouping(
    spool: Spool, examples: list[ReviewedExample]
) -> None:
    a = review_groups(examples, spool.root, "a")
    b = review_groups(examples, spool.root, "b")
    assert set(a.values()).isdisjoint(b.values())

    def partition(groups: dict[str, str]) -> set[frozenset[str]]:
        by: dict[str, set[str]] = {}
        for sop, g in groups.items():
            by.setdefault(g, set()).add(sop)
        return {frozenset(v) for v in by.values()}

    assert partition(a) == partition(b)
    chosen = review_validation_candidates(examples, 0.3, spool.root, salt="b")
    assert all(len(s) == 1 for s in _sides(chosen, b).values())


def test_locked_patients_bring_new_images_and_trained_patients_stay_out(
    spool: Spool, examples: list[ReviewedExample]
) -> None:
    first = review_validation_candidates(examples[:40], 0.3, spool.root, salt="a")
    later = review_validation_candidates(examples, 0.3, spool.root, salt="a", locked=first)
    assert not {c.key for c in later} & {c.key for c in first}
    assert {c.patient_group for c in later} <= {c.patient_group for c in first}
    everyone = [e.sop_instance_uid for e in examples]
    assert (
        review_validation_candidates(examples, 0.3, spool.root, salt="a", trained_keys=everyone)
        == []
    )


def test_a_file_without_patient_id_is_its_own_patient_per_study(spool: Spool) -> None:
    a, b = _example(spool, None, 1), _example(spool, None, 2)
    groups = review_groups([a, b], spool.root, "s")
    assert groups[a.sop_instance_uid] != groups[b.sop_instance_uid]
    assert groups[a.sop_instance_uid] == patient_group("study:1", "s")


def test_review_training_set_excludes_locked_patients_and_skips_the_unusable(
    spool: Spool, examples: list[ReviewedExample]
) -> None:
    locked = review_validation_candidates(examples, 0.3, spool.root, salt="a")
    # a locked patient's image that is not itself locked (it arrived later)
    late = next(c for c in locked if sum(o.patient_group == c.patient_group for o in locked) > 1)
    locked_but_one = [c for c in locked if c.key != late.key]
    colour = _example(spool, "PAT900", 900)
    ds = pydicom.dcmread(spool.absolute(colour.spool_path))
    ds.Modality = "MR"
    ds.save_as(spool.absolute(colour.spool_path), enforce_file_format=True)
    gone = _example(spool, "PAT901", 901)
    spool.absolute(gone.spool_path).unlink()
    odd = _example(spool, "PAT902", 902, body_part="knee", hardware=None, count="2+")
    data = review_training_set(
        [*examples, colour, gone, odd],
        spool.root,
        PARAMS,
        BODY_PARTS,
        salt="a",
        locked=locked_but_one,
        weight=3,
    )
    assert data.skipped == {"not_analysable:modality": 1, "missing_file": 1}
    assert data.excluded_locked == len(locked)
    assert len(data) == len(examples) - len(locked) + 1
    assert late.key not in {im.key for im in data.images}
    assert data.tensors.pixels.shape == (len(data), 1, 32, 32)
    assert data.tensors.pixels.dtype == torch.float16
    last = data.images[-1]
    assert last.override_id == 902 and last.weight == 3 and last.sha256_of == "file"
    assert last.sha256 == hashlib.sha256(spool.absolute(odd.spool_path).read_bytes()).hexdigest()
    t = data.tensors.targets
    assert (
        float(t.fracture[-1]),
        int(t.count[-1]),
        int(t.body_part[-1]),
        float(t.hardware[-1]),
    ) == (
        1.0,
        2,
        -1,
        -1.0,
    )
    assert int(t.body_part[0]) == BODY_PARTS.index("wrist")


def test_label_codes_round_trip_and_missing_values() -> None:
    codes = codes_from_label(LABEL, BODY_PARTS)
    assert label_from_codes(codes, BODY_PARTS) == LABEL
    odd = codes_from_label({"fracture": "absent", "count": "1", "body_part": "unknown"}, BODY_PARTS)
    assert (odd.fracture, odd.count, odd.body_part, odd.hardware) == (0.0, -1, -1, -1.0)


def test_synthetic_locked_cases_regenerate_with_their_labels(tmp_path: Path) -> None:
    cases = base_validation_cases(
        SYNTH, ValidationParams(seed=5, count=6, image_size=64), workers=1
    )
    assert [c.key for c in cases] == [f"synthetic:5:{i}" for i in range(6)]
    assert [c.label["fracture"] for c in cases] == ["present", "absent"] * 3
    assert all(c.label["image_size"] == 64 and c.study_id is None for c in cases)
    assert parse_synthetic_key(cases[3].key) == (5, 3)
    data = validation_tensors(cases, SYNTH, tmp_path, PARAMS, review_paths={})
    assert len(data) == 6 and not data.missing
    assert data.tensors.targets.fracture.tolist() == [1.0, 0.0] * 3
    again = validation_tensors(list(reversed(cases)), SYNTH, tmp_path, PARAMS, review_paths={})
    assert again.sha256 == data.sha256
    assert torch.equal(again.tensors.pixels[0], data.tensors.pixels[5])
    wrong = cases[1]._replace(label={**cases[1].label, "fracture": "present", "count": "1"})
    with pytest.raises(ValidationSetError, match="regenerates"):
        validation_tensors([wrong], SYNTH, tmp_path, PARAMS, review_paths={})


def test_missing_review_files_and_unlabelled_cases_are_reported(
    spool: Spool, examples: list[ReviewedExample]
) -> None:
    chosen = review_validation_candidates(examples, 0.3, spool.root, salt="a")
    spool.absolute(examples[0].spool_path).unlink()
    cases = [
        *(c for c in chosen if c.key != examples[0].sop_instance_uid),
        LockedCase("review", examples[0].sop_instance_uid, 1, "g", LABEL),
        LockedCase("review", "1.2.3", 1, "g", {"fracture": None}),
    ]
    paths = {e.sop_instance_uid: e.spool_path for e in examples}
    data = validation_tensors(cases, SYNTH, spool.root, PARAMS, review_paths=paths)
    reasons = {key: why for _, key, why in data.missing}
    assert reasons == {examples[0].sop_instance_uid: "missing_file", "1.2.3": "no_fracture_label"}
    assert len(data) == len(cases) - 2


def test_base_and_calibration_sets_avoid_locked_cases() -> None:
    locked = base_validation_cases(
        SYNTH, ValidationParams(seed=3, count=2, image_size=64), workers=1
    )
    spec = CalibrationSpec(seed=3, count=4)  # deliberately the same seed as the base
    calibration = calibration_set(
        SYNTH, spec, PARAMS, BODY_PARTS, locked_keys={c.key for c in locked}, locked_groups=set()
    )
    assert [im.key for im in calibration.images] == ["synthetic:3:2", "synthetic:3:3"]
    assert calibration.excluded_locked == 2
    base = base_training_set(
        SYNTH,
        PARAMS,
        BODY_PARTS,
        locked_keys={c.key for c in locked},
        locked_groups=set(),
        calibration=spec,
    )
    assert len(base) == 0 and base.excluded_locked == 4
    assert base.tensors.pixels.shape == (0, 1, 32, 32)
    other = base_training_set(
        BaseDataset("synthetic", None, n_train=3, seed=9, image_size=64),
        PARAMS,
        BODY_PARTS,
        locked_keys=set(),
        locked_groups=set(),
        calibration=spec,
    )
    assert [im.key for im in other.images] == [f"synthetic:9:{i}" for i in range(3)]
    pixels = other.tensors.pixels[1, 0].numpy()
    assert (
        other.images[1].sha256 == hashlib.sha256(np.ascontiguousarray(pixels).tobytes()).hexdigest()
    )
    with pytest.raises(RetrainError, match="both"):
        calibration_set(
            SYNTH,
            CalibrationSpec(seed=3, count=4),
            PARAMS,
            BODY_PARTS,
            locked_keys={"synthetic:3:0", "synthetic:3:2"},
            locked_groups=set(),
        )
