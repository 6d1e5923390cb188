"""What the result objects say: plain data handed from the analysis job to the DICOM builders.

``dicom_node`` does not import ``models`` (see DESIGN.md): the job (``xrayd``) converts the
classifier's predictions into these frozen dataclasses, and the SR, Secondary Capture and PDF
builders read only these and the source images' headers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, get_args

__all__ = [
    "Algorithm",
    "Box",
    "Decision",
    "ImageFinding",
    "NotAnalysed",
    "RadiologistReview",
    "StudyFindings",
]

Decision = Literal["present", "absent", "indeterminate"]
CountClass = Literal["0", "1", "2+"]
Presence = Literal["present", "absent"]

#: Not in a PN component of xrayd's making: the value and component group delimiters
#: (backslash, "="), the component delimiter ("^": the login name is the family name alone)
#: and control characters.
_PN_FORBIDDEN = re.compile(r"[\\^=\x00-\x1f\x7f-\x9f]")
#: Not in an LO value (Verifying Organization, Person Observer's Organization Name).
_LO_FORBIDDEN = re.compile(r"[\\\x00-\x1f\x7f-\x9f]")
#: Not in a UT value (the comment): control characters other than TAB, LF, FF and CR.
_UT_FORBIDDEN = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f]")
#: A PN component group holds at most 64 characters: the login name and its "^".
_MAX_LOGIN = 63
_MAX_LO = 64


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


@dataclass(frozen=True)
class RadiologistReview:
    """A radiologist's verdict on the AI result: what makes the SR a verified one.

    ``observer_name`` is the radiologist's login name; it becomes the family name component of
    the Verifying Observer Name and Person Observer Name (:attr:`person_name`), so it must be
    a valid PN component: no backslash, "^", "=" or control characters, at most 63 characters.
    ``when`` (timezone-aware) is the Verification DateTime. ``fracture``, ``count``,
    ``body_part`` and ``hardware`` are the radiologist's labels for the study; ``agree`` says
    whether they agree with the AI result the verified SR supersedes.
    """

    observer_name: str
    organization: str
    when: datetime
    agree: bool
    fracture: Presence
    count: CountClass
    body_part: str
    hardware: bool
    comment: str | None = None

    def __post_init__(self) -> None:
        _check_text("observer_name", self.observer_name, _PN_FORBIDDEN, _MAX_LOGIN)
        _check_text("organization", self.organization, _LO_FORBIDDEN, _MAX_LO)
        if self.when.tzinfo is None or self.when.utcoffset() is None:
            raise ValueError("the review time must be timezone-aware")
        if self.fracture not in get_args(Presence):
            raise ValueError(f"fracture must be present or absent, got {self.fracture!r}")
        if self.count not in get_args(CountClass):
            raise ValueError(f"unknown fracture count class {self.count!r}")
        if not self.body_part:
            raise ValueError("the body part must not be empty")
        if self.comment is not None and _UT_FORBIDDEN.search(self.comment):
            raise ValueError("the comment must not contain control characters")

    @property
    def person_name(self) -> str:
        """The PN value: the login name as the family name component (``"jdoe^"``)."""
        return f"{self.observer_name}^"


def _check_text(field_name: str, value: str, forbidden: re.Pattern[str], limit: int) -> None:
    if not value.strip():
        raise ValueError(f"{field_name} must not be empty")
    if value != value.strip():
        raise ValueError(f"{field_name} must not start or end with spaces")
    if len(value) > limit:
        raise ValueError(f"{field_name} must be at most {limit} characters")
    if forbidden.search(value):
        raise ValueError(f"{field_name} contains a character not allowed in DICOM")
