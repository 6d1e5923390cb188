"""The systemd notification protocol (``sd_notify(3)``) without libsystemd.

A service of ``Type=notify`` tells systemd that it is ready (``READY=1``), what it is doing
(``STATUS=...``) and that it is stopping (``STOPPING=1``) by sending datagrams to the
``AF_UNIX`` socket named in ``$NOTIFY_SOCKET``: a path, or a name in the abstract namespace
when it starts with ``@``. Without ``$NOTIFY_SOCKET`` (not started by systemd) every call is a
no-op, and a failed send is logged, never raised: notifying must not stop the node.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import MutableMapping

LOGGER = logging.getLogger(__name__)

__all__ = ["NOTIFY_SOCKET_ENV", "Notifier"]

NOTIFY_SOCKET_ENV = "NOTIFY_SOCKET"


def _address(value: str) -> str | None:
    """The socket address for ``$NOTIFY_SOCKET`` (None: not a form we can send to)."""
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]  # abstract namespace
    if value.startswith("/"):
        return value
    return None  # e.g. "vsock:..." (virtual machines): not used for a service on a host


class Notifier:
    """Sends state lines to systemd; does nothing when not started by systemd."""

    def __init__(self, notify_socket: str | None) -> None:
        self._address: str | None = None
        if notify_socket:
            self._address = _address(notify_socket)
            if self._address is None:
                LOGGER.warning(
                    "%s=%r is not an AF_UNIX socket address: not notifying systemd",
                    NOTIFY_SOCKET_ENV,
                    notify_socket,
                )

    @classmethod
    def from_environment(
        cls, environ: MutableMapping[str, str] | None = None, *, unset: bool = True
    ) -> Notifier:
        """The notifier for ``$NOTIFY_SOCKET``; ``unset`` removes the variable, so that child
        processes (e.g. extra listener processes) do not notify in this service's name."""
        env = os.environ if environ is None else environ
        value = env.pop(NOTIFY_SOCKET_ENV, None) if unset else env.get(NOTIFY_SOCKET_ENV)
        return cls(value)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=VALUE`` lines in one datagram; returns whether it was sent."""
        if self._address is None:
            return False
        for line in assignments:
            if "=" not in line or "\n" in line:
                raise ValueError(f"not a KEY=VALUE line: {line!r}")
        payload = "\n".join(assignments).encode("utf-8", "replace")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(payload, self._address)
        except OSError as exc:
            LOGGER.warning(
                "could not notify systemd (%s): %s", type(exc).__name__, exc.strerror or exc
            )
            return False
        return True

    def status(self, text: str) -> bool:
        """``STATUS=``: one line shown by ``systemctl status``."""
        return self.notify(f"STATUS={_one_line(text)}")

    def ready(self, status: str | None = None) -> bool:
        """``READY=1``: start-up is complete (systemd starts units ordered after this one)."""
        lines = ["READY=1"]
        if status is not None:
            lines.append(f"STATUS={_one_line(status)}")
        return self.notify(*lines)

    def stopping(self, status: str | None = None) -> bool:
        """``STOPPING=1``: the service is shutting down."""
        lines = ["STOPPING=1"]
        if status is not None:
            lines.append(f"STATUS={_one_line(status)}")
        return self.notify(*lines)


def _one_line(text: str) -> str:
    return " ".join(text.split())
