"""``xrayd queue list|retry|cancel`` against a real database (SQLite and PostgreSQL): the
operator lists the one work queue, retries a dead analysis job (its study is queued again)
and cancels a queued one; both are audited under the operating-system user."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from storage import audit
from storage.jobs import claim_job, fail_job, promote_studies_now
from storage.schema import Job, Study
from xrayd.cli import queue as queue_commands

from helpers import make_settings

UID = "1.2.826.0.1.3680043.8.498.91"


def test_list_retry_cancel(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from xrayd.runtime.node import open_storage

    settings = make_settings(tmp_path / "data", database_url)
    sm = open_storage(settings, create_if_empty=True, require_current=True).sessions
    now = datetime.now(UTC)
    with sm.begin() as session:
        for n in (1, 2):
            session.add(
                Study(
                    study_instance_uid=f"{UID}.{n}",
                    state="receiving",
                    first_received_at=now,
                    last_received_at=now,
                    instance_count=1,
                )
            )
    dead, waiting = promote_studies_now(sm, [f"{UID}.1", f"{UID}.2"], now, max_attempts=1)
    claimed = claim_job(sm, "host-a:7", now, 60)
    assert claimed is not None and claimed.job_id == dead
    assert fail_job(sm, dead, now, "NotAnalysable: no pixel data", worker_id="host-a:7") == "dead"

    parser = argparse.ArgumentParser()
    queue_commands.add_parsers(
        parser.add_subparsers(dest="command"), argparse.ArgumentParser(add_help=False)
    )

    def run(*argv: str) -> int:
        args = parser.parse_args(argv)
        func: Callable[[argparse.Namespace, Any], int] = args.func
        return func(args, settings)

    assert run("queue", "list", "--queue", "analysis", "--state", "dead") == 0
    out = capsys.readouterr().out
    assert f"{dead:>7} analysis  analyse" in out and "NotAnalysable" in out
    assert f"{waiting:>7} " not in out
    assert run("queue", "list", "--queue", "delivery") == 0
    assert "(no jobs)" in capsys.readouterr().out

    assert run("queue", "retry", str(dead)) == 0
    assert run("queue", "retry", str(dead)) == 1  # queued now: nothing to retry
    with sm() as session:
        study = session.query(Study).filter_by(study_instance_uid=f"{UID}.1").one()
        job = session.get_one(Job, dead)
        assert (study.state, job.state, job.attempts) == ("queued", "queued", 0)

    assert run("queue", "cancel", str(waiting)) == 0
    assert run("queue", "cancel", str(waiting)) == 1  # not queued any more
    with sm() as session:
        study = session.query(Study).filter_by(study_instance_uid=f"{UID}.2").one()
        assert (session.get_one(Job, waiting).state, study.state) == ("cancelled", "failed")
    assert run("queue", "retry", "--dead") == 1  # none dead
    with pytest.raises(SystemExit):
        parser.parse_args(["queue", "retry"])

    actions = [(a.action, a.actor) for a in audit.list_audit(sm)]
    assert ("job.retried", actions[0][1]) in actions and ("job.cancelled", actions[0][1]) in actions
    assert all(actor.startswith("cli") for action, actor in actions if action.startswith("job."))
    from storage.errors import JobNotFoundError

    with pytest.raises(JobNotFoundError):
        run("queue", "cancel", "999999")
