"""A grid of model inputs with their true and predicted boxes, as one PNG (Pillow only).

Each tile is one model input (greyscale, scaled to ``tile`` pixels square) with the true
fracture boxes in green, the predicted boxes in orange on top, and a caption below it (lines
separated by ``\\n``; each line is shortened to the tile's width). Boxes are ``(row0, col0,
row1, col1)`` half-open in the input's pixels, like :mod:`models.localisation_metrics`.

Layout: ``min(columns, n)`` tiles per row, each in a cell of ``tile + 2 * MARGIN`` by
``tile + caption height + 2 * MARGIN`` pixels (:func:`grid_size`); the tile's top-left corner
is ``MARGIN`` pixels into its cell.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont

from models.report_plots import _atomic_write

__all__ = [
    "BACKGROUND",
    "CAPTION_LINES",
    "LINE_HEIGHT",
    "MARGIN",
    "PREDICTED_COLOUR",
    "TRUE_COLOUR",
    "Thumbnail",
    "grid_size",
    "thumbnail_grid",
    "tile_origin",
    "write_thumbnail_grid",
]

TRUE_COLOUR = (0, 200, 0)
PREDICTED_COLOUR = (255, 140, 0)
BACKGROUND = (24, 24, 24)
TEXT_COLOUR = (235, 235, 235)
MARGIN = 4
LINE_HEIGHT = 13
CAPTION_LINES = 2
BOX_WIDTH = 2
TILE = 192

Box = tuple[float, float, float, float]


@dataclass(frozen=True, eq=False)
class Thumbnail:
    """One tile: ``pixels`` 2-D (uint8, or floats in [0, 1]), boxes in its pixels, caption."""

    pixels: npt.NDArray[np.generic]
    true_boxes: tuple[Box, ...]
    predicted_boxes: tuple[Box, ...]
    caption: str


def _caption_height() -> int:
    return CAPTION_LINES * LINE_HEIGHT + 2


def grid_size(count: int, *, columns: int = 4, tile: int = TILE) -> tuple[int, int]:
    """``(width, height)`` in pixels of a grid of ``count`` tiles."""
    if count < 1 or columns < 1 or tile < 8:
        raise ValueError("need at least one tile, one column and tiles of 8 pixels or more")
    cols = min(columns, count)
    rows = math.ceil(count / cols)
    return cols * (tile + 2 * MARGIN), rows * (tile + _caption_height() + 2 * MARGIN)


def tile_origin(index: int, *, columns: int, count: int, tile: int = TILE) -> tuple[int, int]:
    """``(x, y)`` of the top-left corner of tile ``index`` in the grid."""
    cols = min(columns, count)
    row, col = divmod(index, cols)
    return (
        col * (tile + 2 * MARGIN) + MARGIN,
        row * (tile + _caption_height() + 2 * MARGIN) + MARGIN,
    )


def _grey(pixels: npt.NDArray[np.generic]) -> Image.Image:
    array = np.asarray(pixels)
    if array.ndim != 2 or array.size == 0:
        raise ValueError(f"a thumbnail needs 2-D pixels, got shape {array.shape}")
    if array.dtype != np.uint8:
        values = np.nan_to_num(array.astype(np.float64), nan=0.0)
        array = np.rint(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(array), mode="L")


def _rectangle(
    box: Sequence[float], scale_y: float, scale_x: float, x: int, y: int, tile: int
) -> tuple[int, int, int, int] | None:
    """The tile's pixels ``[left, right] x [top, bottom]`` (inclusive, as Pillow draws) of a
    half-open box, clipped to the tile; ``None`` for an empty box."""
    r0, c0, r1, c1 = (float(v) for v in box)
    if c1 <= c0 or r1 <= r0:
        return None
    left = max(0, min(tile - 1, round(c0 * scale_x)))
    top = max(0, min(tile - 1, round(r0 * scale_y)))
    right = max(left, min(tile - 1, round(c1 * scale_x) - 1))
    bottom = max(top, min(tile - 1, round(r1 * scale_y) - 1))
    return (x + left, y + top, x + right, y + bottom)


def _fit(
    draw: ImageDraw.ImageDraw,
    text: str,
    font: ImageFont.ImageFont | ImageFont.FreeTypeFont,
    width: int,
) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def thumbnail_grid(thumbnails: Sequence[Thumbnail], *, columns: int = 4, tile: int = TILE) -> bytes:
    """The grid (see the module docstring) as PNG bytes. Raises ``ValueError`` without tiles."""
    width, height = grid_size(len(thumbnails), columns=columns, tile=tile)
    canvas = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for index, thumb in enumerate(thumbnails):
        x, y = tile_origin(index, columns=columns, count=len(thumbnails), tile=tile)
        grey = _grey(thumb.pixels)
        rows, cols = grey.height, grey.width
        canvas.paste(grey.resize((tile, tile), Image.Resampling.BILINEAR).convert("RGB"), (x, y))
        for boxes, colour in (
            (thumb.true_boxes, TRUE_COLOUR),
            (thumb.predicted_boxes, PREDICTED_COLOUR),
        ):
            for box in boxes:
                rect = _rectangle(box, tile / rows, tile / cols, x, y, tile)
                if rect is not None:
                    draw.rectangle(rect, outline=colour, width=BOX_WIDTH)
        lines = thumb.caption.splitlines()[:CAPTION_LINES]
        for k, line in enumerate(lines):
            draw.text(
                (x, y + tile + 2 + k * LINE_HEIGHT),
                _fit(draw, line, font, tile),
                fill=TEXT_COLOUR,
                font=font,
            )
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return buffer.getvalue()


def write_thumbnail_grid(
    path: Path, thumbnails: Sequence[Thumbnail], *, columns: int = 4, tile: int = TILE
) -> Path:
    """Write :func:`thumbnail_grid` to ``path`` atomically (temporary file, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, thumbnail_grid(thumbnails, columns=columns, tile=tile))
    return path
