"""DICOM TLS: the contexts of the listener and of outgoing associations, and the bounded
server-side handshake.

TLS 1.2 is the oldest version either side speaks. Certificates, keys and CA bundles are read
from files (systemd ``LoadCredential=`` puts secrets there); an encrypted key is refused rather
than prompted for. Nothing here logs a file's contents.

The listener does not let pynetdicom run the handshake: pynetdicom wraps each accepted socket
in its accepting thread with no timeout, so one client that connects and stays silent would
stop the listener. :func:`accept_tls` runs it with a deadline instead, on a thread of its own
(see :class:`dicom_node.hardening.BoundedAssociationServer`).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from config.settings import expand_env

LOGGER = logging.getLogger(__name__)

MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2

StrPath = str | Path


def _no_password() -> bytes:
    """The password callback: an encrypted key fails to load instead of prompting on a tty."""
    return b""


def server_context(
    cert: StrPath, key: StrPath, ca: StrPath | None, require_client_cert: bool = True
) -> ssl.SSLContext:
    """The listener's context: our certificate and key; client certificates verified against
    ``ca`` (required when ``require_client_cert``; optional but verified otherwise).

    Raises :class:`ssl.SSLError` / :class:`OSError` for unusable files, :class:`ValueError`
    when client certificates are required without a CA.
    """
    if require_client_cert and ca is None:
        raise ValueError("client certificates cannot be required without a CA bundle")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = MINIMUM_VERSION
    ctx.load_cert_chain(str(cert), str(key), password=_no_password)
    if ca is not None:
        ctx.load_verify_locations(cafile=str(ca))
        ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    else:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class _RecordingSocket(ssl.SSLSocket):
    """An SSL socket that tells its :class:`ClientContext` why TLS failed.

    pynetdicom swallows the exception of a failed connect (and of a failed read) and reports
    only "connection closed"; the sender needs to know whether TLS was the reason.
    """

    def _record(self, exc: ssl.SSLError) -> None:
        ctx = self.context
        if isinstance(ctx, ClientContext) and ctx.tls_error is None:
            ctx.tls_error = exc

    def connect(self, addr: Any) -> None:
        try:
            super().connect(addr)
        except ssl.SSLError as exc:
            self._record(exc)
            raise

    def recv(self, buflen: int = 1024, flags: int = 0) -> bytes:
        try:
            return super().recv(buflen, flags)
        except ssl.SSLError as exc:  # e.g. TLS 1.3: the peer refused our certificate
            self._record(exc)
            raise

    def recv_into(self, buffer: Any, nbytes: int | None = None, flags: int = 0) -> int:
        try:
            return super().recv_into(buffer, nbytes, flags)
        except ssl.SSLError as exc:  # the bounded PDU reader reads with recv_into
            self._record(exc)
            raise


class ClientContext(ssl.SSLContext):
    """A client context for one association; ``tls_error`` is the first TLS error it saw."""

    sslsocket_class = _RecordingSocket
    tls_error: ssl.SSLError | None = None


def client_context(
    ca: StrPath,
    cert: StrPath | None = None,
    key: StrPath | None = None,
    *,
    check_hostname: bool = True,
) -> ClientContext:
    """A context for an outgoing association: the peer's certificate is verified against
    ``ca`` and, with ``check_hostname`` (the default), its name against the
    ``server_hostname`` the socket is wrapped with (a connection without one is refused);
    ``cert``/``key`` are our client certificate (``key`` may be omitted when ``cert`` holds
    both)."""
    ctx = ClientContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = MINIMUM_VERSION
    ctx.check_hostname = check_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cafile=str(ca))
    if cert is not None:
        ctx.load_cert_chain(str(cert), None if key is None else str(key), password=_no_password)
    elif key is not None:
        raise ValueError("a client key needs its certificate")
    return ctx


@dataclass(frozen=True)
class ClientTLS:
    """How to reach a destination over TLS (plain data; see :func:`client_context`).

    The destination's certificate must carry ``server_hostname``, else the destination's host
    (:meth:`expected_name`), unless ``check_hostname`` is False: then any certificate that
    ``ca_file`` signed is accepted (``server_hostname`` is still sent as SNI when given).
    """

    ca_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None
    server_hostname: str | None = None
    check_hostname: bool = True

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> ClientTLS:
        """From a destination's stored ``tls`` (the settings' keys); ValueError if unusable.
        A mapping without ``check_hostname`` checks the name (the default)."""
        unknown = sorted(set(data) - _TLS_KEYS)
        if unknown:
            raise ValueError(f"unknown TLS key(s) {', '.join(unknown)}")
        if not data.get("ca_file"):
            raise ValueError("TLS needs ca_file")

        def path(key: str) -> Path | None:
            # ${CREDENTIALS_DIRECTORY} etc.: a row seeded by a command run outside the service
            # keeps the reference, expanded here in the service that opens the file
            value = data.get(key)
            return Path(expand_env(str(value))) if value else None

        hostname = data.get("server_hostname")
        check = data.get("check_hostname", True)
        if not isinstance(check, bool):
            raise ValueError("check_hostname must be true or false")
        return cls(
            ca_file=Path(expand_env(str(data["ca_file"]))),
            cert_file=path("cert_file"),
            key_file=path("key_file"),
            server_hostname=str(hostname) if hostname else None,
            check_hostname=check,
        )

    def expected_name(self, host: str) -> str | None:
        """The name to wrap the connection to ``host`` with (SNI and, when checked, the name
        the certificate must carry): ``server_hostname``, else ``host`` when the name is
        checked; None (no SNI) when it is not checked and no ``server_hostname`` is set."""
        if self.server_hostname:
            return self.server_hostname
        return host if self.check_hostname else None

    def context(self) -> ClientContext:
        """A fresh context (one per association: it records that association's TLS error)."""
        return client_context(
            self.ca_file, self.cert_file, self.key_file, check_hostname=self.check_hostname
        )


_TLS_KEYS = frozenset({"ca_file", "cert_file", "key_file", "server_hostname", "check_hostname"})


def describe_tls_error(exc: ssl.SSLError) -> str:
    """A short description of a TLS failure: OpenSSL's reason, no data from the peer."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message or exc.reason}"
    return str(exc.reason or type(exc).__name__).lower().replace("_", " ")


def is_transient_tls_error(exc: ssl.SSLError) -> bool:
    """Whether the connection merely broke during TLS (worth retrying), as opposed to a
    refused certificate, protocol or version (which stays refused)."""
    return isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError | ssl.SSLSyscallError)


def accept_tls(
    context: ssl.SSLContext, sock: socket.socket, timeout: float, peer: str
) -> ssl.SSLSocket | None:
    """Run the server side of the TLS handshake on ``sock`` within ``timeout`` seconds.

    Returns the TLS socket (blocking, like a plain accepted socket), or None after closing the
    connection with a log line when the handshake failed, was refused or took too long.
    """
    tls: ssl.SSLSocket | None = None
    try:
        sock.settimeout(timeout)  # CPython bounds the whole handshake by this, not each read
        tls = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        tls.do_handshake()
        tls.settimeout(None)
        return tls
    except TimeoutError:
        LOGGER.warning(
            "TLS handshake with %s not completed within %.1f s; connection closed", peer, timeout
        )
    except ssl.SSLError as exc:
        LOGGER.warning(
            "TLS handshake with %s failed (%s); connection closed", peer, describe_tls_error(exc)
        )
    except OSError as exc:
        LOGGER.info(
            "TLS handshake with %s broken off (%s)", peer, exc.strerror or type(exc).__name__
        )
    _close(tls if tls is not None else sock)
    return None


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()
