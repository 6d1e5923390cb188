"""sd_notify over a real AF_UNIX datagram socket: paths, the abstract namespace, no-ops."""

from __future__ import annotations

import os
import socket
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from xrayd.runtime.systemd import NOTIFY_SOCKET_ENV, Notifier


@pytest.fixture
def receiver() -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket and its $NOTIFY_SOCKET value (short path: sun_path is small)."""
    folder = Path(tempfile.mkdtemp(prefix="xn-"))
    path = folder / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(5)
    try:
        yield sock, str(path)
    finally:
        sock.close()
        path.unlink()
        folder.rmdir()


def test_ready_status_stopping_are_sent(receiver: tuple[socket.socket, str]) -> None:
    sock, address = receiver
    n = Notifier(address)
    assert n.enabled
    assert n.status("opening the database")
    assert sock.recv(4096) == b"STATUS=opening the database"
    assert n.ready("listening\non port 11112")  # one line: systemctl shows a single line
    assert sock.recv(4096) == b"READY=1\nSTATUS=listening on port 11112"
    assert n.stopping()
    assert sock.recv(4096) == b"STOPPING=1"


def test_abstract_namespace() -> None:
    name = f"xrayd-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        assert Notifier("@" + name).ready()
        assert sock.recv(4096) == b"READY=1"


def test_no_socket_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(NOTIFY_SOCKET_ENV, raising=False)
    n = Notifier.from_environment()
    assert not n.enabled
    assert not n.ready() and not n.stopping() and not n.status("x")


def test_from_environment_unsets_the_variable(
    receiver: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, address = receiver
    monkeypatch.setenv(NOTIFY_SOCKET_ENV, address)
    n = Notifier.from_environment()
    assert NOTIFY_SOCKET_ENV not in os.environ  # children do not speak for the service
    assert n.ready()
    assert sock.recv(4096) == b"READY=1"
    env = {NOTIFY_SOCKET_ENV: address}
    assert Notifier.from_environment(env, unset=False).enabled and env


def test_a_vanished_socket_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    n = Notifier(str(tmp_path / "gone"))
    assert not n.ready()
    assert "could not notify systemd" in caplog.text


def test_unsupported_address_is_ignored(caplog: pytest.LogCaptureFixture) -> None:
    n = Notifier("vsock:2:1234")
    assert not n.enabled and not n.ready()
    assert "not an AF_UNIX socket address" in caplog.text


def test_lines_must_be_assignments(receiver: tuple[socket.socket, str]) -> None:
    _, address = receiver
    with pytest.raises(ValueError):
        Notifier(address).notify("READY")
    with pytest.raises(ValueError):
        Notifier(address).notify("STATUS=a\nREADY=1")
