"""The C-STORE handler's header checks, without a network."""

from __future__ import annotations

from io import BytesIO

import pytest

from dicom_node.received import uid_log_tag
from dicom_node.scp import HeaderError, read_header
from dicom_node.statuses import RejectReason, StoreStatus

from dicom_factory import make_radiograph


def encode(ds: object) -> bytes:
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)  # type: ignore[attr-defined]
    return buf.getvalue()


def test_valid_header() -> None:
    ds = make_radiograph()
    study, series, modality, body = read_header(encode(ds), ds.SOPClassUID, ds.SOPInstanceUID)
    assert (study, series, modality, body) == (
        ds.StudyInstanceUID, ds.SeriesInstanceUID, "DX", "HAND"
    )


@pytest.mark.parametrize(
    "request_uid", ["1.2." + "3" * 70, "../../etc/passwd", "", "1.2.3/../x"]
)
def test_invalid_request_uid_is_a_mismatch(request_uid: str) -> None:
    ds = make_radiograph()
    with pytest.raises(HeaderError) as err:
        read_header(encode(ds), ds.SOPClassUID, request_uid)
    assert err.value.status == StoreStatus.DATASET_MISMATCH


def test_overlong_uid_in_the_data_set() -> None:
    ds = make_radiograph()
    ds.SOPInstanceUID = "1.2." + "3" * 70
    with pytest.raises(HeaderError) as err:
        read_header(encode(ds), ds.SOPClassUID, ds.SOPInstanceUID)
    assert err.value.status == StoreStatus.DATASET_MISMATCH


def test_class_mismatch() -> None:
    ds = make_radiograph()
    with pytest.raises(HeaderError, match="SOPClassUID differs"):
        read_header(encode(ds), "1.2.840.10008.5.1.4.1.1.1", ds.SOPInstanceUID)


def test_garbage_cannot_be_understood() -> None:
    with pytest.raises(HeaderError) as err:
        read_header(b"\x00" * 128 + b"DICM" + b"\xff" * 40, "1.2.3", "1.2.3.4")
    assert err.value.status in (StoreStatus.CANNOT_UNDERSTAND, StoreStatus.DATASET_MISMATCH)


def test_uid_log_tag_is_short_and_stable() -> None:
    assert uid_log_tag("1.2.3") == uid_log_tag("1.2.3") != uid_log_tag("1.2.4")
    assert len(uid_log_tag("1.2.3")) == 12


def test_reject_reasons_map_to_ps38_values() -> None:
    assert RejectReason.CALLING_AE_NOT_RECOGNISED.wire == (1, 1, 3)
    assert RejectReason.CALLED_AE_NOT_RECOGNISED.wire == (1, 1, 7)
    assert RejectReason.TOO_MANY_ASSOCIATIONS.wire == (2, 3, 2)
