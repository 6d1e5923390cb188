"""Dashboards: the statistics page (SVG charts with their numbers) and ``GET /api/v1/stats``.

Both read the same five sections of :mod:`storage.stats` (arrivals, turnaround, open reviews,
agreement, accuracy) for one half-open UTC window ``since <= t < until``:

* ``days=N`` (1..366, default 30): the last N UTC days, today included, i.e. from midnight
  N-1 days ago to the coming midnight.
* Page: ``from``/``to`` (``YYYY-MM-DD``, both days included) override ``days``.
* API: ``since``/``until`` (aware ISO datetimes); ``until`` defaults to now, or to the coming
  midnight when only ``days`` is given; ``since`` defaults to ``days`` before ``until``.

Open reviews are a snapshot of now, whatever the window.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response
from markupsafe import Markup
from pydantic import BaseModel, Field

from storage.db import Sessions
from storage.stats import (
    Accuracy,
    AgreementRow,
    AgreementStats,
    Arrivals,
    OpenReviews,
    Turnaround,
    accuracy,
    agreement,
    arrivals,
    open_reviews,
    turnaround,
)
from xrayd.web.auth import Principal, authenticated, context
from xrayd.web.charts import bar_chart, line_chart
from xrayd.web.paging import query_day
from xrayd.web.render import render

__all__ = [
    "DEFAULT_DAYS",
    "MAX_DAYS",
    "Stats",
    "StatsOut",
    "Window",
    "api_router",
    "last_days",
    "load_stats",
    "router",
]

router = APIRouter(include_in_schema=False)
api_router = APIRouter(prefix="/api/v1", tags=["stats"])

DEFAULT_DAYS = 30
MAX_DAYS = 366
SECONDS_UP_TO = 180.0  # turnaround charts switch from seconds to minutes above this p90

METHOD_NOTE = (
    "Sensitivity and specificity are estimated from the radiologists' reviews: each reviewed "
    "study's latest review made in the window is the reference (the radiologist's fracture "
    "present or absent). Only reviewed studies count, so cases that nobody reviewed, and any "
    "bias in which cases get reviewed, are not reflected. An indeterminate AI result counts "
    "as flagged (a positive call), because it asks for a human look. Intervals are 95 % "
    "Wilson score intervals. This is monitoring of a research tool, not a clinical validation."
)


# -- window ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """Half-open, aware UTC: ``since <= t < until``."""

    since: datetime
    until: datetime

    @property
    def first_day(self) -> str:
        return self.since.date().isoformat()

    @property
    def last_day(self) -> str:
        return (self.until - timedelta(microseconds=1)).date().isoformat()


def last_days(days: int, now: datetime | None = None) -> Window:
    """The last ``days`` UTC days, today included (up to the coming midnight)."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    until = datetime(now.year, now.month, now.day, tzinfo=UTC) + timedelta(days=1)
    return Window(until - timedelta(days=days), until)


def _checked(since: datetime, until: datetime) -> Window:
    since, until = since.astimezone(UTC), until.astimezone(UTC)
    if until <= since:
        raise HTTPException(422, "until must be later than since")
    if until - since > timedelta(days=MAX_DAYS):
        raise HTTPException(422, f"the window may span at most {MAX_DAYS} days")
    return Window(since, until)


def page_window(days: int, date_from: str | None, date_to: str | None) -> Window:
    """The page's window: ``from``..``to`` (whole UTC days, both included) or the last days."""
    first, last = query_day(date_from, "from"), query_day(date_to, "to")
    if first is None and last is None:
        return last_days(days)
    until = last + timedelta(days=1) if last is not None else last_days(1).until
    since = first if first is not None else until - timedelta(days=days)
    if until <= since:
        raise HTTPException(422, "to: must not be before from")
    return _checked(since, until)


def api_window(days: int | None, since: datetime | None, until: datetime | None) -> Window:
    for name, value in (("since", since), ("until", until)):
        if value is not None and (value.tzinfo is None or value.utcoffset() is None):
            raise HTTPException(
                422, f"{name}: give a time zone (e.g. 2025-03-01T00:00:00Z), not a naive time"
            )
    if since is not None and days is not None:
        raise HTTPException(422, "give either days or since, not both")
    if since is None and until is None:
        return last_days(days or DEFAULT_DAYS)
    if since is None:
        assert until is not None
        since = until - timedelta(days=days or DEFAULT_DAYS)
    return _checked(since, until or datetime.now(UTC))


# -- numbers -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stats:
    window: Window
    arrivals: Arrivals
    turnaround: Turnaround
    open_reviews: OpenReviews
    agreement: AgreementStats
    accuracy: Accuracy


def load_stats(sessions: Sessions, window: Window) -> Stats:
    since, until = window.since, window.until
    return Stats(
        window=window,
        arrivals=arrivals(sessions, since, until),
        turnaround=turnaround(sessions, since, until),
        open_reviews=open_reviews(sessions),
        agreement=agreement(sessions, since, until),
        accuracy=accuracy(sessions, since, until),
    )


# -- REST API ----------------------------------------------------------------------------------


class WindowOut(BaseModel):
    since: datetime = Field(description="start of the window (included), UTC")
    until: datetime = Field(description="end of the window (excluded), UTC")


class StatsOut(BaseModel):
    """All dashboard numbers for one window. Days and hours are UTC; rates are fractions
    (0..1) with 95 % Wilson intervals ``[low, high]``, ``null`` when nothing was counted."""

    window: WindowOut
    arrivals: Arrivals = Field(
        description="studies by first image received, images by arrival; per UTC hour of day "
        "(24 rows) and per UTC day (every day of the window)"
    )
    turnaround: Turnaround = Field(
        description="seconds from a study's first image to its first result object sent to a "
        "destination; median and 90th percentile, overall and per day of arrival"
    )
    open_reviews: OpenReviews = Field(
        description="now (not windowed): assigned studies without a review, per radiologist, "
        "and analysed studies neither reviewed nor assigned"
    )
    agreement: AgreementStats = Field(
        description="how often the latest review of a study (made in the window) agreed with "
        "the AI: overall, per day of review and per body part"
    )
    accuracy: Accuracy = Field(
        description="the AI against the radiologists' reviews (reviewed studies only; "
        "indeterminate counts as flagged): TP/FP/TN/FN, sensitivity, specificity"
    )


@api_router.get(
    "/stats",
    response_model=StatsOut,
    summary="Dashboard statistics for a window",
    description=(
        "Give `days` (the last N UTC days, today included; default 30) or `since` and "
        "optionally `until` (aware ISO 8601 datetimes; `until` defaults to now). "
        f"The window may span at most {MAX_DAYS} days. Open reviews are always as of now."
    ),
)
def stats_api(
    request: Request,
    _: Annotated[Principal, Depends(authenticated)],
    days: Annotated[
        int | None, Query(ge=1, le=MAX_DAYS, description="the last N UTC days, today included")
    ] = None,
    since: Annotated[datetime | None, Query(description="window start (aware)")] = None,
    until: Annotated[datetime | None, Query(description="window end, excluded (aware)")] = None,
) -> StatsOut:
    stats = load_stats(context(request).sessions, api_window(days, since, until))
    return StatsOut(
        window=WindowOut(since=stats.window.since, until=stats.window.until),
        arrivals=stats.arrivals,
        turnaround=stats.turnaround,
        open_reviews=stats.open_reviews,
        agreement=stats.agreement,
        accuracy=stats.accuracy,
    )


# -- page: formatting --------------------------------------------------------------------------


def _svg(svg: str) -> Markup:
    """A chart for the page as is: :mod:`xrayd.web.charts` escapes every text it writes."""
    return Markup(svg)  # noqa: S704


def pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def ci_text(ci: tuple[float, float] | None) -> str:
    return "n/a" if ci is None else f"{100 * ci[0]:.1f} to {100 * ci[1]:.1f} %"


def duration(seconds: float | None) -> str:
    """``45 s``, ``2 min 05 s``, ``3 h 07 min`` (rounded to the second)."""
    if seconds is None:
        return "n/a"
    total = round(seconds)
    if total < 120:
        return f"{total} s"
    if total < 7200:
        return f"{total // 60} min {total % 60:02d} s"
    return f"{total // 3600} h {total % 3600 // 60:02d} min"


# -- page: cards -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Card:
    """A chart with its numbers: ``facts`` (label, value) above, a table below."""

    id: str
    title: str
    chart: Markup
    caption: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    facts: tuple[tuple[str, str], ...] = ()


def _arrivals_cards(a: Arrivals) -> list[Card]:
    hours = [f"{h.hour:02d}" for h in a.by_hour]
    by_hour = Card(
        id="arrivals-by-hour",
        title="Arrivals by hour of day",
        chart=_svg(
            bar_chart(
                hours,
                [h.studies for h in a.by_hour],
                title="Studies by hour of day (UTC)",
                y_label="studies",
            )
        ),
        caption="Studies by the UTC hour their first image arrived, all days of the window.",
        columns=("Hour (UTC)", "Studies", "Images"),
        rows=tuple((f"{h.hour:02d}:00", str(h.studies), str(h.instances)) for h in a.by_hour),
        facts=(("Studies", str(a.studies)), ("Images", str(a.instances))),
    )
    days = [d.day for d in a.by_day]
    by_day = Card(
        id="arrivals-by-day",
        title="Arrivals by day",
        chart=_svg(
            line_chart(
                days,
                {
                    "Studies": [float(d.studies) for d in a.by_day],
                    "Images": [float(d.instances) for d in a.by_day],
                },
                title="Studies and images per day (UTC)",
                y_label="count",
            )
        ),
        caption="Studies by the day their first image arrived; images by their own arrival.",
        columns=("Day", "Studies", "Images"),
        rows=tuple((d.day, str(d.studies), str(d.instances)) for d in a.by_day),
    )
    return [by_hour, by_day]


def _turnaround_card(t: Turnaround) -> Card:
    p90s = [d.p90_s for d in t.by_day if d.p90_s is not None]
    minutes = bool(p90s) and max(p90s) > SECONDS_UP_TO
    unit, divisor = ("minutes", 60.0) if minutes else ("seconds", 1.0)

    def scaled(values: Sequence[float | None]) -> list[float | None]:
        return [None if v is None else v / divisor for v in values]

    days = [d.day for d in t.by_day]
    chart = line_chart(
        days,
        {
            "Median": scaled([d.median_s for d in t.by_day]),
            "90th percentile": scaled([d.p90_s for d in t.by_day]),
        },
        title=f"Turnaround per day ({unit})",
        y_label=unit,
    )
    return Card(
        id="turnaround",
        title="Turnaround",
        chart=_svg(chart),
        caption=(
            "Time from a study's first image arriving to its first result object sent to a "
            "destination, by the day the study arrived."
        ),
        columns=("Day", "Studies delivered", "Median", "90th percentile"),
        rows=tuple(
            (d.day, str(d.studies), duration(d.median_s), duration(d.p90_s)) for d in t.by_day
        ),
        facts=(
            ("Median", duration(t.median_s)),
            ("90th percentile", duration(t.p90_s)),
            ("Studies delivered", str(t.studies)),
            ("Not delivered (yet)", str(t.not_delivered)),
        ),
    )


def _open_reviews_card(o: OpenReviews) -> Card:
    names = [u.user_name for u in o.by_user]
    return Card(
        id="open-reviews",
        title="Open reviews (now)",
        chart=_svg(
            bar_chart(
                names,
                [u.open for u in o.by_user],
                title="Open reviews per radiologist",
                y_label="studies",
            )
        ),
        caption="Assigned studies not reviewed yet, per radiologist, as of now.",
        columns=("Radiologist", "Open reviews"),
        rows=tuple((u.user_name, str(u.open)) for u in o.by_user),
        facts=(("Assigned, open", str(o.assigned_open)), ("Unassigned", str(o.unassigned))),
    )


def _agreement_rows(rows: Sequence[AgreementRow]) -> tuple[tuple[str, ...], ...]:
    return tuple((r.key, str(r.n), str(r.agreed), pct(r.rate), ci_text(r.ci)) for r in rows)


def _agreement_cards(g: AgreementStats) -> list[Card]:
    days = [r.key for r in g.by_day]
    lows = [None if r.ci is None else r.ci[0] for r in g.by_day]
    highs = [None if r.ci is None else r.ci[1] for r in g.by_day]
    overall = g.overall
    facts = (
        ("Agreement", pct(overall.rate)),
        ("95 % CI", ci_text(overall.ci)),
        ("Reviews", str(overall.n)),
    )
    over_time = Card(
        id="agreement-by-day",
        title="Agreement with the AI over time",
        chart=_svg(
            line_chart(
                days,
                {"Agreement": [r.rate for r in g.by_day]},
                bands={"Agreement": (lows, highs)},
                title="Agreement rate per day (95 % CI shaded)",
                y_label="rate",
                y_max=1.0,
            )
        ),
        caption="Share of reviews that agreed with the AI, by the day of the review.",
        columns=("Day", "Reviews", "Agreed", "Rate", "95 % CI"),
        rows=_agreement_rows(g.by_day),
        facts=facts,
    )
    parts = g.by_body_part
    by_part = Card(
        id="agreement-by-body-part",
        title="Agreement by body part",
        chart=_svg(
            bar_chart(
                [f"{r.key} (n={r.n})" for r in parts],
                [r.rate if r.rate is not None else float("nan") for r in parts],
                title="Agreement rate per body part",
                y_label="rate",
            )
        ),
        caption="Body part as labelled by the radiologist; n is the number of reviews.",
        columns=("Body part", "Reviews", "Agreed", "Rate", "95 % CI"),
        rows=_agreement_rows(parts),
    )
    return [over_time, by_part]


def cards(stats: Stats) -> list[Card]:
    return [
        *_arrivals_cards(stats.arrivals),
        _turnaround_card(stats.turnaround),
        _open_reviews_card(stats.open_reviews),
        *_agreement_cards(stats.agreement),
    ]


@dataclass(frozen=True)
class AccuracyRow:
    measure: str
    estimate: str
    ci: str
    fraction: str  # e.g. "8 of 10"


def accuracy_rows(a: Accuracy) -> tuple[AccuracyRow, ...]:
    return (
        AccuracyRow(
            "Sensitivity",
            pct(a.sensitivity),
            ci_text(a.sensitivity_ci),
            f"{a.tp} of {a.tp + a.fn} fractures flagged",
        ),
        AccuracyRow(
            "Specificity",
            pct(a.specificity),
            ci_text(a.specificity_ci),
            f"{a.tn} of {a.tn + a.fp} without fracture not flagged",
        ),
    )


# -- page --------------------------------------------------------------------------------------


@router.get("/dashboards")
def dashboards_page(
    request: Request,
    principal: Annotated[Principal, Depends(authenticated)],
    days: Annotated[int, Query(ge=1, le=MAX_DAYS)] = DEFAULT_DAYS,
    date_from: Annotated[str | None, Query(alias="from", max_length=10)] = None,
    date_to: Annotated[str | None, Query(alias="to", max_length=10)] = None,
) -> Response:
    window = page_window(days, date_from, date_to)
    stats = load_stats(context(request).sessions, window)
    return render(
        request,
        "dashboards.html",
        stats=stats,
        window=window,
        cards=cards(stats),
        accuracy=stats.accuracy,
        accuracy_rows=accuracy_rows(stats.accuracy),
        method_note=METHOD_NOTE,
        form={"days": days, "from": date_from or "", "to": date_to or ""},
        presets=(7, 30, 90, 365),
        max_days=MAX_DAYS,
    )
