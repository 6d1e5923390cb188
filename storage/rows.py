"""Plain rows from ORM objects: the frozen dataclasses that storage hands out are filled from the
mapped object's attributes of the same name, so a conversion names only what differs."""

from __future__ import annotations

from dataclasses import fields
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = ["from_attributes"]

RowT = TypeVar("RowT", bound="DataclassInstance")


def from_attributes(row_type: type[RowT], source: object, **values: Any) -> RowT:
    """A ``row_type`` whose fields are ``values`` where given, else ``source``'s attribute of
    the same name (a field with a default that ``source`` lacks keeps its default)."""
    taken = {
        f.name: getattr(source, f.name)
        for f in fields(row_type)
        if f.init and f.name not in values and hasattr(source, f.name)
    }
    return row_type(**taken, **values)
