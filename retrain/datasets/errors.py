"""Errors raised while reading a dataset: they name the file, and the line and column if any."""

from __future__ import annotations

from pathlib import Path

from config.errors import XraydError


class DatasetError(XraydError):
    """A dataset file is missing, malformed or inconsistent.

    ``file`` is the offending file; ``line`` (1-based, the header being line 1 where there is
    one) and ``column`` (a column name, or a 1-based position for header-less files) say where,
    when known. The message repeats them, so printing the exception is enough.
    """

    def __init__(
        self,
        file: Path,
        message: str,
        *,
        line: int | None = None,
        column: str | None = None,
    ) -> None:
        where = str(file)
        if line is not None:
            where += f", line {line}"
        if column is not None:
            where += f", column {column!r}"
        super().__init__(f"{where}: {message}")
        self.file = file
        self.line = line
        self.column = column
        self.detail = message

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only arguments: keep the exception picklable (DataLoader worker processes).
        return (_rebuild, (self.file, self.detail, self.line, self.column))


def _rebuild(file: Path, message: str, line: int | None, column: str | None) -> DatasetError:
    return DatasetError(file, message, line=line, column=column)
