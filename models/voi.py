"""Values of interest: VOI LUT, window centre/width, or a percentile window, mapped to [0, 1].

The output is before any MONOCHROME1 inversion (DICOM applies the Presentation LUT after VOI).
Only the first of several windows or VOI LUTs is used, as pydicom's ``index=0`` does and as
PS3.3 C.11.2.1.2 suggests (the first is the default presentation).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Literal, cast

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

logger = logging.getLogger(__name__)

VoiSource = Literal["voi_lut", "window", "percentile"]
WindowFunction = Literal["LINEAR", "LINEAR_EXACT", "SIGMOID"]
F64 = npt.NDArray[np.float64]


def window_unit(
    values: npt.NDArray[np.floating] | npt.NDArray[np.integer],
    center: float,
    width: float,
    function: WindowFunction = "LINEAR",
) -> F64:
    """PS3.3 C.11.2.1.2 windowing with the output range scaled to [0, 1].

    Equals pydicom's ``apply_windowing`` up to its affine output scaling.
    """
    x = np.asarray(values, dtype=np.float64)
    if function == "LINEAR":
        if width < 1:
            raise ValueError("LINEAR window width must be >= 1")
        if width == 1:
            return np.where(x > center - 0.5, 1.0, 0.0)
        out = (x - (center - 0.5)) / (width - 1) + 0.5
    elif function == "LINEAR_EXACT":
        if width <= 0:
            raise ValueError("LINEAR_EXACT window width must be > 0")
        out = (x - center) / width + 0.5
    elif function == "SIGMOID":
        if width <= 0:
            raise ValueError("SIGMOID window width must be > 0")
        exponent = np.clip(-4.0 * (x - center) / width, -700.0, 700.0)
        return np.asarray(1.0 / (1.0 + np.exp(exponent)), dtype=np.float64)
    else:  # pragma: no cover - guarded by the Literal type and by the caller
        raise ValueError(f"unknown VOI LUT function {function!r}")
    return np.asarray(np.clip(out, 0.0, 1.0), dtype=np.float64)


def linear_unit(values: npt.NDArray[np.floating], low: float, high: float) -> F64:
    """Map ``[low, high]`` linearly to [0, 1], clipping outside."""
    x = np.asarray(values, dtype=np.float64)
    if high <= low:
        return np.zeros_like(x)
    return np.asarray(np.clip((x - low) / (high - low), 0.0, 1.0), dtype=np.float64)


#: percentile windows are taken on about this many pixels (every n-th in raster order)
PERCENTILE_SAMPLE = 1_000_000
#: rows of an image handled at a time by the element-wise steps (about 2 M pixels)
BLOCK_PIXELS = 1 << 21


def _every_nth(values: npt.NDArray[Any], valid: npt.NDArray[np.bool_] | None) -> npt.NDArray[Any]:
    """``values[valid][::step]`` (or ``values.ravel()[::step]``) with ``step`` chosen to keep
    about :data:`PERCENTILE_SAMPLE` pixels, read a band of rows at a time: no full-size copy
    of a (cropped, non-contiguous) image or of its masked pixels."""
    rows, cols = values.shape
    count = int(np.count_nonzero(valid)) if valid is not None else values.size
    if valid is not None and count == 0:
        return _every_nth(values, None)
    step = max(1, count // PERCENTILE_SAMPLE)
    band = max(1, BLOCK_PIXELS // max(cols, 1))
    parts: list[npt.NDArray[Any]] = []
    seen = 0  # pixels (valid ones, with a mask) before this band, in raster order
    for row in range(0, rows, band):
        block = values[row : row + band]
        if valid is None:
            flat = np.arange((-seen) % step, block.size, step)
            parts.append(block[flat // cols, flat % cols])
            seen += block.size
        else:
            where = np.flatnonzero(valid[row : row + band])
            picked = where[(-seen) % step :: step]
            parts.append(block[picked // cols, picked % cols])
            seen += where.size
    return np.concatenate(parts) if parts else values.ravel()


def percentile_window(
    values: npt.NDArray[Any],
    low_pct: float,
    high_pct: float,
    valid: npt.NDArray[np.bool_] | None = None,
    *,
    transform: Callable[[npt.NDArray[Any]], npt.NDArray[np.floating]] | None = None,
) -> tuple[float, float]:
    """Robust window: the ``low_pct``/``high_pct`` percentiles of the (valid) values.

    ``transform`` (element-wise, e.g. the Modality LUT) is applied to the sampled pixels only,
    so ``values`` may be the stored integers rather than a full-size float image.
    """
    # Subsample large images: percentiles of ~1 M pixels are as good and much cheaper.
    sample = _every_nth(values, valid)
    sample = transform(sample) if transform is not None else sample
    low, high = np.percentile(np.asarray(sample, dtype=np.float64), [low_pct, high_pct])
    return float(low), float(high)


def _first(value: Any) -> float:
    if isinstance(value, MultiValue | list | tuple):
        return float(value[0])
    return float(value)


def _lut_table(item: Dataset, ds: Dataset, entries: int) -> npt.NDArray[np.int64] | None:
    """The LUT Data of a VOI LUT item as integers (US values or OW words)."""
    data = item.get("LUTData")
    if data is None:
        return None
    if isinstance(data, bytes | bytearray):
        little = ds.original_encoding[1]
        if little is None:
            meta = getattr(ds, "file_meta", None)
            syntax = meta.get("TransferSyntaxUID") if meta is not None else None
            little = syntax is None or syntax.is_little_endian
        words = np.frombuffer(bytes(data)[: 2 * entries], dtype="<u2" if little else ">u2")
        return words.astype(np.int64)
    values = [data] if isinstance(data, int) else list(data)
    return np.asarray(values[:entries], dtype=np.int64)


UnitFunction = Callable[[npt.NDArray[np.floating]], F64]


def _voi_lut_function(ds: Dataset) -> UnitFunction | None:
    """The first VOI LUT (PS3.3 C.11.2.1.1), its output range scaled to [0, 1], as an
    element-wise function; ``None`` when it is unusable.

    Done here rather than with pydicom's ``apply_voi``, which indexes 8-bit LUTs of more than
    256 entries through a uint8 array (the indices wrap).
    """
    item = ds.VOILUTSequence[0]
    descriptor = item.get("LUTDescriptor")
    if descriptor is None or len(descriptor) != 3:
        return None
    entries = int(descriptor[0]) or 65536
    first = int(descriptor[1])
    table = _lut_table(item, ds, entries)
    if table is None or table.size == 0:
        return None
    low, high = float(table.min()), float(table.max())
    if high <= low:
        return None
    lut = table

    def apply(values: npt.NDArray[np.floating]) -> F64:
        index = np.clip(np.rint(values) - first, 0, lut.size - 1).astype(np.intp)
        return linear_unit(lut[index].astype(np.float64), low, high)

    return apply


def voi_function(ds: Dataset) -> tuple[UnitFunction, VoiSource] | None:
    """The dataset's first VOI LUT, else its first window, as an element-wise function of
    Modality LUT output values to [0, 1]; ``None`` when it has neither (or they are unusable).

    A VOI LUT is preferred over a window when both are present (pydicom's ``prefer_lut=True``).
    The LUT output is scaled by the range of the LUT's own data (some devices declare 16 bits
    and use 12). Being element-wise, it can be applied to a part of an image at a time.
    """
    if ds.get("VOILUTSequence"):
        try:
            lut = _voi_lut_function(ds)
        except (AttributeError, TypeError, ValueError, IndexError) as exc:  # malformed (fuzzing)
            logger.warning("unusable VOI LUT (%s); trying the window", type(exc).__name__)
            lut = None
        if lut is not None:
            return lut, "voi_lut"
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center is None or width is None:
        return None
    function = str(ds.get("VOILUTFunction") or "LINEAR").strip().upper()
    if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
        logger.warning("unknown VOI LUT function; using LINEAR")
        function = "LINEAR"
    try:
        c, w, f = _first(center), _first(width), cast(WindowFunction, function)
        window_unit(np.zeros(1), c, w, f)  # the same checks as on the image itself
    except (ValueError, TypeError, IndexError) as exc:
        logger.warning("unusable window (%s); falling back to a percentile window", exc)
        return None

    def apply(values: npt.NDArray[np.floating]) -> F64:
        return window_unit(values, c, w, f)

    return apply, "window"


def voi_unit(values: npt.NDArray[np.floating], ds: Dataset) -> tuple[F64, VoiSource] | None:
    """Apply the dataset's first VOI LUT, else its first window; ``None`` when it has neither.

    ``values`` are Modality LUT output values. See :func:`voi_function`.
    """
    found = voi_function(ds)
    if found is None:
        return None
    function, source = found
    return function(values), source
