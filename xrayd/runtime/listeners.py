"""Extra listener processes sharing the DICOM port (one listening socket, inherited).

pynetdicom spends CPU per byte received, and the associations of one Python process contend for
one GIL. With ``node.listener_processes = N`` the main ``xrayd serve`` process starts N-1 more
processes that run only the listener on the main process's listening socket (inherited, not
bound again): whichever process is free first accepts a new connection (see
:class:`dicom_node.hardening.BoundedAssociationServer`). They share the database and the spool;
the main process alone runs the completion timer and the workers. A child that dies is
restarted; children stop with the main process, even when it is killed (they watch a pipe
whose write end only the main process holds).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

LOGGER = logging.getLogger(__name__)

PARENT_FD_ENV = "XRAYD_PARENT_FD"
LISTEN_FD_ENV = "XRAYD_LISTEN_FD"


def inherited_listen_fd() -> int | None:
    """In a listener process: the main process's listening socket, passed down to share."""
    value = os.environ.get(LISTEN_FD_ENV)
    return int(value) if value and value.isdigit() else None


def exit_with_parent() -> None:
    """In a listener process: raise SIGTERM here once the main process is gone.

    The main process holds the write end of a pipe; the read end sees end-of-file when the
    main process exits for any reason, ``kill -9`` included. (``PR_SET_PDEATHSIG`` is not
    honoured in every sandbox, a pipe is.)
    """
    value = os.environ.get(PARENT_FD_ENV)
    if not value or not value.isdigit():
        return
    fd = int(value)

    def watch() -> None:
        while os.read(fd, 1):
            pass
        LOGGER.warning("main xrayd process is gone: stopping this listener process")
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


class ListenerProcesses:
    """Starts, restarts and stops the extra listener processes."""

    def __init__(
        self, count: int, port: int, config_path: Path | None, listen_fd: int | None = None
    ) -> None:
        self.count = count
        self.port = port
        self.listen_fd = listen_fd
        self.config_path = config_path
        self._procs: list[subprocess.Popen[bytes]] = []
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._monitors: list[threading.Thread] = []
        # Children hold the read end; it reaches end-of-file when this process is gone.
        self._lifeline_r, self._lifeline_w = os.pipe()

    def _spawn(self) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "xrayd.cli.main", "serve", "--listener-only"]
        if self.config_path is not None:
            cmd += ["--config", str(self.config_path)]
        env = {
            **os.environ,
            "XRAYD_NODE__PORT": str(self.port),
            PARENT_FD_ENV: str(self._lifeline_r),
        }
        fds = [self._lifeline_r]
        if self.listen_fd is not None:
            env[LISTEN_FD_ENV] = str(self.listen_fd)
            fds.append(self.listen_fd)
        return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, pass_fds=fds)

    def start(self) -> None:
        for index in range(self.count):
            proc = self._spawn()
            with self._lock:
                self._procs.append(proc)
            monitor = threading.Thread(
                target=self._watch, args=(index,), name=f"listener-watch-{index}", daemon=True
            )
            self._monitors.append(monitor)
            monitor.start()
        LOGGER.info("%d extra listener process(es) started on port %d", self.count, self.port)

    def _watch(self, index: int) -> None:
        restarts = 0
        while True:
            with self._lock:
                proc = self._procs[index]
            code = proc.wait()
            if self._stopping.is_set():
                return
            restarts += 1
            LOGGER.error("listener process exited with %d; restarting (%d)", code, restarts)
            if self._stopping.wait(min(30.0, float(restarts))):
                return
            with self._lock:
                self._procs[index] = self._spawn()

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM every child (they finish their associations) and wait for them."""
        self._stopping.set()
        with self._lock:
            procs = list(self._procs)
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                LOGGER.error("listener process did not stop in time; killing it")
                proc.kill()
                proc.wait()
        os.close(self._lifeline_w)
        os.close(self._lifeline_r)
