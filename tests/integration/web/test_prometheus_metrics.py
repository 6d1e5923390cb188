"""``GET /metrics`` of a real running node: what a modality sent over loopback is counted.

A node (listener, timer, analysis worker, delivery worker, retention worker) receives N images
of one study from an allowed caller and one association from a disallowed one; the study is
analysed by the demo model and its results are sent to a destination that refuses connections.
The scrape, parsed with prometheus_client's own parser, must show exactly that. The node logs
as JSON meanwhile: every line one object, no patient identifiers.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pynetdicom import AE

from dicom_node.scu import RemoteAE, store_datasets
from models.synthetic import generate_case, to_dicom
from storage.db import make_engine, make_sessionmaker
from storage.spool import Spool
from storage.status import status_counts
from xrayd.runtime.logging_setup import configure_logging, reset_logging
from xrayd.runtime.metrics import Metrics
from xrayd.runtime.node import Node, open_storage, web_context
from xrayd.web.app import create_app

from helpers import make_settings

N = 3
PATIENT_ID, PATIENT_NAME = "PAT-METRICS-99", "Roe^Richard"
WAIT = 180.0  # the demo model's first load and one CPU analysis

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging("INFO", "json", stream=stream)
    yield stream
    reset_logging()


@pytest.fixture
def node(database_url: str, tmp_path: Path) -> Iterator[Node]:
    settings = make_settings(
        tmp_path / "data",
        database_url,
        # complete on the association's release only (a quiet timer could split the study)
        study={"quiet_seconds": 3600, "release_ends_wait": True},
        # port 9 (discard) on loopback: nothing listens, every send fails and is retried
        destinations=[{"name": "pacs", "ae_title": "PACS", "host": "127.0.0.1", "port": 9}],
        delivery={
            "retry_base_seconds": 3600,
            "poll_seconds": 0.2,
            "send_timeout_seconds": 5,
            "lease_seconds": 60,
        },
    )
    n = Node(settings, open_storage(settings, create_if_empty=True, require_current=True))
    n.start()
    yield n
    n.stop(timeout=10)


def scrape(client: TestClient) -> Samples:
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    out: Samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_what_the_node_received_analysed_and_sent(
    node: Node, json_log: io.StringIO
) -> None:
    app = create_app(web_context(node.settings, node.storage, node))
    client = TestClient(app, base_url="http://localhost")  # an allowed Host
    before = scrape(client)
    assert value(before, "xrayd_instances_received_total", outcome="new") == 0
    assert value(before, "xrayd_database_up") == 1
    assert value(before, "xrayd_model_loaded") == 0

    views = [
        to_dicom(
            generate_case(40 + i, 256, fracture=False),
            study_uid="1.2.826.0.1.3680043.99.1",
            patient_id=PATIENT_ID,
            instance_number=i + 1,
        )
        for i in range(N)
    ]
    for ds in views:
        ds.PatientName = PATIENT_NAME
    remote = RemoteAE("XRAYD", "127.0.0.1", node.scp.port)
    assert store_datasets(remote, "MODALITY", views) == [0] * N
    assert store_datasets(remote, "MODALITY", views[:1]) == [0]  # a retransmission
    intruder = AE(ae_title="INTRUDER")
    intruder.add_requested_context("1.2.840.10008.1.1")
    assert intruder.associate("127.0.0.1", node.scp.port, ae_title="XRAYD").is_rejected

    # The association's release queues the study; wait for its analysis and a failed send.
    deadline = time.monotonic() + WAIT
    while True:
        m = scrape(client)
        done = value(m, "xrayd_jobs", state="done") == 1
        if done and value(m, "xrayd_delivery_failures_total", destination="pacs", result="retry"):
            break
        assert time.monotonic() < deadline, {k: v for k, v in m.items() if k[0].startswith("x")}
        time.sleep(0.5)

    assert value(m, "xrayd_instances_received_total", outcome="new") == N
    assert value(m, "xrayd_instances_received_total", outcome="duplicate") == 1
    assert value(m, "xrayd_instances_received_total", outcome="conflict") == 0
    rejected = {
        dict(k[1])["reason"]: v for k, v in m.items() if k[0] == "xrayd_associations_rejected_total"
    }
    assert rejected == {"calling_ae_not_recognised": 1}
    assert value(m, "xrayd_jobs", state="queued") == value(m, "xrayd_jobs", state="running") == 0
    assert value(m, "xrayd_jobs", state="dead") == 0
    assert value(m, "xrayd_studies", state="analysed") == 1
    # One forward pass over the N images.
    assert value(m, "xrayd_inference_seconds_count") == 1
    assert value(m, "xrayd_inference_seconds_sum") > 0
    assert value(m, "xrayd_inference_images_total") == N
    # Results (SR and SC by default) are sent to "pacs", which refuses: retries, no dead letter.
    attempts = value(m, "xrayd_delivery_attempts_total", destination="pacs")
    assert attempts >= 1
    assert value(m, "xrayd_delivery_failures_total", destination="pacs", result="retry") >= 1
    pending = status_counts(node.storage.sessions).deliveries_by_state["pending"]
    assert value(m, "xrayd_deliveries", state="pending") == pending >= 2  # an SR, SC(s)
    assert value(m, "xrayd_dead_letters", kind="delivery") == 0
    assert value(m, "xrayd_dead_letters", kind="job") == 0
    # The spool's filesystem, and the model that analysed the study.
    assert value(m, "xrayd_spool_free_bytes") > 0
    assert value(m, "xrayd_spool_size_bytes") >= value(m, "xrayd_spool_free_bytes")
    assert value(m, "xrayd_model_loaded") == 1
    [(model_labels, one)] = [(dict(k[1]), v) for k, v in m.items() if k[0] == "xrayd_model_info"]
    name, version, sha256 = node.model.version or ("", "", "")
    assert model_labels == {"name": name, "version": version, "sha256": sha256} and one == 1
    assert len(sha256) == 64

    # Nothing in the scrape or the logs names the patient or the study.
    body = client.get("/metrics").text
    lines = json_log.getvalue().splitlines()
    assert len(lines) > 5
    for line in lines:
        record: dict[str, Any] = json.loads(line)  # one JSON object per line
        assert {"time", "level", "logger", "message"} <= set(record)
    for secret in (PATIENT_ID, "Roe", views[0].StudyInstanceUID, views[0].SOPInstanceUID):
        assert secret not in body
        assert secret not in json_log.getvalue()


def test_a_scrape_answers_when_the_database_does_not(tmp_path: Path) -> None:
    # Nothing listens on port 1: the gauges read from the database are left out, the rest stays.
    engine = make_engine("postgresql+psycopg://xrayd@127.0.0.1:1/xrayd")
    metrics = Metrics(
        make_sessionmaker(engine),
        Spool(tmp_path).usage,
        model=lambda: ("demo", "1.0.0", "ab" * 32),
    )
    text = metrics.render().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["xrayd_database_up"].samples[0].value == 0
    assert "xrayd_jobs" not in families
    assert families["xrayd_spool_free_bytes"].samples[0].value > 0
    assert families["xrayd_model_info"].samples[0].labels["version"] == "1.0.0"
    engine.dispose()
