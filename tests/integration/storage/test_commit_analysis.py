"""storage.analyses' intentions: an analysis commits with its objects and their deliveries, or
not at all (a lost lease records nothing); a verified SR with its deliveries; both idempotent."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from storage.analyses import (
    NewObject,
    analyses_of,
    commit_analysis,
    objects_of,
    record_verified_sr,
    review_to_verify,
)
from storage.errors import JobLostError
from storage.instances import InstanceRecord, record_instance
from storage.jobs import claim_job, promote_studies_now
from storage.peers import DestinationRow, seed_destinations
from storage.schema import Delivery, Override, Result

T0 = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)
RecordFactory = Callable[..., InstanceRecord]
DETAIL = {
    "decision": "present",
    "model": {
        "name": "m",
        "version": "1.0.0",
        "sha256": "a" * 64,
        "parameters": {"threshold": "0.5000"},
    },
}


def _claimed(sm: sessionmaker[Session], make_rec: RecordFactory) -> tuple[int, int]:
    """(study id, job id) of a study's job claimed by worker "w"; two destinations."""
    seed_destinations(
        sm,
        [
            DestinationRow("pacs", "PACS", "127.0.0.1", 104, ("sr", "sc"), "config"),
            DestinationRow("viewer", "VIEWER", "127.0.0.1", 104, ("sr",), "config"),
        ],
    )
    with sm.begin() as session:
        record_instance(session, make_rec(sop="1.1"))
    (job_id,) = promote_studies_now(sm, ["1.2.3.1"], T0)
    claimed = claim_job(sm, "w", T0, 60)
    assert claimed is not None and claimed.job_id == job_id
    return claimed.study_id, job_id


def _objects() -> list[NewObject]:
    return [
        NewObject("sr", "9.1", "results/sr.dcm", {"series_instance_uid": "9.10"}),
        NewObject("sc", "9.2", "results/sc.dcm", {"source_sop_instance_uid": "1.1"}),
        NewObject("heatmap", "9.3", "results/h.png", {}, send=False),
    ]


def _count(sm: sessionmaker[Session], model: type) -> int:
    with sm() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_an_analysis_commits_with_its_objects_and_deliveries(
    sm: sessionmaker[Session], make_rec: RecordFactory
) -> None:
    study_id, job_id = _claimed(sm, make_rec)
    args = {
        "study_id": study_id,
        "job_id": job_id,
        "worker_id": "w",
        "revision": "r1",
        "detail": DETAIL,
        "objects": _objects(),
    }
    assert commit_analysis(sm, **args) == 3  # sr to both, sc to pacs, the heatmap stays
    [analysis] = analyses_of(sm, study_id)
    assert analysis.detail == {**DETAIL, "revision": "r1"}
    objects = objects_of(sm, study_id)
    assert [(o.kind, o.detail["analysis_id"]) for o in objects] == [
        ("sr", analysis.result_id),
        ("sc", analysis.result_id),
        ("heatmap", analysis.result_id),
    ]
    # a re-run of the same job and revision adds nothing
    assert commit_analysis(sm, **args) == 0
    assert _count(sm, Result) == 4 and _count(sm, Delivery) == 3


def test_an_amended_sr_names_its_predecessor(
    sm: sessionmaker[Session], make_rec: RecordFactory
) -> None:
    study_id, job_id = _claimed(sm, make_rec)
    base = {"study_id": study_id, "job_id": job_id, "worker_id": "w", "detail": DETAIL}
    commit_analysis(sm, revision="r1", objects=_objects()[:1], **base)
    amended = NewObject("sr", "9.4", "results/sr2.dcm", {}, predecessor_sop_instance_uid="9.1")
    commit_analysis(sm, revision="r2", objects=[amended], **base)
    first, second = objects_of(sm, study_id)
    assert second.predecessor_result_id == first.result_id


def test_a_lost_lease_records_nothing(sm: sessionmaker[Session], make_rec: RecordFactory) -> None:
    study_id, job_id = _claimed(sm, make_rec)
    with pytest.raises(JobLostError):
        commit_analysis(
            sm,
            study_id=study_id,
            job_id=job_id,
            worker_id="another worker",
            revision="r1",
            detail=DETAIL,
            objects=_objects(),
        )
    assert _count(sm, Result) == 0 and _count(sm, Delivery) == 0


def test_a_verified_sr_is_recorded_with_its_deliveries_once(
    sm: sessionmaker[Session], make_rec: RecordFactory
) -> None:
    study_id, job_id = _claimed(sm, make_rec)
    commit_analysis(
        sm,
        study_id=study_id,
        job_id=job_id,
        worker_id="w",
        revision="r1",
        detail=DETAIL,
        objects=_objects()[:1],
    )
    [ai] = objects_of(sm, study_id)
    args = {
        "study_id": study_id,
        "job_id": job_id,
        "sop_instance_uid": "9.9",
        "file_path": "results/v.dcm",
        "supersedes_result_id": ai.result_id,
        "detail": {"verified_by": "jdoe"},
    }
    result_id, queued = record_verified_sr(sm, **args)
    assert queued == 2
    assert record_verified_sr(sm, **args) == (result_id, 0)
    verified = objects_of(sm, study_id)[-1]
    assert (verified.result_id, verified.kind, verified.predecessor_result_id) == (
        result_id,
        "sr",
        ai.result_id,
    )
    assert _count(sm, Delivery) == 4


def test_the_review_to_verify(sm: sessionmaker[Session], make_rec: RecordFactory) -> None:
    study_id, _ = _claimed(sm, make_rec)
    assert review_to_verify(sm, 1) is None
    with sm.begin() as session:
        row = Override(
            study_id=study_id,
            user_name="jdoe",
            radiologist_label={"fracture": "absent"},
            comment="no",
            agree=False,
        )
        session.add(row)
        session.flush()
        override_id = row.id
    review = review_to_verify(sm, override_id)
    assert review is not None
    assert (review.study_id, review.user_name, review.radiologist_label, review.agree) == (
        study_id,
        "jdoe",
        {"fracture": "absent"},
        False,
    )
