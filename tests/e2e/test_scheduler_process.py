"""``xrayd scheduler``: the retraining scheduler as its own process, stopped by SIGTERM."""

from __future__ import annotations

import subprocess
from pathlib import Path

from serve_process import XRAYD, clean_env, threads_taking_stop_signals, write_config


def test_scheduler_process_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, extra='[retrain]\nschedule = "0 3 * * *"\n')
    proc = subprocess.Popen(
        [XRAYD, "scheduler", "--config", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(),
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("xrayd scheduler: next retraining "), line
        assert " 03:00:00" in line, line
        # only the main thread (in sigwait) may take SIGTERM, or it would kill the process
        assert threads_taking_stop_signals(proc.pid) == []
        proc.terminate()
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
