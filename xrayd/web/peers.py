"""Who is at the other end: the Host allow-list and the client address behind proxies.

**Host allow-list** (DNS rebinding). A web page on an attacker's site can point its own DNS
name at 127.0.0.1 or at xrayd's LAN address and then read xrayd's answers in the victim's
browser as same-origin content; the browser then sends the attacker's name in ``Host``.
:class:`HostAllowList` answers 400 to any request whose Host is not in ``web.allowed_hosts``
(default the loopback names; a specific ``web.host`` is added by itself). A site reaching the
UI by a name, or by an address other than ``web.host``, must list it.

**Client address.** ``X-Forwarded-For`` is believed only from ``web.trusted_proxies``: the
client is the rightmost address of the chain (direct peer last) that is not a trusted proxy.
From any other peer the header is ignored, so nobody can pick the address that the login
lock-out counts or that the audit trail records. uvicorn's own proxy-header handling is off
(:mod:`xrayd.web.server`), since it trusts 127.0.0.1 by default.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import cache

from fastapi import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from config.settings import WebSettings

__all__ = ["HostAllowList", "allowed_hosts", "client_address", "host_allowed", "host_of"]

_UNSPECIFIED = {"", "0.0.0.0", "::", "*"}  # noqa: S104 (compared with, not bound)
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def allowed_hosts(web: WebSettings) -> tuple[str, ...]:
    """``web.allowed_hosts`` plus ``web.host`` when that is one specific address or name."""
    hosts = list(web.allowed_hosts)
    own = web.host.strip().lower().strip("[]")
    if own not in _UNSPECIFIED and own not in hosts:
        hosts.append(own)
    return tuple(hosts)


def host_of(header: str) -> str:
    """The host part of a Host header value, lower case, without port or IPv6 brackets."""
    value = header.strip().lower()
    if value.startswith("["):  # [::1]:8080
        end = value.find("]")
        return value[1:end] if end > 0 else ""
    if value.count(":") == 1:  # name:port or a.b.c.d:port
        value = value.split(":", 1)[0]
    return value.rstrip(".")  # "localhost." is "localhost"


def host_allowed(host: str, allowed: Iterable[str]) -> bool:
    if not host:
        return False
    for pattern in allowed:
        if pattern == "*" or pattern == host:
            return True
        if pattern.startswith("*.") and host.endswith(pattern[1:]):
            return True
    return False


class HostAllowList:
    """ASGI middleware: 400 for HTTP requests whose Host is not allowed (before any routing,
    authentication or database access)."""

    def __init__(self, app: ASGIApp, allowed: Iterable[str]) -> None:
        self.app = app
        self.allowed = tuple(allowed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        header = b""
        for name, value in scope["headers"]:
            if name == b"host":
                header = value
                break
        if host_allowed(host_of(header.decode("latin-1")), self.allowed):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        body = b"Invalid host header: add the name to [web] allowed_hosts\n"
        await send(
            {
                "type": "http.response.start",
                "status": 400,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                    (b"cache-control", b"no-store"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


@cache
def _networks(proxies: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(p, strict=False) for p in proxies)


def _address(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    value = value.strip()
    if value.startswith("[") and "]" in value:  # [2001:db8::1]:4711
        value = value[1 : value.index("]")]
    elif value.count(":") == 1:  # 192.0.2.1:4711
        value = value.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: str, networks: tuple[IPNetwork, ...]) -> bool:
    ip = _address(address)
    return ip is not None and any(ip in net for net in networks)


def client_address(request: Request, trusted_proxies: tuple[str, ...]) -> str:
    """The client's address: the direct peer, or, when that is a trusted proxy, the rightmost
    address of X-Forwarded-For that is not a trusted proxy (a malformed entry stops the walk
    at the last trusted proxy)."""
    peer = request.client.host if request.client else "unknown"
    networks = _networks(trusted_proxies)
    if not networks or not _trusted(peer, networks):
        return peer
    chain = [
        part.strip()
        for value in request.headers.getlist("x-forwarded-for")
        for part in value.split(",")
    ]
    client = peer
    for hop in reversed([h for h in chain if h]):
        ip = _address(hop)
        if ip is None:
            break
        client = str(ip)
        if not any(ip in net for net in networks):
            break
    return client
