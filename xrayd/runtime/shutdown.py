"""The last step of ``xrayd serve``: no xrayd thread may still run when the interpreter exits.

``Node.stop`` gives each thread a bounded join. A thread still inside native code after that
(the model loading in the background, or an analysis running torch/onnxruntime/OpenVINO) is
still running when Python finalises, and the C++ runtime then aborts the process ("terminate
called without an active exception", SIGABRT, a core dump; systemd records the stop as a
failure). So ``serve`` waits here, up to a deadline, for the threads named ``xrayd-*``. If one
is still running after it, :func:`exit_now` ends the process without finalisation: what was
acknowledged or queued is already durable (that is what SIGKILL relies on as well), and a job
left running is queued again at the next start.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from typing import NoReturn

LOGGER = logging.getLogger(__name__)

__all__ = [
    "SETTLE_SECONDS",
    "STOP_SIGNALS",
    "THREAD_PREFIX",
    "block_stop_signals",
    "exit_now",
    "unfinished_threads",
]

#: the threads xrayd starts are named so (workers, senders, the model loader, the web server)
THREAD_PREFIX = "xrayd-"
#: how long ``serve`` waits for them after ``Node.stop`` (systemd's TimeoutStopSec= covers it)
SETTLE_SECONDS = 30.0
#: the signals that stop ``xrayd serve`` and ``xrayd scheduler`` (systemd sends SIGTERM)
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})


def block_stop_signals() -> set[signal.Signals]:
    """Block SIGTERM and SIGINT in the calling thread; returns them, for ``signal.sigwait``.

    Call it first, before importing torch: ``import torch`` starts a native thread, and every
    thread inherits the mask of the thread that creates it. A thread that does not block them
    takes a stop signal that arrives while the main thread is not yet in ``sigwait``, and with
    no handler installed that kills the process (exit status -15 instead of a graceful stop).
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    return set(STOP_SIGNALS)


def unfinished_threads(timeout: float, *, prefix: str = THREAD_PREFIX) -> list[str]:
    """Join the live threads named ``prefix*`` for at most ``timeout`` seconds in all; returns
    the names of those still running."""
    deadline = time.monotonic() + timeout
    current = threading.current_thread()
    for thread in threading.enumerate():
        if thread is current or not thread.name.startswith(prefix):
            continue
        thread.join(max(0.0, deadline - time.monotonic()))
    return sorted(
        t.name for t in threading.enumerate() if t is not current and t.name.startswith(prefix)
    )


def exit_now(code: int) -> NoReturn:
    """Flush the logs and standard streams, then end the process at once (``os._exit``)."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)
