"""A generic dataset: a folder of DICOM or PNG/JPEG files and a labels CSV.

The CSV (UTF-8, header line, by default ``labels.csv`` in the folder) has the columns

=================  ========  ==============================================================
``path``           required  file path relative to the folder, ``/``-separated, no ``..``
``patient_id``     required  images of one patient always stay in one split
``study_id``       optional  defaults to the patient id
``fracture``       optional  0 / 1 / empty (unknown)
``fracture_count`` optional  0 / 1 / 2 / 3 ... / ``2+`` / empty; 2 or more is the "2+" class
``body_part``      optional  one of :data:`models.labels.BODY_PARTS` / empty
``hardware``       optional  0 / 1 / empty
=================  ========  ==============================================================

Any other column is an error (a misspelt label column would otherwise be silently ignored).
An empty ``fracture`` with a ``fracture_count`` takes its value from the count. DICOM files are
recognised by their content (``DICM`` at byte 128), whatever their name.
"""

from __future__ import annotations

import logging
from pathlib import Path

from models.labels import BODY_PARTS
from retrain.datasets.records import FileImage, ImageRecord, count_class
from retrain.datasets.tables import Row, inside, read_header_rows

logger = logging.getLogger(__name__)

__all__ = ["CSV_COLUMNS", "LABELS_CSV", "load_csv_folder"]

LABELS_CSV = "labels.csv"
_REQUIRED = frozenset({"path", "patient_id"})
_OPTIONAL = frozenset({"study_id", "fracture", "fracture_count", "body_part", "hardware"})
#: Every accepted column.
CSV_COLUMNS: frozenset[str] = _REQUIRED | _OPTIONAL


def _record(folder: Path, row: Row, source: str, check_files: bool) -> ImageRecord:
    path = inside(folder, row.text("path"), row, "path")
    if check_files and not path.is_file():
        raise row.error("path", f"image file not found: {path}")
    patient = row.text("patient_id")
    if not patient:
        raise row.error("patient_id", "the value is empty")
    fracture = row.flag("fracture")
    number = row.count("fracture_count")
    count = None if number is None else count_class(number)
    if count is not None:
        if fracture is None:
            fracture = count > 0
        elif fracture != (count > 0):
            raise row.error(
                "fracture_count", f"count {number} contradicts fracture={int(fracture)}"
            )
    part = row.text("body_part").lower() or None
    if part is not None and part not in BODY_PARTS:
        raise row.error(
            "body_part",
            f"unknown body part {row.text('body_part')!r}; expected one of {BODY_PARTS}",
        )
    return ImageRecord(
        image=FileImage(path),
        patient_id=patient,
        study_id=row.text("study_id") or patient,
        fracture=fracture,
        count=count,
        body_part=part,
        hardware=row.flag("hardware"),
        source=source,
    )


def load_csv_folder(
    folder: Path,
    labels_csv: Path | None = None,
    *,
    source: str = "csv",
    check_files: bool = True,
) -> list[ImageRecord]:
    """Records of every row of ``labels_csv`` (default ``folder / "labels.csv"``).

    ``source`` names the dataset in the records (patients are told apart by source and id).
    Raises :class:`retrain.datasets.errors.DatasetError` naming the CSV file, line and column
    of an unknown or missing column, a bad value, a duplicate path or a missing image file.
    """
    table = folder / LABELS_CSV if labels_csv is None else labels_csv
    records: list[ImageRecord] = []
    seen: set[Path | None] = set()
    for row in read_header_rows(table, required=_REQUIRED, allowed=_OPTIONAL):
        record = _record(folder, row, source, check_files)
        if record.path in seen:
            raise row.error("path", "image listed twice")
        seen.add(record.path)
        records.append(record)
    logger.info("%s: %d images from %s", source, len(records), table)
    return records
