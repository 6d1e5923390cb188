"""Seconds from the last C-STORE acknowledgement of a study to all its results at the PACS.

Runs xrayd in this process on the embedded defaults (SQLite, local spool, the default model with
``[model] runtime = "auto"``) and a stand-in PACS (a pynetdicom storage SCP) in a *separate
process*, so the PACS does not share xrayd's interpreter. A modality (pynetdicom, this process)
sends 3-image synthetic studies one association each; the time runs from the moment the
association that carried the study's last image is released to the moment the PACS has stored
the SR, the three Secondary Captures and the Encapsulated PDF (CLOCK_MONOTONIC, which both
processes share). Two completion modes are measured:

* ``release``: ``release_ends_wait = true`` (the default): the sender's release completes the
  study, no quiet period is waited;
* ``quiet``: ``release_ends_wait = false``, ``quiet_seconds = Q``; Q is subtracted.

Usage: ``.venv/bin/python bench/e2e.py [--studies 20] [--size 1024] [--quiet 1.0]``

Throughput mode (``--throughput``, see ``bench/throughput.py``): split ``xrayd listener`` and
``xrayd worker`` processes on a fresh PostgreSQL database (SQLite if unreachable), studies sent
at a steady rate; sustained studies/hour and turnaround p50/p95 per worker count:
``.venv/bin/python bench/e2e.py --throughput [--rate 600] [--minutes 5] [--workers 1,2]
[--size 1024] [--database-url URL]``
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import statistics
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

from pydicom.uid import generate_uid

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from config.settings import Settings  # noqa: E402
from dicom_node.local_pacs import LocalPacs, StoredObject  # noqa: E402
from dicom_node.scu import RemoteAE, store_datasets  # noqa: E402
from models.synthetic import generate_case, to_dicom  # noqa: E402
from xrayd.runtime.logging_setup import configure_logging  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import throughput  # noqa: E402

OBJECTS_PER_STUDY = 1 + 3 + 1  # SR, 3 SC, Encapsulated PDF


def _pacs(directory: str, conn: Connection) -> None:
    """The PACS process: reports its port, then (study UID, monotonic time) per object."""

    def stored(item: StoredObject) -> None:
        conn.send((item.study_instance_uid, time.monotonic()))

    pacs = LocalPacs(Path(directory), ae_title="BENCH-PACS", on_stored=stored)
    conn.send(pacs.start())
    conn.recv()  # any message: stop
    pacs.stop()


def _settings(data_dir: Path, pacs_port: int, mode: str, quiet: float) -> Settings:
    return Settings.model_validate(
        {
            "node": {
                "ae_title": "XRAYD",
                "host": "127.0.0.1",
                "port": 0,
                "callers": [{"ae_title": "BENCH-MOD"}],
                "min_free_mb": 0,
            },
            "storage": {"data_dir": str(data_dir)},
            "study": {
                "quiet_seconds": quiet,
                "max_wait_seconds": 600,
                "release_ends_wait": mode == "release",
            },
            "jobs": {"poll_seconds": 0.05},
            "model": {"runtime": "auto"},
            "destinations": [
                {
                    "name": "pacs",
                    "ae_title": "BENCH-PACS",
                    "host": "127.0.0.1",
                    "port": pacs_port,
                    "send": ["sr", "sc", "pdf"],
                }
            ],
            "logging": {"level": "WARNING"},
        }
    )


def _study(n: int, size: int) -> tuple[str, list[object]]:
    uid = str(generate_uid(entropy_srcs=["bench", str(n)]))
    datasets: list[object] = [
        to_dicom(
            generate_case(70_000 + 3 * n + v, size, fracture=n % 2 == 0),
            study_uid=uid,
            patient_id=f"BENCH{n:04d}",
            instance_number=v + 1,
        )
        for v in range(3)
    ]
    return uid, datasets


def run(mode: str, studies: int, size: int, quiet: float, work: Path) -> list[float]:
    from xrayd.runtime.node import Node, open_storage  # torch: not imported by the throughput mode

    parent, child = multiprocessing.Pipe()
    process = multiprocessing.get_context("spawn").Process(
        target=_pacs, args=(str(work / f"pacs-{mode}"), child), daemon=True
    )
    process.start()
    port = int(parent.recv())
    settings = _settings(work / f"xrayd-{mode}", port, mode, quiet)
    node = Node(
        settings,
        open_storage(settings, create_if_empty=True, require_current=True),
        preload_model=True,
    )
    node.start()
    node.model.get()
    peer = RemoteAE("XRAYD", "127.0.0.1", node.scp.port)
    prepared = [_study(n, size) for n in range(studies + 1)]  # study 0 warms up
    arrivals: dict[str, list[float]] = {}
    latencies: list[float] = []
    try:
        for n, (uid, datasets) in enumerate(prepared):
            store_datasets(peer, "BENCH-MOD", datasets)  # type: ignore[arg-type]
            acked = time.monotonic()
            while len(arrivals.get(uid, [])) < OBJECTS_PER_STUDY:
                study, at = parent.recv()
                arrivals.setdefault(study, []).append(at)
            done = max(arrivals[uid])
            if n > 0:
                latencies.append(done - acked - (quiet if mode == "quiet" else 0.0))
    finally:
        node.stop(timeout=10)
        parent.send("stop")
        process.join(timeout=20)
    return latencies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--studies", type=int, default=20)
    parser.add_argument("--size", type=int, default=1024, help="image side in pixels")
    parser.add_argument("--quiet", type=float, default=1.0)
    parser.add_argument("--modes", default="release,quiet")
    parser.add_argument(
        "--throughput",
        action="store_true",
        help="sustained throughput of listener + worker processes at a steady rate",
    )
    throughput.add_arguments(parser)
    args = parser.parse_args()
    if args.throughput:
        return throughput.main(args)
    configure_logging("WARNING")
    work = Path(tempfile.mkdtemp(prefix="xrayd-bench-e2e-"))
    print(
        f"{args.studies} studies of 3 synthetic {args.size}x{args.size} DX images each "
        f"(+1 warm-up), results: SR + 3 SC + PDF; default model, runtime auto"
    )
    try:
        for mode in args.modes.split(","):
            lat = run(mode, args.studies, args.size, args.quiet, work)
            extra = f", quiet_seconds {args.quiet:g} subtracted" if mode == "quiet" else ""
            print(
                f"{mode:>8}: median {statistics.median(lat):.2f} s, min {min(lat):.2f}, "
                f"max {max(lat):.2f} (n={len(lat)}{extra})"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
