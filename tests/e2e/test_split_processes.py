"""``xrayd listener`` and ``xrayd worker`` as separate processes on one database and spool.

The listener receives and acknowledges a study; only the worker process analyses it (its job's
worker id names the worker's pid) and sends the results to the PACS, each once. Both stop on
SIGTERM with exit status 0. An unknown queue name is a configuration error (exit status 2).

With ``[object_store] backend = "s3"`` (a real SeaweedFS on loopback) and PostgreSQL, the
listener and the worker have different data directories, as on two hosts with no shared
filesystem: the images reach the worker, and the results the PACS, only through the object
store and the database.
"""

from __future__ import annotations

import hashlib
import subprocess
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from pynetdicom import AE
from test_graceful_stop import PACS, PDF_CLASS, SC_CLASS, SR_CLASS, pacs, timeout_stop_seconds

from dicom_factory import DX, make_radiograph
from s3server import S3Server, running_seaweedfs
from serve_process import XRAYD, ServeProcess, clean_env, write_config

pytestmark = pytest.mark.slow

__all__ = ["pacs"]  # the fixture, imported for this module's tests

IMAGES = 3


def _config(tmp_path: Path, database_url: str, pacs: PACS, extra: str = "") -> Path:
    return write_config(
        tmp_path,
        database_url,
        extra=(
            "[study]\nquiet_seconds = 2\nmax_wait_seconds = 120\n"
            "[jobs]\npoll_seconds = 0.5\n"
            "[delivery]\npoll_seconds = 1.0\n"
            f'[[destinations]]\nname = "pacs"\nae_title = "PACS"\nhost = "127.0.0.1"\n'
            f'port = {pacs.port}\nsend = ["sr", "sc", "pdf"]\n' + extra
        ),
    )


@pytest.fixture
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with running_seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


def _object_store(host_dir: Path, server: S3Server, prefix: str) -> str:
    """The ``[object_store]`` tables of one host; its secret in a file of that host."""
    host_dir.mkdir(parents=True, exist_ok=True)
    secret = host_dir / "s3-secret"
    secret.write_text(server.secret_key + "\n")
    secret.chmod(0o600)
    return (
        '[object_store]\nbackend = "s3"\n'
        f'[object_store.s3]\nendpoint_url = "{server.endpoint}"\nallow_http = true\n'
        f'bucket = "{server.bucket}"\nprefix = "{prefix}"\n'
        f'access_key_id = "{server.access_key}"\nsecret_access_key_file = "{secret}"\n'
        "connect_timeout_seconds = 2\nread_timeout_seconds = 30\n"
    )


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _jobs(cfg: Path) -> list[tuple[str, str | None]]:
    from config.loader import load_settings
    from storage.jobs import list_jobs
    from xrayd.runtime.node import open_storage

    storage = open_storage(load_settings(cfg), create_if_empty=False, require_current=True)
    try:
        return [(j.state, j.worker_id) for j in list_jobs(storage.sessions)]
    finally:
        storage.engine.dispose()


def test_a_listener_and_a_worker_process_share_the_work(
    tmp_path: Path, database_url: str, pacs: PACS
) -> None:
    cfg = _config(tmp_path, database_url, pacs)
    listener = ServeProcess(cfg, command=("listener",))
    worker = None
    try:
        worker = ServeProcess(cfg, command=("worker", "--queues", "analysis,delivery"))
        study = make_radiograph().StudyInstanceUID
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(DX, "1.2.840.10008.1.2.1")
        assoc = ae.associate("127.0.0.1", listener.port, ae_title="XRAYD")
        assert assoc.is_established
        for seed in range(IMAGES):
            rsp = assoc.send_c_store(make_radiograph(study_uid=study, seed=seed))
            assert rsp.Status == 0
        assoc.release()

        pacs.wait_for(1 + IMAGES + 1, timeout=240)  # SR, one SC per image, the PDF
        for process in (listener, worker):
            process.terminate()
            assert process.proc.wait(timeout=timeout_stop_seconds()) == 0, process.stderr_text()
        for process in (listener, worker):
            assert "Traceback" not in process.stderr_text()
    finally:
        listener.kill()
        if worker is not None:
            worker.kill()

    classes = Counter(cls for cls, _ in pacs.received)
    assert classes == {SR_CLASS: 1, SC_CLASS: IMAGES, PDF_CLASS: 1}, pacs.received
    [(state, worker_id)] = _jobs(cfg)
    assert state == "done"
    assert worker_id is not None and f":{worker.proc.pid}:" in worker_id  # the worker ran it


def test_hosts_without_a_shared_filesystem_share_the_work_through_s3(
    tmp_path: Path, pg_url: str, pacs: PACS, s3: S3Server
) -> None:
    """Listener and worker on PostgreSQL and S3, each with its own data directory."""
    prefix = f"split-{uuid.uuid4().hex[:10]}/"
    listener_host, worker_host = tmp_path / "listener-host", tmp_path / "worker-host"
    listener_cfg = _config(listener_host, pg_url, pacs, _object_store(listener_host, s3, prefix))
    worker_cfg = _config(worker_host, pg_url, pacs, _object_store(worker_host, s3, prefix))
    assert "listener-host" in listener_cfg.read_text() and "worker-host" in worker_cfg.read_text()
    listener = ServeProcess(listener_cfg, command=("listener",))
    worker = None
    try:
        worker = ServeProcess(worker_cfg, command=("worker", "--queues", "analysis,delivery"))
        study = make_radiograph().StudyInstanceUID
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(DX, "1.2.840.10008.1.2.1")
        assoc = ae.associate("127.0.0.1", listener.port, ae_title="XRAYD")
        assert assoc.is_established
        for seed in range(IMAGES):
            rsp = assoc.send_c_store(make_radiograph(study_uid=study, seed=seed))
            assert rsp.Status == 0
        assoc.release()

        pacs.wait_for(1 + IMAGES + 1, timeout=240)  # SR, one SC per image, the PDF
        for process in (listener, worker):
            process.terminate()
            assert process.proc.wait(timeout=timeout_stop_seconds()) == 0, process.stderr_text()
        for process in (listener, worker):
            assert "Traceback" not in process.stderr_text()
    finally:
        listener.kill()
        if worker is not None:
            worker.kill()

    classes = Counter(cls for cls, _ in pacs.received)
    assert classes == {SR_CLASS: 1, SC_CLASS: IMAGES, PDF_CLASS: 1}, pacs.received
    [(state, worker_id)] = _jobs(worker_cfg)
    assert state == "done"
    assert worker_id is not None and f":{worker.proc.pid}:" in worker_id
    # the bytes live in S3 (instances under their hashed keys), in neither host's spool
    client = s3.client()
    listed = client.list_objects_v2(Bucket=s3.bucket, Prefix=prefix).get("Contents", [])
    keys = [item["Key"][len(prefix) :] for item in listed]
    study_hash = hashlib.sha256(study.encode()).hexdigest()
    assert len([k for k in keys if k.startswith("objects/") and study_hash in k]) == IMAGES
    assert any(k.startswith("results/") for k in keys)
    assert not any(study in k for k in keys)
    for host in (listener_host, worker_host):
        spool = host / "data" / "spool"
        assert _files(spool) == [], _files(spool)


def test_an_unknown_queue_is_a_configuration_error(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    done = subprocess.run(
        [XRAYD, "worker", "--queues", "analysis,bogus", "--config", str(cfg)],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "bogus" in done.stderr and "analysis, delivery, retention, retrain" in done.stderr
