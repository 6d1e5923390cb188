"""The byte stores' operator tools, on the local spool and on a real S3 server (SeaweedFS):
``check`` (is the store usable), ``list_objects`` (what is stored under a prefix) and
``delete_if_older`` (delete only what was not written again since a cut-off).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from storage.bytestore import (
    ByteStore,
    ByteStoreDeniedError,
    ByteStoreUnavailableError,
    InvalidKeyError,
    LocalByteStore,
    S3ByteStore,
    StoredObject,
)
from storage.spool import Spool

from s3server import S3Server, running_seaweedfs, start_seaweedfs

pytestmark = pytest.mark.timeout(180)

INSTANCE = "objects/ab/cd/" + "ab" * 32 + "/" + "cd" * 20 + "-" + "ef" * 8 + ".dcm"
RESULT = "results/ab/" + "ab" * 32 + "/sr-" + "12" * 32 + ".dcm"
PAST = datetime(2020, 1, 1, tzinfo=UTC)
FUTURE = datetime(2100, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with running_seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


def s3_store(server: S3Server, tmp_path: Path, **overrides: Any) -> S3ByteStore:
    options: dict[str, Any] = {
        "bucket": server.bucket,
        "endpoint_url": server.endpoint,
        "prefix": f"ops-{uuid.uuid4().hex[:10]}/",  # each test its own corner of the bucket
        "access_key_id": server.access_key,
        "secret_access_key": server.secret_key,
        "connect_timeout": 2,
        "read_timeout": 10,
        "max_attempts": 2,
        "tmp_dir": tmp_path,
    }
    options.update(overrides)
    return S3ByteStore(**options)


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ByteStore:
    if request.param == "local":
        return LocalByteStore(Spool(tmp_path / "spool"))
    server: S3Server = request.getfixturevalue("s3")
    return s3_store(server, tmp_path)


# -- check ---------------------------------------------------------------------------------------


def test_check_a_usable_store(store: ByteStore) -> None:
    if isinstance(store, LocalByteStore):
        store.put(INSTANCE, b"x")  # the spool's root exists once something was written
    store.check()


def test_check_a_missing_spool(tmp_path: Path) -> None:
    store = LocalByteStore(Spool(tmp_path / "absent"))
    with pytest.raises(ByteStoreUnavailableError) as err:
        store.check()
    assert err.value.reason == "the spool directory is missing"
    assert not (tmp_path / "absent").exists(), "the check creates nothing"


def test_check_tells_a_missing_bucket_refused_credentials_and_no_server_apart(
    s3: S3Server, tmp_path: Path
) -> None:
    admin = {"access_key_id": s3.admin_access_key, "secret_access_key": s3.admin_secret_key}
    missing = s3_store(s3, tmp_path, bucket="no-such-bucket", **admin)
    with pytest.raises(ByteStoreUnavailableError) as err:
        missing.check()
    assert not isinstance(err.value, ByteStoreDeniedError)
    assert err.value.reason == "the bucket does not exist"
    assert "bucket no-such-bucket" in str(err.value) and s3.endpoint in str(err.value)

    wrong = "Wr0ng-" + s3.secret_key[6:]
    with pytest.raises(ByteStoreDeniedError) as denied:
        s3_store(s3, tmp_path, secret_access_key=wrong).check()
    assert "access denied" in denied.value.reason
    assert wrong not in str(denied.value) and s3.secret_key not in str(denied.value)

    server = start_seaweedfs(tmp_path / "stopped")
    gone = s3_store(server, tmp_path)
    gone.check()
    server.stop()
    with pytest.raises(ByteStoreUnavailableError) as down:
        gone.check()
    assert not isinstance(down.value, ByteStoreDeniedError)
    assert down.value.reason == "cannot connect to the server (EndpointConnectionError)"


# -- list_objects --------------------------------------------------------------------------------


def test_list_objects_by_prefix(store: ByteStore) -> None:
    other = INSTANCE.replace("objects/ab/cd/", "objects/ab/ce/")
    for key, data in ((INSTANCE, b"12345"), (other, b"1"), (RESULT, b"123")):
        store.put(key, data)
    listed = list(store.list_objects("objects/"))
    assert sorted((o.key, o.size) for o in listed) == [(INSTANCE, 5), (other, 1)]
    assert [o.key for o in store.list_objects("results/")] == [RESULT]
    assert sorted(o.key for o in store.list_objects("")) == sorted([INSTANCE, other, RESULT])
    assert [o.key for o in store.list_objects("objects/ab/ce/")] == [other]
    assert sorted(o.key for o in store.list_objects("objects/ab/c")) == [INSTANCE, other]
    assert list(store.list_objects("nothing/")) == []
    for o in listed:
        assert o.modified.tzinfo is UTC
        # the write's own date (S3 keeps whole seconds): not a time zone away from it
        assert abs(o.modified - datetime.now(UTC)) < timedelta(hours=1)
    with pytest.raises(InvalidKeyError):
        list(store.list_objects("../"))


def test_the_spool_listing_leaves_out_tmp_links_and_strange_names(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    store = LocalByteStore(spool)
    store.put(INSTANCE, b"image")
    (spool.root / "objects" / "ab" / "bad name.dcm").write_bytes(b"x")  # no key has a space
    (spool.root / "objects" / "ab" / "link.dcm").symlink_to(spool.absolute(INSTANCE))
    (spool.root / "objects" / "ab" / "empty-dir").mkdir()
    os.mkfifo(spool.root / "objects" / "ab" / "fifo.dcm")
    spool.tmp_dir().joinpath("upload.part").write_bytes(b"in flight")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.dcm").write_bytes(b"not the spool's")
    (spool.root / "objects" / "elsewhere").symlink_to(outside, target_is_directory=True)
    assert [o.key for o in store.list_objects("")] == [INSTANCE]
    assert [o.key for o in store.list_objects("objects/")] == [INSTANCE]
    assert list(store.list_objects("tmp/")) == []


def test_s3_lists_past_a_page(s3: S3Server, tmp_path: Path) -> None:
    store = s3_store(s3, tmp_path)
    keys = [f"objects/00/00/{n:05d}.dcm" for n in range(1005)]  # ListObjectsV2 pages: 1,000
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: store.put(k, b"x"), keys))
    store.put(RESULT, b"r")
    listed = list(store.list_objects("objects/"))
    assert [o.key for o in listed] == keys  # S3 lists in key order
    assert all(isinstance(o, StoredObject) and o.size == 1 for o in listed)


def test_s3_lists_only_its_own_prefix(s3: S3Server, tmp_path: Path) -> None:
    mine, theirs = s3_store(s3, tmp_path), s3_store(s3, tmp_path)
    mine.put(INSTANCE, b"mine")
    theirs.put(RESULT, b"theirs")
    assert [o.key for o in mine.list_objects("")] == [INSTANCE]
    assert [o.key for o in theirs.list_objects("")] == [RESULT]


# -- delete_if_older -----------------------------------------------------------------------------


def test_delete_if_older(store: ByteStore) -> None:
    store.put(INSTANCE, b"12345")
    assert store.delete_if_older(INSTANCE, PAST) is None, "written after the cut-off: kept"
    assert store.get(INSTANCE) == b"12345"
    assert store.delete_if_older(INSTANCE, FUTURE) == 5
    assert not store.exists(INSTANCE)
    assert store.delete_if_older(INSTANCE, FUTURE) is None, "already gone"
    with pytest.raises(InvalidKeyError):
        store.delete_if_older("../x", FUTURE)


def test_the_spool_puts_back_a_file_written_again(tmp_path: Path) -> None:
    """The file is moved aside before its date is read: one written since the cut-off goes
    back where it was, nothing is left in tmp/, and an old one is removed with its empty
    folder."""
    spool = Spool(tmp_path / "spool")
    store = LocalByteStore(spool)
    store.put(INSTANCE, b"resent")
    cutoff = datetime.now(UTC) - timedelta(days=1)
    assert store.delete_if_older(INSTANCE, cutoff) is None
    assert store.get(INSTANCE) == b"resent"
    assert list(spool.tmp_dir().iterdir()) == []
    old = (cutoff - timedelta(days=1)).timestamp()
    os.utime(spool.absolute(INSTANCE), (old, old))
    assert store.delete_if_older(INSTANCE, cutoff) == 6
    assert not spool.absolute(INSTANCE).parent.exists()
    assert list(spool.tmp_dir().iterdir()) == []
