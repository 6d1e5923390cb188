"""Response models of the REST API filled from :mod:`storage` rows.

A model names the fields the API shows (a row may hold more, such as a Study Instance UID or a
worker id, that the API does not); :func:`from_row` copies each of them from the row's attribute
of the same name, so only the fields the API names differently are spelt out.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel

__all__ = ["from_row"]

M = TypeVar("M", bound=BaseModel)


def from_row(model: type[M], row: object, **values: Any) -> M:
    """``model`` with ``values``, and each of its other fields from ``row``'s attribute of that
    name."""
    fields = {name: getattr(row, name) for name in model.model_fields if name not in values}
    return model(**fields, **values)
