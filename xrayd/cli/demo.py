"""`xrayd demo` / `make demo`: the whole mission end to end on the embedded defaults.

Starts a stand-in PACS on loopback, starts xrayd (SQLite + a local spool + the default model)
with that PACS as its destination, sends synthetic studies with and without drawn fractures as
a modality would, waits until the PACS holds xrayd's results (TID 1500 SR, burned-in Secondary
Captures, presentation states, key-object selection, Encapsulated PDF) and prints a table.

The images are synthetic phantoms from ``models.synthetic`` (no patient data ships with xrayd);
the default model was trained on real radiographs (FracAtlas), so its answers on phantoms say
nothing about its accuracy: the demo shows the plumbing, and says so. The model's measured
accuracy is in its model card.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydicom.uid import generate_uid

from config.settings import Settings
from dicom_node.errors import PeerUnreachableError
from dicom_node.local_pacs import LocalPacs, StoredObject
from dicom_node.scu import RemoteAE, echo, store_datasets
from models.synthetic import generate_case, to_dicom
from storage import audit as storage_audit
from storage.analyses import analyses_of, study_id_of
from storage.db import Sessions
from storage.opened import open_storage
from storage.status import status_counts
from xrayd.runtime.logging_setup import configure_logging
from xrayd.runtime.node import Node

MODALITY_AE = "DEMO-CR"
PACS_AE = "DEMO-PACS"
KINDS = {
    "1.2.840.10008.5.1.4.1.1.88.34": "SR",
    "1.2.840.10008.5.1.4.1.1.7": "SC",
    "1.2.840.10008.5.1.4.1.1.104.1": "PDF",
    "1.2.840.10008.5.1.4.1.1.11.1": "GSPS",
    "1.2.840.10008.5.1.4.1.1.88.59": "KOS",
}


def _settings(data_dir: Path, pacs_port: int) -> Settings:
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
            "model": {"runtime": "auto"},
            "delivery": {"retry_base_seconds": 1.0, "poll_seconds": 1.0},
            "destinations": [
                {
                    "name": "pacs",
                    "ae_title": PACS_AE,
                    "host": "127.0.0.1",
                    "port": pacs_port,
                    "send": ["sr", "sc", "pdf", "gsps", "kos"],
                }
            ],
            "logging": {"level": "WARNING"},
            # the demo's studies stay viewable, whatever the disk holds
            "retention": {"max_age_days": 0, "min_free_mb": 0},
        }
    )


class _Arrivals:
    """Objects arriving at the stand-in PACS, per study, with the time each study completed."""

    def __init__(self, expected: dict[str, int], flagged: Callable[[str], bool]) -> None:
        #: objects every study gets; one more (the KOS) for a study with a flagged image
        self.expected = expected
        self.flagged = flagged
        self._kos: dict[str, bool] = {}
        self.by_study: dict[str, list[StoredObject]] = {uid: [] for uid in expected}
        self.completed_at: dict[str, float] = {}
        self.all_done = threading.Event()
        self.lock = threading.Lock()

    def __call__(self, item: StoredObject) -> None:
        with self.lock:
            items = self.by_study.setdefault(item.study_instance_uid, [])
            items.append(item)
            uid = item.study_instance_uid
            if uid not in self.expected:
                return
            if uid not in self._kos:  # the analysis is committed before anything is sent
                self._kos[uid] = self.flagged(uid)
            if len(items) >= self.expected[uid] + self._kos[uid]:
                self.completed_at.setdefault(uid, time.monotonic())
            if len(self.completed_at) == len(self.expected):
                self.all_done.set()


def run_demo(data_dir: Path, images: int = 6, timeout: float = 240.0) -> int:
    """Run the demo in ``data_dir/run`` (recreated); returns the exit code."""
    configure_logging("WARNING")
    # The demo's own unknown caller is rejected on purpose: pynetdicom's requestor-side
    # error lines about it would only alarm the reader.
    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
    logging.getLogger("dicom_node.scp").setLevel(logging.ERROR)
    run_dir = data_dir / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    studies = max(2, images // 2)
    plan = [(generate_uid(), i % 2 == 0, 1 + i % 2) for i in range(studies)]
    # SR + Encapsulated PDF + a Secondary Capture and a presentation state per view (+ the KOS
    # of a study whose analysis flags an image; storage is opened below, before any arrival)
    storage_ref: list[Any] = []
    arrivals = _Arrivals(
        {uid: 2 + 2 * views for uid, _, views in plan},
        lambda uid: _flagged(storage_ref[0].sessions, uid),
    )
    pacs = LocalPacs(run_dir / "pacs", ae_title=PACS_AE, on_stored=arrivals)
    pacs_port = pacs.start()
    settings = _settings(run_dir, pacs_port)
    storage = open_storage(settings, create_if_empty=True, require_current=True)
    storage_ref.append(storage)
    node = Node(settings, storage, preload_model=True)
    node.start()
    peer = RemoteAE("XRAYD", "127.0.0.1", node.scp.port)
    print(
        f"1. stand-in PACS {PACS_AE} on 127.0.0.1:{pacs_port}; xrayd listening as XRAYD on "
        f"127.0.0.1:{peer.port}; data in {run_dir}"
    )
    try:
        print(f"2. C-ECHO from {MODALITY_AE}: status 0x{echo(peer, MODALITY_AE):04X}")
        try:
            echo(peer, "INTRUDER")
            print("   unexpected: an unknown caller was accepted")
            return 1
        except PeerUnreachableError:
            print("3. an unknown AE title (INTRUDER) was rejected and audited")
        sent_at: dict[str, float] = {}
        truth: dict[str, bool] = {}
        total = 0
        for n, (uid, fracture, views) in enumerate(plan):
            datasets = [
                to_dicom(
                    generate_case(seed=4000 + 10 * n + v, size=512, fracture=fracture),
                    modality="DX",
                    study_uid=uid,
                    patient_id=f"DEMO-{n + 1:03d}",
                    instance_number=v + 1,
                )
                for v in range(views)
            ]
            statuses = store_datasets(peer, MODALITY_AE, datasets)
            sent_at[uid] = time.monotonic()
            truth[uid] = fracture
            total += len(datasets)
            if any(s != 0 for s in statuses):
                print(f"   a C-STORE failed: {[f'0x{s:04X}' for s in statuses]}")
                return 1
        print(
            f"4. sent {len(plan)} synthetic studies ({total} DX images), each acknowledged "
            "(0x0000) once durably stored"
        )
        again = store_datasets(peer, MODALITY_AE, datasets[:1])
        print(f"5. sent one again: status 0x{again[0]:04X}, stored once (duplicate counted)")
        ready = node.model.get()
        trained_on = ready.model.metadata.training_data.get("dataset", "unknown data")
        print(
            f"6. model {ready.model.info.name} {ready.model.info.version}, trained on "
            f"{trained_on}; runtime {ready.runtime}; research software, NOT for clinical use"
        )
        finished = arrivals.all_done.wait(timeout)
        print("7. results at the PACS (the images are drawn phantoms, not radiographs: the AI")
        print("   decisions below show the pipeline working, not the model's accuracy)")
        print("   study  phantom    AI decision    p      objects at PACS                 seconds*")
        for n, (uid, _, _) in enumerate(plan):
            items = arrivals.by_study.get(uid, [])
            kinds: dict[str, int] = {}
            for item in items:
                kind = KINDS.get(item.sop_class_uid, "?")
                kinds[kind] = kinds.get(kind, 0) + 1
            decision, probability = _decision(storage.sessions, uid)
            took = arrivals.completed_at.get(uid)
            seconds = f"{took - sent_at[uid]:.1f}" if took else "-"
            objects = " ".join(f"{k}x{v}" for k, v in sorted(kinds.items())) or "none"
            print(
                f"   {n + 1:<6} {'drawn' if truth[uid] else 'none':<10} "
                f"{decision:<14} {probability:<6} {objects:<31} {seconds}"
            )
        print(
            "   * from the last image's acknowledgement to all results at the PACS (includes "
            f"the {settings.study.quiet_seconds:g} s quiet period; the first study also waits "
            "for the model to load)"
        )
        counts = status_counts(storage.sessions)
        audit = storage_audit.list_audit(storage.sessions, limit=10)
        rejected = [a for a in audit if a.action == "association.rejected"]
        print(
            f"8. jobs: {dict(sorted(counts.jobs_by_state.items()))}; instances indexed: "
            f"{counts.instances}; dead letters: {counts.dead_letters}; "
            f"{len(rejected)} rejected association(s) audited"
        )
        pdfs = sorted(node.storage.spool.root.glob("results/*/*/report-*.pdf"))
        print(f"9. PDF reports kept for referrers ({len(pdfs)}), e.g. {pdfs[0] if pdfs else '-'}")
        print(f"   objects received by the PACS are in {pacs.directory}")
        if not finished or counts.instances != total:
            print("demo FAILED: not every study's results reached the PACS in time")
            return 1
        print("demo OK (AI results, not a diagnosis)")
        return 0
    finally:
        node.stop(timeout=10)
        pacs.stop()


def _flagged(sessions: Sessions, study_uid: str) -> bool:
    """Whether the study's latest analysis flags an image (present or indeterminate)."""
    study_id = study_id_of(sessions, study_uid)
    rows = analyses_of(sessions, study_id) if study_id is not None else []
    images = rows[-1].detail.get("images", []) if rows else []
    return any(i.get("decision") in ("present", "indeterminate") for i in images)


def _decision(sessions: Sessions, study_uid: str) -> tuple[str, str]:
    """The stored study decision and probability, as text."""
    study_id = study_id_of(sessions, study_uid)
    if study_id is None:
        return "not received", "-"
    rows = analyses_of(sessions, study_id)
    if not rows or rows[-1].detail.get("decision") is None:
        return "not analysed", "-"
    detail = rows[-1].detail
    return str(detail["decision"]), f"{float(detail['fracture_probability']):.3f}"
