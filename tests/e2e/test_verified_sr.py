"""A radiologist's review through the REST API sends a radiologist-verified SR to the PACS
(Orthanc) that supersedes the AI SR; a site that has not enabled it sends nothing more."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from fastapi.testclient import TestClient

from models.synthetic_files import write_synthetic_studies
from storage.users import add_user, create_api_token

from helpers import make_settings, need_tool
from orthanc import Orthanc, running_orthanc

SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.34"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


class Sent:
    def __init__(self) -> None:
        self.reports: list[Any] = []
        self.cond = threading.Condition()

    def __call__(self, report: Any) -> None:
        with self.cond:
            self.reports.append(report)
            self.cond.notify_all()

    def wait_for(self, n: int) -> None:
        with self.cond:
            ok = self.cond.wait_for(lambda: len(self.reports) >= n, 180)
            assert ok, [r.outcome for r in self.reports]
            assert all(r.outcome.ok for r in self.reports), [r.outcome for r in self.reports]


@pytest.fixture
def pacs(tmp_path: Path) -> Iterator[Orthanc]:
    with running_orthanc(tmp_path / "orthanc") as server:
        yield server


def _srs(pacs: Orthanc) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for i in pacs.get("/instances"):
        tags = pacs.get(f"/instances/{i}/simplified-tags")
        if tags["SOPClassUID"] == SR_CLASS:
            out.append((i, tags))
    return out


@pytest.mark.parametrize("enabled", [True, False])
def test_review_sends_a_verified_sr_that_supersedes_the_ai_sr(
    tmp_path: Path, pacs: Orthanc, enabled: bool
) -> None:
    from xrayd.runtime.node import Node, open_storage, web_context
    from xrayd.web.app import create_app

    settings = make_settings(
        tmp_path / "data",
        model={"runtime": "eager"},
        delivery={"retry_base_seconds": 0.5, "retry_max_seconds": 1.0, "poll_seconds": 1.0},
        review={"send_verified_sr": enabled, "organization": "Test Hospital Radiology"},
        destinations=[
            {
                "name": "pacs",
                "ae_title": pacs.ae_title,
                "host": "127.0.0.1",
                "port": pacs.dicom_port,
                "send": ["sr"],
            }
        ],
    )
    storage = open_storage(settings, create_if_empty=True, require_current=True)
    sent = Sent()
    node = Node(settings, storage, on_delivery=sent)
    node.start()
    try:
        files = write_synthetic_studies(tmp_path / "in", 1, seed=5, size=320)
        done = subprocess.run(
            [
                need_tool("storescu"),
                "-aet",
                "MODALITY",
                "-aec",
                "XRAYD",
                "127.0.0.1",
                str(node.scp.port),
                *[str(f.path) for f in files],
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        sent.wait_for(1)  # the AI SR
        [(_, ai)] = _srs(pacs)

        add_user(storage.sessions, "dr_bone", "radiologist", "a long enough password")
        token = create_api_token(storage.sessions, "dr_bone", "test", actor="test")
        app = create_app(web_context(settings, storage, node))
        client = TestClient(app, base_url="http://localhost")  # an allowed Host
        headers = {"Authorization": f"Bearer {token}"}
        [study] = client.get("/api/v1/studies", headers=headers).json()["items"]
        label = {"fracture": "absent", "count": "0", "body_part": "wrist", "hardware": False}
        r = client.post(
            "/api/v1/overrides",
            json={"study_id": study["id"], "agree": False, "label": label, "comment": "no"},
            headers=headers,
        )
        assert r.status_code == 201, r.text
        body = r.json()
        if not enabled:
            assert body["verified_sr"] == "off" and body["verified_sr_result_id"] is None
            assert len(_srs(pacs)) == 1
            return
        assert body["verified_sr"] == "queued" and body["verified_sr_result_id"] is not None
        sent.wait_for(2)
        [(vid, verified_tags)] = [
            t for t in _srs(pacs) if t[1]["SOPInstanceUID"] != ai["SOPInstanceUID"]
        ]
        path = tmp_path / "verified.dcm"
        path.write_bytes(pacs.get_bytes(f"/instances/{vid}/file"))
        ds = pydicom.dcmread(path)
        assert ds.VerificationFlag == "VERIFIED" and ds.CompletionFlag == "COMPLETE"
        [observer] = ds.VerifyingObserverSequence
        assert str(observer.VerifyingObserverName).startswith("dr_bone")
        assert observer.VerifyingOrganization == "Test Hospital Radiology"
        predecessors = [
            item.ReferencedSOPInstanceUID
            for st in ds.PredecessorDocumentsSequence
            for se in st.ReferencedSeriesSequence
            for item in se.ReferencedSOPSequence
        ]
        assert predecessors == [ai["SOPInstanceUID"]]
        assert verified_tags["StudyInstanceUID"] == ai["StudyInstanceUID"]
        check = subprocess.run(
            [need_tool("dciodvfy"), str(path)], capture_output=True, text=True, timeout=60
        )
        errors = [line for line in check.stderr.splitlines() if line.startswith("Error")]
        assert errors == []
        assert len(_srs(pacs)) == 2
    finally:
        node.stop(timeout=10)
        storage.engine.dispose()
