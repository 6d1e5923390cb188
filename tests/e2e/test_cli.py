"""The ``xrayd`` CLI as a subprocess: start-up errors, registry commands, serve, kill -9."""

from __future__ import annotations

import os
import select as io_select
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pynetdicom import AE
from sqlalchemy import select

from dicom_factory import DX, make_radiograph
from helpers import PHANTOM

XRAYD = str(Path(sys.executable).parent / "xrayd")


def write_config(
    tmp_path: Path, database_url: str = "", extra: str = "", web_host: str = "127.0.0.1"
) -> Path:
    cfg = tmp_path / "xrayd.toml"
    cfg.write_text(
        '[node]\nae_title = "XRAYD"\nhost = "127.0.0.1"\nport = 0\nmin_free_mb = 0\n'
        '[[node.callers]]\nae_title = "MODALITY"\n'
        f'[storage]\ndata_dir = "{tmp_path / "data"}"\ndatabase_url = "{database_url}"\n'
        f'[model]\nruntime = "eager"\nbundle = "{PHANTOM}"\n'
        f'[web]\nhost = "{web_host}"\nport = 0\n' + extra
    )
    return cfg


#: Only a guard against a hung command, not a speed check: `xrayd demo` took over 120 s on the
#: 2-core CI machine while other work loaded it (load average 8).
HANG_GUARD_S = 900


def xrayd(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("XRAYD_")}
    out = subprocess.run(
        [XRAYD, *args], capture_output=True, text=True, timeout=HANG_GUARD_S, env=env
    )
    if check:
        assert out.returncode == 0, out.stderr
    return out


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ('[node]\nae_titel = "X"\n', "node.ae_titel: unknown key"),
        ('[node]\nae_title = "THIS_TITLE_IS_TOO_LONG"\n', "node.ae_title"),
        ('[node]\nae_title = "A\\\\B"\n', "node.ae_title"),
    ],
)
def test_config_errors_are_clear(tmp_path: Path, body: str, named: str) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text(body)
    out = xrayd("status", "--config", str(cfg), check=False)
    assert out.returncode == 2
    assert named in out.stderr
    assert "Traceback" not in out.stderr


def test_unreachable_database_is_clear(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, "postgresql+psycopg://nobody:secret@127.0.0.1:1/none")
    out = xrayd("serve", "--config", str(cfg), check=False)
    assert out.returncode != 0
    assert "storage.database_url" in out.stderr
    assert "secret" not in out.stderr
    assert "Traceback" not in out.stderr


def test_registry_commands(tmp_path: Path, database_url: str) -> None:
    cfg = str(write_config(tmp_path, database_url))
    assert "MODALITY" in xrayd("callers", "list", "--config", cfg).stdout
    xrayd("callers", "add", "CT9", "--host", "10.0.0.9", "--config", cfg)
    listed = xrayd("callers", "list", "--config", cfg).stdout
    assert "CT9" in listed and "10.0.0.9" in listed and "cli" in listed
    xrayd("callers", "remove", "CT9", "--host", "10.0.0.9", "--config", cfg)
    assert "CT9" not in xrayd("callers", "list", "--config", cfg).stdout
    bad = xrayd("callers", "add", "WAY_TOO_LONG_AE_TITLE", "--config", cfg, check=False)
    assert bad.returncode == 2 and "16" in bad.stderr

    xrayd(
        "destinations", "add", "pacs2", "PACS2@127.0.0.1:4242", "--send", "sr,pdf", "--config", cfg
    )
    listed = xrayd("destinations", "list", "--config", cfg).stdout
    assert "pacs2" in listed and "sr,pdf" in listed
    failed = xrayd("destinations", "echo", "pacs2", "--timeout", "3", "--config", cfg, check=False)
    assert failed.returncode == 1 and "no association" in failed.stderr
    xrayd("destinations", "remove", "pacs2", "--config", cfg)
    assert "pacs2" not in xrayd("destinations", "list", "--config", cfg).stdout
    status = xrayd("status", "--config", cfg).stdout
    assert "instances: 0" in status and "dead letters: 0" in status


def test_db_upgrade_and_outdated_schema_refused(tmp_path: Path) -> None:
    cfg = str(write_config(tmp_path))
    assert "database at revision" in xrayd("db", "upgrade", "--config", cfg).stdout
    import sqlite3

    with sqlite3.connect(tmp_path / "data" / "xrayd.sqlite3") as db:
        db.execute("update alembic_version set version_num = '0000_older'")
    out = xrayd("serve", "--config", cfg, check=False)
    assert out.returncode == 1
    assert "xrayd db upgrade" in out.stderr and "Traceback" not in out.stderr


class Served:
    def __init__(self, cfg: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("XRAYD_")}
        self.proc = subprocess.Popen(
            [XRAYD, "serve", "--config", str(cfg)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # "xrayd: listening as XRAYD on port N"
        assert "listening" in line, line + (self.proc.stderr.read() if self.proc.stderr else "")
        self.port = int(line.rsplit(" ", 1)[1])
        line = self.proc.stdout.readline()  # "xrayd: web UI on 127.0.0.1 port N"
        assert "web UI" in line, line
        self.web_port = int(line.rsplit(" ", 1)[1])


@pytest.fixture
def served(tmp_path: Path) -> Iterator[list[Served]]:
    procs: list[Served] = []
    yield procs
    for s in procs:
        if s.proc.poll() is None:
            s.proc.kill()
        s.proc.wait()


def test_echo_command_against_serve(tmp_path: Path, served: list[Served]) -> None:
    s = Served(write_config(tmp_path))
    served.append(s)
    out = xrayd("echo", f"XRAYD@127.0.0.1:{s.port}", "--calling-ae", "MODALITY")
    assert "status 0x0000" in out.stdout
    s.proc.send_signal(signal.SIGTERM)
    assert s.proc.wait(timeout=60) == 0


def test_kill_9_while_streaming_loses_no_acknowledged_instance(
    tmp_path: Path, served: list[Served], database_url: str
) -> None:
    cfg = write_config(tmp_path, database_url)
    s = Served(cfg)
    served.append(s)
    study = make_radiograph().StudyInstanceUID
    datasets = [make_radiograph(study_uid=study, seed=i, rows=384, cols=384) for i in range(200)]
    acked: list[str] = []
    killed = threading.Event()

    def on_response(event: object) -> None:
        pass

    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(DX, "1.2.840.10008.1.2.1")
    assoc = ae.associate("127.0.0.1", s.port, ae_title="XRAYD")
    assert assoc.is_established
    for i, ds in enumerate(datasets):
        if i == 60 and not killed.is_set():
            s.proc.send_signal(signal.SIGKILL)  # mid-stream, while the sender keeps going
            killed.set()
        if not assoc.is_established:
            break
        rsp = assoc.send_c_store(ds)
        if "Status" in rsp and rsp.Status == 0:
            acked.append(ds.SOPInstanceUID)
    if assoc.is_established:
        assoc.abort()
    s.proc.wait(timeout=30)
    assert 60 <= len(acked) < 200

    # Restart: every acknowledged instance is on disk, readable and indexed.
    again = Served(cfg)
    served.append(again)
    from config.loader import load_settings
    from storage.schema import Instance
    from xrayd.runtime.node import open_storage

    storage = open_storage(load_settings(cfg), create_if_empty=False, require_current=True)
    with storage.sessions() as session:
        indexed = {i.sop_instance_uid: i.spool_path for i in session.scalars(select(Instance))}
    storage.engine.dispose()
    for uid in acked:
        assert uid in indexed, "an acknowledged instance is missing from the index"
        back = pydicom.dcmread(storage.spool.absolute(indexed[uid]))
        assert back.SOPInstanceUID == uid
        assert back.pixel_array.shape == (384, 384)
    assert not list(storage.spool.tmp_dir().iterdir()), "partial files were not cleaned up"
    again.proc.send_signal(signal.SIGTERM)
    assert again.proc.wait(timeout=60) == 0


def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(entry.name))
    return kids


def _listening_inode(port: int) -> str:
    """The inode of the only socket listening on ``port`` (from /proc/net/tcp)."""
    found = [
        fields[9]
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
        if (fields := line.split())[3] == "0A" and int(fields[1].split(":")[1], 16) == port
    ]
    assert len(found) == 1, f"{len(found)} sockets listen on port {port}"
    return found[0]


def test_listener_processes_share_the_port(tmp_path: Path, served: list[Served]) -> None:
    cfg = write_config(tmp_path)
    cfg.write_text(cfg.read_text().replace("port = 0\n", "port = 0\nlistener_processes = 3\n", 1))
    s = Served(cfg)
    served.append(s)
    children = _children(s.proc.pid)
    assert len(children) == 2
    from dicom_node.scu import RemoteAE, store_datasets

    remote = RemoteAE("XRAYD", "127.0.0.1", s.port)
    sent = [make_radiograph(seed=i) for i in range(12)]
    for ds in sent:  # one association each, taken by whichever process is free
        assert store_datasets(remote, "MODALITY", [ds]) == [0]
    # One listening socket, held by every process (not one socket each, bound again).
    inode = _listening_inode(s.port)
    for pid in [s.proc.pid, *children]:
        links = {os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()}
        assert f"socket:[{inode}]" in links
    from config.loader import load_settings
    from storage.schema import Instance
    from xrayd.runtime.node import open_storage

    storage = open_storage(load_settings(cfg), create_if_empty=False, require_current=True)
    with storage.sessions() as session:
        indexed = set(session.scalars(select(Instance.sop_instance_uid)))
    storage.engine.dispose()
    assert indexed == {ds.SOPInstanceUID for ds in sent}
    # Killing the main process takes its listener processes with it.
    s.proc.kill()
    s.proc.wait()
    for child in children:
        try:
            fd = os.pidfd_open(child)
        except ProcessLookupError:
            continue  # already gone
        try:
            readable, _, _ = io_select.select([fd], [], [], 60)  # readable once it has exited
            assert readable, "a listener process outlived the killed main process"
        finally:
            os.close(fd)


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    out = xrayd("demo", "--data-dir", str(tmp_path / "demo"), check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "demo OK" in out.stdout
    assert "sent 3 synthetic studies (4 DX images), each acknowledged" in out.stdout
    assert "INTRUDER) was rejected" in out.stdout
    # It says what it sends and which model answers, and claims no accuracy on phantoms.
    assert "trained on FracAtlas" in out.stdout
    assert "not the model's accuracy" in out.stdout
    # Every study's row in the results table lists its SR, SCs and PDF at the PACS.
    rows = [
        line.split()
        for line in out.stdout.splitlines()
        if line.strip()[:1].isdigit() and line.split()[1:2] in (["drawn"], ["none"])
    ]
    assert len(rows) == 3, out.stdout
    for row in rows:
        assert row[2] in ("present", "absent", "indeterminate")
        assert "SRx1" in row and "PDFx1" in row and any(c.startswith("SCx") for c in row)
    assert "dead letters: 0" in out.stdout
    assert list((tmp_path / "demo" / "run" / "spool" / "results").glob("*/*/report-*.pdf"))
    assert "Traceback" not in out.stderr


def test_serve_runs_the_web_ui_and_api(tmp_path: Path, served: list[Served]) -> None:
    import httpx2 as httpx

    s = Served(write_config(tmp_path))
    served.append(s)
    base = f"http://127.0.0.1:{s.web_port}"
    assert httpx.get(f"{base}/health").json() == {"status": "ok"}
    assert httpx.get(f"{base}/api/v1/studies").status_code == 401
    login = httpx.get(f"{base}/worklist")
    assert login.status_code == 401 and 'action="/login"' in login.text
    s.proc.send_signal(signal.SIGTERM)
    assert s.proc.wait(timeout=60) == 0


def test_serve_refuses_a_public_web_ui_without_users(tmp_path: Path) -> None:
    cfg = str(write_config(tmp_path, web_host="0.0.0.0"))
    out = xrayd("serve", "--config", cfg, check=False)
    assert out.returncode == 2 and "no web user exists" in out.stderr
    assert "Traceback" not in out.stderr
    pw = tmp_path / "pw"
    pw.write_text("a long enough password\n")
    xrayd("users", "add", "boss", "--role", "admin", "--password-file", str(pw), "--config", cfg)
    assert "boss" in xrayd("users", "list", "--config", cfg).stdout
    token = xrayd("users", "token", "boss", "--config", cfg).stdout.strip()
    assert token.startswith("xrd_")
    assert token not in xrayd("users", "tokens", "--config", cfg).stdout
