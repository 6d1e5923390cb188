"""Why a C-ECHO failed, and what to try: :func:`diagnose` turns what was observed on one
verification attempt (:class:`EchoFacts`, gathered by :func:`dicom_node.scu.diagnose_echo`)
into an :class:`EchoDiagnosis`: a cause (:class:`EchoCause`), a one-line explanation and the
fix to try.

The explanations name the peer (``AE@host:port``), our AE title and OpenSSL's reason for a
TLS failure, never file contents or data sent by the peer.
"""

from __future__ import annotations

import errno
import ssl
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["EchoCause", "EchoDiagnosis", "EchoFacts", "Rejection", "diagnose"]


class EchoCause(StrEnum):
    """Why a C-ECHO did or did not succeed."""

    OK = "ok"
    #: the peer's TLS settings (CA, certificate or key files) cannot be used
    TLS_SETUP = "tls-setup"
    #: the host name does not resolve
    DNS = "dns"
    #: nothing listens on host:port (TCP connection refused)
    REFUSED = "refused"
    #: no answer to the TCP connection (firewall, routing, host down)
    TIMED_OUT = "timed-out"
    #: no route to the host or its network
    UNREACHABLE = "unreachable"
    #: the TCP connection failed for another reason
    CONNECT_FAILED = "connect-failed"
    #: the peer's certificate is not signed by the configured CA (or expired, ...)
    TLS_UNTRUSTED = "tls-untrusted"
    #: the peer's certificate does not carry the expected name
    TLS_HOSTNAME = "tls-hostname"
    #: the peer does not speak TLS on this port (a TLS destination, a plain peer)
    TLS_NOT_SPOKEN = "tls-not-spoken"
    #: the peer requires TLS (a plain destination, a TLS peer)
    TLS_REQUIRED = "tls-required"
    #: the peer refused (or wanted) our client certificate
    TLS_CLIENT_CERT = "tls-client-certificate"
    #: another TLS failure (versions, ciphers, a connection broken during the handshake)
    TLS_FAILED = "tls-failed"
    #: A-ASSOCIATE-RJ: the peer does not know the called AE title we gave it
    CALLED_AE_UNKNOWN = "called-ae-unknown"
    #: A-ASSOCIATE-RJ: the peer does not know our (calling) AE title
    CALLING_AE_UNKNOWN = "calling-ae-unknown"
    #: A-ASSOCIATE-RJ: temporary congestion or a local limit (too many associations)
    BUSY = "busy"
    #: A-ASSOCIATE-RJ for another reason (no reason given, protocol version, ...)
    REJECTED = "rejected"
    #: the peer aborted (A-ABORT) or closed the connection instead of answering
    ABORTED = "aborted"
    #: connected, but no answer to the association request in time
    NO_ANSWER = "no-answer"
    #: the peer sent something that is not DICOM (or a PDU over our limit)
    PROTOCOL_ERROR = "protocol-error"
    #: the association was accepted without the Verification SOP class
    VERIFICATION_NOT_ACCEPTED = "verification-not-accepted"
    #: the association was made but no C-ECHO response came (aborted, timed out)
    NO_RESPONSE = "no-response"
    #: the peer answered the C-ECHO with a non-success status
    STATUS = "status"
    #: something failed on our side before any connection (bad address, ...)
    LOCAL_ERROR = "local-error"


@dataclass(frozen=True)
class Rejection:
    """An A-ASSOCIATE-RJ's result (1 permanent, 2 transient), source and reason (PS3.8
    table 9-21)."""

    result: int
    source: int
    reason: int

    def describe(self) -> str:
        kind = {1: "permanent", 2: "transient"}.get(self.result, f"result {self.result}")
        source = _SOURCES.get(self.source, f"source {self.source}")
        reason = _REASONS.get((self.source, self.reason), f"reason {self.reason}")
        return f"{kind}, by the {source}: {reason}"


_SOURCES = {
    1: "service user",
    2: "service provider (ACSE)",
    3: "service provider (presentation)",
}
_REASONS = {
    (1, 1): "no reason given",
    (1, 2): "application context name not supported",
    (1, 3): "calling AE title not recognised",
    (1, 7): "called AE title not recognised",
    (2, 1): "no reason given",
    (2, 2): "protocol version not supported",
    (3, 1): "temporary congestion",
    (3, 2): "local limit exceeded",
}


@dataclass(frozen=True)
class EchoFacts:
    """What one verification attempt observed (plain data; see
    :func:`dicom_node.scu.diagnose_echo`). Later stages are meaningful only when the earlier
    ones succeeded: set-up, name resolution, TCP (and TLS), association, C-ECHO."""

    #: the peer as ``AE@host:port``
    remote: str
    host: str
    port: int
    called_ae: str
    calling_ae: str
    #: the destination is reached over TLS
    tls: bool
    #: why the TLS settings are unusable (an exception's class and errno text)
    setup_error: str | None = None
    #: why something failed on our side before connecting (class name only)
    local_error: str | None = None
    resolve_failed: bool = False
    #: the TCP connection's error (refused, timed out, ...)
    connect_error: OSError | None = None
    #: the TLS error the handshake (or a read) failed on
    tls_error: ssl.SSLError | None = None
    #: the TCP connection (and TLS handshake) succeeded
    connected: bool = False
    #: the peer answered a plain association request with a TLS record
    tls_reply: bool = False
    rejection: Rejection | None = None
    #: the peer accepted the association but not the Verification SOP class
    no_context: bool = False
    #: the peer sent an A-ABORT or closed the connection
    peer_ended: bool = False
    #: the association broke on one of our bounds (invalid or oversized PDU, ...)
    problem: str | None = None
    #: connected, but no answer to the association request within ``timeout``
    unanswered: bool = False
    #: the association was established
    established: bool = False
    #: the C-ECHO's status; None without a response
    status: int | None = None
    #: the bound on each step (seconds), for the messages
    timeout: float = 0.0


@dataclass(frozen=True)
class EchoDiagnosis:
    """A C-ECHO's outcome: its cause, a one-line explanation and the fix to try (None on
    success). ``status``: the peer's DIMSE status, None without a response."""

    cause: EchoCause
    explanation: str
    fix: str | None
    status: int | None = None

    @property
    def ok(self) -> bool:
        return self.cause is EchoCause.OK


#: OpenSSL reasons that mean the peer did not answer in TLS
_NOT_TLS_REASONS = frozenset(
    {
        "WRONG_VERSION_NUMBER",
        "RECORD_LAYER_FAILURE",
        "PACKET_LENGTH_TOO_LONG",
        "UNKNOWN_PROTOCOL",
        "HTTP_REQUEST",
        "UNEXPECTED_RECORD",
        "RECORD_LENGTH_MISMATCH",
    }
)
#: in OpenSSL alert reasons: the peer refused our client certificate (or wanted one)
_CLIENT_CERT_MARKERS = ("CERTIFICATE", "UNKNOWN_CA")
#: OpenSSL verification codes for a name mismatch (X509_V_ERR_HOSTNAME_MISMATCH, _IP_...)
_NAME_MISMATCH_CODES = frozenset({62, 64})


def diagnose(facts: EchoFacts) -> EchoDiagnosis:
    """The cause of the outcome ``facts`` describe, in the order things happen."""
    for step in (_setup, _connection, _tls, _association, _response):
        found = step(facts)
        if found is not None:
            return found
    # not reached: _response always answers
    return EchoDiagnosis(EchoCause.LOCAL_ERROR, f"{facts.remote}: unknown outcome", _CHECK_LOG)


_CHECK_LOG = "see xrayd's log for details"


def _no_association(facts: EchoFacts, why: str) -> str:
    return f"no association with {facts.remote}: {why}"


def _setup(facts: EchoFacts) -> EchoDiagnosis | None:
    if facts.setup_error is not None:
        return EchoDiagnosis(
            EchoCause.TLS_SETUP,
            f"{facts.remote}: TLS set-up failed: {facts.setup_error}",
            "check the destination's TLS files (CA, certificate, key): that they exist, are "
            "readable by xrayd, are PEM, and that the key matches the certificate",
        )
    if facts.local_error is not None:
        return EchoDiagnosis(
            EchoCause.LOCAL_ERROR,
            _no_association(facts, facts.local_error),
            "check the destination's host and port",
        )
    if facts.resolve_failed:
        return EchoDiagnosis(
            EchoCause.DNS,
            _no_association(facts, f"the host name {facts.host!r} does not resolve (DNS)"),
            "check the spelling of the host name, that this machine's DNS knows it, or use "
            "the PACS's IP address",
        )
    return None


def _connection(facts: EchoFacts) -> EchoDiagnosis | None:
    exc = facts.connect_error
    if exc is None or facts.connected:
        return None
    where = f"{facts.host}:{facts.port}"
    if isinstance(exc, ConnectionRefusedError) or exc.errno == errno.ECONNREFUSED:
        return EchoDiagnosis(
            EchoCause.REFUSED,
            _no_association(facts, f"connection refused: nothing listens on {where}"),
            "check the port, that the PACS's DICOM service is running, and that no firewall "
            "rejects the connection",
        )
    if isinstance(exc, TimeoutError) or exc.errno == errno.ETIMEDOUT:
        return EchoDiagnosis(
            EchoCause.TIMED_OUT,
            _no_association(
                facts, f"no answer to the TCP connection to {where} within {facts.timeout:g} s"
            ),
            "check that the host is up and reachable from this machine (routing, a firewall "
            "that drops the connection), and the address and port",
        )
    if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL):
        return EchoDiagnosis(
            EchoCause.UNREACHABLE,
            _no_association(facts, f"{where} is unreachable ({exc.strerror or 'no route'})"),
            "check the address and this machine's network route to it",
        )
    return EchoDiagnosis(
        EchoCause.CONNECT_FAILED,
        _no_association(facts, f"cannot connect to {where} ({_os_error(exc)})"),
        "check the address and port, and the network between this machine and the PACS",
    )


def _tls(facts: EchoFacts) -> EchoDiagnosis | None:
    exc = facts.tls_error
    if exc is None:
        if facts.tls_reply and not facts.tls:
            return EchoDiagnosis(
                EchoCause.TLS_REQUIRED,
                _no_association(facts, "the peer closed it and speaks TLS: it requires DICOM TLS"),
                "enable TLS for this destination (its CA file, and a client certificate if "
                "the PACS asks for one), or use the PACS's plain DICOM port",
            )
        return None
    reason = str(exc.reason or "").upper()
    prefix = f"{facts.remote}: TLS handshake failed"
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = exc.verify_message or exc.reason or "certificate verify failed"
        if exc.verify_code in _NAME_MISMATCH_CODES:
            return EchoDiagnosis(
                EchoCause.TLS_HOSTNAME,
                f"{prefix}: the PACS's certificate does not carry the expected name ({detail})",
                "set the destination's server_hostname to a name the certificate carries, "
                "or ask for a certificate with this host's name",
            )
        return EchoDiagnosis(
            EchoCause.TLS_UNTRUSTED,
            f"{prefix}: the PACS's certificate is not trusted ({detail})",
            "give the destination the CA file that signed the PACS's certificate, and check "
            "that certificate's validity dates",
        )
    if reason in _NOT_TLS_REASONS:
        return EchoDiagnosis(
            EchoCause.TLS_NOT_SPOKEN,
            f"{prefix}: the peer does not speak TLS on port {facts.port} ({_tls_reason(exc)})",
            "turn TLS off for this destination, or use the PACS's DICOM TLS port",
        )
    if "ALERT" in reason and any(m in reason for m in _CLIENT_CERT_MARKERS):
        return EchoDiagnosis(
            EchoCause.TLS_CLIENT_CERT,
            f"{prefix}: the PACS refused xrayd's client certificate ({_tls_reason(exc)})",
            "give the destination a client certificate (cert_file, key_file) signed by a CA "
            "the PACS trusts, or add xrayd's CA on the PACS",
        )
    if isinstance(exc, ssl.SSLEOFError | ssl.SSLZeroReturnError | ssl.SSLSyscallError):
        return EchoDiagnosis(
            EchoCause.TLS_FAILED,
            f"{prefix}: the peer closed the connection during the handshake",
            "check that the port is the PACS's DICOM TLS port and that the PACS accepts "
            "xrayd's client certificate (or does not need one)",
        )
    return EchoDiagnosis(
        EchoCause.TLS_FAILED,
        f"{prefix}: {_tls_reason(exc)}",
        "compare the TLS versions and ciphers the PACS offers with xrayd's (TLS 1.2 or "
        "later), and the PACS's log",
    )


def _association(facts: EchoFacts) -> EchoDiagnosis | None:
    if facts.established:
        return None
    rejection = facts.rejection
    if rejection is not None:
        return _rejected(facts, rejection)
    if facts.no_context:
        return EchoDiagnosis(
            EchoCause.VERIFICATION_NOT_ACCEPTED,
            f"{facts.remote} accepted the association but not the Verification SOP class (C-ECHO)",
            "enable Verification (C-ECHO) for xrayd's AE title on the PACS; some PACS accept "
            "C-STORE only from known callers",
        )
    if facts.problem is not None:
        return EchoDiagnosis(
            EchoCause.PROTOCOL_ERROR,
            _no_association(facts, f"aborted: {facts.problem}"),
            "check that the port is the PACS's DICOM port (not a web or TLS port)"
            + ("" if facts.tls else ", and whether the PACS requires DICOM TLS"),
        )
    if facts.unanswered:
        return EchoDiagnosis(
            EchoCause.NO_ANSWER,
            _no_association(
                facts, f"no answer to the association request within {facts.timeout:g} s"
            ),
            "check that the port is the PACS's DICOM port and that the PACS is not overloaded"
            + ("" if facts.tls else "; a PACS that requires DICOM TLS may also stay silent"),
        )
    if facts.connected:
        return EchoDiagnosis(
            EchoCause.ABORTED,
            _no_association(facts, "aborted by the peer (A-ABORT or connection closed)"),
            f"the PACS ended the association without a reason: often it does not accept "
            f"xrayd's AE title {facts.calling_ae} (add it on the PACS)"
            + ("" if facts.tls else " or it requires DICOM TLS")
            + "; the PACS's log names the reason",
        )
    return EchoDiagnosis(
        EchoCause.CONNECT_FAILED,
        _no_association(facts, "could not connect"),
        "check the address and port, and that the PACS's DICOM service is running",
    )


def _rejected(facts: EchoFacts, rejection: Rejection) -> EchoDiagnosis:
    text = _no_association(facts, f"rejected ({rejection.describe()})")
    key = (rejection.source, rejection.reason)
    if key == (1, 7):
        return EchoDiagnosis(
            EchoCause.CALLED_AE_UNKNOWN,
            text,
            f"the PACS does not know the AE title you gave it ({facts.called_ae}): check the "
            "destination's AE title (case and spaces count) against the PACS's own",
        )
    if key == (1, 3):
        return EchoDiagnosis(
            EchoCause.CALLING_AE_UNKNOWN,
            text,
            f"the PACS does not know xrayd's AE title {facts.calling_ae}: add it on the PACS "
            "(with this machine's address if the PACS checks it)",
        )
    if rejection.source == 3 or rejection.result == 2:
        return EchoDiagnosis(
            EchoCause.BUSY,
            text,
            "the PACS is busy or at its association limit: try again later, or raise its limit",
        )
    if key in ((1, 2), (2, 2)):
        fix = "the PACS does not speak this DICOM protocol version: check it is a DICOM node"
    else:
        fix = (
            f"the PACS gave no reason: check on the PACS that xrayd's AE title "
            f"{facts.calling_ae} and address are allowed, and the PACS's log"
        )
    return EchoDiagnosis(EchoCause.REJECTED, text, fix)


def _response(facts: EchoFacts) -> EchoDiagnosis:
    status = facts.status
    if status is None:
        why = facts.problem or (
            "the peer aborted the association"
            if facts.peer_ended
            else f"none within {facts.timeout:g} s, or the association was aborted"
        )
        return EchoDiagnosis(
            EchoCause.NO_RESPONSE,
            f"no C-ECHO response from {facts.remote}: {why}",
            "the PACS accepted the association but did not answer the C-ECHO: check that "
            "Verification is enabled for xrayd's AE title, and the PACS's log",
        )
    if status == 0:
        return EchoDiagnosis(
            EchoCause.OK, f"{facts.remote} answered the C-ECHO (status 0x0000)", None, 0
        )
    name = _ECHO_STATUSES.get(status, "a failure")
    return EchoDiagnosis(
        EchoCause.STATUS,
        f"{facts.remote} answered with status 0x{status:04X} ({name})",
        "the PACS received the C-ECHO but refused it: check that Verification is enabled "
        "for xrayd's AE title, and the PACS's log",
        status,
    )


_ECHO_STATUSES = {
    0x0122: "SOP class not supported",
    0x0210: "duplicate invocation",
    0x0211: "unrecognised operation",
    0x0212: "mistyped argument",
}


def _tls_reason(exc: ssl.SSLError) -> str:
    return str(exc.reason or type(exc).__name__).lower().replace("_", " ")


def _os_error(exc: OSError) -> str:
    return f"{type(exc).__name__}: {exc.strerror}" if exc.strerror else type(exc).__name__
