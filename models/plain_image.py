"""A plain greyscale picture (PNG/JPEG pixels, no DICOM header) -> the model input.

Research datasets such as MURA and FracAtlas ship exported PNG/JPEG files: the DICOM steps of
:func:`models.preprocess.prepare` (refusals by header, Modality LUT, VOI LUT, MONOCHROME1
inversion) have already been applied by whoever exported them. What is left is the same tail:
uniform border crop on the values, a percentile window inside the borders (as ``prepare`` does
for a DICOM object without VOI information), area-resize keeping the aspect ratio, zero padding
to a square, float32 in [0, 1]. Bone is assumed bright (MONOCHROME2), as in those datasets.

Colour input (``(rows, cols, 3)`` or ``(rows, cols, 4)``; some MURA PNGs are stored as RGB) is
reduced to luma (ITU-R BT.601 weights; alpha ignored). The caller decodes the file (Pillow);
this module only sees arrays.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from models.borders import find_uniform_borders
from models.errors import NotAnalysable, RefusalReason
from models.preprocess import PreparedImage, PreprocessParams, prepared_from_unit
from models.voi import linear_unit, percentile_window

__all__ = ["prepare_array", "to_greyscale"]

#: ITU-R BT.601 luma weights, as Pillow's ``convert("L")`` uses.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)


def to_greyscale(array: npt.NDArray[np.generic]) -> npt.NDArray[np.float64]:
    """A 2-D float64 copy of ``array``: greyscale as is, RGB(A) reduced to luma.

    Raises :class:`models.errors.NotAnalysable` (``colour``) for other shapes.
    """
    data = np.asarray(array)
    if data.dtype == np.bool_ or not np.issubdtype(data.dtype, np.number):
        raise NotAnalysable(RefusalReason.CORRUPT_PIXELS, f"pixel type {data.dtype} is not numeric")
    if data.ndim == 2:
        return data.astype(np.float64)
    if data.ndim == 3 and data.shape[2] == 1:
        return data[:, :, 0].astype(np.float64)
    if data.ndim == 3 and data.shape[2] in (3, 4):
        return np.asarray(data[:, :, :3].astype(np.float64) @ _LUMA, dtype=np.float64)
    raise NotAnalysable(
        RefusalReason.COLOUR, f"expected a greyscale or RGB image, got shape {data.shape}"
    )


def prepare_array(array: npt.NDArray[np.generic], params: PreprocessParams) -> PreparedImage:
    """Turn decoded picture pixels into the model input; see the module docstring.

    ``array``: 2-D greyscale (any integer or float type, e.g. 8- or 16-bit), or RGB(A).
    Raises :class:`models.errors.NotAnalysable` for too small, non-finite or colour-shaped
    input that cannot be reduced to greyscale.
    """
    values = to_greyscale(array)
    rows, cols = values.shape
    if min(rows, cols) < params.min_size:
        raise NotAnalysable(
            RefusalReason.TOO_SMALL,
            f"{rows}x{cols} pixels is smaller than {params.min_size} on a side",
        )
    if not np.isfinite(values).all():
        raise NotAnalysable(RefusalReason.CORRUPT_PIXELS, "the image has non-finite values")
    crop = (0, 0, rows, cols)
    if params.crop_borders:
        crop = find_uniform_borders(
            values, tolerance=params.border_tolerance, min_extent=params.min_size
        )
    row0, col0, row1, col1 = crop
    low, high = percentile_window(
        values[row0:row1, col0:col1], params.percentile_low, params.percentile_high
    )
    unit = linear_unit(values, low, high)
    return prepared_from_unit(unit, crop, params, "percentile")
