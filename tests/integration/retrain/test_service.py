"""The retraining service on a real database: two schedulers firing every second queue each
slot once, and the retrain workers of two processes run one run at a time; the candidate passes
the gate, is registered and promoted; the model holder switches to it without a restart;
rollback restores the earlier model's outputs exactly; a crash's unregistered bundle is
removed."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
from sqlalchemy import select

from models.bundle import phantom_bundle_path
from models.preprocess import prepare
from models.synthetic import generate_case, to_dicom
from retrain.scheduler import RetrainScheduler
from storage import queue
from storage.audit import list_audit
from storage.model_versions import list_model_versions, rollback
from storage.schema import Job
from storage.training import CANCELLED_ERROR, RunRow, list_runs, validation_cases
from xrayd.runtime.model_holder import ModelHolder
from xrayd.runtime.node import open_storage
from xrayd.runtime.served_model import active_bundle_reader, register_configured_model
from xrayd.workers.base import Wakeup
from xrayd.workers.retrain import RetrainService, RetrainWorker

from helpers import make_settings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


class RecordingWorker(RetrainWorker):
    """The real retrain worker loop; records each outcome and signals the first that
    ``until`` accepts."""

    def __init__(
        self,
        *args: Any,
        until: Callable[[RunRow], bool],
        done: threading.Event | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.until = until
        self.results: list[RunRow | None] = []
        self.done = done or threading.Event()

    def run_once(self) -> RunRow | Literal[False] | None:
        result = super().run_once()
        if result is not False:
            self.results.append(result)
            if result is not None and self.until(result):
                self.done.set()
        return result


def _probabilities(holder: ModelHolder) -> tuple[str, Any]:
    ready = holder.get()
    images = [
        prepare(
            to_dicom(generate_case(900 + i, 384, fracture=i % 2 == 0)),
            ready.model.metadata.preprocess,
        )
        for i in range(4)
    ]
    predictions = ready.classifier.predict(images, [None] * 4)
    probs = np.array([p.fracture_probability for p in predictions])
    heat = np.stack([np.asarray(p.heatmap) for p in predictions])
    return ready.model.info.version, (probs, heat)


def test_scheduled_retraining_promotes_and_rollback_restores(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path / "data",
        retrain={
            "schedule": "* * * * * *",
            "min_new_reviews": 0,
            "auto_promote": True,
            "base_cases": 48,
            "validation_cases": 80,
            "epochs": 1,
            "device": "cpu",
            "gate": {"auc_margin": 0.05, "min_sensitivity": 0.8, "min_specificity": 0.5},
        },
    )
    storage = open_storage(settings, create_if_empty=True, require_current=True)
    sessions = storage.sessions
    original = register_configured_model(settings, sessions)
    holder = ModelHolder(settings.model, active=active_bundle_reader(sessions), check_seconds=0)
    before_version, before = _probabilities(holder)
    assert before_version == original.version

    # Two processes, each with a scheduler and a retrain worker.
    stop = threading.Event()
    done = threading.Event()
    lock = threading.Lock()
    outcomes: list[tuple[str, int | None]] = []

    def promoted() -> None:
        # runs in the worker's thread before the outcome is recorded: no request after this,
        # and the run queued meanwhile (firings coalesce into one) is cancelled, so no other
        # run starts when this one ends
        holder.refresh()
        with lock:
            stop.set()
            with sessions() as session:
                waiting = session.scalars(
                    select(Job.id).where(Job.queue == "retrain", Job.state == "queued")
                ).all()
            for job_id in waiting:
                queue.cancel(sessions, job_id, datetime.now(UTC))

    def process(name: str) -> tuple[RetrainService, RecordingWorker]:
        wakeup = Wakeup()
        service = RetrainService(
            settings,
            sessions,
            storage.spool,
            on_promoted=promoted,
            on_requested=wakeup.set,
            worker_id=name,
        )
        worker = RecordingWorker(
            service,
            stop,
            wakeup,
            poll_seconds=3600,
            until=lambda r: r.state == "succeeded",
            done=done,
        )
        return service, worker

    def fire(service: RetrainService) -> Callable[[str], None]:
        def request(slot: str) -> None:
            with lock:
                if stop.is_set():
                    return
                run = service.request(slot, "scheduled")
                outcomes.append((slot, None if run is None else run.id))

        return request

    processes = [process("host-a"), process("host-b")]
    workers = [w for _, w in processes]
    schedulers = [RetrainScheduler(settings.retrain.schedule, fire(s)) for s, _ in processes]
    for w in workers:
        w.start()
    for s in schedulers:
        s.start()
    try:
        assert done.wait(600), outcomes
    finally:
        for s in schedulers:
            s.stop(wait=True)
        for w in workers:
            w.shutdown(timeout=60)

    runs = list_runs(sessions)
    finished = [r for r in runs if r.state == "succeeded"]
    assert len(finished) == 1, [(r.slot, r.state, r.error) for r in runs]
    run = finished[0]
    # Every other run requested was cancelled before it started: one run trained, by one worker.
    assert all(r.state == "failed" and r.error == CANCELLED_ERROR for r in runs if r is not run)
    assert [r.id for w in workers for r in w.results if r is not None] == [run.id]
    # Each slot was queued once, however many schedulers fired for it.
    same_slot = [run_id for slot, run_id in outcomes if slot == run.slot]
    assert same_slot.count(run.id) == 1
    assert all(run_id is None for run_id in same_slot if run_id != run.id)
    assert run.verdict == "passed" and run.report_path
    assert (Path(run.report_path) / "report.json").is_file()
    assert len(validation_cases(sessions)) == 80  # locked at the first run

    versions = {v.version: v for v in list_model_versions(sessions)}
    candidate = versions[run.candidate_version or ""]
    assert candidate.state == "active" and candidate.parent_version == original.version
    assert candidate.gate is not None and candidate.gate["verdict"] == "passed"
    assert candidate.manifest_sha256 and candidate.run_id == run.id
    assert (Path(candidate.path) / "configs" / "manifest.json").is_file()
    assert versions[original.version].state == "retired"

    # The holder serves the promoted model at its next use, without a restart.
    after_version, after = _probabilities(holder)
    assert after_version == candidate.version
    assert not np.array_equal(after[0], before[0])

    # Rollback: one command, and the earlier model's outputs come back bit for bit.
    assert rollback(sessions, actor="admin").version == original.version
    holder.refresh()
    again_version, again = _probabilities(holder)
    assert again_version == original.version
    assert np.array_equal(again[0], before[0]) and np.array_equal(again[1], before[1])
    actions = {e.action for e in list_audit(sessions)}
    assert {
        "model.registered",
        "model.promoted",
        "model.rolled_back",
        "retrain.succeeded",
    } <= actions

    # A crash after publishing but before registering leaves a bundle nobody names: removed.
    service = processes[0][0]
    orphan = service.models_dir / "1.0.0+r999"
    shutil.copytree(phantom_bundle_path(), orphan)
    assert orphan in service.clean_unregistered()
    assert not orphan.exists() and Path(candidate.path).exists()
    storage.engine.dispose()


def _review_wrong_analyses(sessions: Any, client: Any, token: str, examples: list[Any]) -> None:
    """Each reviewed image as a study the node stored and analysed, with a deliberate AI
    mistake (the opposite fracture decision), then the radiologist's correction sent through
    the REST API as the review form does: ``POST /api/v1/overrides``, disagree, true label."""
    from datetime import UTC, datetime

    from pydicom.uid import generate_uid

    from storage.schema import Instance, Result, Series, Study

    when = datetime.now(UTC)
    for e in examples:
        wrong = "absent" if e.label["fracture"] == "present" else "present"
        with sessions.begin() as s:
            study = Study(
                study_instance_uid=str(generate_uid()),
                state="analysed",
                first_received_at=when,
                last_received_at=when,
                instance_count=1,
            )
            s.add(study)
            s.flush()
            series = Series(
                study_id=study.id, series_instance_uid=str(generate_uid()), modality="DX"
            )
            s.add(series)
            s.flush()
            s.add(
                Instance(
                    series_id=series.id,
                    study_id=study.id,
                    sop_instance_uid=e.sop_instance_uid,
                    sop_class_uid="1.2.840.10008.5.1.4.1.1.1.1",
                    transfer_syntax_uid="1.2.840.10008.1.2.1",
                    spool_path=e.spool_path,
                    size_bytes=1,
                    sha256="0" * 64,
                    received_at=when,
                    calling_ae_title="MODALITY",
                )
            )
            s.add(
                Result(
                    study_id=study.id,
                    kind="analysis",
                    detail={
                        "model": {"name": "xrayd-phantom", "version": "1.0.0"},
                        "decision": wrong,
                        "fracture_probability": 0.9 if wrong == "present" else 0.1,
                        "count": "1" if wrong == "present" else "0",
                        "hardware": not e.label["hardware"],
                        "images": [
                            {
                                "sop_instance_uid": e.sop_instance_uid,
                                "decision": wrong,
                                "body_part": e.label["body_part"],
                            }
                        ],
                    },
                )
            )
            s.flush()
            study_id = study.id
        answer = client.post(
            "/api/v1/overrides",
            headers={"Authorization": f"Bearer {token}"},
            json={"study_id": study_id, "agree": False, "label": e.label},
        )
        assert answer.status_code == 201, answer.text
        assert answer.json()["ai_label"]["decision"] == wrong


def test_a_scheduled_run_trains_on_the_corrected_reviews(tmp_path: Path) -> None:
    import json

    from review_spool import write_reviewed_spool

    settings = make_settings(
        tmp_path / "data",
        retrain={
            "min_new_reviews": 12,
            "schedule": "* * * * * *",
            "auto_promote": True,
            "base_cases": 16,
            "validation_cases": 60,
            "epochs": 1,
            "device": "cpu",
            "gate": {"auc_margin": 0.05, "min_sensitivity": 0.8, "min_specificity": 0.5},
        },
    )
    storage = open_storage(settings, create_if_empty=True, require_current=True)
    sessions = storage.sessions
    wakeup = Wakeup()
    service = RetrainService(settings, sessions, storage.spool, on_requested=wakeup.set)
    stop = threading.Event()
    worker = RecordingWorker(
        service, stop, wakeup, poll_seconds=3600, until=lambda r: r.state != "skipped"
    )
    examples = write_reviewed_spool(storage.spool.root, patients=6, studies_per_patient=2)
    from fastapi.testclient import TestClient

    from storage.users import add_user, create_api_token
    from xrayd.web.app import create_app
    from xrayd.web.context import WebContext

    app = create_app(WebContext(settings, sessions, storage.spool))
    client = TestClient(app, base_url="http://localhost")  # an allowed Host
    add_user(sessions, "dr_bone", "radiologist", "a long enough password")
    reader = create_api_token(sessions, "dr_bone", "reviews", actor="test")
    _review_wrong_analyses(sessions, client, reader, examples[:6])
    assert service.request("scheduled:2026-11-24T02:00:00Z", "scheduled") is not None
    skipped = worker.run_once()  # one turn of the worker's loop, in this thread
    assert skipped and skipped.state == "skipped" and skipped.new_reviews == 6
    _review_wrong_analyses(sessions, client, reader, examples[6:])
    # Now the schedule fires (every second here), queues a run, and the worker trains it.
    worker.start()
    scheduler = RetrainScheduler(
        settings.retrain.schedule, lambda slot: service.request(slot, "scheduled")
    )
    scheduler.start()
    try:
        assert worker.done.wait(600)
    finally:
        scheduler.stop(wait=True)
        worker.shutdown(timeout=60)
    (run,) = [r for r in worker.results if r is not None and r.state != "skipped"]
    assert run.state == "succeeded", run.error
    assert run.new_reviews == 12 and run.verdict == "passed"
    version = next(v for v in list_model_versions(sessions) if v.version == run.candidate_version)
    assert version.state == "active"  # passed the gate; auto_promote is on
    manifest = json.loads((Path(version.path) / "configs" / "manifest.json").read_text())
    reviewed = {e["key"]: e for e in manifest["training"] if e["source"] == "review"}
    assert set(reviewed) == {e.sop_instance_uid for e in examples}
    by_uid = {e.sop_instance_uid: e.label for e in examples}
    # The radiologist's corrected label is what was trained on (the AI said the opposite).
    assert all(entry["label"]["fracture"] == by_uid[k]["fracture"] for k, entry in reviewed.items())
    # The same firing seen again (another scheduler, a restart) queues nothing.
    assert service.request(run.slot, "scheduled") is None

    # The run's report is visible in the admin UI.
    add_user(sessions, "boss", "admin", "a long enough password")
    headers = {"Authorization": f"Bearer {create_api_token(sessions, 'boss', 't', actor='t')}"}
    page = client.get("/admin/models", headers=headers)
    assert page.status_code == 200 and f"/admin/runs/{run.id}/report/roc.png" in page.text
    png = client.get(f"/admin/runs/{run.id}/report/roc.png", headers=headers)
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    report = client.get(f"/admin/runs/{run.id}/report/report.json", headers=headers).json()
    assert report
    assert (
        client.get(f"/admin/runs/{run.id}/report/..%2Fconfigs", headers=headers).status_code == 404
    )
    storage.engine.dispose()
