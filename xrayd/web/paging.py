"""One shape for every paginated list of the REST API: ``{"items", "total", "limit",
"offset"}`` (:class:`Page`), with the query parameters that select a page and the rule for the
times that filter a list (:func:`require_time_zone`, :func:`query_day`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Generic, TypeVar

from fastapi import HTTPException, Query
from pydantic import BaseModel, Field

__all__ = ["MAX_OFFSET", "Limit", "Offset", "Page", "query_day", "require_time_zone"]

#: deeper pages of lists that storage pages through oldest first are refused
MAX_OFFSET = 10_000

Limit = Annotated[int, Query(ge=1, le=500, description="page size")]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="items to skip")]

T = TypeVar("T")
R = TypeVar("R")


class Page(BaseModel, Generic[T]):
    """One page of a list: ``items`` from ``offset`` on (at most ``limit``) of ``total``."""

    items: list[T]
    total: int = Field(description="items in the whole list (with the filters given)")
    limit: int
    offset: int

    @classmethod
    def of(
        cls, rows: Sequence[R], convert: Callable[[R], T], *, total: int, limit: int, offset: int
    ) -> Page[T]:
        """The page holding ``rows`` (already this page's rows), each converted."""
        return cls(items=[convert(r) for r in rows], total=total, limit=limit, offset=offset)


def require_time_zone(name: str, value: datetime | None) -> None:
    """422 when the query parameter ``name`` is a time without a time zone."""
    if value is not None and value.tzinfo is None:
        raise HTTPException(422, f"{name}: give a time zone (e.g. 2026-11-23T00:00:00Z)")


def query_day(value: str | None, name: str) -> datetime | None:
    """The query parameter ``name``, a date as YYYY-MM-DD, as the start of that UTC day (None
    when empty); 422 for anything else."""
    if not value:
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError as exc:
        raise HTTPException(422, f"{name}: expected a date as YYYY-MM-DD") from exc
