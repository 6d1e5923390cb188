"""Run the Alembic migrations in ``storage/migrations`` programmatically (no alembic.ini).

Typical start-up::

    state = schema_state(engine)
    if state in ("empty", "outdated"):
        upgrade(engine)              # or ask the operator first
    require_current_schema(engine)   # raises SchemaOutdatedError otherwise
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection, Engine, inspect, text

from storage.errors import SchemaOutdatedError

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "alembic_version"
# Any constant; serialises concurrent upgrades of one PostgreSQL database.
_PG_MIGRATION_LOCK_KEY = 0x78726179  # "xray"

SchemaState = Literal["empty", "current", "outdated", "unknown"]


def _config(script_location: Path | None, connection: Connection | None = None) -> Config:
    cfg = Config()
    location = str(script_location or MIGRATIONS_DIR)
    # ConfigParser interpolation: a literal "%" must be doubled.
    cfg.set_main_option("script_location", location.replace("%", "%%"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def _script(script_location: Path | None) -> ScriptDirectory:
    return ScriptDirectory.from_config(_config(script_location))


def head_revision(*, script_location: Path | None = None) -> str:
    """The newest revision of the migration scripts."""
    head = _script(script_location).get_current_head()
    if head is None:
        raise SchemaOutdatedError("no migration scripts found")
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision stamped in the database, or None (no version table or no row)."""
    with engine.connect() as conn:
        if VERSION_TABLE not in inspect(conn).get_table_names():
            return None
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head", *, script_location: Path | None = None) -> None:
    """Migrate the database up to ``revision`` in one transaction.

    On PostgreSQL an advisory lock serialises processes that start at the same time; on SQLite
    the ``BEGIN IMMEDIATE`` of :func:`storage.db.make_engine` does the same.
    """
    with engine.begin() as conn:
        _lock(conn)
        logger.info("migrating database schema to %s", revision)
        command.upgrade(_config(script_location, conn), revision)


def downgrade(engine: Engine, revision: str, *, script_location: Path | None = None) -> None:
    """Migrate the database down to ``revision`` ("base" drops every table)."""
    with engine.begin() as conn:
        _lock(conn)
        logger.info("downgrading database schema to %s", revision)
        command.downgrade(_config(script_location, conn), revision)


def _lock(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK_KEY})


def schema_state(engine: Engine, *, script_location: Path | None = None) -> SchemaState:
    """Classify the database against the migration scripts.

    - ``"empty"``: no tables at all (an empty ``alembic_version`` table left by a downgrade to
      base counts as empty);
    - ``"current"``: stamped with the head revision;
    - ``"outdated"``: stamped with an older revision of our scripts (``upgrade`` fixes it);
    - ``"unknown"``: tables without a version stamp, or a revision our scripts do not know
      (e.g. written by a newer xrayd): do not touch.
    """
    with engine.connect() as conn:
        tables = set(inspect(conn).get_table_names())
        revision = (
            MigrationContext.configure(conn).get_current_revision()
            if VERSION_TABLE in tables
            else None
        )
    if revision is None:
        return "empty" if not (tables - {VERSION_TABLE}) else "unknown"
    script = _script(script_location)
    try:
        known = script.get_revision(revision)
    except CommandError:
        return "unknown"
    if known is None:
        return "unknown"
    return "current" if revision in script.get_heads() else "outdated"


def require_current_schema(engine: Engine, *, script_location: Path | None = None) -> None:
    """Raise :class:`SchemaOutdatedError` unless the schema is at the head revision."""
    state = schema_state(engine, script_location=script_location)
    if state == "current":
        return
    messages = {
        "empty": "the database has no tables yet; run the database upgrade first",
        "outdated": "the database schema is older than this xrayd; run the database upgrade",
        "unknown": (
            "the database schema is not one this xrayd knows (no version stamp, or written "
            "by a newer xrayd); refusing to use it"
        ),
    }
    raise SchemaOutdatedError(messages[state])
