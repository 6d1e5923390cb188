"""One labelled image of a training dataset, where its pixels come from, and its label codes.

Every loader (MURA, FracAtlas, a CSV folder, the synthetic generator) produces
:class:`ImageRecord` objects; splitting, preparation and the torch dataset only see those.
A label a dataset does not provide is ``None`` here and becomes the "missing" code of
:class:`models.losses.Targets` (see :func:`label_codes`), so the masked loss ignores it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from models.labels import BODY_PARTS, COUNT_CLASSES
from models.synthetic import SyntheticCase

__all__ = [
    "MISSING",
    "FileImage",
    "GeneratedImage",
    "ImageRecord",
    "ImageSource",
    "LabelCodes",
    "count_class",
    "label_codes",
]

#: The code of a missing label in :class:`models.losses.Targets` (every head masks ``< 0``).
MISSING = -1


@dataclass(frozen=True)
class FileImage:
    """Pixels in a file: DICOM (recognised by its ``DICM`` preamble) or a PNG/JPEG picture."""

    path: Path

    def __str__(self) -> str:
        return str(self.path)


@dataclass(frozen=True, eq=False)
class GeneratedImage:
    """Pixels of a synthetic case, held in memory (``size**2 * 2`` bytes per case)."""

    case: SyntheticCase

    def __str__(self) -> str:
        return f"synthetic case {self.case.seed}"


#: Where a record's pixels come from.
ImageSource = FileImage | GeneratedImage


def count_class(n: int) -> int:
    """The fracture-count class of ``n`` fractures: 0, 1, or 2 meaning "two or more"."""
    if n < 0:
        raise ValueError(f"a fracture count cannot be negative, got {n}")
    return min(n, len(COUNT_CLASSES) - 1)


@dataclass(frozen=True)
class ImageRecord:
    """One image with what is known about it; ``None`` means "not labelled".

    ``patient_id`` and ``study_id`` are as the dataset names them (unique within ``source``);
    the split keys on ``(source, patient_id)``. ``fracture`` is the fracture label (for MURA a
    proxy: its label is "abnormal"), ``count`` the count class (0, 1, 2 = two or more),
    ``body_part`` one of :data:`models.labels.BODY_PARTS`, ``hardware`` orthopaedic metal.
    ``source`` names the dataset (``"mura"``, ``"fracatlas"``, ``"csv"``, ``"synthetic"``);
    ``given_split`` is the dataset's own split (MURA: ``"train"`` or ``"valid"``), if any.
    """

    image: ImageSource
    patient_id: str
    study_id: str
    fracture: bool | None
    count: int | None
    body_part: str | None
    hardware: bool | None
    source: str
    given_split: str | None = None

    def __post_init__(self) -> None:
        if not self.patient_id or not self.study_id or not self.source:
            raise ValueError("patient_id, study_id and source must not be empty")
        if self.count is not None and self.count not in range(len(COUNT_CLASSES)):
            raise ValueError(f"count class must be 0, 1 or 2 (two or more), got {self.count}")
        if self.body_part is not None and self.body_part not in BODY_PARTS:
            raise ValueError(f"unknown body part {self.body_part!r}; expected one of {BODY_PARTS}")
        if (
            self.fracture is not None
            and self.count is not None
            and self.fracture != (self.count > 0)
        ):
            raise ValueError(f"fracture={self.fracture} contradicts count class {self.count}")

    @property
    def path(self) -> Path | None:
        """The image file, or ``None`` for an image generated in memory."""
        return self.image.path if isinstance(self.image, FileImage) else None

    @property
    def group(self) -> str:
        """The key that keeps a patient's images together when splitting."""
        return f"{self.source}:{self.patient_id}"


@dataclass(frozen=True)
class LabelCodes:
    """One image's labels in the encoding of :class:`models.losses.Targets`.

    ``fracture``/``hardware``: 0.0 or 1.0; ``count``: index into
    :data:`models.labels.COUNT_CLASSES`; ``body_part``: index into
    :data:`models.labels.BODY_PARTS`. A missing label is :data:`MISSING` (-1).
    """

    fracture: float
    count: int
    body_part: int
    hardware: float


def label_codes(record: ImageRecord) -> LabelCodes:
    """The Targets-compatible codes of ``record``'s labels, :data:`MISSING` where unknown."""
    return LabelCodes(
        fracture=float(MISSING) if record.fracture is None else float(record.fracture),
        count=MISSING if record.count is None else record.count,
        body_part=MISSING if record.body_part is None else BODY_PARTS.index(record.body_part),
        hardware=float(MISSING) if record.hardware is None else float(record.hardware),
    )
