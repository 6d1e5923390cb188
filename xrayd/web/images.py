"""Images for the study page: the radiograph as PNG with its window, and coloured heatmaps."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels.processing import convert_color_space

from dicom_node.overlay_style import heatmap_colours
from models.limits import DEFAULT_LIMITS, ImageLimits, check_image_size
from models.pixels import decode_pixels, modality_function
from models.preprocess import PreprocessParams, map_bands, window_to_display
from models.reading import read_header as read_dicom_header
from models.reading import read_image
from models.voi import window_unit

__all__ = ["MAX_SIDE", "ImageHeader", "heatmap_overlay_png", "radiograph_png", "read_header"]

MAX_SIDE = 2048
_ANY_MODALITY = PreprocessParams(crop_borders=False, min_size=1, modalities=frozenset())


@dataclass(frozen=True)
class ImageHeader:
    """What the study page shows about an image and its patient (page only, never logged)."""

    rows: int
    columns: int
    patient_name: str
    patient_id: str
    accession_number: str
    study_date: str
    study_description: str
    view_position: str
    laterality: str
    window_center: float | None
    window_width: float | None


def _first(value: object) -> float | None:
    """The first value of a possibly multi-valued DS element."""
    if value is None or value == "":
        return None
    if isinstance(value, str | int | float):
        candidate: object = value
    else:
        try:
            candidate = next(iter(value))  # type: ignore[call-overload]
        except (TypeError, StopIteration):
            return None
    try:
        return float(candidate)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def read_header(path: Path, limits: ImageLimits = DEFAULT_LIMITS) -> ImageHeader:
    """What the page shows of the image at ``path``; a deflated one is inflated with bounded
    memory (raises ``models.errors.NotAnalysable`` beyond ``limits``)."""
    ds = read_dicom_header(path, limits)
    return ImageHeader(
        rows=int(ds.get("Rows", 0) or 0),
        columns=int(ds.get("Columns", 0) or 0),
        patient_name=str(ds.get("PatientName", "") or ""),
        patient_id=str(ds.get("PatientID", "") or ""),
        accession_number=str(ds.get("AccessionNumber", "") or ""),
        study_date=str(ds.get("StudyDate", "") or ""),
        study_description=str(ds.get("StudyDescription", "") or ""),
        view_position=str(ds.get("ViewPosition", "") or ""),
        laterality=str(ds.get("ImageLaterality", "") or ds.get("Laterality", "") or ""),
        window_center=_first(ds.get("WindowCenter")),
        window_width=_first(ds.get("WindowWidth")),
    )


def _unit(
    ds: Dataset, center: float | None, width: float | None, limits: ImageLimits
) -> npt.NDArray[np.float32]:
    if center is None or width is None:
        # Any greyscale modality can be shown (the analysis refuses non-radiographs, not us).
        modality = str(ds.get("Modality") or "").strip().upper()
        params = replace(_ANY_MODALITY, modalities=frozenset({modality}))
        return window_to_display(ds, params, limits=limits).unit
    stored = decode_pixels(ds, limits=limits)
    steps: list[Callable[[npt.NDArray[Any]], npt.NDArray[np.float64]]] = [
        modality_function(ds),
        partial(window_unit, center=center, width=max(width, 1.0)),
    ]
    if str(ds.get("PhotometricInterpretation", "")).strip().upper() == "MONOCHROME1":
        steps.append(_invert)
    return map_bands(stored, steps)


def _invert(unit: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return 1.0 - unit


def radiograph_png(
    path: Path,
    *,
    center: float | None = None,
    width: float | None = None,
    max_side: int = MAX_SIDE,
    limits: ImageLimits = DEFAULT_LIMITS,
) -> bytes:
    """The image windowed (its own VOI LUT/window, else a percentile window; or the given
    ``center``/``width``), MONOCHROME1 inverted, at most ``max_side`` pixels on its long side.

    Raises ``models.errors.NotAnalysable`` or ``ValueError`` for pixel data it cannot show;
    an image beyond ``limits`` is refused ("image too large") before anything is decoded.
    """
    ds = read_image(path, limits)  # the header is checked before the pixel data is read
    if int(ds.get("SamplesPerPixel", 1)) == 3:  # a colour capture: shown as it is
        check_image_size(ds, limits)
        rgb = np.asarray(convert_color_space(ds.pixel_array, ds.PhotometricInterpretation, "RGB"))
        image = Image.fromarray(rgb.astype(np.uint8), mode="RGB")
    else:
        unit = _unit(ds, center, width, limits)
        grey = np.empty(unit.shape, dtype=np.uint8)
        band = max(1, (1 << 21) // max(1, unit.shape[1]))
        for row in range(0, unit.shape[0], band):  # no full-size float temporaries
            grey[row : row + band] = np.clip(unit[row : row + band], 0.0, 1.0) * 255.0 + 0.5
        del unit
        image = Image.fromarray(grey, mode="L")
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _colormap(v: npt.NDArray[np.float32]) -> npt.NDArray[np.uint8]:
    """The overlay_style ramp as RGBA: blue at the threshold to cyan at 1.0, with the opacity
    the burned-in captures blend with; fully transparent at or below the threshold."""
    rgba = np.zeros((*v.shape, 4), dtype=np.uint8)
    mask, colour, alpha = heatmap_colours(v)
    rgba[mask, :3] = np.clip(np.rint(colour), 0, 255).astype(np.uint8)
    rgba[mask, 3] = np.clip(np.rint(alpha * 255.0), 0, 255).astype(np.uint8)
    return rgba


def heatmap_overlay_png(path: Path) -> bytes:
    """The stored greyscale heatmap (see ``xrayd.pipeline.analyse.heatmap_png``) as a coloured,
    translucent RGBA PNG to lay over the radiograph, in the colours of the Secondary Capture
    (:func:`dicom_node.overlay_style.heatmap_colours`)."""
    with Image.open(path) as stored:
        grey = np.asarray(stored.convert("L"), dtype=np.float32) / 255.0
    image = Image.fromarray(_colormap(grey), mode="RGBA")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
