"""Outgoing associations: C-ECHO, and C-STORE of result objects (:func:`send_file`).

:func:`send_file` sends one file and says how it went (:class:`SendOutcome`): stored, failed
for now (worth retrying later) or failed for good. See :func:`classify_store_status` for the
status table and :func:`send_file` for the transfer-syntax rules. A :class:`RemoteAE` with
``tls`` is reached over DICOM TLS (:mod:`dicom_node.tls`).

Every outgoing association is bounded by :class:`OutgoingLimits`, so that a destination that
is silent, stalls mid-transfer or declares an enormous PDU cannot hold the calling thread (or
the association's own threads) for longer than those bounds: pynetdicom by itself clears the
socket timeout once connected (a peer that stops reading blocks our writes for ever) and reads
whatever PDU length a peer declares (4 GiB at most, in 4 KiB pieces, with no deadline).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import Enum, IntEnum
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_file_meta_info
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import AE, _config, evt
from pynetdicom.association import Association
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.transport import T_CONNECT, AddressInformation, AssociationSocket

from dicom_node.echo_diagnosis import EchoDiagnosis, EchoFacts, Rejection, diagnose
from dicom_node.errors import PeerUnreachableError
from dicom_node.hardening import bounded_read_pdu, quiet_identifiers
from dicom_node.statuses import StoreStatus
from dicom_node.tls import (
    ClientContext,
    ClientTLS,
    _RecordingSocket,
    describe_tls_error,
    is_transient_tls_error,
)
from dicom_node.uids import identify_ae

LOGGER = logging.getLogger(__name__)

VERIFICATION = "1.2.840.10008.1.1"


@dataclass(frozen=True)
class RemoteAE:
    """A DICOM peer to connect to."""

    ae_title: str
    host: str
    port: int
    #: DICOM TLS settings; None: plain DICOM
    tls: ClientTLS | None = field(default=None, compare=False)

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


#: Our default maximum receive PDU on outgoing associations (what a destination may send us).
DEFAULT_MAX_PDU = 1024 * 1024


@dataclass(frozen=True)
class OutgoingLimits:
    """Bounds on one outgoing association.

    ``connect_timeout``: the TCP connection and, over TLS, the handshake. ``timeout``: the
    association negotiation, each DIMSE wait, the idle network timer, and every socket read or
    write once connected (a destination that stops reading or writing in the middle of a PDU).
    ``max_pdu``: the largest P-DATA-TF PDU we accept (announced to the peer as our maximum
    length); every PDU header is checked before its body is read, and a longer one aborts the
    association (association PDUs are bounded by
    :data:`dicom_node.hardening.MAX_ASSOCIATE_PDU`).

    A send that fails on these bounds takes at most about ``connect_timeout`` plus a few times
    ``timeout`` (negotiation or DIMSE wait, then the abort's wait for the peer to close).
    """

    timeout: float = 30.0
    connect_timeout: float = 10.0
    max_pdu: int = DEFAULT_MAX_PDU

    def __post_init__(self) -> None:
        if self.timeout <= 0 or self.connect_timeout <= 0:
            raise ValueError("outgoing timeouts must be positive")
        if self.max_pdu < 4096:
            raise ValueError("max_pdu must be at least 4096 bytes")


#: the TCP error a TLS connection failed on before its handshake, by its (per-association) context
_TLS_CONNECT_ERRORS: weakref.WeakKeyDictionary[ssl.SSLContext, OSError] = (
    weakref.WeakKeyDictionary()
)

#: the first byte of a TLS record (change cipher spec, alert, handshake, application data)
_TLS_RECORD_TYPES = frozenset({0x14, 0x15, 0x16, 0x17})


class _TCPSocket(socket.socket):
    """A TCP socket that keeps the error its connection failed on (pynetdicom swallows it)."""

    connect_error: OSError | None = None

    def connect(self, address: Any) -> None:
        try:
            super().connect(address)
        except OSError as exc:
            self.connect_error = exc
            raise


class _TLSSocket(_RecordingSocket):
    """:class:`dicom_node.tls`'s recording TLS socket that also keeps a TCP error (refused,
    timed out) met before the handshake, in :data:`_TLS_CONNECT_ERRORS`."""

    def connect(self, addr: Any) -> None:
        try:
            super().connect(addr)
        except ssl.SSLError:
            raise
        except OSError as exc:
            _TLS_CONNECT_ERRORS.setdefault(self.context, exc)
            raise


class _BoundedSocket(AssociationSocket):
    """pynetdicom's requestor socket with a timeout on every read and write once connected
    (pynetdicom sets ``settimeout(None)`` after connecting, so a destination that stops
    reading would block our writes, and the association's threads, for ever).

    ``problem`` says why the association broke, when it broke on one of these bounds.
    """

    io_timeout: float = 30.0
    problem: str | None = None
    #: the destination closed the connection or sent an A-ABORT
    peer_ended: bool = False
    #: a P-DATA-TF write is in progress (on the DUL thread)
    sending: bool = False

    #: the TCP connection (and TLS handshake) succeeded
    connected_once: bool = False
    #: why the TCP connection failed (refused, timed out, ...), when it did
    connect_error: OSError | None = None
    #: a plain association request was answered with a TLS record
    tls_reply: bool = False
    #: the destination sent an A-ABORT (rather than closing the connection)
    abort_received: bool = False
    _tcp: _TCPSocket | None = None

    def _create_socket(self, address: AddressInformation) -> socket.socket:
        plain = super()._create_socket(address)
        timeout = plain.gettimeout()
        sock = _TCPSocket(plain.family, plain.type, fileno=plain.detach())
        sock.settimeout(timeout)
        self._tcp = sock
        return sock

    def connect(self, primitive: T_CONNECT) -> None:
        super().connect(primitive)
        sock = self.socket
        if sock is not None:
            self.connected_once = True
            with contextlib.suppress(OSError):  # closed meanwhile: the next read reports it
                sock.settimeout(self.io_timeout)
            return
        error = self._tcp.connect_error if self._tcp is not None else None
        tls = self.tls_args
        if error is None and tls is not None:
            error = _TLS_CONNECT_ERRORS.pop(tls[0], None)
        self.connect_error = error

    def send(self, bytestream: bytes) -> None:
        """pynetdicom's ``send`` (each ``socket.send`` bounded by the timeout), noting a
        stalled write."""
        sock = self.socket
        view = memoryview(bytestream)
        self.sending = bytestream[:1] == b"\x04"
        try:
            if sock is None:
                raise ConnectionError("not connected")
            while view:
                view = view[sock.send(view) :]
            evt.trigger(self.assoc, evt.EVT_DATA_SENT, {"data": bytestream})
        except TimeoutError:
            self.note(f"the destination stopped reading for {self.io_timeout:g} s")
            self.event_queue.put("Evt17")
        except Exception:
            self.event_queue.put("Evt17")
        finally:
            self.sending = False

    def note(self, problem: str) -> None:
        if self.problem is None:
            self.problem = problem

    def cut(self) -> None:
        """Shut the connection down at once, from any thread: a write or read blocked on it
        fails, so the DUL thread ends instead of sending what is still queued."""
        sock = self.socket
        if sock is not None:
            with contextlib.suppress(OSError):
                # socket.socket's own shutdown: SSLSocket.shutdown would also drop its TLS
                # object under a write in progress on the DUL thread
                socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _BoundedAE(AE):
    """An AE whose requestor associations use :class:`_BoundedSocket` and read each PDU with
    :func:`dicom_node.hardening.bounded_read_pdu` (the same reader as the listener's)."""

    def __init__(self, ae_title: str, limits: OutgoingLimits) -> None:
        super().__init__(ae_title=ae_title)
        identify_ae(self)
        self.limits = limits
        self.acse_timeout = self.dimse_timeout = self.network_timeout = limits.timeout
        self.connection_timeout = limits.connect_timeout
        self.maximum_pdu_size = limits.max_pdu

    def _create_socket(
        self,
        assoc: Association,
        address: AddressInformation,
        tls_args: tuple[ssl.SSLContext, str] | None,
    ) -> AssociationSocket:
        sock = _BoundedSocket(assoc, address=address)
        sock.io_timeout = self.limits.timeout
        sock.tls_args = tls_args
        dul = assoc.dul
        max_pdata = self.limits.max_pdu

        def read_pdu() -> None:
            raw = sock.socket
            if not assoc.is_established and raw is not None and not isinstance(raw, ssl.SSLSocket):
                with contextlib.suppress(OSError):  # whatever broke, the read reports it
                    first = raw.recv(1, socket.MSG_PEEK)
                    sock.tls_reply = bool(first) and first[0] in _TLS_RECORD_TYPES
            bounded_read_pdu(dul, max_pdata)
            with dul.event_queue.mutex:  # only this (the DUL) thread takes events
                events = set(dul.event_queue.queue)
            if "Evt19" in events:
                sock.note("the destination sent an invalid or oversized PDU")
            elif events & {"Evt16", "Evt17"}:  # A-ABORT received, connection closed
                sock.peer_ended = True
                sock.abort_received = sock.abort_received or "Evt16" in events

        dul._read_pdu_data = read_pdu  # type: ignore[method-assign]

        # pynetdicom starts the DIMSE timer once the request is queued, and on its expiry
        # aborts; the A-ABORT then waits behind the rest of the data set, which a destination
        # that reads slowly enough can make last for ever. Drop the connection instead.
        # (Every abort, blocking or not, goes through ``_abort_blocking``; pynetdicom swaps
        # ``abort`` itself between the two.)
        abort = assoc._abort_blocking

        def abort_now(block: bool = True) -> None:
            queued = dul.to_provider_queue
            with queued.mutex:
                data_left = any(isinstance(p, P_DATA) for p in queued.queue)
            if data_left or sock.sending:
                sock.note(f"the destination did not take the data within {self.limits.timeout:g} s")
                sock.cut()
            abort(block)

        assoc._abort_blocking = abort_now  # type: ignore[method-assign]
        return sock

    def bounded_associate(
        self,
        remote: RemoteAE,
        tls_args: tuple[ssl.SSLContext, str | None] | None,
        evt_handlers: list[Any] | None = None,
    ) -> Association:
        """``associate`` with our maximum PDU announced (see :class:`OutgoingLimits`)."""
        return self.associate(
            remote.host,
            remote.port,
            ae_title=remote.ae_title,
            max_pdu=self.limits.max_pdu,
            evt_handlers=evt_handlers,
            tls_args=tls_args,  # type: ignore[arg-type]  # pynetdicom's hint omits None
        )


def _tls_args(remote: RemoteAE) -> tuple[ClientContext, str | None] | None:
    """``ae.associate``'s ``tls_args`` for ``remote`` with a fresh context (one per association,
    so that it records this association's TLS error). Raises OSError/ValueError (ssl.SSLError
    included) when the CA, certificate or key files are unusable."""
    if remote.tls is None:
        return None
    # the name the certificate must carry (server_hostname, else the host) unless the
    # destination opted out of the name check; the chain is verified either way
    context = remote.tls.context()
    context.sslsocket_class = _TLSSocket  # also keeps a TCP error met before the handshake
    return context, remote.tls.expected_name(remote.host)


def _tls_failure(remote: RemoteAE, exc: ssl.SSLError) -> tuple[bool, str]:
    """(transient, message) for an association that failed on TLS."""
    return is_transient_tls_error(exc), f"{remote}: TLS handshake failed: {describe_tls_error(exc)}"


def parse_remote(text: str) -> RemoteAE:
    """Parse ``AE@HOST:PORT`` (as the CLI takes it)."""
    ae, sep, rest = text.partition("@")
    host, sep2, port = rest.rpartition(":")
    if not sep or not sep2 or not ae or not host or not port.isdigit():
        raise ValueError(f"expected AE@HOST:PORT, got {text!r}")
    if len(ae) > 16 or "\\" in ae or not ae.isascii() or not ae.isprintable():
        raise ValueError(f"invalid AE title {ae!r}")
    port_no = int(port)
    if not 0 < port_no < 65536:
        raise ValueError(f"invalid port {port}")
    return RemoteAE(ae, host.strip("[]"), port_no)


def _associate(
    remote: RemoteAE,
    calling_ae_title: str,
    contexts: dict[str, list[str]],
    limits: OutgoingLimits,
) -> Association:
    """An established association proposing ``contexts`` (SOP class -> transfer syntaxes)."""
    quiet_identifiers()
    ae = _BoundedAE(calling_ae_title, limits)
    for sop_class, syntaxes in contexts.items():
        if syntaxes:
            ae.add_requested_context(sop_class, syntaxes)
        else:
            ae.add_requested_context(sop_class)
    try:
        tls_args = _tls_args(remote)
    except (OSError, ValueError) as exc:
        raise PeerUnreachableError(f"{remote}: TLS set-up failed: {_kind(exc)}") from None
    try:
        assoc = ae.bounded_associate(remote, tls_args)
    except (OSError, RuntimeError, ValueError) as exc:
        raise PeerUnreachableError(f"no association with {remote}: {_kind(exc)}") from None
    if not assoc.is_established:
        if tls_args is not None and tls_args[0].tls_error is not None:
            raise PeerUnreachableError(_tls_failure(remote, tls_args[0].tls_error)[1])
        problem = _problem(assoc)
        why = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "refused"
        if problem is not None:
            why = f"{why}: {problem}"
        elif _unanswered(assoc):
            why = f"no answer to the association request within {limits.timeout:g} s"
        raise PeerUnreachableError(f"no association with {remote}: {why}")
    return assoc


def _problem(assoc: Association) -> str | None:
    """Why the association broke on an :class:`OutgoingLimits` bound, if it did."""
    sock = assoc.dul.socket
    return sock.problem if isinstance(sock, _BoundedSocket) else None


def _unanswered(assoc: Association) -> bool:
    """Connected, but the association request timed out: no answer, no close, no abort."""
    sock = assoc.dul.socket
    return (
        isinstance(sock, _BoundedSocket)
        and sock.connected_once
        and not sock.peer_ended
        and sock.problem is None
        and assoc.is_aborted
        and not assoc.is_rejected
        and assoc.acceptor.primitive is None
    )


def echo(
    remote: RemoteAE,
    calling_ae_title: str,
    timeout: float = 10.0,
    *,
    limits: OutgoingLimits | None = None,
) -> int:
    """Send a C-ECHO; returns the DIMSE status (0 on success).

    ``limits`` bound the association (see :class:`OutgoingLimits`); without them ``timeout``
    bounds every step, the connection included. Raises :class:`PeerUnreachableError` when no
    association could be made or no response came.
    """
    bounds = limits or OutgoingLimits(timeout=timeout, connect_timeout=timeout)
    assoc = _associate(remote, calling_ae_title, {VERIFICATION: []}, bounds)
    try:
        status = assoc.send_c_echo()
    finally:
        if assoc.is_established:
            assoc.release()
    if "Status" not in status:
        problem = _problem(assoc)
        why = problem or f"none within {bounds.timeout:g} s, or the association was aborted"
        raise PeerUnreachableError(f"no C-ECHO response from {remote}: {why}")
    return int(status.Status)


def diagnose_echo(
    remote: RemoteAE,
    calling_ae_title: str,
    timeout: float = 10.0,
    *,
    limits: OutgoingLimits | None = None,
) -> EchoDiagnosis:
    """Send a C-ECHO and say how it went: success, or why not and what to try
    (:mod:`dicom_node.echo_diagnosis`). Never raises for network or TLS errors.

    ``limits`` and ``timeout`` as for :func:`echo`.
    """
    bounds = limits or OutgoingLimits(timeout=timeout, connect_timeout=timeout)
    facts = EchoFacts(
        remote=str(remote),
        host=remote.host,
        port=remote.port,
        called_ae=remote.ae_title,
        calling_ae=calling_ae_title,
        tls=remote.tls is not None,
        timeout=bounds.timeout,
    )
    return diagnose(_echo_facts(remote, calling_ae_title, bounds, facts))


def _echo_facts(
    remote: RemoteAE, calling_ae_title: str, limits: OutgoingLimits, facts: EchoFacts
) -> EchoFacts:
    """``facts`` completed with what one C-ECHO attempt observed."""
    quiet_identifiers()
    ae = _BoundedAE(calling_ae_title, limits)
    ae.add_requested_context(VERIFICATION)
    try:
        tls_args = _tls_args(remote)
    except (OSError, ValueError) as exc:
        return replace(facts, setup_error=_kind(exc))
    try:
        assoc = ae.bounded_associate(remote, tls_args)
    except socket.gaierror:
        return replace(facts, resolve_failed=True)
    except (OSError, RuntimeError, ValueError) as exc:
        return replace(facts, local_error=_kind(exc))
    sock = assoc.dul.socket
    bounded = sock if isinstance(sock, _BoundedSocket) else None
    response = assoc.acceptor.primitive
    rejection = None
    if assoc.is_rejected and response is not None:
        rejection = Rejection(
            int(response.result or 0),
            int(response.result_source or 0),
            int(response.diagnostic or 0),
        )
    status: int | None = None
    established = assoc.is_established
    if established:
        try:
            rsp = assoc.send_c_echo()
        finally:
            if assoc.is_established:
                assoc.release()
        status = int(rsp.Status) if "Status" in rsp else None
    connected = bounded is not None and bounded.connected_once
    tls_reply = bounded is not None and bounded.tls_reply
    if (
        tls_args is None
        and connected
        and bounded is not None
        and bounded.peer_ended
        and not bounded.abort_received
        and response is None
        and _problem(assoc) is None
    ):
        # closed without a word: what a TLS-only port does with a plain request
        tls_reply = _speaks_tls(remote.host, remote.port, limits.connect_timeout)
    return replace(
        facts,
        connect_error=bounded.connect_error if bounded is not None else None,
        tls_error=tls_args[0].tls_error if tls_args is not None else None,
        connected=connected,
        tls_reply=tls_reply,
        rejection=rejection,
        no_context=response is not None and response.result == 0 and not assoc.accepted_contexts,
        peer_ended=bounded is not None and bounded.peer_ended,
        problem=_problem(assoc),
        unanswered=_unanswered(assoc),
        established=established,
        status=status,
    )


def _speaks_tls(host: str, port: int, timeout: float) -> bool:
    """Whether ``host:port`` answers a TLS ClientHello (a handshake, or a TLS alert such as
    "certificate required"). Nothing but the handshake is sent, and the peer's certificate is
    not trusted for anything: this only asks which protocol the port speaks."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # a probe: no data is sent over it
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            context.wrap_socket(raw) as tls,
        ):
            tls.do_handshake()
    except ssl.SSLError as exc:
        return "ALERT" in str(exc.reason or "").upper()
    except OSError:
        return False
    return True


def store_datasets(
    remote: RemoteAE,
    calling_ae_title: str,
    datasets: Sequence[Dataset],
    timeout: float = 30.0,
    *,
    limits: OutgoingLimits | None = None,
) -> list[int]:
    """C-STORE ``datasets`` over one association; returns each DIMSE status (-1: no response).

    Proposes one context per SOP class with the data sets' own transfer syntaxes. ``limits``
    as for :func:`echo`.
    """
    contexts: dict[str, set[str]] = {}
    for ds in datasets:
        contexts.setdefault(str(ds.SOPClassUID), set()).add(str(ds.file_meta.TransferSyntaxUID))
    bounds = limits or OutgoingLimits(timeout=timeout, connect_timeout=timeout)
    assoc = _associate(
        remote, calling_ae_title, {k: sorted(v) for k, v in contexts.items()}, bounds
    )
    statuses: list[int] = []
    try:
        for ds in datasets:
            rsp = assoc.send_c_store(ds)
            statuses.append(int(rsp.Status) if "Status" in rsp else -1)
    finally:
        if assoc.is_established:
            assoc.release()
    return statuses


# -- sending result objects ----------------------------------------------------------------------


class PeerStatus(IntEnum):
    """C-STORE response statuses a peer may answer with, beyond :class:`StoreStatus`
    (PS3.4 B.2.3, PS3.7 Annex C)."""

    WARNING = 0x0001
    ATTRIBUTE_LIST_ERROR = 0x0107
    DUPLICATE_SOP_INSTANCE = 0x0111
    ATTRIBUTE_VALUE_OUT_OF_RANGE = 0x0116
    INVALID_SOP_INSTANCE = 0x0117
    NOT_AUTHORISED = 0x0124
    DUPLICATE_INVOCATION = 0x0210
    UNRECOGNISED_OPERATION = 0x0211
    MISTYPED_ARGUMENT = 0x0212
    RESOURCE_LIMITATION = 0x0213
    COERCION_OF_DATA_ELEMENTS = 0xB000
    ELEMENTS_DISCARDED = 0xB006
    DATASET_DOES_NOT_MATCH_SOP_CLASS_WARNING = 0xB007
    CANCEL = 0xFE00


class StatusClass(Enum):
    STORED = "stored"
    TRANSIENT = "transient"
    PERMANENT = "permanent"


_STORED_STATUSES = frozenset(
    {
        StoreStatus.SUCCESS,
        PeerStatus.WARNING,
        PeerStatus.ATTRIBUTE_LIST_ERROR,
        PeerStatus.ATTRIBUTE_VALUE_OUT_OF_RANGE,
        # Our SOP Instance UIDs are chosen once and resends are byte-identical: a peer that
        # already has this instance has our object (typically a lost response, then a resend).
        PeerStatus.DUPLICATE_SOP_INSTANCE,
    }
)
_TRANSIENT_STATUSES = frozenset(
    {
        StoreStatus.PROCESSING_FAILURE,
        PeerStatus.DUPLICATE_INVOCATION,
        PeerStatus.RESOURCE_LIMITATION,
        PeerStatus.CANCEL,
    }
)
_PERMANENT_STATUSES = frozenset(
    {
        StoreStatus.SOP_CLASS_NOT_SUPPORTED,
        PeerStatus.INVALID_SOP_INSTANCE,
        PeerStatus.NOT_AUTHORISED,
        PeerStatus.UNRECOGNISED_OPERATION,
        PeerStatus.MISTYPED_ARGUMENT,
    }
)


def classify_store_status(status: int) -> tuple[StatusClass, str]:
    """What a C-STORE response status means for a sender, with a short description.

    ============================================  ===========  ==============================
    status                                        class        why
    ============================================  ===========  ==============================
    0x0000 success                                stored
    0xB000-0xBFFF warnings (coercion 0xB000,      stored       PS3.4: the instance was stored
    elements discarded 0xB006, 0xB007), 0x0001,
    0x0107, 0x0116
    0x0111 duplicate SOP instance                 stored       same UID, same bytes: it is there
    0xA700-0xA7FF out of resources                transient    the peer's disk/queue is full
    0x0110 processing failure, 0x0210, 0x0213,    transient    the peer's own trouble
    0xFE00 cancel
    0xA900-0xA9FF data set does not match class   permanent    resending the same bytes fails
    0xC000-0xCFFF cannot understand               permanent    again
    0x0122 SOP class not supported, 0x0117,       permanent
    0x0124 not authorised, 0x0211, 0x0212
    anything else                                 transient    unknown: bounded retries, then
                                                               a dead letter
    ============================================  ===========  ==============================
    """
    if status in _STORED_STATUSES or 0xB000 <= status <= 0xBFFF:
        return StatusClass.STORED, _status_name(status)
    if 0xA700 <= status <= 0xA7FF or status in _TRANSIENT_STATUSES:
        return StatusClass.TRANSIENT, _status_name(status)
    if 0xA900 <= status <= 0xA9FF or 0xC000 <= status <= 0xCFFF or status in _PERMANENT_STATUSES:
        return StatusClass.PERMANENT, _status_name(status)
    return StatusClass.TRANSIENT, "unknown status"


def _status_name(status: int) -> str:
    for enum in (StoreStatus, PeerStatus):
        try:
            return enum(status).name.lower().replace("_", " ")
        except ValueError:
            continue
    if 0xA700 <= status <= 0xA7FF:
        return "out of resources"
    if 0xA900 <= status <= 0xA9FF:
        return "dataset mismatch"
    if 0xC000 <= status <= 0xCFFF:
        return "cannot understand"
    return "warning"


@dataclass(frozen=True)
class SendOutcome:
    """How one C-STORE went. ``ok``: the peer stored it (possibly with a warning);
    otherwise ``transient`` says whether trying again later may help. ``status`` is the
    peer's DIMSE status, None when none came (no association, no response). ``message``
    names the peer and the reason, never patient data or UIDs."""

    ok: bool
    transient: bool
    status: int | None
    message: str


#: Uncompressed little-endian syntaxes pydicom can re-encode between without touching values.
_UNCOMPRESSED_LE = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)


def proposed_transfer_syntaxes(file_syntax: str) -> list[UID]:
    """The transfer syntaxes proposed for a file encoded in ``file_syntax``, preferred first.

    The file's own syntax always comes first. An uncompressed little-endian file (explicit,
    implicit or deflated) also offers explicit and implicit VR little endian, into which it
    can be re-encoded losslessly. A compressed (or big-endian) file is offered only in its
    own syntax: xrayd does not transcode pixel data.
    """
    own = UID(file_syntax)
    syntaxes = [own]
    if own in _UNCOMPRESSED_LE or own == DeflatedExplicitVRLittleEndian:
        syntaxes += [ts for ts in _UNCOMPRESSED_LE if ts != own]
    return syntaxes


def send_file(
    remote: RemoteAE,
    path: Path,
    *,
    calling_ae: str,
    timeout: float = 30.0,
    limits: OutgoingLimits | None = None,
) -> SendOutcome:
    """C-STORE the DICOM file at ``path`` to ``remote`` over a new association.

    Only the file's SOP class is proposed, with :func:`proposed_transfer_syntaxes`. When the
    peer accepts the file's own syntax the file's bytes after the meta header are sent as
    they are (resends are byte-identical). When it accepts only another uncompressed syntax
    the data set is read and re-encoded in that one (same elements and values, including the
    SOP Instance UID; only the encoding differs). A peer that accepts none of them is a
    permanent failure.

    Association failures: a rejection marked transient (result 2), or one for temporary
    congestion / local limit (source 3), a refused or timed-out connection, an abort and a
    missing response are transient; other rejections (unknown AE titles, no reason) and
    "no presentation context accepted" are permanent. Over TLS, a refused certificate (ours
    or the peer's), protocol or version and unusable CA/certificate/key files are permanent;
    a connection broken off mid-handshake is transient. Response statuses: see
    :func:`classify_store_status`. ``limits`` bound the association (see
    :class:`OutgoingLimits`: a silent or stalling destination or an oversized PDU ends the
    send as a transient failure); without them ``timeout`` bounds each step, the connection
    included. Never raises for network errors.
    """
    try:
        meta = read_file_meta_info(path)
        sop_class = str(meta.MediaStorageSOPClassUID)
        file_syntax = str(meta.TransferSyntaxUID)
        _ = str(meta.MediaStorageSOPInstanceUID)
    except (OSError, InvalidDicomError, AttributeError, KeyError) as exc:
        return SendOutcome(False, False, None, f"cannot read the file's meta header: {_kind(exc)}")
    quiet_identifiers()
    # Let pynetdicom send a file's encoded data set straight from disk (no decode/re-encode)
    # when the accepted syntax is the file's own; process-wide, like quiet_identifiers().
    _config.STORE_SEND_CHUNKED_DATASET = True

    seen: dict[str, Any] = {}

    def on_acse(event: Any) -> None:
        primitive = getattr(event, "primitive", None)
        if primitive is not None and hasattr(primitive, "result"):
            seen["associate_response"] = primitive

    def on_open(_event: Any) -> None:
        seen["connected"] = True

    bounds = limits or OutgoingLimits(timeout=timeout, connect_timeout=timeout)
    ae = _BoundedAE(calling_ae, bounds)
    ae.add_requested_context(sop_class, proposed_transfer_syntaxes(file_syntax))
    try:
        tls_args = _tls_args(remote)
    except (OSError, ValueError) as exc:
        return SendOutcome(False, False, None, f"{remote}: TLS set-up failed: {_kind(exc)}")
    try:
        assoc = ae.bounded_associate(
            remote,
            tls_args,
            evt_handlers=[(evt.EVT_ACSE_RECV, on_acse), (evt.EVT_CONN_OPEN, on_open)],
        )
    except (OSError, RuntimeError, ValueError) as exc:
        return SendOutcome(False, True, None, f"no association with {remote}: {_kind(exc)}")
    if not assoc.is_established:
        tls_error = tls_args[0].tls_error if tls_args is not None else None
        if tls_error is not None:
            transient, message = _tls_failure(remote, tls_error)
            return SendOutcome(False, transient, None, message)
        return _association_failure(remote, assoc, seen, bounds)
    try:
        return _store(remote, assoc, path, sop_class, UID(file_syntax), bounds)
    finally:
        if assoc.is_established:
            assoc.release()


def _association_failure(
    remote: RemoteAE, assoc: Association, seen: dict[str, Any], limits: OutgoingLimits
) -> SendOutcome:
    response = seen.get("associate_response")
    if assoc.is_rejected and response is not None:
        result, source, reason = response.result, response.result_source, response.diagnostic
        transient = result == 0x02 or source == 0x03
        detail = (
            f"association rejected ({'transient' if transient else 'permanent'}: "
            f"result {result}, source {source}, reason {reason})"
        )
        return SendOutcome(False, transient, None, f"{remote}: {detail}")
    if response is not None and getattr(response, "result", None) == 0x00:
        return SendOutcome(
            False, False, None, f"{remote}: accepted no presentation context for this object"
        )
    if not seen.get("connected"):
        return SendOutcome(False, True, None, f"{remote}: could not connect (refused or timed out)")
    problem = _problem(assoc)
    if problem is not None:
        return SendOutcome(False, True, None, f"{remote}: association aborted: {problem}")
    if _unanswered(assoc):
        return SendOutcome(
            False,
            True,
            None,
            f"{remote}: no answer to the association request within {limits.timeout:g} s",
        )
    what = "aborted" if assoc.is_aborted else "not established"
    return SendOutcome(False, True, None, f"{remote}: association {what}")


def _store(
    remote: RemoteAE,
    assoc: Association,
    path: Path,
    sop_class: str,
    file_syntax: UID,
    limits: OutgoingLimits,
) -> SendOutcome:
    accepted = [
        cx
        for cx in assoc.accepted_contexts
        if cx.abstract_syntax == sop_class and cx.as_scu is not False
    ]
    syntaxes = [UID(cx.transfer_syntax[0]) for cx in accepted]
    if not syntaxes:
        return SendOutcome(
            False, False, None, f"{remote}: accepted no presentation context for this object"
        )
    dataset: Path | Dataset
    if file_syntax in syntaxes:
        dataset = path
    else:
        try:
            dataset = dcmread(path)
        except (OSError, InvalidDicomError) as exc:
            return SendOutcome(False, False, None, f"cannot read the file: {_kind(exc)}")
        LOGGER.debug(
            "sending re-encoded in %s (peer refused %s)", syntaxes[0].name, file_syntax.name
        )
    try:
        rsp = assoc.send_c_store(dataset)
    except (ValueError, AttributeError) as exc:  # no usable context, cannot encode
        return SendOutcome(False, False, None, f"{remote}: cannot send this object: {_kind(exc)}")
    except Exception as exc:  # the association broke under us
        return SendOutcome(False, True, None, f"{remote}: C-STORE failed: {_kind(exc)}")
    if "Status" not in rsp:
        problem = _problem(assoc)
        why = problem or f"none within {limits.timeout:g} s, or the association was aborted"
        return SendOutcome(False, True, None, f"{remote}: no C-STORE response: {why}")
    status = int(rsp.Status)
    kind, name = classify_store_status(status)
    text = f"{remote}: status 0x{status:04X} ({name})"
    if kind is StatusClass.STORED:
        return SendOutcome(True, False, status, text)
    return SendOutcome(False, kind is StatusClass.TRANSIENT, status, text)


def _kind(exc: BaseException) -> str:
    """An exception's class name and errno-like detail, without its free text (it may quote
    file contents or paths)."""
    strerror = getattr(exc, "strerror", None)
    return f"{type(exc).__name__}: {strerror}" if strerror else type(exc).__name__
