"""A model-input heatmap mapped back onto the source image's pixel grid (for overlays)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from PIL import Image

from models.geometry import Geometry

__all__ = ["heatmap_to_source"]


def heatmap_to_source(
    heatmap: npt.NDArray[np.float32], geometry: Geometry
) -> npt.NDArray[np.float32]:
    """``heatmap`` (input_size square) -> (source_rows, source_cols), zero outside the crop.

    The padding is dropped, the content is resized (bilinear) to the crop box and placed at
    the crop's position in the source image.
    """
    size = geometry.input_size
    if heatmap.shape != (size, size):
        raise ValueError(f"heatmap is {heatmap.shape}, the geometry expects {size}x{size}")
    top, left = geometry.pad_top, geometry.pad_left
    content = heatmap[top : top + geometry.content_rows, left : left + geometry.content_cols]
    row0, col0, row1, col1 = geometry.crop
    resized = Image.fromarray(np.ascontiguousarray(content, dtype=np.float32), mode="F").resize(
        (col1 - col0, row1 - row0), Image.Resampling.BILINEAR
    )
    out = np.zeros((geometry.source_rows, geometry.source_cols), dtype=np.float32)
    region = out[row0:row1, col0:col1]
    region[...] = np.asarray(resized, dtype=np.float32)
    del resized
    np.clip(region, 0.0, 1.0, out=region)  # in place: no further full-size copy
    return out
