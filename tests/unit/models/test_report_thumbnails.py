"""models.report_thumbnails: a PNG grid of inputs with true (green) and predicted (orange) boxes."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from models.report_thumbnails import (
    BACKGROUND,
    PREDICTED_COLOUR,
    TRUE_COLOUR,
    Thumbnail,
    grid_size,
    thumbnail_grid,
    tile_origin,
    write_thumbnail_grid,
)

TILE = 64  # inputs of 32 pixels: every box coordinate doubles


def _thumbs() -> list[Thumbnail]:
    black = np.zeros((32, 32), dtype=np.uint8)
    grey = np.full((32, 32), 0.5, dtype=np.float32)
    return [
        Thumbnail(black, ((8.0, 8.0, 24.0, 24.0),), ((26.0, 2.0, 30.0, 10.0),), "a.jpg\np 0.1"),
        Thumbnail(grey, (), ((4.0, 20.0, 12.0, 28.0),), "b.jpg\np 0.9 present"),
        Thumbnail(black, (), (), "c.jpg"),
        Thumbnail(black, (), (), "d.jpg"),
        Thumbnail(black, (), (), "a-very-long-file-name-that-does-not-fit.jpg\nsecond\nthird"),
    ]


def _decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image.convert("RGB")


def test_grid_has_the_expected_size_and_decodes() -> None:
    data = thumbnail_grid(_thumbs(), columns=4, tile=TILE)
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    image = _decode(data)
    width, height = grid_size(5, columns=4, tile=TILE)
    assert image.size == (width, height)
    assert width == 4 * (TILE + 8)  # four columns, a margin of 4 on each side of a tile
    assert height > 2 * TILE  # two rows with captions
    assert grid_size(3, columns=4, tile=TILE)[0] == 3 * (TILE + 8)
    assert image.getpixel((width - 1, height - 1)) == BACKGROUND  # the empty eighth cell


def test_boxes_are_drawn_in_their_colours_at_their_places() -> None:
    image = _decode(thumbnail_grid(_thumbs(), columns=4, tile=TILE))
    x, y = tile_origin(0, columns=4, count=5, tile=TILE)
    assert (x, y) == (4, 4)
    # True box (8, 8, 24, 24) -> tile pixels 16..47 on both axes.
    for point in [(16, 30), (47, 30), (30, 16), (30, 47), (16, 16), (47, 47)]:
        assert image.getpixel((x + point[0], y + point[1])) == TRUE_COLOUR, point
    assert image.getpixel((x + 30, y + 30)) == (0, 0, 0)  # inside: the image
    # The outline is 2 pixels wide, inside the box: columns 16-17 and 46-47.
    assert image.getpixel((x + 17, y + 30)) == TRUE_COLOUR
    assert image.getpixel((x + 46, y + 30)) == TRUE_COLOUR
    assert image.getpixel((x + 15, y + 30)) == (0, 0, 0)  # outside the outline
    assert image.getpixel((x + 48, y + 30)) == (0, 0, 0)
    assert image.getpixel((x + 18, y + 30)) == (0, 0, 0)  # inside the outline
    assert image.getpixel((x + 30, y + 48)) == (0, 0, 0)
    # Predicted box (26, 2, 30, 10) -> rows 52..59, columns 4..19.
    for point in [(4, 55), (19, 55), (10, 52), (10, 59)]:
        assert image.getpixel((x + point[0], y + point[1])) == PREDICTED_COLOUR, point
    assert image.getpixel((x + 10, y + 56)) != PREDICTED_COLOUR  # hollow

    x, y = tile_origin(1, columns=4, count=5, tile=TILE)
    assert x == 4 + TILE + 8 and y == 4
    assert image.getpixel((x + 8, y + 8)) == (128, 128, 128)  # the grey input
    # Predicted box (4, 20, 12, 28) -> rows 8..23, columns 40..55.
    assert image.getpixel((x + 40, y + 15)) == PREDICTED_COLOUR
    assert image.getpixel((x + 48, y + 8)) == PREDICTED_COLOUR
    assert image.getpixel((x + 30, y + 15)) == (128, 128, 128)
    assert TRUE_COLOUR not in {image.getpixel((x + i, y + j)) for i in range(TILE) for j in (8, 15)}

    x, y = tile_origin(4, columns=4, count=5, tile=TILE)
    assert (x, y) == (4, 4 + grid_size(1, tile=TILE)[1])  # second row, first column


def test_predicted_boxes_are_drawn_over_true_boxes() -> None:
    box = (8.0, 8.0, 24.0, 24.0)
    thumb = Thumbnail(np.zeros((32, 32), dtype=np.uint8), (box,), (box,), "same")
    image = _decode(thumbnail_grid([thumb], tile=TILE))
    assert image.size == grid_size(1, tile=TILE)
    assert image.getpixel((4 + 16, 4 + 30)) == PREDICTED_COLOUR


def test_no_tiles_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least one tile"):
        thumbnail_grid([])
    with pytest.raises(ValueError, match="2-D"):
        thumbnail_grid([Thumbnail(np.zeros((2, 4, 4)), (), (), "x")])


def test_write_is_atomic_and_readable(tmp_path: Path) -> None:
    target = tmp_path / "out" / "worst.png"
    written = write_thumbnail_grid(target, _thumbs()[:2], tile=TILE)
    assert written == target
    assert target.read_bytes() == thumbnail_grid(_thumbs()[:2], tile=TILE)
    assert [p.name for p in target.parent.iterdir()] == ["worst.png"]
    assert target.stat().st_mode & 0o777 == 0o644
