"""Records of synthetic radiographs from :func:`models.synthetic.generate_dataset`.

Every label is known. Each case is its own patient and study (ids from the case seed), so the
patient split spreads cases like any other dataset. The pixels stay in memory with the record
(:class:`GeneratedImage`) and go through ``to_dicom`` + ``prepare`` like production images.
"""

from __future__ import annotations

from models.synthetic import generate_dataset
from retrain.datasets.records import GeneratedImage, ImageRecord

__all__ = ["synthetic_records"]


def synthetic_records(
    n: int,
    seed: int,
    *,
    size: int = 512,
    balanced: bool = True,
    body_parts: tuple[str, ...] | None = None,
) -> list[ImageRecord]:
    """``n`` labelled synthetic records; the arguments are those of ``generate_dataset``."""
    if n < 0:
        raise ValueError("n must not be negative")
    records: list[ImageRecord] = []
    for case in generate_dataset(n, seed, size=size, balanced=balanced, body_parts=body_parts):
        case_id = f"case-{case.seed}"
        records.append(
            ImageRecord(
                image=GeneratedImage(case),
                patient_id=case_id,
                study_id=case_id,
                fracture=case.fracture,
                count=case.fracture_count,
                body_part=case.body_part,
                hardware=case.hardware,
                source="synthetic",
            )
        )
    return records
