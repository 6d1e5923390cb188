"""Spool retention (storage.retention) on seeded studies, on SQLite and PostgreSQL.

Each seeded study has one received instance (a 1 MiB file) and, when analysed, an ``analysis``
row, a heatmap file (local) and an SR file with deliveries in the given states. Disk pressure
comes from an injected free-space callable that counts the bytes really left in the spool.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from storage.instances import InstanceRecord, StoreOutcome, record_instance
from storage.retention import (
    AUDIT_ACTION,
    RetentionPolicy,
    protected_study_ids,
    purge_target_bytes,
    run_retention,
)
from storage.schema import (
    AuditEvent,
    Delivery,
    Instance,
    Job,
    Override,
    Result,
    Series,
    Study,
    ValidationCase,
)
from storage.spool import DiskUsage, Spool

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
MIB = 1024 * 1024
POLICY = RetentionPolicy(max_age=timedelta(days=30))
_uids = itertools.count(1)


@dataclass(frozen=True)
class Seeded:
    study_id: int
    files: tuple[str, ...]  # spool paths: instance first, then result files


def seed(
    sm: sessionmaker[Session],
    spool: Spool,
    *,
    age_days: float,
    state: str = "analysed",
    decision: str | None = "absent",
    deliveries: tuple[str, ...] = ("sent",),
    reviewed: bool = False,
    job_state: str = "done",
) -> Seeded:
    n = next(_uids)
    when = NOW - timedelta(days=age_days)
    study_uid, sop_uid = f"1.2.826.0.1.{n}", f"1.2.826.0.1.{n}.1.1"
    rel = spool.relative_path_for(study_uid, sop_uid, "ab" * 32)
    spool.write_atomic(rel, bytes(MIB))
    files = [rel]
    with sm.begin() as session:
        study = Study(
            study_instance_uid=study_uid,
            state=state,
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
                spool_path=rel,
                size_bytes=MIB,
                sha256="ab" * 32,
                received_at=when,
                calling_ae_title="CR1",
            )
        )
        job = Job(
            queue="analysis",
            study_id=study.id,
            kind="analyse",
            state=job_state,
            next_attempt_at=when,
        )
        session.add(job)
        session.flush()
        if state == "analysed":
            analysis = Result(
                study_id=study.id, job_id=job.id, kind="analysis", detail={"decision": decision}
            )
            session.add(analysis)
            for kind, ext in (("heatmap", "png"), ("sr", "dcm")):
                path = f"results/{study.id:04d}/{kind}-{n}.{ext}"
                spool.write_atomic(path, b"x" * 4096)
                files.append(path)
                result = Result(
                    study_id=study.id,
                    job_id=job.id,
                    kind=kind,
                    sop_instance_uid=f"{study_uid}.9.{kind == 'sr':d}",
                    file_path=path,
                    detail={},
                )
                session.add(result)
                session.flush()
                if kind == "sr":
                    for i, d_state in enumerate(deliveries):
                        session.add(
                            Delivery(
                                result_id=result.id,
                                destination_name=f"pacs{i}",
                                state=d_state,
                            )
                        )
            session.flush()
            if reviewed:
                session.add(
                    Override(
                        study_id=study.id,
                        user_name="rad",
                        ai_label={"decision": decision},
                        radiologist_label={"fracture": "absent"},
                        result_id=analysis.id,
                        agree=False,
                    )
                )
        return Seeded(study.id, tuple(files))


class SpoolDisk:
    """Free space of a pretend 100 MiB filesystem holding exactly the spool's files."""

    def __init__(self, spool: Spool, total: int = 100 * MIB) -> None:
        self.spool = spool
        self.total = total

    def __call__(self) -> DiskUsage:
        used = sum(p.stat().st_size for p in self.spool.root.rglob("*") if p.is_file())
        return DiskUsage(free_bytes=self.total - used, total_bytes=self.total)


def present(spool: Spool, s: Seeded) -> list[bool]:
    return [spool.absolute(f).is_file() for f in s.files]


def purged(sm: sessionmaker[Session], s: Seeded) -> bool:
    """Rows still there, marked: instance purged_at set, result file paths NULL."""
    with sm() as session:
        inst = session.scalars(select(Instance).where(Instance.study_id == s.study_id)).one()
        files = session.scalars(
            select(Result.file_path).where(Result.study_id == s.study_id, Result.kind != "analysis")
        ).all()
        assert session.get(Study, s.study_id) is not None
    if inst.purged_at is None:
        assert all(f is not None for f in files)
        return False
    assert inst.purged_at == NOW and list(files) == [None] * len(files)
    return True


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    return Spool(tmp_path / "spool")


@pytest.fixture
def seeded(sm: sessionmaker[Session], spool: Spool) -> dict[str, Seeded]:
    """Old (40 days) and new studies in every situation retention must tell apart."""
    return {
        # purged by age: old, analysed, nothing pending, nothing to review
        "old_absent_delivered": seed(sm, spool, age_days=40),
        "old_no_decision": seed(sm, spool, age_days=41, decision=None),
        "old_no_destination": seed(sm, spool, age_days=42, deliveries=()),
        "old_sent_twice": seed(sm, spool, age_days=43, deliveries=("sent", "sent")),
        # kept whatever happens
        "old_pending": seed(sm, spool, age_days=44, deliveries=("sent", "pending")),
        "old_dead": seed(sm, spool, age_days=45, deliveries=("dead",)),
        "old_present_unreviewed": seed(sm, spool, age_days=46, decision="present"),
        "old_indeterminate_unreviewed": seed(sm, spool, age_days=47, decision="indeterminate"),
        "old_present_reviewed": seed(sm, spool, age_days=48, decision="present", reviewed=True),
        "old_absent_reviewed": seed(sm, spool, age_days=49, reviewed=True),
        "old_receiving": seed(sm, spool, age_days=50, state="receiving", job_state="queued"),
        "old_failed": seed(sm, spool, age_days=51, state="failed", job_state="dead"),
        "old_analysed_requeued": seed(sm, spool, age_days=52, job_state="queued"),
        # young: kept by age, purged (oldest first) only under disk pressure
        "new_absent_delivered": seed(sm, spool, age_days=2),
        "newer_absent_delivered": seed(sm, spool, age_days=1),
        "new_present_unreviewed": seed(sm, spool, age_days=0.5, decision="present"),
    }


BY_AGE = {"old_absent_delivered", "old_no_decision", "old_no_destination", "old_sent_twice"}
NEVER = {
    "old_pending",
    "old_dead",
    "old_present_unreviewed",
    "old_indeterminate_unreviewed",
    "old_present_reviewed",
    "old_absent_reviewed",
    "old_receiving",
    "old_failed",
    "old_analysed_requeued",
    "new_present_unreviewed",
}


def _audits(sm: sessionmaker[Session]) -> list[AuditEvent]:
    with sm() as session:
        return list(
            session.scalars(
                select(AuditEvent).where(AuditEvent.action == AUDIT_ACTION).order_by(AuditEvent.id)
            )
        )


def test_age_purges_only_old_delivered_unflagged_or_unanalysable_studies(
    sm: sessionmaker[Session], spool: Spool, seeded: dict[str, Seeded]
) -> None:
    report = run_retention(sm, spool, POLICY, NOW, disk=SpoolDisk(spool))
    assert report.studies == report.by_age == len(BY_AGE) and report.by_pressure == 0
    assert report.instance_files == len(BY_AGE)
    assert report.result_files == 2 * len(BY_AGE)  # heatmap + SR of each
    assert report.bytes_freed == len(BY_AGE) * (MIB + 2 * 4096)
    for name, s in seeded.items():
        gone = name in BY_AGE
        assert present(spool, s) == [not gone] * len(s.files), name
        assert purged(sm, s) is gone, name
    # One audit event per batch, counts only (no UIDs, no paths).
    [event] = _audits(sm)
    assert event.actor == "retention" and event.object_id is None
    assert event.detail == {
        "reason": "age",
        "studies": len(BY_AGE),
        "instance_files": len(BY_AGE),
        "result_files": 2 * len(BY_AGE),
        "bytes_freed": report.bytes_freed,
    }
    # Empty study directories go with their files; the spool's top level stays.
    old = seeded["old_absent_delivered"]
    assert not spool.absolute(old.files[0]).parent.exists()
    assert (spool.root / "objects").is_dir()
    # A second run finds nothing more and audits nothing.
    again = run_retention(sm, spool, POLICY, NOW, disk=SpoolDisk(spool))
    assert again.studies == 0 and len(_audits(sm)) == 1


def test_batches_are_each_audited(
    sm: sessionmaker[Session], spool: Spool, seeded: dict[str, Seeded]
) -> None:
    policy = RetentionPolicy(max_age=timedelta(days=30), batch_size=3)
    report = run_retention(sm, spool, policy, NOW, disk=SpoolDisk(spool))
    assert report.studies == len(BY_AGE)
    events = _audits(sm)
    assert sum(int(e.detail["studies"]) for e in events) == len(BY_AGE)
    assert len(events) == len(report.batches) >= 2


def test_disk_pressure_purges_oldest_eligible_until_the_target(
    sm: sessionmaker[Session], spool: Spool, seeded: dict[str, Seeded]
) -> None:
    disk = SpoolDisk(spool)
    run_retention(sm, spool, POLICY, NOW, disk=disk)
    # Pressure: one byte short of the mark. Purging the oldest young eligible study is enough.
    short = RetentionPolicy(max_age=timedelta(days=30), min_free_bytes=disk().free_bytes + 1)
    report = run_retention(sm, spool, short, NOW, disk=disk)
    assert report.by_pressure == 1 and report.by_age == 0
    assert purged(sm, seeded["new_absent_delivered"])
    assert not purged(sm, seeded["newer_absent_delivered"])
    assert report.free_after is not None and report.target_free is not None
    assert report.free_after >= report.target_free
    assert _audits(sm)[-1].detail["reason"] == "disk_pressure"

    # An impossible target purges every eligible study, and still nothing protected.
    everything = RetentionPolicy(max_age=None, min_free_bytes=10_000 * MIB)
    report = run_retention(sm, spool, everything, NOW, disk=disk)
    assert report.by_pressure == 1
    assert purged(sm, seeded["newer_absent_delivered"])
    for name in NEVER:
        assert all(present(spool, seeded[name])), name
        assert not purged(sm, seeded[name]), name


def test_no_pressure_and_keep_forever_deletes_nothing(
    sm: sessionmaker[Session], spool: Spool, seeded: dict[str, Seeded]
) -> None:
    forever = RetentionPolicy(max_age=None, min_free_bytes=MIB)  # 100 MiB disk: ~80 free
    report = run_retention(sm, spool, forever, NOW, disk=SpoolDisk(spool))
    assert report.studies == 0 and _audits(sm) == []
    assert all(all(present(spool, s)) for s in seeded.values())


def test_target_percent_and_mark(spool: Spool) -> None:
    usage = DiskUsage(free_bytes=0, total_bytes=1000 * MIB)
    assert purge_target_bytes(RetentionPolicy(min_free_bytes=50 * MIB), usage) == 50 * MIB
    policy = RetentionPolicy(min_free_bytes=50 * MIB, target_free_percent=10)
    assert purge_target_bytes(policy, usage) == 100 * MIB
    with pytest.raises(ValueError, match="max_age"):
        RetentionPolicy(max_age=timedelta(0))


def test_protected_study_ids_names_the_reasons(
    sm: sessionmaker[Session], seeded: dict[str, Seeded]
) -> None:
    with sm() as session:
        protected = protected_study_ids(session, [s.study_id for s in seeded.values()])
    expected = {
        "old_pending",
        "old_dead",
        "old_present_unreviewed",
        "old_indeterminate_unreviewed",
        "old_present_reviewed",
        "old_absent_reviewed",
        "new_present_unreviewed",
    }  # the rest of NEVER is kept by state or by an unfinished job
    assert {n for n, s in seeded.items() if s.study_id in protected} == expected


def test_a_review_after_the_candidate_list_still_protects(
    sm: sessionmaker[Session],
    spool: Spool,
    seeded: dict[str, Seeded],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Protection is checked again under lock right before deleting: a review saved between
    the candidate query and the purge keeps the study."""
    import storage.retention as retention

    pages = list(retention._candidates(sm, 50))  # listed before the review arrives
    target = seeded["old_absent_delivered"]
    assert target.study_id in {sid for page in pages for sid, _ in page}
    with sm.begin() as session:
        session.add(
            Override(
                study_id=target.study_id,
                user_name="rad",
                ai_label={"decision": "absent"},
                radiologist_label={"fracture": "present"},
                agree=False,
            )
        )
    monkeypatch.setattr(retention, "_candidates", lambda *_: iter(pages))
    report = run_retention(sm, spool, POLICY, NOW, disk=SpoolDisk(spool))
    assert report.studies == len(BY_AGE) - 1
    assert all(present(spool, target)) and not purged(sm, target)


def test_the_same_bytes_sent_again_restore_a_purged_instance(
    sm: sessionmaker[Session], spool: Spool, seeded: dict[str, Seeded]
) -> None:
    run_retention(sm, spool, POLICY, NOW, disk=SpoolDisk(spool))
    s = seeded["old_absent_delivered"]
    with sm() as session:
        inst = session.scalars(select(Instance).where(Instance.study_id == s.study_id)).one()
        study = session.get(Study, s.study_id)
        assert study is not None
    spool.write_atomic(inst.spool_path, bytes(MIB))  # what the receiver does before recording
    with sm.begin() as session:
        outcome = record_instance(
            session,
            InstanceRecord(
                study_instance_uid=study.study_instance_uid,
                series_instance_uid=f"{study.study_instance_uid}.1",
                sop_instance_uid=inst.sop_instance_uid,
                sop_class_uid=inst.sop_class_uid,
                transfer_syntax_uid=inst.transfer_syntax_uid,
                modality="DX",
                body_part_examined=None,
                spool_path=inst.spool_path,
                size_bytes=MIB,
                sha256=inst.sha256,
                calling_ae_title="CR1",
                received_at=NOW,
            ),
        )
    assert outcome is StoreOutcome.DUPLICATE
    with sm() as session:
        assert session.get(Instance, inst.id).purged_at is None  # type: ignore[union-attr]


def test_a_locked_validation_case_keeps_its_study(
    sm: sessionmaker[Session], spool: Spool, seeded: dict[str, Seeded]
) -> None:
    """A study holding a case of the locked validation set is never purged, review or not."""
    target = seeded["old_absent_delivered"]
    with sm.begin() as session:
        session.add(
            ValidationCase(
                source="review",
                key=f"1.2.826.0.1.val.{target.study_id}",
                study_id=target.study_id,
                patient_group="0" * 64,
                label={"fracture": "absent"},
                added_by="admin",
            )
        )
    with sm() as session:
        assert target.study_id in protected_study_ids(session, [target.study_id])
    report = run_retention(sm, spool, POLICY, NOW, disk=SpoolDisk(spool))
    assert report.studies == len(BY_AGE) - 1
    assert all(present(spool, target)) and not purged(sm, target)
