"""Engines and sessions for SQLite (the embedded default) and PostgreSQL.

The composition root (``xrayd``) calls these with values from the settings; nothing here reads
configuration or runs at import time.

Engines are created with ``hide_parameters=True``: a statement's parameters (UIDs, AE titles,
texts) appear neither in SQLAlchemy's exception messages nor in its SQL log.

SQLite
------
The directory of the database file is created on the first connection if it is missing.

A C-STORE is acknowledged only after the commit, so SQLite runs in WAL mode with
``synchronous=FULL``: in WAL mode ``FULL`` fsyncs the WAL at every commit, which is what makes a
committed (acknowledged) transaction survive a power loss (``NORMAL`` would only keep the
database consistent, losing the last commits). Also ``foreign_keys=ON``, a 30 s
``busy_timeout``, ``wal_autocheckpoint`` at 1000 pages (about 4 MiB: the WAL is copied back
into the database once it grows past that, when no reader still needs the older pages) and a
``journal_size_limit`` that truncates the WAL file back to 64 MiB after a checkpoint.

What WAL needs, checked when a connection opens (:class:`DatabaseUnavailableError` with a
one-line reason otherwise):

* the database's *directory* writable by xrayd, not only the file: SQLite creates the
  ``-wal`` and ``-shm`` files beside the database;
* a local filesystem: WAL readers and writers share the ``-shm`` file through shared memory,
  which does not work across hosts, so NFS, SMB/CIFS and other network filesystems are
  refused (use PostgreSQL for a database on the network);
* the switch to WAL to succeed (``PRAGMA journal_mode`` answers ``wal``).

Transactions: the ``sqlite3`` driver's own transaction handling is switched off
(``isolation_level = None``) and SQLAlchemy emits ``BEGIN``:

* **writes** (the default, e.g. ``sm.begin()``) begin ``IMMEDIATE``: the write lock is taken
  at the start, so writers queue on ``busy_timeout`` instead of failing with "database is
  locked" when a deferred reader tries to upgrade. This also serialises job claimers (SQLite
  has a single writer; "one claimer at a time" is the design).
* **reads** go through :func:`reading`: their transaction begins ``DEFERRED`` and never
  writes, so it takes no lock at all in WAL mode. A page view that reads for a while neither
  waits for a writer nor makes one wait (a C-STORE commit goes on while the worklist loads);
  it sees the snapshot of its first read.

PostgreSQL ignores the ``sqlite_begin`` option: there every transaction is as before.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeAlias

from sqlalchemy import URL, Engine, create_engine, event, make_url, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from storage.errors import DatabaseUnavailableError

logger = logging.getLogger(__name__)

SQLITE_FILENAME = "xrayd.sqlite3"
SQLITE_BUSY_TIMEOUT_MS = 30_000
SQLITE_WAL_AUTOCHECKPOINT_PAGES = 1000
SQLITE_JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024
#: execution options of a read transaction (SQLite: ``BEGIN DEFERRED``; PostgreSQL: ignored)
READ_OPTIONS = {"sqlite_begin": "DEFERRED"}
#: filesystems on which SQLite's WAL mode is unsafe (its shared memory does not span hosts)
NETWORK_FILESYSTEMS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "9p",
        "afs",
        "ceph",
        "glusterfs",
        "lustre",
        "fuse.sshfs",
        "fuse.glusterfs",
        "fuse.s3fs",
        "fuse.rclone",
        "gpfs",
        "ocfs2",
        "gfs2",
    }
)

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
            directory = Path(database).parent
            directory.mkdir(parents=True, exist_ok=True)
            _check_wal_directory(directory)

    @event.listens_for(engine, "connect")
    def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy emit BEGIN (see the "begin" hook) instead of the driver.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            mode = str(cursor.execute("PRAGMA journal_mode = WAL").fetchone()[0]).lower()
            if mode != "wal" and mode != "memory":  # an in-memory database has no WAL
                raise DatabaseUnavailableError(
                    f"SQLite could not switch the database to WAL mode (journal_mode is {mode}); "
                    "put [storage] data_dir on a local filesystem that xrayd may write to"
                )
            cursor.execute("PRAGMA synchronous = FULL")
            cursor.execute(f"PRAGMA wal_autocheckpoint = {SQLITE_WAL_AUTOCHECKPOINT_PAGES}")
            cursor.execute(f"PRAGMA journal_size_limit = {SQLITE_JOURNAL_SIZE_LIMIT}")
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


def _check_wal_directory(directory: Path) -> None:
    """Refuse, with a clear message, a directory where WAL cannot work (see the docstring)."""
    if not os.access(directory, os.W_OK | os.X_OK):
        raise DatabaseUnavailableError(
            f"the database directory {directory} is not writable by this user: SQLite in WAL "
            "mode creates the -wal and -shm files beside the database"
        )
    fstype = filesystem_type(directory)
    if fstype in NETWORK_FILESYSTEMS:
        raise DatabaseUnavailableError(
            f"the database directory {directory} is on a network filesystem ({fstype}): "
            "SQLite in WAL mode needs a local filesystem; move [storage] data_dir or use "
            "PostgreSQL"
        )


def filesystem_type(path: Path, mounts: Path = Path("/proc/self/mounts")) -> str | None:
    """The type of the filesystem holding ``path`` (Linux ``/proc/self/mounts``; None
    where that cannot be read)."""
    try:
        lines = mounts.read_text().splitlines()
    except OSError:
        return None
    target = str(path.resolve())
    best, best_type = "", None
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, best_type = point, fields[2]
    return best_type


#: what callers outside ``storage`` hold and pass back in (so they need not import SQLAlchemy)
Sessions: TypeAlias = sessionmaker[Session]


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Sessions whose objects stay usable after commit (``expire_on_commit=False``)."""
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def reading(sm: sessionmaker[Session]) -> Iterator[Session]:
    """A session for reading only, closed (its transaction rolled back) on exit.

    On SQLite its transaction begins ``DEFERRED`` (see the module docstring): it takes no
    lock, so it neither waits for writers nor makes them wait. Flushing ORM changes in it
    raises :class:`ReadOnlySessionError`: a deferred transaction that later writes could
    fail to upgrade to the write lock. PostgreSQL: an ordinary session.
    """
    with sm() as session:
        event.listen(session, "before_flush", _refuse_flush)
        session.connection(execution_options=READ_OPTIONS)
        yield session


class ReadOnlySessionError(RuntimeError):
    """A session from :func:`reading` was asked to write (a programming error)."""


def _refuse_flush(_session: Session, _context: Any, _instances: Any) -> None:
    raise ReadOnlySessionError("a read session must not write; use sm.begin() for writes")


def ping(sm: sessionmaker[Session]) -> None:
    """Read, without taking a write lock: ``SELECT 1`` and the schema's version row (the
    schema is there and this role may read it). Raises whatever the driver raises."""
    with reading(sm) as session:
        session.execute(text("SELECT 1"))
        session.execute(text("SELECT version_num FROM alembic_version")).first()


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
