"""Serving the web app inside ``xrayd serve``: uvicorn in a thread, stopped with the node."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import threading

import anyio.to_thread
import uvicorn

from config.errors import ConfigError
from config.settings import WebSettings
from xrayd.web.app import create_app
from xrayd.web.context import WebContext

__all__ = ["WebServer", "check_bind_allowed", "is_loopback"]

LOGGER = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind_allowed(web: WebSettings, users: int) -> None:
    """Refuse a non-loopback web address while no user exists (anyone could be first)."""
    if users == 0 and not is_loopback(web.host):
        raise ConfigError(
            f"web.host = {web.host!r} is not a loopback address and no web user exists: "
            "create one first with `xrayd users add NAME --role admin`, or bind to 127.0.0.1"
        )


class WebServer:
    """uvicorn serving :func:`create_app` on ``[web] host/port`` until :meth:`stop`."""

    def __init__(self, ctx: WebContext) -> None:
        web = ctx.settings.web
        try:
            self._socket = socket.create_server(
                (web.host, web.port),
                family=socket.AF_INET6 if ":" in web.host else socket.AF_INET,
                reuse_port=False,
            )
        except OSError as exc:
            raise ConfigError(
                f"web.host/web.port: cannot listen on {web.host}:{web.port} ({exc.strerror or exc})"
            ) from exc
        self.port: int = self._socket.getsockname()[1]
        config = uvicorn.Config(
            create_app(ctx),
            log_config=None,  # xrayd's logging set-up applies
            access_log=False,  # URLs could carry study ids; audit events cover access
            ssl_certfile=str(web.tls_cert_file) if web.tls_cert_file else None,
            ssl_keyfile=str(web.tls_key_file) if web.tls_key_file else None,
            server_header=False,
            # X-Forwarded-For only from web.trusted_proxies (xrayd.web.peers): uvicorn's own
            # handling would believe any local process (forwarded_allow_ips 127.0.0.1)
            proxy_headers=False,
            timeout_graceful_shutdown=5,
        )
        self._server = uvicorn.Server(config)
        self._request_threads = web.request_threads
        #: the server's event loop, once it runs
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._run, name="xrayd-web", daemon=True)

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        # FastAPI runs each (synchronous) handler in anyio's worker threads: at most
        # [web] request_threads at once instead of anyio's default 40, so a crowd of browsers
        # queues here rather than contending with the DICOM listener's threads for the CPU
        anyio.to_thread.current_default_thread_limiter().total_tokens = self._request_threads
        self.loop = asyncio.get_running_loop()
        await self._server.serve(sockets=[self._socket])

    def start(self) -> None:
        self._thread.start()
        LOGGER.info("web UI and API on port %d", self.port)

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=timeout)
        self._socket.close()
