"""The viewport's image source (xrayd.web.wado): WADO-URI and the per-id path serve a stored
instance, uncompressed, to a logged-in user only; unknown or foreign objects are 404 and images
beyond [limits] are refused (422) from their header."""

from __future__ import annotations

import logging
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from bombs import MIB, deflate_bomb, pixel_bomb
from dicom_factory import compress_j2k, compress_rle, save
from web_helpers import Web, make_web, seed_study


def _stored(web: Web, study: int) -> Dataset:
    return dcmread(web.ctx.spool.absolute(f"instances/{study}/0.dcm"))


def _instance_id(web: Web, study: int) -> int:
    from storage.reviews import study_review

    review = study_review(web.sessions, study)
    assert review is not None
    return review.images[0].instance_id


def _wado(ds: Dataset, **override: str) -> dict[str, str]:
    params = {
        "requestType": "WADO",
        "studyUID": str(ds.StudyInstanceUID),
        "seriesUID": str(ds.SeriesInstanceUID),
        "objectUID": str(ds.SOPInstanceUID),
        "contentType": "application/dicom",
    }
    params.update(override)
    return params


def _read(content: bytes) -> Dataset:
    return dcmread(BytesIO(content))


def test_wado_needs_a_login(web: Web) -> None:
    study = seed_study(web.sessions, web.ctx.spool)
    ds = _stored(web, study)
    assert web.client.get("/wado", params=_wado(ds)).status_code == 401
    response = web.client.get(f"/studies/{study}/instances/{_instance_id(web, study)}.dcm")
    assert response.status_code == 401
    assert b"DICM" not in response.content


def test_wado_uri_serves_the_stored_instance(web: Web) -> None:
    study = seed_study(web.sessions, web.ctx.spool)
    stored = _stored(web, study)
    web.login("rad")
    response = web.client.get("/wado", params=_wado(stored))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/dicom"
    assert response.headers["cache-control"] == "no-store"
    served = _read(response.content)
    assert served.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert served.SOPInstanceUID == stored.SOPInstanceUID
    assert np.array_equal(served.pixel_array, stored.pixel_array)
    by_id = web.client.get(f"/studies/{study}/instances/{_instance_id(web, study)}.dcm")
    assert by_id.status_code == 200 and by_id.content == response.content
    assert by_id.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("kind", ["j2k", "rle", "implicit"])
def test_a_compressed_or_implicit_instance_is_served_uncompressed(web: Web, kind: str) -> None:
    study = seed_study(web.sessions, web.ctx.spool)
    path = web.ctx.spool.absolute(f"instances/{study}/0.dcm")
    original = _stored(web, study)
    if kind == "implicit":
        original.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        original.save_as(path, implicit_vr=True, little_endian=True, enforce_file_format=True)
        assert dcmread(path).file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    else:
        save(compress_j2k(original) if kind == "j2k" else compress_rle(original), path)
        assert dcmread(path).file_meta.TransferSyntaxUID.is_compressed
    web.login("rad")
    response = web.client.get(f"/studies/{study}/instances/{_instance_id(web, study)}.dcm")
    assert response.status_code == 200, response.text
    served = _read(response.content)
    assert served.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert not served["PixelData"].is_undefined_length
    assert len(served.PixelData) == original.Rows * original.Columns * 2
    assert np.array_equal(served.pixel_array, original.pixel_array)  # lossless: same pixels
    assert served.PatientID == original.PatientID  # the whole object, not only the pixels


def test_unknown_and_foreign_objects_are_404(web: Web) -> None:
    one = seed_study(web.sessions, web.ctx.spool)
    two = seed_study(web.sessions, web.ctx.spool)
    a, b = _stored(web, one), _stored(web, two)
    web.login("rad")
    asks = [
        _wado(a, objectUID="1.2.3.4"),  # no such object
        _wado(a, studyUID="1.2.3.4"),  # no such study
        _wado(a, studyUID=str(b.StudyInstanceUID)),  # an object of another study
        _wado(a, seriesUID=str(b.SeriesInstanceUID)),  # the right study, another series
    ]
    for params in asks:
        assert web.client.get("/wado", params=params).status_code == 404, params
    other = _instance_id(web, two)
    assert web.client.get(f"/studies/{one}/instances/{other}.dcm").status_code == 404
    assert web.client.get(f"/studies/999999/instances/{other}.dcm").status_code == 404


def test_wado_refuses_malformed_requests(web: Web) -> None:
    study = seed_study(web.sessions, web.ctx.spool)
    ds = _stored(web, study)
    web.login("rad")
    assert web.client.get("/wado", params=_wado(ds, requestType="WADO-RS")).status_code == 422
    assert web.client.get("/wado", params=_wado(ds, objectUID="../../etc")).status_code == 422
    jpeg = web.client.get("/wado", params=_wado(ds, contentType="image/jpeg"))
    assert jpeg.status_code == 406


@pytest.mark.parametrize("bomb", ["j2k", "rle"])
def test_an_image_beyond_the_limits_is_refused_from_its_header(web: Web, bomb: str) -> None:
    study = seed_study(web.sessions, web.ctx.spool)
    stored = _stored(web, study)
    ds = pixel_bomb(
        65535,
        65535,
        bomb,
        study_uid=str(stored.StudyInstanceUID),
        series_uid=str(stored.SeriesInstanceUID),
        sop_uid=str(stored.SOPInstanceUID),
    )
    save(ds, web.ctx.spool.absolute(f"instances/{study}/0.dcm"))
    web.login("rad")
    for response in (
        web.client.get("/wado", params=_wado(stored)),
        web.client.get(f"/studies/{study}/instances/{_instance_id(web, study)}.dcm"),
    ):
        assert response.status_code == 422
        assert "image too large to show" in response.text


def test_a_deflate_bomb_is_refused(tmp_path: Path) -> None:
    web = make_web(tmp_path / "data", limits={"max_inflated_mb": 16})
    try:
        study = seed_study(web.sessions, web.ctx.spool)
        deflate_bomb(web.ctx.spool.absolute(f"instances/{study}/0.dcm"), 64 * MIB)
        web.login("rad")
        response = web.client.get(f"/studies/{study}/instances/{_instance_id(web, study)}.dcm")
        assert response.status_code == 422
        assert "image too large to show" in response.text
    finally:
        web.storage.engine.dispose()


def test_wado_logs_carry_no_patient_identifiers(web: Web, caplog: pytest.LogCaptureFixture) -> None:
    study = seed_study(web.sessions, web.ctx.spool, patient_id="PAT-SECRET-42")
    path = web.ctx.spool.absolute(f"instances/{study}/0.dcm")
    save(pixel_bomb(65535, 65535, "rle", patient_id="PAT-SECRET-42"), path)
    web.login("rad")
    with caplog.at_level(logging.DEBUG):
        response = web.client.get(f"/studies/{study}/instances/{_instance_id(web, study)}.dcm")
    assert response.status_code == 422
    assert any(r.name == "xrayd.web.wado" for r in caplog.records)
    text = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "PAT-SECRET-42" not in text and "Doe^Jane" not in text
