"""C-ECHO failures named by cause, with the fix to try (:func:`dicom_node.scu.diagnose_echo`).

Every peer is real and on loopback: pynetdicom AEs (plain and TLS, rejecting either AE title,
without Verification, aborting, answering a failure status), a raw socket that answers an
association request with an A-ABORT, a closed port, and a name under ``.invalid`` (RFC 2606:
never resolves). Threads are synchronised by the association itself; no sleeps.
"""

from __future__ import annotations

import shutil
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pynetdicom import AE, evt

from dicom_node.echo_diagnosis import EchoCause, EchoDiagnosis
from dicom_node.hardening import quiet_identifiers
from dicom_node.scu import OutgoingLimits, RemoteAE, diagnose_echo
from dicom_node.sop_classes import SECONDARY_CAPTURE
from dicom_node.tls import ClientTLS, server_context

from helpers import need
from pki_helpers import make_ca, make_leaf

VERIFICATION = "1.2.840.10008.1.1"
LIMITS = OutgoingLimits(timeout=20.0, connect_timeout=20.0)  # bounds, never waited for
US = "XRAYD"


@dataclass(frozen=True)
class Pki:
    ca: Path
    other_ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    need(shutil.which("openssl") is not None, "the openssl command-line tool is not installed")
    directory = tmp_path_factory.mktemp("pki")
    ca = make_ca(directory, "ca")
    other = make_ca(directory, "other-ca")
    server = make_leaf(directory, "localhost", ca, serial=1)
    client = make_leaf(directory, "modality", ca, serial=2)
    return Pki(ca[0], other[0], *server, *client)


Peer = Callable[..., int]


@pytest.fixture
def peer() -> Iterator[Peer]:
    """Start a pynetdicom SCP on 127.0.0.1 (AE title PACS); returns its port."""
    servers: list[Any] = []

    def start(
        *,
        contexts: tuple[str, ...] = (VERIFICATION,),
        handlers: list[Any] | None = None,
        ssl_context: Any = None,
        **settings: Any,
    ) -> int:
        quiet_identifiers()
        ae = AE(ae_title="PACS")
        for uid in contexts:
            ae.add_supported_context(uid)
        for name, value in settings.items():
            setattr(ae, name, value)
        server = ae.start_server(
            ("127.0.0.1", 0), block=False, evt_handlers=handlers or [], ssl_context=ssl_context
        )
        assert server is not None
        servers.append(server)
        return int(server.server_address[1])

    yield start
    for server in servers:
        server.shutdown()


def _echo(port: int, *, ae: str = "PACS", host: str = "127.0.0.1", **kw: Any) -> EchoDiagnosis:
    return diagnose_echo(RemoteAE(ae, host, port, **kw), US, limits=LIMITS)


def _assert(d: EchoDiagnosis, cause: EchoCause, *words: str) -> None:
    assert d.cause is cause, d
    assert not d.ok and d.fix, d
    for word in words:
        assert word in f"{d.explanation} | {d.fix}", (word, d)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_success(peer: Peer) -> None:
    d = _echo(peer())
    assert d.ok and d.cause is EchoCause.OK and d.status == 0 and d.fix is None
    assert "answered the C-ECHO (status 0x0000)" in d.explanation


def test_wrong_called_ae_title(peer: Peer) -> None:
    port = peer(require_called_aet=True)
    d = _echo(port, ae="NOTPACS")
    _assert(d, EchoCause.CALLED_AE_UNKNOWN, "called AE title not recognised", "NOTPACS")
    assert d.explanation.startswith(f"no association with NOTPACS@127.0.0.1:{port}: rejected")
    assert "check the destination's AE title" in d.fix  # type: ignore[operator]


def test_unknown_calling_ae_title(peer: Peer) -> None:
    d = _echo(peer(require_calling_aet=["MODALITY"]))
    _assert(d, EchoCause.CALLING_AE_UNKNOWN, "calling AE title not recognised")
    assert d.fix == (
        "the PACS does not know xrayd's AE title XRAYD: add it on the PACS "
        "(with this machine's address if the PACS checks it)"
    )


def test_association_limit_is_busy(peer: Peer) -> None:
    # one association at most, and it is held open by the first echo's handler
    held, release = threading.Event(), threading.Event()

    def hold(event: Any) -> int:
        held.set()
        release.wait(30)
        return 0

    port = peer(maximum_associations=1, handlers=[(evt.EVT_C_ECHO, hold)])
    first: list[EchoDiagnosis] = []
    worker = threading.Thread(target=lambda: first.append(_echo(port)))
    worker.start()
    try:
        assert held.wait(30)
        _assert(_echo(port), EchoCause.BUSY, "local limit exceeded", "try again later")
    finally:
        release.set()
        worker.join(30)
    assert first[0].ok


def test_closed_port_is_refused() -> None:
    port = _closed_port()
    d = _echo(port)
    _assert(d, EchoCause.REFUSED, f"nothing listens on 127.0.0.1:{port}", "check the port")
    assert d.explanation.startswith(f"no association with PACS@127.0.0.1:{port}")


def test_unresolvable_name_is_dns() -> None:
    d = _echo(104, host="pacs.xrayd-test.invalid")
    _assert(d, EchoCause.DNS, "'pacs.xrayd-test.invalid' does not resolve", "IP address")


def test_peer_that_accepts_then_aborts(peer: Peer) -> None:
    def abort(event: Any) -> int:
        event.assoc.abort()
        return 0

    d = _echo(peer(handlers=[(evt.EVT_C_ECHO, abort)]))
    _assert(d, EchoCause.NO_RESPONSE, "no C-ECHO response", "Verification")


@pytest.fixture
def aborting_peer() -> Iterator[int]:
    """A raw TCP peer that answers the first association request with an A-ABORT PDU."""
    server = socket.create_server(("127.0.0.1", 0))
    port = int(server.getsockname()[1])

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(6)  # the request's header: enough to know it came
            conn.sendall(struct.pack(">BBLBBBB", 0x07, 0, 4, 0, 0, 0, 0))
            conn.recv(1)  # until we close

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield port
    thread.join(30)
    server.close()


def test_peer_that_aborts_the_association_request(aborting_peer: int) -> None:
    d = _echo(aborting_peer)
    _assert(d, EchoCause.ABORTED, "aborted by the peer", "XRAYD", "add it on the PACS", "TLS")


def test_verification_not_accepted(peer: Peer) -> None:
    d = _echo(peer(contexts=(SECONDARY_CAPTURE,)))
    _assert(d, EchoCause.VERIFICATION_NOT_ACCEPTED, "not the Verification SOP class")


def test_failure_status(peer: Peer) -> None:
    d = _echo(peer(handlers=[(evt.EVT_C_ECHO, lambda event: 0x0211)]))
    _assert(d, EchoCause.STATUS, "status 0x0211 (unrecognised operation)")
    assert d.status == 0x0211


# -- TLS -----------------------------------------------------------------------------------------


def _client(pki: Pki, **overrides: Any) -> ClientTLS:
    values: dict[str, Any] = {
        "ca_file": pki.ca,
        "cert_file": pki.client_cert,
        "key_file": pki.client_key,
        "server_hostname": "localhost",
    }
    values.update(overrides)
    return ClientTLS(**values)


def _tls_peer(peer: Peer, pki: Pki, *, require_client_cert: bool = True) -> int:
    context = server_context(pki.server_cert, pki.server_key, pki.ca, require_client_cert)
    return peer(ssl_context=context)


def test_tls_success(peer: Peer, pki: Pki) -> None:
    assert _echo(_tls_peer(peer, pki), tls=_client(pki)).ok


def test_tls_destination_against_a_plain_peer(peer: Peer, pki: Pki) -> None:
    d = _echo(peer(), tls=_client(pki))
    _assert(d, EchoCause.TLS_NOT_SPOKEN, "does not speak TLS", "turn TLS off")


def test_plain_destination_against_a_tls_peer(peer: Peer, pki: Pki) -> None:
    d = _echo(_tls_peer(peer, pki))
    _assert(d, EchoCause.TLS_REQUIRED, "requires DICOM TLS", "enable TLS for this destination")


def test_tls_peer_not_trusted(peer: Peer, pki: Pki) -> None:
    d = _echo(_tls_peer(peer, pki), tls=_client(pki, ca_file=pki.other_ca))
    _assert(d, EchoCause.TLS_UNTRUSTED, "not trusted", "CA file")


def test_tls_name_mismatch(peer: Peer, pki: Pki) -> None:
    d = _echo(_tls_peer(peer, pki), tls=_client(pki, server_hostname="pacs.example.org"))
    _assert(d, EchoCause.TLS_HOSTNAME, "expected name", "pacs.example.org", "server_hostname")


def test_tls_peer_wants_a_client_certificate(peer: Peer, pki: Pki) -> None:
    d = _echo(_tls_peer(peer, pki), tls=_client(pki, cert_file=None, key_file=None))
    _assert(d, EchoCause.TLS_CLIENT_CERT, "client certificate")


def test_tls_to_a_closed_port_is_refused(pki: Pki) -> None:
    d = _echo(_closed_port(), tls=_client(pki))
    _assert(d, EchoCause.REFUSED, "connection refused")


def test_unusable_tls_files(tmp_path: Path) -> None:
    d = _echo(_closed_port(), tls=ClientTLS(ca_file=tmp_path / "missing.pem"))
    _assert(d, EchoCause.TLS_SETUP, "TLS set-up failed: FileNotFoundError")
    assert str(tmp_path) not in d.explanation  # no paths or file contents


# -- the CLI -------------------------------------------------------------------------------------


def test_cli_names_the_cause_and_the_fix(
    peer: Peer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from xrayd.cli.main import main

    port = peer(require_calling_aet=["MODALITY"])
    config = tmp_path / "cli.toml"
    config.write_text(
        f'[node]\nae_title = "XRAYD"\n[storage]\ndata_dir = "{tmp_path / "cli"}"\n'
        f'[[destinations]]\nname = "pacs"\nae_title = "PACS"\nhost = "127.0.0.1"\n'
        f"port = {port}\n"
    )
    assert main(["destinations", "echo", "pacs", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "C-ECHO pacs failed (calling-ae-unknown): no association with PACS@" in err
    assert "fix: the PACS does not know xrayd's AE title XRAYD: add it on the PACS" in err
