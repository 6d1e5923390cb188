"""DICOM TLS: the listener with ``[node.tls]``, deliveries to a TLS peer, and the TLS settings.

A throwaway PKI (two CAs, a server and client certificates) is made with the ``openssl``
command-line tool. Peers are pynetdicom AEs on loopback; threads are synchronised with events
and queues (the only wait on the clock is the handshake timeout itself, which is under test).
"""

from __future__ import annotations

import queue
import shutil
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from sqlalchemy import select

from config.errors import ConfigError
from config.loader import load_settings
from dicom_node import hardening
from dicom_node.errors import PeerUnreachableError
from dicom_node.hardening import quiet_identifiers
from dicom_node.scu import RemoteAE, echo, store_datasets
from dicom_node.sop_classes import SECONDARY_CAPTURE
from dicom_node.tls import ClientTLS, server_context
from storage.schema import Instance
from xrayd.pipeline.delivery import DeliveryReport
from xrayd.runtime.node import Node, open_storage

import node_helpers
from dicom_factory import DX, make_radiograph
from helpers import make_settings, need
from pki_helpers import make_ca, make_leaf

StartNode = Callable[..., Any]
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
    other_ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path  # a client certificate from the other CA
    stranger_key: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    need(shutil.which("openssl") is not None, "the openssl command-line tool is not installed")
    directory = tmp_path_factory.mktemp("pki")
    ca = make_ca(directory, "ca")
    other = make_ca(directory, "other-ca")
    server = make_leaf(directory, "localhost", ca, serial=1)
    client = make_leaf(directory, "modality", ca, serial=2)
    stranger = make_leaf(directory, "stranger", other, serial=3)
    return Pki(ca[0], other[0], *server, *client, *stranger)


def node_tls(pki: Pki, **overrides: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "cert_file": str(pki.server_cert),
        "key_file": str(pki.server_key),
        "ca_file": str(pki.ca),
    }
    values.update(overrides)
    return values


def client_tls(pki: Pki, **overrides: Any) -> ClientTLS:
    values: dict[str, Any] = {
        "ca_file": pki.ca,
        "cert_file": pki.client_cert,
        "key_file": pki.client_key,
        "server_hostname": "localhost",
    }
    values.update(overrides)
    return ClientTLS(**values)


# -- the listener ------------------------------------------------------------------------------


@pytest.fixture
def handshakes(monkeypatch: pytest.MonkeyPatch) -> queue.Queue[tuple[int, bool]]:
    """(client port, handshake succeeded) for each TLS handshake the listener finished."""
    done: queue.Queue[tuple[int, bool]] = queue.Queue()
    original = hardening.accept_tls

    def spy(context: ssl.SSLContext, sock: socket.socket, timeout: float, peer: str) -> Any:
        port = int(sock.getpeername()[1])
        tls = original(context, sock, timeout, peer)
        done.put((port, tls is not None))
        return tls

    monkeypatch.setattr(hardening, "accept_tls", spy)
    return done


def remote(node: Any, tls: ClientTLS | None) -> RemoteAE:
    return RemoteAE("XRAYD", "127.0.0.1", node.scp.port, tls=tls)


def test_tls_node_takes_echo_and_store_from_a_client_with_a_certificate(
    start_node: StartNode, pki: Pki, handshakes: queue.Queue[tuple[int, bool]]
) -> None:
    node = start_node(node={"tls": node_tls(pki)})
    assert echo(remote(node, client_tls(pki)), "MODALITY", timeout=WAIT) == 0
    ds = make_radiograph(sop_class=DX, rows=64, cols=64)
    statuses = store_datasets(remote(node, client_tls(pki)), "MODALITY", [ds], timeout=WAIT)
    assert statuses == [0x0000]
    with node.storage.sessions() as session:
        stored = session.scalars(select(Instance.sop_instance_uid)).all()
    assert stored == [ds.SOPInstanceUID]
    assert [ok for _, ok in (handshakes.get(timeout=WAIT) for _ in range(2))] == [True, True]


@pytest.mark.parametrize("client", ["plain", "no certificate", "other CA"])
def test_tls_node_refuses_clients_it_cannot_verify_and_keeps_serving(
    start_node: StartNode,
    pki: Pki,
    handshakes: queue.Queue[tuple[int, bool]],
    caplog: pytest.LogCaptureFixture,
    client: str,
) -> None:
    node = start_node(node={"tls": node_tls(pki)})
    tls = {
        "plain": None,
        "no certificate": client_tls(pki, cert_file=None, key_file=None),
        "other CA": client_tls(pki, cert_file=pki.stranger_cert, key_file=pki.stranger_key),
    }[client]
    with caplog.at_level("INFO"), pytest.raises(PeerUnreachableError) as err:
        echo(remote(node, tls), "MODALITY", timeout=WAIT)
    if tls is not None:  # the server's alert reached the client and is named
        assert "TLS handshake failed" in str(err.value)
    _, ok = handshakes.get(timeout=WAIT)
    assert not ok
    assert "TLS handshake with 127.0.0.1 failed" in caplog.text
    # the listener goes on serving
    assert echo(remote(node, client_tls(pki)), "MODALITY", timeout=WAIT) == 0
    assert handshakes.get(timeout=WAIT)[1]


def test_silent_client_is_dropped_after_the_handshake_timeout_while_others_are_served(
    start_node: StartNode,
    pki: Pki,
    handshakes: queue.Queue[tuple[int, bool]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    timeout = 1.0  # artim_timeout_seconds bounds the handshake (and the request after it)
    node = start_node(node={"tls": node_tls(pki), "artim_timeout_seconds": timeout})
    started = time.monotonic()
    with caplog.at_level("INFO"), socket.create_connection(("127.0.0.1", node.scp.port)) as silent:
        silent.settimeout(WAIT)
        silent_port = silent.getsockname()[1]
        # served while the silent connection holds its handshake open
        assert echo(remote(node, client_tls(pki)), "MODALITY", timeout=WAIT) == 0
        first = handshakes.get(timeout=WAIT)
        assert first[0] != silent_port and first[1]
        # then the silent one is closed by the listener, after the timeout
        assert silent.recv(1) == b""
        elapsed = time.monotonic() - started
    assert handshakes.get(timeout=WAIT) == (silent_port, False)
    assert elapsed >= timeout
    assert "not completed within 1.0 s; connection closed" in caplog.text


def test_cli_echoes_a_tls_destination(
    start_node: StartNode, pki: Pki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from xrayd.cli.main import main

    node = start_node(node={"tls": node_tls(pki)})
    config = tmp_path / "cli.toml"
    config.write_text(
        f'[node]\nae_title = "MODALITY"\n[storage]\ndata_dir = "{tmp_path / "cli"}"\n'
        f'[[destinations]]\nname = "self"\nae_title = "XRAYD"\nhost = "127.0.0.1"\n'
        f"port = {node.scp.port}\n"
        f'tls = {{ ca_file = "{pki.ca}", cert_file = "{pki.client_cert}", '
        f'key_file = "{pki.client_key}", server_hostname = "localhost" }}\n'
    )
    assert main(["destinations", "echo", "self", "--config", str(config)]) == 0
    assert "status 0x0000" in capsys.readouterr().out


# -- deliveries to a TLS peer --------------------------------------------------------------------


class TlsPACS:
    """A Storage SCP over TLS on 127.0.0.1 that requires a client certificate from ``pki.ca``."""

    def __init__(self, pki: Pki) -> None:
        quiet_identifiers()
        self.ae = AE(ae_title="PACS")
        self.ae.add_supported_context(
            SECONDARY_CAPTURE, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
        )
        self.ae.add_supported_context(VERIFICATION)
        self.received: list[str] = []
        context = server_context(pki.server_cert, pki.server_key, pki.ca, True)
        self.server = self.ae.start_server(
            ("127.0.0.1", 0),
            block=False,
            ssl_context=context,
            evt_handlers=[(evt.EVT_C_STORE, self._on_store)],
        )
        self.port = int(self.server.server_address[1])

    def _on_store(self, event: Any) -> int:
        self.received.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    def stop(self) -> None:
        self.server.shutdown()


@pytest.fixture
def tls_pacs(pki: Pki) -> Iterator[TlsPACS]:
    peer = TlsPACS(pki)
    yield peer
    peer.stop()


def deliver_once(tmp_path: Path, database_url: str, destination: dict[str, Any]) -> DeliveryReport:
    """Seed ``destination`` from the settings, queue one result to it, run one attempt."""
    report: DeliveryReport = node_helpers.deliver_once(
        tmp_path, database_url, {"name": "pacs", **destination}, send_timeout=WAIT, now=T0
    )
    return report


def pacs_destination(pki: Pki, port: int, **tls: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "ca_file": str(pki.ca),
        "cert_file": str(pki.client_cert),
        "key_file": str(pki.client_key),
        "server_hostname": "localhost",
    }
    values.update(tls)
    return {
        "ae_title": "PACS",
        "host": "127.0.0.1",
        "port": port,
        "tls": {k: v for k, v in values.items() if v is not None},
    }


def test_delivery_over_tls_with_the_right_ca(
    tls_pacs: TlsPACS, pki: Pki, tmp_path: Path, database_url: str
) -> None:
    report = deliver_once(tmp_path, database_url, pacs_destination(pki, tls_pacs.port))
    assert report.recorded == "sent", report.outcome.message
    assert tls_pacs.received == [report.claim.sop_instance_uid]


@pytest.mark.parametrize(
    ("tls", "why"),
    [
        ({"ca_file": "other"}, "certificate verify failed"),
        ({"server_hostname": "pacs.invalid"}, "certificate verify failed: Hostname mismatch"),
        ({"cert_file": None, "key_file": None}, "certificate required"),
    ],
    ids=["wrong CA", "wrong name", "no client certificate"],
)
def test_refused_tls_delivery_is_a_dead_letter_at_once(
    tls_pacs: TlsPACS,
    pki: Pki,
    tmp_path: Path,
    database_url: str,
    tls: dict[str, Any],
    why: str,
) -> None:
    if tls.get("ca_file") == "other":
        tls["ca_file"] = str(pki.other_ca)
    report = deliver_once(tmp_path, database_url, pacs_destination(pki, tls_pacs.port, **tls))
    assert report.recorded == "dead"
    assert not report.outcome.transient
    assert "TLS handshake failed" in report.outcome.message
    assert why in report.outcome.message
    assert tls_pacs.received == []


def test_tls_destination_that_is_down_is_retried(
    pki: Pki, tmp_path: Path, database_url: str
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])  # nothing listens here
    report = deliver_once(tmp_path, database_url, pacs_destination(pki, port))
    assert report.recorded == "retry"
    assert report.outcome.transient
    assert "could not connect" in report.outcome.message


# -- settings ----------------------------------------------------------------------------------


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "xrayd.toml"
    path.write_text(f'[storage]\ndata_dir = "{tmp_path / "data"}"\n{text}')
    return path


def test_missing_cert_file_names_the_key(tmp_path: Path, pki: Pki) -> None:
    missing = tmp_path / "nope.pem"
    settings = load_settings(
        write_config(
            tmp_path,
            f'[node.tls]\ncert_file = "{missing}"\nkey_file = "{pki.server_key}"\n'
            f'ca_file = "{pki.ca}"\n',
        )
    )
    with pytest.raises(ConfigError) as err:
        settings.check_tls_files()
    assert f"node.tls.cert_file: {missing} does not exist" in str(err.value)


def test_key_not_matching_the_cert_names_the_key(tmp_path: Path, pki: Pki) -> None:
    settings = load_settings(
        write_config(
            tmp_path,
            f'[node.tls]\ncert_file = "{pki.server_cert}"\nkey_file = "{pki.client_key}"\n'
            f'ca_file = "{pki.ca}"\n',
        )
    )
    with pytest.raises(ConfigError) as err:
        settings.check_tls_files()
    text = str(err.value)
    assert "node.tls.key_file" in text
    assert "is not an unencrypted PEM private key matching node.tls.cert_file" in text
    assert "BEGIN" not in text  # never the files' contents


def test_node_does_not_start_with_unusable_tls_files(
    tmp_path: Path, pki: Pki, database_url: str
) -> None:
    settings = make_settings(
        tmp_path / "data",
        database_url,
        node={"tls": node_tls(pki, ca_file=str(tmp_path / "no-ca.pem"))},
        destinations=[
            {
                "name": "pacs",
                "ae_title": "PACS",
                "host": "127.0.0.1",
                "port": 104,
                "tls": {"ca_file": str(pki.ca), "cert_file": str(pki.server_key)},
            }
        ],
    )
    storage = open_storage(settings, create_if_empty=True, require_current=True)
    try:
        with pytest.raises(ConfigError) as err:
            Node(settings, storage)
    finally:
        storage.engine.dispose()
    text = str(err.value)
    assert "node.tls.ca_file" in text and "does not exist" in text
    assert "destinations.0.tls.cert_file" in text and "no usable PEM certificate" in text


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[node.tls]\ncert_file = "c"\nkey_file = "k"\n', "node.tls: Value error, ca_file"),
        ('[node.tls]\ncert_file = "c"\n', "node.tls.key_file: Field required"),
        ('[node.tls]\ncert_file = "c"\nkey_file = "k"\nca = "x"\n', "node.tls.ca: unknown key"),
        (
            '[[destinations]]\nname = "p"\nae_title = "P"\nhost = "h"\nport = 104\n'
            'tls = { cert_file = "c" }\n',
            "destinations.0.tls.ca_file: Field required",
        ),
        (
            '[[destinations]]\nname = "p"\nae_title = "P"\nhost = "h"\nport = 104\n'
            'tls = { ca_file = "a", key_file = "k" }\n',
            "key_file needs cert_file",
        ),
    ],
)
def test_tls_settings_structure_is_checked_at_load(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(write_config(tmp_path, text))
    assert key in str(err.value)
