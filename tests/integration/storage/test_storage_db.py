from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from storage.db import check_connection, make_engine, make_sessionmaker, sqlite_url_for
from storage.errors import DatabaseUnavailableError


def test_sqlite_pragmas(tmp_path: Path) -> None:
    engine = make_engine(sqlite_url_for(tmp_path))
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    finally:
        engine.dispose()


def test_sqlite_transactions_begin_immediate(tmp_path: Path) -> None:
    """A transaction holds the write lock from its start, so a second writer is refused
    (here without waiting) even though the first one has not written anything yet."""
    engine = make_engine(sqlite_url_for(tmp_path))
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE t (x INTEGER)"))
        other = sqlite3.connect(tmp_path / "xrayd.sqlite3", timeout=0, isolation_level=None)
        try:
            with engine.connect() as conn, conn.begin():
                conn.execute(text("SELECT count(*) FROM t")).scalar()
                with pytest.raises(sqlite3.OperationalError, match="locked"):
                    other.execute("BEGIN IMMEDIATE")
            other.execute("BEGIN IMMEDIATE")  # free again after commit
            other.execute("ROLLBACK")
            # Readers may opt out of the write lock.
            reader = engine.execution_options(sqlite_begin="DEFERRED")
            with reader.connect() as conn, conn.begin():
                conn.execute(text("SELECT count(*) FROM t")).scalar()
                other.execute("BEGIN IMMEDIATE")
                other.execute("ROLLBACK")
        finally:
            other.close()
    finally:
        engine.dispose()


def test_sqlite_commit_persists_across_engines(tmp_path: Path) -> None:
    first = make_engine(sqlite_url_for(tmp_path))
    with first.begin() as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER)"))
        conn.execute(text("INSERT INTO t VALUES (42)"))
    first.dispose()
    second = make_engine(sqlite_url_for(tmp_path))
    with second.connect() as conn:
        assert conn.execute(text("SELECT x FROM t")).scalar() == 42
    second.dispose()


def test_check_connection_ok(engine: Engine) -> None:
    check_connection(engine)
    assert make_sessionmaker(engine).kw["expire_on_commit"] is False


def test_check_connection_masks_password_postgres() -> None:
    engine = make_engine("postgresql+psycopg://xrayd:s3cr3t-pw@127.0.0.1:1/xrayd")
    try:
        with pytest.raises(DatabaseUnavailableError) as info:
            check_connection(engine)
    finally:
        engine.dispose()
    message = str(info.value)
    assert "s3cr3t-pw" not in message
    assert "***" in message and "127.0.0.1:1" in message
    assert "Traceback" not in message and "\n" not in message
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_sqlite_creates_missing_directory_on_first_connect(tmp_path: Path) -> None:
    data_dir = tmp_path / "missing" / "dir"
    engine = make_engine(sqlite_url_for(data_dir))
    assert not data_dir.exists()  # nothing happens before the first connection
    try:
        check_connection(engine)
    finally:
        engine.dispose()
    assert (data_dir / "xrayd.sqlite3").is_file()


def test_check_connection_sqlite_unopenable(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    engine = make_engine(sqlite_url_for(not_a_dir / "sub"))
    try:
        with pytest.raises(DatabaseUnavailableError, match="cannot connect"):
            check_connection(engine)
    finally:
        engine.dispose()
