"""``xrayd retrain --now`` killed (SIGKILL) right after it published its candidate bundle:
no model is half-registered, the active model is untouched, and the next run recovers (the
interrupted run is marked failed by a retrain worker's sweep once its job's lease is over, the
next run can start, an unregistered bundle is removed)."""

from __future__ import annotations

import hashlib
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest

from config.loader import load_settings
from storage.model_versions import active_version, list_model_versions
from storage.queue import LEASE_EXPIRED_ERROR
from storage.schema import Job
from storage.training import list_runs, request_run, requeue_expired, start_run
from xrayd.runtime.node import open_storage
from xrayd.workers.retrain import RetrainService

from serve_process import XRAYD, clean_env, write_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

RETRAIN = (
    "[retrain]\nenabled = false\nmin_new_reviews = 0\nbase_cases = 16\nvalidation_cases = 40\n"
    'epochs = 1\ndevice = "cpu"\nauto_promote = false\n'
)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_run_killed_after_publishing_leaves_no_half_registered_model(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, extra=RETRAIN)
    proc = subprocess.Popen(
        [XRAYD, "retrain", "--now", "--no-progress", "--config", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )
    seen: list[str] = []
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            seen.append(line)
            # logged once the bundle is published under its final name, before registration
            if "retrained " in line and " gate " in line:
                proc.kill()
                break
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -9, "".join(seen)

    settings = load_settings(cfg)
    storage = open_storage(settings, create_if_empty=False, require_current=True)
    sessions = storage.sessions
    try:
        service = RetrainService(settings, sessions, storage.spool)
        versions = list_model_versions(sessions)
        original = active_version(sessions)
        assert original is not None and original.run_id is None  # the configured demo model
        # Whatever the kill interrupted, each registered version is whole: its weights are
        # on disk and hash to the recorded sha256.
        for v in versions:
            weights = Path(v.path) / "models" / "model.pt"
            assert weights.is_file(), v
            assert _sha256(weights) == v.sha256, v
        assert [v.version for v in versions if v.state == "active"] == [original.version]

        (run,) = list_runs(sessions)
        assert run.state == "running" and run.trigger == "manual"  # no process to finish it
        with sessions() as session:
            job = session.get(Job, run.job_id)
            assert job is not None and job.queue == "retrain" and job.state == "running"
            assert job.worker_id == run.worker and job.lease_expires_at is not None
            lease_end = job.lease_expires_at
        candidate_dir = service.models_dir / f"{original.version}+r{run.id}"
        assert candidate_dir.is_dir()  # published before the kill
        registered = {Path(v.path).resolve() for v in versions}

        # No other run starts while the killed one holds the lock...
        nxt = request_run(sessions, slot="manual:next", trigger="manual", now=lease_end)
        assert nxt is not None
        assert start_run(sessions, "test", lease_end, settings.retrain.lease_seconds) is None
        # ... until a retrain worker's sweep finds its lease over (a test clock, not a sleep):
        # the run had one attempt, so it fails; then the next run starts, and removes a
        # bundle that nobody registered.
        later = lease_end + timedelta(seconds=1)
        assert requeue_expired(sessions, later) == 1
        failed = {r.id: r for r in list_runs(sessions)}[run.id]
        assert failed.state == "failed" and failed.error == LEASE_EXPIRED_ERROR
        started = start_run(sessions, "test", later, settings.retrain.lease_seconds)
        assert started is not None and started.run.id == nxt.id
        removed = service.clean_unregistered()
        if candidate_dir.resolve() in registered:
            assert candidate_dir.is_dir() and candidate_dir not in removed
        else:
            assert candidate_dir in removed and not candidate_dir.exists()
        left = {p.resolve() for p in service.models_dir.iterdir()}
        assert left <= registered
    finally:
        storage.engine.dispose()
