"""Numbers for the dashboards: arrivals, turnaround, open reviews, agreement and accuracy.

Every function reads with its own session and returns a frozen dataclass of plain values
(ints, floats, strings, tuples), so ``dataclasses.asdict`` gives JSON directly.

Conventions shared by all functions:

* A window is half-open, ``since <= t < until``; both ends must be aware datetimes (any zone,
  compared in UTC). Days and hours are UTC; a day is labelled by its ISO date
  (``"2025-03-01"``) and every day the window touches is listed, with zeros.
* Counting happens in SQL (``GROUP BY``/``COUNT``, one row per day and hour, per study or
  per user), in a read transaction (:func:`storage.db.reading`: on SQLite it takes no lock,
  so a C-STORE commit never waits for the dashboards). Days and hours are computed from the
  stored UTC time the same way on SQLite (naive UTC text) and PostgreSQL (``timestamptz``
  at time zone UTC). JSON fields are tested in SQL only for presence (an analysis with a
  ``decision``); labels (``Override.ai_label``/``radiologist_label``) are read in Python,
  and only from the rows that count (each study's newest override made in the window).
* A study's *review* is its newest override (greatest id, as in ``storage.reviews``); the
  earlier ones are superseded and never counted. A review belongs to the window if that newest
  override's ``created_at`` lies inside it.
* Rates come with a 95% Wilson score interval (:func:`wilson_interval`); a rate and its interval
  are ``None`` when there is nothing to divide by.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Integer, cast, extract, func, select
from sqlalchemy.orm import Session, sessionmaker

from storage.db import reading
from storage.schema import (
    Delivery,
    DeliveryState,
    Instance,
    Override,
    Result,
    ReviewAssignment,
    Study,
    StudyState,
)

__all__ = [
    "Accuracy",
    "AgreementRow",
    "AgreementStats",
    "Arrivals",
    "DayArrivals",
    "DayTurnaround",
    "HourArrivals",
    "OpenReviews",
    "Turnaround",
    "UserOpenReviews",
    "accuracy",
    "agreement",
    "arrivals",
    "open_reviews",
    "turnaround",
    "wilson_interval",
]

Z95 = 1.959964
ANALYSIS = "analysis"
UNKNOWN_BODY_PART = "unknown"
_FLAGGED = frozenset({"present", "indeterminate"})
_AI_DECISIONS = frozenset({"present", "absent", "indeterminate"})
_REFERENCE = frozenset({"present", "absent"})


# -- results -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class HourArrivals:
    hour: int  # 0..23, UTC
    studies: int
    instances: int


@dataclass(frozen=True)
class DayArrivals:
    day: str  # ISO date, UTC
    studies: int
    instances: int


@dataclass(frozen=True)
class Arrivals:
    """Studies by ``first_received_at``, instances by ``received_at``, both in the window."""

    studies: int
    instances: int
    by_hour: tuple[HourArrivals, ...]  # always 24 rows, hours 0..23
    by_day: tuple[DayArrivals, ...]  # every day of the window


@dataclass(frozen=True)
class DayTurnaround:
    day: str  # ISO date (UTC) of the studies' first_received_at
    studies: int  # studies of that day with a result object at the PACS
    median_s: float | None
    p90_s: float | None


@dataclass(frozen=True)
class Turnaround:
    studies: int  # studies received in the window with a result object at the PACS
    not_delivered: int  # studies received in the window with none sent (yet)
    median_s: float | None
    p90_s: float | None
    by_day: tuple[DayTurnaround, ...]


@dataclass(frozen=True)
class UserOpenReviews:
    user_name: str
    open: int


@dataclass(frozen=True)
class OpenReviews:
    by_user: tuple[UserOpenReviews, ...]  # users with at least one open assignment, by name
    assigned_open: int  # sum over ``by_user``
    unassigned: int  # analysed studies neither reviewed nor assigned


@dataclass(frozen=True)
class AgreementRow:
    key: str  # ISO date or body part
    n: int
    agreed: int
    rate: float | None
    ci: tuple[float, float] | None


@dataclass(frozen=True)
class AgreementStats:
    overall: AgreementRow  # key "all"
    by_day: tuple[AgreementRow, ...]  # every day of the window
    by_body_part: tuple[AgreementRow, ...]  # body parts reviewed, by name


@dataclass(frozen=True)
class Accuracy:
    tp: int
    fp: int
    tn: int
    fn: int
    indeterminate: int  # of the counted studies, AI said "indeterminate" (counted as flagged)
    excluded: int  # reviews without a usable AI decision or radiologist present/absent
    sensitivity: float | None
    sensitivity_ci: tuple[float, float] | None
    specificity: float | None
    specificity_ci: tuple[float, float] | None


# -- small helpers -----------------------------------------------------------------------------


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of ``successes`` out of ``n`` (default: 95%), within [0, 1]."""
    if n <= 0:
        raise ValueError("n must be positive")
    if not 0 <= successes <= n:
        raise ValueError("successes must lie between 0 and n")
    p = successes / n
    z2 = z * z
    denominator = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    margin = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denominator
    return max(0.0, centre - margin), min(1.0, centre + margin)


def _quantile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (NumPy's default, Hyndman-Fan type 7)."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    lower = math.floor(position)
    upper = min(lower + 1, len(ordered) - 1)
    fraction = position - lower
    return ordered[lower] + (ordered[upper] - ordered[lower]) * fraction


def _check_window(since: datetime, until: datetime) -> tuple[datetime, datetime]:
    for value in (since, until):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("naive datetime given; use an aware UTC datetime")
    since, until = since.astimezone(UTC), until.astimezone(UTC)
    if until <= since:
        raise ValueError("until must be later than since")
    return since, until


def _days(since: datetime, until: datetime) -> list[str]:
    """ISO dates of every UTC day that the window [since, until) touches."""
    first: date = since.date()
    last: date = (until - timedelta(microseconds=1)).date()
    return [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def _day(at: datetime) -> str:
    return at.astimezone(UTC).date().isoformat()


def _rate(key: str, agreed: int, n: int) -> AgreementRow:
    if n == 0:
        return AgreementRow(key, 0, 0, None, None)
    return AgreementRow(key, n, agreed, agreed / n, wilson_interval(agreed, n))


def _label(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


# -- arrivals ----------------------------------------------------------------------------------


def _day_hour(session: Session, column: Any) -> tuple[Any, Any]:
    """SQL expressions for the UTC day (``YYYY-MM-DD``) and hour (0..23) of ``column``."""
    if session.get_bind().dialect.name == "sqlite":  # naive UTC, stored as ISO text
        return func.substr(column, 1, 10), cast(func.substr(column, 12, 2), Integer)
    utc = func.timezone("UTC", column)
    return func.to_char(utc, "YYYY-MM-DD"), cast(extract("hour", utc), Integer)


def _count_by_day_hour(
    session: Session, column: Any, since: datetime, until: datetime
) -> Counter[tuple[str, int]]:
    day, hour = _day_hour(session, column)
    rows = select(day.label("day"), hour.label("hour")).where(column >= since, column < until)
    inner = rows.subquery()
    grouped = select(inner.c.day, inner.c.hour, func.count()).group_by(inner.c.day, inner.c.hour)
    return Counter({(str(d), int(h)): int(n) for d, h, n in session.execute(grouped)})


def arrivals(sm: sessionmaker[Session], since: datetime, until: datetime) -> Arrivals:
    """Studies (by ``first_received_at``) and instances (by ``received_at``) in the window,
    by UTC hour of day and by UTC day."""
    since, until = _check_window(since, until)
    with reading(sm) as session:
        studies = _count_by_day_hour(session, Study.first_received_at, since, until)
        instances = _count_by_day_hour(session, Instance.received_at, since, until)
    study_hours: Counter[int] = Counter()
    instance_hours: Counter[int] = Counter()
    study_days: Counter[str] = Counter()
    instance_days: Counter[str] = Counter()
    for (day, hour), n in studies.items():
        study_hours[hour] += n
        study_days[day] += n
    for (day, hour), n in instances.items():
        instance_hours[hour] += n
        instance_days[day] += n
    return Arrivals(
        studies=sum(studies.values()),
        instances=sum(instances.values()),
        by_hour=tuple(HourArrivals(h, study_hours[h], instance_hours[h]) for h in range(24)),
        by_day=tuple(DayArrivals(d, study_days[d], instance_days[d]) for d in _days(since, until)),
    )


# -- turnaround --------------------------------------------------------------------------------


def turnaround(sm: sessionmaker[Session], since: datetime, until: datetime) -> Turnaround:
    """How long results took to reach the PACS.

    Definition: for each study whose ``first_received_at`` lies in the window, the turnaround is
    the number of seconds from ``first_received_at`` (the study's first image arriving) to the
    earliest ``sent_at`` among all deliveries in state ``sent`` of any of its result objects
    (SR, secondary capture, PDF; to any destination). Studies with no such delivery are counted
    in ``not_delivered`` and left out of the times. Days are the UTC day of
    ``first_received_at``. The median and the 90th percentile interpolate linearly between
    closest ranks (NumPy's default); they are ``None`` for a day with no delivered study.
    """
    since, until = _check_window(since, until)
    in_window = (Study.first_received_at >= since, Study.first_received_at < until)
    with reading(sm) as session:
        received = int(session.scalar(select(func.count(Study.id)).where(*in_window)) or 0)
        first_sent = session.execute(
            select(Study.first_received_at, func.min(Delivery.sent_at))
            .select_from(Delivery)
            .join(Result, Delivery.result_id == Result.id)
            .join(Study, Result.study_id == Study.id)
            .where(
                Delivery.state == DeliveryState.SENT.value,
                Delivery.sent_at.is_not(None),
                *in_window,
            )
            .group_by(Study.id, Study.first_received_at)
        ).all()
    seconds_by_day: dict[str, list[float]] = defaultdict(list)
    for start, at in first_sent:
        if at is not None:  # never: sent_at IS NOT NULL
            seconds_by_day[_day(start)].append((_aware(at) - start).total_seconds())
    everything = [s for values in seconds_by_day.values() for s in values]
    return Turnaround(
        studies=len(everything),
        not_delivered=received - len(everything),
        median_s=_quantile(everything, 0.5),
        p90_s=_quantile(everything, 0.9),
        by_day=tuple(
            DayTurnaround(
                d,
                len(seconds_by_day[d]),
                _quantile(seconds_by_day[d], 0.5),
                _quantile(seconds_by_day[d], 0.9),
            )
            for d in _days(since, until)
        ),
    )


def _aware(at: datetime) -> datetime:
    """``MIN()`` of a time column comes back as the driver gives it (SQLite: text, read by
    SQLAlchemy as a naive datetime): UTC either way."""
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


# -- open reviews ------------------------------------------------------------------------------


def open_reviews(sm: sessionmaker[Session]) -> OpenReviews:
    """Review work still to do, now.

    ``by_user``: per ``user_name`` with a review assignment, the assigned studies that have no
    override yet (by anyone); users with nothing open are left out. ``unassigned``: studies in
    state ``analysed`` with at least one analysis row whose ``decision`` is not ``None``, that
    have neither an override nor an assignment.
    """
    reviewed = select(Override.id).where(Override.study_id == ReviewAssignment.study_id)
    with reading(sm) as session:
        per_user = session.execute(
            select(ReviewAssignment.user_name, func.count())
            .where(~reviewed.exists())
            .group_by(ReviewAssignment.user_name)
            .order_by(ReviewAssignment.user_name)
        ).all()
        reviewable = (
            select(Result.id)
            .where(
                Result.study_id == Study.id,
                Result.kind == ANALYSIS,
                Result.detail["decision"].as_string().is_not(None),
            )
            .exists()
        )
        unassigned = session.scalar(
            select(func.count(Study.id)).where(
                Study.state == StudyState.ANALYSED.value,
                reviewable,
                ~select(Override.id).where(Override.study_id == Study.id).exists(),
                ~select(ReviewAssignment.id).where(ReviewAssignment.study_id == Study.id).exists(),
            )
        )
    by_user = tuple(UserOpenReviews(str(u), int(n)) for u, n in per_user if n)
    return OpenReviews(
        by_user=by_user,
        assigned_open=sum(u.open for u in by_user),
        unassigned=int(unassigned or 0),
    )


# -- reviews: agreement and accuracy -----------------------------------------------------------


@dataclass(frozen=True)
class _Review:
    created_at: datetime
    agree: bool | None
    ai_label: Mapping[str, Any]
    radiologist_label: Mapping[str, Any]


def _latest_reviews(sm: sessionmaker[Session], since: datetime, until: datetime) -> list[_Review]:
    """Each study's newest override (greatest id), kept if it was made in the window."""
    newest = select(func.max(Override.id).label("id")).group_by(Override.study_id).subquery()
    with reading(sm) as session:
        rows = session.execute(
            select(
                Override.created_at,
                Override.agree,
                Override.ai_label,
                Override.radiologist_label,
            )
            .join(newest, newest.c.id == Override.id)
            .where(Override.created_at >= since, Override.created_at < until)
        )
        return [
            _Review(created, agree, _label(ai), _label(rad)) for created, agree, ai, rad in rows
        ]


def _body_part(label: Mapping[str, Any]) -> str:
    value = label.get("body_part")
    text = value.strip() if isinstance(value, str) else ""
    return text or UNKNOWN_BODY_PART


def agreement(sm: sessionmaker[Session], since: datetime, until: datetime) -> AgreementStats:
    """How often radiologists agreed with the AI: the ``agree`` flag of each study's latest
    override made in the window, per UTC day of that override and per body part (the
    radiologist's ``body_part``, ``"unknown"`` when missing). Overrides with ``agree`` unset
    are left out."""
    since, until = _check_window(since, until)
    reviews = [r for r in _latest_reviews(sm, since, until) if r.agree is not None]
    n_day: Counter[str] = Counter()
    ok_day: Counter[str] = Counter()
    n_part: Counter[str] = Counter()
    ok_part: Counter[str] = Counter()
    for r in reviews:
        day, part = _day(r.created_at), _body_part(r.radiologist_label)
        n_day[day] += 1
        n_part[part] += 1
        if r.agree:
            ok_day[day] += 1
            ok_part[part] += 1
    agreed = sum(1 for r in reviews if r.agree)
    return AgreementStats(
        overall=_rate("all", agreed, len(reviews)),
        by_day=tuple(_rate(d, ok_day[d], n_day[d]) for d in _days(since, until)),
        by_body_part=tuple(_rate(p, ok_part[p], n_part[p]) for p in sorted(n_part)),
    )


def accuracy(sm: sessionmaker[Session], since: datetime, until: datetime) -> Accuracy:
    """The AI's sensitivity and specificity against the radiologists' reviews.

    Counted: each study's latest override made in the window. Reference standard: the
    radiologist's ``fracture`` (``"present"`` = positive, ``"absent"`` = negative). The AI
    *flagged* the study when its ``ai_label`` ``decision`` was ``"present"`` or
    ``"indeterminate"`` (an indeterminate study is sent for a human look, so it counts as a
    positive call); ``"absent"`` is not flagged. ``indeterminate`` reports how many of the
    counted studies were indeterminate. Reviews lacking either label are ``excluded``.
    Sensitivity = TP / (TP + FN), specificity = TN / (TN + FP), each with a 95% Wilson interval,
    ``None`` when the denominator is 0.
    """
    since, until = _check_window(since, until)
    tp = fp = tn = fn = indeterminate = excluded = 0
    for r in _latest_reviews(sm, since, until):
        decision, truth = r.ai_label.get("decision"), r.radiologist_label.get("fracture")
        if decision not in _AI_DECISIONS or truth not in _REFERENCE:
            excluded += 1
            continue
        if decision == "indeterminate":
            indeterminate += 1
        flagged, positive = decision in _FLAGGED, truth == "present"
        if flagged and positive:
            tp += 1
        elif flagged:
            fp += 1
        elif positive:
            fn += 1
        else:
            tn += 1
    sensitivity, sensitivity_ci = _proportion(tp, tp + fn)
    specificity, specificity_ci = _proportion(tn, tn + fp)
    return Accuracy(
        tp=tp,
        fp=fp,
        tn=tn,
        fn=fn,
        indeterminate=indeterminate,
        excluded=excluded,
        sensitivity=sensitivity,
        sensitivity_ci=sensitivity_ci,
        specificity=specificity,
        specificity_ci=specificity_ci,
    )


def _proportion(successes: int, n: int) -> tuple[float | None, tuple[float, float] | None]:
    if n == 0:
        return None, None
    return successes / n, wilson_interval(successes, n)
