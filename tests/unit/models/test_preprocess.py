"""models.preprocess: refusals, LUT/window/inversion, borders, letterbox, geometry, codecs."""

from __future__ import annotations

import copy
import pickle
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.pixels.encoders.base import get_encoder
from pydicom.pixels.processing import apply_windowing
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from models.errors import NotAnalysable, RefusalReason
from models.geometry import Geometry
from models.pixels import decode_pixels
from models.preprocess import PreprocessParams, prepare, window_to_display
from models.resample import area_resize, letterbox
from models.voi import window_unit

from helpers import need, need_module
from models_helpers import data_file, make_ds, phantom

P = PreprocessParams()


def _u16(values: np.ndarray) -> np.ndarray:
    return np.asarray(np.clip(np.rint(values), 0, 4095), dtype=np.uint16)


# --- refusals -----------------------------------------------------------------------------


def _refusal(ds: Dataset, params: PreprocessParams = P) -> RefusalReason:
    with pytest.raises(NotAnalysable) as info:
        prepare(ds, params)
    assert info.value.message in str(info.value)
    return info.value.reason


def test_colour_is_refused() -> None:
    rgb = np.zeros((96, 96, 3), np.uint8)
    ds = make_ds(rgb[..., 0], photometric="RGB")
    ds.SamplesPerPixel = 3
    ds.PlanarConfiguration = 0
    ds.PixelData = rgb.tobytes()
    assert _refusal(ds) is RefusalReason.COLOUR
    grey_palette = make_ds(_u16(phantom(96, 96)), photometric="PALETTE COLOR")
    assert _refusal(grey_palette) is RefusalReason.COLOUR


def test_multiframe_is_refused_but_one_frame_is_fine() -> None:
    frames = np.stack([_u16(phantom(96, 96, seed=s)) for s in (1, 2)])
    ds = make_ds(frames[0], BitsStored=12)
    ds.NumberOfFrames = 2
    ds.PixelData = frames.tobytes()
    assert _refusal(ds) is RefusalReason.MULTIFRAME
    single = make_ds(frames[0])
    single.NumberOfFrames = 1
    assert prepare(single, P).pixels.shape == (320, 320)


@pytest.mark.parametrize("modality", ["MR", "CT", "MG", "OT", "SC", ""])
def test_non_radiograph_modalities_are_refused(modality: str) -> None:
    ds = make_ds(_u16(phantom(96, 96)), modality=modality)
    assert _refusal(ds) is RefusalReason.MODALITY


@pytest.mark.parametrize("modality", ["CR", "DX", "RG"])
def test_radiograph_modalities_are_accepted(modality: str) -> None:
    assert prepare(make_ds(_u16(phantom(96, 96)), modality=modality), P).pixels.dtype == np.float32


def test_modality_allow_list_is_a_parameter() -> None:
    ds = make_ds(_u16(phantom(96, 96)), modality="OT")
    prepare(ds, PreprocessParams(modalities=frozenset({"OT"})))


def test_tiny_image_is_refused() -> None:
    assert _refusal(make_ds(_u16(phantom(48, 200)))) is RefusalReason.TOO_SMALL
    prepare(make_ds(_u16(phantom(48, 200))), PreprocessParams(min_size=32))


def test_missing_pixel_data_is_refused() -> None:
    ds = make_ds(_u16(phantom(96, 96)))
    del ds.PixelData
    assert _refusal(ds) is RefusalReason.NO_PIXELS


def test_truncated_pixel_data_is_refused() -> None:
    ds = make_ds(_u16(phantom(96, 96)))
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]
    assert _refusal(ds) is RefusalReason.CORRUPT_PIXELS


def test_garbage_compressed_pixel_data_is_refused() -> None:
    ds = make_ds(_u16(phantom(96, 96)))
    ds.compress(JPEG2000Lossless)
    data = bytearray(ds.PixelData)
    data[40:] = bytes(len(data) - 40)  # keep the item tags, wipe the codestream
    ds.PixelData = bytes(data)
    assert _refusal(ds) is RefusalReason.CORRUPT_PIXELS


def test_invalid_pixel_description_is_refused() -> None:
    ds = make_ds(_u16(phantom(96, 96)))
    del ds.BitsStored
    assert _refusal(ds) is RefusalReason.CORRUPT_PIXELS


def test_unknown_or_missing_transfer_syntax_is_refused() -> None:
    ds = make_ds(_u16(phantom(96, 96)))
    ds.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.4.100")  # MPEG2 video
    assert _refusal(ds) is RefusalReason.UNSUPPORTED_TRANSFER_SYNTAX
    del ds.file_meta
    assert _refusal(ds) is RefusalReason.UNSUPPORTED_TRANSFER_SYNTAX


def test_refusal_pickles_and_is_an_xrayd_error() -> None:
    from config.errors import XraydError

    err = NotAnalysable(RefusalReason.COLOUR, "colour image")
    back = pickle.loads(pickle.dumps(err))
    assert isinstance(back, NotAnalysable) and isinstance(back, XraydError)
    assert (back.reason, back.message) == (err.reason, err.message)
    assert back.reason == "colour"


# --- VOI, modality LUT, inversion -----------------------------------------------------------


def test_monochrome1_and_monochrome2_give_the_same_picture() -> None:
    x = _u16(phantom(128, 160))
    m2 = prepare(make_ds(x, BitsStored=12), P)
    m1 = prepare(make_ds(4095 - x, photometric="MONOCHROME1", BitsStored=12), P)
    np.testing.assert_allclose(m1.pixels, m2.pixels, atol=1e-6)
    np.testing.assert_array_equal(m1.display, m2.display)
    # ... and the same MONOCHROME1 stored values read as MONOCHROME2 are the mirror image
    as_m2 = prepare(make_ds(4095 - x, BitsStored=12), P)
    content = m2.pixels > 0
    np.testing.assert_allclose(as_m2.pixels[content], 1 - m2.pixels[content], atol=1e-5)


def test_monochrome1_inversion_comes_after_the_window() -> None:
    x = _u16(phantom(96, 96))
    window: dict[str, Any] = {"WindowCenter": 1500, "WindowWidth": 1001}
    m2 = window_to_display(make_ds(x, **window), P)
    m1 = window_to_display(make_ds(x, photometric="MONOCHROME1", **window), P)
    assert m1.inverted and not m2.inverted
    np.testing.assert_allclose(m1.unit, 1.0 - m2.unit, atol=1e-6)


def test_percentile_window_without_voi() -> None:
    x = _u16(phantom(128, 128))
    shown = window_to_display(make_ds(x), PreprocessParams(crop_borders=False))
    assert shown.voi_source == "percentile"
    assert shown.unit.min() == 0.0 and shown.unit.max() == 1.0
    saturated = np.mean((shown.unit == 0.0) | (shown.unit == 1.0))
    assert 0.005 < saturated < 0.03  # about 0.5 % clipped at each end


def test_signed_16_bit_equals_unsigned_shifted() -> None:
    x = _u16(phantom(128, 128))
    signed = (x.astype(np.int32) - 2048).astype(np.int16)
    a = prepare(make_ds(x, BitsStored=12), P)
    b = prepare(make_ds(signed, BitsStored=12), P)
    assert make_ds(signed).PixelRepresentation == 1
    assert np.asarray(decode_pixels(make_ds(signed, BitsStored=12))).min() < 0
    np.testing.assert_allclose(a.pixels, b.pixels, atol=1e-6)
    c = prepare(make_ds(x, BitsStored=12, WindowCenter=1000, WindowWidth=800), P)
    d = prepare(make_ds(signed, BitsStored=12, WindowCenter=1000 - 2048, WindowWidth=800), P)
    np.testing.assert_allclose(c.pixels, d.pixels, atol=1e-6)


def test_eight_bit_equals_sixteen_bit() -> None:
    x = np.clip(phantom(128, 128, peak=150) / 4, 0, 255).astype(np.uint8)
    a = prepare(make_ds(x), P)
    b = prepare(make_ds(x.astype(np.uint16), BitsStored=8), P)
    assert make_ds(x).BitsAllocated == 8
    np.testing.assert_allclose(a.pixels, b.pixels, atol=1e-6)


def test_rescale_slope_and_intercept_are_applied_before_the_window() -> None:
    x = np.full((96, 96), 1000, np.uint16)
    x[:, 48:] = 1100
    window: dict[str, Any] = {"WindowCenter": 1000, "WindowWidth": 401}  # 799.5 .. 1199.5
    ds = make_ds(x, RescaleSlope=2, RescaleIntercept=-1000, **window)
    unit = window_to_display(ds, PreprocessParams(crop_borders=False)).unit
    # stored 1000 -> 1000, the window's centre; stored 1100 -> 1200, above the window
    assert unit[0, 0] == pytest.approx(0.5, abs=0.01)
    assert unit[0, 95] == 1.0
    plain = window_to_display(make_ds(x, **window), PreprocessParams(crop_borders=False)).unit
    assert plain[0, 95] == pytest.approx(0.75, abs=0.01)


def _voi_lut_item(first: int, data: list[int], bits: int = 8) -> Dataset:
    item = Dataset()
    item.LUTDescriptor = [len(data), first, bits]
    item.LUTData = data
    return item


def test_voi_lut_sequence_is_used_and_preferred_over_a_window() -> None:
    x = np.tile(np.arange(96, dtype=np.uint16) * 10, (96, 1))  # 0 .. 950
    lut = [min(255, max(0, (v - 100) // 2)) for v in range(0, 1024, 1)]
    ds = make_ds(x, WindowCenter=500, WindowWidth=100)
    ds.VOILUTSequence = Sequence([_voi_lut_item(0, lut, 8)])
    shown = window_to_display(ds, PreprocessParams(crop_borders=False))
    assert shown.voi_source == "voi_lut"
    expected = np.array([lut[v] for v in x[0]], float) / 255.0
    np.testing.assert_allclose(shown.unit[0], expected, atol=1e-6)


@pytest.mark.parametrize("big_endian", [False, True])
def test_voi_lut_as_ow_words_survives_a_file_round_trip(big_endian: bool) -> None:
    from io import BytesIO

    from pydicom.uid import ExplicitVRBigEndian

    x = np.tile(np.arange(96, dtype=np.uint16) * 40, (96, 1))  # 0 .. 3800
    lut = np.clip(np.arange(4096) // 16, 0, 255).astype(np.uint16)
    ds = make_ds(x)
    item = _voi_lut_item(0, [], 16)
    item.LUTDescriptor = [4096, 0, 16]
    item.add_new("LUTData", "OW", lut.astype(">u2" if big_endian else "<u2").tobytes())
    ds.VOILUTSequence = Sequence([item])
    if big_endian:
        ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
        ds.PixelData = x.astype(">u2").tobytes()
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    back = pydicom.dcmread(BytesIO(buffer.getvalue()))
    unit = window_to_display(back, PreprocessParams(crop_borders=False)).unit
    np.testing.assert_allclose(unit[0], lut[x[0]] / 255.0, atol=1e-6)


def test_voi_lut_output_is_scaled_by_the_lut_range_and_inputs_beyond_it_clip() -> None:
    x = np.tile(np.arange(96, dtype=np.uint16) * 100, (96, 1))  # beyond the LUT's 4096 entries
    lut = list(range(0, 4096))  # declares 16 bits, uses 12
    ds = make_ds(x)
    ds.VOILUTSequence = Sequence([_voi_lut_item(0, lut, 16)])
    unit = window_to_display(ds, PreprocessParams(crop_borders=False)).unit
    assert unit[0, 20] == pytest.approx(2000 / 4095)
    assert unit[0, 95] == 1.0


def test_first_of_several_windows_is_used() -> None:
    x = _u16(phantom(96, 96))
    several = make_ds(x, WindowCenter=[1500, 3000], WindowWidth=[800, 200])
    first = make_ds(x, WindowCenter=1500, WindowWidth=800)
    assert several["WindowCenter"].VM == 2
    a = prepare(several, P)
    b = prepare(first, P)
    assert a.voi_source == "window"
    np.testing.assert_array_equal(a.pixels, b.pixels)
    # the same window that pydicom picks with its default index=0
    expected = apply_windowing(x.astype(float), several, index=0)
    np.testing.assert_allclose(window_to_display(several, P).unit, expected / 65535.0, atol=1e-6)


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
@pytest.mark.parametrize(("center", "width"), [(1000.0, 1.0), (2000.0, 801.0), (100.5, 7.5)])
def test_window_functions_match_pydicom(function: str, center: float, width: float) -> None:
    x = np.linspace(-100, 4200, 97 * 97).reshape(97, 97)
    ds = make_ds(np.zeros((97, 97), np.uint16), WindowCenter=center, WindowWidth=width)
    ds.VOILUTFunction = function
    with np.errstate(over="ignore"):  # pydicom's own sigmoid overflows for tiny widths
        ref = apply_windowing(x, ds) / 65535.0  # 16-bit unsigned: its output is 0..65535
    unit = window_unit(x, center, width, function)  # type: ignore[arg-type]
    np.testing.assert_allclose(unit, ref, atol=1e-9)


@pytest.mark.parametrize(
    ("center", "width", "function"), [(100, 0, "LINEAR"), (100, -1, "SIGMOID")]
)
def test_invalid_window_falls_back_to_percentiles(center: int, width: int, function: str) -> None:
    ds = make_ds(_u16(phantom(96, 96)), WindowCenter=center, WindowWidth=width)
    ds.VOILUTFunction = function
    assert window_to_display(ds, P).voi_source == "percentile"


def test_unknown_voi_function_is_treated_as_linear() -> None:
    x = _u16(phantom(96, 96))
    a = make_ds(x, WindowCenter=1200, WindowWidth=900, VOILUTFunction="CUBIC")
    b = make_ds(x, WindowCenter=1200, WindowWidth=900)
    np.testing.assert_array_equal(prepare(a, P).pixels, prepare(b, P).pixels)


def test_pixel_padding_value_is_left_out_of_the_percentile_window() -> None:
    x = _u16(phantom(128, 128))
    x[::2, ::2] = 0  # a scattered padding value: not a border, but half the statistics
    padded = make_ds(x, PixelPaddingValue=0)
    plain = make_ds(x)
    assert window_to_display(padded, P).unit[1, 1] < window_to_display(plain, P).unit[1, 1]


# --- borders, letterbox, geometry --------------------------------------------------------------


def _collimated(rows: int = 300, cols: int = 240) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    rng = np.random.default_rng(3)
    image = np.full((rows, cols), 3900.0) + rng.normal(0, 5, (rows, cols))
    box = (30, 50, 260, 200)
    image[box[0] : box[2], box[1] : box[3]] = phantom(box[2] - box[0], box[3] - box[1], seed=4)
    image[:12, :] = 20.0 + rng.normal(0, 3, (12, cols))  # a dark strip above a bright shutter
    return _u16(image), box


def test_uniform_collimation_borders_are_cropped() -> None:
    image, box = _collimated()
    prepared = prepare(make_ds(image), P)
    assert prepared.geometry.crop == box
    uncropped = prepare(make_ds(image), PreprocessParams(crop_borders=False))
    assert uncropped.geometry.crop == (0, 0, 300, 240)
    # display stays full-size and windowed on the anatomy: the shutter is saturated white
    assert prepared.display.shape == (300, 240)
    assert prepared.display[20, 5] == 255


def test_borders_are_not_cropped_below_the_minimum_extent() -> None:
    image = np.full((200, 200), 1000, np.uint16)
    image[95:105, :] = 3000  # 10 rows of "content": not enough to keep
    image[95:105, ::2] = 2000
    crop = prepare(make_ds(image), P).geometry.crop
    assert (crop[0], crop[2]) == (0, 200)


def test_constant_image_is_not_cropped_and_is_black() -> None:
    prepared = prepare(make_ds(np.full((100, 100), 7, np.uint16)), P)
    assert prepared.geometry.crop == (0, 0, 100, 100)
    assert float(prepared.pixels.max()) == 0.0


def test_aspect_ratio_is_kept_with_zero_padding() -> None:
    x = _u16(phantom(200, 400) + 500)
    g = prepare(make_ds(x), PreprocessParams(crop_borders=False))
    geo = g.geometry
    assert (geo.content_rows, geo.content_cols) == (160, 320)
    assert (geo.pad_top, geo.pad_left) == (80, 0)
    assert geo.scale == pytest.approx(0.8)
    assert np.all(g.pixels[:80] == 0) and np.all(g.pixels[240:] == 0)
    assert g.pixels[80:240].mean() > 0.2
    tall = prepare(make_ds(_u16(phantom(400, 100) + 500)), PreprocessParams(crop_borders=False))
    assert (tall.geometry.pad_top, tall.geometry.pad_left) == (0, 120)


def test_geometry_round_trip_and_a_point_lands_where_it_should() -> None:
    image, box = _collimated(rows=500, cols=420)
    image[box[0] : box[2], box[1] : box[3]] = 1500
    point = (200, 150)
    image[point[0] - 2 : point[0] + 3, point[1] - 2 : point[1] + 3] = 4095
    prepared = prepare(make_ds(image), P)
    geo = prepared.geometry
    iy, ix = np.unravel_index(int(np.argmax(prepared.pixels)), prepared.pixels.shape)
    sy, sx = geo.to_source(iy + 0.5, ix + 0.5)
    assert abs(sy - (point[0] + 0.5)) <= 1.5 / geo.scale
    assert abs(sx - (point[1] + 0.5)) <= 1.5 / geo.scale
    for y, x in [(0.0, 0.0), (123.4, 56.7), (319.5, 2.25)]:
        assert geo.to_input(*geo.to_source(y, x)) == pytest.approx((y, x))


def test_box_mapping_orders_and_clips() -> None:
    geo = Geometry(
        source_rows=1000,
        source_cols=800,
        crop=(100, 0, 900, 800),
        scale=0.4,
        pad_top=0,
        pad_left=0,
        input_size=320,
        content_rows=320,
        content_cols=320,
    )
    assert geo.box_to_source(10, 20, 30, 40) == pytest.approx((125, 50, 175, 100))
    assert geo.box_to_source(30, 40, 10, 20) == pytest.approx((125, 50, 175, 100))
    assert geo.box_to_source(-50, -50, 400, 400) == (100, 0, 900, 800)
    assert geo.box_to_input(125, 50, 175, 100) == pytest.approx((10, 20, 30, 40))
    assert geo.box_to_input(0, 0, 5000, 5000) == (0, 0, 320, 320)
    with pytest.raises(ValueError, match="crop"):
        Geometry(100, 100, (0, 0, 101, 100), 1.0, 0, 0, 100, 100, 100)
    with pytest.raises(ValueError, match="fit"):
        Geometry(100, 100, (0, 0, 100, 100), 1.0, 10, 0, 100, 100, 100)
    with pytest.raises(ValueError, match="scale"):
        Geometry(100, 100, (0, 0, 100, 100), 0.0, 0, 0, 100, 100, 100)


def test_area_resize_preserves_means_and_block_averages() -> None:
    rng = np.random.default_rng(0)
    image = rng.random((60, 90))
    half = area_resize(image, 0.5, 30, 45)
    np.testing.assert_allclose(half, image.reshape(30, 2, 45, 2).mean(axis=(1, 3)), atol=1e-12)
    odd = area_resize(image, 0.37, 22, 33)
    assert odd.mean() == pytest.approx(image.mean(), abs=0.01)
    up = area_resize(image, 2.0, 120, 180)
    np.testing.assert_allclose(up[::2, ::2], image, atol=1e-12)
    boxed = letterbox(np.ones((10, 30)), 32)
    assert boxed.pixels.sum() == pytest.approx(11 * 32)
    with pytest.raises(ValueError):
        area_resize(image, 0.0, 1, 1)
    with pytest.raises(ValueError):
        letterbox(image, 0)


def test_outputs_are_read_only_float32_in_unit_range() -> None:
    prepared = prepare(make_ds(_u16(phantom(150, 90))), P)
    assert prepared.pixels.dtype == np.float32 and prepared.display.dtype == np.uint8
    assert prepared.pixels.min() >= 0.0 and prepared.pixels.max() <= 1.0
    with pytest.raises(ValueError):
        prepared.pixels[0, 0] = 1.0


def test_prepare_does_not_touch_the_dataset() -> None:
    ds = make_ds(_u16(phantom(96, 96)), WindowCenter=1000, WindowWidth=500)
    before = copy.deepcopy(ds)
    prepare(ds, P)
    assert ds == before
    assert getattr(ds, "_pixel_array", None) is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"input_size": 4},
        {"min_size": 0},
        {"border_tolerance": 1.5},
        {"percentile_low": 60.0, "percentile_high": 50.0},
    ],
)
def test_invalid_params_are_rejected(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        PreprocessParams(**kwargs)  # type: ignore[arg-type]


# --- compressed transfer syntaxes -----------------------------------------------------------


def _compressed(ds: Dataset, syntax: UID) -> Dataset:
    encoder = get_encoder(syntax)
    need(encoder.is_available, f"no {syntax.name} encoder plugin installed (.[dev])")
    out = copy.deepcopy(ds)
    out.compress(syntax)
    return out


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless, JPEGLSLossless])
@pytest.mark.parametrize("signed", [False, True])
def test_lossless_compression_gives_identical_output(syntax: UID, signed: bool) -> None:
    x = _u16(phantom(130, 97))
    stored = (x.astype(np.int32) - 2048).astype(np.int16) if signed else x
    ds = make_ds(stored, BitsStored=12, WindowCenter=0 if signed else 2048, WindowWidth=3000)
    compressed = _compressed(ds, syntax)
    assert compressed.file_meta.TransferSyntaxUID == syntax
    a, b = prepare(ds, P), prepare(compressed, P)
    np.testing.assert_array_equal(a.pixels, b.pixels)
    np.testing.assert_array_equal(a.display, b.display)


# --- real vendor files (pydicom, pydicom-data) ------------------------------------------------


@pytest.mark.parametrize("stem", ["RG1", "RG3"])
def test_real_cr_uncompressed_equals_jpeg2000_lossless(stem: str) -> None:
    raw = pydicom.dcmread(data_file(f"{stem}_UNCR.dcm"))
    j2k = pydicom.dcmread(data_file(f"{stem}_J2KR.dcm"))
    assert raw.PhotometricInterpretation == "MONOCHROME1"
    assert j2k.file_meta.TransferSyntaxUID == JPEG2000Lossless
    a, b = prepare(raw, P), prepare(j2k, P)
    np.testing.assert_array_equal(a.pixels, b.pixels)
    np.testing.assert_array_equal(a.display, b.display)
    assert a.geometry == b.geometry
    assert a.voi_source == "window"
    # MONOCHROME1 is inverted: the centre of the picture (body) is brighter than the darkest 5 %
    assert np.median(a.pixels[100:220, 100:220]) > np.percentile(a.pixels, 5)


def test_real_extremity_collimation_is_cropped() -> None:
    ds = pydicom.dcmread(data_file("RG3_UNCR.dcm"))
    geo = prepare(ds, P).geometry
    # the leg is collimated left and right (stored value 0 -> white after inversion)
    assert geo.crop[0] == 0 and geo.crop[2] == ds.Rows
    assert 300 < geo.crop[1] < 400 and 1350 < geo.crop[3] < 1450
    assert geo.content_rows == 320 and geo.content_cols < 200


def test_real_lossy_jpeg2000_is_close_to_the_original() -> None:
    a = prepare(pydicom.dcmread(data_file("RG3_UNCR.dcm")), P)
    b = prepare(pydicom.dcmread(data_file("RG3_J2KI.dcm")), P)
    assert float(np.abs(a.pixels - b.pixels).mean()) < 0.005


@pytest.mark.parametrize(
    ("compressed", "reference"),
    [
        ("MR_small_jpeg_ls_lossless.dcm", "MR_small.dcm"),
        ("MR_small_RLE.dcm", "MR_small.dcm"),
        ("emri_small_jpeg_ls_lossless.dcm", "emri_small.dcm"),
        ("MR2_J2KR.dcm", "MR2_UNCR.dcm"),
    ],
)
def test_real_compressed_files_decode_like_their_reference(compressed: str, reference: str) -> None:
    a = pydicom.dcmread(data_file(compressed))
    b = pydicom.dcmread(data_file(reference))
    assert a.file_meta.TransferSyntaxUID.is_compressed
    np.testing.assert_array_equal(decode_pixels(a), decode_pixels(b))  # the first frame
    for ds in (a, b):  # MR is refused as such; force the modality to test the pipeline
        assert _refusal(ds) is RefusalReason.MODALITY
        ds.Modality = "DX"
    if int(a.get("NumberOfFrames") or 1) > 1:
        assert _refusal(a) is RefusalReason.MULTIFRAME
        return
    np.testing.assert_array_equal(prepare(a, P).pixels, prepare(b, P).pixels)


@pytest.mark.parametrize(
    ("name", "shape"),
    [
        ("JPGLosslessP14SV1_1s_1f_8b.dcm", (768, 1024)),  # JPEG lossless SV1, 8 bit
        ("JPGExtended.dcm", (1024, 256)),  # JPEG extended 12 bit
        ("JPEG-LL.dcm", (1024, 256)),  # JPEG lossless, 16 bit
        ("JPEGLSNearLossless_16.dcm", (50, 10)),  # JPEG-LS near lossless, 16 bit
        ("SC_rgb_jpeg_dcmtk.dcm", None),  # JPEG baseline, colour
    ],
)
def test_real_jpeg_family_files(name: str, shape: tuple[int, int] | None) -> None:
    ds = pydicom.dcmread(data_file(name))
    ds.Modality = "DX"
    if shape is None:
        assert _refusal(ds) is RefusalReason.COLOUR
        return
    assert decode_pixels(ds).shape == shape
    if min(shape) < P.min_size:
        assert _refusal(ds) is RefusalReason.TOO_SMALL
    elif int(ds.get("NumberOfFrames") or 1) > 1:
        assert _refusal(ds) is RefusalReason.MULTIFRAME
    else:
        prepared = prepare(ds, P)
        assert prepared.pixels.shape == (320, 320) and prepared.pixels.max() > 0.5


def test_jpeg_baseline_greyscale_decodes_close_to_the_original() -> None:
    """No greyscale baseline JPEG ships with pydicom: make one with Pillow when present."""
    image_module = need_module("PIL.Image")
    from io import BytesIO

    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    x = np.clip(phantom(128, 96, peak=150) / 4, 0, 255).astype(np.uint8)
    buffer = BytesIO()
    image_module.fromarray(x).save(buffer, format="JPEG", quality=95)
    ds = make_ds(x)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.PixelData = encapsulate([buffer.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.LossyImageCompression = "01"
    decoded = decode_pixels(ds)
    assert decoded.shape == x.shape
    assert float(np.abs(decoded.astype(float) - x).mean()) < 2.0
    a, b = prepare(make_ds(x), P), prepare(ds, P)
    assert float(np.abs(a.pixels - b.pixels).mean()) < 0.03  # lossy, and the window stretches
