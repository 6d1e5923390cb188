"""A record's pixels -> the model input, by the same preparation as in production.

DICOM files (recognised by ``DICM`` at byte 128) and synthetic cases go through
:func:`models.preprocess.prepare`; PNG/JPEG pictures are decoded with Pillow (8- or 16-bit
greyscale kept as is, anything else converted to RGB and reduced to luma) and go through
:func:`models.plain_image.prepare_array`, which applies the same crop, window and letterbox.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps, UnidentifiedImageError
from pydicom.errors import InvalidDicomError

from models.errors import NotAnalysable
from models.limits import DEFAULT_LIMITS, ImageLimits
from models.plain_image import prepare_array
from models.preprocess import PreparedImage, PreprocessParams, prepare
from models.reading import read_image
from models.synthetic import to_dicom
from retrain.datasets.errors import DatasetError
from retrain.datasets.records import (
    FileImage,
    GeneratedImage,
    ImageRecord,
    ImageSource,
    LabelCodes,
    label_codes,
)

__all__ = ["is_dicom_file", "prepare_image", "prepare_record", "read_picture"]

#: Pillow modes read as they are (greyscale, 8 to 32 bits); others are converted to RGB.
_GREY_MODES = frozenset({"L", "I;16", "I;16L", "I;16B", "I", "F"})


def is_dicom_file(path: Path) -> bool:
    """True when ``path`` has the DICOM file preamble (``DICM`` at byte 128)."""
    with path.open("rb") as handle:
        head = handle.read(132)
    return len(head) == 132 and head[128:] == b"DICM"


def read_picture(path: Path) -> npt.NDArray[np.generic]:
    """A PNG/JPEG/... file as a 2-D greyscale or ``(rows, cols, 3)`` RGB array.

    The EXIF orientation is applied. Raises :class:`DatasetError` if Pillow cannot read it.
    """
    try:
        with Image.open(path) as opened:
            picture = ImageOps.exif_transpose(opened)
            if picture.mode not in _GREY_MODES:
                picture = picture.convert("RGB")
            return np.asarray(picture)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DatasetError(path, f"cannot read the image: {exc}") from exc


def _prepare_file(path: Path, params: PreprocessParams, limits: ImageLimits) -> PreparedImage:
    try:
        if is_dicom_file(path):
            try:
                # header first: an image beyond the limits is refused before it is read
                ds = read_image(path, limits)
            except (InvalidDicomError, OSError, ValueError) as exc:
                raise DatasetError(path, f"cannot read the DICOM file: {exc}") from exc
            return prepare(ds, params, limits=limits)
        return prepare_array(read_picture(path), params)
    except FileNotFoundError as exc:
        raise DatasetError(path, "image file not found") from exc
    except OSError as exc:
        raise DatasetError(path, f"cannot read the file: {exc}") from exc
    except NotAnalysable as exc:
        raise DatasetError(path, f"not analysable: {exc}") from exc


def prepare_image(
    image: ImageSource, params: PreprocessParams, limits: ImageLimits = DEFAULT_LIMITS
) -> PreparedImage:
    """The prepared model input of ``image`` (pixels float32, ``input_size`` square, [0, 1]).

    Raises :class:`DatasetError` naming the file when it is missing, unreadable or not
    analysable, "image too large" (beyond ``limits``, never decoded) included (the
    :class:`models.errors.NotAnalysable` is chained as the cause).
    """
    if isinstance(image, GeneratedImage):
        return prepare(to_dicom(image.case), params)
    assert isinstance(image, FileImage)
    return _prepare_file(image.path, params, limits)


def prepare_record(
    record: ImageRecord, params: PreprocessParams
) -> tuple[npt.NDArray[np.float32], LabelCodes]:
    """``(pixels (S, S) float32 in [0, 1], label codes with -1 where missing)``."""
    return prepare_image(record.image, params).pixels, label_codes(record)
