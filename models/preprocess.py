"""A radiograph ``Dataset`` -> the model input (float32, [0, 1]) and the geometry back.

Pipeline: refuse what cannot be analysed -> decode (pydicom pixel plugins) -> Modality LUT ->
find uniform collimation borders -> VOI LUT / first window / percentile window -> invert
MONOCHROME1 -> crop -> area-resize keeping the aspect ratio -> zero padding to a square.

The inversion follows the Photometric Interpretation only: in the CR and DX objects this
accepts, Presentation LUT Shape (INVERSE for MONOCHROME1, IDENTITY for MONOCHROME2) restates it.
Uniform borders are found on the Modality LUT output, before any window, so a window that
saturates the anatomy cannot make it look like a border; uniform air at an edge is cropped too.

No torch here: the caller turns :attr:`PreparedImage.pixels` into a tensor.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset

from models.borders import find_uniform_borders
from models.geometry import Geometry
from models.limits import DEFAULT_LIMITS, ImageLimits
from models.pixels import (
    RADIOGRAPH_MODALITIES,
    check_analysable,
    decode_pixels,
    modality_function,
    padding_mask,
)
from models.resample import letterbox
from models.voi import BLOCK_PIXELS, F64, VoiSource, linear_unit, percentile_window, voi_function

logger = logging.getLogger(__name__)

__all__ = [
    "RADIOGRAPH_MODALITIES",
    "DisplayImage",
    "PreparedImage",
    "PreprocessParams",
    "map_bands",
    "prepare",
    "window_to_display",
]


@dataclass(frozen=True)
class PreprocessParams:
    """How to turn a radiograph into the model input.

    ``input_size``: side of the square input. ``crop_borders``: remove nearly constant
    collimation rows/columns at the edges (``border_tolerance`` = largest 2-98 % spread of a
    "constant" line, as a fraction of the image's robust range). Without VOI information the
    window is the ``percentile_low``..``percentile_high`` percentiles of the pixels inside the
    borders. With ``stretch_after_voi`` that percentile window is applied *also* after a VOI
    LUT or window, so a DICOM object and the 8-bit picture exported from it (whose values
    already went through its window, and which :mod:`models.plain_image` stretches to its
    percentiles) give the same model input. Output values are in [0, 1] (0 = black); the
    padding is 0.
    """

    input_size: int = 320
    crop_borders: bool = True
    border_tolerance: float = 0.02
    percentile_low: float = 0.5
    percentile_high: float = 99.5
    min_size: int = 64
    modalities: frozenset[str] = field(default=RADIOGRAPH_MODALITIES)
    stretch_after_voi: bool = False

    def __post_init__(self) -> None:
        if self.input_size < 8:
            raise ValueError("input_size must be at least 8")
        if self.min_size < 1:
            raise ValueError("min_size must be positive")
        if not 0.0 <= self.border_tolerance < 1.0:
            raise ValueError("border_tolerance must be in [0, 1)")
        if not 0.0 <= self.percentile_low < self.percentile_high <= 100.0:
            raise ValueError("need 0 <= percentile_low < percentile_high <= 100")


@dataclass(frozen=True, eq=False)
class DisplayImage:
    """The full-resolution windowed source image, MONOCHROME2 (0 black), in [0, 1]."""

    unit: npt.NDArray[np.float32]
    crop: tuple[int, int, int, int]
    voi_source: VoiSource
    inverted: bool


@dataclass(frozen=True, eq=False)
class PreparedImage:
    """Model input (``pixels``: float32, ``input_size`` square, [0, 1]) and its provenance.

    ``display`` is the whole source image as uint8 (MONOCHROME2, full resolution), for
    burned-in secondary captures. Arrays are read-only.
    """

    pixels: npt.NDArray[np.float32]
    geometry: Geometry
    display: npt.NDArray[np.uint8]
    voi_source: VoiSource


def _band(cols: int) -> int:
    """Rows per band of the element-wise steps (about :data:`models.voi.BLOCK_PIXELS`)."""
    return max(1, BLOCK_PIXELS // max(cols, 1))


def map_bands(
    stored: npt.NDArray[np.integer], steps: Sequence[Callable[[npt.NDArray[Any]], F64]]
) -> npt.NDArray[np.float32]:
    """``steps`` (element-wise, float64) applied in turn to ``stored``, a band of rows at a
    time, into one float32 image: the same values as applying them to the whole image at
    once, with no full-size float64 copy."""
    rows, cols = stored.shape
    out = np.empty((rows, cols), dtype=np.float32)
    band = _band(cols)
    for row in range(0, rows, band):
        block: npt.NDArray[Any] = stored[row : row + band]
        for step in steps:
            block = step(block)
        out[row : row + band] = block
    return out


def window_to_display(
    ds: Dataset, params: PreprocessParams, *, limits: ImageLimits = DEFAULT_LIMITS
) -> DisplayImage:
    """Refuse, decode, apply Modality LUT and VOI, invert MONOCHROME1; find the borders.

    Raises :class:`models.errors.NotAnalysable` for objects that are not analysable, or
    beyond ``limits`` ("image too large", before anything is decoded).

    Memory: besides the decoded integers, one float32 image. The Modality LUT, the VOI and
    the inversion are element-wise and run a band of rows at a time in float64 (the same values
    as on the whole image at once); the borders and percentile windows look at samples only.
    """
    check_analysable(ds, modalities=params.modalities, min_size=params.min_size)
    stored = decode_pixels(ds, limits=limits)
    modality = modality_function(ds)
    rows, cols = stored.shape
    crop = (0, 0, rows, cols)
    if params.crop_borders:
        crop = find_uniform_borders(
            stored,
            tolerance=params.border_tolerance,
            min_extent=params.min_size,
            transform=modality,
        )
    row0, col0, row1, col1 = crop
    valid = padding_mask(ds, stored)
    valid_crop = None if valid is None else valid[row0:row1, col0:col1]
    del valid
    voi = voi_function(ds)
    steps: list[Callable[[npt.NDArray[Any]], F64]] = [modality]
    source: VoiSource
    if voi is not None:
        function, source = voi
        steps.append(function)
        if params.stretch_after_voi:
            low, high = percentile_window(
                stored[row0:row1, col0:col1],
                params.percentile_low,
                params.percentile_high,
                valid_crop,
                transform=lambda sample: function(modality(sample)),
            )
            steps.append(partial(linear_unit, low=low, high=high))
    else:
        low, high = percentile_window(
            stored[row0:row1, col0:col1],
            params.percentile_low,
            params.percentile_high,
            valid_crop,
            transform=modality,
        )
        steps.append(partial(linear_unit, low=low, high=high))
        source = "percentile"
    inverted = str(ds.PhotometricInterpretation).strip().upper() == "MONOCHROME1"
    if inverted:
        steps.append(_invert)
    unit = map_bands(stored, steps)
    logger.debug("windowed %dx%d image (%s), crop %s", rows, cols, source, crop)
    return DisplayImage(unit, crop, source, inverted)


def _invert(unit: F64) -> F64:
    return 1.0 - unit


def prepare(
    ds: Dataset, params: PreprocessParams, *, limits: ImageLimits = DEFAULT_LIMITS
) -> PreparedImage:
    """Turn a radiograph into the model input; see the module docstring for the steps.

    Raises :class:`models.errors.NotAnalysable` (with a ``reason`` code) for colour,
    multi-frame, non-radiograph, too small or undecodable objects, and for images beyond
    ``limits`` ("image too large"), which are refused before anything is decoded.
    """
    shown = window_to_display(ds, params, limits=limits)
    return prepared_from_unit(shown.unit, shown.crop, params, shown.voi_source)


def prepared_from_unit(
    unit: npt.NDArray[np.floating],
    crop: tuple[int, int, int, int],
    params: PreprocessParams,
    voi_source: VoiSource,
) -> PreparedImage:
    """The model input from a windowed [0, 1] image and its crop box (letterbox + geometry)."""
    row0, col0, row1, col1 = crop
    boxed = letterbox(unit[row0:row1, col0:col1], params.input_size)
    rows, cols = unit.shape
    geometry = Geometry(
        source_rows=rows,
        source_cols=cols,
        crop=crop,
        scale=boxed.scale,
        pad_top=boxed.pad_top,
        pad_left=boxed.pad_left,
        input_size=params.input_size,
        content_rows=boxed.content_rows,
        content_cols=boxed.content_cols,
    )
    pixels = np.clip(boxed.pixels, 0.0, 1.0).astype(np.float32)
    display = np.empty(unit.shape, dtype=np.uint8)
    band = _band(cols)
    for row in range(0, rows, band):  # a band at a time: no full-size float temporary
        display[row : row + band] = np.rint(unit[row : row + band] * 255.0)
    pixels.setflags(write=False)
    display.setflags(write=False)
    return PreparedImage(pixels, geometry, display, voi_source)
