"""Label vocabularies of the classifier's heads and its three-way decision."""

from __future__ import annotations

from enum import StrEnum

from models.synthetic_case import BODY_PARTS

__all__ = ["BODY_PARTS", "COUNT_CLASSES", "Decision"]

#: Classes of the fracture-count head: none, one, two or more.
COUNT_CLASSES: tuple[str, str, str] = ("0", "1", "2+")


class Decision(StrEnum):
    """The triage decision for an image or a study (stable, machine-readable codes)."""

    PRESENT = "present"
    ABSENT = "absent"
    INDETERMINATE = "indeterminate"
