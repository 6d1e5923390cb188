"""Moving a single-box site's spool to object storage (storage.store_copy, ``xrayd store
copy-to-s3``) against a real S3 server (SeaweedFS), with SQLite and PostgreSQL.

A spool with instances, result objects and a kept conflicting copy is copied; a rerun skips
everything; ``--verify`` reads every object back and compares SHA-256s; an object missing
locally is reported, an instance whose bytes differ from its recorded digest is a mismatch, an
object the store holds with another size is copied again, and purged instances are not looked
for.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker
from test_store_ops import s3_store
from test_store_sweep import kept_conflict, seed

from storage.bytestore import LocalByteStore, S3ByteStore
from storage.schema import Instance
from storage.spool import Spool
from storage.store_copy import copy_referenced
from xrayd.cli.main import main
from xrayd.runtime.node import open_storage

from helpers import make_settings
from s3server import S3Server, running_seaweedfs

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with running_seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


def listing(store: S3ByteStore) -> dict[str, int]:
    return {o.key: o.size for o in store.list_objects("")}


def test_copy_rerun_verify_and_what_cannot_be_copied(
    sm: sessionmaker[Session], s3: S3Server, tmp_path: Path
) -> None:
    spool = Spool(tmp_path / "spool")
    local = LocalByteStore(spool)
    target = s3_store(s3, tmp_path)
    seeded = [seed(sm, local, bytes([n]) * (2000 + n)) for n in range(5)]
    conflict = kept_conflict(sm, local, seeded[0])
    keys = {k for s in seeded for k in (s.instance, s.result)} | {conflict}
    # a purged instance: retention deleted its file and marked its row; not looked for
    purged = seed(sm, local, b"purged image")
    local.delete(purged.instance)
    with sm.begin() as session:
        session.execute(
            update(Instance)
            .where(Instance.spool_path == purged.instance)
            .values(purged_at=datetime.now(UTC))
        )
    keys.add(purged.result)

    dry = copy_referenced(sm, local, target, dry_run=True, verify=False, chunk=3)
    assert (dry.objects, dry.copied, dry.skipped, dry.missing) == (12, 12, 0, 0)
    assert dry.copied_bytes == sum(local.size(k) for k in keys)
    assert listing(target) == {}

    seen: list[int] = []
    first = copy_referenced(
        sm,
        local,
        target,
        dry_run=False,
        verify=True,
        chunk=3,
        progress=lambda r: seen.append(r.objects),
    )
    assert (first.copied, first.skipped, first.missing, first.invalid) == (12, 0, 0, 0)
    assert (first.verified, first.mismatched) == (12, 0) and first.ok
    assert seen == [3, 6, 9, 12]
    assert listing(target) == {k: local.size(k) for k in keys}
    for key in keys:
        assert target.get(key) == local.get(key)

    again = copy_referenced(sm, local, target, dry_run=False, verify=True)
    assert (again.copied, again.skipped, again.verified, again.mismatched) == (0, 12, 12, 0)
    assert again.skipped_bytes == first.copied_bytes

    # an instance whose file is gone from the spool (and was never copied): reported
    lost = seed(sm, local, b"lost image")
    local.delete(lost.instance)
    # an upload cut short by hand: the store holds other bytes of another size
    target.put(seeded[1].result, b"short")
    # bytes that are not those the instance row recorded (a damaged spool file)
    target.delete(seeded[2].instance)
    local.put(seeded[2].instance, b"damaged")

    report = copy_referenced(sm, local, target, dry_run=False, verify=True)
    assert not report.ok
    assert (report.copied, report.missing) == (3, 1)  # the result, the damaged, the lost's SR
    assert report.missing_examples == [f"instance {_instance_id(sm, lost.instance)}"]
    assert target.get(seeded[1].result) == local.get(seeded[1].result)
    assert report.mismatched == 1
    assert report.mismatch_examples == [f"instance {_instance_id(sm, seeded[2].instance)}"]
    assert not target.exists(lost.instance)


def _instance_id(sm: sessionmaker[Session], key: str) -> int:
    with sm() as session:
        row = session.query(Instance.id).filter(Instance.spool_path == key).one()
        return int(row[0])


# -- the command -------------------------------------------------------------------------------


def _config(tmp_path: Path, s3: S3Server, prefix: str, backend: str = "s3") -> Path:
    secret = tmp_path / "s3-secret"
    secret.write_text(s3.secret_key + "\n")
    secret.chmod(0o600)
    config = tmp_path / f"xrayd-{backend}.toml"
    config.write_text(
        f"""
[storage]
data_dir = "{tmp_path / "data"}"

[object_store]
backend = "{backend}"

[object_store.s3]
endpoint_url = "{s3.endpoint}"
allow_http = true
bucket = "{s3.bucket}"
prefix = "{prefix}"
access_key_id = "{s3.access_key}"
secret_access_key_file = "{secret}"
"""
    )
    return config


def test_xrayd_store_copy_to_s3(
    s3: S3Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = f"site-{uuid.uuid4().hex[:8]}/"
    # the single box as it ran so far: the local spool
    storage = open_storage(
        make_settings(tmp_path / "data"), create_if_empty=True, require_current=True
    )
    assert isinstance(storage.store, LocalByteStore)
    seeded = [seed(storage.sessions, storage.store, bytes([n]) * 3000) for n in range(3)]
    lost = seed(storage.sessions, storage.store, b"lost")
    storage.store.delete(lost.instance)
    storage.engine.dispose()

    config = _config(tmp_path, s3, prefix, backend="local")
    assert main(["store", "copy-to-s3", "--config", str(config)]) == 2
    assert 'backend is "local"' in capsys.readouterr().err

    config = _config(tmp_path, s3, prefix)
    assert main(["store", "copy-to-s3", "--dry-run", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert "would copy:         7" in out and "missing locally:    1" in out
    assert s3.secret_key not in out

    assert main(["store", "copy-to-s3", "--verify", "--config", str(config)]) == 1  # the lost one
    out = capsys.readouterr().out
    assert "copied:             7" in out and "verified:           7" in out
    assert "mismatched:         0" in out and "missing locally:    1" in out
    for key in {k for s in seeded for k in (s.instance, s.result)}:
        assert key not in out  # counts and row ids, never keys
    store = s3_store(s3, tmp_path, prefix=prefix)
    assert len(listing(store)) == 7

    assert main(["store", "copy-to-s3", "--verify", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert "copied:             0" in out and "already there:      7" in out
    assert "verified:           7" in out
