"""Web test helpers: a real database and spool behind the FastAPI app, users, and seeded studies.

Seeded studies are real rows and files in the layout the analysis job writes (a DICOM image in
the spool, an ``analysis`` result row, a heatmap PNG); ``tests/e2e`` and the browser test run
the real analysis job instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from fastapi.testclient import TestClient
from pydicom.uid import generate_uid
from sqlalchemy.orm import Session, sessionmaker

from storage.schema import Instance, Result, Series, Study
from storage.spool import Spool
from storage.users import add_user, create_api_token
from xrayd.pipeline.analyse import heatmap_png
from xrayd.runtime.node import Storage, open_storage
from xrayd.web.app import create_app
from xrayd.web.context import WebContext

from dicom_factory import make_radiograph
from helpers import make_settings

PASSWORDS = {
    "admin": "admin-password-123",
    "rad": "radiologist-pw-456",
    "rad2": "second-rad-pw-789",
}
BASE = "https://testserver"  # the session cookie is Secure


@dataclass
class Web:
    ctx: WebContext
    storage: Storage
    client: TestClient

    @property
    def sessions(self) -> sessionmaker[Session]:
        return self.storage.sessions

    def login(self, name: str, client: TestClient | None = None) -> TestClient:
        """Log ``name`` in on ``client`` (default: the shared one); returns the client."""
        c = client or self.client
        form = c.get("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        assert token is not None
        r = c.post(
            "/login",
            data={
                "username": name,
                "password": PASSWORDS[name],
                "csrf_token": token.group(1),
                "next": "/worklist",
            },
            follow_redirects=False,
        )
        assert r.status_code == 303, r.text
        return c

    def new_client(self) -> TestClient:
        return TestClient(self.client.app, base_url=BASE)

    def csrf(self, client: TestClient | None = None, page: str = "/worklist") -> str:
        html = (client or self.client).get(page).text
        found = re.search(r'name="csrf_token" value="([^"]+)"', html)
        assert found is not None, html[:500]
        return found.group(1)

    def token(self, name: str) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {create_api_token(self.sessions, name, 't', actor='test')}"
        }


def make_web(data_dir: Path, database_url: str = "", **sections: Any) -> Web:
    # The test client's Host is "testserver" (the allow-list of xrayd.web.peers); the
    # loopback defaults stay for the real servers some tests start.
    web = sections.setdefault("web", {})
    web.setdefault("allowed_hosts", ["127.0.0.1", "localhost", "::1", "testserver"])
    settings = make_settings(data_dir, database_url, **sections)
    storage = open_storage(settings, create_if_empty=True, require_current=True)
    ctx = WebContext(settings=settings, sessions=storage.sessions, spool=storage.spool)
    client = TestClient(create_app(ctx), base_url=BASE)
    for name, role in (("admin", "admin"), ("rad", "radiologist"), ("rad2", "radiologist")):
        add_user(storage.sessions, name, role, PASSWORDS[name])
    return Web(ctx, storage, client)


def seed_study(
    sessions: sessionmaker[Session],
    spool: Spool,
    *,
    decision: str = "present",
    probability: float = 0.9,
    count: str = "1",
    body_part: str = "wrist",
    hardware: bool = False,
    received_at: datetime | None = None,
    images: int = 1,
    model_version: str = "1.0.0",
    patient_name: str = "Doe^Jane",
    patient_id: str = "PAT-SECRET-42",
) -> int:
    """An analysed study as the analysis job leaves it; returns the study id."""
    when = received_at or datetime.now(UTC) - timedelta(minutes=5)
    study_uid = str(generate_uid())
    series_uid = str(generate_uid())
    revision = generate_uid()[-16:]
    with sessions.begin() as session:
        study = Study(
            study_instance_uid=study_uid,
            state="analysed",
            first_received_at=when,
            last_received_at=when,
            instance_count=images,
            calling_ae_title="MODALITY",
        )
        session.add(study)
        session.flush()
        series = Series(
            study_id=study.id,
            series_instance_uid=series_uid,
            modality="DX",
            body_part_examined=None,
        )
        session.add(series)
        session.flush()
        predictions = []
        for n in range(images):
            ds = make_radiograph(
                study_uid=study_uid,
                series_uid=series_uid,
                seed=n,
                rows=200,
                cols=160,
                patient_name=patient_name,
                patient_id=patient_id,
            )
            rel = f"instances/{study.id}/{n}.dcm"
            path = spool.absolute(rel)
            path.parent.mkdir(parents=True, exist_ok=True)
            ds.save_as(path, enforce_file_format=True)
            session.add(
                Instance(
                    series_id=series.id,
                    study_id=study.id,
                    sop_instance_uid=str(ds.SOPInstanceUID),
                    sop_class_uid=str(ds.SOPClassUID),
                    transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
                    spool_path=rel,
                    size_bytes=path.stat().st_size,
                    sha256="0" * 64,
                    received_at=when,
                    calling_ae_title="MODALITY",
                )
            )
            heat = np.zeros((200, 160), dtype=np.float32)
            heat[60:120, 40:100] = 0.9
            heat_rel = f"results/{study.id}/heatmap-{n}.png"
            spool.write_atomic(heat_rel, heatmap_png(heat))
            session.add(
                Result(
                    study_id=study.id,
                    kind="heatmap",
                    sop_instance_uid=str(generate_uid()),
                    file_path=heat_rel,
                    detail={
                        "revision": revision,
                        "source_sop_instance_uid": str(ds.SOPInstanceUID),
                    },
                )
            )
            predictions.append(
                {
                    "sop_instance_uid": str(ds.SOPInstanceUID),
                    "decision": decision,
                    "fracture_probability": probability,
                    "count": count,
                    "count_probabilities": [0.1, 0.8, 0.1],
                    "body_part": body_part,
                    "body_part_probability": 0.95,
                    "hardware": hardware,
                    "hardware_probability": 0.9 if hardware else 0.05,
                    "boxes": [[60.0, 40.0, 120.0, 100.0]] if decision == "present" else [],
                    "threshold_body_part": body_part,
                }
            )
        session.add(
            Result(
                study_id=study.id,
                kind="analysis",
                created_at=when + timedelta(seconds=10),
                detail={
                    "revision": revision,
                    "model": {
                        "name": "xrayd-phantom",
                        "version": model_version,
                        "sha256": "ab" * 32,
                        "runtime": "eager",
                    },
                    "images": predictions,
                    "not_analysed": [],
                    "decision": decision,
                    "fracture_probability": probability,
                    "count": count,
                    "hardware": hardware,
                    "timings": {"inference_s": 0.01},
                },
            )
        )
        return study.id
