"""Retention with the bytes in an S3-compatible object store (SeaweedFS, loopback).

Studies are seeded as in ``test_retention`` (rows and files in a spool), then their files are
moved to the object store under the same keys, as a node with ``[object_store] backend = "s3"``
keeps them. Retention by age deletes the objects and marks the rows; disk pressure on the local
spool deletes nothing (deleting objects would free nothing there). A store that cannot be
reached fails the batch: no row is marked, nothing is lost from the record.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker
from test_retention import MIB, NOW, POLICY, Seeded, purged, seed

from storage.bytestore import ByteStoreUnavailableError, S3ByteStore
from storage.retention import RetentionPolicy, run_retention
from storage.spool import DiskUsage, Spool

from s3server import S3Server, free_port, running_seaweedfs

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with running_seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


def s3_store(server: S3Server, tmp_path: Path, prefix: str, **overrides: object) -> S3ByteStore:
    options: dict[str, object] = {
        "bucket": server.bucket,
        "endpoint_url": server.endpoint,
        "prefix": prefix,
        "access_key_id": server.access_key,
        "secret_access_key": server.secret_key,
        "connect_timeout": 2,
        "read_timeout": 10,
        "max_attempts": 1,
        "tmp_dir": tmp_path,
    }
    options.update(overrides)
    return S3ByteStore(**options)  # type: ignore[arg-type]


def to_store(spool: Spool, store: S3ByteStore, seeded: Seeded) -> None:
    """Move a seeded study's files into the object store (the spool keeps none)."""
    for key in seeded.files:
        store.put_file(key, spool.absolute(key))
        spool.remove(key)


def full_disk() -> DiskUsage:
    return DiskUsage(free_bytes=0, total_bytes=100 * MIB)


def test_age_deletes_the_objects_and_disk_pressure_deletes_nothing(
    sm: sessionmaker[Session], s3: S3Server, tmp_path: Path
) -> None:
    spool = Spool(tmp_path / "spool")
    store = s3_store(s3, tmp_path, f"ret-{uuid.uuid4().hex[:10]}/")
    old = seed(sm, spool, age_days=40)
    young = seed(sm, spool, age_days=1)
    kept = seed(sm, spool, age_days=45, deliveries=("pending",))
    for s in (old, young, kept):
        to_store(spool, store, s)

    # the local spool is full: still only age decides, since objects free nothing here
    pressure = RetentionPolicy(max_age=POLICY.max_age, min_free_bytes=10 * MIB)
    report = run_retention(sm, spool, pressure, NOW, disk=full_disk, store=store)

    assert report.studies == report.by_age == 1 and report.by_pressure == 0
    assert report.bytes_freed == MIB + 2 * 4096
    assert purged(sm, old) and not purged(sm, young) and not purged(sm, kept)
    assert [store.exists(k) for k in old.files] == [False] * len(old.files)
    for s in (young, kept):
        assert all(store.exists(k) for k in s.files)


def test_an_unreachable_store_marks_nothing(sm: sessionmaker[Session], tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    old = seed(sm, spool, age_days=40)
    down = S3ByteStore(
        bucket="xrayd-test",
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        access_key_id="AK",
        secret_access_key="SK",
        connect_timeout=1,
        read_timeout=2,
        max_attempts=1,
    )
    policy = RetentionPolicy(max_age=timedelta(days=30))
    with pytest.raises(ByteStoreUnavailableError):
        run_retention(sm, spool, policy, NOW, disk=full_disk, store=down)
    assert not purged(sm, old)
