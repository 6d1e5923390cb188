"""Dashboard numbers (storage.stats) on a seeded database, against values worked out by hand.

Runs on SQLite and PostgreSQL (the ``sm`` fixture of this folder's conftest).
"""

from __future__ import annotations

import itertools
from dataclasses import asdict
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from storage.schema import (
    Delivery,
    Instance,
    Override,
    Result,
    ReviewAssignment,
    Series,
    Study,
)
from storage.stats import (
    Accuracy,
    AgreementRow,
    DayArrivals,
    DayTurnaround,
    UserOpenReviews,
    accuracy,
    agreement,
    arrivals,
    open_reviews,
    turnaround,
    wilson_interval,
)

SINCE = datetime(2025, 3, 1, tzinfo=UTC)
UNTIL = datetime(2025, 3, 4, tzinfo=UTC)  # three days: 1, 2 and 3 March
DAYS = ("2025-03-01", "2025-03-02", "2025-03-03")
DAY2_9 = datetime(2025, 3, 2, 9, tzinfo=UTC)
_uids = itertools.count(1)


def at(day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    """``day`` of March 2025 (0 is 28 February)."""
    return datetime(2025, 3, 1, tzinfo=UTC) + timedelta(
        days=day - 1, hours=hour, minutes=minute, seconds=second
    )


# -- seeding -----------------------------------------------------------------------------------


def add_study(
    session: Session, first: datetime, *, state: str = "analysed", images: tuple[datetime, ...] = ()
) -> int:
    n = next(_uids)
    study = Study(
        study_instance_uid=f"1.2.826.0.1.{n}",
        state=state,
        first_received_at=first,
        last_received_at=max((first, *images)),
        instance_count=len(images),
    )
    session.add(study)
    session.flush()
    if images:
        series = Series(study_id=study.id, series_instance_uid=f"1.2.826.0.1.{n}.1", modality="DX")
        session.add(series)
        session.flush()
        for i, received in enumerate(images):
            session.add(
                Instance(
                    series_id=series.id,
                    study_id=study.id,
                    sop_instance_uid=f"1.2.826.0.1.{n}.1.{i}",
                    sop_class_uid="1.2.840.10008.5.1.4.1.1.1.1",
                    transfer_syntax_uid="1.2.840.10008.1.2.1",
                    spool_path=f"spool/{n}/{i}.dcm",
                    size_bytes=100,
                    sha256="a" * 64,
                    received_at=received,
                    calling_ae_title="CR1",
                )
            )
    return study.id


def add_analysis(session: Session, study_id: int, decision: str | None) -> None:
    detail = {"decision": decision, "images": [{"body_part": "HAND"}], "model": {"version": "1"}}
    session.add(Result(study_id=study_id, kind="analysis", detail=detail))


def add_object(session: Session, study_id: int, kind: str, *deliveries: Any) -> None:
    """A result object with deliveries ``(destination, state, sent_at)``."""
    result = Result(study_id=study_id, kind=kind, sop_instance_uid=f"2.25.{next(_uids)}")
    session.add(result)
    session.flush()
    for destination, state, sent_at in deliveries:
        session.add(
            Delivery(
                result_id=result.id,
                destination_name=destination,
                state=state,
                sent_at=sent_at,
            )
        )


def add_override(
    session: Session,
    study_id: int,
    created: datetime,
    *,
    agree: bool | None = True,
    body_part: str | None = "HAND",
    ai: str | None = "present",
    fracture: str | None = "present",
    user: str = "alice",
) -> None:
    ai_label = None if ai == "none" else {"decision": ai, "fracture_probability": 0.5}
    label: dict[str, Any] = {"count": 1, "hardware": False}
    if fracture is not None:
        label["fracture"] = fracture
    if body_part is not None:
        label["body_part"] = body_part
    session.add(
        Override(
            study_id=study_id,
            user_name=user,
            ai_label=ai_label,
            radiologist_label=label,
            created_at=created,
            agree=agree,
        )
    )
    session.flush()  # ids in insertion order: the newest override has the greatest id


def close(pair: tuple[float, float] | None, expected: tuple[float, float]) -> bool:
    assert pair is not None
    return pair == pytest.approx(expected, abs=5e-5)


# -- Wilson ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("successes", "n", "expected"),
    [
        (8, 10, (0.4902, 0.9433)),
        (5, 6, (0.4365, 0.9699)),
        (2, 3, (0.2077, 0.9385)),
        (1, 2, (0.0945, 0.9055)),
        (2, 2, (0.3424, 1.0)),
        (0, 10, (0.0, 0.2775)),
    ],
)
def test_wilson_interval_matches_hand_values(
    successes: int, n: int, expected: tuple[float, float]
) -> None:
    assert close(wilson_interval(successes, n), expected)


@pytest.mark.parametrize(("successes", "n"), [(0, 0), (3, 2), (-1, 2)])
def test_wilson_interval_refuses_nonsense(successes: int, n: int) -> None:
    with pytest.raises(ValueError):
        wilson_interval(successes, n)


# -- windows -----------------------------------------------------------------------------------


def test_window_must_be_aware_and_ordered(sm: sessionmaker[Session]) -> None:
    with pytest.raises(ValueError, match="naive"):
        arrivals(sm, datetime(2025, 3, 1), UNTIL)
    with pytest.raises(ValueError, match="later"):
        agreement(sm, UNTIL, SINCE)


# -- arrivals ----------------------------------------------------------------------------------


def seed_arrivals(sm: sessionmaker[Session]) -> None:
    with sm.begin() as s:
        add_study(s, at(1, 8, 10), images=(at(1, 8, 10), at(1, 8, 12), at(1, 9, 5)))  # A
        add_study(s, at(1, 8, 30), images=(at(1, 8, 30),))  # B
        add_study(s, at(3, 23, 59, 59), images=(at(3, 23, 59, 59), at(4)))  # C: 2nd after window
        add_study(s, at(0, 23), images=(at(1),))  # D: study before, late image inside
        add_study(s, at(2, 14), images=(at(2, 14), at(2, 14)))  # E
        add_study(s, at(4), images=(at(4),))  # F: exactly at ``until``, outside


def test_arrivals_by_hour_and_day(sm: sessionmaker[Session]) -> None:
    seed_arrivals(sm)
    result = arrivals(sm, SINCE, UNTIL)
    assert (result.studies, result.instances) == (4, 8)
    assert [h.hour for h in result.by_hour] == list(range(24))
    hours = {h.hour: (h.studies, h.instances) for h in result.by_hour if h.studies or h.instances}
    assert hours == {0: (0, 1), 8: (2, 3), 9: (0, 1), 14: (1, 2), 23: (1, 1)}
    assert result.by_day == (
        DayArrivals("2025-03-01", 2, 5),
        DayArrivals("2025-03-02", 1, 2),
        DayArrivals("2025-03-03", 1, 1),
    )


def test_arrivals_window_in_another_zone_is_the_same_instant(sm: sessionmaker[Session]) -> None:
    seed_arrivals(sm)
    plus2 = timezone(timedelta(hours=2))
    assert arrivals(sm, SINCE.astimezone(plus2), UNTIL.astimezone(plus2)) == arrivals(
        sm, SINCE, UNTIL
    )


def test_arrivals_empty_window_lists_zero_days(sm: sessionmaker[Session]) -> None:
    result = arrivals(sm, at(1, 12), at(2, 12))  # touches two days
    assert result.by_day == (DayArrivals("2025-03-01", 0, 0), DayArrivals("2025-03-02", 0, 0))
    assert all(h.studies == h.instances == 0 for h in result.by_hour)
    assert len(result.by_hour) == 24


# -- turnaround --------------------------------------------------------------------------------


def seed_turnaround(sm: sessionmaker[Session]) -> None:
    def after(start: datetime, seconds: int) -> datetime:
        return start + timedelta(seconds=seconds)

    with sm.begin() as s:
        t1 = at(1, 10)  # first sent: 30 s (earliest of three, two objects, two destinations)
        sid = add_study(s, t1)
        add_object(s, sid, "sr", ("PACS1", "sent", after(t1, 60)), ("PACS2", "sent", after(t1, 30)))
        add_object(s, sid, "sc", ("PACS1", "sent", after(t1, 45)))
        t2 = at(1, 11)  # 120 s; a dead and a pending delivery do not count
        sid = add_study(s, t2)
        add_object(s, sid, "sr", ("PACS1", "sent", after(t2, 120)), ("PACS2", "dead", None))
        add_object(s, sid, "pdf", ("PACS1", "pending", None))
        t3 = at(1, 12)  # 90 s
        add_object(s, add_study(s, t3), "sr", ("PACS1", "sent", after(t3, 90)))
        t4 = at(1, 13)  # 300 s
        add_object(s, add_study(s, t4), "sr", ("PACS1", "sent", after(t4, 300)))
        t5 = at(1, 14)  # nothing sent yet
        add_object(s, add_study(s, t5), "sr", ("PACS1", "pending", None))
        t6 = at(2, 9)  # 600 s, on the second day
        add_object(s, add_study(s, t6), "sr", ("PACS1", "sent", after(t6, 600)))
        t7 = at(0, 23, 59)  # received before the window, sent inside it: not counted
        add_object(s, add_study(s, t7), "sr", ("PACS1", "sent", after(t7, 120)))
        t8 = at(2, 10)  # dead only
        add_object(s, add_study(s, t8), "sr", ("PACS1", "dead", None))


def test_turnaround_median_and_p90(sm: sessionmaker[Session]) -> None:
    seed_turnaround(sm)
    result = turnaround(sm, SINCE, UNTIL)
    # day 1: 30, 90, 120, 300 -> median (90+120)/2; p90 at rank 2.7 -> 120 + 0.7 * 180
    # all: 30, 90, 120, 300, 600 -> median 120; p90 at rank 3.6 -> 300 + 0.6 * 300
    assert (result.studies, result.not_delivered) == (5, 2)
    assert result.median_s == pytest.approx(120.0)
    assert result.p90_s == pytest.approx(480.0)
    first, second, third = result.by_day
    assert (first.day, first.studies) == ("2025-03-01", 4)
    assert first.median_s == pytest.approx(105.0)
    assert first.p90_s == pytest.approx(246.0)
    assert second == DayTurnaround("2025-03-02", 1, 600.0, 600.0)
    assert third == DayTurnaround("2025-03-03", 0, None, None)


def test_turnaround_empty(sm: sessionmaker[Session]) -> None:
    result = turnaround(sm, SINCE, UNTIL)
    assert (result.studies, result.not_delivered, result.median_s, result.p90_s) == (
        0,
        0,
        None,
        None,
    )
    assert [d.day for d in result.by_day] == list(DAYS)


# -- open reviews ------------------------------------------------------------------------------


def test_open_reviews_per_user_and_unassigned(sm: sessionmaker[Session]) -> None:
    with sm.begin() as s:

        def analysed(*decisions: str | None, state: str = "analysed") -> int:
            sid = add_study(s, at(1, 8), state=state)
            for decision in decisions:
                add_analysis(s, sid, decision)
            return sid

        def assign(sid: int, user: str) -> None:
            s.add(ReviewAssignment(study_id=sid, user_name=user, assigned_at=at(1, 9)))

        assign(analysed("present"), "alice")  # open
        reviewed = analysed("present")
        assign(reviewed, "alice")
        add_override(s, reviewed, at(1, 10))  # done
        assign(analysed("absent"), "bob")  # open
        assign(analysed("indeterminate"), "bob")  # open
        analysed("absent")  # unassigned
        add_override(s, analysed("indeterminate"), at(1, 10))  # reviewed, never assigned
        analysed(None)  # nothing analysable: not reviewable
        analysed("present", state="processing")  # being re-analysed
        analysed(None, "absent")  # an amendment made it reviewable: unassigned
        done = analysed("present")
        assign(done, "carol")
        add_override(s, done, at(1, 11), user="carol")

    result = open_reviews(sm)
    assert result.by_user == (UserOpenReviews("alice", 1), UserOpenReviews("bob", 2))
    assert (result.assigned_open, result.unassigned) == (3, 2)


def test_open_reviews_empty(sm: sessionmaker[Session]) -> None:
    result = open_reviews(sm)
    assert (result.by_user, result.assigned_open, result.unassigned) == ((), 0, 0)


# -- agreement ---------------------------------------------------------------------------------


def test_agreement_uses_latest_override_per_study(sm: sessionmaker[Session]) -> None:
    with sm.begin() as s:
        st1 = add_study(s, at(1))
        add_override(s, st1, at(1, 8), agree=False)  # superseded
        add_override(s, st1, at(1, 9), agree=True)
        add_override(s, add_study(s, at(1)), at(1, 10), agree=False)
        add_override(s, add_study(s, at(1)), at(1, 11), agree=True, body_part="WRIST")
        st4 = add_study(s, at(1))
        add_override(s, st4, at(1, 12), agree=False, body_part="WRIST")  # superseded
        add_override(s, st4, at(2, 8), agree=True, body_part=" WRIST ")
        add_override(s, add_study(s, at(2)), at(2, 9), agree=True, body_part=None)
        st6 = add_study(s, at(2))
        add_override(s, st6, at(2, 10), agree=False)  # superseded by one after the window
        add_override(s, st6, at(5, 10), agree=False)
        add_override(s, add_study(s, at(0)), at(0, 10), agree=False)  # before the window
        add_override(s, add_study(s, at(2)), at(2, 11), agree=None)  # no agree flag: left out
        st9 = add_study(s, at(3))
        add_override(s, st9, at(3, 8), agree=False, body_part="ELBOW")
        add_override(s, st9, at(3, 8), agree=True, body_part="ELBOW")  # newest by id (same time)

    result = agreement(sm, SINCE, UNTIL)

    assert result.overall.key == "all"
    assert (result.overall.n, result.overall.agreed) == (6, 5)
    assert result.overall.rate == pytest.approx(5 / 6)
    assert close(result.overall.ci, (0.4365, 0.9699))
    days = {r.key: (r.n, r.agreed) for r in result.by_day}
    assert days == {"2025-03-01": (3, 2), "2025-03-02": (2, 2), "2025-03-03": (1, 1)}
    assert close(result.by_day[0].ci, (0.2077, 0.9385))
    assert close(result.by_day[1].ci, (0.3424, 1.0))
    parts = {r.key: (r.n, r.agreed) for r in result.by_body_part}
    assert list(parts) == ["ELBOW", "HAND", "WRIST", "unknown"]
    assert parts == {"ELBOW": (1, 1), "HAND": (2, 1), "WRIST": (2, 2), "unknown": (1, 1)}
    hand = result.by_body_part[1]
    assert hand.rate == pytest.approx(0.5)
    assert close(hand.ci, (0.0945, 0.9055))


def test_agreement_empty_days_have_no_rate(sm: sessionmaker[Session]) -> None:
    result = agreement(sm, SINCE, UNTIL)
    assert result.overall == AgreementRow("all", 0, 0, None, None)
    assert result.by_day == tuple(AgreementRow(d, 0, 0, None, None) for d in DAYS)
    assert result.by_body_part == ()


# -- accuracy ----------------------------------------------------------------------------------


def test_accuracy_confusion_matrix_and_intervals(sm: sessionmaker[Session]) -> None:
    with sm.begin() as s:

        def review(ai: str | None, fracture: str | None, when: datetime = DAY2_9) -> int:
            sid = add_study(s, at(1))
            add_override(s, sid, when, ai=ai, fracture=fracture)
            return sid

        for _ in range(6):
            review("present", "present")  # TP
        for _ in range(2):
            review("indeterminate", "present")  # TP (flagged)
        review("absent", "present")  # FN
        changed = review("absent", "absent", at(1, 9))  # TN at first ...
        add_override(s, changed, at(2, 10), ai="absent", fracture="present")  # ... now FN
        for _ in range(5):
            review("absent", "absent")  # TN
        review("indeterminate", "absent")  # FP
        review("present", "uncertain")  # excluded: no present/absent reference
        review("none", "present")  # excluded: no AI label
        review(None, "present")  # excluded: nothing analysable
        review(None, None)  # excluded
        moved = review("absent", "absent")  # latest review is after the window: not counted
        add_override(s, moved, at(5), ai="absent", fracture="present")

    result = accuracy(sm, SINCE, UNTIL)

    assert (result.tp, result.fp, result.tn, result.fn) == (8, 1, 5, 2)
    assert (result.indeterminate, result.excluded) == (3, 4)
    assert result.sensitivity == pytest.approx(0.8)
    assert close(result.sensitivity_ci, (0.4902, 0.9433))
    assert result.specificity == pytest.approx(5 / 6)
    assert close(result.specificity_ci, (0.4365, 0.9699))


def test_accuracy_without_reviews_has_no_rates(sm: sessionmaker[Session]) -> None:
    result = accuracy(sm, SINCE, UNTIL)
    assert result == Accuracy(0, 0, 0, 0, 0, 0, None, None, None, None)


def test_results_are_json_friendly(sm: sessionmaker[Session]) -> None:
    import json

    seed_arrivals(sm)
    seed_turnaround(sm)
    for value in (
        arrivals(sm, SINCE, UNTIL),
        turnaround(sm, SINCE, UNTIL),
        open_reviews(sm),
        agreement(sm, SINCE, UNTIL),
        accuracy(sm, SINCE, UNTIL),
    ):
        assert json.loads(json.dumps(asdict(value))) is not None
