"""``GET /ready`` against a real PostgreSQL server that is stopped and started again, and the
spool's low-water mark.

The server is a private cluster (``initdb`` + ``pg_ctl``) in a temporary directory on a free
port, run as the ``postgres`` system user when the tests run as root (``initdb`` refuses root).
Without ``initdb`` the test is skipped (a failure in CI).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from storage.spool import DiskUsage

from helpers import need
from web_helpers import make_web

MIB = 1024 * 1024


def _pg_bin(tool: str) -> str | None:
    found = shutil.which(tool)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"))
    return candidates[-1] if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PrivatePostgres:
    """A PostgreSQL cluster of our own, started and stopped with pg_ctl."""

    pg_ctl: str
    data: Path
    port: int
    as_user: list[str]  # command prefix that runs as the cluster's owner

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://xrayd@127.0.0.1:{self.port}/xrayd"

    def _run(self, *args: str) -> None:
        done = subprocess.run(
            [*self.as_user, self.pg_ctl, *args], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stdout + done.stderr

    def start(self) -> None:
        options = f"-p {self.port} -k {self.data.parent} -c listen_addresses=127.0.0.1"
        log = str(self.data.parent / "server.log")
        self._run("-D", str(self.data), "-o", options, "-l", log, "-w", "start")

    def stop(self) -> None:
        self._run("-D", str(self.data), "-m", "fast", "-w", "stop")


@pytest.fixture
def postgres() -> Iterator[PrivatePostgres]:
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    need(
        initdb is not None and pg_ctl is not None,
        "initdb/pg_ctl not found (apt-get install postgresql)",
    )
    assert initdb is not None and pg_ctl is not None
    as_user: list[str] = []
    owner: pwd.struct_passwd | None = None
    if os.geteuid() == 0:  # initdb refuses to run as root
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            need(False, "running as root and there is no postgres user to run initdb as")
        runuser = shutil.which("runuser")
        need(runuser is not None, "running as root and runuser is missing")
        assert runuser is not None and owner is not None
        as_user = [runuser, "-u", "postgres", "--"]
    base = Path(tempfile.mkdtemp(prefix="xrayd-pg-"))
    if owner is not None:
        os.chown(base, owner.pw_uid, owner.pw_gid)
    data = base / "data"
    done = subprocess.run(
        [
            *as_user,
            initdb,
            "-D",
            str(data),
            "-U",
            "xrayd",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    server = PrivatePostgres(pg_ctl, data, _free_port(), as_user)
    server.start()
    try:
        import psycopg

        with psycopg.connect(
            f"postgresql://xrayd@127.0.0.1:{server.port}/postgres", autocommit=True
        ) as conn:
            conn.execute("CREATE DATABASE xrayd")
        yield server
    finally:
        subprocess.run(
            [*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(base, ignore_errors=True)


def test_ready_follows_a_real_database_stopped_and_started(
    postgres: PrivatePostgres, tmp_path: Path
) -> None:
    web = make_web(tmp_path / "data", postgres.url)
    try:
        r = web.client.get("/ready")
        assert r.status_code == 200, r.text
        assert r.json() == {
            "status": "ready",
            "checks": {"database": "ok", "model": "ok", "spool": "ok", "disk": "ok"},
        }

        postgres.stop()
        r = web.client.get("/ready")
        assert r.status_code == 503
        body = r.json()
        assert body["status"] == "not ready"
        assert body["checks"]["database"].startswith("unreachable")
        assert {k: v for k, v in body["checks"].items() if k != "database"} == {
            "model": "ok",
            "spool": "ok",
            "disk": "ok",
        }
        assert web.client.get("/health").status_code == 200  # alive, just not ready

        postgres.start()
        r = web.client.get("/ready")
        assert r.status_code == 200, r.text
    finally:
        web.storage.engine.dispose()


def test_ready_is_503_below_the_low_water_mark(tmp_path: Path) -> None:
    web = make_web(tmp_path / "data", node={"min_free_mb": 512})
    try:
        free = {"bytes": 10_000 * MIB}
        web.ctx.disk = lambda: DiskUsage(free_bytes=free["bytes"], total_bytes=20_000 * MIB)
        assert web.client.get("/ready").status_code == 200
        free["bytes"] = 100 * MIB
        r = web.client.get("/ready")
        assert r.status_code == 503
        assert r.json()["checks"]["disk"] == (
            "below the low-water mark (100 MiB free, node.min_free_mb = 512)"
        )
        # Without an injected measure, /ready asks the filesystem itself (os.statvfs).
        web.ctx.disk = None
        st = os.statvfs(web.ctx.spool.root)
        assert abs(web.ctx.disk_usage().free_bytes - st.f_bavail * st.f_frsize) < 64 * MIB
        assert web.client.get("/ready").status_code == 200
    finally:
        web.storage.engine.dispose()


def _tree(root: Path) -> dict[str, tuple[int, int]]:
    """(mtime_ns, size) of every file and directory under ``root``, but SQLite's -shm file
    (its shared-memory index, where readers record read marks: not data)."""
    found = {}
    for path in [root, *root.rglob("*")]:
        if not path.name.endswith("-shm"):
            st = path.stat()
            found[str(path.relative_to(root))] = (st.st_mtime_ns, st.st_size)
    return found


def test_ready_writes_nothing(tmp_path: Path, database_url: str) -> None:
    """Neither a statement that changes the database nor a file created (even briefly) in the
    data directory: every directory's mtime would move."""
    web = make_web(tmp_path / "data", database_url)
    try:
        assert web.client.get("/ready").status_code == 200  # connections are pooled now
        data = tmp_path / "data"
        past = 1_000_000_000  # 2001: whatever /ready touches gets "now" instead
        for path in [data, *data.rglob("*")]:
            os.utime(path, (past, past), follow_symlinks=False)
        before = _tree(data)
        statements: list[str] = []

        @event.listens_for(web.storage.engine, "before_cursor_execute")
        def _record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            statements.append(statement)

        for _ in range(3):
            r = web.client.get("/ready")
            assert r.status_code == 200 and r.json()["status"] == "ready", r.text
        assert statements, "the database was not even asked"
        # Reads only, and on SQLite in a deferred transaction (no write lock taken).
        assert all(s.startswith(("SELECT ", "BEGIN DEFERRED")) for s in statements), statements
        assert _tree(data) == before
    finally:
        web.storage.engine.dispose()


def test_ready_reports_a_missing_spool_without_making_it_again(tmp_path: Path) -> None:
    web = make_web(tmp_path / "data")
    try:
        shutil.rmtree(web.ctx.spool.root)
        r = web.client.get("/ready")
        assert r.status_code == 503
        assert r.json()["checks"]["spool"] == "not writable (FileNotFoundError)"
        assert not web.ctx.spool.root.exists()
    finally:
        web.storage.engine.dispose()
