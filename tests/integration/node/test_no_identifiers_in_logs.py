"""Logs and stored error texts hold no patient data, also when things fail.

Data sets carrying marker identifiers (patient name, ID, birth date, accession number) are sent
to a node over loopback DICOM: one clean study, one with invalid values (dates, a UID in a
non-key attribute, a name too long for its VR), one whose pixel data is cut short. They are
received, analysed (one job fails on the invalid values, the cut-short image is not analysable)
and their results delivered to a destination that is down and to one that refuses with an
error comment naming the patient. Then every log record (root at DEBUG, pydicom, pynetdicom and
highdicom at DEBUG too, Python warnings routed to logging, as ``xrayd serve`` sets it up) and
every error text in the database is searched for the markers and the data sets' raw UIDs.
"""

from __future__ import annotations

import io
import json
import logging
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pydicom.config
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import generate_uid
from pynetdicom import AE, AllStoragePresentationContexts, evt
from sqlalchemy import select

from models.synthetic import generate_case, to_dicom
from storage.analyses import analyses_of
from storage.schema import AuditEvent, Delivery, Job
from xrayd.pipeline.delivery import DeliveryOptions, DeliveryWorker
from xrayd.runtime.logging_setup import configure_logging, reset_logging
from xrayd.runtime.node import Node, open_storage, seed_registry
from xrayd.workers.analysis import CompletionTimer, Worker
from xrayd.workers.base import Wakeup

from helpers import make_settings
from node_helpers import store_and_wait_for_release

NAME = "ZZSECRET^PATIENT"
PATIENT_ID = "MRN-31337-SECRET"
BIRTH_DATE = "19870315"
BAD_BIRTH_DATE = "19871345"  # no 13th month
BAD_STUDY_DATE = "19991340"
BAD_UID = "1.2.826.0.1.3680043.9.31337.7.ZZSECRET"  # letters: not a valid UI
ACCESSION = "ACC31337ZZ"
LONG_NAME = "ZZSECRET^" + "Q" * 70  # a PN component longer than 64 characters
MARKERS = (
    NAME,
    "ZZSECRET",
    PATIENT_ID,
    "MRN-31337",
    BIRTH_DATE,
    BAD_BIRTH_DATE,
    BAD_STUDY_DATE,
    BAD_UID,
    ACCESSION,
)
DEBUG_LOGGERS = ("pydicom", "pynetdicom", "highdicom", "py.warnings", "sqlalchemy")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RefusingPACS:
    """A Storage SCP answering every C-STORE with 0xA700 and an error comment that names the
    patient (a peer's free text is not ours to log)."""

    def __init__(self) -> None:
        self.ae = AE(ae_title="REFUSER")
        self.ae.supported_contexts = AllStoragePresentationContexts
        self.refused = threading.Event()
        self._server: Any = None

    def start(self) -> int:
        self._server = self.ae.start_server(
            ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, self._on_store)]
        )
        return int(self._server.server_address[1])

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()

    def _on_store(self, event: Any) -> Dataset:
        self.refused.set()
        status = Dataset()
        status.Status = 0xA700
        status.ErrorComment = f"{PATIENT_ID} {NAME}"[:64]
        return status


@pytest.fixture
def refusing_pacs() -> Iterator[RefusingPACS]:
    pacs = RefusingPACS()
    yield pacs
    pacs.stop()


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> Iterator[io.StringIO]:
    """xrayd's logging set-up at DEBUG (what ``xrayd serve`` installs), with the chatty
    third-party loggers it keeps quiet opened up to DEBUG as well; undone afterwards."""
    root = logging.getLogger()
    levels = {name: logging.getLogger(name).level for name in ("", *DEBUG_LOGGERS)}
    stream = io.StringIO()
    configure_logging("DEBUG", "text", stream=stream)
    caplog.set_level(logging.DEBUG)
    for name in DEBUG_LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    try:
        yield stream
    finally:
        reset_logging()
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        root.setLevel(levels[""])


@pytest.fixture
def node(database_url: str, tmp_path: Path, refusing_pacs: RefusingPACS) -> Iterator[Node]:
    settings = make_settings(
        tmp_path / "data",
        database_url,
        study={"quiet_seconds": 0, "release_ends_wait": True},
        jobs={"max_attempts": 1},
        delivery={"max_attempts": 1},  # each refused delivery ends dead (and audited)
        destinations=[
            {
                "name": "down",
                "ae_title": "DOWN",
                "host": "127.0.0.1",
                "port": _free_port(),
                "send": ["sr", "sc", "pdf"],
            },
            {
                "name": "refuser",
                "ae_title": "REFUSER",
                "host": "127.0.0.1",
                "port": refusing_pacs.start(),
                "send": ["sr", "sc", "pdf"],
            },
        ],
    )
    storage = open_storage(settings, create_if_empty=True, require_current=True)
    n = Node(settings, storage)  # the real analyser; the test runs timer, worker and sender
    seed_registry(settings, storage.sessions)
    n.scp.start()
    try:
        yield n
    finally:
        _stop_listener(n)
        storage.engine.dispose()


def _stop_listener(node: Node) -> None:
    """Stop the node's listener once (its association threads have finished logging then)."""
    if not getattr(node, "_listener_stopped", False):
        node._listener_stopped = True  # type: ignore[attr-defined]
        node.scp.stop(timeout=5)


def _marked(seed: int, study_uid: str, **overrides: str) -> Dataset:
    ds = to_dicom(
        generate_case(seed, 256, fracture=True),
        study_uid=study_uid,
        patient_id=PATIENT_ID,
        patient_name=NAME,
        accession_number=ACCESSION,
    )
    ds.PatientBirthDate = BIRTH_DATE
    ds.OtherPatientIDs = PATIENT_ID
    with pydicom.config.disable_value_validation():
        for keyword, value in overrides.items():
            setattr(ds, keyword, value)
    return ds


def _studies() -> list[list[Dataset]]:
    clean = _marked(61, str(generate_uid()))
    invalid = _marked(
        62,
        str(generate_uid()),
        PatientBirthDate=BAD_BIRTH_DATE,
        StudyDate=BAD_STUDY_DATE,
        ContentDate=BAD_STUDY_DATE,
        AcquisitionDate=NAME,  # a name where a date belongs
        FrameOfReferenceUID=BAD_UID,
        ReferringPhysicianName=LONG_NAME,
    )
    weight = PATIENT_ID.encode()[:16]  # not a decimal string (pydicom refuses to set one)
    invalid[0x00101030] = RawDataElement(Tag(0x00101030), "DS", len(weight), weight, 0, False, True)
    broken_uid = str(generate_uid())
    cut_short = _marked(63, broken_uid)
    cut_short.PixelData = cut_short.PixelData[: len(cut_short.PixelData) // 3]
    frames = _marked(64, broken_uid)
    count = PATIENT_ID.encode()  # Number of Frames (IS) holding an identifier: not a number
    frames[0x00280008] = RawDataElement(Tag(0x00280008), "IS", len(count), count, 0, False, True)
    return [[clean], [invalid], [cut_short, frames]]


#: attributes every record has (times, thread and process ids: numbers, not data)
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message"}


def _rendered(record: logging.LogRecord) -> str:
    """Everything a handler could write for ``record``: its message with its arguments, its
    traceback, and every ``extra`` attribute."""
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    extra = {k: v for k, v in record.__dict__.items() if k not in _STANDARD}
    return "\n".join([formatter.format(record), repr(record.args), repr(extra)])


def test_failures_leave_no_patient_data_in_logs_or_error_texts(
    node: Node, logs: io.StringIO, caplog: pytest.LogCaptureFixture, refusing_pacs: RefusingPACS
) -> None:
    studies = _studies()
    for datasets in studies:
        assert store_and_wait_for_release(node, datasets) == [0] * len(datasets)
    sessions = node.storage.sessions
    clock = node.sink.clock
    stop = threading.Event()
    CompletionTimer(sessions, node.settings.study, node.settings.jobs, clock, stop, Wakeup()).tick()
    worker = Worker(0, sessions, node.analyser, node.settings.jobs, clock, stop, Wakeup())
    ran = 0
    while worker.run_once():
        ran += 1
    assert ran == len(studies)
    sender = DeliveryWorker(
        sessions,
        node.storage.spool,
        DeliveryOptions(send_timeout_seconds=10, lease_seconds=60),
        lambda: datetime.now(UTC),
        stop,
        Wakeup(),
    )
    sent = 0
    while sender.run_once():
        sent += 1
    _stop_listener(node)  # every association thread has finished logging

    with sessions() as session:
        job_errors = [e for e in session.scalars(select(Job.last_error)) if e]
        delivery_errors = [e for e in session.scalars(select(Delivery.last_error)) if e]
        audits = [
            json.dumps([a.actor, a.action, a.object_id, a.detail], default=str)
            for a in session.scalars(select(AuditEvent))
        ]
        study_ids = {j.study_id for j in session.scalars(select(Job))}
    reasons = [
        str(skipped["reason"])
        for study_id in study_ids
        for analysis in analyses_of(sessions, study_id)
        for skipped in analysis.detail.get("not_analysed", [])
    ]

    # The failures this test is about did happen.
    assert job_errors, "the job on invalid values did not fail"
    assert sent and refusing_pacs.refused.is_set() and len(delivery_errors) == sent
    assert any("pixel" in r for r in reasons), reasons
    assert any(r.exc_text for r in caplog.records), "no traceback was logged"
    assert any(r.name.startswith("pydicom") or r.name == "py.warnings" for r in caplog.records)

    uids = {
        str(ds[keyword].value)
        for datasets in studies
        for ds in datasets
        for keyword in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
    }
    texts = {
        "log records": "\n".join(_rendered(r) for r in caplog.records),
        "log output": caplog.text + logs.getvalue(),
        "jobs.last_error": "\n".join(job_errors),
        "deliveries.last_error": "\n".join(delivery_errors),
        "audit events": "\n".join(audits),
        "not-analysed reasons": "\n".join(reasons),
    }
    leaks = {
        where: sorted(secret for secret in (*MARKERS, *uids) if secret in text)
        for where, text in texts.items()
    }
    assert leaks == {where: [] for where in texts}
