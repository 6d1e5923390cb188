"""Reading dataset CSV files row by row, with the file and line of every value for errors."""

from __future__ import annotations

import csv
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from retrain.datasets.errors import DatasetError

__all__ = ["Row", "inside", "read_header_rows", "read_plain_rows"]

_TRUE = frozenset({"1", "1.0", "true", "yes"})
_FALSE = frozenset({"0", "0.0", "false", "no"})


@dataclass(frozen=True)
class Row:
    """One data row: its values by column name, and where it is (``line`` is 1-based)."""

    file: Path
    line: int
    values: Mapping[str, str]

    def error(self, column: str | None, message: str) -> DatasetError:
        return DatasetError(self.file, message, line=self.line, column=column)

    def text(self, column: str) -> str:
        """The stripped value of ``column`` ("" when the column is absent)."""
        return self.values.get(column, "").strip()

    def flag(self, column: str) -> bool | None:
        """A 0/1 value (also ``true``/``false``, ``yes``/``no``, ``0.0``/``1.0``); empty is None."""
        value = self.text(column).lower()
        if not value:
            return None
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        raise self.error(column, f"expected 0 or 1 (or empty), got {self.text(column)!r}")

    def count(self, column: str) -> int | None:
        """A non-negative whole number (``2+`` reads as 2); empty is None."""
        value = self.text(column)
        if not value:
            return None
        if value == "2+":
            return 2
        try:
            number = float(value)
        except ValueError:
            number = -1.0
        if number < 0 or not number.is_integer():
            raise self.error(
                column, f"expected a count 0, 1, 2, ... or 2+ (or empty), got {value!r}"
            )
        return int(number)


def _open(path: Path) -> Iterator[tuple[int, list[str]]]:
    """``(line, fields)`` of every non-blank row; errors name the file and line."""
    if not path.is_file():
        raise DatasetError(path, "file not found")
    reader = None
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            for fields in reader:
                if any(field.strip() for field in fields):
                    yield reader.line_num, fields
    except UnicodeDecodeError as exc:
        raise DatasetError(path, f"not UTF-8 text ({exc.reason})") from exc
    except csv.Error as exc:
        line = reader.line_num if reader is not None else None
        raise DatasetError(path, f"malformed CSV: {exc}", line=line) from exc


def read_plain_rows(path: Path, columns: int) -> Iterator[Row]:
    """Rows of a header-less CSV with ``columns`` columns, named ``"1"``, ``"2"``, ..."""
    for line, fields in _open(path):
        if len(fields) != columns:
            raise DatasetError(path, f"expected {columns} columns, got {len(fields)}", line=line)
        yield Row(path, line, {str(i + 1): value for i, value in enumerate(fields)})


def read_header_rows(
    path: Path, *, required: frozenset[str], allowed: frozenset[str] | None
) -> Iterator[Row]:
    """Rows of a CSV with a header line; ``allowed=None`` accepts any further column.

    A missing required column, an unknown column (when ``allowed`` is given), a duplicate
    column name or a row with the wrong number of fields raises :class:`DatasetError`.
    """
    rows = _open(path)
    first = next(rows, None)
    if first is None:
        raise DatasetError(path, "the file is empty; expected a header line")
    header_line, raw = first
    header = [name.strip() for name in raw]
    for name in header:
        if not name:
            raise DatasetError(path, "empty column name in the header", line=header_line)
        if header.count(name) > 1:
            raise DatasetError(path, "duplicate column", line=header_line, column=name)
        if allowed is not None and name not in allowed | required:
            expected = ", ".join(sorted(allowed | required))
            raise DatasetError(
                path, f"unknown column; expected some of {expected}", line=header_line, column=name
            )
    missing = sorted(required - set(header))
    if missing:
        raise DatasetError(path, "required column is missing", line=header_line, column=missing[0])
    for line, fields in rows:
        if len(fields) != len(header):
            raise DatasetError(
                path, f"expected {len(header)} fields like the header, got {len(fields)}", line=line
            )
        yield Row(path, line, dict(zip(header, fields, strict=True)))


def inside(base: Path, relative: str, row: Row, column: str) -> Path:
    """``base / relative`` for a relative POSIX path that stays inside ``base``."""
    text = relative.strip()
    pure = PurePosixPath(text)
    if not text or pure.is_absolute() or ".." in pure.parts or "\\" in text or ":" in text:
        raise row.error(column, f"expected a relative path inside {base}, got {text!r}")
    return base.joinpath(*pure.parts)
