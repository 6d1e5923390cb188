"""Three hosts in network namespaces share the work through PostgreSQL and S3, and survive
the loss of worker hosts.

Hosts (``tests/netns.py``): ``listener`` runs ``xrayd listener``, ``worker-a`` and ``worker-b``
each ``xrayd worker --queues analysis,delivery``; every host has a data directory of its own
(no shared filesystem) and its own hostname. In the root namespace, on the bridge address:
PostgreSQL (through a TCP forwarder: the server listens on loopback only), SeaweedFS's S3
gateway (https, a throwaway CA: xrayd refuses plain http beyond loopback) and Orthanc as the
PACS. A modality in the root namespace sends 50 studies of 3 images to the listener.

Faults, each at the moment its log line names, from the log reader's thread the instant the
line arrives: worker-a's processes are SIGKILLed right after it logs its third "job N claimed"
(mid-analysis: the job is still ``running`` under worker-a afterwards); later, worker-b's right
after it logs "delivery D: sending result" (a DEBUG line; mid-delivery: the delivery is still
``pending``, its attempt unrecorded) once it has sent some results. worker-b is started again at
once; worker-a once its job was claimed again by another host (its lease expired: its host's
name differs, so no start-up orphan check can release it). The jobs' and deliveries' leases are
short, so the lost work comes back quickly. Both workers start at the same moment, as when a
site's hosts boot; one that exits because the other registered the model first (a race xrayd
had, now handled) is started again, as its systemd unit would, and the race is reported.

Then: every study has one done analysis job and one set of result objects (SR, 3 SC, 3 GSPS,
at most one KOS), every delivery is sent, nothing is queued, running, pending or dead, the
lost job and delivery were taken up again, and Orthanc holds exactly the delivered SOP Instance
UIDs, once each, each with the data set the object store holds for it (Orthanc writes its own
file meta header). The hosts' data directories hold no image or result file: the restarted
workers removed what their killed predecessors were downloading. Either of the two bugs this
test found (that start-up race; a killed worker's S3 download left in its spool for good) fails
it by name, after every other check has passed.
"""

from __future__ import annotations

import contextlib
import io
import re
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from sqlalchemy import make_url, select

from dicom_factory import DX, make_radiograph
from helpers import PHANTOM, make_settings
from netns import Host, TcpForwarder, TLSS3Server, network, running_seaweedfs_tls
from orthanc import Orthanc, running_orthanc
from serve_process import XRAYD, clean_env

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

STUDIES = 50
IMAGES = 3
SENDERS = 4  # concurrent associations from the modality
JOB_LEASE = 6.0
DELIVERY_LEASE = 10.0
SEND_TIMEOUT = 3.0
KILL_A_AT_CLAIM = 3  # worker-a dies right after logging its third job claim
KILL_B_AFTER_SENT = 30  # worker-b dies at the first send in flight after it has sent this many
SEND_KINDS = ("sr", "sc", "gsps", "kos")  # a destination's default `send`
PER_STUDY = {"sr": (1, 1), "sc": (IMAGES, IMAGES), "gsps": (IMAGES, IMAGES), "kos": (0, 1)}

CLAIMED = re.compile(r"xrayd\.workers\.analysis: job (\d+) claimed \(attempt (\d+)\)")
SENDING = re.compile(
    r"xrayd\.pipeline\.delivery: delivery (\d+): sending result (\d+) \((\w+), sop \w+\) to pacs, "
    r"attempt (\d+)"
)
SENT = re.compile(r"xrayd\.pipeline\.delivery: delivery (\d+): result (\d+) sent to pacs")


# -- xrayd processes in a host -----------------------------------------------------------------


@dataclass
class KillOnLine:
    """SIGKILLs a process from its log reader's thread the instant a stderr line matches
    ``pattern`` while ``ready(process)`` holds (before the line is even stored): no later
    moment."""

    pattern: re.Pattern[str]
    ready: Callable[[XraydProcess], bool] = lambda process: True
    nth: int = 1  # the nth matching line (among those seen while ready)
    seen: int = 0
    line: str = ""
    match: re.Match[str] | None = None
    line_index: int = -1
    seen_at: float = 0.0
    killed_wall: float = 0.0  # time.time() of the kill (to date files left behind)
    killed_at: float = 0.0
    fired: threading.Event = field(default_factory=threading.Event)

    def see(self, process: XraydProcess, line: str) -> None:
        if self.fired.is_set():
            return
        match = self.pattern.search(line)
        if match is None or not self.ready(process):
            return
        self.seen += 1
        if self.seen < self.nth:
            return
        self.seen_at = time.monotonic()
        process.proc.send_signal(signal.SIGKILL)
        self.killed_at, self.killed_wall = time.monotonic(), time.time()
        self.line, self.match, self.line_index = line, match, len(process.lines)
        self.fired.set()


class XraydProcess:
    """``xrayd COMMAND --config CFG`` in ``host``; stdout and stderr read line by line on
    threads (a :class:`KillOnLine` sees each stderr line first)."""

    def __init__(
        self,
        host: Host,
        cfg: Path,
        command: tuple[str, ...],
        trigger: KillOnLine | None = None,
    ) -> None:
        self.host, self.command, self.trigger = host, command, trigger
        self.started = time.monotonic()
        self.lines: list[str] = []
        self.out: list[str] = []
        self._changed = threading.Condition()
        self._ended = 0
        self.proc = host.popen(
            [XRAYD, *command, "--config", str(cfg)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=clean_env(),
        )
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.out), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.lines), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: Any, sink: list[str]) -> None:
        for line in stream:
            if sink is self.lines and self.trigger is not None:
                self.trigger.see(self, line)
            with self._changed:
                sink.append(line)
                self._changed.notify_all()
        with self._changed:
            self._ended += 1
            self._changed.notify_all()

    def wait_stdout(self, text: str, timeout: float) -> str:
        """The first stdout line holding ``text`` (the start-up report)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.out:
                    if text in line:
                        return line
                left = deadline - time.monotonic()
                if self._ended == len(self._readers) or left <= 0:
                    raise AssertionError(
                        f"{self.host.name} {' '.join(self.command)}: no {text!r} on stdout "
                        f"(exit {self.proc.poll()}):\n{self.tail()}"
                    )
                self._changed.wait(left)

    def came_up(self, text: str, timeout: float) -> bool:
        """Whether ``text`` came on stdout; False if the process exited before printing it."""
        try:
            self.wait_stdout(text, timeout)
        except AssertionError:
            if self.proc.poll() is None:
                raise  # still running, silent: a hang, not an exit
            self.proc.wait()
            self.join()
            return False
        return True

    def count(self, pattern: re.Pattern[str]) -> int:
        with self._changed:
            return sum(1 for line in self.lines if pattern.search(line))

    def tail(self, lines: int = 40) -> str:
        with self._changed:
            return "".join(self.out + self.lines[-lines:])

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM; the exit status (SIGKILL after ``timeout``, then an assertion fails)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"{self.host.name} did not stop in {timeout} s:\n{self.tail()}"
            ) from None
        self.join()
        return code

    def join(self) -> None:
        for reader in self._readers:
            reader.join(timeout=30)


def _around(process: XraydProcess, trigger: KillOnLine, lines: int = 3) -> list[str]:
    """The log lines just before and after the one that triggered the kill."""
    i = trigger.line_index
    return [line.strip() for line in process.lines[max(0, i - lines) : i + lines + 1]]


WORKER = ("worker", "--queues", "analysis,delivery")
WORKER_UP = "worker for analysis, delivery"
#: What a worker says when a concurrent start registered the configured model first.
REGISTERED_ALREADY = re.compile(r"xrayd: error: model .+ is registered already")


def _start_workers(
    hosts: list[tuple[Host, Path, KillOnLine]],
    processes: list[XraydProcess],
    known_bugs: list[str],
) -> list[XraydProcess]:
    """``xrayd worker`` on every host at the same moment (as when a site's hosts boot).

    A worker that exits at start with status 1 because another one registered the model
    first (a check-then-insert race in ``storage.model_versions.ensure_active``) is started
    once more, as its unit's ``Restart=on-failure`` would, and the race is noted in
    ``known_bugs``; any other start failure fails the test."""
    started = [XraydProcess(host, cfg, WORKER, trigger) for host, cfg, trigger in hosts]
    processes.extend(started)
    for n, (host, cfg, trigger) in enumerate(hosts):
        if started[n].came_up(WORKER_UP, timeout=240):
            continue
        tail = started[n].tail()
        assert started[n].proc.returncode == 1 and REGISTERED_ALREADY.search(tail), tail
        known_bugs.append(
            f"{host.name}'s first start failed: {REGISTERED_ALREADY.search(tail)[0]!r} (two "
            "workers started at once on an empty registry both insert the model: "
            "ensure_active's SELECT ... FOR UPDATE locks no row when there is none)"
        )
        started[n] = XraydProcess(host, cfg, WORKER, trigger)
        processes.append(started[n])
        started[n].wait_stdout(WORKER_UP, 240)
    return started


def _kill_host(process: XraydProcess, trigger: KillOnLine, timeout: float) -> list[int]:
    """Wait until ``trigger`` killed ``process``, then SIGKILL whatever else runs in its host."""
    if not trigger.fired.wait(timeout):
        raise AssertionError(
            f"{process.host.name}: {trigger.pattern.pattern!r} not logged in {timeout} s "
            f"(exit {process.proc.poll()}):\n{process.tail()}"
        )
    others = process.host.kill_all()
    assert process.proc.wait(timeout=30) == -signal.SIGKILL
    process.join()
    assert not process.host.pids()
    # the line was logged, and nothing after it can have been written by a live process
    assert trigger.seen_at <= trigger.killed_at
    assert process.lines[trigger.line_index] == trigger.line
    return others


# -- configuration ------------------------------------------------------------------------------


def _host_config(
    root: Path,
    host: Host,
    *,
    database_url: str,
    s3: TLSS3Server,
    prefix: str,
    pacs: tuple[str, int],
    log_level: str = "INFO",
) -> Path:
    """One host's xrayd.toml, its secret and CA in that host's directory."""
    home = root / host.name
    home.mkdir(parents=True, exist_ok=True)
    secret, ca = home / "s3-secret", home / "s3-ca.pem"
    secret.write_text(s3.secret_key + "\n")
    secret.chmod(0o600)
    assert s3.ca_file is not None
    ca.write_bytes(s3.ca_file.read_bytes())
    cfg = home / "xrayd.toml"
    cfg.write_text(
        f'[node]\nae_title = "XRAYD"\nhost = "{host.address}"\nport = 0\nmin_free_mb = 0\n'
        '[[node.callers]]\nae_title = "MODALITY"\n'
        f'[storage]\ndata_dir = "{home / "data"}"\ndatabase_url = "{database_url}"\n'
        f'[model]\nruntime = "eager"\nbundle = "{PHANTOM}"\nthreads = 1\n'
        '[web]\nhost = "127.0.0.1"\nport = 0\n'
        "[study]\nquiet_seconds = 2\nmax_wait_seconds = 120\n"
        f"[jobs]\nworkers = 1\nlease_seconds = {JOB_LEASE}\npoll_seconds = 0.5\n"
        "retry_base_seconds = 1\nretry_max_seconds = 5\n"
        f"[delivery]\nworkers = 1\nlease_seconds = {DELIVERY_LEASE}\n"
        f"send_timeout_seconds = {SEND_TIMEOUT}\nconnect_timeout_seconds = {SEND_TIMEOUT}\n"
        "poll_seconds = 1\nretry_base_seconds = 1\nretry_max_seconds = 5\n"
        f'[logging]\nlevel = "{log_level}"\nformat = "text"\n'
        f'[[destinations]]\nname = "pacs"\nae_title = "ORTHANC"\nhost = "{pacs[0]}"\n'
        f"port = {pacs[1]}\n"
        '[object_store]\nbackend = "s3"\n'
        f'[object_store.s3]\nendpoint_url = "{s3.endpoint}"\nbucket = "{s3.bucket}"\n'
        f'prefix = "{prefix}"\naccess_key_id = "{s3.access_key}"\n'
        f'secret_access_key_file = "{secret}"\nca_file = "{ca}"\n'
        "connect_timeout_seconds = 2\nread_timeout_seconds = 30\n"
    )
    return cfg


def _keep_logs(processes: list[XraydProcess], directory: Path) -> None:
    """Kill what still runs and keep every process's output (for a failure's post-mortem)."""
    directory.mkdir(parents=True, exist_ok=True)
    for n, process in enumerate(processes):
        if process.proc.poll() is None:
            process.proc.kill()
        process.proc.wait()
        process.join()
        log = directory / f"{n}-{process.host.name}.log"
        log.write_text("".join(process.out) + "".join(process.lines))


def _at_info(cfg: Path) -> Path:
    """A copy of ``cfg`` (beside it) that logs at INFO."""
    copy = cfg.with_name("xrayd-info.toml")
    copy.write_text(cfg.read_text().replace('level = "DEBUG"', 'level = "INFO"'))
    return copy


# -- the modality -------------------------------------------------------------------------------


def _send_studies(address: str, port: int) -> dict[str, list[str]]:
    """STUDIES studies of IMAGES images, one association per study, SENDERS at a time; every
    C-STORE must be acknowledged with 0x0000. Returns {study UID: [SOP Instance UIDs]}."""
    studies: dict[str, list[str]] = {str(generate_uid()): [] for _ in range(STUDIES)}
    uids = list(studies)

    def sender(first: int) -> None:
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(DX, ExplicitVRLittleEndian)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
        for n in range(first, STUDIES, SENDERS):
            images = [
                make_radiograph(study_uid=uids[n], seed=n * IMAGES + i) for i in range(IMAGES)
            ]
            assoc = ae.associate(address, port, ae_title="XRAYD")
            assert assoc.is_established, f"study {n}: association refused or aborted"
            try:
                for ds in images:
                    rsp = assoc.send_c_store(ds)
                    assert rsp and rsp.Status == 0, f"study {n}: C-STORE answered {rsp}"
                    studies[uids[n]].append(str(ds.SOPInstanceUID))
            finally:
                assoc.release()

    with ThreadPoolExecutor(SENDERS) as pool:
        for future in [pool.submit(sender, k) for k in range(SENDERS)]:
            future.result(timeout=600)
    return studies


# -- checks -------------------------------------------------------------------------------------


def _data_set(data: bytes) -> bytes:
    """The data set of a Part 10 file (file meta header dropped), encoded the same way
    whatever the file's layout (defined or undefined lengths, group lengths)."""
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.file_meta = FileMetaDataset()
    out = DicomBytesIO()
    out.is_little_endian, out.is_implicit_VR = True, False
    write_dataset(out, ds)
    return out.getvalue()


def _orthanc_files(orthanc: Orthanc) -> dict[str, list[bytes]]:
    """SOP Instance UID -> the files Orthanc holds under it."""
    held: dict[str, list[bytes]] = {}
    for instance in orthanc.get("/instances"):
        data = orthanc.get_bytes(f"/instances/{instance}/file")
        uid = str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)
        held.setdefault(uid, []).append(data)
    return held


def _left_by_the_kill(path: Path, host: str, kill_a: KillOnLine, kill_b: KillOnLine) -> bool:
    """Whether ``path`` is an S3 download's temporary copy the SIGKILLed worker of ``host``
    was writing (last modified no later than the kill)."""
    kill = {"worker-a": kill_a, "worker-b": kill_b}.get(host)
    return (
        kill is not None
        and path.parent.name == "tmp"
        and path.name.startswith("xrayd-")
        and path.suffix == ".fetch"
        and path.stat().st_mtime <= kill.killed_wall + 0.01
    )


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _is_dicom(path: Path) -> bool:
    with path.open("rb") as f:
        head = f.read(132)
    return head[128:132] == b"DICM"


@contextlib.contextmanager
def _checker(root: Path, pg_url: str, s3: TLSS3Server, prefix: str) -> Iterator[Any]:
    """xrayd's storage (database and object store) opened from the root namespace."""
    from xrayd.runtime.node import open_storage

    assert s3.ca_file is not None
    settings = make_settings(
        root,
        pg_url,
        object_store={
            "backend": "s3",
            "s3": {
                "endpoint_url": s3.endpoint,
                "bucket": s3.bucket,
                "prefix": prefix,
                "access_key_id": s3.access_key,
                "secret_access_key_file": str(_secret_file(root, s3)),
                "ca_file": str(s3.ca_file),
            },
        },
    )
    storage = open_storage(settings, create_if_empty=False, require_current=True)
    try:
        yield storage
    finally:
        storage.engine.dispose()


def _secret_file(root: Path, s3: TLSS3Server) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "s3-secret"
    path.write_text(s3.secret_key + "\n")
    path.chmod(0o600)
    return path


def _wait_until(check: Callable[[], bool], timeout: float, interval: float = 1.0) -> bool:
    """Poll ``check`` (a condition read from the database) until it holds or ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() > deadline:
            return False
        threading.Event().wait(interval)


# -- the test -----------------------------------------------------------------------------------


@pytest.mark.timeout(900)
def test_hosts_lose_workers_mid_analysis_and_mid_delivery_and_deliver_once(
    tmp_path: Path, pg_url: str
) -> None:
    from storage.jobs import list_jobs
    from storage.outbox import list_deliveries
    from storage.schema import Result, Study
    from storage.status import status_counts

    t0 = time.monotonic()
    timings: dict[str, float] = {}
    prefix = f"multi-{uuid.uuid4().hex[:10]}/"
    pg = make_url(pg_url)
    with contextlib.ExitStack() as stack:
        net = stack.enter_context(network(["listener", "worker-a", "worker-b"]))
        forwarder = stack.enter_context(
            TcpForwarder(net.gateway, (pg.host or "127.0.0.1", pg.port or 5432))
        )
        s3 = stack.enter_context(running_seaweedfs_tls(tmp_path / "seaweedfs", net.gateway))
        orthanc = stack.enter_context(running_orthanc(tmp_path / "orthanc"))
        hosts_url = pg.set(host=net.gateway, port=forwarder.port).render_as_string(
            hide_password=False
        )
        configs = {
            name: _host_config(
                tmp_path / "hosts",
                net[name],
                database_url=hosts_url,
                s3=s3,
                prefix=prefix,
                pacs=(net.gateway, orthanc.dicom_port),
                # worker-b's send-in-flight line ("sending result") is logged at DEBUG
                log_level="DEBUG" if name == "worker-b" else "INFO",
            )
            for name in net.hosts
        }
        timings["peers up"] = time.monotonic() - t0

        # -- start: the listener first (it creates the schema), then both workers
        processes: list[XraydProcess] = []
        stack.callback(_keep_logs, processes, tmp_path / "logs")
        known_bugs: list[str] = []  # product bugs met on the way: an expected failure at the end
        listener = XraydProcess(net["listener"], configs["listener"], ("listener",))
        processes.append(listener)
        port = int(listener.wait_stdout("listening as XRAYD", 180).rsplit(" ", 1)[1])
        kill_a = KillOnLine(CLAIMED, nth=KILL_A_AT_CLAIM)
        kill_b = KillOnLine(
            SENDING,
            ready=lambda process: (
                kill_a.fired.is_set() and process.count(SENT) >= KILL_B_AFTER_SENT
            ),
        )
        worker_a, worker_b = _start_workers(
            [
                (net["worker-a"], configs["worker-a"], kill_a),
                (net["worker-b"], configs["worker-b"], kill_b),
            ],
            processes,
            known_bugs,
        )
        timings["xrayd up"] = time.monotonic() - t0

        with ThreadPoolExecutor(1) as modality:

            def send() -> dict[str, list[str]]:
                sent = _send_studies(net["listener"].address, port)
                timings["all studies acknowledged"] = time.monotonic() - t0
                return sent

            sending = modality.submit(send)

            with _checker(tmp_path / "checker", pg_url, s3, prefix) as storage:
                # -- worker-a dies right after claiming a job (mid-analysis)
                others_a = _kill_host(worker_a, kill_a, 300)
                assert kill_a.match is not None
                job_a, attempt_a = int(kill_a.match[1]), int(kill_a.match[2])
                held = {j.job_id: j for j in list_jobs(storage.sessions)}[job_a]
                assert held.state == "running", held
                assert (held.worker_id or "").startswith("worker-a:"), held
                timings["worker-a killed"] = time.monotonic() - t0

                # -- worker-b dies right after starting a send (mid-delivery)
                others_b = _kill_host(worker_b, kill_b, 300)
                assert kill_b.match is not None
                delivery_b, result_b = int(kill_b.match[1]), int(kill_b.match[2])
                attempt_b = int(kill_b.match[4])
                in_flight = {d.delivery_id: d for d in list_deliveries(storage.sessions)}
                assert in_flight[delivery_b].state == "pending", in_flight[delivery_b]
                assert in_flight[delivery_b].attempts == attempt_b, in_flight[delivery_b]
                timings["worker-b killed"] = time.monotonic() - t0

                # -- worker-b's host comes back (logging at INFO)
                restart_cfg_a, restart_cfg = configs["worker-a"], _at_info(configs["worker-b"])
                worker_b2 = XraydProcess(net["worker-b"], restart_cfg, WORKER)
                processes.append(worker_b2)
                worker_b2.wait_stdout(WORKER_UP, 240)
                timings["worker-b restarted"] = time.monotonic() - t0

                # -- worker-a's job comes back through its lease (another host claims it
                # again), then worker-a's host comes back too
                def job_a_taken_up() -> bool:
                    again = {j.job_id: j for j in list_jobs(storage.sessions)}[job_a]
                    return again.attempts > attempt_a

                assert _wait_until(job_a_taken_up, timeout=120, interval=0.5), (
                    f"job {job_a} was not taken up again after worker-a died"
                )
                timings["worker-a's job taken up again"] = time.monotonic() - t0
                worker_a2 = XraydProcess(net["worker-a"], restart_cfg_a, WORKER)
                processes.append(worker_a2)
                worker_a2.wait_stdout(WORKER_UP, 240)
                timings["worker-a restarted"] = time.monotonic() - t0

                studies = sending.result(timeout=600)

                def finished() -> bool:
                    counts = status_counts(storage.sessions)
                    return (
                        counts.jobs_by_state == {"done": STUDIES}
                        and counts.studies_by_state == {"analysed": STUDIES}
                        and set(counts.deliveries_by_state) == {"sent"}
                    )

                done = _wait_until(finished, timeout=420)
                timings["all delivered"] = time.monotonic() - t0
                counts = status_counts(storage.sessions)
                assert done, (
                    f"not finished: {counts}\n--- listener\n{listener.tail()}\n--- worker-a\n"
                    f"{worker_a2.tail()}\n--- worker-b\n{worker_b2.tail()}"
                )

                # -- the survivors stop cleanly
                for process in (listener, worker_a2, worker_b2):
                    assert process.stop() == 0, process.tail()
                    text = "".join(process.lines)
                    assert "Traceback" not in text, text[-6000:]

                jobs = list_jobs(storage.sessions, limit=10 * STUDIES)
                deliveries = list_deliveries(storage.sessions, limit=100 * STUDIES)
                with storage.sessions() as session:
                    results = session.execute(
                        select(
                            Result.id,
                            Result.kind,
                            Result.sop_instance_uid,
                            Result.file_path,
                            Result.job_id,
                            Study.study_instance_uid,
                        ).join(Study, Study.id == Result.study_id)
                    ).all()
                stored = {
                    r.id: storage.store.get(r.file_path) for r in results if r.kind in SEND_KINDS
                }
                listed = (
                    s3.client()
                    .get_paginator("list_objects_v2")
                    .paginate(Bucket=s3.bucket, Prefix=f"{prefix}objects/")
                )
                in_s3 = sum(len(page.get("Contents", [])) for page in listed)
            held_by_orthanc = _orthanc_files(orthanc)
            timings["checked"] = time.monotonic() - t0

    jobs_by_id = {j.job_id: j for j in jobs}
    deliveries_by_id = {d.delivery_id: d for d in deliveries}
    report = {
        "timings_s": {k: round(v, 1) for k, v in sorted(timings.items(), key=lambda kv: kv[1])},
        "worker-a killed after": kill_a.line.strip(),
        "worker-a's log around it": _around(worker_a, kill_a),
        "worker-b killed after": kill_b.line.strip(),
        "worker-b's log around it": _around(worker_b, kill_b),
        "other pids killed": (others_a, others_b),
        "job_a at the end": (job_a, jobs_by_id[job_a].attempts, jobs_by_id[job_a].worker_id),
        "delivery_b attempts at the end": (delivery_b, deliveries_by_id[delivery_b].attempts),
        "objects": dict(Counter(r.kind for r in results if r.kind in SEND_KINDS)),
        "postgres connections (accepted, peak)": (forwarder.accepted, forwarder.peak),
        "known bugs met": known_bugs,
    }
    print(f"\nmulti-host report: {report}")
    assert forwarder.refused == 0 and forwarder.failed == 0, (forwarder.refused, forwarder.failed)

    # -- every study analysed once, by one job, into one set of objects
    assert counts.dead_letters == 0 and counts.instances == STUDIES * IMAGES, counts
    assert in_s3 == STUDIES * IMAGES  # every received image, in the object store
    assert sorted(j.study_instance_uid for j in jobs) == sorted(studies), "one job per study"
    assert all(j.state == "done" for j in jobs)
    by_id = jobs_by_id
    assert by_id[job_a].attempts >= attempt_a + 1, by_id[job_a]  # taken up again
    assert not (by_id[job_a].worker_id or "").startswith("worker-a:"), by_id[job_a]
    job_of_study = {j.study_instance_uid: j.job_id for j in jobs}
    kinds: dict[str, Counter[str]] = {uid: Counter() for uid in studies}
    for r in results:
        kinds[r.study_instance_uid][r.kind] += 1
        assert r.job_id == job_of_study[r.study_instance_uid], r
    for uid, counted in kinds.items():
        for kind, (low, high) in PER_STUDY.items():
            assert low <= counted[kind] <= high, (uid, counted)

    # -- every object to send has one delivery, sent; the one in flight was sent again
    sendable = {r.id: r for r in results if r.kind in SEND_KINDS}
    assert sorted(d.result_id for d in deliveries) == sorted(sendable), "one delivery per object"
    assert all(d.state == "sent" and d.destination_name == "pacs" for d in deliveries)
    lost = deliveries_by_id[delivery_b]
    assert lost.result_id == result_b and lost.attempts >= attempt_b + 1, lost

    # -- Orthanc holds exactly those objects, once each, with the stored data sets
    delivered = {r.sop_instance_uid: r for r in sendable.values()}
    assert set(held_by_orthanc) == set(delivered), (
        f"{len(set(held_by_orthanc) - set(delivered))} unexpected, "
        f"{len(set(delivered) - set(held_by_orthanc))} missing at the PACS"
    )
    twice = [uid for uid, files in held_by_orthanc.items() if len(files) != 1]
    assert not twice, f"{len(twice)} SOP Instance UIDs held more than once"
    differing = [
        r.id
        for uid, r in delivered.items()
        if _data_set(held_by_orthanc[uid][0]) != _data_set(stored[r.id])
    ]
    assert not differing, f"results whose PACS copy differs from the stored object: {differing}"
    for uid, r in delivered.items():
        ds = pydicom.dcmread(io.BytesIO(held_by_orthanc[uid][0]), stop_before_pixels=True)
        assert ds.StudyInstanceUID == r.study_instance_uid

    # -- no host kept an image or a result: the bytes went through S3 only. Every host runs
    # xrayd again after its crash, so no copy a crash left behind may stay there either.
    left: dict[str, list[Path]] = {}
    for name in ("listener", "worker-a", "worker-b"):
        data = tmp_path / "hosts" / name / "data"
        left[name] = [p for p in _files(data) if _is_dicom(p)]
    left_by_kills = {
        name: [p.name for p in paths]
        for name, paths in left.items()
        if paths and all(_left_by_the_kill(p, name, kill_a, kill_b) for p in paths)
    }
    unexplained = {
        name: [str(p) for p in paths]
        for name, paths in left.items()
        if paths and name not in left_by_kills
    }
    assert not unexplained, f"hosts keep DICOM files: {unexplained}"
    if left_by_kills:
        known_bugs.append(
            "a worker SIGKILLed during ByteStore.fetch (S3) leaves its private copy "
            "(spool/tmp/xrayd-*.fetch, an image or result with patient data) and no later xrayd "
            "start removes it (Spool.cleanup_tmp deletes only *.part, and only in the listener "
            f"role): {left_by_kills}"
        )
    if known_bugs:
        pytest.fail("xrayd bug(s), everything else held: " + " | ".join(known_bugs))
