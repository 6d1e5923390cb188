"""Read deadlines for accepted DICOM connections.

pynetdicom leaves an accepted socket blocking with no timeout, and its timers (ARTIM, the idle
"network timeout") run in threads that are themselves blocked once the DUL thread waits inside
``recv`` for the rest of a PDU. A peer that sends one byte of a PDU header then holds its
connection, and its place under the connection cap, for as long as it likes.

A :class:`ReadDeadline` puts the bound on the socket itself: before every blocking read the
socket's timeout is set, so the kernel's ``poll`` inside that very ``recv`` ends it. Nothing else
has to run for the deadline to hold, so nothing the peer does can stop it.

* Until the A-ASSOCIATE-RQ has been read completely, reads end at a fixed instant: the
  connection's accept time plus the ARTIM timeout (PS3.8 9.1.5). Trickling bytes does not help.
* Afterwards each read waits at most the idle timeout: a peer that stalls mid-PDU for that long
  is disconnected (between PDUs, pynetdicom's own idle timer applies, as its reactor is not
  blocked then).

The same timeout also bounds sends: a peer that stops reading cannot block a response forever.
"""

from __future__ import annotations

import socket
import time


class ReadDeadline:
    """The deadline of one accepted connection (see the module docstring)."""

    def __init__(
        self,
        sock: socket.socket,
        *,
        artim_seconds: float,
        idle_seconds: float,
        accepted_at: float | None = None,
    ) -> None:
        self._sock = sock
        self.idle_seconds = idle_seconds
        self.artim_seconds = artim_seconds
        start = time.monotonic() if accepted_at is None else accepted_at
        self._artim_until: float | None = start + artim_seconds
        self._applied: float | None = None

    @property
    def negotiating(self) -> bool:
        """True until the A-ASSOCIATE-RQ has been read."""
        return self._artim_until is not None

    def association_requested(self) -> None:
        """The A-ASSOCIATE-RQ is in: from now on only the idle timeout applies."""
        self._artim_until = None
        self._apply(self.idle_seconds)

    def arm(self) -> None:
        """Set the socket's timeout for the next read; TimeoutError once the ARTIM time is up."""
        timeout = self.idle_seconds
        if self._artim_until is not None:
            left = self._artim_until - time.monotonic()
            if left <= 0:
                raise TimeoutError("association not requested within the ARTIM timeout")
            timeout = min(timeout, left)
        self._apply(timeout)

    def _apply(self, timeout: float) -> None:
        if timeout != self._applied:
            self._sock.settimeout(timeout)
            self._applied = timeout
