"""``xrayd serve`` speaks sd_notify: READY=1 once it listens, STOPPING=1 on SIGTERM.

The test plays systemd's part: a datagram socket as $NOTIFY_SOCKET, with SO_PASSCRED so that
each message carries its sender's pid (systemd's NotifyAccess=main accepts only the main
process's messages).
"""

from __future__ import annotations

import socket
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from pynetdicom import AE

from serve_process import ServeProcess, clean_env, threads_taking_stop_signals, write_config

VERIFICATION = "1.2.840.10008.1.1"


class NotifySocket:
    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="xn-"))  # sun_path holds 108 bytes
        self.path = self.folder / "notify"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(str(self.path))

    def receive(self, timeout: float) -> tuple[int, dict[str, str]]:
        """The next message: its sender's pid and its assignments."""
        self.sock.settimeout(timeout)
        data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        pid = 0
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = struct.unpack("iII", payload[:12])[0]
        lines = data.decode().split("\n")
        return pid, dict(line.split("=", 1) for line in lines)

    def receive_until(self, key: str, timeout: float) -> list[tuple[int, dict[str, str]]]:
        seen = []
        while True:
            pid, message = self.receive(timeout)
            seen.append((pid, message))
            if key in message:
                return seen

    def close(self) -> None:
        self.sock.close()
        self.path.unlink()
        self.folder.rmdir()


@pytest.fixture
def notify_socket() -> Iterator[NotifySocket]:
    s = NotifySocket()
    try:
        yield s
    finally:
        s.close()


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


def test_ready_after_listening_and_stopping_on_sigterm(
    tmp_path: Path, notify_socket: NotifySocket
) -> None:
    cfg = write_config(tmp_path)
    cfg.write_text(cfg.read_text().replace("port = 0\n", "port = 0\nlistener_processes = 2\n", 1))
    served = ServeProcess(cfg, env=clean_env(NOTIFY_SOCKET=str(notify_socket.path)))
    try:
        before_ready = notify_socket.receive_until("READY", timeout=120)
        ready = before_ready[-1][1]
        assert ready["READY"] == "1"
        assert {"STATUS": "opening the database"} in [m for _, m in before_ready]
        assert ready["STATUS"] == (
            f"listening as XRAYD on port {served.port}, web UI on 127.0.0.1 port {served.web_port}"
        )
        # READY means it: an association is accepted at once
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(VERIFICATION)
        assoc = ae.associate("127.0.0.1", served.port, ae_title="XRAYD")
        assert assoc.is_established
        assert assoc.send_c_echo().Status == 0
        assoc.release()
        # a stop signal can reach only the main thread: any other thread open to it (torch's
        # import starts one) would let a SIGTERM before sigwait() kill the process outright
        assert threads_taking_stop_signals(served.proc.pid) == []
        # only the main process speaks for the service: the listener process has no socket
        children = _children(served.proc.pid)
        assert children
        for child in children:
            environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
            assert not any(v.startswith(b"NOTIFY_SOCKET=") for v in environ)

        served.terminate()
        after = notify_socket.receive_until("STOPPING", timeout=60)
        assert after[-1][1]["STOPPING"] == "1"
        assert served.proc.wait(timeout=90) == 0, served.stderr_text()
        assert {p for p, _ in before_ready + after} == {served.proc.pid}
    finally:
        served.kill()


def test_without_notify_socket_and_stopped_while_the_model_loads(tmp_path: Path) -> None:
    """No $NOTIFY_SOCKET: nothing to notify. SIGTERM at once, while the model still loads in
    the background: the stop waits for it and exits 0 (it used to end in SIGABRT, "terminate
    called without an active exception", as the interpreter exited under torch's threads)."""
    served = ServeProcess(write_config(tmp_path))
    try:
        served.terminate()
        assert served.proc.wait(timeout=90) == 0, served.stderr_text()
        assert "terminate called" not in served.stderr_text()
    finally:
        served.kill()
