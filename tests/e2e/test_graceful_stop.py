"""SIGTERM (``systemctl stop``) in the middle of work loses and duplicates nothing.

``xrayd serve`` runs as a subprocess on a real database. A modality (pynetdicom) sends a
study; SIGTERM arrives right after the third instance is acknowledged (the acknowledgement is
the synchronisation point), or right after a worker claims the study's job (its own log
line). The process must exit 0 within the unit's TimeoutStopSec=; every acknowledged
instance must be in the database and the spool; and after a restart the study is analysed
and each result reaches the PACS (a pynetdicom Storage SCP) exactly once.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pynetdicom import AE, AllStoragePresentationContexts, evt
from sqlalchemy import select

from dicom_factory import DX, make_radiograph
from serve_process import ServeProcess, write_config

pytestmark = pytest.mark.slow

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "xrayd.service"
INSTANCES = 8
SIGNAL_AFTER_ACKS = 3
SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.34"
SC_CLASS = "1.2.840.10008.5.1.4.1.1.7"
PDF_CLASS = "1.2.840.10008.5.1.4.1.1.104.1"


def timeout_stop_seconds() -> float:
    m = re.search(r"^TimeoutStopSec=(\d+)s?$", UNIT.read_text(), re.MULTILINE)
    assert m, "xrayd.service sets TimeoutStopSec= in seconds"
    return float(m.group(1))


class PACS:
    """A Storage SCP that records every C-STORE it accepts."""

    def __init__(self) -> None:
        self.ae = AE(ae_title="PACS")
        self.ae.supported_contexts = AllStoragePresentationContexts
        self.received: list[tuple[str, str]] = []  # (SOP Class UID, SOP Instance UID)
        self.cond = threading.Condition()
        self.server: Any = self.ae.start_server(
            ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, self._on_store)]
        )
        self.port = int(self.server.server_address[1])

    def _on_store(self, event: Any) -> int:
        with self.cond:
            self.received.append(
                (str(event.request.AffectedSOPClassUID), str(event.request.AffectedSOPInstanceUID))
            )
            self.cond.notify_all()
        return 0x0000

    def wait_for(self, n: int, timeout: float) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.received) >= n, timeout), self.received

    def stop(self) -> None:
        self.server.shutdown()


@pytest.fixture
def pacs() -> Iterator[PACS]:
    server = PACS()
    try:
        yield server
    finally:
        server.stop()


def _config(tmp_path: Path, database_url: str, pacs: PACS) -> Path:
    return write_config(
        tmp_path,
        database_url,
        extra=(
            # release ends the wait; a cut association's study completes after 2 s of quiet
            "[study]\nquiet_seconds = 2\nmax_wait_seconds = 120\n"
            "[delivery]\nretry_base_seconds = 0.5\nretry_max_seconds = 1.0\npoll_seconds = 1.0\n"
            f'[[destinations]]\nname = "pacs"\nae_title = "PACS"\nhost = "127.0.0.1"\n'
            f'port = {pacs.port}\nsend = ["sr", "sc", "pdf"]\n'
        ),
    )


def _indexed(cfg: Path) -> dict[str, Path]:
    """SOP Instance UID -> spool file of every instance row, read as a separate process would."""
    from config.loader import load_settings
    from storage.schema import Instance
    from xrayd.runtime.node import open_storage

    storage = open_storage(load_settings(cfg), create_if_empty=False, require_current=True)
    try:
        with storage.sessions() as session:
            rows = session.execute(select(Instance.sop_instance_uid, Instance.spool_path)).all()
        return {uid: storage.spool.absolute(path) for uid, path in rows}
    finally:
        storage.engine.dispose()


def _status(cfg: Path) -> dict[str, str]:
    from config.loader import load_settings
    from storage.status import status_counts
    from xrayd.runtime.node import open_storage

    storage = open_storage(load_settings(cfg), create_if_empty=False, require_current=True)
    try:
        counts = status_counts(storage.sessions)
    finally:
        storage.engine.dispose()
    return {
        "jobs": repr(sorted(counts.jobs_by_state.items())),
        "dead": str(counts.dead_letters),
    }


@pytest.mark.parametrize("moment", ["receiving", "analysing"])
def test_sigterm_loses_and_duplicates_nothing(
    tmp_path: Path, database_url: str, pacs: PACS, moment: str
) -> None:
    cfg = _config(tmp_path, database_url, pacs)
    served = ServeProcess(cfg)
    try:
        study = make_radiograph().StudyInstanceUID
        datasets = [make_radiograph(study_uid=study, seed=i) for i in range(INSTANCES)]
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(DX, "1.2.840.10008.1.2.1")
        assoc = ae.associate("127.0.0.1", served.port, ae_title="XRAYD")
        assert assoc.is_established
        acked: list[str] = []
        signalled_at: float | None = None
        for ds in datasets:
            if not assoc.is_established:
                break
            rsp = assoc.send_c_store(ds)
            if "Status" in rsp and rsp.Status == 0:
                acked.append(str(ds.SOPInstanceUID))
            if moment == "receiving" and len(acked) == SIGNAL_AFTER_ACKS and signalled_at is None:
                served.terminate()  # mid-study: the sender goes on
                signalled_at = time.monotonic()
        if assoc.is_established:
            assoc.release()
        if moment == "analysing":
            served.wait_for_log("claimed (attempt 1)")
            served.terminate()  # the worker holds the job
            signalled_at = time.monotonic()
        assert signalled_at is not None

        limit = timeout_stop_seconds()
        assert served.proc.wait(timeout=limit) == 0, served.stderr_text()
        took = time.monotonic() - signalled_at
        assert took < limit
        # a running association is let finish: the sender's whole study was acknowledged
        assert len(acked) == INSTANCES, served.stderr_text()
        assert "Traceback" not in served.stderr_text()
    finally:
        served.kill()

    # Everything acknowledged is indexed and on disk, intact.
    indexed = _indexed(cfg)
    for uid in acked:
        assert uid in indexed, "an acknowledged instance is missing from the database"
        assert pydicom.dcmread(indexed[uid]).SOPInstanceUID == uid

    # After a restart the study is analysed and every result is delivered, once.
    again = ServeProcess(cfg)
    try:
        expected = 1 + len(acked) + 1  # SR, a Secondary Capture per image, the PDF
        pacs.wait_for(expected, timeout=240)
        again.terminate()
        assert again.proc.wait(timeout=timeout_stop_seconds()) == 0, again.stderr_text()
    finally:
        again.kill()
    classes = Counter(cls for cls, _ in pacs.received)
    assert classes == {SR_CLASS: 1, SC_CLASS: len(acked), PDF_CLASS: 1}, pacs.received
    duplicates = [uid for uid, n in Counter(u for _, u in pacs.received).items() if n > 1]
    assert not duplicates, f"results sent twice: {duplicates}"
    status = _status(cfg)
    assert status["dead"] == "0", status
    assert "running" not in status["jobs"] and "queued" not in status["jobs"], status
