"""Image limits checked on the header before any decoding; bounded reading of stored files."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
from pydicom.uid import DeflatedExplicitVRLittleEndian

from models.errors import NotAnalysable, RefusalReason
from models.limits import DEFAULT_LIMITS, ImageLimits, check_image_size
from models.pixels import decode_pixels
from models.preprocess import PreprocessParams, prepare
from models.reading import CorruptDeflate, read_header, read_image

from bombs import MIB, deflate_bomb, j2k_declaring, pixel_bomb
from dicom_factory import compress_j2k, compress_rle, make_radiograph


def too_large(exc: pytest.ExceptionInfo[NotAnalysable]) -> str:
    assert exc.value.reason == RefusalReason.IMAGE_TOO_LARGE
    assert str(exc.value).startswith("image too large: ")
    assert str(exc.value).endswith("[image_too_large]")
    return exc.value.message


def test_a_tiny_jpeg2000_declaring_8192_squared_is_a_bomb_by_its_ratio() -> None:
    ds = pixel_bomb(8192, 8192)
    # 128 MiB decoded is within max_decoded_mb and 67 M pixels within max_image_pixels:
    # only the ratio of decoded to stored bytes (~500,000:1) gives it away.
    with pytest.raises(NotAnalysable) as err:
        check_image_size(ds, DEFAULT_LIMITS)
    assert "8,192 x 8,192 decodes to 128.0 MiB from" in too_large(err)
    assert "limit 1,000:1" in err.value.message
    with pytest.raises(NotAnalysable) as err:
        decode_pixels(ds)  # the decoder is never reached
    too_large(err)


@pytest.mark.parametrize("kind", ["j2k", "rle"])
def test_65535_squared_is_refused_by_its_pixel_count(kind: str) -> None:
    ds = pixel_bomb(65535, 65535, kind)
    with pytest.raises(NotAnalysable) as err:
        prepare(ds, PreprocessParams())
    assert "65,535 x 65,535 is 4,294,836,225 pixels (limit 200,000,000)" in too_large(err)


def test_the_decoded_size_is_checked() -> None:
    ds = make_radiograph(rows=64, cols=64)
    ds.Rows, ds.Columns, ds.SamplesPerPixel = 12_000, 12_000, 3  # 144 M pixels, 824 MiB
    with pytest.raises(NotAnalysable) as err:
        check_image_size(ds, DEFAULT_LIMITS)
    assert "decodes to 824 MiB (limit 512 MiB)" in too_large(err)


def test_a_long_leg_and_ordinary_compressed_images_are_within_the_limits() -> None:
    long_leg = make_radiograph(rows=64, cols=64)
    long_leg.Rows, long_leg.Columns = 17_000, 7_000  # 119 M pixels, 227 MiB: allowed
    del long_leg.PixelData
    check_image_size(long_leg, DEFAULT_LIMITS)
    for ds in (compress_j2k(make_radiograph()), compress_rle(make_radiograph())):
        check_image_size(ds, DEFAULT_LIMITS)
        assert decode_pixels(ds).shape == (256, 256)


def test_limits_are_parameters() -> None:
    ds = make_radiograph(rows=256, cols=256)
    strict = ImageLimits(max_pixels=256 * 255)
    with pytest.raises(NotAnalysable):
        prepare(ds, PreprocessParams(), limits=strict)
    assert prepare(ds, PreprocessParams(), limits=ImageLimits(max_pixels=256 * 256)).pixels.size


def test_read_image_refuses_a_bomb_from_its_header_and_file_size(tmp_path: Path) -> None:
    path = tmp_path / "bomb.dcm"
    pixel_bomb(8192, 8192).save_as(path, enforce_file_format=True)
    assert path.stat().st_size < 4096
    with pytest.raises(NotAnalysable) as err:
        read_image(path, DEFAULT_LIMITS)
    too_large(err)
    # the header alone is still readable (for the "not analysed" listing)
    assert read_header(path, DEFAULT_LIMITS).Rows == 8192


def test_a_bomb_with_its_pixel_data_cut_off_is_refused_before_pixel_data_is_read(
    tmp_path: Path,
) -> None:
    """The stored bytes come from the file size: a file ending right after the Pixel Data
    tag is refused from the header, without pydicom reading (and failing on) the fragments."""
    path = tmp_path / "cut.dcm"
    pixel_bomb(65535, 65535).save_as(path, enforce_file_format=True)
    data = path.read_bytes()
    path.write_bytes(data[: data.rindex(bytes.fromhex("e07f1000")) + 12])
    with pytest.raises(NotAnalysable) as err:
        read_image(path, DEFAULT_LIMITS)
    too_large(err)


def test_a_legitimate_deflated_image_reads_and_prepares_as_the_original(tmp_path: Path) -> None:
    original = make_radiograph(rows=300, cols=200, seed=4)
    deflated = copy.deepcopy(original)
    deflated.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    path = tmp_path / "deflated.dcm"
    deflated.save_as(path, enforce_file_format=True)
    ds = read_image(path, DEFAULT_LIMITS)
    assert ds.file_meta.TransferSyntaxUID == DeflatedExplicitVRLittleEndian
    assert ds.PatientID == original.PatientID
    np.testing.assert_array_equal(decode_pixels(ds), original.pixel_array)
    params = PreprocessParams(input_size=64)
    np.testing.assert_array_equal(prepare(ds, params).pixels, prepare(original, params).pixels)
    assert read_image(path.read_bytes(), DEFAULT_LIMITS).Rows == 300


def test_a_deflated_data_set_beyond_max_inflated_is_too_large(tmp_path: Path) -> None:
    path = tmp_path / "bomb.dcm"
    deflate_bomb(path, 64 * MIB)
    limits = ImageLimits(max_inflated_bytes=16 * MIB)
    with pytest.raises(NotAnalysable) as err:
        read_image(path, limits)
    assert "inflates to more than 16 MiB" in too_large(err)
    with pytest.raises(NotAnalysable):
        read_header(path, limits)
    assert read_header(path, ImageLimits(max_inflated_bytes=65 * MIB)).Modality == "DX"


def test_a_truncated_deflated_file_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "cut.dcm"
    deflate_bomb(path, MIB, truncate=True)
    with pytest.raises(CorruptDeflate):
        read_image(path, DEFAULT_LIMITS)
    with pytest.raises(ValueError):  # what the callers catch
        read_header(path, DEFAULT_LIMITS)


def test_the_8192_bomb_stream_really_declares_8192() -> None:
    """The helper's codestream is what it claims (SIZ: Xsiz, Ysiz at offsets 8 and 12)."""
    stream = j2k_declaring(65535, 65535)
    assert int.from_bytes(stream[8:12], "big") == int.from_bytes(stream[12:16], "big") == 65535


def test_a_compressed_image_header_without_pixel_data_is_not_called_too_large(
    tmp_path: Path,
) -> None:
    ds = compress_j2k(make_radiograph())
    del ds.PixelData
    path = tmp_path / "no-pixels.dcm"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(NotAnalysable) as err:
        prepare(read_image(path, DEFAULT_LIMITS), PreprocessParams())
    assert err.value.reason == RefusalReason.NO_PIXELS
