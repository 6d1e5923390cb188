"""TLS destinations: the certificate's name is checked by default (issue 15).

The name checked is the destination's ``server_hostname``, else its ``host``; ``check_hostname =
false`` turns the check off (the chain is still verified). A throwaway PKI is made with the
``openssl`` command-line tool; the "PACS" is a pynetdicom Storage SCP over TLS on 127.0.0.1.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt

from config.settings import DestinationTLSSettings
from dicom_node.errors import PeerUnreachableError
from dicom_node.hardening import quiet_identifiers
from dicom_node.scu import RemoteAE, echo
from dicom_node.sop_classes import SECONDARY_CAPTURE
from dicom_node.tls import ClientTLS, server_context
from xrayd.pipeline.delivery import DeliveryReport, stored_tls

import node_helpers
from helpers import need
from pki_helpers import make_ca, make_leaf

WAIT = 20.0  # upper bound for an event that should come within milliseconds
VERIFICATION = "1.2.840.10008.1.1"
T0 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only: TLS does not touch the database layer."""
    return f"sqlite:///{tmp_path / 'db' / 'xrayd.sqlite3'}"


# -- a throwaway PKI -------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca: Path
    #: a server certificate for pacs.elsewhere.example only
    elsewhere: tuple[Path, Path]
    #: a server certificate for localhost and 127.0.0.1
    loopback: tuple[Path, Path]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    need(shutil.which("openssl") is not None, "the openssl command-line tool is not installed")
    directory = tmp_path_factory.mktemp("pki")
    ca = make_ca(directory, "ca")
    return Pki(
        ca=ca[0],
        elsewhere=make_leaf(
            directory, "elsewhere", ca, san="DNS:pacs.elsewhere.example", usage="serverAuth"
        ),
        loopback=make_leaf(directory, "loopback", ca, usage="serverAuth"),
    )


# -- the PACS --------------------------------------------------------------------------------


class TlsPACS:
    """A Storage SCP over TLS on 127.0.0.1 presenting ``cert`` (no client certificate asked)."""

    def __init__(self, cert: tuple[Path, Path]) -> None:
        quiet_identifiers()
        self.ae = AE(ae_title="PACS")
        self.ae.add_supported_context(
            SECONDARY_CAPTURE, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
        )
        self.ae.add_supported_context(VERIFICATION)
        self.received: list[str] = []
        context = server_context(cert[0], cert[1], None, require_client_cert=False)
        self.server = self.ae.start_server(
            ("127.0.0.1", 0),
            block=False,
            ssl_context=context,
            evt_handlers=[(evt.EVT_C_STORE, self._on_store)],
        )
        assert self.server is not None
        self.port = int(self.server.server_address[1])

    def _on_store(self, event: Any) -> int:
        self.received.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    def stop(self) -> None:
        assert self.server is not None
        self.server.shutdown()


@pytest.fixture
def elsewhere_pacs(pki: Pki) -> Iterator[TlsPACS]:
    peer = TlsPACS(pki.elsewhere)
    yield peer
    peer.stop()


@pytest.fixture
def loopback_pacs(pki: Pki) -> Iterator[TlsPACS]:
    peer = TlsPACS(pki.loopback)
    yield peer
    peer.stop()


def deliver_once(
    tmp_path: Path, database_url: str, port: int, tls: dict[str, Any]
) -> DeliveryReport:
    """Seed one TLS destination from the settings (as ``xrayd serve`` stores it), queue one
    result to it and run one delivery attempt."""
    destination = {"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": port}
    report: DeliveryReport = node_helpers.deliver_once(
        tmp_path, database_url, {**destination, "tls": tls}, send_timeout=WAIT, now=T0
    )
    return report


# -- deliveries ------------------------------------------------------------------------------


def test_a_certificate_for_another_name_is_refused_by_default(
    elsewhere_pacs: TlsPACS, pki: Pki, tmp_path: Path, database_url: str
) -> None:
    """No server_hostname: the certificate must name the host (here 127.0.0.1); it names
    pacs.elsewhere.example only, so the delivery is refused, for good."""
    report = deliver_once(tmp_path, database_url, elsewhere_pacs.port, {"ca_file": str(pki.ca)})
    assert report.recorded == "dead"
    assert not report.outcome.transient
    assert "TLS handshake failed: certificate verify failed" in report.outcome.message
    assert "mismatch" in report.outcome.message  # OpenSSL: "IP address mismatch, ..."
    assert elsewhere_pacs.received == []


def test_check_hostname_false_accepts_any_certificate_the_ca_signed(
    elsewhere_pacs: TlsPACS, pki: Pki, tmp_path: Path, database_url: str
) -> None:
    tls = {"ca_file": str(pki.ca), "check_hostname": False}
    report = deliver_once(tmp_path, database_url, elsewhere_pacs.port, tls)
    assert report.recorded == "sent", report.outcome.message
    assert elsewhere_pacs.received == [report.claim.sop_instance_uid]


def test_server_hostname_names_what_the_certificate_must_carry(
    elsewhere_pacs: TlsPACS, pki: Pki, tmp_path: Path, database_url: str
) -> None:
    tls = {"ca_file": str(pki.ca), "server_hostname": "pacs.elsewhere.example"}
    report = deliver_once(tmp_path, database_url, elsewhere_pacs.port, tls)
    assert report.recorded == "sent", report.outcome.message


def test_a_certificate_naming_the_host_is_accepted(
    loopback_pacs: TlsPACS, pki: Pki, tmp_path: Path, database_url: str
) -> None:
    report = deliver_once(tmp_path, database_url, loopback_pacs.port, {"ca_file": str(pki.ca)})
    assert report.recorded == "sent", report.outcome.message
    assert loopback_pacs.received == [report.claim.sop_instance_uid]


def test_check_hostname_false_still_verifies_the_chain(
    loopback_pacs: TlsPACS, tmp_path: Path, database_url: str
) -> None:
    """Turning the name check off does not turn off the chain: a CA that did not sign the
    destination's certificate is still refused."""
    other, _ = make_ca(tmp_path, "other-ca")
    tls = {"ca_file": str(other), "check_hostname": False}
    report = deliver_once(tmp_path, database_url, loopback_pacs.port, tls)
    assert report.recorded == "dead"
    assert "certificate verify failed" in report.outcome.message


# -- C-ECHO and the TLS layer itself -------------------------------------------------------------


def test_echo_checks_the_name_too(elsewhere_pacs: TlsPACS, pki: Pki) -> None:
    def remote(tls: ClientTLS) -> RemoteAE:
        return RemoteAE("PACS", "127.0.0.1", elsewhere_pacs.port, tls=tls)

    with pytest.raises(PeerUnreachableError, match="certificate verify failed"):
        echo(remote(ClientTLS(pki.ca)), "XRAYD", timeout=WAIT)
    assert echo(remote(ClientTLS(pki.ca, check_hostname=False)), "XRAYD", timeout=WAIT) == 0


@pytest.fixture
def tls_listener(pki: Pki) -> Iterator[int]:
    """A bare TLS server on 127.0.0.1 presenting the pacs.elsewhere.example certificate:
    completes handshakes one at a time until closed."""
    context = server_context(*pki.elsewhere, None, require_client_cert=False)
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)  # until the client closes
            except (OSError, ssl.SSLError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    stop.set()
    listener.shutdown(socket.SHUT_RDWR)
    listener.close()
    thread.join(WAIT)


def _handshake(tls: ClientTLS, host: str, port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        context = tls.context()
        with context.wrap_socket(sock, server_hostname=tls.expected_name(host)):
            pass


def test_a_destination_host_name_must_match_the_certificate(pki: Pki, tls_listener: int) -> None:
    """A destination named by DNS name (here pacs.example.org, connected on loopback) whose
    certificate names another host: "Hostname mismatch"; the named host passes."""
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        _handshake(ClientTLS(pki.ca), "pacs.example.org", tls_listener)
    _handshake(ClientTLS(pki.ca), "pacs.elsewhere.example", tls_listener)
    _handshake(ClientTLS(pki.ca, check_hostname=False), "pacs.example.org", tls_listener)


# -- settings and the stored mapping ---------------------------------------------------------


def test_expected_name() -> None:
    ca = Path("/ca.pem")
    assert ClientTLS(ca).expected_name("pacs.example.org") == "pacs.example.org"
    assert ClientTLS(ca, server_hostname="pacs").expected_name("10.0.0.9") == "pacs"
    assert ClientTLS(ca, check_hostname=False).expected_name("10.0.0.9") is None
    unchecked = ClientTLS(ca, server_hostname="pacs", check_hostname=False)
    assert unchecked.expected_name("10.0.0.9") == "pacs"  # still sent as SNI


def test_the_stored_mapping_round_trips_check_hostname() -> None:
    checked = DestinationTLSSettings.model_validate({"ca_file": "/ca.pem"})
    assert stored_tls(checked) == {"ca_file": "/ca.pem"}  # absent: checked
    assert ClientTLS.from_mapping({"ca_file": "/ca.pem"}).check_hostname
    off = DestinationTLSSettings.model_validate({"ca_file": "/ca.pem", "check_hostname": False})
    mapping = stored_tls(off)
    assert mapping == {"ca_file": "/ca.pem", "check_hostname": False}
    assert mapping is not None
    assert not ClientTLS.from_mapping(mapping).check_hostname
    with pytest.raises(ValueError, match="check_hostname must be true or false"):
        ClientTLS.from_mapping({"ca_file": "/ca.pem", "check_hostname": "no"})
