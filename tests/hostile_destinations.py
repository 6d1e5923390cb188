"""DICOM destinations that misbehave on purpose, for tests of outgoing associations.

Each peer listens on 127.0.0.1 with a plain socket and serves the connections it accepts, one
thread in all, in one of these ways (``behaviour``):

* ``silent``: accepts the TCP connection, then never reads or writes a byte;
* ``stall_after_accept``: answers the A-ASSOCIATE-RQ with an A-ASSOCIATE-AC accepting every
  proposed context, reads ``read_after_accept`` more bytes, then neither reads nor writes (the
  sender's data set fills the socket buffers and its writes block);
* ``never_answer``: accepts the association and reads everything sent, but never answers;
* ``huge_accept``: answers the A-ASSOCIATE-RQ with an A-ASSOCIATE-AC header that declares a
  body of 4 GiB - 1, sends ``huge_prefix`` bytes of it, then nothing more (still reading);
* ``huge_data``: accepts the association properly, then answers the first P-DATA-TF with a
  P-DATA-TF header declaring 4 GiB - 1 and ``huge_prefix`` bytes of it (still reading);
* ``trickle``: accepts the association, then reads ``trickle_bytes`` every ``trickle_seconds``
  (each of our writes makes progress well within its timeout, yet a large data set takes
  long) and never answers; ``received`` counts the bytes read after the A-ASSOCIATE-AC.

The connections stay open until :meth:`HostileDestination.close`. ``served`` is set once the peer
has done its part on a connection (so a test knows the misbehaviour has happened).
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
from typing import Literal

from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    MaximumLengthNotification,
)
from pynetdicom.presentation import PresentationContext

Behaviour = Literal[
    "silent", "stall_after_accept", "never_answer", "huge_accept", "huge_data", "trickle"
]
HUGE = 0xFFFFFFFF


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("peer closed")
        data += chunk
    return bytes(data)


def read_pdu(sock: socket.socket) -> bytes:
    """One whole PDU (header included) from a trusted sender (our own test client)."""
    header = _recv_exactly(sock, 6)
    (length,) = struct.unpack(">L", header[2:])
    return header + _recv_exactly(sock, length)


def associate_ac(rq_pdu: bytes, max_pdu: int = 16384) -> bytes:
    """An A-ASSOCIATE-AC accepting every context of ``rq_pdu`` in its first transfer syntax."""
    rq = A_ASSOCIATE_RQ()
    rq.decode(rq_pdu)
    req = rq.to_primitive()
    ac = A_ASSOCIATE()
    ac.application_context_name = req.application_context_name
    ac.calling_ae_title = req.calling_ae_title
    ac.called_ae_title = req.called_ae_title
    ac.result = 0x00
    ac.result_source = 0x01
    results = []
    for cx in req.presentation_context_definition_list:
        result = PresentationContext()
        result.context_id = cx.context_id
        result.abstract_syntax = cx.abstract_syntax
        result.transfer_syntax = [cx.transfer_syntax[0]]
        result.result = 0x00
        results.append(result)
    ac.presentation_context_definition_results_list = results
    length = MaximumLengthNotification()
    length.maximum_length_received = max_pdu
    implementation = ImplementationClassUIDNotification()
    implementation.implementation_class_uid = PYNETDICOM_IMPLEMENTATION_UID
    ac.user_information = [length, implementation]
    pdu = A_ASSOCIATE_AC()
    pdu.from_primitive(ac)
    return bytes(pdu.encode())


class HostileDestination:
    """A listening socket on 127.0.0.1 whose connections misbehave as ``behaviour`` says."""

    def __init__(
        self,
        behaviour: Behaviour,
        *,
        read_after_accept: int = 0,
        huge_prefix: int = 4096,
        trickle_seconds: float = 0.1,
        trickle_bytes: int = 65536,
    ) -> None:
        self.behaviour = behaviour
        self.read_after_accept = read_after_accept
        self.huge_prefix = huge_prefix
        self.trickle_seconds = trickle_seconds
        self.trickle_bytes = trickle_bytes
        self.received = 0
        self.closed_by_sender = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.connections: list[socket.socket] = []
        self.served = threading.Event()
        self._stop_r, self._stop_w = socket.socketpair()
        self._thread = threading.Thread(target=self._run, name="hostile-peer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        readers: list[socket.socket] = []  # connections whose bytes we go on draining
        while True:
            ready, _, _ = select.select([self.listener, self._stop_r, *readers], [], [])
            if self._stop_r in ready:
                return
            if self.listener in ready:
                conn, _ = self.listener.accept()
                self.connections.append(conn)
                if self._serve(conn):
                    readers.append(conn)
            for conn in [r for r in ready if r in readers]:
                try:
                    if not conn.recv(1 << 16):
                        readers.remove(conn)
                except OSError:
                    readers.remove(conn)

    def _serve(self, conn: socket.socket) -> bool:
        """Do the misbehaviour; True when the connection's input should be drained after."""
        try:
            if self.behaviour == "silent":
                return False
            rq = read_pdu(conn)
            if self.behaviour == "huge_accept":
                conn.sendall(struct.pack(">BBL", 0x02, 0, HUGE) + b"\0" * self.huge_prefix)
                return True
            conn.sendall(associate_ac(rq))
            if self.behaviour == "stall_after_accept":
                if self.read_after_accept:
                    _recv_exactly(conn, self.read_after_accept)
                return False
            if self.behaviour == "trickle":
                self.served.set()
                # pace the reads by waiting on the stop socket: close() ends it at once
                while not select.select([self._stop_r], [], [], self.trickle_seconds)[0]:
                    data = conn.recv(self.trickle_bytes)
                    if not data:
                        self.closed_by_sender.set()
                        return False
                    self.received += len(data)
                return False
            if self.behaviour == "huge_data":
                read_pdu(conn)  # the first P-DATA-TF of the request
                conn.sendall(struct.pack(">BBL", 0x04, 0, HUGE) + b"\0" * self.huge_prefix)
            return True
        except OSError:
            return False
        finally:
            self.served.set()

    def close(self) -> None:
        self._stop_w.send(b"x")
        self._thread.join()
        for conn in self.connections:
            with contextlib.suppress(OSError):
                conn.close()
        self.listener.close()
        self._stop_r.close()
        self._stop_w.close()

    def __enter__(self) -> HostileDestination:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
