"""The worklist is filtered, counted, sorted and paged in SQL: the same answers on SQLite and
PostgreSQL (JSON paths, grouping and ordering in both dialects); so are the needs-attention
view, "next", and claiming a study."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from storage.audit import list_audit
from storage.claims import ClaimedByOtherError, claim, claimed_by, release
from storage.errors import NotFoundError
from storage.schema import Override, Result, ReviewAssignment, Study
from storage.worklist import WorklistFilter, next_for, version, worklist

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
    # not reviewed before reviewed, flagged before absent, newest first
    assert [i.study_id for i in everything.items] == [
        present_new,
        indeterminate,
        fallback,
        absent_old,
        present_old,
        absent_new,
    ]
    assert everything.total == 6
    assert everything.by_decision == {"present": 2, "absent": 3, "indeterminate": 1}
    assert (everything.reviewed, everything.unreviewed) == (2, 4)
    items = {i.study_id: i for i in everything.items}
    assert items[present_old].agree is False and items[present_old].reviewed_by == "rad"
    assert items[indeterminate].assigned_to == "rad2" and not items[indeterminate].reviewed
    assert items[fallback].decision == "absent" and items[fallback].body_part is None

    page = worklist(sm, WorklistFilter(limit=2, offset=2))
    assert [i.study_id for i in page.items] == [fallback, absent_old] and page.total == 6

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


def test_attention_view_next_and_claims_in_sql(sm: sessionmaker[Session]) -> None:
    with sm.begin() as session:
        old = _study(session, 1, "present")
        absent = _study(session, 2, "absent")
        theirs = _study(session, 3, "indeterminate")
        reviewed = _study(session, 4, "present")
        mine = _study(session, 5, "indeterminate", "ankle")
        new = _study(session, 6, "present")
        unanalysed = _study(session, 7, None)
        session.add(Override(study_id=reviewed, user_name="rad2", radiologist_label={}))
    before = version(sm)
    assert claim(sm, theirs, "rad2") is True
    assert claim(sm, mine, "rad") is True
    assert claim(sm, mine, "rad") is False  # already mine: no change
    assert version(sm) != before  # claims move the version (their audit rows)
    with pytest.raises(ClaimedByOtherError, match="claimed by rad2"):
        claim(sm, theirs, "rad")
    with pytest.raises(NotFoundError):
        claim(sm, unanalysed, "rad")
    assert claimed_by(sm, theirs) == "rad2"

    attention = worklist(sm, WorklistFilter(attention_of="rad"))
    assert [i.study_id for i in attention.items] == [old, mine, new]  # oldest first
    assert attention.total == 3 and attention.attention == 3
    assert attention.items[1].assigned_to == "rad"
    assert [i.study_id for i in worklist(sm, WorklistFilter(attention_of="rad2")).items] == [
        old,
        theirs,
        new,
    ]
    assert [
        i.study_id
        for i in worklist(sm, WorklistFilter(attention_of="rad", body_part="ankle")).items
    ] == [mine]
    paged = worklist(sm, WorklistFilter(attention_of="rad", limit=1, offset=1))
    assert [i.study_id for i in paged.items] == [mine] and paged.total == 3
    counted = worklist(sm, WorklistFilter(count_attention_of="rad", decision="present"))
    assert counted.attention == 2 and counted.total == 3  # old, new; and reviewed
    assert worklist(sm, WorklistFilter()).attention is None
    assert absent not in [i.study_id for i in attention.items]

    assert next_for(sm, "rad") == old
    assert next_for(sm, "rad", old) == mine
    assert next_for(sm, "rad", theirs) == mine  # not on rad's list: its place counts
    assert next_for(sm, "rad", new) == old  # wraps round
    assert next_for(sm, "rad", 99999) == old  # unknown: the first

    with pytest.raises(ClaimedByOtherError):
        release(sm, theirs, "rad")
    assert release(sm, mine, "rad") is True
    assert release(sm, mine, "rad") is False  # nobody holds it
    assert claimed_by(sm, mine) is None
    assert release(sm, theirs, "rad2") is True
    assert claim(sm, theirs, "rad") is True  # free for anyone again
    actions = [(e.action, e.actor, e.object_id) for e in list_audit(sm, limit=100)]
    assert sorted(a for a in actions if a[0].startswith("study.")) == sorted(
        [
            ("study.claimed", "rad2", str(theirs)),
            ("study.claimed", "rad", str(mine)),
            ("study.released", "rad", str(mine)),
            ("study.released", "rad2", str(theirs)),
            ("study.claimed", "rad", str(theirs)),
        ]
    )
    with sm.begin() as session:
        for study_id in (old, mine, new, theirs):
            session.add(Override(study_id=study_id, user_name="rad", radiologist_label={}))
    assert worklist(sm, WorklistFilter(attention_of="rad")).items == ()
    assert next_for(sm, "rad", new) is None
