#!/usr/bin/env python3
"""Hostile peers against ``xrayd serve`` as the README starts it (issue 15): what each attack
does to the node, in figures.

Each attack gets a fresh node (default settings, SQLite, the default model; only the ports,
the data folder and one allowed calling AE are set) and prints the node's resident memory
(VmRSS, and the growth of its peak VmHWM), its thread count, whether an allowed modality is
still answered (C-ECHO from 127.0.0.1) and what the attacker saw. The attacker connects from
127.0.0.2 (loopback too, another address).

    .venv/bin/python bench/attacks.py [--repo DIR] [--only NAME ...] [--skip-big]

``--repo`` runs another checkout's code (e.g. a ``git worktree`` of an older commit) against the
same attacks, to compare before and after in one run on one machine.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from pydicom import dcmread  # noqa: E402
from pynetdicom import AE  # noqa: E402

from bombs import deflate_bomb, pixel_bomb  # noqa: E402
from dicom_factory import save  # noqa: E402

MIB = 1024 * 1024
ATTACKER = "127.0.0.2"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def status_of(pid: int) -> dict[str, int]:
    fields: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "Threads"):
                fields[key] = int(value.split()[0])
    except OSError:
        pass
    return fields


class Sampler(threading.Thread):
    """Samples the node's RSS and thread count every 20 ms until ``stop`` is set."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.stop = threading.Event()
        self.max_rss = 0
        self.max_threads = 0

    def run(self) -> None:
        while not self.stop.wait(0.02):
            figures = status_of(self.pid)
            self.max_rss = max(self.max_rss, figures.get("VmRSS", 0))
            self.max_threads = max(self.max_threads, figures.get("Threads", 0))


class Node:
    """``xrayd serve --config CFG`` from ``repo``, with its DICOM port known."""

    def __init__(self, repo: Path, work: Path, address_space_gib: float = 0) -> None:
        self.port = free_port()
        self.web_port = free_port()
        self.data = work / "data"
        cfg = work / "xrayd.toml"
        cfg.write_text(
            f'[node]\nport = {self.port}\nhost = "127.0.0.1"\n'
            '[[node.callers]]\nae_title = "MODALITY"\n'
            f'[storage]\ndata_dir = "{self.data}"\n'
            f"[web]\nport = {self.web_port}\n"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("XRAYD_")}
        env["PYTHONPATH"] = str(repo)
        self.log = (work / "serve.log").open("wb")

        def cap() -> None:  # a runaway allocation fails instead of taking the host down
            if address_space_gib:
                room = int(address_space_gib * 1024**3)
                resource.setrlimit(resource.RLIMIT_AS, (room, room))

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "xrayd.cli.main", "serve", "--config", str(cfg)],
            cwd=repo,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            preexec_fn=cap,
        )
        deadline = time.monotonic() + 180
        while echo(self.port) != "ok":
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"node did not start; see {work / 'serve.log'}")
            time.sleep(0.5)
        self._settle(deadline)

    def _settle(self, deadline: float) -> None:
        """Wait for /ready (the model loaded) and a steady RSS: start-up work is not counted."""
        url = f"http://127.0.0.1:{self.web_port}/ready"
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=5) as rsp:
                if rsp.status == 200:
                    break
            time.sleep(0.5)
        last = -1
        for _ in range(60):
            rss = self.figures().get("VmRSS", 0)
            if abs(rss - last) < 5 * 1024:
                return
            last = rss
            time.sleep(2)

    def figures(self) -> dict[str, int]:
        return status_of(self.proc.pid)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def echo(port: int, timeout: float = 20.0) -> str:
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context("1.2.840.10008.1.1")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.connection_timeout = timeout
    try:
        assoc = ae.associate("127.0.0.1", port, ae_title="XRAYD")
    except Exception as exc:
        return type(exc).__name__
    if assoc.is_rejected:
        return "rejected"
    if not assoc.is_established:
        return "aborted" if assoc.is_aborted else "no association"
    rsp = assoc.send_c_echo()
    assoc.release()
    return "ok" if rsp and getattr(rsp, "Status", None) == 0 else "failed"


def send_file(port: int, path: Path, timeout: float = 600.0) -> str:
    meta = dcmread(path, stop_before_pixels=True, specific_tags=["SOPClassUID"])
    ae = AE(ae_title="MODALITY")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    ae.add_requested_context(meta.SOPClassUID, [meta.file_meta.TransferSyntaxUID])
    try:
        assoc = ae.associate("127.0.0.1", port, ae_title="XRAYD")
        if not assoc.is_established:
            return "no association"
        rsp = assoc.send_c_store(path)
        assoc.release()
    except Exception as exc:
        return type(exc).__name__
    status = getattr(rsp, "Status", None)
    return "no response (connection lost)" if status is None else f"0x{int(status):04X}"


def hold(count: int, first: bytes) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        try:
            s = socket.create_connection(("127.0.0.1", PORT[0]), 10, source_address=(ATTACKER, 0))
            with contextlib.suppress(OSError):
                s.sendall(first)
            socks.append(s)
        except OSError:
            pass
    return socks


def closed_within(socks: list[socket.socket], seconds: float) -> int:
    """How many of ``socks`` the node closed within ``seconds`` from now."""
    end = time.monotonic() + seconds
    closed = 0
    for s in socks:
        left = end - time.monotonic()
        if left <= 0:
            break
        s.settimeout(left)
        try:
            while s.recv(65536):
                pass
            closed += 1
        except (ConnectionResetError, BrokenPipeError):
            closed += 1
        except TimeoutError:
            break
    return closed


PORT = [0]


def slot_exhaustion(node: Node, work: Path) -> dict[str, Any]:
    socks = hold(20, b"\x01")  # one byte of a PDU header, then silence
    try:
        during = echo(node.port)
        figures = node.figures()
        closed = closed_within(socks, 45.0)
        return {
            "echo while 20 one-byte connections are held": during,
            "threads while held": figures.get("Threads"),
            "attacker connections closed by the node within 45 s": f"{closed}/20",
            "echo afterwards": echo(node.port),
        }
    finally:
        for s in socks:
            s.close()


def many_from_one_address(node: Node, work: Path) -> dict[str, Any]:
    socks = hold(500, b"\x01")
    try:
        figures = node.figures()
        return {
            "echo from another address while 500 connections come from one": echo(node.port),
            "threads": figures.get("Threads"),
        }
    finally:
        for s in socks:
            s.close()


def deflate(node: Node, work: Path) -> dict[str, Any]:
    path = work / "deflate-bomb.dcm"
    deflate_bomb(path, 2 * 1024 * MIB)  # 2 GiB of zeros, ~2 MiB on the wire
    return {
        "wire size MiB": round(path.stat().st_size / MIB, 1),
        "C-STORE": send_file(node.port, path),
    }


def wait_analysed(node: Node, seconds: float = 300.0) -> str:
    db = node.data / "xrayd.sqlite3"
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not node.alive():
            return f"node died (exit {node.proc.returncode})"
        with contextlib.suppress(sqlite3.Error):
            with sqlite3.connect(db, timeout=5) as conn:
                states = [r[0] for r in conn.execute("SELECT state FROM jobs")]
            if states and all(s in ("done", "failed", "dead") for s in states):
                return ",".join(states)
        time.sleep(1)
    return "not finished within the wait"


def pixel_bombs(node: Node, work: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for rows, cols in ((8192, 8192), (65535, 65535)):
        ds = pixel_bomb(rows, cols)
        path = save(ds, work / f"bomb-{rows}.dcm")
        out[f"{rows}x{cols} ({path.stat().st_size} bytes) C-STORE"] = send_file(node.port, path)
    out["jobs"] = wait_analysed(node)
    return out


def huge_instance(node: Node, work: Path) -> dict[str, Any]:
    """A C-STORE whose Pixel Data is 2 GiB (a sparse file: cheap to make, 2 GiB to send)."""
    ds = pixel_bomb(64, 64)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"
    del ds.PixelData
    path = save(ds, work / "huge.dcm")
    size = 2 * 1024 * MIB
    with path.open("ab") as f:
        f.write(bytes.fromhex("e07f1000") + b"OB\x00\x00" + size.to_bytes(4, "little"))
        f.truncate(f.tell() + size)
    return {"C-STORE of 2 GiB": send_file(node.port, path)}


ATTACKS: dict[str, Callable[[Node, Path], dict[str, Any]]] = {
    "slot-exhaustion": slot_exhaustion,
    "500-from-one-address": many_from_one_address,
    "deflate-bomb": deflate,
    "pixel-bombs": pixel_bombs,
    "2GiB-instance": huge_instance,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=ROOT)
    parser.add_argument("--only", nargs="*", choices=sorted(ATTACKS))
    parser.add_argument("--skip-big", action="store_true", help="leave out the 2 GiB C-STORE")
    parser.add_argument(
        "--address-space-gib",
        type=float,
        default=16.0,
        help="RLIMIT_AS of the node (0: none): a bomb that gets through fails with MemoryError "
        "instead of taking the host's memory",
    )
    args = parser.parse_args()
    names = args.only or [n for n in ATTACKS if not (args.skip_big and n == "2GiB-instance")]
    print(f"code under attack: {args.repo}")
    for name in names:
        with tempfile.TemporaryDirectory(prefix=f"xrayd-{name}-") as tmp:
            work = Path(tmp)
            node = Node(args.repo.resolve(), work, args.address_space_gib)
            PORT[0] = node.port
            before = node.figures()
            sampler = Sampler(node.proc.pid)
            sampler.start()
            try:
                result = ATTACKS[name](node, work)
            except Exception as exc:
                result = {"attack raised": f"{type(exc).__name__}: {exc}"}
            sampler.stop.set()
            sampler.join()
            after = node.figures()
            result["node alive afterwards"] = node.alive()
            if before and after:
                result["RSS MiB before/after"] = (
                    f"{before['VmRSS'] // 1024}/{after['VmRSS'] // 1024}"
                )
                result["largest RSS during the attack, MiB over before"] = (
                    sampler.max_rss - before["VmRSS"]
                ) // 1024
                result["most threads during the attack"] = sampler.max_threads
                result["threads before/after"] = f"{before['Threads']}/{after['Threads']}"
            node.stop()
        print(f"\n== {name}")
        for key, value in result.items():
            print(f"  {key}: {value}")


if __name__ == "__main__":
    main()
