"""Shared fixtures: real SQLite and PostgreSQL databases."""

from __future__ import annotations

import logging
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from helpers import PG_ADMIN_URL, _pg_reachable, need


@pytest.fixture(autouse=True)
def _cli_logging_undone() -> Iterator[None]:
    """A test that runs the CLI in-process leaves xrayd's log handler on the root logger, writing
    to the stream pytest captured for that test; once pytest closes it, a later thread's log
    record ends in "--- Logging error ---". Undo it after each test."""
    yield
    if any(getattr(h, "_xrayd", False) for h in logging.getLogger().handlers):
        from xrayd.runtime.logging_setup import reset_logging

        reset_logging()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database, dropped afterwards."""
    problem = _pg_reachable()
    need(problem is None, problem or "")
    import psycopg

    name = f"xrayd_t_{uuid.uuid4().hex[:12]}"
    dsn = PG_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Both supported databases, empty."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db' / 'xrayd.sqlite3'}"
    url: str = request.getfixturevalue("pg_url")
    return url


