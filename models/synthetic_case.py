"""The labelled synthetic radiograph and its label vocabulary."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

#: MURA's seven upper-extremity studies, FracAtlas's hand/leg/hip/shoulder, and "other".
BODY_PARTS: tuple[str, ...] = (
    "elbow",
    "finger",
    "forearm",
    "hand",
    "humerus",
    "shoulder",
    "wrist",
    "leg",
    "hip",
    "other",
)

#: Bits used by :attr:`SyntheticCase.image` (values 0 .. 4095).
SYNTHETIC_BITS = 12

Box = tuple[int, int, int, int]


@dataclass(frozen=True, eq=False)
class SyntheticCase:
    """A synthetic radiograph with its labels.

    ``image``: uint16, ``SYNTHETIC_BITS`` bits, MONOCHROME2 (bone bright), read-only.
    ``fracture_count``: 0, 1, or 2 meaning "two or more". ``boxes``: one
    ``(row0, col0, row1, col1)`` pixel box (half-open) per fracture. ``field``: the
    collimated (exposed) field, same convention. ``laterality``: ``"L"`` or ``"R"``;
    ``view``: ``"AP"`` or ``"PA"``. ``seed`` and the size regenerate the same case.
    """

    seed: int
    image: npt.NDArray[np.uint16]
    fracture: bool
    fracture_count: int
    body_part: str
    hardware: bool
    boxes: tuple[Box, ...]
    field: Box
    laterality: str
    view: str
    paediatric: bool

    def __post_init__(self) -> None:
        if self.body_part not in BODY_PARTS:
            raise ValueError(f"unknown body part {self.body_part!r}")
        if self.fracture != (self.fracture_count > 0) or self.fracture != bool(self.boxes):
            raise ValueError("fracture, fracture_count and boxes disagree")
        if self.fracture_count not in (0, 1, 2) or (self.fracture_count != min(len(self.boxes), 2)):
            raise ValueError("fracture_count must be min(number of boxes, 2)")
