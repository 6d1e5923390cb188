"""Builders of small radiograph datasets for the ``models`` tests (not shipped)."""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

from helpers import need

DX_STORAGE = UID("1.2.840.10008.5.1.4.1.1.1.1")


def phantom(rows: int = 128, cols: int = 128, seed: int = 0, peak: float = 3000.0) -> np.ndarray:
    """A smooth 'bone' band on a background with noise (float64, >= 0)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:cols]
    band = np.exp(-(((x - cols / 2) / (cols / 6)) ** 2)) * peak * (0.6 + 0.4 * y / rows)
    return np.asarray(400.0 + band + rng.normal(0.0, 40.0, (rows, cols)))


def make_ds(
    stored: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    modality: str = "DX",
    **elements: Any,
) -> Dataset:
    """A single-frame greyscale dataset around ``stored`` (integer array, native LE)."""
    stored = np.asarray(stored)
    signed = np.issubdtype(stored.dtype, np.signedinteger)
    bits_allocated = stored.dtype.itemsize * 8
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = DX_STORAGE
    ds.SOPClassUID = DX_STORAGE
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.Modality = modality
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = bits_allocated
    ds.BitsStored = bits_stored or bits_allocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if signed else 0
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    ds.PixelData = stored.astype(stored.dtype.newbyteorder("<")).tobytes()
    return ds


def data_file(name: str) -> str:
    """Path of a pydicom / pydicom-data test file, skipping when pydicom-data is absent."""
    need(importlib.util.find_spec("data_store") is not None, "pydicom-data is not installed")
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name)
    need(path is not None, f"{name} is not in pydicom's test data")
    return str(path)
