"""A DUL reactor loop that waits on the socket instead of sleeping blindly.

pynetdicom's ``DULServiceProvider.run_reactor`` sleeps 1 ms whenever a pass of its loop found
nothing to do. A peer sending a 10 MB image as ~80 PDUs of 128 KiB (DCMTK's usual size) then
costs up to tens of milliseconds of pure sleeping per image. This loop is the same state machine
driver, except that an idle pass waits in ``select`` on the socket for at most that same delay:
incoming data wakes it at once, outgoing primitives are picked up no later than before.

Adapted from pynetdicom 3.0 ``dul.py`` (MIT licence); pinned by pyproject's ``pynetdicom<3.1``.
"""

from __future__ import annotations

import logging
import queue
import select
import time
from typing import TYPE_CHECKING

from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.utils import make_target

if TYPE_CHECKING:
    from pynetdicom.dul import DULServiceProvider

LOGGER = logging.getLogger(__name__)


def _wait_for_data(dul: DULServiceProvider) -> None:
    delay = dul._run_loop_delay
    sock = dul.socket.socket if dul.socket is not None else None
    if sock is None or not dul.socket._is_connected:  # type: ignore[union-attr]
        time.sleep(delay)
        return
    try:
        select.select([sock], [], [], delay)
    except (OSError, ValueError):  # closed meanwhile: the next pass reports it
        time.sleep(delay)


def run_reactor(dul: DULServiceProvider) -> None:
    """The DUL thread's main loop (see the module docstring)."""
    dul._idle_timer.start()
    idle = False
    while True:
        if not dul.assoc._dul_ready.is_set():
            dul.assoc._dul_ready.set()
            idle = True
        if idle:
            _wait_for_data(dul)
        if dul._kill_thread:
            break
        if dul.artim_timer.expired:
            dul.event_queue.put("Evt18")
        try:
            if dul._process_recv_primitive():
                pass
            elif dul._is_transport_event():
                dul._idle_timer.restart()
        except Exception:
            LOGGER.exception("exception in the DUL reactor; aborting the association")
            abort_pdu = A_ABORT_RQ()
            abort_pdu.source = 0x02
            abort_pdu.reason_diagnostic = 0x00
            assert dul.socket is not None
            dul.socket.send(abort_pdu.encode())
            dul.assoc.is_aborted = True
            dul.assoc.is_established = False
            dul.assoc._kill = True
            dul._kill_thread = True
            return
        try:
            event = dul.event_queue.get(block=False)
        except queue.Empty:
            idle = True
            continue
        dul.state_machine.do_action(event)
        idle = False


def use_select_reactor(dul: DULServiceProvider) -> None:
    """Make a not yet started DUL thread run :func:`run_reactor`."""
    dul._target = make_target(lambda: run_reactor(dul))  # type: ignore[attr-defined]
