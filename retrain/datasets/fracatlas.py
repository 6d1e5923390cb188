"""FracAtlas (Abedeen et al., Scientific Data 2023; figshare 22363012) in its published layout.

::

    FracAtlas/
        dataset.csv
        images/Fractured/IMG0000019.jpg
        images/Non_fractured/IMG0000000.jpg
        Annotations/YOLO/IMG0000019.txt     fracture boxes: ``class cx cy w h``, normalised
        Utilities/...                       (not used here)

``dataset.csv`` has a header: ``image_id`` (the JPEG file name), then 0/1 columns ``hand``,
``leg``, ``hip``, ``shoulder``, ``mixed`` (several body parts), ``hardware``, ``multiscan``
(several views in one image), ``fractured``, the number of fractures ``fracture_count``, and the
view flags ``frontal``, ``lateral``, ``oblique``. An image is in ``images/Fractured`` when
``fractured`` is 1, else in ``images/Non_fractured``.

FracAtlas publishes **no patient or study identifiers**, and no grouping of images by patient is
documented. It does contain byte-identical duplicates (the same image under two or four names),
so the split group ("patient") of an image is the SHA-256 of its file: identical files always
land in the same split. Different images of one patient may still land in different splits:
validation figures on FracAtlas can be optimistic (see the model card).

The data set's own truncated JPEGs are not refused here (the file exists); preparing them
fails with a clear :class:`DatasetError`, and the preparation steps skip and count them.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from retrain.datasets.errors import DatasetError
from retrain.datasets.records import FileImage, ImageRecord, count_class
from retrain.datasets.tables import Row, read_header_rows

logger = logging.getLogger(__name__)

__all__ = [
    "FRACATLAS_COLUMNS",
    "FRACATLAS_DIR",
    "FractureBox",
    "content_group",
    "fracatlas_boxes",
    "load_fracatlas",
]

#: A fracture box as the YOLO annotation gives it: ``(cx, cy, w, h)``, fractions of the image.
FractureBox = tuple[float, float, float, float]

FRACATLAS_DIR = "FracAtlas"
#: The columns of the published ``dataset.csv``, in order.
FRACATLAS_COLUMNS: tuple[str, ...] = (
    "image_id",
    "hand",
    "leg",
    "hip",
    "shoulder",
    "mixed",
    "hardware",
    "multiscan",
    "fractured",
    "fracture_count",
    "frontal",
    "lateral",
    "oblique",
)
_PARTS = ("hand", "leg", "hip", "shoulder")
_REQUIRED = frozenset({"image_id", *_PARTS, "mixed", "hardware", "fractured", "fracture_count"})


def _folder(root: Path) -> Path:
    if (root / "dataset.csv").is_file():
        return root
    if (root / FRACATLAS_DIR / "dataset.csv").is_file():
        return root / FRACATLAS_DIR
    raise DatasetError(root, f"no dataset.csv here or in {root / FRACATLAS_DIR}")


def _required_flag(row: Row, column: str) -> bool:
    value = row.flag(column)
    if value is None:
        raise row.error(column, "the value is empty")
    return value


def _body_part(row: Row) -> str | None:
    """``mixed`` (or several part flags) -> "other"; exactly one flag -> it; none -> unknown."""
    flagged = [name for name in _PARTS if _required_flag(row, name)]
    if _required_flag(row, "mixed") or len(flagged) > 1:
        return "other"
    if not flagged:
        return None
    return flagged[0]


def content_group(path: Path) -> str:
    """The split group of an image file: ``sha256:<hex>`` of its bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


def fracatlas_boxes(image: Path) -> tuple[FractureBox, ...] | None:
    """The fracture boxes of a FracAtlas image from ``Annotations/YOLO/<stem>.txt``.

    ``image`` is ``<root>/images/<folder>/<name>``. Returns ``None`` when there is no
    annotation file (unknown), an empty tuple for a file without boxes. Raises
    :class:`DatasetError` for a malformed line.
    """
    path = image.parent.parent.parent / "Annotations" / "YOLO" / f"{image.stem}.txt"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(path, f"cannot read the annotation: {exc}") from exc
    boxes: list[FractureBox] = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        try:
            cx, cy, w, h = (float(v) for v in fields[1:5])
        except ValueError:
            raise DatasetError(path, f"line {number}: expected 'class cx cy w h'") from None
        if len(fields) != 5 or not all(0.0 <= v <= 1.0 for v in (cx, cy, w, h)):
            raise DatasetError(path, f"line {number}: expected 'class cx cy w h' in [0, 1]")
        boxes.append((cx, cy, w, h))
    return tuple(boxes)


def _record(folder: Path, row: Row, check_files: bool) -> ImageRecord:
    name = row.text("image_id")
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise row.error("image_id", f"expected an image file name, got {name!r}")
    fractured = _required_flag(row, "fractured")
    number = row.count("fracture_count")
    if number is None:
        raise row.error("fracture_count", "the value is empty")
    count: int | None = count_class(number)
    if (number > 0) != fractured:
        logger.warning(
            "%s line %d: fracture_count %d contradicts fractured=%d; count treated as unknown",
            row.file,
            row.line,
            number,
            fractured,
        )
        count = None
    path = folder / "images" / ("Fractured" if fractured else "Non_fractured") / name
    if check_files and not path.is_file():
        raise row.error("image_id", f"image file not found: {path}")
    return ImageRecord(
        image=FileImage(path),
        patient_id=content_group(path) if check_files else name,
        study_id=name,
        fracture=fractured,
        count=count,
        body_part=_body_part(row),
        hardware=_required_flag(row, "hardware"),
        source="fracatlas",
    )


def load_fracatlas(root: Path, *, check_files: bool = True) -> list[ImageRecord]:
    """Records of every row of ``dataset.csv``; ``root`` is ``FracAtlas`` or its parent.

    The patient (split group) of an image is the SHA-256 of its file (:func:`content_group`;
    the image name when ``check_files`` is off). Labels: ``fracture`` from ``fractured``,
    ``count`` from ``fracture_count`` (0, 1, 2+; unknown when it contradicts ``fractured``),
    ``body_part`` from the one-hot part columns (``mixed`` -> ``"other"``; no flag -> unknown),
    ``hardware``. Raises :class:`DatasetError` naming the file,
    line and column of a problem (missing column, bad value, missing image, duplicate image).
    """
    folder = _folder(root)
    records: list[ImageRecord] = []
    seen: set[str] = set()
    for row in read_header_rows(folder / "dataset.csv", required=_REQUIRED, allowed=None):
        record = _record(folder, row, check_files)
        if record.study_id in seen:
            raise row.error("image_id", "image listed twice")
        seen.add(record.study_id)
        records.append(record)
    logger.info("FracAtlas: %d images", len(records))
    return records
