"""C-STORE acknowledgement latency of ``xrayd serve`` on SQLite while 20 web clients read.

What it measures: the embedded default (SQLite in the data directory, the web UI on) must not
make the modality wait for the web UI. One ``xrayd serve`` runs from ``--checkout`` (default:
this tree) with this interpreter (``PYTHONPATH=DIR``, ``python -c "from xrayd.cli import main;
main()" serve``), so an older tree can be measured with the same venv and the same sender.

Steps, all in one temporary directory:

1. **Pre-population** (``--studies``, default 3000): a child process with the checkout's code
   on ``PYTHONPATH`` migrates the fresh SQLite database (``storage.migrate.upgrade``) and adds,
   through the checkout's ORM tables (``storage.schema``), that many analysed studies spread
   over the last 30 days: per study one series, one instance row (no file: the pages measured
   here never open one), one ``analysis`` result with a decision, and, for a share of them, an
   SR result delivered to a PACS (turnaround), an assignment and a radiologist's override
   (agreement, accuracy). Then ``xrayd users add bench --role radiologist --password-file``.
2. ``xrayd serve`` starts with ``[study] quiet_seconds`` and ``max_wait_seconds`` of an hour
   and ``release_ends_wait = false``: the studies sent stay "receiving", so no analysis runs
   during the measurement and the only writers are the C-STORE handler (and session upkeep).
   The bench waits for ``/ready``.
3. **Reference** (no web load): a modality (pynetdicom, this process) sends ``--stores``
   small synthetic radiographs (``models.synthetic``; ``--size`` pixels square, 10 per
   association, each its own study); each C-STORE is timed from the call that sends it to
   its response (CLOCK_MONOTONIC).
4. **Under web load**: ``--clients`` HTTP clients (threads of a separate process, stdlib
   ``http.client``), each logged in with its own session, loop over ``GET /worklist``,
   ``GET /dashboards``, ``GET /api/v1/stats`` and ``GET /api/v1/studies``; once every client
   has finished one request, the same number of C-STOREs is sent and timed again; then the
   clients stop and report how many requests they completed (and their latency). By default
   the load is a closed loop (each client asks again once answered: a faster server gets
   more requests, and the node's process spends more of its CPU on them); ``--rate R`` caps
   the clients at R requests/s in all, to compare trees at the same web load.

Printed: p50/p99/max ack latency without and with the load, their ratio, and the web
requests/s. No assertions: this is a measurement. Figures depend on the machine and on
whatever else runs on it; compare runs of the same invocation only.

Usage: ``.venv/bin/python bench/cstore_under_web_load.py [--checkout DIR] [--studies 3000]
[--clients 20] [--stores 100] [--size 256] [--rate 0]`` (``make bench-web-load``,
``BEFORE=DIR`` also measures another checkout).
"""

from __future__ import annotations

import argparse
import copy
import http.client
import multiprocessing
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Sequence
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

MODALITY_AE = "BENCH-MOD"
NODE_AE = "XRAYD"
USER = "bench"
PASSWORD = "bench-password-0123456789"
PATHS = (
    "/worklist",
    "/dashboards",
    "/api/v1/stats",
    "/api/v1/studies?limit=50",
)
PER_ASSOCIATION = 10
START_TIMEOUT_S = 300.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- pre-population (runs in a child process with the checkout's code) --------------------------


def populate(data_dir: Path, count: int) -> None:
    """Migrate the database in ``data_dir`` and add ``count`` analysed studies (see above)."""
    from datetime import UTC, datetime, timedelta

    from storage.db import make_engine, make_sessionmaker, sqlite_url_for
    from storage.migrate import upgrade
    from storage.schema import (
        Delivery,
        Instance,
        Override,
        Result,
        ReviewAssignment,
        Series,
        Study,
    )

    engine = make_engine(sqlite_url_for(data_dir))
    upgrade(engine)
    sm = make_sessionmaker(engine)
    rng = random.Random(20261206)
    now = datetime.now(UTC)
    parts = ("wrist", "hand", "ankle", "foot", "elbow", "shoulder", "knee", "hip")
    decisions = ("present", "absent", "indeterminate")
    rows: list[Any] = []
    for n in range(1, count + 1):
        at = now - timedelta(seconds=rng.uniform(0, 30 * 86400))
        uid = f"2.25.{9000000 + n}"
        decision = rng.choices(decisions, weights=(3, 6, 1))[0]
        part = rng.choice(parts)
        rows.append(
            Study(
                id=n,
                study_instance_uid=uid,
                state="analysed",
                first_received_at=at,
                last_received_at=at,
                instance_count=1,
                calling_ae_title=MODALITY_AE,
                created_at=at,
                updated_at=at,
            )
        )
        rows.append(Series(id=n, study_id=n, series_instance_uid=f"{uid}.1", modality="DX"))
        sop = f"{uid}.1.1"
        rows.append(
            Instance(
                id=n,
                series_id=n,
                study_id=n,
                sop_instance_uid=sop,
                sop_class_uid="1.2.840.10008.5.1.4.1.1.1.1",
                transfer_syntax_uid="1.2.840.10008.1.2.1",
                spool_path=f"bench/{n}.dcm",
                size_bytes=1000,
                sha256="0" * 64,
                received_at=at,
                calling_ae_title=MODALITY_AE,
                duplicate_count=0,
                conflict_count=0,
            )
        )
        detail = {
            "decision": decision,
            "fracture_probability": rng.random(),
            "count": "1" if decision == "present" else "0",
            "hardware": rng.random() < 0.1,
            "images": [{"sop_instance_uid": sop, "body_part": part}],
            "model": {"name": "bench", "version": "1.0.0", "sha256": "0" * 64},
            "revision": "r1",
        }
        done = at + timedelta(seconds=rng.uniform(5, 120))
        rows.append(
            Result(id=2 * n - 1, study_id=n, kind="analysis", detail=detail, created_at=done)
        )
        if rng.random() < 0.8:
            rows.append(
                Result(
                    id=2 * n,
                    study_id=n,
                    kind="sr",
                    sop_instance_uid=f"{uid}.9",
                    file_path=f"results/{n}.dcm",
                    detail={},
                    created_at=done,
                )
            )
            rows.append(
                Delivery(
                    result_id=2 * n,
                    destination_name="pacs",
                    state="sent",
                    attempts=1,
                    created_at=done,
                    updated_at=done,
                    sent_at=done + timedelta(seconds=rng.uniform(0.5, 10)),
                )
            )
        if rng.random() < 0.4:
            reviewer = f"rad{n % 5}"
            rows.append(ReviewAssignment(study_id=n, user_name=reviewer, assigned_at=done))
            if rng.random() < 0.75:
                fracture = decision if decision != "indeterminate" else "present"
                label = {"fracture": fracture, "count": "1" if fracture == "present" else "0"}
                rows.append(
                    Override(
                        study_id=n,
                        user_name=reviewer,
                        ai_label={"decision": decision, "body_part": part},
                        radiologist_label={**label, "body_part": part, "hardware": False},
                        created_at=done + timedelta(minutes=rng.uniform(1, 600)),
                        result_id=2 * n - 1,
                        agree=rng.random() < 0.8,
                    )
                )
    order = (Study, Series, Instance, Result, Delivery, ReviewAssignment, Override)
    with sm.begin() as session:
        for kind in order:  # parents first (foreign keys)
            session.add_all([r for r in rows if type(r) is kind])
            session.flush()
    engine.dispose()


# -- the node ----------------------------------------------------------------------------------


def _env(checkout: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("XRAYD_")}
    env["PYTHONPATH"] = str(checkout)
    return env


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from xrayd.cli import main; main()", *args]


class Node:
    """``xrayd serve`` from ``checkout`` on a pre-populated SQLite database."""

    def __init__(
        self, checkout: Path, work: Path, studies: int, web_threads: int | None = None
    ) -> None:
        self.port, self.web_port = free_port(), free_port()
        data = work / "data"
        data.mkdir()
        cfg = work / "xrayd.toml"
        cfg.write_text(
            f'[node]\nae_title = "{NODE_AE}"\nport = {self.port}\nhost = "127.0.0.1"\n'
            f"min_free_mb = 0\n"
            f'[[node.callers]]\nae_title = "{MODALITY_AE}"\n'
            f'[storage]\ndata_dir = "{data}"\n'
            "[study]\nquiet_seconds = 3600\nmax_wait_seconds = 3600\n"
            "release_ends_wait = false\n"
            f"[web]\nport = {self.web_port}\ncookie_secure = false\n"
            + (f"request_threads = {web_threads}\n" if web_threads else "")
            + '[logging]\nlevel = "WARNING"\n'
        )
        env = _env(checkout)
        subprocess.run(
            [sys.executable, __file__, "--populate", str(data), "--studies", str(studies)],
            cwd=checkout,
            env=env,
            check=True,
        )
        secret = work / "password"
        secret.write_text(PASSWORD + "\n")
        secret.chmod(0o600)
        subprocess.run(
            [
                *_cli(),
                "users",
                "add",
                USER,
                "--role",
                "radiologist",
                "--password-file",
                str(secret),
                "--config",
                str(cfg),
            ],
            cwd=checkout,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        self.log_path = work / "serve.log"
        self.log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [*_cli(), "serve", "--config", str(cfg)],
            cwd=checkout,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"xrayd serve did not become ready; see {self.log_path}")
            time.sleep(0.5)

    def _ready(self) -> bool:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.web_port, timeout=5)
            conn.request("GET", "/ready")
            ok = conn.getresponse().status == 200
            conn.close()
            return ok
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


# -- the modality ------------------------------------------------------------------------------


def make_images(count: int, size: int, seed: int) -> list[Any]:
    """``count`` small radiographs, each its own study (one image rendered, UIDs varied)."""
    sys.path.insert(0, str(ROOT))
    from pydicom.uid import generate_uid

    from models.synthetic import generate_case, to_dicom

    base = to_dicom(generate_case(seed, size), patient_id="BENCH0001")
    images = []
    for n in range(count):
        ds = copy.deepcopy(base)
        ds.StudyInstanceUID = generate_uid()
        ds.SeriesInstanceUID = generate_uid()
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = n + 1
        images.append(ds)
    return images


def send_timed(port: int, images: Sequence[Any], interval: float = 0.0) -> list[float]:
    """Send ``images``, PER_ASSOCIATION per association; seconds from each C-STORE's send to
    its response, the next sent ``interval`` s after that response. Raises when one is not
    acknowledged with success."""
    from pynetdicom import AE

    latencies: list[float] = []
    for start in range(0, len(images), PER_ASSOCIATION):
        batch = images[start : start + PER_ASSOCIATION]
        ae = AE(ae_title=MODALITY_AE)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 120
        for ds in batch[:1]:
            ae.add_requested_context(ds.SOPClassUID, [ds.file_meta.TransferSyntaxUID])
        assoc = ae.associate("127.0.0.1", port, ae_title=NODE_AE)
        if not assoc.is_established:
            raise RuntimeError("association not established")
        try:
            for ds in batch:
                if interval and latencies:
                    time.sleep(interval)
                t0 = time.monotonic()
                rsp = assoc.send_c_store(ds)
                latencies.append(time.monotonic() - t0)
                status = getattr(rsp, "Status", None)
                if status != 0:
                    raise RuntimeError(f"C-STORE answered {status!r}")
        finally:
            if assoc.is_established:
                assoc.release()
    return latencies


# -- the web clients (a separate process, so they do not share the sender's interpreter) --------


def _login(port: int) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request("GET", "/login")
    rsp = conn.getresponse()
    body = rsp.read().decode()
    match = re.search(r'name="csrf_token" value="([^"]+)"', body)
    cookie = re.search(r"xrayd_login_csrf=([^;]+)", rsp.getheader("Set-Cookie") or "")
    if match is None or cookie is None:
        raise RuntimeError("no login form")
    form = urllib.parse.urlencode(
        {"username": USER, "password": PASSWORD, "csrf_token": match.group(1), "next": "/"}
    )
    conn.request(
        "POST",
        "/login",
        body=form,
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": f"xrayd_login_csrf={cookie.group(1)}",
        },
    )
    rsp = conn.getresponse()
    rsp.read()
    session = re.search(r"(xrayd_session[^=]*)=([^;]+)", rsp.getheader("Set-Cookie") or "")
    conn.close()
    if rsp.status != 303 or session is None:
        raise RuntimeError(f"login failed ({rsp.status})")
    return f"{session.group(1)}={session.group(2)}"


class Pacer:
    """Spaces the requests of all clients ``1/rate`` s apart (``rate`` 0: no spacing, each
    client sends its next request when the last one is answered)."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.lock = threading.Lock()
        self.next = time.monotonic()

    def wait(self, stop: threading.Event) -> None:
        if not self.interval:
            return
        with self.lock:
            slot = max(self.next, time.monotonic())
            self.next = slot + self.interval
        stop.wait(max(0.0, slot - time.monotonic()))


def _client(
    port: int,
    cookie: str,
    index: int,
    stop: threading.Event,
    started: threading.Barrier,
    pacer: Pacer,
    out: list[float],
    errors: list[str],
) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    i = index
    first = True
    retried = False
    while first or not stop.is_set():
        if not first:
            pacer.wait(stop)
            if stop.is_set():
                break
        path = PATHS[i % len(PATHS)]
        i += 1
        t0 = time.monotonic()
        try:
            conn.request("GET", path, headers={"Cookie": cookie})
            rsp = conn.getresponse()
            rsp.read()
            if rsp.status != 200:
                errors.append(str(rsp.status))
            else:
                out.append(time.monotonic() - t0)
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
            if isinstance(exc, http.client.RemoteDisconnected) and not retried:
                retried = True  # the server closed an idle keep-alive connection: ask again
                i -= 1
                continue
            errors.append(type(exc).__name__)
        retried = False
        if first:
            first = False
            started.wait()


def web_load(
    port: int, clients: int, rate: float, go: EventType, stop: EventType, conn: Any
) -> None:
    """The clients' process: log in, signal ready, load pages from ``go`` until ``stop``
    (at most ``rate`` requests/s in all, 0: as fast as answered); send back (requests done,
    their latencies, error statuses, seconds loaded)."""
    pacer = Pacer(rate)
    cookies = [_login(port) for _ in range(clients)]
    conn.send("logged in")
    go.wait()
    local_stop = threading.Event()
    started = threading.Barrier(clients + 1)
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[str] = []
    threads = [
        threading.Thread(
            target=_client,
            args=(port, cookies[i], i, local_stop, started, pacer, latencies[i], errors),
            daemon=True,
        )
        for i in range(clients)
    ]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    started.wait()  # every client has finished one request
    conn.send("loaded")
    stop.wait()
    local_stop.set()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    conn.send(([x for xs in latencies for x in xs], errors, elapsed))


# -- the run -----------------------------------------------------------------------------------


def _pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def _row(name: str, values: Sequence[float]) -> str:
    return (
        f"  {name:<22} n={len(values):4d}  p50 {1000 * _pct(values, 0.5):8.1f} ms  "
        f"p99 {1000 * _pct(values, 0.99):8.1f} ms  max {1000 * max(values):8.1f} ms"
    )


def run(args: argparse.Namespace) -> int:
    checkout = Path(args.checkout).resolve()
    work = Path(tempfile.mkdtemp(prefix="xrayd-web-load-"))

    def say(text: str) -> None:
        print(text, flush=True)

    say(
        f"checkout {checkout}; {args.studies} pre-populated studies, {args.clients} web "
        f"clients, {args.stores} C-STOREs per phase ({args.size}x{args.size} px), "
        f"{os.cpu_count()} CPUs, web load "
        + (f"capped at {args.rate:g} requests/s" if args.rate > 0 else "closed loop")
        + (f", [web] request_threads {args.web_threads}" if args.web_threads else "")
    )
    node = None
    try:
        t0 = time.monotonic()
        node = Node(checkout, work, args.studies, args.web_threads)
        say(f"node ready in {time.monotonic() - t0:.1f} s (population, user, start, model)")
        images = make_images(2 * args.stores + PER_ASSOCIATION, args.size, seed=4242)
        send_timed(node.port, images[:PER_ASSOCIATION])  # warm-up: first association, imports
        first = PER_ASSOCIATION
        reference = send_timed(node.port, images[first : first + args.stores], args.store_interval)
        say(f"reference sent: p50 {1000 * _pct(reference, 0.5):.1f} ms")

        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        go, stop = ctx.Event(), ctx.Event()
        process = ctx.Process(
            target=web_load,
            args=(node.web_port, args.clients, args.rate, go, stop, child),
            daemon=True,
        )
        process.start()
        if parent.recv() != "logged in":
            raise RuntimeError("web clients did not log in")
        go.set()
        if parent.recv() != "loaded":
            raise RuntimeError("web clients did not start")
        say(f"{args.clients} web clients loading")
        loaded = send_timed(
            node.port, images[first + args.stores :][: args.stores], args.store_interval
        )
        stop.set()
        web_latencies, errors, elapsed = parent.recv()
        process.join(timeout=60)
    finally:
        if node is not None:
            node.stop()
    ratio50 = _pct(loaded, 0.5) / _pct(reference, 0.5)
    ratio99 = _pct(loaded, 0.99) / _pct(reference, 0.99)
    say("C-STORE acknowledgement latency (send -> response):")
    say(_row("without web load", reference))
    say(_row(f"with {args.clients} web clients", loaded))
    say(f"  ratio with/without     p50 x{ratio50:.2f}  p99 x{ratio99:.2f}")
    say(
        f"web: {len(web_latencies)} requests in {elapsed:.1f} s = "
        f"{len(web_latencies) / elapsed:.1f} requests/s, errors {len(errors)}"
        + (" (" + ", ".join(sorted(set(errors))) + ")" if errors else "")
    )
    if web_latencies:
        say(_row("web request latency", web_latencies))
    if args.keep:
        say(f"kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", default=str(ROOT), help="the xrayd tree to run")
    parser.add_argument("--studies", type=int, default=3000, help="pre-populated studies")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--stores", type=int, default=100, help="C-STOREs per phase")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument(
        "--store-interval",
        type=float,
        default=0.0,
        help="seconds between one C-STORE's response and the next C-STORE (default 0), to "
        "make a phase last longer",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="cap on the web requests/s of all clients together (default 0: closed loop, "
        "each client asks again as soon as it is answered)",
    )
    parser.add_argument(
        "--web-threads",
        type=int,
        default=None,
        help="[web] request_threads of the node (trees that have it; default: the tree's own)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--populate", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.populate is not None:
        populate(Path(args.populate), args.studies)
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
