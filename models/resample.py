"""Area-averaging resize and letterboxing with numpy (no torch, no image libraries)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.floating]


@dataclass(frozen=True, eq=False)
class Letterboxed:
    """An image resized into a square, with where its content landed."""

    pixels: npt.NDArray[np.float32]
    scale: float
    pad_top: int
    pad_left: int
    content_rows: int
    content_cols: int


#: rows of the source converted to float64 at a time (about 2 M values)
BLOCK_VALUES = 1 << 21


def _resize_axis0(image: FloatArray, scale: float, size: int) -> npt.NDArray[np.float64]:
    """Resize along axis 0: output row ``i`` averages source rows over ``[i/scale, (i+1)/scale)``.

    Exact box-filter (area) averaging through the cumulative integral of the rows, so a
    downscale by any real factor costs one pass over the data. The integral is accumulated a
    band of rows at a time (the running sum carried from band to band, so the sums are the same
    as in one pass) and kept only at the rows the output needs: no full-size float64 copy.
    """
    n = image.shape[0]
    tail = image.shape[1:]
    edges = np.clip(np.arange(size + 1, dtype=np.float64) / scale, 0.0, float(n))
    index = np.minimum(np.floor(edges).astype(np.intp), n - 1)
    integral_at = np.empty((size + 1, *tail), dtype=np.float64)
    data_at = np.empty((size + 1, *tail), dtype=np.float64)
    band = max(1, BLOCK_VALUES // max(1, int(np.prod(tail))))
    running = np.zeros((1, *tail), dtype=np.float64)
    for start in range(0, n, band):
        stop = min(n, start + band)
        data = np.asarray(image[start:stop], dtype=np.float64)
        integral = np.cumsum(np.concatenate([running, data]), axis=0)  # rows start..stop
        wanted = np.flatnonzero((index >= start) & (index < stop))
        integral_at[wanted] = integral[index[wanted] - start]
        data_at[wanted] = data[index[wanted] - start]
        running = integral[-1:]
    frac = (edges - index).reshape(-1, *([1] * len(tail)))
    at_edges = integral_at + frac * data_at
    widths = np.diff(edges).reshape(-1, *([1] * len(tail)))
    return np.asarray(np.diff(at_edges, axis=0) / widths, dtype=np.float64)


def area_resize(image: FloatArray, scale: float, rows: int, cols: int) -> npt.NDArray[np.float64]:
    """Resize a 2-D image by ``scale`` (output pixels per input pixel) to ``rows x cols``."""
    if image.ndim != 2 or min(image.shape) < 1:
        raise ValueError("expected a non-empty 2-D image")
    if scale <= 0 or rows < 1 or cols < 1:
        raise ValueError("scale and output size must be positive")
    out = _resize_axis0(image, scale, rows)
    return _resize_axis0(out.T, scale, cols).T


def letterbox(image: FloatArray, size: int) -> Letterboxed:
    """Scale ``image`` uniformly so its longer side is ``size``, centred on a square of zeros."""
    if size < 1:
        raise ValueError("size must be positive")
    rows_in, cols_in = image.shape
    scale = size / max(rows_in, cols_in)
    rows = min(size, max(1, round(rows_in * scale)))
    cols = min(size, max(1, round(cols_in * scale)))
    top, left = (size - rows) // 2, (size - cols) // 2
    out = np.zeros((size, size), dtype=np.float32)
    out[top : top + rows, left : left + cols] = area_resize(image, scale, rows, cols)
    return Letterboxed(out, scale, top, left, rows, cols)
