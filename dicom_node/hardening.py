"""Bounds pynetdicom does not enforce by itself.

pynetdicom 3.0 reads whatever PDU length a peer declares before any check, spawns a thread for
every TCP connection before the association limit is looked at, and logs identifiers by
default. This module bounds all three (the private pynetdicom names it relies on are watched by
``tests/unit/dicom_node/test_pynetdicom_upstream.py``):

* :func:`bounded_read_pdu` replaces the DUL's PDU reader on each acceptor association: a PDU
  longer than allowed aborts the association before its body is read, and the body is read with
  ``recv_into`` into one pre-sized buffer (pynetdicom reads 4 KiB at a time into a growing array).
* :class:`BoundedAssociationServer` refuses TCP connections beyond a fixed number of live
  associations, or beyond a number per source address, *before* creating a thread, and accepts
  without a helper thread per connection.
* Every accepted socket reads under a :class:`~dicom_node.deadline.ReadDeadline`: the ARTIM
  timeout until the A-ASSOCIATE-RQ is in, the idle timeout for each read after it. A peer that
  stalls mid-PDU is disconnected and its slot freed (see :mod:`dicom_node.deadline`).
* A PDU's buffer grows as its bytes arrive: a declared length costs no memory by itself.
* DIMSE command sets and in-memory data sets are capped (:mod:`dicom_node.dimse_limits`);
  C-STORE data sets are capped where they stream to disk.
* :func:`quiet_identifiers` turns off pynetdicom's logging of request/response identifiers.

With an ``ssl_context`` the server also runs each TLS handshake on a thread of its own with a
deadline (:func:`dicom_node.tls.accept_tls`), counted against the connection cap, instead of in
the accepting thread without one as pynetdicom does.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import ssl
import struct
import threading
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from pynetdicom import _config
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

from dicom_node.deadline import ReadDeadline
from dicom_node.dimse_limits import bound_dimse
from dicom_node.reactor import use_association_reactor, use_select_reactor
from dicom_node.streaming import BufferPool, NewPath, StreamingFile, stream_into
from dicom_node.tls import accept_tls

if TYPE_CHECKING:
    from pynetdicom.association import Association
    from pynetdicom.dul import DULServiceProvider

LOGGER = logging.getLogger(__name__)

P_DATA_TF = 0x04
#: Association request/accept PDUs carry presentation contexts; 1 MiB holds thousands of them.
MAX_ASSOCIATE_PDU = 1024 * 1024
#: Release and abort PDUs have a 4-byte body.
MAX_SMALL_PDU = 64
_VALID_PDU_TYPES = frozenset({0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07})
#: the first allocation for a PDU body; it doubles as bytes arrive, up to the declared length
FIRST_CHUNK = 64 * 1024
#: a refusal of the same kind from the same address is logged at most once per this many s
REFUSAL_LOG_SECONDS = 60.0


def quiet_identifiers() -> None:
    """Stop pynetdicom from logging patient identifiers and dataset dumps."""
    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False
    _config.LOG_HANDLER_LEVEL = "none"


def pdu_limit(pdu_type: int, max_pdata: int) -> int:
    """Largest body length accepted for a PDU of ``pdu_type``."""
    if pdu_type == P_DATA_TF:
        return max_pdata
    if pdu_type in (0x01, 0x02, 0x03):
        return MAX_ASSOCIATE_PDU
    return MAX_SMALL_PDU


def _recv_into(sock: socket.socket, view: memoryview, deadline: ReadDeadline | None) -> int:
    """Fill ``view`` from ``sock``; returns the byte count read (short only at end of stream).

    Each read waits no longer than ``deadline`` allows (TimeoutError past it).
    """
    total = 0
    size = len(view)
    while total < size:
        if deadline is not None:
            deadline.arm()
        n = sock.recv_into(view[total:], min(size - total, 1 << 20))
        if n == 0:
            break
        total += n
    return total


_REFUSED = "_xrayd_refused"
_DEADLINE = "_xrayd_deadline"


def _deadline_of(dul: DULServiceProvider) -> ReadDeadline | None:
    deadline = getattr(dul, _DEADLINE, None)
    return deadline if isinstance(deadline, ReadDeadline) else None


def _refuse_rest(dul: DULServiceProvider, sock: socket.socket) -> None:
    """Read nothing more from a peer we abort: the rest of its stream is not PDUs we can parse.

    The A-ABORT still goes out on the write side; the next read reports the connection closed.
    """
    setattr(dul, _REFUSED, True)
    if isinstance(sock, ssl.SSLSocket):
        return  # shutting it down would drop TLS and send the A-ABORT in clear text
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RD)


def bounded_read_pdu(dul: DULServiceProvider, max_pdata: int) -> None:
    """Drop-in replacement for ``DULServiceProvider._read_pdu_data`` with a length bound.

    Emits the same state-machine events as the original: Evt17 (connection closed), Evt19
    (invalid PDU, which makes the state machine abort the association), or the decoded PDU's event.

    While a C-STORE data set streams to disk, consecutive P-DATA-TF PDUs that each carry one
    non-final data-set fragment are read in a loop, straight into pooled buffers
    (:class:`~dicom_node.streaming.BufferPool`), as long as more data is already waiting and
    the DUL has nothing to send: no pass through the reactor, no allocation and no hand-off to
    the writer thread per PDU (DCMTK sends a 10 MB image as some 80 PDUs of 128 KiB).
    """
    assert dul.socket is not None and dul.socket.socket is not None
    raw: socket.socket = dul.socket.socket
    if getattr(dul, _REFUSED, False):
        dul.event_queue.put("Evt17")
        return
    filler: _Filler | None = None
    deadline = _deadline_of(dul)
    try:
        while True:
            read = _read_pdu(dul, raw, max_pdata, filler, deadline)
            if read is None:  # an event was queued; a half-read fragment is dropped
                if filler is not None:
                    filler.drop()
                return
            filler, buf = read
            if buf is None or (buf[0] == P_DATA_TF and stream_data_fragments(dul, buf)):
                if _more_waiting(dul, raw):
                    dul._idle_timer.restart()
                    continue
                if filler is not None:
                    filler.flush()
                return
            try:
                pdu, event = dul._decode_pdu(buf)
                if buf[0] == 0x01:
                    # pynetdicom converts the request inside its state machine, where a bad
                    # item (an even presentation context ID...) would end the DUL thread
                    pdu.to_primitive()
            except Exception:  # any malformed PDU: pynetdicom's own reader treats it the same
                LOGGER.warning("aborting association: undecodable PDU type 0x%02X", buf[0])
                dul.event_queue.put("Evt19")
                return
            if buf[0] == 0x01 and deadline is not None:
                deadline.association_requested()
            dul.event_queue.put(event)
            dul._recv_pdu.put(pdu)
            return
    except TimeoutError:
        if filler is not None:
            filler.drop()
        _log_timeout(dul, deadline)
        _refuse_rest(dul, raw)
        dul.event_queue.put("Evt17")
    except OSError:
        if filler is not None:
            filler.drop()
        dul.event_queue.put("Evt17")


def _log_timeout(dul: DULServiceProvider, deadline: ReadDeadline | None) -> None:
    peer = getattr(dul.assoc.requestor, "address", "?")
    if deadline is not None and deadline.negotiating:
        LOGGER.warning(
            "closing connection from %s: no complete A-ASSOCIATE-RQ within %.0f s (ARTIM)",
            peer,
            deadline.artim_seconds,
        )
    else:
        LOGGER.warning(
            "closing connection from %s: stalled mid-PDU for %.0f s (idle timeout)",
            peer,
            deadline.idle_seconds if deadline is not None else 0.0,
        )


def _read_pdu(
    dul: DULServiceProvider,
    raw: socket.socket,
    max_pdata: int,
    filler: _Filler | None,
    deadline: ReadDeadline | None = None,
) -> tuple[_Filler | None, bytearray | None] | None:
    """Read one PDU.

    Returns ``(filler, None)`` when it was a lone data-set fragment, now in ``filler``'s
    buffers; ``(filler, buf)`` with the whole PDU otherwise (``filler`` flushed first, so its
    bytes reach the stream before this PDU's); None after queuing Evt17 or Evt19.
    """
    header = bytearray(6)
    if _recv_into(raw, memoryview(header), deadline) != 6:
        dul.event_queue.put("Evt17")
        return None
    pdu_type, _, length = struct.unpack(">BBL", header)
    if pdu_type not in _VALID_PDU_TYPES:
        LOGGER.warning("aborting association: unknown PDU type 0x%02X", pdu_type)
        _refuse_rest(dul, raw)
        dul.event_queue.put("Evt19")
        return None
    limit = pdu_limit(pdu_type, max_pdata)
    if length > limit:
        LOGGER.warning(
            "aborting association: PDU type 0x%02X declares %d bytes, limit %d",
            pdu_type,
            length,
            limit,
        )
        _refuse_rest(dul, raw)
        dul.event_queue.put("Evt19")
        return None
    item = bytearray()
    if pdu_type == P_DATA_TF and length >= 6:
        stream, context_id = _streaming_target(dul)
        if stream is not None:
            item = bytearray(6)
            if _recv_into(raw, memoryview(item), deadline) != 6:
                dul.event_queue.put("Evt17")
                return None
            item_length = int.from_bytes(item[:4], "big")
            if item_length + 4 == length and item[4] == context_id and not item[5] & 0x03:
                if filler is None or filler.stream is not stream:
                    if filler is not None:
                        filler.flush()
                    filler = _Filler(stream, _pool_of(dul))
                if not filler.receive(raw, item_length - 2, deadline):
                    LOGGER.info("connection closed mid-PDU")
                    dul.event_queue.put("Evt17")
                    return None
                return filler, None
    buf = _recv_growing(raw, header + item, 6 + length, deadline)
    got = len(buf) - 6
    if got != length:
        LOGGER.info("connection closed mid-PDU (%d of %d bytes)", got, length)
        dul.event_queue.put("Evt17")
        return None
    if filler is not None:
        filler.flush()
    return None, buf


def _recv_growing(
    sock: socket.socket, start: bytearray, total: int, deadline: ReadDeadline | None
) -> bytearray:
    """Read until ``total`` bytes (``start`` included) or the end of the stream.

    The buffer starts at :data:`FIRST_CHUNK` past ``start`` and doubles as it fills, so memory
    follows the bytes that arrived, not the length the peer declared.
    """
    buf = start
    got = len(buf)
    while got < total:
        size = min(total, max(got + FIRST_CHUNK, 2 * got))
        buf.extend(bytes(size - len(buf)))
        with memoryview(buf) as view:
            n = _recv_into(sock, view[got:size], deadline)
        got += n
        if got < size:  # end of stream
            del buf[got:]
            break
    return buf


def _streaming_target(dul: DULServiceProvider) -> tuple[StreamingFile | None, int]:
    """The stream a C-STORE data set is being written to, and its presentation context id,
    when data-set fragments may bypass the state machine (see :func:`stream_data_fragments`)."""
    message = getattr(dul.assoc.dimse, "message", None)
    stream = getattr(message, "_data_set_file", None)
    if not isinstance(stream, StreamingFile) or message is None:
        return None, 0
    if dul.state_machine.current_state != "Sta6":
        return None, 0
    if not dul.event_queue.empty() or not dul._recv_pdu.empty():
        return None, 0
    return stream, int(message.context_id)


def _more_waiting(dul: DULServiceProvider, raw: socket.socket) -> bool:
    """More bytes can be read at once, and the DUL has nothing to send and is not stopping."""
    if dul._kill_thread or not dul.to_provider_queue.empty():
        return False
    if isinstance(raw, ssl.SSLSocket) and raw.pending():
        return True
    try:
        ready, _, _ = select.select([raw], [], [], 0)
    except (OSError, ValueError):
        return False
    return bool(ready)


_POOL = "_xrayd_buffer_pool"


def _pool_of(dul: DULServiceProvider) -> BufferPool:
    """The association's receive buffers (made on its first streamed fragment)."""
    pool = getattr(dul, _POOL, None)
    if pool is None:
        pool = BufferPool()
        setattr(dul, _POOL, pool)
    return cast(BufferPool, pool)


class _Filler:
    """Receives data-set bytes into pooled buffers; each full buffer goes to the stream."""

    def __init__(self, stream: StreamingFile, pool: BufferPool) -> None:
        self.stream = stream
        self.pool = pool
        self._buffer: bytearray | None = None
        self._fill = 0

    def receive(
        self, sock: socket.socket, count: int, deadline: ReadDeadline | None = None
    ) -> bool:
        """Read ``count`` bytes from ``sock``; False when the connection ended first."""
        while count:
            if self._buffer is None:
                self._buffer = self.pool.take()
                self._fill = 0
            n = min(count, len(self._buffer) - self._fill)
            try:
                view = memoryview(self._buffer)[self._fill : self._fill + n]
                got = _recv_into(sock, view, deadline)
            except BaseException:  # reset or timeout: the buffer goes back, the caller reports
                self.drop()
                raise
            self._fill += got
            count -= got
            if got < n:
                self.drop()
                return False
            if self._fill == len(self._buffer):
                self.flush()
        return True

    def flush(self) -> None:
        """Hand the bytes collected so far to the stream."""
        if self._buffer is not None:
            self.stream.write_pooled(self._buffer, self._fill, self.pool)
            self._buffer = None

    def drop(self) -> None:
        """Give the buffer back without writing it (the transfer broke off)."""
        if self._buffer is not None:
            self.pool.give(self._buffer)
            self._buffer = None


def stream_data_fragments(dul: DULServiceProvider, buf: bytearray) -> bool:
    """Fast path: hand the data-set fragments of a P-DATA-TF PDU straight to the stream.

    Applies only while a C-STORE data set is being streamed (its command already decoded, a
    :class:`~dicom_node.streaming.StreamingFile` open), in the established state, with no event
    or PDU waiting, and only to PDUs made solely of non-final data-set fragments of the message's
    own presentation context. Anything else (commands, the last fragment, odd items) returns
    False and goes through pynetdicom's state machine as usual, which is equivalent: for a
    P-DATA-TF in the established state that machine only passes the fragments to the DIMSE
    message, which writes them to the same stream.
    """
    stream, context_id = _streaming_target(dul)
    if stream is None:
        return False
    view = memoryview(buf)
    end = len(buf)
    pos = 6
    fragments: list[memoryview] = []
    while pos < end:
        if pos + 6 > end:
            return False
        item_length = int.from_bytes(buf[pos : pos + 4], "big")
        if item_length < 2 or pos + 4 + item_length > end:
            return False
        if buf[pos + 5] & 0x03 or buf[pos + 4] != context_id:
            return False  # a command fragment or the last data fragment
        fragments.append(view[pos + 6 : pos + 4 + item_length])
        pos += 4 + item_length
    for fragment in fragments:
        stream.write(fragment)
    return True


AcceptHook = Callable[["Association"], bool]
"""Called once the A-ASSOCIATE-RQ arrived; returns True when it rejected the association."""


class BoundedRequestHandler(RequestHandler):
    """Creates each acceptor with the bounded PDU reader and the server's accept hook."""

    server: BoundedAssociationServer

    def _create_association(self) -> Association:
        assoc = super()._create_association()
        server = self.server
        max_pdata = server.max_pdata
        dul = assoc.dul
        raw: socket.socket = self.request
        deadline = ReadDeadline(
            raw,
            artim_seconds=server.artim_timeout,
            idle_seconds=server.idle_timeout,
            accepted_at=server.accepted_at(raw),
        )
        deadline.arm()  # bounds sends too, from the first byte on
        setattr(dul, _DEADLINE, deadline)
        dul._read_pdu_data = lambda: bounded_read_pdu(dul, max_pdata)  # type: ignore[method-assign]
        use_select_reactor(dul)
        use_association_reactor(assoc)

        def refuse() -> None:
            _refuse_rest(dul, raw)
            dul.event_queue.put("Evt19")

        bound_dimse(assoc, refuse)
        if server.new_stream_path is not None:
            stream_into(dul, server.new_stream_path, server.max_instance_bytes)
        hook = server.accept_hook
        if hook is not None:
            acse = assoc.acse
            original = acse._negotiate_as_acceptor

            def negotiate() -> None:
                if not hook(assoc):
                    original()

            acse._negotiate_as_acceptor = negotiate  # type: ignore[method-assign]
        server.track(assoc)
        return assoc


class BoundedAssociationServer(ThreadedAssociationServer):
    """An association server with a hard cap on live connections and no thread per accept.

    Connections beyond ``max_connections``, or beyond ``max_per_host`` from one source
    address, are closed at once, before any thread exists; connections within them become
    associations whose own negotiation applies the finer limits. Each refusal is counted
    (``refused_connections``, ``refused_by_reason``) and passed to ``on_refused(host, reason)``
    (called on the accepting thread: it must not block); the log has one line per address and
    reason a minute, not one per connection.
    """

    max_pdata: int = 16384
    max_connections: int = 32
    #: live connections one source address may hold (0: no per-address cap)
    max_per_host: int = 0
    accept_hook: AcceptHook | None = None
    new_stream_path: NewPath | None = None
    #: largest C-STORE data set streamed to disk (None: no limit)
    max_instance_bytes: int | None = None
    #: seconds a TLS client has to complete its handshake (only with an ssl_context)
    handshake_timeout: float = 10.0
    #: seconds from accept until the A-ASSOCIATE-RQ must be in (TLS handshake included)
    artim_timeout: float = 10.0
    #: seconds a read may wait for the next byte once the association is requested
    idle_timeout: float = 30.0
    on_refused: Callable[[str, str], None] | None = None
    #: the listen() backlog; socketserver's default of 5 makes a burst of connections (a PACS
    #: opening several associations, or a flood to be refused) wait on SYN retransmissions
    request_queue_size = 128

    def __init__(self, *args: Any, listen_fd: int | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("request_handler", BoundedRequestHandler)
        self._listen_fd = listen_fd
        self._live: weakref.WeakSet[Association] = weakref.WeakSet()
        self._live_lock = threading.Lock()
        self._handshaking = 0
        self._handshaking_from: dict[str, int] = {}
        self._accepted_at: dict[int, float] = {}
        self._refusal_logged: dict[tuple[str, str], tuple[float, int]] = {}
        self._closed = False
        self.refused_connections = 0
        self.refused_by_reason: dict[str, int] = {}
        super().__init__(*args, **kwargs)

    def service_actions(self) -> None:
        """Called by ``serve_forever`` at each poll; does nothing.

        pynetdicom's ``AssociationServer.service_actions`` runs a full ``gc.collect()`` every
        60th poll (every 12 s here). In a process that has imported torch that pass walks
        about half a million objects and holds the GIL for some 350 ms, stalling every
        association's transfer. Python's own cyclic collector already frees ended
        associations; nothing needs a forced collection.
        """

    def track(self, assoc: Association) -> None:
        with self._live_lock:
            self._live.add(assoc)

    def live_connections(self) -> int:
        """Live associations plus connections still in their TLS handshake."""
        with self._live_lock:
            return self._handshaking + sum(1 for a in list(self._live) if a.is_alive())

    def live_connections_from(self, host: str) -> int:
        """Live associations and handshakes from source address ``host``."""
        with self._live_lock:
            live = sum(1 for a in list(self._live) if a.is_alive() and a.requestor.address == host)
            return live + self._handshaking_from.get(host, 0)

    def accepted_at(self, sock: socket.socket) -> float | None:
        """When ``sock`` was accepted (monotonic clock), once; None if unknown."""
        with self._live_lock:
            return self._accepted_at.pop(sock.fileno(), None)

    def _refuse(self, request: Any, host: str, reason: str, why: str) -> None:
        self.refused_connections += 1
        self.refused_by_reason[reason] = self.refused_by_reason.get(reason, 0) + 1
        now = time.monotonic()
        key = (host, reason)
        logged_at, suppressed = self._refusal_logged.get(key, (-REFUSAL_LOG_SECONDS, 0))
        if now - logged_at >= REFUSAL_LOG_SECONDS:
            more = f" ({suppressed} more since the last line)" if suppressed else ""
            LOGGER.warning("refusing TCP connection from %s: %s%s", host, why, more)
            if len(self._refusal_logged) > 4096:  # many addresses: forget the old ones
                self._refusal_logged.clear()
            self._refusal_logged[key] = (now, 0)
        else:
            self._refusal_logged[key] = (logged_at, suppressed + 1)
        self.shutdown_request(request)
        if self.on_refused is not None:
            try:
                self.on_refused(host, reason)
            except Exception:
                LOGGER.exception("on_refused failed")

    def server_bind(self) -> None:
        """Bind, or take over the listening socket ``listen_fd`` of another process.

        The listening socket is non-blocking: where processes share it (``listen_fd``), each
        one's accept loop wakes for a new connection and the first to call ``accept`` takes
        it (the others find nothing and go back to waiting). A process busy with its own
        associations comes later, so connections go to the less busy ones. (With
        ``SO_REUSEPORT``, used before, the kernel picked the process by a hash of the
        addresses, and four associations from one sender often landed three on one process.)
        """
        assert self.socket is not None
        if self._listen_fd is not None:
            self.socket.close()
            self.socket = socket.socket(fileno=os.dup(self._listen_fd))
            self.socket.setblocking(False)
            self.server_address = self.socket.getsockname()
            return
        super().server_bind()
        self.socket.setblocking(False)

    def server_activate(self) -> None:
        if self._listen_fd is None:  # a taken-over socket is listening already
            super().server_activate()

    @property
    def listen_fd(self) -> int:
        """The listening socket's descriptor (for processes that share it)."""
        assert self.socket is not None
        return self.socket.fileno()

    def process_request(self, request: Any, client_address: Any) -> None:
        """Handle the connection in the accepting thread; it only starts the association thread."""
        host = str(client_address[0])
        if self.live_connections() >= self.max_connections:
            why = f"live connection limit {self.max_connections} reached"
            self._refuse(request, host, "connection_limit", why)
            return
        if self.max_per_host and self.live_connections_from(host) >= self.max_per_host:
            why = f"limit of {self.max_per_host} connections per address reached"
            self._refuse(request, host, "per_host_limit", why)
            return
        with self._live_lock:
            self._accepted_at[request.fileno()] = time.monotonic()
        context = self.ssl_context
        if context is None:
            self._start_association(request, client_address)
            return
        with self._live_lock:
            self._handshaking += 1
            self._handshaking_from[host] = self._handshaking_from.get(host, 0) + 1
        try:
            threading.Thread(
                target=self._handshake_then_start,
                args=(context, request, client_address),
                name="xrayd-tls-handshake",
                daemon=True,
            ).start()
        except Exception:
            self._handshake_done(host)
            LOGGER.exception("could not start a TLS handshake")
            self.shutdown_request(request)

    def _handshake_done(self, host: str) -> None:
        with self._live_lock:
            self._handshaking -= 1
            left = self._handshaking_from.get(host, 0) - 1
            if left > 0:
                self._handshaking_from[host] = left
            else:
                self._handshaking_from.pop(host, None)

    def get_request(self) -> tuple[socket.socket, Any]:
        """Accept only: the TLS handshake runs later, bounded (see :meth:`process_request`)."""
        assert self.socket is not None
        return self.socket.accept()

    def _handshake_then_start(
        self, context: ssl.SSLContext, request: socket.socket, client_address: Any
    ) -> None:
        fileno = request.fileno()
        try:
            tls = accept_tls(context, request, self.handshake_timeout, str(client_address[0]))
            if tls is None:
                with self._live_lock:
                    self._accepted_at.pop(fileno, None)
                return
            if self._closed:  # stopped meanwhile: no new associations
                self.shutdown_request(tls)
                return
            self._start_association(tls, client_address)
        finally:
            # after the association is tracked: the count never dips
            self._handshake_done(str(client_address[0]))

    def _start_association(self, request: socket.socket, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            LOGGER.exception("could not start an association")
            with self._live_lock:
                self._accepted_at.pop(request.fileno(), None)
            self.shutdown_request(request)

    def server_close(self) -> None:
        self._closed = True
        if self._listen_fd is not None:
            # Shared with the process that made it: close our copy, do not shut it down.
            assert self.socket is not None
            self.socket.close()
            return
        super().server_close()
