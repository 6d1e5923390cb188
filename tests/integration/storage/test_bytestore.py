"""The byte-store contract, on the local spool and on a real S3 server (SeaweedFS, loopback).

The same tests run on :class:`LocalByteStore` and :class:`S3ByteStore`; then S3 alone: wrong
credentials, a truncated body, an aborted multipart upload, a frozen and a stopped server, and
a second store instance (as on another host) reading what the first wrote.
"""

from __future__ import annotations

import hashlib
import os
import time
import traceback
import tracemalloc
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError
from pydantic import ValidationError

from config.errors import ConfigError
from config.settings import ObjectStoreSettings, Settings
from storage.bytestore import (
    ByteStore,
    ByteStoreDeniedError,
    ByteStoreError,
    ByteStoreIntegrityError,
    ByteStoreNotFoundError,
    ByteStoreUnavailableError,
    InvalidKeyError,
    LocalByteStore,
    S3ByteStore,
    key_for,
    open_byte_store,
)
from storage.bytestore import fetch_dir as process_fetch_dir
from storage.spool import Spool

from s3server import S3Server, running_seaweedfs, start_seaweedfs

pytestmark = pytest.mark.timeout(120)

STUDY = "1.2.826.0.1.3680043.8.498.1"
SOP = "1.2.826.0.1.3680043.8.498.1.1.1"
MiB = 1024 * 1024
PART = 5 * MiB


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with running_seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


def s3_store(server: S3Server, tmp_path: Path, **overrides: Any) -> S3ByteStore:
    options: dict[str, Any] = {
        "bucket": server.bucket,
        "endpoint_url": server.endpoint,
        "prefix": f"t-{uuid.uuid4().hex[:12]}/",  # each test its own corner of the bucket
        "access_key_id": server.access_key,
        "secret_access_key": server.secret_key,
        "connect_timeout": 2,
        "read_timeout": 10,
        "max_attempts": 2,
        "part_size": PART,
        "tmp_dir": tmp_path,
    }
    options.update(overrides)
    return S3ByteStore(**options)


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ByteStore:
    if request.param == "local":
        return LocalByteStore(Spool(tmp_path / "spool"))
    server: S3Server = request.getfixturevalue("s3")
    (tmp_path / "fetch-tmp").mkdir(exist_ok=True)
    return s3_store(server, tmp_path / "fetch-tmp")


@pytest.fixture
def fetch_dir(tmp_path: Path) -> Path:
    (tmp_path / "fetch-tmp").mkdir(exist_ok=True)
    return tmp_path / "fetch-tmp"


def instance_key(n: int = 0) -> str:
    content = hashlib.sha256(f"content {n}".encode()).hexdigest()
    return key_for("instance", STUDY, f"{SOP}.{n}", content)


# -- keys ---------------------------------------------------------------------------------------


def test_instance_keys_are_todays_spool_paths_and_hold_no_uid(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    digest = "ab" * 32
    assert key_for("instance", STUDY, SOP) == spool.relative_path_for(STUDY, SOP)
    assert key_for("instance", STUDY, SOP, digest) == spool.relative_path_for(STUDY, SOP, digest)
    result = key_for("result", STUDY, "sr", "2.25.123456789", "dcm")
    assert result.startswith("results/") and result.endswith(".dcm")
    for key in (key_for("instance", STUDY, SOP, digest), result):
        assert STUDY not in key and SOP not in key and "2.25.123456789" not in key
    with pytest.raises(InvalidKeyError):
        key_for("instance", STUDY, SOP, "not-a-digest")
    with pytest.raises(InvalidKeyError):
        key_for("result", STUDY, "../sr", "2.25.1", "dcm")
    with pytest.raises(InvalidKeyError):
        key_for("patient", "Doe^John")


# -- the contract, on both stores ---------------------------------------------------------------


def test_put_get_fetch_exists_size_delete(store: ByteStore, fetch_dir: Path) -> None:
    key, data = instance_key(1), os.urandom(100_000)
    assert not store.exists(key)
    store.put(key, data)
    assert store.exists(key)
    assert store.size(key) == len(data)
    assert store.get(key) == data
    with store.fetch(key) as path:
        assert path.read_bytes() == data
    if isinstance(store, S3ByteStore):
        assert path.parent == fetch_dir
        assert not path.exists(), "the downloaded copy is removed on exit"
        assert list(fetch_dir.iterdir()) == []
    else:
        assert path.exists(), "the local store lends its own file"
    store.delete(key)
    assert not store.exists(key)
    store.delete(key)  # idempotent
    with pytest.raises(ByteStoreNotFoundError):
        store.get(key)


def test_overwrite_with_same_and_other_bytes(store: ByteStore) -> None:
    key, data = instance_key(2), b"DICM" * 1000
    store.put(key, data)
    store.put(key, data)  # a retransmission: harmless
    assert store.get(key) == data
    store.put(key, b"other")
    assert store.get(key) == b"other"
    assert store.size(key) == 5


def test_missing_key_is_not_found_and_named(store: ByteStore) -> None:
    key = instance_key(3)
    assert not store.exists(key)
    for call in (store.get, store.size):
        with pytest.raises(ByteStoreNotFoundError) as err:
            call(key)
        assert key in str(err.value) and store.describe() in str(err.value)
    with pytest.raises(ByteStoreNotFoundError), store.fetch(key):
        pass
    store.delete(key)


@pytest.mark.parametrize(
    "key",
    [
        "",
        "/objects/a.dcm",
        "objects/../../evil",
        "..",
        "objects//a.dcm",
        "objects/./a.dcm",
        "objects/a.dcm/",
        "objects\\a.dcm",
        "objects/a b.dcm",
        "objects/é.dcm",
        "objects/a\x00.dcm",
        "objects/" + "a" * 1100,
    ],
)
def test_bad_keys_are_refused_before_any_io(store: ByteStore, key: str, tmp_path: Path) -> None:
    for call in (
        lambda: store.put(key, b"x"),
        lambda: store.get(key),
        lambda: store.exists(key),
        lambda: store.size(key),
        lambda: store.delete(key),
    ):
        with pytest.raises(InvalidKeyError) as err:
            call()
        if key.strip("/."):
            assert key not in str(err.value), "a refused key is not echoed"
    assert not (tmp_path.parent / "evil").exists()


def test_put_file_streams_a_large_file(store: ByteStore, tmp_path: Path) -> None:
    size = 24 * MiB + 123  # five 5 MiB parts on S3
    source = tmp_path / "big.dcm"
    digest = hashlib.sha256()
    with source.open("wb") as fh:
        for _ in range(24):
            block = os.urandom(MiB)
            fh.write(block)
            digest.update(block)
        fh.write(b"x" * 123)
        digest.update(b"x" * 123)
    key = instance_key(4)
    tracemalloc.start()
    try:
        store.put_file(key, source)
        put_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        with store.fetch(key) as path:
            fetched = hashlib.sha256()
            with path.open("rb") as fh:
                while block := fh.read(MiB):
                    fetched.update(block)
        fetch_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # a loose bound, far below the file's 24 MiB: the file is never held in memory
    assert put_peak < 8 * MiB, f"put_file peaked at {put_peak / MiB:.1f} MiB"
    assert fetch_peak < 8 * MiB, f"fetch peaked at {fetch_peak / MiB:.1f} MiB"
    assert fetched.hexdigest() == digest.hexdigest()
    assert store.size(key) == size
    if isinstance(store, S3ByteStore):  # uploaded in parts: S3's multipart ETag "<md5>-<parts>"
        head = store._client.head_object(Bucket=store._bucket, Key=store._key(key))
        assert head["ETag"].strip('"').endswith("-5")


def test_put_file_of_a_missing_source(store: ByteStore, tmp_path: Path) -> None:
    with pytest.raises(ByteStoreError, match="source"):
        store.put_file(instance_key(5), tmp_path / "absent.dcm")
    assert not store.exists(instance_key(5))


# -- S3 only ------------------------------------------------------------------------------------


def test_a_second_instance_reads_what_the_first_wrote(s3: S3Server, tmp_path: Path) -> None:
    """As a worker on another host would: its own client, the same settings."""
    writer = s3_store(s3, tmp_path)
    reader = s3_store(s3, tmp_path, prefix=writer._prefix)
    key, data = instance_key(6), os.urandom(50_000)
    writer.put(key, data)
    assert reader.get(key) == data
    assert not s3_store(s3, tmp_path).exists(key), "another prefix sees nothing"
    listed = s3.client(admin=True).list_objects_v2(Bucket=s3.bucket, Prefix=writer._prefix)
    assert [o["Key"] for o in listed["Contents"]] == [writer._prefix + key]
    assert SOP not in listed["Contents"][0]["Key"]


def test_wrong_secret_is_denied_and_never_shown(s3: S3Server, tmp_path: Path) -> None:
    wrong = "Wr0ng-" + s3.secret_key[6:]
    store = s3_store(s3, tmp_path, secret_access_key=wrong)
    s3_store(s3, tmp_path, prefix=store._prefix).put(instance_key(7), b"stored")
    for call in (
        lambda: store.put(instance_key(8), b"x"),
        lambda: store.get(instance_key(7)),
        lambda: store.size(instance_key(7)),
    ):
        started = time.monotonic()
        with pytest.raises(ByteStoreDeniedError) as err:
            call()
        assert time.monotonic() - started < 5
        assert isinstance(err.value, ByteStoreUnavailableError)
        text = "".join(traceback.format_exception(err.value)) + store.describe()
        assert wrong not in text and s3.secret_key not in text
        assert "access denied" in str(err.value) and s3.endpoint in str(err.value)


def test_a_truncated_body_is_refused_and_not_stored(s3: S3Server, tmp_path: Path) -> None:
    store = s3_store(s3, tmp_path)

    def truncate(request: Any, **_: Any) -> None:
        body = request.body
        data = body.read() if hasattr(body, "read") else body
        request.body = data[:-100]  # as if the connection lost the end of it
        request.headers["Content-Length"] = str(len(request.body))

    store._client.meta.events.register("before-send.s3.PutObject", truncate)
    with pytest.raises(ByteStoreIntegrityError, match="not stored"):
        store.put(instance_key(9), os.urandom(10_000))
    assert not store.exists(instance_key(9))


def test_a_failed_multipart_upload_leaves_nothing(s3: S3Server, tmp_path: Path) -> None:
    store = s3_store(s3, tmp_path)
    source = tmp_path / "big.dcm"
    source.write_bytes(os.urandom(PART + 1000))  # two parts

    def lose_part_two(request: Any, **_: Any) -> None:
        if "partNumber=2" in request.url:
            raise EndpointConnectionError(endpoint_url=request.url)

    store._client.meta.events.register("before-send.s3.UploadPart", lose_part_two)
    with pytest.raises(ByteStoreUnavailableError):
        store.put_file(instance_key(10), source)
    assert not store.exists(instance_key(10))
    uploads = s3.client(admin=True).list_multipart_uploads(Bucket=s3.bucket)
    assert not [u for u in uploads.get("Uploads", []) if u["Key"].startswith(store._prefix)]


def test_a_frozen_or_stopped_server_fails_within_the_timeouts(tmp_path: Path) -> None:
    server = start_seaweedfs(tmp_path / "seaweedfs")
    try:
        store = s3_store(server, tmp_path, connect_timeout=1, read_timeout=1, max_attempts=2)
        store.put(instance_key(11), b"before")
        # attempts x (connect + read timeouts + the 1 s botocore waits for "100 Continue"
        # before sending a body anyway) plus standard-mode backoff (< 1 s after one failure)
        bound = 2 * (1 + 1 + 1) + 2
        server.pause()  # accepts connections, answers nothing
        started = time.monotonic()
        with pytest.raises(ByteStoreUnavailableError, match=r"put .*ReadTimeoutError"):
            store.put(instance_key(12), b"x")
        assert time.monotonic() - started < bound
    finally:
        server.stop()
    started = time.monotonic()
    with pytest.raises(ByteStoreUnavailableError, match="EndpointConnectionError"):
        store.get(instance_key(11))
    assert time.monotonic() - started < bound


# -- settings and the factory -------------------------------------------------------------------


def _s3_settings(server: S3Server, tmp_path: Path, **s3: Any) -> ObjectStoreSettings:
    secret = tmp_path / "s3-secret"
    secret.write_text(server.secret_key + "\n")
    table: dict[str, Any] = {
        "endpoint_url": server.endpoint,
        "allow_http": True,
        "bucket": server.bucket,
        "prefix": f"f-{uuid.uuid4().hex[:8]}/",
        "access_key_id": server.access_key,
        "secret_access_key_file": str(secret),
        "part_size_mb": 5,
    }
    table.update(s3)
    settings = Settings.model_validate({"object_store": {"backend": "s3", "s3": table}})
    return settings.object_store


def test_open_byte_store_from_settings(s3: S3Server, tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    assert isinstance(open_byte_store(Settings().object_store, spool), LocalByteStore)
    store = open_byte_store(_s3_settings(s3, tmp_path), spool)
    assert isinstance(store, S3ByteStore)
    store.put(instance_key(13), b"via settings")
    assert store.get(instance_key(13)) == b"via settings"
    assert s3.secret_key not in store.describe()
    with store.fetch(instance_key(13)) as path:
        # this process's own folder: a later start removes it only once the process is gone
        assert path.parent == process_fetch_dir(spool, os.getpid())
        assert path.parent.parent == spool.tmp_dir()
    absent = _s3_settings(s3, tmp_path, secret_access_key_file=str(tmp_path / "absent"))
    with pytest.raises(ConfigError, match=r"secret_access_key_file: .* does not exist"):
        open_byte_store(absent, spool)
    empty = _s3_settings(s3, tmp_path)
    (tmp_path / "s3-secret").write_text("")
    with pytest.raises(ConfigError, match="is empty"):
        open_byte_store(empty, spool)


@pytest.mark.parametrize(
    ("table", "why"),
    [
        ({"bucket": "Bad_Bucket"}, "bucket"),
        ({"bucket": "ab"}, "bucket"),
        ({"bucket": "192.168.1.1"}, "bucket"),
        ({"bucket": "a..b"}, "bucket"),
        ({"bucket": "ok-bucket", "endpoint_url": "http://s3.example.org"}, "plain http"),
        ({"bucket": "ok-bucket", "endpoint_url": "http://127.0.0.1:9000"}, "plain http"),
        ({"bucket": "ok-bucket", "endpoint_url": "https://u:p@s3.example.org"}, "credentials"),
        ({"bucket": "ok-bucket", "endpoint_url": "https://s3.example.org/path"}, "only scheme"),
        ({"bucket": "ok-bucket", "access_key_id": "AK"}, "go together"),
        ({"bucket": "ok-bucket", "verify": False, "ca_file": "/etc/ca.pem"}, "verify"),
        ({"bucket": "ok-bucket", "prefix": "../x"}, "prefix"),
        ({"bucket": "ok-bucket", "part_size_mb": 4}, "part_size_mb"),
    ],
)
def test_settings_refuse(table: dict[str, Any], why: str) -> None:
    with pytest.raises(ValidationError, match=why):
        Settings.model_validate({"object_store": {"backend": "s3", "s3": table}})


def test_settings_need_the_s3_table_and_accept_loopback_http() -> None:
    with pytest.raises(ValidationError, match=r"object_store\.s3"):
        Settings.model_validate({"object_store": {"backend": "s3"}})
    table = {"bucket": "xrayd-images", "endpoint_url": "http://[::1]:8333", "allow_http": True}
    settings = Settings.model_validate({"object_store": {"backend": "s3", "s3": table}})
    assert settings.object_store.s3 is not None
    assert settings.object_store.s3.verify is True
