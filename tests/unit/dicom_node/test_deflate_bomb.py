"""Deflated data sets at the C-STORE header check: inflated with a cap, in bounded memory."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.uid import DeflatedExplicitVRLittleEndian

from dicom_node.scp import HeaderError, read_header
from dicom_node.statuses import StoreStatus

from bombs import MIB, deflate_bomb, measure
from dicom_factory import make_radiograph


def test_a_legitimate_deflated_data_set_is_read(tmp_path: Path) -> None:
    ds = make_radiograph(rows=512, cols=512)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    path = tmp_path / "deflated.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert read_header(path, ds.SOPClassUID, ds.SOPInstanceUID) == (
        ds.StudyInstanceUID,
        ds.SeriesInstanceUID,
        "DX",
        "HAND",
    )
    # the whole data set (512 KiB of pixels) inflates to less than 1 MiB: within a 1 MiB cap
    assert read_header(path, ds.SOPClassUID, ds.SOPInstanceUID, max_inflated_bytes=MIB)[0]


def test_a_bomb_beyond_the_cap_is_refused_as_out_of_resources(tmp_path: Path) -> None:
    """64 MiB of zeros (65 KiB on the wire) against a 16 MiB cap: refused, though its header
    is valid (the data set could never be read for analysis)."""
    path = tmp_path / "bomb.dcm"
    ds = deflate_bomb(path, 64 * MIB)
    assert path.stat().st_size < 100 * 1024
    with pytest.raises(HeaderError) as err:
        read_header(path, ds.SOPClassUID, ds.SOPInstanceUID, max_inflated_bytes=16 * MIB)
    assert err.value.status == StoreStatus.OUT_OF_RESOURCES
    assert err.value.reason == "inflated data set too large (more than 16 MiB)"
    assert ds.PatientID not in err.value.reason


def test_the_same_data_set_within_the_cap_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "zeros.dcm"
    ds = deflate_bomb(path, 64 * MIB)
    study, *_ = read_header(path, ds.SOPClassUID, ds.SOPInstanceUID, max_inflated_bytes=65 * MIB)
    assert study == ds.StudyInstanceUID


def test_a_gibibyte_bomb_is_refused_without_a_large_allocation(tmp_path: Path) -> None:
    """3 GiB of zeros (3 MiB on the wire) at the default cap (1 GiB): pydicom alone inflated
    all of it, here the peak RSS grows by less than 200 MiB."""
    path = tmp_path / "bomb3g.dcm"
    ds = deflate_bomb(path, 3 * 1024 * MIB)
    assert path.stat().st_size < 4 * MIB
    probe = measure(
        f"""
        from pathlib import Path
        from dicom_node.scp import HeaderError, read_header
        def check():
            try:
                read_header(Path({str(path)!r}), {ds.SOPClassUID!r}, {ds.SOPInstanceUID!r})
            except HeaderError as exc:
                return (int(exc.status), exc.reason)
            return "accepted"
        """,
        "check()",
    )
    assert "error" not in probe, probe
    assert probe["result"] == repr(
        (int(StoreStatus.OUT_OF_RESOURCES), "inflated data set too large (more than 1024 MiB)")
    )
    assert probe["growth_mib"] < 200, probe


def test_a_header_beyond_the_inflated_prefix_is_refused(tmp_path: Path) -> None:
    """40 MiB of private zeros before the identifying attributes: the header check keeps only
    the first 32 MiB of the inflated stream."""
    path = tmp_path / "fat-header.dcm"
    ds = deflate_bomb(path, 1024, before_header=40 * MIB)
    with pytest.raises(HeaderError) as err:
        read_header(path, ds.SOPClassUID, ds.SOPInstanceUID)
    assert err.value.status == StoreStatus.OUT_OF_RESOURCES
    assert "header larger than 32 MiB" in err.value.reason


def test_a_truncated_deflate_stream_cannot_be_understood(tmp_path: Path) -> None:
    path = tmp_path / "truncated.dcm"
    ds = deflate_bomb(path, 8 * MIB, truncate=True)
    with pytest.raises(HeaderError) as err:
        read_header(path, ds.SOPClassUID, ds.SOPInstanceUID)
    # cut in its pixel data: the header is complete, but the data set is not
    assert err.value.status == StoreStatus.CANNOT_UNDERSTAND
    assert err.value.reason == "unparseable data set (TruncatedDeflate)"


def test_a_corrupt_deflate_stream_cannot_be_understood(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.dcm"
    ds = deflate_bomb(path, MIB)
    data = bytearray(path.read_bytes())
    start = data.index(b"DICM") + 200
    data[start : start + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))
    with pytest.raises(HeaderError) as err:
        read_header(path, ds.SOPClassUID, ds.SOPInstanceUID)
    assert err.value.status in (StoreStatus.CANNOT_UNDERSTAND, StoreStatus.DATASET_MISMATCH)
