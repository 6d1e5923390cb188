"""Radiograph-like DICOM files for tests and benchmarks (not clinical images)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)

CR = UID("1.2.840.10008.5.1.4.1.1.1")
DX = UID("1.2.840.10008.5.1.4.1.1.1.1")
MG = UID("1.2.840.10008.5.1.4.1.1.1.2")


def make_radiograph(
    *,
    sop_class: str = DX,
    rows: int = 256,
    cols: int = 256,
    study_uid: str | None = None,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    seed: int = 0,
    patient_id: str = "PAT-SECRET-42",
    patient_name: str = "Doe^Jane",
) -> Dataset:
    """A 12-bit MONOCHROME2 image with a smooth 'bone' band and noise."""
    rng = np.random.default_rng(seed)
    _, x = np.mgrid[0:rows, 0:cols]
    bone = np.exp(-(((x - cols / 2) / (cols / 8)) ** 2)) * 2500
    pixels = (800 + bone + rng.normal(0, 30, (rows, cols))).clip(0, 4095).astype(np.uint16)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid or generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SOPClassUID = sop_class
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = series_uid or generate_uid()
    ds.Modality = "CR" if sop_class == CR else "MG" if sop_class == MG else "DX"
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "F"
    ds.StudyDate = "20261123"
    ds.StudyTime = "101500"
    ds.AccessionNumber = "ACC1"
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.BodyPartExamined = "HAND"
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.WindowCenter = 2000
    ds.WindowWidth = 4000
    ds.PixelData = pixels.tobytes()
    return ds


def save(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def compress_j2k(ds: Dataset) -> Dataset:
    ds = ds.copy()
    ds.compress(JPEG2000Lossless)
    return ds


def compress_rle(ds: Dataset) -> Dataset:
    ds = ds.copy()
    ds.compress(RLELossless)
    return ds


def dcmtk(tool: str) -> str | None:
    return shutil.which(tool)


def compress_jpegls(src: Path, dst: Path) -> Path:
    """JPEG-LS lossless through DCMTK's dcmcjpls (pydicom cannot encode JPEG-LS by itself)."""
    tool = shutil.which("dcmcjpls")
    if tool is None:
        raise FileNotFoundError("dcmcjpls (DCMTK) is not installed")
    subprocess.run([tool, str(src), str(dst)], check=True, capture_output=True)
    return dst


def save_as_is(ds: Dataset, path: Path) -> Path:
    """Save keeping the file meta exactly as set (even when it contradicts the data set)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.preamble = b"\x00" * 128
    ds.save_as(path, enforce_file_format=False, implicit_vr=False, little_endian=True)
    return path
