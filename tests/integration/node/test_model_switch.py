"""A promotion while a study is being analysed: that study finishes on the model it started
with (its analysis row and its SR name that model), the next study gets the promoted one."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Any

import pydicom
import pytest
import torch
from pydicom.uid import generate_uid

from models.bundle import load_bundle, phantom_bundle_path, save_bundle
from models.loading import ReadyClassifier
from models.synthetic import generate_case, to_dicom
from storage import jobs
from storage.analyses import analyses_of, objects_of
from storage.model_versions import active_version, promote, register_version
from xrayd.runtime.node import Node, open_storage, seed_registry
from xrayd.runtime.served_model import register_configured_model
from xrayd.workers.analysis import CompletionTimer, Worker
from xrayd.workers.base import Wakeup

from helpers import make_settings
from node_helpers import store_and_wait_for_release

NEW = "1.0.0+t1"


@pytest.fixture
def node(database_url: str, tmp_path: Path) -> Any:
    settings = make_settings(tmp_path / "data", database_url, study={"quiet_seconds": 0})
    storage = open_storage(settings, create_if_empty=True, require_current=True)
    n = Node(settings, storage)
    seed_registry(settings, storage.sessions)
    n.scp.start()
    yield n
    n.scp.stop(timeout=5)
    storage.engine.dispose()


def _candidate(directory: Path) -> Any:
    """The demo model with its fracture head shifted: other weights, other outputs."""
    demo = load_bundle(phantom_bundle_path())
    with torch.no_grad():
        demo.network.fracture_head.bias.add_(0.75)
    meta = dataclasses.replace(demo.metadata, version=NEW)
    return save_bundle(directory, demo.network, meta)


def _send_study(node: Any, seed: int) -> str:
    study_uid = str(generate_uid())
    ds = to_dicom(generate_case(seed, 256, fracture=True), study_uid=study_uid, patient_id="S")
    # the release queues the study: wait until the node has handled it, not only sent it
    assert store_and_wait_for_release(node, [ds]) == [0]
    return study_uid


def test_a_study_in_progress_finishes_on_its_model(node: Any, tmp_path: Path) -> None:
    sessions = node.storage.sessions
    original = register_configured_model(node.settings, sessions)
    info = _candidate(tmp_path / "models" / NEW)
    with sessions.begin() as session:
        register_version(
            session,
            name=info.name,
            version=NEW,
            sha256=info.sha256,
            path=str((tmp_path / "models" / NEW).resolve()),
            state="candidate",
            actor="retrain",
            gate={"verdict": "passed"},
        )
    for seed in (41, 42):
        _send_study(node, seed)
    stop = threading.Event()
    timer = CompletionTimer(
        sessions, node.settings.study, node.settings.jobs, node.sink.clock, stop, Wakeup()
    )
    worker = Worker(0, sessions, node.analyser, node.settings.jobs, node.sink.clock, stop, Wakeup())
    timer.tick()

    # The promotion lands right after the first job took its model, before it predicts.
    take_model = node.analyser.model
    promoted: list[str] = []

    def model_then_promote() -> ReadyClassifier:
        ready: ReadyClassifier = take_model()
        if not promoted:
            promote(sessions, NEW, actor="admin")
            node.model.refresh()
            promoted.append(NEW)
        return ready

    node.analyser.model = model_then_promote
    assert worker.run_once() and worker.run_once()
    assert promoted and active_version(sessions).version == NEW  # type: ignore[union-attr]

    done = sorted(jobs.list_jobs(sessions, "done"), key=lambda j: j.job_id)
    assert len(done) == 2
    used = []
    for job in done:
        [analysis] = analyses_of(sessions, job.study_id)
        model = analysis.detail["model"]
        [sr] = [o for o in objects_of(sessions, job.study_id) if o.kind == "sr"]
        sr_ds = pydicom.dcmread(node.storage.spool.absolute(sr.file_path or ""))
        assert f"{model['name']} {model['version']}" in list(sr_ds.SoftwareVersions)
        used.append((model["version"], model["sha256"]))
    assert used == [(original.version, original.sha256), (NEW, info.sha256)]
