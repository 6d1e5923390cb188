"""`xrayd demo` / `make demo`: the main job end to end on the embedded defaults.

Starts a node on loopback (SQLite + a local spool), sends synthetic radiographs to it as a
modality would, and prints what happened. The images are synthetic phantoms from
``models.synthetic``: no patient data, and nothing here says anything about clinical accuracy.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from pathlib import Path

from pydicom.uid import generate_uid

from config.settings import Settings
from dicom_node.errors import PeerUnreachableError
from dicom_node.scu import RemoteAE, echo, store_datasets
from models.synthetic import generate_case, to_dicom
from storage import registry
from storage.status import status_counts
from xrayd.app import Node, open_storage
from xrayd.logging_setup import configure_logging

MODALITY_AE = "DEMO-CR"


def _settings(data_dir: Path) -> Settings:
    return Settings.model_validate(
        {
            "node": {
                "ae_title": "XRAYD",
                "host": "127.0.0.1",
                "port": 0,
                "callers": [{"ae_title": MODALITY_AE, "host": "127.0.0.1"}],
                "min_free_mb": 64,
            },
            "storage": {"data_dir": str(data_dir)},
            "study": {"quiet_seconds": 1.0, "max_wait_seconds": 30.0},
            "jobs": {"poll_seconds": 0.2},
            "logging": {"level": "WARNING"},
        }
    )


def run_demo(data_dir: Path, images: int = 6, timeout: float = 60.0) -> int:
    """Run the demo in ``data_dir/run`` (recreated); returns the exit code."""
    configure_logging("WARNING")
    # The demo's own unknown caller is rejected on purpose: pynetdicom's requestor-side
    # error lines about it would only alarm the reader.
    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
    run_dir = data_dir / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    settings = _settings(run_dir)
    storage = open_storage(settings, create_if_empty=True, require_current=True)
    node = Node(settings, storage)
    node.start()
    peer = RemoteAE("XRAYD", "127.0.0.1", node.scp.port)
    print(f"1. xrayd listening as XRAYD on 127.0.0.1:{peer.port}; data in {run_dir}")
    try:
        print(f"2. C-ECHO from {MODALITY_AE}: status 0x{echo(peer, MODALITY_AE):04X}")
        try:
            echo(peer, "INTRUDER")
            print("   unexpected: an unknown caller was accepted")
            return 1
        except PeerUnreachableError:
            print("3. an unknown AE title (INTRUDER) was rejected and audited")
        study_uids = [generate_uid(), generate_uid()]
        datasets = [
            to_dicom(generate_case(seed=1000 + i, size=512), modality="DX",
                     study_uid=study_uids[i % 2])
            for i in range(images)
        ]
        statuses = store_datasets(peer, MODALITY_AE, datasets)
        ok = sum(1 for s in statuses if s == 0)
        print(f"4. sent {len(datasets)} synthetic DX images: {ok} acknowledged (0x0000)")
        again = store_datasets(peer, MODALITY_AE, datasets[:1])
        print(f"5. sent one again: status 0x{again[0]:04X}, stored once (duplicate counted)")
        done = threading.Event()
        deadline = time.monotonic() + timeout
        while not done.is_set() and time.monotonic() < deadline:
            counts = status_counts(storage.sessions)
            pending = sum(
                n for state, n in counts.jobs_by_state.items() if state in ("queued", "running")
            )
            receiving = counts.studies_by_state.get("receiving", 0)
            if counts.jobs_by_state and not pending and not receiving:
                done.set()
            else:
                done.wait(0.2)
        counts = status_counts(storage.sessions)
        print(f"6. studies: {dict(sorted(counts.studies_by_state.items()))}")
        print(f"   jobs:    {dict(sorted(counts.jobs_by_state.items()))}")
        print(f"   instances indexed: {counts.instances}; dead letters: {counts.dead_letters}")
        audit = registry.list_audit(storage.sessions, limit=10)
        rejected = [a for a in audit if a.action == "association.rejected"]
        print(f"   audit: {len(rejected)} rejected association(s) recorded")
        print(
            "7. analysis step: PLACEHOLDER (records 'study seen'); the classifier and the "
            "results sent to a PACS come with the next issues."
        )
        root = node.storage.spool.root
        files = sorted(root.rglob("*.dcm"))
        example = files[0].relative_to(root) if files else "-"
        print(f"   spool {root} holds {len(files)} file(s), e.g. {example}")
        if not done.is_set() or counts.instances != images:
            print("demo FAILED: not every study was processed in time")
            return 1
        print("demo OK")
        return 0
    finally:
        node.stop(timeout=5)
