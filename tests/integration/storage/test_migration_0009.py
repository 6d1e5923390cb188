"""Migration 0009: callers and destinations may name the admin pages (``web``) or the REST API
(``api``) as their source; a downgrade relabels those rows ``cli``. On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, MetaData, Table, select
from sqlalchemy.exc import IntegrityError

from storage.migrate import downgrade, upgrade

T0 = datetime(2026, 12, 6, 8, 0, tzinfo=UTC)


def _tables(engine: Engine) -> tuple[Table, Table]:
    meta = MetaData()
    return (
        Table("callers", meta, autoload_with=engine),
        Table("destinations", meta, autoload_with=engine),
    )


def _add(engine: Engine, n: int, source: str) -> None:
    callers, destinations = _tables(engine)
    with engine.begin() as conn:
        conn.execute(callers.insert().values(ae_title=f"CT{n}", source=source, created_at=T0))
        conn.execute(
            destinations.insert().values(
                name=f"d{n}",
                ae_title="PACS",
                host="10.0.0.1",
                port=104,
                send=["sr"],
                source=source,
                created_at=T0,
            )
        )


def _sources(engine: Engine) -> tuple[dict[str, str], dict[str, str]]:
    callers, destinations = _tables(engine)
    with engine.connect() as conn:
        return (
            {r.ae_title: r.source for r in conn.execute(select(callers))},
            {r.name: r.source for r in conn.execute(select(destinations))},
        )


def test_web_and_api_sources_come_with_0009_and_go_with_its_downgrade(engine: Engine) -> None:
    upgrade(engine, "0008")
    _add(engine, 1, "cli")
    with pytest.raises(IntegrityError):
        _add(engine, 2, "web")  # not yet allowed

    upgrade(engine, "0009")
    _add(engine, 2, "web")
    _add(engine, 3, "api")
    with pytest.raises(IntegrityError):
        _add(engine, 4, "bogus")
    assert _sources(engine) == (
        {"CT1": "cli", "CT2": "web", "CT3": "api"},
        {"d1": "cli", "d2": "web", "d3": "api"},
    )

    downgrade(engine, "0008")
    assert _sources(engine) == (
        {"CT1": "cli", "CT2": "cli", "CT3": "cli"},
        {"d1": "cli", "d2": "cli", "d3": "cli"},
    )
    with pytest.raises(IntegrityError):
        _add(engine, 5, "api")
