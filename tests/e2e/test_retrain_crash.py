"""``xrayd retrain --now`` killed (SIGKILL) right after it published its candidate bundle:
no model is half-registered, the active model is untouched, and the next run recovers (the
interrupted run is marked failed once its lease is over, an unregistered bundle is removed)."""

from __future__ import annotations

import hashlib
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest

from config.loader import load_settings
from storage.models_registry import active_version, list_model_versions
from storage.training import claim_run, list_runs
from xrayd.app import open_storage
from xrayd.retraining import RetrainService

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
        assert run.state == "running"  # no process left to finish it
        candidate_dir = service.models_dir / f"{original.version}+r{run.id}"
        assert candidate_dir.is_dir()  # published before the kill
        registered = {Path(v.path).resolve() for v in versions}

        # The next run: its claim marks the interrupted run failed once the lease is over
        # (a test clock, not a sleep), and it removes a bundle that nobody registered.
        later = run.heartbeat_at + timedelta(seconds=settings.retrain.lease_seconds + 1)
        lease = timedelta(seconds=settings.retrain.lease_seconds)
        nxt = claim_run(
            sessions, slot="manual:next", trigger="manual", worker="test", now=later, lease=lease
        )
        assert nxt is not None
        states = {r.id: r.state for r in list_runs(sessions)}
        assert states[run.id] == "failed"
        removed = service.clean_unregistered()
        if candidate_dir.resolve() in registered:
            assert candidate_dir.is_dir() and candidate_dir not in removed
        else:
            assert candidate_dir in removed and not candidate_dir.exists()
        left = {p.resolve() for p in service.models_dir.iterdir()}
        assert left <= registered
    finally:
        storage.engine.dispose()
