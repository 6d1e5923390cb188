"""Fixtures for the storage integration tests: every DB test runs on SQLite and PostgreSQL.

PostgreSQL: each test gets a fresh random schema (``search_path`` set via
``make_engine(url, schema=...)``) that is dropped afterwards. Set ``XRAYD_TEST_PG`` to use
another server (as for every other test). If PostgreSQL is unreachable the PostgreSQL variants
are skipped, or fail when ``CI=true``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from storage.db import make_engine, make_sessionmaker, sqlite_url_for
from storage.instances import InstanceRecord
from storage.migrate import upgrade
from storage.spool import Spool

from helpers import PG_ADMIN_URL, need

PG_URL = PG_ADMIN_URL

T0 = datetime(2025, 3, 1, 8, 0, 0, tzinfo=UTC)


@pytest.fixture(scope="session")
def pg_admin() -> Iterator[Engine]:
    admin = create_engine(PG_URL, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # any connection failure
        admin.dispose()
        message = (
            f"PostgreSQL not reachable at {admin.url.render_as_string()}: {type(exc).__name__}"
        )
        need(False, message)
    yield admin
    admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        eng = make_engine(sqlite_url_for(tmp_path))
        yield eng
        eng.dispose()
        return
    admin: Engine = request.getfixturevalue("pg_admin")
    schema = f"x_{uuid.uuid4().hex[:16]}"
    with admin.connect() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    eng = make_engine(PG_URL, schema=schema)
    try:
        yield eng
    finally:
        eng.dispose()
        with admin.connect() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))


@pytest.fixture
def migrated(engine: Engine) -> Engine:
    upgrade(engine)
    return engine


@pytest.fixture
def sm(migrated: Engine) -> sessionmaker[Session]:
    return make_sessionmaker(migrated)


class RecordFactory(Protocol):
    def __call__(
        self,
        study: str = ...,
        sop: str = ...,
        *,
        series: str | None = ...,
        sha: str = ...,
        at: datetime = ...,
        ae: str = ...,
    ) -> InstanceRecord: ...


def _make_record(
    study: str = "1.2.3.1",
    sop: str = "1.2.3.1.1.1",
    *,
    series: str | None = None,
    sha: str = "a" * 64,
    at: datetime = T0,
    ae: str = "CR1",
) -> InstanceRecord:
    return InstanceRecord(
        study_instance_uid=study,
        series_instance_uid=series or f"{study}.1",
        sop_instance_uid=sop,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.1.1",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        modality="DX",
        body_part_examined="HAND",
        spool_path=Spool(Path("/nonexistent")).relative_path_for(study, sop),
        size_bytes=1234,
        sha256=sha,
        calling_ae_title=ae,
        received_at=at,
    )


@pytest.fixture
def make_rec() -> RecordFactory:
    """Build an InstanceRecord with plausible values (spool path named as the Spool would)."""
    return _make_record
