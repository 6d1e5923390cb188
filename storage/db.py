"""Engines and sessions for SQLite (the embedded default) and PostgreSQL.

The composition root (``xrayd``) calls these with values from the settings; nothing here reads
configuration or runs at import time.

Engines are created with ``hide_parameters=True``: a statement's parameters (UIDs, AE titles,
texts) appear neither in SQLAlchemy's exception messages nor in its SQL log.

SQLite
------
The directory of the database file is created on the first connection if it is missing.

A C-STORE is acknowledged only after the commit, so SQLite runs in WAL mode with
``synchronous=FULL`` (every commit is fsynced), ``foreign_keys=ON`` and a 30 s ``busy_timeout``.

The ``sqlite3`` driver's own transaction handling is switched off (``isolation_level = None``)
and every transaction SQLAlchemy begins is opened with ``BEGIN IMMEDIATE``: the write lock is
taken at the start, so writers queue on ``busy_timeout`` instead of failing with "database is
locked" when a deferred reader tries to upgrade. This also serialises job claimers (SQLite has a
single writer; "one claimer at a time" is the design). Pure readers that must not wait behind a
writer can use ``engine.execution_options(sqlite_begin="DEFERRED")`` (WAL readers never block).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from sqlalchemy import URL, Engine, create_engine, event, make_url, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from storage.errors import DatabaseUnavailableError

logger = logging.getLogger(__name__)

SQLITE_FILENAME = "xrayd.sqlite3"
SQLITE_BUSY_TIMEOUT_MS = 30_000

_SQLITE_BEGIN_MODES = frozenset({"DEFERRED", "IMMEDIATE", "EXCLUSIVE"})
_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def sqlite_url_for(data_dir: Path) -> str:
    """The URL of the embedded SQLite database inside ``data_dir``."""
    return f"sqlite:///{(data_dir / SQLITE_FILENAME).as_posix()}"


def make_engine(
    url: str,
    *,
    schema: str | None = None,
    echo: bool = False,
    password: str | None = None,
) -> Engine:
    """Build an engine for ``url`` (``sqlite:///...`` or ``postgresql+psycopg://...``).

    ``schema`` (PostgreSQL only) sets the ``search_path`` of every connection, so tables are
    created and found in that schema; tests use it to isolate themselves.

    ``password`` (PostgreSQL only; e.g. read from a systemd credential) replaces the URL's:
    it lives in the engine's URL object, whose text form masks it, never in a URL string.
    """
    if url.startswith("sqlite"):
        if schema is not None or password is not None:
            raise ValueError("schema= and password= are only supported for PostgreSQL")
        return _make_sqlite_engine(url, echo=echo)
    connect_args: dict[str, Any] = {}
    if schema is not None:
        if not _SCHEMA_NAME.match(schema):
            raise ValueError("schema must be a plain SQL identifier")
        connect_args["options"] = f"-csearch_path={schema}"
    target: str | URL = url
    if password is not None:
        target = make_url(url).set(password=password)
    return create_engine(
        target,
        pool_pre_ping=True,
        connect_args=connect_args,
        echo=echo,
        hide_parameters=True,
    )


def _make_sqlite_engine(url: str, *, echo: bool) -> Engine:
    engine = create_engine(
        url,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        echo=echo,
        hide_parameters=True,
    )

    database = engine.url.database

    @event.listens_for(engine, "do_connect")
    def _sqlite_make_parent(_dialect: Any, _record: Any, _cargs: Any, _cparams: Any) -> None:
        # Create the database file's directory on first use (not at engine creation).
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).parent.mkdir(parents=True, exist_ok=True)

    @event.listens_for(engine, "connect")
    def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy emit BEGIN (see the "begin" hook) instead of the driver.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = FULL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _sqlite_on_begin(conn: Any) -> None:
        mode = str(conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")).upper()
        if mode not in _SQLITE_BEGIN_MODES:
            raise ValueError(f"sqlite_begin must be one of {sorted(_SQLITE_BEGIN_MODES)}")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Sessions whose objects stay usable after commit (``expire_on_commit=False``)."""
    return sessionmaker(bind=engine, expire_on_commit=False)


def masked_url(engine: Engine) -> str:
    """The engine's URL with the password replaced by ``***``."""
    return engine.url.render_as_string(hide_password=True)


def check_connection(engine: Engine) -> None:
    """Run ``SELECT 1``; raise :class:`DatabaseUnavailableError` with a one-line message.

    The message names the URL with its password masked and the driver's first error line
    (with the password removed should the driver echo it); no traceback is chained.
    """
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except (SQLAlchemyError, OSError) as exc:
        reason = _first_line(exc)
        password = engine.url.password
        if password:
            reason = reason.replace(str(password), "***")
        logger.debug("database connection check failed")
        raise DatabaseUnavailableError(
            f"cannot connect to the database at {masked_url(engine)}: {reason}"
        ) from None


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    source: BaseException = orig if isinstance(orig, BaseException) else exc
    lines = [line.strip() for line in str(source).splitlines() if line.strip()]
    first = lines[0] if lines else ""
    name = type(source).__name__
    return f"{name}: {first}" if first else name
