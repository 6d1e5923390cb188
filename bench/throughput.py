"""Sustained throughput of split xrayd processes at a steady arrival rate (``bench/e2e.py
--throughput``).

For each worker count W: a fresh data directory and database (PostgreSQL: a database created
for the run and dropped after it; SQLite when PostgreSQL is unreachable or asked for), one
``xrayd listener`` process, W ``xrayd worker --queues analysis,delivery`` processes and a
stand-in PACS (:class:`dicom_node.local_pacs.LocalPacs`) in its own process. This process is
the modality: it sends 3-image synthetic studies, one association each, one study every
3600/rate seconds on the monotonic clock (a send that runs late does not shift the schedule),
for ``--minutes``, then waits (bounded) for the remaining results.

A study is complete when the PACS holds as many distinct objects of it as the database has
deliveries queued for it to the PACS (the destination's default ``send`` kinds: SR, one
Secondary Capture and one presentation state per image, a KOS only when the AI flags an image):
nothing is hard-coded. Turnaround runs from the release of the association that carried the
study (CLOCK_MONOTONIC, shared with the PACS process) to the arrival of its last object. W
warm-up studies (one per worker) are sent first and excluded.

Where the time goes, per study, from the analysis detail ``timings`` and the job and delivery
rows (wall clock, the same system clock in every process): ``wait`` last image received ->
analysis started (promotion, queue, worker poll), ``analysis`` started -> objects built,
``commit`` -> deliveries queued, ``delivery`` queued -> last object at the PACS.

Exit status 0 when every study completed (whether or not the target is met: this is a
measurement), 1 when one did not or a process died.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dicom_node.local_pacs import LocalPacs, StoredObject  # noqa: E402
from dicom_node.scu import RemoteAE, store_datasets  # noqa: E402
from models.synthetic import generate_case, to_dicom  # noqa: E402

XRAYD = str(Path(sys.executable).parent / "xrayd")
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
IMAGES = 3
TARGET_P95_S = 5.0
MODALITY_AE = "BENCH-MOD"
PACS_AE = "BENCH-PACS"
DESTINATION = "pacs"
START_TIMEOUT_S = 120.0  # a process's start line
MODEL_TIMEOUT_S = 900.0  # every worker's model loaded ([model] runtime "auto" times runtimes)
WARMUP_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 30.0


class BenchError(RuntimeError):
    """The measurement could not be completed (a process died, a study never completed)."""


# -- the PACS process ------------------------------------------------------------------------


def _pacs(directory: str, conn: Connection) -> None:
    """Reports its port, then (study UID, SOP Instance UID, monotonic, wall) per object."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the parent stops it

    def stored(item: StoredObject) -> None:
        conn.send((item.study_instance_uid, item.sop_instance_uid, time.monotonic(), time.time()))

    pacs = LocalPacs(Path(directory), ae_title=PACS_AE, on_stored=stored)
    conn.send(pacs.start())
    conn.recv()  # any message: stop
    pacs.stop()


class PacsFeed:
    """The PACS process and a thread that records the first arrival of every object."""

    def __init__(self, directory: Path) -> None:
        self._parent, child = multiprocessing.Pipe()
        self.process = multiprocessing.get_context("spawn").Process(
            target=_pacs, args=(str(directory), child), daemon=True
        )
        self.process.start()
        if not self._parent.poll(START_TIMEOUT_S):
            raise BenchError("the stand-in PACS did not start")
        self.port = int(self._parent.recv())
        self._lock = threading.Lock()
        #: study UID -> SOP Instance UID -> (monotonic, wall) of its first arrival
        self.arrivals: dict[str, dict[str, tuple[float, float]]] = {}
        self._thread = threading.Thread(target=self._read, name="pacs-feed", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            while True:
                study, sop, mono, wall = self._parent.recv()
                with self._lock:
                    self.arrivals.setdefault(study, {}).setdefault(sop, (mono, wall))
        except (EOFError, OSError):
            return

    def of(self, study: str) -> dict[str, tuple[float, float]]:
        with self._lock:
            return dict(self.arrivals.get(study, {}))

    def stop(self) -> None:
        with suppress(OSError):
            self._parent.send("stop")
        self.process.join(timeout=STOP_TIMEOUT_S)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=5)


# -- xrayd processes ----------------------------------------------------------------------------


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("XRAYD_")}
    for name in ("NOTIFY_SOCKET", "JOURNAL_STREAM"):
        env.pop(name, None)
    return env


class XrayProcess:
    """``xrayd <command...> --config CFG``: stdout read by a thread, stderr to a log file."""

    def __init__(self, name: str, command: Sequence[str], cfg: Path, log: Path) -> None:
        self.name = name
        self.log = log
        self._stderr = log.open("wb")
        self.proc = subprocess.Popen(
            [XRAYD, *command, "--config", str(cfg)],
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            stdin=subprocess.DEVNULL,
            text=True,
            env=_clean_env(),
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read_stdout, name=f"{name}-stdout", daemon=True).start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def line(self, timeout: float = START_TIMEOUT_S) -> str:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise BenchError(f"{self.name}: no start line within {timeout:.0f} s") from None
        if line is None:
            raise BenchError(f"{self.name} exited (status {self.proc.wait()})\n{self.tail()}")
        return line

    def check(self) -> None:
        if self.proc.poll() is not None:
            raise BenchError(f"{self.name} died (status {self.proc.returncode})\n{self.tail()}")

    def log_has(self, text: str) -> bool:
        try:
            return text in self.log.read_text(errors="replace")
        except OSError:
            return False

    def tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return "\n".join(f"  | {line}" for line in text)

    def cpu_seconds(self) -> float:
        """user + system CPU time of the process so far (0 once it is gone)."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._stderr.close()


# -- the database -------------------------------------------------------------------------------


def _pg_reachable(admin_url: str) -> str | None:
    try:
        import psycopg

        with psycopg.connect(_dsn(admin_url), connect_timeout=3):
            return None
    except Exception as exc:  # any failure means: not usable here
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"


def _dsn(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


@contextmanager
def fresh_database(admin_url: str, data_dir: Path) -> Iterator[str]:
    """A fresh PostgreSQL database on ``admin_url``'s server, dropped afterwards; or, for a
    ``sqlite`` URL, a new SQLite file in ``data_dir``."""
    if admin_url.startswith("sqlite"):
        yield f"sqlite:///{(data_dir / 'xrayd.sqlite3').as_posix()}"
        return
    import psycopg

    name = f"xrayd_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_dsn(admin_url), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{admin_url.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(_dsn(admin_url), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class StudyRecord:
    """What the database says about one study, once its job is done."""

    study_id: int
    job_state: str
    expected: int  # deliveries queued to the PACS
    dead: int  # of them dead-lettered
    queued_at: datetime | None  # the first delivery row's creation (the analysis commit)
    timings: dict[str, float] = field(default_factory=dict)
    last_received: datetime | None = None
    images: int = 0
    flagged: bool = False
    worker_id: str | None = None


class Database:
    """Read-only views of the run's database through :mod:`storage` functions."""

    def __init__(self, url: str) -> None:
        from storage.db import make_engine, make_sessionmaker

        self.engine = make_engine(url)
        self.sessions = make_sessionmaker(self.engine)

    def done_studies(self, wanted: set[str]) -> dict[str, StudyRecord]:
        """The ``wanted`` studies whose job has finished (done, failed or dead)."""
        from storage.jobs import list_jobs
        from storage.outbox import list_deliveries

        jobs = {
            j.study_instance_uid: j
            for j in list_jobs(self.sessions, limit=1_000_000)
            if j.study_instance_uid in wanted and j.state not in ("pending", "running", "queued")
        }
        if not jobs:
            return {}
        by_study: dict[int, list[Any]] = {}
        for d in list_deliveries(self.sessions, limit=1_000_000):
            if d.destination_name == DESTINATION:
                by_study.setdefault(d.study_id, []).append(d)
        out = {}
        for uid, job in jobs.items():
            rows = by_study.get(job.study_id, [])
            out[uid] = StudyRecord(
                study_id=job.study_id,
                job_state=job.state,
                expected=len(rows),
                dead=sum(1 for d in rows if d.state == "dead"),
                queued_at=min((d.created_at for d in rows), default=None),
                worker_id=job.worker_id,
            )
        return out

    def add_analysis(self, records: dict[str, StudyRecord]) -> None:
        """Timings, images analysed, flag and last image's arrival of each study."""
        from storage.analyses import analyses_of, load_study
        from storage.jobs import list_jobs

        job_of = {j.study_id: j.job_id for j in list_jobs(self.sessions, limit=1_000_000)}
        for record in records.values():
            analyses = analyses_of(self.sessions, record.study_id)
            if analyses:
                detail = analyses[-1].detail
                record.timings = dict(detail.get("timings", {}))
                images = detail.get("images", [])
                record.images = len(images)
                record.flagged = detail.get("decision") not in (None, "absent")
            study = load_study(self.sessions, record.study_id, job_of[record.study_id])
            record.last_received = max((i.received_at for i in study.instances), default=None)

    def dispose(self) -> None:
        self.engine.dispose()


# -- the studies --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Study:
    uid: str
    datasets: tuple[Dataset, ...]


def make_studies(count: int, size: int, say: Callable[[str], None]) -> list[Study]:
    """``count`` 3-image synthetic studies (about every other one with a fracture)."""
    studies = []
    started = time.monotonic()
    for n in range(count):
        uid = str(generate_uid(entropy_srcs=["bench-throughput", str(n)]))
        datasets = tuple(
            to_dicom(
                generate_case(90_000 + IMAGES * n + v, size, fracture=n % 2 == 0),
                study_uid=uid,
                patient_id=f"TPUT{n:05d}",
                instance_number=v + 1,
            )
            for v in range(IMAGES)
        )
        studies.append(Study(uid, datasets))
        if time.monotonic() - started > 10 and n % 10 == 9:
            say(f"  generated {n + 1}/{count} studies")
    return studies


def send_study(port: int, study: Study) -> float:
    """C-STORE the study over one association; the monotonic time its release completed."""
    statuses = store_datasets(RemoteAE("XRAYD", "127.0.0.1", port), MODALITY_AE, study.datasets)
    released = time.monotonic()
    if statuses != [0] * len(study.datasets):
        raise BenchError(f"the listener answered C-STORE statuses {statuses}")
    return released


# -- one run ------------------------------------------------------------------------------------


def _config(data_dir: Path, database_url: str, pacs_port: int, model: str) -> Path:
    cfg = data_dir.parent / f"{data_dir.name}.toml"
    cfg.write_text(
        '[node]\nae_title = "XRAYD"\nhost = "127.0.0.1"\nport = 0\nmin_free_mb = 0\n'
        f'[[node.callers]]\nae_title = "{MODALITY_AE}"\n'
        f'[storage]\ndata_dir = "{data_dir}"\ndatabase_url = "{database_url}"\n'
        f"[model]\n{model}"
        '[web]\nhost = "127.0.0.1"\nport = 0\n'
        '[logging]\nlevel = "INFO"\nformat = "text"\n'
        f'[[destinations]]\nname = "{DESTINATION}"\nae_title = "{PACS_AE}"\n'
        f'host = "127.0.0.1"\nport = {pacs_port}\n'  # send: the default kinds
    )
    return cfg


@dataclass
class RunResult:
    workers: int
    sent: int
    completed: int
    turnaround: list[float]
    span_s: float
    phases: dict[str, list[float]]
    cpu: dict[str, float]  # process -> share of one core over the span
    late_sends: int
    max_send_lag_s: float
    flagged: int
    objects: list[int]
    per_process: dict[str, int]  # analysis jobs run by each worker process
    error: str | None = None

    @property
    def per_hour(self) -> float:
        return self.completed / self.span_s * 3600 if self.span_s > 0 else 0.0


class Tracker:
    """Which sent studies are complete: the PACS's objects against the database's deliveries."""

    def __init__(self, pacs: PacsFeed, db: Database) -> None:
        self.pacs = pacs
        self.db = db
        self.released: dict[str, float] = {}
        self.done: dict[str, float] = {}  # study -> monotonic time of its last object
        self.records: dict[str, StudyRecord] = {}

    def poll(self) -> None:
        waiting = {uid for uid in self.released if uid not in self.done}
        if not waiting:
            return
        for uid, record in self.db.done_studies(waiting).items():
            if record.job_state != "done":
                raise BenchError(f"study {uid}: analysis job {record.job_state}")
            if record.dead:
                raise BenchError(f"study {uid}: {record.dead} delivery(ies) dead-lettered")
            if record.expected == 0:
                raise BenchError(f"study {uid}: its analysis queued nothing for the PACS")
            arrived = self.pacs.of(uid)
            if len(arrived) >= record.expected:
                self.done[uid] = max(mono for mono, _ in arrived.values())
                self.records[uid] = record

    def wait(self, uids: Sequence[str], timeout: float, check: Callable[[], None]) -> None:
        deadline = time.monotonic() + timeout
        while True:
            check()
            self.poll()
            if all(uid in self.done for uid in uids):
                return
            if time.monotonic() > deadline:
                missing = [uid for uid in uids if uid not in self.done]
                raise BenchError(
                    f"{len(missing)} of {len(uids)} studies not complete after {timeout:.0f} s"
                )
            time.sleep(0.5)


def _percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between the closest ranks (q in 0..100; 50: the median)."""
    ordered = sorted(v for v in values if not math.isnan(v))
    if not ordered:
        return math.nan
    pos = (len(ordered) - 1) * q / 100
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def run_workers(
    workers: int,
    studies: Sequence[Study],
    warmups: Sequence[Study],
    interval: float,
    admin_url: str,
    drain_s: float,
    model: str,
    work: Path,
    say: Callable[[str], None],
) -> RunResult:
    base = work / f"w{workers}"
    base.mkdir()
    data_dir = base / "data"
    data_dir.mkdir()
    with ExitStack() as stack:
        database_url = stack.enter_context(fresh_database(admin_url, data_dir))
        pacs = PacsFeed(base / "pacs")
        stack.callback(pacs.stop)
        cfg = _config(data_dir, database_url, pacs.port, model)
        processes: list[XrayProcess] = []

        def stop_all() -> None:
            for process in reversed(processes):  # workers first, then the listener
                process.stop()

        stack.callback(stop_all)

        def check() -> None:
            for process in processes:
                process.check()
            if not pacs.process.is_alive():
                raise BenchError("the stand-in PACS died")

        listener = XrayProcess("listener", ["listener"], cfg, base / "listener.log")
        processes.append(listener)
        first = listener.line()
        if "listening" not in first:
            raise BenchError(f"listener: unexpected start line {first!r}\n{listener.tail()}")
        port = int(first.rsplit(" ", 1)[1])
        if "web UI" not in listener.line():
            raise BenchError(f"listener: no web UI line\n{listener.tail()}")
        for i in range(workers):
            worker = XrayProcess(
                f"worker {i + 1}",
                ["worker", "--queues", "analysis,delivery"],
                cfg,
                base / f"worker{i + 1}.log",
            )
            processes.append(worker)
            if "worker for" not in worker.line():
                raise BenchError(f"worker {i + 1}: unexpected start line\n{worker.tail()}")
        say(f"  W={workers}: listener on port {port}, {workers} worker(s); loading the model")
        deadline = time.monotonic() + MODEL_TIMEOUT_S
        while not all(p.log_has(", runtime ") for p in processes[1:]):
            check()
            if time.monotonic() > deadline:
                raise BenchError(f"the model did not load within {MODEL_TIMEOUT_S:.0f} s")
            time.sleep(0.5)

        db = Database(database_url)
        stack.callback(db.dispose)
        tracker = Tracker(pacs, db)
        for study in warmups:
            tracker.released[study.uid] = send_study(port, study)
        tracker.wait([s.uid for s in warmups], WARMUP_TIMEOUT_S, check)
        say(
            f"  W={workers}: warm-up done; sending {len(studies)} studies, one every "
            f"{interval:.2f} s"
        )

        cpu_before = {p.name: p.cpu_seconds() for p in processes}
        own_before = time.process_time()
        late = 0
        max_lag = 0.0
        start = time.monotonic() + 0.5
        first_send = start
        uids = []
        for n, study in enumerate(studies):
            due = start + n * interval
            now = time.monotonic()
            if now < due:
                time.sleep(due - now)
            lag = time.monotonic() - due
            max_lag = max(max_lag, lag)
            if lag > 0.25 * interval:
                late += 1
            if n == 0:
                first_send = time.monotonic()
            tracker.released[study.uid] = send_study(port, study)
            uids.append(study.uid)
            check()
        say(f"  W={workers}: all sent; waiting for the last results (at most {drain_s:.0f} s)")
        error = None
        try:
            tracker.wait(uids, drain_s, check)
        except BenchError as exc:
            error = str(exc)
        end = time.monotonic()
        completed = [uid for uid in uids if uid in tracker.done]
        last_done = max((tracker.done[uid] for uid in completed), default=end)
        span = last_done - first_send
        cpu = {
            p.name: (p.cpu_seconds() - cpu_before[p.name]) / (end - first_send) for p in processes
        }
        cpu["modality (bench)"] = (time.process_time() - own_before) / (end - first_send)

        records = {uid: tracker.records[uid] for uid in completed}
        db.add_analysis(records)
        phases: dict[str, list[float]] = {k: [] for k in PHASES}
        objects = []
        for uid in completed:
            record = records[uid]
            arrived = pacs.of(uid)
            objects.append(len(arrived))
            t = record.timings
            phases["wait"].append(float(t.get("received_to_started_s", math.nan)))
            phases["analysis"].append(float(t.get("analysis_s", math.nan)))
            phases["inference"].append(float(t.get("inference_s", math.nan)))
            if record.last_received is not None and record.queued_at is not None:
                started = record.last_received.timestamp() + t.get("received_to_started_s", 0)
                built = started + t.get("analysis_s", 0)
                phases["commit"].append(record.queued_at.timestamp() - built)
                last_wall = max(wall for _, wall in arrived.values())
                phases["delivery"].append(last_wall - record.queued_at.timestamp())
        names = {f":{p.proc.pid}:": p.name for p in processes[1:]}
        per_process = {p.name: 0 for p in processes[1:]}
        for uid in completed:
            wid = records[uid].worker_id or ""
            for key, name in names.items():
                if key in wid:
                    per_process[name] += 1
        return RunResult(
            workers=workers,
            sent=len(uids),
            completed=len(completed),
            turnaround=[tracker.done[uid] - tracker.released[uid] for uid in completed],
            span_s=span,
            phases=phases,
            cpu=cpu,
            late_sends=late,
            max_send_lag_s=max_lag,
            flagged=sum(1 for uid in completed if records[uid].flagged),
            objects=objects,
            per_process=per_process,
            error=error,
        )
    raise AssertionError("unreachable")  # ExitStack does not swallow exceptions


PHASES = {
    "wait": "last image received -> analysis started (promotion, queue, poll)",
    "analysis": "analysis started -> result objects built",
    "inference": "of which: the model's forward pass",
    "commit": "objects built -> written, deliveries queued",
    "delivery": "deliveries queued -> last object at the PACS",
}


# -- report -------------------------------------------------------------------------------------


def report(results: Sequence[RunResult], rate: float, database: str) -> str:
    lines = [
        "",
        f"throughput at {rate:g} studies/h offered (one every {3600 / rate:.2f} s); "
        f"CPUs: {os.cpu_count()} ({len(os.sched_getaffinity(0))} usable); database: {database}",
        "",
        f"{'workers':>7} {'sent':>5} {'done':>5} {'studies/h':>10} {'p50 s':>7} {'p95 s':>7} "
        f"{'max s':>7}  p95 <= {TARGET_P95_S:g} s",
    ]
    for r in results:
        t = r.turnaround
        ok = "yes" if t and _percentile(t, 95) <= TARGET_P95_S and r.completed == r.sent else "NO"
        lines.append(
            f"{r.workers:>7} {r.sent:>5} {r.completed:>5} {r.per_hour:>10.0f} "
            f"{_percentile(t, 50):>7.2f} {_percentile(t, 95):>7.2f} "
            f"{max(t, default=math.nan):>7.2f}  {ok}"
        )
    lines += ["", "where the time goes (s, p50 / p95 per study):"]
    header = f"  {'phase':<10}" + "".join(f"{'W=' + str(r.workers):>16}" for r in results)
    lines.append(header)
    for phase, meaning in PHASES.items():
        cells = "".join(
            f"{_percentile(r.phases[phase], 50):>8.2f} /{_percentile(r.phases[phase], 95):>6.2f}"
            for r in results
        )
        lines.append(f"  {phase:<10}{cells}   {meaning}")
    lines += ["", "CPU over the measured span (share of one core):"]
    for r in results:
        shares = ", ".join(f"{name} {share:.0%}" for name, share in r.cpu.items())
        lines.append(
            f"  W={r.workers}: {shares}; all {sum(r.cpu.values()):.0%} of "
            f"{len(os.sched_getaffinity(0)) * 100}%"
        )
    lines.append("")
    for r in results:
        objs = sorted(set(r.objects))
        lines.append(
            f"  W={r.workers}: {r.flagged} of {r.completed} studies flagged (KOS sent); "
            f"objects per study {objs}; sends late by > 1/4 interval: {r.late_sends} "
            f"(max lag {r.max_send_lag_s:.2f} s); studies analysed per process: "
            + ", ".join(f"{name} {n}" for name, n in r.per_process.items())
        )
        if r.error:
            lines.append(f"  W={r.workers}: ERROR: {r.error}")
    return "\n".join(lines)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(args: argparse.Namespace) -> int:
    if args.rate <= 0 or args.minutes <= 0:
        raise SystemExit("--rate and --minutes must be positive")
    worker_counts = [int(w) for w in str(args.workers).split(",") if w.strip()]
    if not worker_counts or min(worker_counts) < 1:
        raise SystemExit("--workers: a comma-separated list of counts >= 1, e.g. 1,2")

    began = time.monotonic()

    def say(text: str) -> None:
        print(f"[{time.monotonic() - began:6.1f} s] {text}", flush=True)

    interval = 3600.0 / args.rate
    count = max(1, round(args.minutes * 60 / interval))
    admin_url = args.database_url
    if admin_url.startswith("postgresql"):
        problem = _pg_reachable(admin_url)
        if problem is None:
            database = (
                f"PostgreSQL ({admin_url.split('@')[-1].rsplit('/', 1)[0]}, a fresh database per "
                "worker count, dropped after)"
            )
        else:
            say(
                f"NOTE: PostgreSQL not reachable at {admin_url} ({problem}): using SQLite "
                "(one file shared by the processes) instead"
            )
            admin_url = "sqlite"
            database = "SQLite (PostgreSQL unreachable), a fresh file per worker count"
    elif admin_url.startswith("sqlite"):
        database = "SQLite, a fresh file per worker count"
    else:
        raise SystemExit("--database-url: a postgresql+psycopg:// URL or 'sqlite'")

    model = f'runtime = "{args.runtime}"\n'
    if args.bundle:
        model += f'bundle = "{Path(args.bundle).resolve()}"\n'
    # Ctrl-C and SIGTERM both unwind through the clean-up below.
    signal.signal(signal.SIGTERM, _interrupt)
    say(
        f"xrayd throughput: {count} studies of {IMAGES} synthetic {args.size}x{args.size} DX "
        f"images at {args.rate:g} studies/h for {args.minutes:g} min, workers {worker_counts}; "
        f"one `xrayd listener` + W `xrayd worker --queues analysis,delivery`, stand-in PACS "
        f"in its own process; model {args.bundle or 'the default'} (runtime {args.runtime}, "
        f"threads 2 per worker), "
        f"default [jobs]/[delivery] settings; results: the destination's default send kinds "
        f"(SR, SC + GSPS per image, KOS when flagged), complete when the PACS holds every "
        f"delivery the database queued for the study; W warm-up studies excluded"
    )
    work = Path(tempfile.mkdtemp(prefix="xrayd-bench-throughput-"))
    results: list[RunResult] = []
    try:
        say("generating the studies ...")
        pool = make_studies(count + max(worker_counts), args.size, say)
        for w in worker_counts:
            warmups, studies = pool[:w], pool[max(worker_counts) :]
            result = run_workers(
                w, studies, warmups, interval, admin_url, args.drain, model, work, say
            )
            results.append(result)
            t = result.turnaround
            say(
                f"  W={w}: {result.completed}/{result.sent} complete, p50 "
                f"{_percentile(t, 50):.2f} s, p95 {_percentile(t, 95):.2f} s"
            )
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if results:
            print(report(results, args.rate, database), flush=True)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(report(results, args.rate, database), flush=True)
    return 1 if any(r.error or r.completed < r.sent for r in results) else 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("throughput mode (--throughput)")
    group.add_argument("--rate", type=float, default=600.0, help="studies per hour offered")
    group.add_argument("--minutes", type=float, default=5.0, help="how long studies are sent")
    group.add_argument("--workers", default="1,2", help="worker process counts to measure")
    group.add_argument(
        "--database-url",
        default=os.environ.get("XRAYD_BENCH_PG", DEFAULT_PG),
        help="PostgreSQL server URL (a fresh database is created there and dropped), or 'sqlite'",
    )
    group.add_argument("--runtime", default="auto", help="[model] runtime of the workers")
    group.add_argument("--bundle", default="", help="[model] bundle (default: xrayd's default)")
    group.add_argument(
        "--drain", type=float, default=300.0, help="seconds to wait for results after sending"
    )
