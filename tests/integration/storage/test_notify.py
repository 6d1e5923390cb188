"""Work queued by one process wakes the workers of another at commit (PostgreSQL NOTIFY); on
SQLite (one host) queueing sends nothing and needs nothing."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from test_storage_jobs import T0, job, store

from storage import notify
from storage.analyses import record_object
from storage.jobs import promote_studies_now
from storage.outbox import queue_deliveries

WAIT = 30.0  # a bound for the other side to react; never a measured time


def test_queued_jobs_and_deliveries_wake_listeners_at_commit(
    engine: Engine, sm: sessionmaker[Session], make_rec: Any
) -> None:
    if engine.dialect.name != "postgresql":
        with sm.begin() as session:
            notify.notify(session, notify.ANALYSIS)  # nothing to send on SQLite, no error
        return
    stop = threading.Event()
    listening = threading.Event()
    analysis, delivery = threading.Event(), threading.Event()
    listener = notify.NotificationListener(
        engine,
        {notify.ANALYSIS: analysis.set, notify.DELIVERY: delivery.set},
        stop,
        on_listening=listening.set,
    )
    listener.start()
    try:
        assert listening.wait(WAIT)
        analysis.clear()  # the catch-up wake after connecting
        delivery.clear()
        store(sm, make_rec(study="1.2.3.77", sop="1.2.3.77.1.1"))
        with sm.begin() as session:
            [job_id] = promote_studies_now(session, ["1.2.3.77"], T0)
            assert not analysis.is_set()  # sent at commit, not before
        assert analysis.wait(WAIT)
        assert not delivery.is_set()
        with sm.begin() as session:
            result_id, _ = record_object(
                session,
                study_id=job(sm, job_id).study_id,
                job_id=job_id,
                kind="sr",
                sop_instance_uid="1.2.3.77.9.1",
                file_path="results/sr.dcm",
            )
            queue_deliveries(session, result_id, "sr", destinations=[_Pacs()], now=T0)
        assert delivery.wait(WAIT)
    finally:
        stop.set()
        listener.join(WAIT)
    assert not listener.is_alive()


class _Pacs:
    name = "pacs"
    send = ("sr",)


def test_unknown_channels_are_refused(sm: sessionmaker[Session]) -> None:
    with sm.begin() as session, pytest.raises(ValueError, match="unknown channel"):
        notify.notify(session, "xrayd_analysis; DROP TABLE jobs")
