"""The sweep of unreferenced objects (storage.store_sweep) on the local spool and on a real S3
server (SeaweedFS), with SQLite and PostgreSQL, and ``xrayd store sweep``.

Seeded: instances and result objects whose rows committed, a conflicting copy the listener kept
(named by its audit event), and orphans: an instance's bytes and a result object with no row, as
a listener or worker killed between the upload and the commit leaves them. S3 keeps the time of
the last write itself, so "old" is reached by sweeping at a later ``now``; on the spool files
are also aged with ``os.utime``.
"""

from __future__ import annotations

import getpass
import hashlib
import itertools
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from test_store_ops import s3_store

from storage import audit
from storage.audit import Action
from storage.bytestore import ByteStore, LocalByteStore, key_for
from storage.schema import AuditEvent, Instance, Result, Series, Study
from storage.spool import Spool
from storage.store_sweep import SweepRefusedError, sweep_unreferenced
from xrayd.cli.main import main

from helpers import make_settings
from s3server import S3Server, running_seaweedfs

pytestmark = pytest.mark.timeout(180)

DAY = timedelta(days=1)
_uids = itertools.count(1)


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with running_seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ByteStore:
    if request.param == "local":
        return LocalByteStore(Spool(tmp_path / "spool"))
    server: S3Server = request.getfixturevalue("s3")
    return s3_store(server, tmp_path)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Seeded:
    instance: str
    result: str


def seed(sm: sessionmaker[Session], store: ByteStore, data: bytes) -> Seeded:
    """An analysed study as the listener and a worker leave it: bytes stored, rows committed."""
    n = next(_uids)
    study_uid, sop_uid = f"1.2.826.0.1.77.{n}", f"1.2.826.0.1.77.{n}.1.1"
    key = key_for("instance", study_uid, sop_uid, _sha(data))
    result_uid = f"1.2.826.0.1.77.{n}.9"
    result = key_for("result", study_uid, "sr", result_uid, "dcm")
    store.put(key, data)
    store.put(result, b"SR " + data[:10])
    when = datetime.now(UTC) - 3 * DAY
    with sm.begin() as session:
        study = Study(
            study_instance_uid=study_uid,
            state="analysed",
            first_received_at=when,
            last_received_at=when,
            instance_count=1,
            calling_ae_title="CR1",
        )
        session.add(study)
        session.flush()
        series = Series(study_id=study.id, series_instance_uid=f"{study_uid}.1", modality="DX")
        session.add(series)
        session.flush()
        session.add(
            Instance(
                series_id=series.id,
                study_id=study.id,
                sop_instance_uid=sop_uid,
                sop_class_uid="1.2.840.10008.5.1.4.1.1.1.1",
                transfer_syntax_uid="1.2.840.10008.1.2.1",
                spool_path=key,
                size_bytes=len(data),
                sha256=_sha(data),
                received_at=when,
                calling_ae_title="CR1",
            )
        )
        session.add(
            Result(study_id=study.id, kind="sr", sop_instance_uid=result_uid, file_path=result)
        )
    return Seeded(key, result)


def kept_conflict(sm: sessionmaker[Session], store: ByteStore, of: Seeded) -> str:
    """A conflicting copy the listener kept beside ``of`` (named only by its audit event)."""
    other = b"a conflicting copy"
    key = of.instance.rsplit("-", 1)[0] + f"-{_sha(other)[:16]}.dcm"
    store.put(key, other)
    audit.record(
        sm,
        actor="dicom:CR1",
        action=Action.INSTANCE_CONFLICT,
        object_type="instance",
        object_id="1.2.826.0.1.77",
        detail={"kept_copy": key, "host": "127.0.0.1"},
    )
    return key


def orphans(store: ByteStore) -> tuple[str, str]:
    """An instance's bytes and a result object whose rows never committed."""
    n = next(_uids)
    instance = key_for("instance", f"1.2.826.0.1.88.{n}", f"1.2.826.0.1.88.{n}.1", _sha(b"o"))
    result = key_for("result", f"1.2.826.0.1.88.{n}", "sc", f"1.2.826.0.1.88.{n}.9", "dcm")
    store.put(instance, b"orphaned image")
    store.put(result, b"orphaned SR")
    return instance, result


def test_old_orphans_go_referenced_objects_and_recent_orphans_stay(
    sm: sessionmaker[Session], store: ByteStore, caplog: pytest.LogCaptureFixture
) -> None:
    seeded = [seed(sm, store, os.urandom(1000 + n)) for n in range(3)]
    conflict = kept_conflict(sm, store, seeded[0])
    orphan_instance, orphan_result = orphans(store)
    kept = [k for s in seeded for k in (s.instance, s.result)] + [conflict]
    every = [*kept, orphan_instance, orphan_result]
    now = datetime.now(UTC)

    # now: every object was written within the grace period, the orphans too
    report = sweep_unreferenced(sm, store, now, dry_run=False, chunk=2)
    assert (report.examined, report.recent, report.unreferenced, report.deleted) == (9, 9, 0, 0)
    assert report.by_prefix == {"objects/": 5, "results/": 4}
    assert all(store.exists(k) for k in every)

    # two days on, a dry run: the orphans are named as such, nothing is deleted
    later = now + 2 * DAY
    report = sweep_unreferenced(sm, store, later, dry_run=True, chunk=2)
    assert (report.examined, report.recent, report.referenced) == (9, 0, 7)
    assert (report.unreferenced, report.deleted) == (2, 0)
    assert report.unreferenced_bytes == len(b"orphaned image") + len(b"orphaned SR")
    assert all(store.exists(k) for k in every)

    # and for real: the orphans go, what a row names stays (the kept conflicting copy too)
    caplog.set_level(logging.DEBUG, logger="storage.store_sweep")
    report = sweep_unreferenced(sm, store, later, dry_run=False, chunk=2)
    assert (report.unreferenced, report.deleted, report.spared) == (2, 2, 0)
    assert report.deleted_bytes == len(b"orphaned image") + len(b"orphaned SR")
    assert not store.exists(orphan_instance) and not store.exists(orphan_result)
    assert all(store.exists(k) for k in kept)
    info = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert info and not [m for m in info for k in every if k in m], "no keys at INFO"
    debug = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)
    assert orphan_instance in debug  # keys are hashes: DEBUG may name them

    assert sweep_unreferenced(sm, store, later, dry_run=False).deleted == 0  # nothing left


def test_one_sweep_of_the_spool_with_files_of_every_age(
    sm: sessionmaker[Session], tmp_path: Path
) -> None:
    spool = Spool(tmp_path / "spool")
    store = LocalByteStore(spool)
    now = datetime.now(UTC)
    old = (now - 2 * DAY).timestamp()
    referenced = seed(sm, store, b"referenced image")
    old_orphan, recent_orphan = orphans(store)
    for key in (referenced.instance, referenced.result, old_orphan):
        os.utime(spool.absolute(key), (old, old))
    spool.tmp_dir().joinpath("upload.part").write_bytes(b"being received")
    os.utime(spool.tmp_dir() / "upload.part", (old, old))

    report = sweep_unreferenced(sm, store, now, older_than=DAY, dry_run=False)

    assert (report.referenced, report.recent, report.deleted) == (2, 1, 1)
    assert not store.exists(old_orphan)
    for key in (referenced.instance, referenced.result, recent_orphan):
        assert store.exists(key)
    assert (spool.tmp_dir() / "upload.part").exists(), "tmp/ is not the sweep's"


def test_refusals(sm: sessionmaker[Session], tmp_path: Path) -> None:
    store = LocalByteStore(Spool(tmp_path / "spool"))
    later = datetime.now(UTC) + 2 * DAY
    with pytest.raises(SweepRefusedError, match="at least 1 h"):
        sweep_unreferenced(sm, store, later, older_than=timedelta(minutes=59), dry_run=True)
    # an empty database and an empty store: nothing to do
    assert sweep_unreferenced(sm, store, later, dry_run=False).examined == 0
    # an empty database beside a store with objects: a wrong database_url, most likely
    orphan = orphans(store)[0]
    with pytest.raises(SweepRefusedError, match="database holds no instance"):
        sweep_unreferenced(sm, store, later, dry_run=False)
    assert store.exists(orphan)


# -- the command -------------------------------------------------------------------------------


def test_xrayd_store_sweep(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    config = tmp_path / "xrayd.toml"
    config.write_text(f'[storage]\ndata_dir = "{data}"\n')
    from xrayd.runtime.node import open_storage

    storage = open_storage(make_settings(data), create_if_empty=True, require_current=True)
    store = storage.store
    assert isinstance(store, LocalByteStore)
    seed(storage.sessions, store, b"an image")
    orphan, young = orphans(store)
    old = (datetime.now(UTC) - 2 * DAY).timestamp()
    os.utime(storage.spool.absolute(orphan), (old, old))

    assert main(["store", "sweep", "--older-than-hours", "0.5", "--config", str(config)]) == 2
    assert "at least 1" in capsys.readouterr().err

    assert main(["store", "sweep", "--dry-run", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "dry run" in out and "would delete:  1" in out and orphan not in out
    assert store.exists(orphan)

    assert main(["store", "sweep", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "deleted:       1" in out and "recent:        3" in out  # the seeded study too
    assert not store.exists(orphan) and store.exists(young)
    with storage.sessions() as session:
        [event] = session.scalars(select(AuditEvent).where(AuditEvent.action == "store.swept"))
    assert event.detail["deleted"] == 1 and event.actor == f"cli:{getpass.getuser()}"
    storage.engine.dispose()
