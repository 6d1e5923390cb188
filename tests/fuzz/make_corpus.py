"""Write the seed corpora of the header and pixel fuzzers (deterministic; run from the root).

    .venv/bin/python tests/fuzz/make_corpus.py

Small radiograph-like files of every kind the listener accepts and the encoders installed
here can write: native (explicit, implicit, deflated), RLE, JPEG 2000, JPEG-LS, JPEG baseline;
MONOCHROME1/2; 8/16 bit, signed and unsigned; window, VOI LUT, Modality LUT, rescale, pixel
padding. Header seeds are 16x16 images (the header check never reads pixels; JPEG 2000 needs
32x32), pixel seeds 32x32. Every file stays far below 64 KiB.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
)

from fuzz_targets import (
    CORPUS,
    SERIES_UID,
    SOP_CLASS_UID,
    SOP_INSTANCE_UID,
    STUDY_UID,
)

MAX_BYTES = 64 * 1024


def base(size: int, *, bits: int = 16, signed: bool = False, seed: int = 0) -> Dataset:
    """A MONOCHROME2 DX image: a bright vertical band (bone) on a noisy background, with a
    uniform 2-pixel border (collimation) so that border cropping has something to find."""
    rng = np.random.default_rng(seed)
    _, x = np.mgrid[0:size, 0:size]
    top = 255 if bits == 8 else 4095
    band = np.exp(-(((x - size / 2) / (size / 8)) ** 2)) * top * 0.6
    image = top * 0.2 + band + rng.normal(0, top * 0.01, (size, size))
    image[:2, :] = image[-2:, :] = 0
    if signed:
        image = image - top / 2
    dtype = np.uint8 if bits == 8 else (np.int16 if signed else np.uint16)
    info = np.iinfo(dtype)
    pixels = image.clip(info.min, min(info.max, top)).astype(dtype)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = SOP_CLASS_UID
    ds.file_meta.MediaStorageSOPInstanceUID = SOP_INSTANCE_UID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SOPClassUID = SOP_CLASS_UID
    ds.SOPInstanceUID = SOP_INSTANCE_UID
    ds.StudyInstanceUID = STUDY_UID
    ds.SeriesInstanceUID = SERIES_UID
    ds.Modality = "DX"
    ds.BodyPartExamined = "HAND"
    ds.PatientName = "Fuzz^Seed"
    ds.PatientID = "FUZZ-1"
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = bits
    ds.BitsStored = 8 if bits == 8 else 12
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if signed else 0
    ds.PixelData = pixels.tobytes()
    return ds


def window(ds: Dataset) -> Dataset:
    ds.WindowCenter, ds.WindowWidth = 2000, 4000
    return ds


def monochrome1(ds: Dataset) -> Dataset:
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.PresentationLUTShape = "INVERSE"
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 2, -100, "US"
    return ds


def voi_lut(ds: Dataset) -> Dataset:
    item = Dataset()
    item.LUTDescriptor = [4096, -2048, 12]
    item.add_new("LUTData", "OW", np.linspace(0, 4095, 4096).astype("<u2").tobytes())
    ds.VOILUTSequence = Sequence([item])
    ds.PixelPaddingValue = -2048
    return ds


def modality_lut(ds: Dataset) -> Dataset:
    item = Dataset()
    item.LUTDescriptor = [512, 0, 16]
    item.ModalityLUTType = "US"
    item.add_new("LUTData", "OW", np.linspace(0, 65535, 512).astype("<u2").tobytes())
    ds.ModalityLUTSequence = Sequence([item])
    ds.WindowCenter, ds.WindowWidth = [30000, 20000], [60000, 30000]
    ds.VOILUTFunction = "SIGMOID"
    return ds


def compressed(syntax: str) -> Callable[[Dataset], Dataset]:
    def apply(ds: Dataset) -> Dataset:
        ds.compress(syntax, generate_instance_uid=False)
        return ds

    return apply


def jpeg_baseline(ds: Dataset) -> Dataset:
    """8-bit JPEG baseline through Pillow, encapsulated by pydicom (it cannot encode it)."""
    pixels = np.frombuffer(ds.PixelData, dtype=np.uint8).reshape(ds.Rows, ds.Columns)
    buf = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buf, format="JPEG", quality=90)
    ds.PixelData = encapsulate([buf.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.LossyImageCompression = "01"
    return ds


def implicit(ds: Dataset) -> Dataset:
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    return ds


def deflated(ds: Dataset) -> Dataset:
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    return ds


# name -> (bits, signed, changes)
SEEDS: dict[str, tuple[int, bool, list[Callable[[Dataset], Dataset]]]] = {
    "explicit-mono2-16bit-window": (16, False, [window]),
    "explicit-mono1-16bit-rescale": (16, False, [monochrome1]),
    "implicit-mono2-8bit": (8, False, [implicit]),
    "explicit-signed-voilut-padding": (16, True, [voi_lut]),
    "explicit-modalitylut-sigmoid": (16, False, [modality_lut]),
    "deflated-mono2-16bit": (16, False, [window, deflated]),
    "rle-mono2-16bit": (16, False, [window, compressed(RLELossless)]),
    "rle-mono1-8bit": (8, False, [monochrome1, compressed(RLELossless)]),
    "j2k-mono2-16bit": (16, False, [window, compressed(JPEG2000Lossless)]),
    "jpegls-mono2-16bit": (16, False, [compressed(JPEGLSLossless)]),
    "jpeg-baseline-mono2-8bit": (8, False, [jpeg_baseline]),
}


def write(ds: Dataset, path: Path) -> None:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    data = buf.getvalue()
    if len(data) > MAX_BYTES:
        raise SystemExit(f"{path.name}: {len(data)} bytes is over {MAX_BYTES}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def main() -> int:
    written = 0
    for kind, size in (("header", 16), ("pixels", 32)):
        for name, (bits, signed, changes) in SEEDS.items():
            # openjpeg needs 32 pixels a side for its default 6 resolutions
            side = max(size, 32) if name.startswith("j2k") else size
            ds = base(side, bits=bits, signed=signed)
            for change in changes:
                ds = change(ds)
            write(ds, CORPUS / kind / f"{name}.dcm")
            written += 1
    # Header-only oddities: no preamble/meta (as some peers' data sets are), a bare data set.
    ds = base(16)
    del ds.file_meta
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=False, implicit_vr=True, little_endian=True)
    (CORPUS / "header" / "bare-implicit-dataset.dcm").write_bytes(buf.getvalue())
    written += 1
    print(f"wrote {written} seeds under {CORPUS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
