"""The worklist is filtered, counted, sorted and paged in SQL: the same answers on SQLite and
PostgreSQL (JSON paths, grouping and ordering in both dialects)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from storage.reviews import WorklistFilter, worklist
from storage.schema import Override, Result, ReviewAssignment, Study

T0 = datetime(2025, 3, 1, 8, 0, 0, tzinfo=UTC)


def _study(
    session: Session,
    n: int,
    decision: str | None,
    body_part: str = "wrist",
    *,
    older: dict[str, Any] | None = None,
) -> int:
    at = T0 + timedelta(hours=n)
    study = Study(
        study_instance_uid=f"1.2.826.0.1.{n}",
        state="analysed",
        first_received_at=at,
        last_received_at=at,
    )
    session.add(study)
    session.flush()
    if older is not None:  # an earlier analysis, superseded by the one below
        session.add(Result(study_id=study.id, kind="analysis", detail=older))
        session.flush()
    detail: dict[str, Any] = {
        "images": [{"sop_instance_uid": f"1.2.826.0.1.{n}.1", "body_part": body_part}],
        "model": {"version": "1.0.0"},
    }
    if decision is not None:
        detail["decision"] = decision
    session.add(Result(study_id=study.id, kind="analysis", detail=detail))
    session.flush()
    return study.id


def test_worklist_filters_counts_orders_and_pages_in_sql(sm: sessionmaker[Session]) -> None:
    with sm.begin() as session:
        absent_old = _study(session, 1, "absent")
        present_old = _study(session, 2, "present", "ankle")
        absent_new = _study(session, 3, "absent", "ankle", older={"decision": "present"})
        indeterminate = _study(session, 4, "indeterminate")
        present_new = _study(session, 5, "present")
        # the newest analysis has no decision: the older one with a decision counts
        fallback = _study(session, 6, None, older={"decision": "absent", "images": []})
        _study(session, 7, None)  # never analysed with a decision: not on the worklist
        for study_id, agree in ((present_old, True), (present_old, False), (absent_new, None)):
            session.add(
                Override(
                    study_id=study_id,
                    user_name="rad",
                    radiologist_label={"fracture": "absent"},
                    agree=agree,
                )
            )
        session.add(ReviewAssignment(study_id=indeterminate, user_name="rad2"))

    everything = worklist(sm, WorklistFilter())
    flagged = [present_new, indeterminate, present_old]
    assert [i.study_id for i in everything.items] == [
        *flagged,
        fallback,
        absent_new,
        absent_old,
    ]
    assert everything.total == 6
    assert everything.by_decision == {"present": 2, "absent": 3, "indeterminate": 1}
    assert (everything.reviewed, everything.unreviewed) == (2, 4)
    items = {i.study_id: i for i in everything.items}
    assert items[present_old].agree is False and items[present_old].reviewed_by == "rad"
    assert items[indeterminate].assigned_to == "rad2" and not items[indeterminate].reviewed
    assert items[fallback].decision == "absent" and items[fallback].body_part is None

    page = worklist(sm, WorklistFilter(limit=2, offset=2))
    assert [i.study_id for i in page.items] == [present_old, fallback] and page.total == 6

    ankles = worklist(sm, WorklistFilter(body_part="ankle"))
    assert [i.study_id for i in ankles.items] == [present_old, absent_new]
    assert ankles.by_decision == {"present": 1, "absent": 1}

    unreviewed = worklist(sm, WorklistFilter(reviewed=False))
    assert [i.study_id for i in unreviewed.items] == [
        present_new,
        indeterminate,
        fallback,
        absent_old,
    ]
    assert unreviewed.total == 4 and unreviewed.by_decision == everything.by_decision

    reviewed_present = worklist(sm, WorklistFilter(decision="present", reviewed=True))
    assert [i.study_id for i in reviewed_present.items] == [present_old]
    assert reviewed_present.total == 1 and reviewed_present.by_decision == {"present": 2}

    window = worklist(
        sm, WorklistFilter(since=T0 + timedelta(hours=2), until=T0 + timedelta(hours=5))
    )
    assert [i.study_id for i in window.items] == [indeterminate, present_old, absent_new]
