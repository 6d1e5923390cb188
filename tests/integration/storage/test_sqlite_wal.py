"""SQLite: WAL mode, and reads (the worklist, the dashboards' statistics, status counts,
/ready) never take the write lock, so a C-STORE's instance row commits while they read.

Each read is paused mid-transaction (after its first statement, through an engine event, no
sleeps) while the main thread stores an instance; a read that held the write lock would make
that write wait for ``busy_timeout`` (here 2 s) and fail with "database is locked".
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, select, text
from sqlalchemy.orm import Session, sessionmaker

from storage import stats
from storage.db import (
    ReadOnlySessionError,
    filesystem_type,
    make_engine,
    make_sessionmaker,
    ping,
    reading,
    sqlite_url_for,
)
from storage.errors import DatabaseUnavailableError
from storage.instances import InstanceRecord, record_instance
from storage.migrate import upgrade
from storage.reviews import list_overrides
from storage.schema import Instance, Study
from storage.status import status_counts
from storage.worklist import WorklistFilter, worklist

T0 = datetime(2025, 3, 1, 8, 0, 0, tzinfo=UTC)
WAIT_S = 60.0  # bound on every Event wait: a failing test fails instead of hanging


@pytest.fixture
def sqlite_sm(tmp_path: Path) -> Iterator[tuple[Engine, sessionmaker[Session]]]:
    engine = make_engine(sqlite_url_for(tmp_path))
    upgrade(engine)

    @event.listens_for(engine, "connect")
    def _short_busy_timeout(dbapi_connection: Any, _record: Any) -> None:
        # after make_engine's own hook: a writer blocked by a reader fails within 2 s
        dbapi_connection.execute("PRAGMA busy_timeout = 2000")

    engine.dispose()  # reconnect with the hook above
    yield engine, make_sessionmaker(engine)
    engine.dispose()


def test_sqlite_database_is_in_wal_mode_with_full_sync(tmp_path: Path) -> None:
    engine = make_engine(sqlite_url_for(tmp_path))
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 1000
        assert (tmp_path / "xrayd.sqlite3-wal").exists()
    finally:
        engine.dispose()


def test_a_directory_xrayd_cannot_write_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root may write anywhere")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    engine = make_engine(sqlite_url_for(locked))
    try:
        with pytest.raises(DatabaseUnavailableError, match="-wal and -shm"):
            engine.connect()
    finally:
        engine.dispose()
        locked.chmod(0o700)


def test_filesystem_type_names_the_innermost_mount(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text(
        "rootfs / ext4 rw 0 0\n"
        "server:/export /srv/data nfs4 rw 0 0\n"
        "tmp /srv/data/local\\040dir tmpfs rw 0 0\n"
    )
    assert filesystem_type(Path("/srv/data/xrayd"), mounts) == "nfs4"
    assert filesystem_type(Path("/srv/data/local dir/x"), mounts) == "tmpfs"
    assert filesystem_type(Path("/srv/database"), mounts) == "ext4"
    assert filesystem_type(Path("/x"), tmp_path / "missing") is None


def test_a_read_session_refuses_to_write(
    sqlite_sm: tuple[Engine, sessionmaker[Session]],
) -> None:
    _, sm = sqlite_sm
    with reading(sm) as session, pytest.raises(ReadOnlySessionError):
        session.add(Study(study_instance_uid="1.2.3", first_received_at=T0, last_received_at=T0))
        session.flush()


def test_an_open_read_transaction_does_not_block_a_write(
    sqlite_sm: tuple[Engine, sessionmaker[Session]], make_rec: Callable[..., InstanceRecord]
) -> None:
    _, sm = sqlite_sm
    reading_open, release = threading.Event(), threading.Event()
    seen: list[int] = []

    def reader() -> None:
        with reading(sm) as session:
            seen.append(len(session.scalars(select(Instance.id)).all()))
            reading_open.set()
            assert release.wait(WAIT_S)
            # still the snapshot of the first read: the write is not visible here
            seen.append(len(session.scalars(select(Instance.id)).all()))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        assert reading_open.wait(WAIT_S)
        with sm.begin() as session:  # a C-STORE's row, while the read is open
            record_instance(session, make_rec())
    finally:
        release.set()
        thread.join(WAIT_S)
    assert seen == [0, 0]
    with reading(sm) as session:
        assert len(session.scalars(select(Instance.id)).all()) == 1


def _window() -> tuple[Any, Any]:
    return T0 - timedelta(days=1), T0 + timedelta(days=1)


READS: dict[str, Callable[[sessionmaker[Session]], object]] = {
    "worklist": lambda sm: worklist(sm, WorklistFilter()),
    "overrides": lambda sm: list_overrides(sm),
    "arrivals": lambda sm: stats.arrivals(sm, *_window()),
    "turnaround": lambda sm: stats.turnaround(sm, *_window()),
    "open_reviews": lambda sm: stats.open_reviews(sm),
    "agreement": lambda sm: stats.agreement(sm, *_window()),
    "accuracy": lambda sm: stats.accuracy(sm, *_window()),
    "status_counts": lambda sm: status_counts(sm),
    "ready": lambda sm: ping(sm),
}


@pytest.mark.parametrize("name", sorted(READS))
def test_worklist_and_statistics_do_not_block_a_write(
    name: str,
    sqlite_sm: tuple[Engine, sessionmaker[Session]],
    make_rec: Callable[..., InstanceRecord],
) -> None:
    """The read is paused inside its transaction, after its first statement, while an
    instance row commits; it then completes normally."""
    engine, sm = sqlite_sm
    reader_thread: list[threading.Thread] = []
    paused, resume = threading.Event(), threading.Event()
    begins: list[str] = []

    def after_execute(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if threading.current_thread() is not reader_thread[0]:
            return
        if statement.startswith("BEGIN"):
            begins.append(statement)
        elif not paused.is_set():
            paused.set()
            assert resume.wait(WAIT_S)

    event.listen(engine, "after_cursor_execute", after_execute)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            READS[name](sm)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    reader_thread.append(threading.Thread(target=run))
    reader_thread[0].start()
    try:
        assert paused.wait(WAIT_S), "the read ran no statement"
        with sm.begin() as session:
            record_instance(session, make_rec())
    finally:
        resume.set()
        reader_thread[0].join(WAIT_S)
        event.remove(engine, "after_cursor_execute", after_execute)
    assert not errors, errors
    assert begins == ["BEGIN DEFERRED"]
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM instances")).scalar() == 1
