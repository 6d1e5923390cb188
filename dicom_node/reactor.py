"""Reactor loops for acceptor associations that wait on their inputs instead of sleeping blindly.

pynetdicom's ``DULServiceProvider.run_reactor`` sleeps 1 ms whenever a pass of its loop found
nothing to do. A peer sending a 10 MB image as ~80 PDUs of 128 KiB (DCMTK's usual size) then
costs up to tens of milliseconds of pure sleeping per image. :func:`run_reactor` is the same
state machine driver, except that an idle pass waits in ``select`` on the socket for at most that
same delay: incoming data wakes it at once, outgoing primitives are picked up no later than
before. (A wake-up socket poked by the DUL's outgoing queue was tried, to send responses at once:
with it, xrayd's own deliveries to Orthanc were aborted after a rejected association, in
``tests/e2e/test_results_to_pacs.py``; it was taken out, and the cause is not yet understood.)

pynetdicom's ``Association._run_reactor`` (the acceptor's DIMSE loop) also sleeps 1 ms before
each non-blocking look at the DIMSE message queue: up to a millisecond between the last fragment
of a C-STORE and its handler, and a thousand wake-ups a second per idle association, each taking
the GIL. :func:`run_association_reactor` waits on the queue itself, and runs the handlers of
EVT_RELEASED before it answers the release (see there).

Adapted from pynetdicom 3.0.4 ``dul.py`` and ``association.py`` (MIT licence); pyproject pins
``pynetdicom==3.0.4`` and ``tests/unit/dicom_node/test_pynetdicom_upstream.py`` fails when the
upstream code copied here changes.
"""

from __future__ import annotations

import logging
import queue
import select
import time
from typing import TYPE_CHECKING

from pynetdicom import evt
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.utils import make_target

from dicom_node.streaming import discard_unfinished

if TYPE_CHECKING:
    from pynetdicom.association import Association
    from pynetdicom.dul import DULServiceProvider

LOGGER = logging.getLogger(__name__)

#: the longest an idle DUL thread waits before it looks at its timers again (pynetdicom's delay)
DUL_IDLE_SECONDS = 0.001
#: the longest the association thread waits for a DIMSE message before it looks for a release,
#: an abort, a dead DUL thread or the network timeout again
ASSOCIATION_IDLE_SECONDS = 0.005


def _wait_for_data(dul: DULServiceProvider) -> None:
    sock = dul.socket.socket if dul.socket is not None else None
    if sock is None or not dul.socket._is_connected:  # type: ignore[union-attr]
        time.sleep(DUL_IDLE_SECONDS)
        return
    try:
        select.select([sock], [], [], DUL_IDLE_SECONDS)
    except (OSError, ValueError):  # closed meanwhile: the next pass reports it
        time.sleep(DUL_IDLE_SECONDS)


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
            _abort(dul)
            return
        try:
            event = dul.event_queue.get(block=False)
        except queue.Empty:
            idle = True
            continue
        before = dul.state_machine.current_state
        try:
            dul.state_machine.do_action(event)
        except Exception as exc:  # pynetdicom has logged it; the thread must not die silently
            LOGGER.warning(
                "aborting the association: its state machine failed (%s)", type(exc).__name__
            )
            _abort(dul)
            return
        idle = False
        if before != "Sta1" and dul.state_machine.current_state == "Sta1":
            _connection_over(dul)


def _abort(dul: DULServiceProvider) -> None:
    """Send an A-ABORT and stop the DUL thread and its association."""
    abort_pdu = A_ABORT_RQ()
    abort_pdu.source = 0x02
    abort_pdu.reason_diagnostic = 0x00
    if dul.socket is not None:
        dul.socket.send(abort_pdu.encode())
    dul.assoc.is_aborted = True
    dul.assoc.is_established = False
    dul.assoc._kill = True
    dul._kill_thread = True
    dul.to_user_queue.put(None)  # an acceptor still waiting for its request: stop waiting


def _connection_over(dul: DULServiceProvider) -> None:
    """The connection is closed (state machine back in Sta1).

    An acceptor's association thread that is still waiting for the A-ASSOCIATE-RQ would go on
    waiting for its whole ACSE timeout (pynetdicom does not tell it), holding a connection slot:
    wake it with nothing, which it takes as "no request came" and ends. Once it has its request
    it reads this queue no more, so the wake-up is harmless then.
    """
    if not dul.assoc.is_established:
        dul.to_user_queue.put(None)


def use_select_reactor(dul: DULServiceProvider) -> None:
    """Make a not yet started DUL thread run :func:`run_reactor`."""
    dul._target = make_target(lambda: run_reactor(dul))  # type: ignore[attr-defined]


def run_association_reactor(assoc: Association) -> None:
    """``Association._run_reactor`` waiting on the DIMSE queue (see the module docstring).

    Only for acceptors that never send requests of their own on the association: pynetdicom's
    ``send_*`` methods pause the reactor and then read the same queue, and here a message may
    be taken during the pause handshake's longer wait. However it ends, data sets streamed on
    the association that were never handled are removed.
    """
    try:
        _serve(assoc)
    finally:
        left = discard_unfinished(assoc.dul)
        if left:
            LOGGER.info("association ended: %d unanswered data set(s) discarded", left)


def _serve(assoc: Association) -> None:
    assoc._is_paused = False
    messages = assoc.dimse.msg_queue
    while not assoc._kill:
        assoc._is_paused = True
        assoc._reactor_checkpoint.wait()
        assoc._is_paused = False
        try:
            context_id, msg = messages.get(timeout=ASSOCIATION_IDLE_SECONDS)
        except queue.Empty:
            context_id, msg = None, None
        if msg:
            assoc._serve_request(msg, context_id)  # type: ignore[arg-type]
        if assoc.is_established and assoc.acse.is_release_requested():
            # EVT_RELEASED's handlers run before the A-RELEASE-RP goes out (pynetdicom runs
            # them after): once the peer has its answer it closes the connection, and the
            # close's own handler (on the DUL thread) would otherwise race them; the peer's
            # release() then returns only after what the release triggers is done.
            LOGGER.debug("association released by the peer")
            assoc.is_established = False
            evt.trigger(assoc, evt.EVT_RELEASED, {})
            assoc.is_released = True
            assoc.acse.send_release(is_response=True)
            assoc.kill()
            return
        if assoc.acse.is_aborted():
            LOGGER.debug("association aborted")
            assoc.dul.receive_pdu(wait=False)  # EVT_ACSE_RECV fires for the abort
            assoc.is_aborted = True
            assoc.is_established = False
            evt.trigger(assoc, evt.EVT_ABORTED, {})
            assoc.kill()
            return
        if not assoc.dul.is_alive():
            assoc.kill()
            return
        if assoc.dul.idle_timer_expired():
            LOGGER.warning("association network timeout reached")
            if assoc.network_timeout_response == "A-RELEASE":
                assoc._is_paused = True
                assoc._reactor_checkpoint.wait()
                assoc.release()
                assoc._is_paused = False
            else:
                assoc.abort()
            assoc.kill()
            return


def use_association_reactor(assoc: Association) -> None:
    """Make a not yet started acceptor association run :func:`run_association_reactor`."""
    assoc._run_reactor = lambda: run_association_reactor(assoc)  # type: ignore[method-assign]
