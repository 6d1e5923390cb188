"""The study page's viewport reads xrayd's own instances here: WADO-URI (DICOM PS3.18 section
10.4, ``GET /wado?requestType=WADO&studyUID=&seriesUID=&objectUID=&contentType=application/dicom``)
and the same object by xrayd's ids (``GET /studies/{study}/instances/{instance}.dcm``).

Both need a login (the pages' ``authenticated``), answer 404 for an object that is not in that
study, 422 for an image beyond ``[limits]`` (refused from its header, never decoded) or one that
cannot be shown, and ``Cache-Control: no-store`` (the object carries patient data). What is
served is the stored instance in Explicit VR Little Endian, uncompressed: a compressed,
deflated, implicit or big-endian file is decoded and rewritten here (pydicom's decoders, the
same bounded decode as the analysis), so the browser needs no codecs.
"""

from __future__ import annotations

import logging
from io import BytesIO
from pathlib import Path
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian
from starlette.concurrency import run_in_threadpool

from models.errors import NotAnalysable, RefusalReason
from models.limits import ImageLimits
from models.pixels import check_codestream_size, decode_pixels
from models.reading import read_header, read_image
from storage.analyses import study_id_of
from storage.bytestore import ByteStore, ByteStoreError, ByteStoreUnavailableError
from storage.reviews import study_review
from xrayd.runtime.limits import image_limits
from xrayd.web.auth import Principal, authenticated, context

__all__ = ["DICOM_TYPE", "router", "uncompressed_part10"]

LOGGER = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)

DICOM_TYPE = "application/dicom"
_HEADERS = {"Cache-Control": "no-store"}
_UID = r"^[0-9]+(\.[0-9]+)*$"


class _OtherSeries(LookupError):
    """The object is in the study but not in the series the request named."""


def uncompressed_part10(path: Path, limits: ImageLimits) -> bytes:
    """The DICOM file at ``path`` as a Part 10 file in Explicit VR Little Endian.

    The header is checked against ``limits`` before any pixel data is read or decoded
    (``models.reading.read_image``); a compressed frame is decoded by pydicom's plugins after
    its codestream's declared size is checked (``models.pixels``). A file already in Explicit
    VR Little Endian is served as stored. Raises ``NotAnalysable`` (too large, undecodable,
    several frames) and whatever pydicom raises for a file it cannot read or write.
    """
    ds = read_image(path, limits)
    syntax = UID(str(ds.file_meta.get("TransferSyntaxUID", "")))
    if syntax == ExplicitVRLittleEndian:
        return path.read_bytes()
    if "PixelData" in ds and (syntax.is_compressed or not syntax.is_little_endian):
        _native_pixels(ds, syntax, limits)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True, little_endian=True, implicit_vr=False)
    return buffer.getvalue()


def _native_pixels(ds: Dataset, syntax: UID, limits: ImageLimits) -> None:
    """Replace compressed or big-endian Pixel Data by native little-endian pixels."""
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        # colour (a capture): pydicom converts YBR to RGB and updates the attributes
        check_codestream_size(ds, syntax)
        ds.decompress(as_rgb=True)
        return
    pixels = decode_pixels(ds, limits=limits)  # one frame, bounded, integers
    allocated = int(ds.BitsAllocated)
    if allocated not in (8, 16, 32):
        raise NotAnalysable(
            RefusalReason.CORRUPT_PIXELS, f"{allocated} bits allocated cannot be served"
        )
    kind = "i" if int(ds.get("PixelRepresentation", 0) or 0) else "u"
    native = np.ascontiguousarray(pixels, dtype=np.dtype(f"<{kind}{allocated // 8}"))
    data = native.tobytes()
    if len(data) % 2:
        data += b"\0"
    ds.PixelData = data
    ds["PixelData"].VR = "OB" if allocated == 8 else "OW"
    ds["PixelData"].is_undefined_length = False
    for tag in ("ExtendedOffsetTable", "ExtendedOffsetTableLengths"):
        if tag in ds:
            del ds[tag]


async def _answer(
    request: Request, spool_path: str, instance_id: int, series_uid: str | None = None
) -> Response:
    ctx = context(request)
    store = ctx.byte_store()
    limits = image_limits(ctx.settings.limits)
    try:
        data = await run_in_threadpool(_fetch, store, spool_path, limits, series_uid)
    except _OtherSeries as exc:
        raise HTTPException(404, "no such object in this study and series") from exc
    except ByteStoreUnavailableError as exc:
        LOGGER.warning("image store unavailable", extra={"instance_id": instance_id})
        raise HTTPException(503, "the image store is unavailable; try again") from exc
    except NotAnalysable as exc:
        LOGGER.warning(
            "instance not served: %s", exc.reason.value, extra={"instance_id": instance_id}
        )
        if exc.reason == RefusalReason.IMAGE_TOO_LARGE:
            raise HTTPException(422, "image too large to show") from exc
        raise HTTPException(422, "this image cannot be shown") from exc
    except (ValueError, OSError, NotImplementedError, RuntimeError, ByteStoreError) as exc:
        LOGGER.warning(
            "instance not served: %s", type(exc).__name__, extra={"instance_id": instance_id}
        )
        raise HTTPException(422, "this image cannot be shown") from exc
    return Response(data, media_type=DICOM_TYPE, headers=_HEADERS)


def _fetch(store: ByteStore, key: str, limits: ImageLimits, series_uid: str | None) -> bytes:
    with store.fetch(key) as path:
        if series_uid is not None:
            header = read_header(path, limits, specific_tags=["SeriesInstanceUID"])
            if str(header.get("SeriesInstanceUID", "")) != series_uid:
                raise _OtherSeries(series_uid)
        return uncompressed_part10(path, limits)


@router.get("/studies/{study_id}/instances/{instance_id}.dcm")
async def instance_dicom(
    request: Request,
    study_id: int,
    instance_id: int,
    principal: Annotated[Principal, Depends(authenticated)],
) -> Response:
    """One stored instance of an analysed study, uncompressed (the viewport's image)."""
    review = study_review(context(request).sessions, study_id)
    for image in review.images if review is not None else ():
        if image.instance_id == instance_id:
            return await _answer(request, image.spool_path, instance_id)
    raise HTTPException(404, "no such image in this study")


@router.get("/wado")
async def wado_uri(
    request: Request,
    principal: Annotated[Principal, Depends(authenticated)],
    request_type: Annotated[str, Query(alias="requestType", pattern="^WADO$")],
    study_uid: Annotated[str, Query(alias="studyUID", max_length=64, pattern=_UID)],
    series_uid: Annotated[str, Query(alias="seriesUID", max_length=64, pattern=_UID)],
    object_uid: Annotated[str, Query(alias="objectUID", max_length=64, pattern=_UID)],
    content_type: Annotated[str, Query(alias="contentType")] = DICOM_TYPE,
) -> Response:
    """WADO-URI for ``application/dicom`` (PS3.18 10.4): the object, uncompressed. Other
    content types (JPEG renderings) are not offered: 406. The series is checked against the
    object's own Series Instance UID; an object of another study or series is 404."""
    if DICOM_TYPE not in {t.split(";")[0].strip() for t in content_type.split(",")}:
        raise HTTPException(406, "only contentType=application/dicom is offered")
    sessions = context(request).sessions
    study_id = study_id_of(sessions, study_uid)
    review = study_review(sessions, study_id) if study_id is not None else None
    for image in review.images if review is not None else ():
        if image.sop_instance_uid == object_uid:
            return await _answer(request, image.spool_path, image.instance_id, series_uid)
    raise HTTPException(404, "no such object in this study and series")
