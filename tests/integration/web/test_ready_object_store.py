"""``GET /ready`` with the bytes in an S3-compatible object store (SeaweedFS on loopback).

The ``store`` check asks the store itself (``HeadBucket``): ready while the server answers with
the bucket; 503 naming the store check when the server is stopped, the bucket does not exist or
the credentials are refused. The answer names the cause only, never the credentials, and /ready
writes nothing to the store. A node on the local spool has no ``store`` check.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from storage.bytestore import LocalByteStore, S3ByteStore

from s3server import S3Server, running_seaweedfs, start_seaweedfs
from web_helpers import Web, make_web

pytestmark = pytest.mark.timeout(180)

OK = {"database": "ok", "model": "ok", "spool": "ok", "disk": "ok", "store": "ok"}


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with running_seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture
def web(tmp_path: Path) -> Iterator[Web]:
    web = make_web(tmp_path / "data")
    try:
        yield web
    finally:
        web.storage.engine.dispose()


def s3_store(server: S3Server, tmp_path: Path, **overrides: Any) -> S3ByteStore:
    options: dict[str, Any] = {
        "bucket": server.bucket,
        "endpoint_url": server.endpoint,
        "prefix": f"ready-{uuid.uuid4().hex[:8]}/",
        "access_key_id": server.access_key,
        "secret_access_key": server.secret_key,
        "connect_timeout": 2,
        "read_timeout": 10,
        "max_attempts": 3,
        "tmp_dir": tmp_path,
    }
    options.update(overrides)
    return S3ByteStore(**options)


def bucket_listing(server: S3Server) -> list[tuple[str, str]]:
    listed = server.client(admin=True).list_objects_v2(Bucket=server.bucket)
    return [(o["Key"], o["ETag"]) for o in listed.get("Contents", [])]


def test_ready_with_a_live_store_and_writes_nothing_to_it(
    web: Web, s3: S3Server, tmp_path: Path
) -> None:
    store = s3_store(s3, tmp_path)
    store.put("objects/aa/bb/cc/dd.dcm", b"an image")
    web.ctx.store = store
    before = bucket_listing(s3)
    for _ in range(3):
        r = web.client.get("/ready")
        assert r.status_code == 200, r.text
        assert r.json() == {"status": "ready", "checks": OK}
    assert bucket_listing(s3) == before


def test_a_local_store_has_no_store_check(web: Web) -> None:
    web.ctx.store = LocalByteStore(web.ctx.spool)
    r = web.client.get("/ready")
    assert r.status_code == 200, r.text
    assert "store" not in r.json()["checks"]


def _not_ready_only_for_the_store(web: Web) -> str:
    r = web.client.get("/ready")
    assert r.status_code == 503, r.text
    body = r.json()
    assert body["status"] == "not ready"
    assert {k: v for k, v in body["checks"].items() if k != "store"} == {
        k: v for k, v in OK.items() if k != "store"
    }
    store: str = body["checks"]["store"]
    return store


def test_a_missing_bucket_is_503_and_named(web: Web, s3: S3Server, tmp_path: Path) -> None:
    # the admin may see every bucket: the server says the bucket does not exist (404)
    web.ctx.store = s3_store(
        s3,
        tmp_path,
        bucket="no-such-bucket",
        access_key_id=s3.admin_access_key,
        secret_access_key=s3.admin_secret_key,
    )
    assert _not_ready_only_for_the_store(web) == "unreachable (the bucket does not exist)"


def test_a_bucket_these_credentials_may_not_use_is_denied(
    web: Web, s3: S3Server, tmp_path: Path
) -> None:
    # the test identity may use one bucket only: another one is refused (403), as AWS does
    # for a bucket that is not one's own
    web.ctx.store = s3_store(s3, tmp_path, bucket="someone-elses-bucket")
    check = _not_ready_only_for_the_store(web)
    assert check.startswith("denied (access denied (403)"), check
    assert "bucket" in check


def test_a_wrong_secret_is_denied_and_never_shown(web: Web, s3: S3Server, tmp_path: Path) -> None:
    wrong = "Wr0ng-" + s3.secret_key[6:]
    web.ctx.store = s3_store(s3, tmp_path, secret_access_key=wrong)
    r = web.client.get("/ready")
    check = _not_ready_only_for_the_store(web)
    assert check.startswith("denied (access denied"), check
    for secret in (wrong, s3.secret_key, s3.access_key, s3.endpoint):
        assert secret not in r.text


def test_a_stopped_store_is_503_and_ready_again_with_another(web: Web, tmp_path: Path) -> None:
    server = start_seaweedfs(tmp_path / "seaweedfs")
    try:
        web.ctx.store = s3_store(server, tmp_path)
        assert web.client.get("/ready").json()["checks"]["store"] == "ok"
    finally:
        server.stop()
    check = _not_ready_only_for_the_store(web)
    assert check == "unreachable (cannot connect to the server (EndpointConnectionError))"
    assert server.endpoint not in check  # the cause, not where the store is
    assert web.client.get("/health").status_code == 200  # alive, just not ready
