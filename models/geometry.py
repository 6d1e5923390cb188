"""Where the model input came from in the source image.

Coordinates are continuous ``(y, x)`` = ``(row, column)`` positions in which pixel ``(i, j)``
covers ``[i, i + 1) x [j, j + 1)``; the centre of input pixel ``(i, j)`` is ``(i + 0.5, j + 0.5)``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Geometry:
    """Crop, uniform scale and padding that turned source pixels into the model input.

    ``crop`` is ``(row0, col0, row1, col1)`` in source pixels, half-open. The cropped region was
    scaled by ``scale`` (input pixels per source pixel) to ``content_rows x content_cols`` and
    placed at ``(pad_top, pad_left)`` in an ``input_size x input_size`` square of zeros.
    """

    source_rows: int
    source_cols: int
    crop: tuple[int, int, int, int]
    scale: float
    pad_top: int
    pad_left: int
    input_size: int
    content_rows: int
    content_cols: int

    def __post_init__(self) -> None:
        row0, col0, row1, col1 = self.crop
        if not (0 <= row0 < row1 <= self.source_rows and 0 <= col0 < col1 <= self.source_cols):
            raise ValueError(
                f"crop {self.crop} outside a {self.source_rows}x{self.source_cols} image"
            )
        if self.scale <= 0:
            raise ValueError("scale must be positive")
        if not (
            self.pad_top >= 0
            and self.pad_left >= 0
            and self.pad_top + self.content_rows <= self.input_size
            and self.pad_left + self.content_cols <= self.input_size
        ):
            raise ValueError("content does not fit in the input square")

    def to_source(self, y: float, x: float) -> tuple[float, float]:
        """Map an input coordinate to a source pixel coordinate (not clipped)."""
        return (
            self.crop[0] + (y - self.pad_top) / self.scale,
            self.crop[1] + (x - self.pad_left) / self.scale,
        )

    def to_input(self, y: float, x: float) -> tuple[float, float]:
        """Map a source pixel coordinate to an input coordinate (not clipped)."""
        return (
            self.pad_top + (y - self.crop[0]) * self.scale,
            self.pad_left + (x - self.crop[1]) * self.scale,
        )

    def box_to_source(
        self, y0: float, x0: float, y1: float, x1: float
    ) -> tuple[float, float, float, float]:
        """Map an input box to source coordinates, ordered and clipped to the crop box."""
        a_y, a_x = self.to_source(y0, x0)
        b_y, b_x = self.to_source(y1, x1)
        row0, col0, row1, col1 = self.crop
        return (
            _clip(min(a_y, b_y), row0, row1),
            _clip(min(a_x, b_x), col0, col1),
            _clip(max(a_y, b_y), row0, row1),
            _clip(max(a_x, b_x), col0, col1),
        )

    def box_to_input(
        self, y0: float, x0: float, y1: float, x1: float
    ) -> tuple[float, float, float, float]:
        """Map a source box to input coordinates, ordered and clipped to the image content."""
        a_y, a_x = self.to_input(y0, x0)
        b_y, b_x = self.to_input(y1, x1)
        top, left = self.pad_top, self.pad_left
        bottom, right = top + self.content_rows, left + self.content_cols
        return (
            _clip(min(a_y, b_y), top, bottom),
            _clip(min(a_x, b_x), left, right),
            _clip(max(a_y, b_y), top, bottom),
            _clip(max(a_x, b_x), left, right),
        )


def _clip(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)
