"""A node with ``[object_store] backend = "s3"`` against a real S3 server (SeaweedFS, loopback).

A C-STORE is acknowledged only once the image is in the object store, under its instance key
(hashes, no UID); the local spool then holds no instance file. The analysis reads the images
from the store and writes its result objects there (keys of hashes again), the delivery worker
sends them from there and ``xrayd report`` reads the PDF from there: no step needs the
listener's spool; nor do the web viewer (image, heatmap, header) and the radiologist-verified SR.
With the store unreachable or refusing our credentials, the C-STORE is
answered 0xA700 (Out of Resources) and nothing is indexed; the log line names no patient.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import logging
import re
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pydicom import dcmread
from pydicom.uid import generate_uid
from pynetdicom import AE, AllStoragePresentationContexts, evt
from sqlalchemy import select

from models.synthetic import generate_case, to_dicom
from storage import jobs, users
from storage.analyses import ObjectRow, analyses_of, objects_of
from storage.bytestore import S3ByteStore, key_for
from storage.outbox import list_deliveries
from storage.schema import Instance, Override, Study
from xrayd.pipeline.analyse import LOCAL_KINDS
from xrayd.pipeline.delivery import DeliveryOptions, DeliveryWorker
from xrayd.runtime.node import Node, open_storage, seed_registry, web_context
from xrayd.web.app import create_app
from xrayd.workers.base import Wakeup

from helpers import make_settings
from node_helpers import rows, run_next_job, store_and_wait_for_release
from s3server import S3Server, free_port, running_seaweedfs

pytestmark = pytest.mark.timeout(300)

PATIENT_ID = "SYNTH-S3-PATIENT"
SEND = ["sr", "sc", "pdf", "gsps", "kos"]
PASSWORD = "radiologist-pw-456"


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with running_seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


def s3_table(server: S3Server, tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    """An ``[object_store.s3]`` table for ``server``, in a corner of the bucket of its own."""
    secret = tmp_path / "s3-secret"
    secret.write_text(overrides.pop("secret", server.secret_key) + "\n")
    secret.chmod(0o600)
    table: dict[str, Any] = {
        "endpoint_url": server.endpoint,
        "allow_http": True,
        "bucket": server.bucket,
        "prefix": f"node-{uuid.uuid4().hex[:12]}/",
        "access_key_id": server.access_key,
        "secret_access_key_file": str(secret),
        "connect_timeout_seconds": 2,
        "read_timeout_seconds": 20,
        "max_attempts": 2,
        "part_size_mb": 5,
    }
    table.update(overrides)
    return table


class RecordingPACS:
    """A Storage SCP on loopback that accepts every storage SOP class and keeps what came."""

    def __init__(self) -> None:
        self.ae = AE(ae_title="PACS")
        self.ae.supported_contexts = AllStoragePresentationContexts
        self.received: list[tuple[str, str]] = []  # (SOP class, SOP instance)
        self._lock = threading.Lock()
        self._server = self.ae.start_server(
            ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, self._on_store)]
        )
        self.port = int(self._server.server_address[1])

    def _on_store(self, event: Any) -> int:
        with self._lock:
            self.received.append(
                (str(event.request.AffectedSOPClassUID), str(event.request.AffectedSOPInstanceUID))
            )
        return 0x0000

    def stop(self) -> None:
        self._server.shutdown()


@pytest.fixture
def pacs() -> Iterator[RecordingPACS]:
    peer = RecordingPACS()
    yield peer
    peer.stop()


def start_node(tmp_path: Path, database_url: str, table: dict[str, Any], port: int) -> Node:
    settings = make_settings(
        tmp_path / "data",
        database_url,
        study={"quiet_seconds": 0, "release_ends_wait": True},
        destinations=[
            {"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": port, "send": SEND}
        ],
        object_store={"backend": "s3", "s3": table},
        web={"allowed_hosts": ["127.0.0.1", "testserver"]},
    )
    storage = open_storage(settings, create_if_empty=True, require_current=True)
    node = Node(settings, storage)  # no worker threads: the test runs the job and the sends
    seed_registry(settings, storage.sessions)
    node.scp.start()
    return node


@pytest.fixture
def nodes() -> Iterator[list[Node]]:
    started: list[Node] = []
    yield started
    for node in started:
        node.scp.stop(timeout=5)
        node.storage.engine.dispose()


def s3_objects(server: S3Server, prefix: str) -> dict[str, bytes]:
    """Every object under ``prefix`` (keys without it), read with the test identity."""
    client = server.client()
    found: dict[str, bytes] = {}
    for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=server.bucket, Prefix=prefix
    ):
        for item in page.get("Contents", []):
            body = client.get_object(Bucket=server.bucket, Key=item["Key"])["Body"].read()
            found[item["Key"][len(prefix) :]] = body
    return found


def local_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def views(study_uid: str, count: int = 2) -> list[Any]:
    return [
        to_dicom(
            generate_case(40 + i, 256, fracture=True),
            study_uid=study_uid,
            patient_id=PATIENT_ID,
            instance_number=i + 1,
        )
        for i in range(count)
    ]


def test_images_and_results_live_in_the_object_store(
    s3: S3Server,
    tmp_path: Path,
    database_url: str,
    pacs: RecordingPACS,
    nodes: list[Node],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    table = s3_table(s3, tmp_path)
    node = start_node(tmp_path, database_url, table, pacs.port)
    nodes.append(node)
    assert isinstance(node.storage.store, S3ByteStore)
    spool_root = node.storage.spool.root
    study_uid = str(generate_uid())
    images = views(study_uid)

    # received: acknowledged only once in S3, under the instance key; no instance file here
    assert store_and_wait_for_release(node, images) == [0x0000, 0x0000]
    instances = rows(node, Instance)
    assert len(instances) == 2
    stored = s3_objects(s3, table["prefix"])
    for row in instances:
        assert row.spool_path == key_for("instance", study_uid, row.sop_instance_uid, row.sha256)
        assert study_uid not in row.spool_path and row.sop_instance_uid not in row.spool_path
        assert hashlib.sha256(stored[row.spool_path]).hexdigest() == row.sha256
        assert not (spool_root / row.spool_path).exists()
    assert local_files(spool_root) == []  # not even the received temporary files

    # analysed from the store; every result object written there, under keys of hashes
    run_next_job(node)
    [job] = jobs.list_jobs(node.storage.sessions, "done")
    objects = objects_of(node.storage.sessions, job.study_id)
    kinds = sorted(o.kind for o in objects)
    assert {"sr", "sc", "pdf", "report", "heatmap"} <= set(kinds), kinds
    stored = s3_objects(s3, table["prefix"])
    for o in objects:
        assert o.file_path is not None and o.sop_instance_uid is not None
        assert o.file_path.startswith("results/")
        assert o.sop_instance_uid not in o.file_path and study_uid not in o.file_path
        assert o.file_path in stored
        if o.kind not in LOCAL_KINDS:
            ds = dcmread(BytesIO(stored[o.file_path]))
            assert str(ds.SOPInstanceUID) == o.sop_instance_uid
            assert str(ds.StudyInstanceUID) == study_uid
    assert local_files(spool_root) == []  # the fetched copies are gone too

    # the web viewer shows header, image and heatmap from the store; a review's verified SR
    # is written there too (the writer as the composition root builds it)
    verified = viewer_and_verified_sr(node, job.study_id, monkeypatch)
    assert verified.file_path is not None and verified.file_path.startswith("results/")
    stored = s3_objects(s3, table["prefix"])
    ds = dcmread(BytesIO(stored[verified.file_path]))
    assert (ds.SOPInstanceUID, ds.VerificationFlag) == (verified.sop_instance_uid, "VERIFIED")
    objects = objects_of(node.storage.sessions, job.study_id)
    assert local_files(spool_root) == []

    # sent from the store, each once
    worker = DeliveryWorker(
        node.storage.sessions,
        node.storage.spool,
        DeliveryOptions(send_timeout_seconds=30, lease_seconds=120),
        lambda: datetime.now(UTC),
        threading.Event(),
        Wakeup(),
        store=node.storage.store,
    )
    while worker.run_once():
        pass
    deliveries = list_deliveries(node.storage.sessions)
    assert deliveries and {d.state for d in deliveries} == {"sent"}
    sent = sorted(uid for _, uid in pacs.received)
    assert sent == sorted(o.sop_instance_uid for o in objects if o.kind not in LOCAL_KINDS)
    assert local_files(spool_root) == []

    # `xrayd report` reads the PDF from the store
    from xrayd.cli.main import cmd_report

    out = tmp_path / "report.pdf"
    args = argparse.Namespace(study_uid=study_uid, out=out)
    assert cmd_report(args, node.settings) == 0
    [report] = [o for o in objects if o.kind == "report"]
    assert out.read_bytes() == stored[report.file_path or ""]
    assert out.read_bytes().startswith(b"%PDF")


def viewer_and_verified_sr(node: Node, study_id: int, monkeypatch: pytest.MonkeyPatch) -> ObjectRow:
    """Open the study in the web viewer (header, every image and heatmap), then save a review
    and write its verified SR; returns the verified SR's row."""
    monkeypatch.setattr(users, "SCRYPT_LOG2_N", 10)  # cheap hashes, as in the web tests
    ctx = web_context(node.settings, node.storage, node)
    client = TestClient(create_app(ctx), base_url="https://testserver")
    users.add_user(node.storage.sessions, "rad", "radiologist", PASSWORD)
    form = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert token is not None
    login = client.post(
        "/login",
        data={"username": "rad", "password": PASSWORD, "csrf_token": token.group(1)},
        follow_redirects=False,
    )
    assert login.status_code == 303, login.text
    page = client.get(f"/studies/{study_id}")
    assert page.status_code == 200
    assert PATIENT_ID in page.text  # read from the stored header
    images = re.findall(r'src="(/studies/\d+/images/\d+\.png)"', page.text)
    # the viewport's heatmap and DICOM object (xrayd.web.wado) come from the object store too
    heatmaps = re.findall(r'data-heatmap-url="(/studies/\d+/heatmaps/\d+\.png)"', page.text)
    dicoms = re.findall(r'data-dicom-url="(/studies/\d+/instances/\d+\.dcm)"', page.text)
    assert images and heatmaps and len(dicoms) == len(images)
    for url in dicoms:
        answer = client.get(url)
        assert answer.status_code == 200 and answer.content[128:132] == b"DICM", url
    for url in images + heatmaps:
        answer = client.get(url)
        assert answer.status_code == 200, url
        Image.open(io.BytesIO(answer.content)).verify()

    [analysis] = analyses_of(node.storage.sessions, study_id)
    with node.storage.sessions.begin() as session:
        row = Override(
            study_id=study_id,
            user_name="rad",
            ai_label={"fracture": "present", "count": "1", "body_part": "wrist", "hardware": False},
            radiologist_label={
                "fracture": "absent",
                "count": "0",
                "body_part": "wrist",
                "hardware": False,
            },
            comment="No fracture.",
            created_at=datetime.now(UTC),
            result_id=analysis.result_id,
            agree=False,
        )
        session.add(row)
        session.flush()
        override_id = int(row.id)
    assert ctx.write_verified_sr is not None
    result_id = ctx.write_verified_sr(override_id)
    [verified] = [
        o for o in objects_of(node.storage.sessions, study_id) if o.result_id == result_id
    ]
    return verified


@pytest.mark.parametrize("trouble", ["wrong_secret", "server_down"])
def test_an_unusable_store_refuses_the_c_store_and_indexes_nothing(
    s3: S3Server,
    tmp_path: Path,
    database_url: str,
    pacs: RecordingPACS,
    nodes: list[Node],
    caplog: pytest.LogCaptureFixture,
    trouble: str,
) -> None:
    if trouble == "wrong_secret":
        table = s3_table(s3, tmp_path, secret="not-the-secret-" + uuid.uuid4().hex)
    else:  # nothing listens there: as after the server stopped
        table = s3_table(s3, tmp_path, endpoint_url=f"http://127.0.0.1:{free_port()}")
    node = start_node(tmp_path, database_url, table, pacs.port)
    nodes.append(node)
    study_uid = str(generate_uid())
    caplog.set_level(logging.INFO)

    assert store_and_wait_for_release(node, views(study_uid, 1)) == [0xA700]

    assert rows(node, Instance) == [] and rows(node, Study) == []
    assert jobs.list_jobs(node.storage.sessions) == []
    assert local_files(node.storage.spool.root) == []
    assert s3_objects(s3, table["prefix"]) == {}
    refusals = [r for r in caplog.records if "object store write failed" in r.getMessage()]
    assert refusals, [r.getMessage() for r in caplog.records]
    for record in caplog.records:
        text = record.getMessage()
        assert PATIENT_ID not in text and study_uid not in text
        assert s3.secret_key not in text


def test_the_local_backend_keeps_todays_spool_layout(
    tmp_path: Path, database_url: str, pacs: RecordingPACS, nodes: list[Node]
) -> None:
    """The default backend: instances renamed into the spool at their key, results at
    today's ``results/<aa>/<sha256(study)>/<kind>-<uid>.<ext>``."""
    settings = make_settings(
        tmp_path / "data",
        database_url,
        study={"quiet_seconds": 0, "release_ends_wait": True},
        destinations=[
            {
                "name": "pacs",
                "ae_title": "PACS",
                "host": "127.0.0.1",
                "port": pacs.port,
                "send": SEND,
            }
        ],
    )
    storage = open_storage(settings, create_if_empty=True, require_current=True)
    node = Node(settings, storage)
    seed_registry(settings, storage.sessions)
    node.scp.start()
    nodes.append(node)
    study_uid = str(generate_uid())
    assert store_and_wait_for_release(node, views(study_uid, 1)) == [0x0000]
    [row] = rows(node, Instance)
    assert (storage.spool.root / row.spool_path).is_file()
    run_next_job(node)
    with node.storage.sessions() as session:
        study_id = session.scalars(select(Study.id)).one()
    study_hash = hashlib.sha256(study_uid.encode()).hexdigest()
    for o in objects_of(storage.sessions, study_id):
        assert o.file_path is not None and o.sop_instance_uid is not None
        assert o.file_path.startswith(f"results/{study_hash[:2]}/{study_hash}/{o.kind}-")
        assert o.sop_instance_uid in o.file_path  # unchanged layout
        assert (storage.spool.root / o.file_path).is_file()
