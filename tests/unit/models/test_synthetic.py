"""models.synthetic: determinism, labels, metal, the DICOM object, dciodvfy."""

from __future__ import annotations

import subprocess
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.pixels.encoders.base import get_encoder
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from models import lesions
from models.preprocess import PreprocessParams, prepare
from models.synthetic import (
    BODY_PARTS,
    SyntheticCase,
    case_seed,
    generate_case,
    generate_dataset,
    to_dicom,
)
from models.synthetic_dicom import CR_IMAGE_STORAGE, DX_FOR_PRESENTATION

from helpers import need, need_tool

SIZE = 160  # small and quick; the default is 512


def _field_mask(case: SyntheticCase) -> np.ndarray:
    mask = np.zeros(case.image.shape, bool)
    r0, c0, r1, c1 = case.field
    mask[r0:r1, c0:c1] = True
    return mask


def test_body_parts_are_the_fixed_vocabulary() -> None:
    assert len(BODY_PARTS) == len(set(BODY_PARTS)) == 10
    assert {"elbow", "finger", "forearm", "hand", "humerus", "shoulder", "wrist"} <= set(BODY_PARTS)
    assert {"leg", "hip", "other"} <= set(BODY_PARTS)


def test_same_seed_same_pixels_other_seed_other_pixels() -> None:
    a = generate_case(7, SIZE)
    b = generate_case(7, SIZE)
    c = generate_case(8, SIZE)
    np.testing.assert_array_equal(a.image, b.image)
    assert (a.fracture, a.boxes, a.body_part) == (b.fracture, b.boxes, b.body_part)
    assert a.field == b.field
    assert not np.array_equal(a.image, c.image)


def test_image_is_a_read_only_12_bit_monochrome2_picture() -> None:
    case = generate_case(3, SIZE, body_part="forearm", fracture=False, hardware=False)
    image = case.image
    assert image.shape == (SIZE, SIZE) and image.dtype == np.uint16
    assert int(image.max()) <= 4095 and image.std() > 300
    with pytest.raises(ValueError):
        image[0, 0] = 1
    # bone bright: along the middle row, the brightest pixels lie on the two bones, not in air
    r0, c0, r1, c1 = case.field
    row = image[(r0 + r1) // 2, c0:c1].astype(float)
    assert row.max() > np.percentile(row, 10) + 1000


@pytest.mark.parametrize("part", BODY_PARTS)
def test_labels_are_consistent_for_every_body_part(part: str) -> None:
    for seed in range(3):
        case = generate_case(seed, SIZE, body_part=part, fracture=seed != 0)
        assert case.body_part == part
        if seed == 0:
            assert (case.fracture, case.fracture_count, case.boxes) == (False, 0, ())
            continue
        assert case.fracture and case.fracture_count == min(len(case.boxes), 2) >= 1
        for r0, c0, r1, c1 in case.boxes:
            assert 0 <= r0 < r1 <= SIZE and 0 <= c0 < c1 <= SIZE
            f0, g0, f1, g1 = case.field
            assert f0 <= r0 and g0 <= c0 and r1 <= f1 and c1 <= g1


def test_fracture_lines_lie_in_their_boxes() -> None:
    for seed in range(6):
        broken = generate_case(seed, SIZE, fracture=True)
        whole = generate_case(seed, SIZE, fracture=False)
        assert broken.body_part == whole.body_part  # labels are drawn independently
        darker = whole.image.astype(int) - broken.image.astype(int)
        for r0, c0, r1, c1 in broken.boxes:
            assert darker[r0:r1, c0:c1].max() > 150  # the lucent line
    # and at the level of the drawing: each box holds its line's centre
    from models.phantom import Bone

    bone = Bone((0.2, 0.5), (0.8, 0.5), 0.05)
    rng = np.random.default_rng(0)
    for _ in range(20):
        lucency = lesions.random_fracture(rng, 0, bone)
        r0, c0, r1, c1 = lesions.box(lucency, bone, 512)
        cy, cx = lesions.centre(lucency, bone)
        assert r0 <= cy * 512 <= r1 and c0 <= cx * 512 <= c1


def test_two_or_more_fractures_count_as_two() -> None:
    counts = {generate_case(s, 96, fracture=True).fracture_count for s in range(40)}
    assert counts == {1, 2}
    many = [c for s in range(40) if len((c := generate_case(s, 96, fracture=True)).boxes) > 2]
    assert all(c.fracture_count == 2 for c in many)


def test_hardware_is_very_bright_metal() -> None:
    for seed in range(3):
        metal = generate_case(seed, SIZE, hardware=True, fracture=False)
        plain = generate_case(seed, SIZE, hardware=False, fracture=False)
        assert metal.hardware and not plain.hardware
        field = _field_mask(metal)
        saturated = (metal.image >= 4000) & field
        assert saturated.sum() > (plain.image[field] >= 4000).sum() + 150
        # the metal is the brightest thing in the field
        assert np.percentile(metal.image[field], 99.5) > np.percentile(plain.image[field], 99)


def test_overrides_and_invalid_arguments() -> None:
    case = generate_case(1, 96, fracture=False, body_part="hip", hardware=True)
    assert (case.fracture, case.body_part, case.hardware) == (False, "hip", True)
    with pytest.raises(ValueError, match="body part"):
        generate_case(1, 96, body_part="skull")
    with pytest.raises(ValueError, match="size"):
        generate_case(1, 32)
    with pytest.raises(ValueError):
        SyntheticCase(1, case.image, True, 0, "hip", False, (), case.field, "L", "AP", False)


def test_dataset_is_lazy_balanced_and_reproducible() -> None:
    cases = list(generate_dataset(6, 42, size=96))
    assert [c.fracture for c in cases] == [True, False] * 3
    again = generate_case(case_seed(42, 3), 96, fracture=False)
    np.testing.assert_array_equal(again.image, cases[3].image)
    parts = [c.body_part for c in generate_dataset(3, 1, size=96, body_parts=("hand", "leg"))]
    assert parts == ["hand", "leg", "hand"]
    unbalanced = [c.fracture for c in generate_dataset(12, 5, size=64, balanced=False)]
    assert 0 < sum(unbalanced) < 12


# --- DICOM ----------------------------------------------------------------------------------


def _round_trip(ds: pydicom.Dataset) -> pydicom.Dataset:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return pydicom.dcmread(BytesIO(buffer.getvalue()))


def test_dicom_round_trip_and_prepare() -> None:
    case = generate_case(5, 256, fracture=True)
    ds = _round_trip(to_dicom(case))
    assert ds.SOPClassUID == DX_FOR_PRESENTATION == ds.file_meta.MediaStorageSOPClassUID
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert ds.Modality == "DX" and ds.PresentationIntentType == "FOR PRESENTATION"
    assert ds.BodyPartExamined and ds.ImageLaterality == case.laterality
    assert ds.PatientName == "Synthetic^Phantom" and ds.PatientID == "SYNTH-0001"
    np.testing.assert_array_equal(ds.pixel_array, case.image)
    prepared = prepare(ds, PreprocessParams())
    assert prepared.pixels.shape == (320, 320) and prepared.voi_source == "window"
    np.testing.assert_array_equal(prepared.display.shape, case.image.shape)


def test_preprocessing_crops_the_shutter_and_keeps_the_fractures() -> None:
    checked = 0
    for seed in range(12):
        case = generate_case(seed, 256, fracture=True)
        crop = prepare(to_dicom(case), PreprocessParams()).geometry.crop
        for side in range(4):
            margin = case.field[side] if side < 2 else 256 - case.field[side]
            if margin > 4:  # a shutter on this side: it is cut off (uniform air may go too)
                inward = crop[side] - case.field[side]
                if side >= 2:
                    inward = -inward
                assert inward >= -3, (seed, crop, case.field)
                checked += 1
        for r0, c0, r1, c1 in case.boxes:
            assert crop[0] <= r0 and crop[1] <= c0 and r1 <= crop[2] and c1 <= crop[3]
    assert checked > 10


def test_monochrome1_and_bit_depths_display_the_same() -> None:
    case = generate_case(9, 192)
    reference = prepare(to_dicom(case), PreprocessParams()).pixels
    for kwargs in (
        {"photometric": "MONOCHROME1"},
        {"photometric": "MONOCHROME1", "bits_stored": 10, "modality": "CR"},
        {"bits_stored": 16},
        {"bits_stored": 8},
    ):
        ds = _round_trip(to_dicom(case, **kwargs))
        assert ds.BitsAllocated == (8 if ds.BitsStored == 8 else 16)
        if ds.PhotometricInterpretation == "MONOCHROME1":
            assert int(ds.pixel_array.min()) < int(ds.pixel_array.max())
            assert ds.get("PresentationLUTShape", "INVERSE") == "INVERSE"
        pixels = prepare(ds, PreprocessParams()).pixels
        tolerance = 0.03 if ds.BitsStored == 8 else 0.005
        assert float(np.abs(pixels - reference).max()) < tolerance, kwargs


@pytest.mark.parametrize(
    "syntax", [ImplicitVRLittleEndian, RLELossless, JPEG2000Lossless, JPEGLSLossless]
)
def test_lossless_transfer_syntaxes(syntax: UID) -> None:
    if syntax.is_compressed:
        need(get_encoder(syntax).is_available, f"no {syntax.name} encoder (.[dev]: pyjpegls)")
    case = generate_case(4, 128)
    ds = _round_trip(to_dicom(case, transfer_syntax=syntax))
    assert ds.file_meta.TransferSyntaxUID == syntax
    np.testing.assert_array_equal(ds.pixel_array, case.image)


def test_uids_are_deterministic_and_overridable() -> None:
    case = generate_case(4, 96)
    a, b = to_dicom(case), to_dicom(case)
    assert (a.StudyInstanceUID, a.SeriesInstanceUID, a.SOPInstanceUID) == (
        b.StudyInstanceUID,
        b.SeriesInstanceUID,
        b.SOPInstanceUID,
    )
    other = to_dicom(generate_case(5, 96))
    assert other.SOPInstanceUID != a.SOPInstanceUID
    assert other.StudyInstanceUID != a.StudyInstanceUID
    inverted = to_dicom(case, photometric="MONOCHROME1")
    assert inverted.SOPInstanceUID != a.SOPInstanceUID
    cr = to_dicom(case, modality="CR", study_uid="1.2.3.4", accession_number="A1")
    assert cr.SOPClassUID == CR_IMAGE_STORAGE and cr.StudyInstanceUID == "1.2.3.4"
    assert cr.AccessionNumber == "A1" and "PresentationIntentType" not in cr
    for bad in (
        {"modality": "MR"},
        {"bits_stored": 17},
        {"photometric": "RGB"},
        {"transfer_syntax": "1.2.840.10008.1.2.4.50"},
    ):
        with pytest.raises(ValueError):
            to_dicom(case, **bad)  # type: ignore[arg-type]


# --- dciodvfy ---------------------------------------------------------------------------------


def _dciodvfy() -> str:
    return need_tool("dciodvfy", install="apt-get install dicom3tools")


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"modality": "CR", "photometric": "MONOCHROME1", "bits_stored": 10},
        {"photometric": "MONOCHROME1", "transfer_syntax": JPEG2000Lossless, "bits_stored": 16},
        {"bits_stored": 8, "transfer_syntax": RLELossless},
        {"modality": "CR", "transfer_syntax": ImplicitVRLittleEndian},
    ],
)
def test_dciodvfy_finds_no_errors(tmp_path: Path, kwargs: dict[str, Any]) -> None:
    tool = _dciodvfy()
    for seed, part in ((1, "hand"), (2, "hip")):
        path = tmp_path / f"{seed}.dcm"
        to_dicom(generate_case(seed, 96, body_part=part), **kwargs).save_as(
            path, enforce_file_format=True
        )
        result = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60)
        report = result.stderr + result.stdout
        errors = [line for line in report.splitlines() if line.startswith("Error")]
        assert not errors, report
        assert result.returncode == 0, report


def test_synthetic_dicom_leaves_the_voi_lut_function_at_its_default() -> None:
    """LINEAR is the default; written out explicitly, OHIF 3.13 renders the image black."""
    from models.synthetic import generate_case, to_dicom

    ds = to_dicom(generate_case(1, 64))
    assert "VOILUTFunction" not in ds
    assert "WindowCenter" in ds and "WindowWidth" in ds
