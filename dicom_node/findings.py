"""What the result objects say: plain data handed from the analysis job to the DICOM builders.

``dicom_node`` does not import ``models`` (see DESIGN.md): the job (``xrayd``) converts the
classifier's predictions into these frozen dataclasses, and the SR, Secondary Capture and PDF
builders read only these and the source images' headers.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "Algorithm",
    "Box",
    "Decision",
    "ImageFinding",
    "NotAnalysed",
    "StudyFindings",
]

Decision = Literal["present", "absent", "indeterminate"]
CountClass = Literal["0", "1", "2+"]


@dataclass(frozen=True)
class Box:
    """A region in source-image pixels: pixel (r, c) covers [r, r+1) x [c, c+1)."""

    row0: float
    col0: float
    row1: float
    col1: float

    def __post_init__(self) -> None:
        if not (0 <= self.row0 < self.row1 and 0 <= self.col0 < self.col1):
            raise ValueError(f"empty or negative box {self}")


@dataclass(frozen=True)
class ImageFinding:
    """The AI result for one analysed source image."""

    sop_instance_uid: str
    sop_class_uid: str
    series_instance_uid: str
    rows: int
    columns: int
    decision: Decision
    fracture_probability: float
    count: CountClass
    body_part: str
    body_part_probability: float
    hardware: bool
    hardware_probability: float
    boxes: tuple[Box, ...] = ()


@dataclass(frozen=True)
class NotAnalysed:
    """A source instance of the study that the model did not analyse, and why (no PHI)."""

    sop_instance_uid: str
    sop_class_uid: str
    reason: str


@dataclass(frozen=True)
class Algorithm:
    """The model that produced the findings (TID 4019 Algorithm Identification)."""

    name: str
    version: str
    weights_sha256: str
    parameters: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StudyFindings:
    """Everything one analysis of one study found."""

    study_instance_uid: str
    decision: Decision
    fracture_probability: float
    images: tuple[ImageFinding, ...]
    not_analysed: tuple[NotAnalysed, ...]
    algorithm: Algorithm
