"""The node's retention worker: applies ``[retention]`` at start and then periodically."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from storage.schema import AuditEvent, Instance, Job, Result, Series, Study
from xrayd.runtime.node import Node, open_storage

from helpers import make_settings


def _seed_old_study(node: Node, days: float) -> str:
    """An analysed, unflagged study with nothing to send, whose image came ``days`` ago."""
    when = datetime.now(UTC) - timedelta(days=days)
    uid = f"1.2.826.0.1.77.{int(days)}"
    rel = node.storage.spool.relative_path_for(uid, f"{uid}.1", "cd" * 32)
    node.storage.spool.write_atomic(rel, b"\0" * 4096)
    with node.storage.sessions.begin() as session:
        study = Study(
            study_instance_uid=uid,
            state="analysed",
            first_received_at=when,
            last_received_at=when,
            instance_count=1,
        )
        session.add(study)
        session.flush()
        series = Series(study_id=study.id, series_instance_uid=f"{uid}.9", modality="DX")
        session.add(series)
        session.flush()
        session.add(
            Instance(
                series_id=series.id,
                study_id=study.id,
                sop_instance_uid=f"{uid}.1",
                sop_class_uid="1.2.840.10008.5.1.4.1.1.1.1",
                transfer_syntax_uid="1.2.840.10008.1.2.1",
                spool_path=rel,
                size_bytes=4096,
                sha256="cd" * 32,
                received_at=when,
                calling_ae_title="MODALITY",
            )
        )
        job = Job(
            queue="analysis",
            study_id=study.id,
            kind="analyse",
            state="done",
            next_attempt_at=when,
        )
        session.add(job)
        session.flush()
        session.add(
            Result(study_id=study.id, job_id=job.id, kind="analysis", detail={"decision": "absent"})
        )
    return rel


def test_the_node_purges_old_studies_at_start(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", database_url, retention={"max_age_days": 30})
    node = Node(settings, open_storage(settings, create_if_empty=True, require_current=True))
    old = _seed_old_study(node, 45)
    young = _seed_old_study(node, 3)
    node.start()
    try:
        deadline = time.monotonic() + 30
        purged = 'xrayd_retention_purged_studies_total{reason="age"} 1.0'
        while purged not in node.metrics.render().decode():  # reported after the commit
            assert time.monotonic() < deadline, "retention did not run at start"
            time.sleep(0.1)
        assert not node.storage.spool.absolute(old).exists()
        assert node.storage.spool.absolute(young).exists()
        with node.storage.sessions() as session:
            events = session.scalars(
                select(AuditEvent).where(AuditEvent.action == "retention.purged")
            ).all()
        assert [e.detail["studies"] for e in events] == [1]
        assert "xrayd_retention_freed_bytes_total 4096.0" in node.metrics.render().decode()
    finally:
        node.stop(timeout=5)
