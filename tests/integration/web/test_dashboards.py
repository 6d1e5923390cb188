"""The dashboards page and ``GET /api/v1/stats`` on a seeded SQLite database.

Twelve studies (A..L) with deliveries, reviews and assignments; every number below was worked
out by hand from the table in :func:`seed`. The window is 1..3 March 2025 (UTC).
"""

from __future__ import annotations

import html
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from pydicom.uid import generate_uid

from storage.schema import Delivery, Override, Result, ReviewAssignment, Study
from xrayd.web.dashboards import last_days

from web_helpers import Web, seed_study

SINCE = "2025-03-01T00:00:00Z"
UNTIL = "2025-03-04T00:00:00Z"
DAYS = ["2025-03-01", "2025-03-02", "2025-03-03"]
SVG = "{http://www.w3.org/2000/svg}"

# 95 % Wilson score intervals, to 4 decimals (cf. tests/integration/storage/test_stats.py).
W_3_4 = (0.3006, 0.9544)
W_2_3 = (0.2077, 0.9385)
W_4_6 = (0.2999, 0.9032)
W_1_2 = (0.0945, 0.9055)
W_2_2 = (0.3424, 1.0)
W_1_1 = (0.2065, 1.0)


def at(day: int, hour: int = 0, minute: int = 0) -> datetime:
    """``day`` of March 2025 (0 is 28 February, -1 the 27th)."""
    return datetime(2025, 3, 1, tzinfo=UTC) + timedelta(days=day - 1, hours=hour, minutes=minute)


# -- seeding -----------------------------------------------------------------------------------


def deliver(web: Web, study_id: int, kind: str, *deliveries: tuple[str, str, int | None]) -> None:
    """A result object of ``study_id`` with deliveries ``(destination, state, seconds after
    the study's first image or None)``."""
    with web.sessions.begin() as s:
        study = s.get(Study, study_id)
        assert study is not None
        first = study.first_received_at
        result = Result(study_id=study_id, kind=kind, sop_instance_uid=str(generate_uid()))
        s.add(result)
        s.flush()
        for destination, state, after in deliveries:
            s.add(
                Delivery(
                    result_id=result.id,
                    destination_name=destination,
                    state=state,
                    sent_at=None if after is None else first + timedelta(seconds=after),
                )
            )


def review(
    web: Web,
    study_id: int,
    created: datetime,
    *,
    agree: bool | None,
    ai: str | None,
    fracture: str,
    body_part: str,
    user: str = "rad",
) -> None:
    """An override as a radiologist leaves it (``ai=None``: no AI label stored)."""
    with web.sessions.begin() as s:
        s.add(
            Override(
                study_id=study_id,
                user_name=user,
                ai_label=None if ai is None else {"decision": ai, "fracture_probability": 0.5},
                radiologist_label={
                    "fracture": fracture,
                    "count": "1",
                    "body_part": body_part,
                    "hardware": False,
                },
                created_at=created,
                agree=agree,
            )
        )


def assign(web: Web, study_id: int, user: str) -> None:
    with web.sessions.begin() as s:
        s.add(ReviewAssignment(study_id=study_id, user_name=user, assigned_at=at(3)))


def seed(web: Web) -> dict[str, int]:
    """
    ==  ============  =============  ======  ==================  ======  ====================
    id  received      AI decision    images  sent (s after 1st)  assign  latest review
    ==  ============  =============  ======  ==================  ======  ====================
    A   1 Mar 08:10   present        2       SC 30, SR 90        rad     1 Mar agree wrist TP
    B   1 Mar 08:40   present        1       SR 120              -       2 Mar no, hand FP
    C   1 Mar 14:00   absent         1       SR 300, 1 pending   rad     -
    D   2 Mar 09:00   indeterminate  1       SR 600              -       2 Mar agree ankle TP
    E   2 Mar 23:30   absent         1       dead only           -       3 Mar no, wrist FN
    F   3 Mar 08:05   present        1       SR 45               rad2    -
    G   3 Mar 16:00   absent         1       -                   -       3 Mar agree hand TN
    H   28 Feb 12:00  absent         1       -                   -       1 Mar agree wrist TN
    I   4 Mar 00:00   absent         1       -                   rad     -
    J   3 Mar 20:00   present        1       -                   -       3 Mar (unset) foot TP
    K   3 Mar 21:00   present        1       -                   -       3 Mar agree hand, -
    L   27 Feb 10:00  absent         1       -                   -       -
    ==  ============  =============  ======  ==================  ======  ====================

    B was reviewed twice; its first review (1 Mar, wrist) is superseded. H, I and L lie
    outside the window (arrivals, turnaround) but H's review lies inside it. J's review has
    ``agree`` unset (not in the agreement); K's has no AI label (agreement yes, accuracy no:
    excluded).
    """
    plan = {
        "A": (at(1, 8, 10), "present", 2, "wrist"),
        "B": (at(1, 8, 40), "present", 1, "wrist"),
        "C": (at(1, 14), "absent", 1, "hand"),
        "D": (at(2, 9), "indeterminate", 1, "ankle"),
        "E": (at(2, 23, 30), "absent", 1, "wrist"),
        "F": (at(3, 8, 5), "present", 1, "hand"),
        "G": (at(3, 16), "absent", 1, "hand"),
        "H": (at(0, 12), "absent", 1, "wrist"),
        "I": (at(4), "absent", 1, "knee"),
        "J": (at(3, 20), "present", 1, "foot"),
        "K": (at(3, 21), "present", 1, "hand"),
        "L": (at(-1, 10), "absent", 1, "hip"),
    }
    ids = {
        key: seed_study(
            web.sessions,
            web.ctx.spool,
            decision=decision,
            probability=0.9 if decision == "present" else 0.1,
            body_part=part,
            received_at=when,
            images=images,
        )
        for key, (when, decision, images, part) in plan.items()
    }
    deliver(web, ids["A"], "sc", ("PACS", "sent", 30))
    deliver(web, ids["A"], "sr", ("PACS", "sent", 90))
    deliver(web, ids["B"], "sr", ("PACS", "sent", 120))
    deliver(web, ids["C"], "sr", ("PACS", "sent", 300), ("ARCHIVE", "pending", None))
    deliver(web, ids["D"], "sr", ("PACS", "sent", 600))
    deliver(web, ids["E"], "sr", ("PACS", "dead", None))
    deliver(web, ids["F"], "sr", ("PACS", "sent", 45))

    for key, created, agree, ai, fracture, part in (
        ("A", at(1, 10), True, "present", "present", "wrist"),
        ("B", at(1, 11), False, "present", "absent", "wrist"),  # superseded by the next
        ("B", at(2, 10), False, "present", "absent", "hand"),
        ("D", at(2, 12), True, "indeterminate", "present", "ankle"),
        ("E", at(3, 8), False, "absent", "present", "wrist"),
        ("G", at(3, 17), True, "absent", "absent", "hand"),
        ("H", at(1, 9), True, "absent", "absent", "wrist"),
        ("J", at(3, 21), None, "present", "present", "foot"),
        ("K", at(3, 22), True, None, "present", "hand"),
    ):
        review(web, ids[key], created, agree=agree, ai=ai, fracture=fracture, body_part=part)
    assign(web, ids["A"], "rad")
    assign(web, ids["C"], "rad")
    assign(web, ids["F"], "rad2")
    assign(web, ids["I"], "rad")
    return ids


@pytest.fixture
def seeded(web: Web) -> Web:
    seed(web)
    return web


# K (agree True, hand, 3 Mar) counts for agreement but not for accuracy (no AI decision).
# Agreement, latest reviews in the window with agree set: A T, B F, D T, E F, G T, H T, K T.
AGREEMENT_BY_DAY = [  # (day, n, agreed, ci)
    ("2025-03-01", 2, 2, W_2_2),  # A, H
    ("2025-03-02", 2, 1, W_1_2),  # B, D
    ("2025-03-03", 3, 2, W_2_3),  # E, G, K
]
AGREEMENT_BY_PART = [
    ("ankle", 1, 1, W_1_1),  # D
    ("hand", 3, 2, W_2_3),  # B, G, K
    ("wrist", 3, 2, W_2_3),  # A, E, H
]
W_5_7 = (0.3589, 0.9178)


def approx_pair(value: Any, expected: tuple[float, float]) -> bool:
    assert value is not None
    return list(value) == pytest.approx(list(expected), abs=5e-5)


# -- API ---------------------------------------------------------------------------------------


def get_stats(web: Web, **params: Any) -> dict[str, Any]:
    r = web.client.get("/api/v1/stats", params=params, headers=web.token("rad"))
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_api_stats_numbers(seeded: Web) -> None:
    body = get_stats(seeded, since=SINCE, until=UNTIL)
    assert set(body) == {
        "window",
        "arrivals",
        "turnaround",
        "open_reviews",
        "agreement",
        "accuracy",
    }
    assert body["window"] == {"since": "2025-03-01T00:00:00Z", "until": "2025-03-04T00:00:00Z"}

    a = body["arrivals"]
    assert (a["studies"], a["instances"]) == (9, 10)
    assert len(a["by_hour"]) == 24
    hours = {h["hour"]: (h["studies"], h["instances"]) for h in a["by_hour"] if h["studies"]}
    ones = {hour: (1, 1) for hour in (9, 14, 16, 20, 21, 23)}
    assert hours == {8: (3, 4), **ones}
    assert a["by_day"] == [
        {"day": "2025-03-01", "studies": 3, "instances": 4},
        {"day": "2025-03-02", "studies": 2, "instances": 2},
        {"day": "2025-03-03", "studies": 4, "instances": 4},
    ]

    t = body["turnaround"]
    # Delivered: A 30 (the SC, before its SR), B 120, C 300, D 600, F 45; E, G, J, K not.
    assert (t["studies"], t["not_delivered"]) == (5, 4)
    assert t["median_s"] == 120.0
    assert t["p90_s"] == pytest.approx(480.0)  # 300 + 0.6 * (600 - 300)
    assert [(d["day"], d["studies"], d["median_s"]) for d in t["by_day"]] == [
        ("2025-03-01", 3, 120.0),
        ("2025-03-02", 1, 600.0),
        ("2025-03-03", 1, 45.0),
    ]
    assert [d["p90_s"] for d in t["by_day"]] == pytest.approx([264.0, 600.0, 45.0])

    assert body["open_reviews"] == {
        "by_user": [{"user_name": "rad", "open": 2}, {"user_name": "rad2", "open": 1}],
        "assigned_open": 3,
        "unassigned": 1,  # L
    }

    g = body["agreement"]
    assert (g["overall"]["key"], g["overall"]["n"], g["overall"]["agreed"]) == ("all", 7, 5)
    assert g["overall"]["rate"] == pytest.approx(5 / 7)
    assert approx_pair(g["overall"]["ci"], W_5_7)
    for row, (day, n, agreed, ci) in zip(g["by_day"], AGREEMENT_BY_DAY, strict=True):
        assert (row["key"], row["n"], row["agreed"]) == (day, n, agreed)
        assert row["rate"] == pytest.approx(agreed / n)
        assert approx_pair(row["ci"], ci)
    for row, (part, n, agreed, ci) in zip(g["by_body_part"], AGREEMENT_BY_PART, strict=True):
        assert (row["key"], row["n"], row["agreed"]) == (part, n, agreed)
        assert row["rate"] == pytest.approx(agreed / n)
        assert approx_pair(row["ci"], ci)

    acc = body["accuracy"]
    # TP: A, D (indeterminate, counted as flagged), J; FP: B; TN: G, H; FN: E; excluded: K.
    assert {k: acc[k] for k in ("tp", "fp", "tn", "fn", "indeterminate", "excluded")} == {
        "tp": 3,
        "fp": 1,
        "tn": 2,
        "fn": 1,
        "indeterminate": 1,
        "excluded": 1,
    }
    assert acc["sensitivity"] == pytest.approx(0.75)
    assert approx_pair(acc["sensitivity_ci"], W_3_4)
    assert acc["specificity"] == pytest.approx(2 / 3)
    assert approx_pair(acc["specificity_ci"], W_2_3)


def test_api_window_in_another_zone_and_with_days_before_until(seeded: Web) -> None:
    # 1 March 01:00+01:00 is 1 March 00:00 UTC: the same window.
    body = get_stats(seeded, since="2025-03-01T01:00:00+01:00", until="2025-03-04T01:00:00+01:00")
    assert body["window"] == {"since": "2025-03-01T00:00:00Z", "until": "2025-03-04T00:00:00Z"}
    assert body["arrivals"]["studies"] == 9
    body = get_stats(seeded, days=3, until=UNTIL)
    assert body["window"]["since"] == "2025-03-01T00:00:00Z"
    assert body["accuracy"]["tp"] == 3
    # Only 1 March: A, B, C arrived; the reviews of A and H were made.
    body = get_stats(seeded, since=SINCE, until="2025-03-02T00:00:00Z")
    assert body["arrivals"]["studies"] == 3
    assert body["agreement"]["overall"]["n"] == 2
    assert [d["day"] for d in body["turnaround"]["by_day"]] == ["2025-03-01"]


def test_api_days_ends_with_today(web: Web) -> None:
    seed_study(web.sessions, web.ctx.spool, received_at=datetime.now(UTC) - timedelta(minutes=1))
    body = get_stats(web, days=7)
    days = [d["day"] for d in body["arrivals"]["by_day"]]
    today = last_days(1).since.date()
    assert days == [(today - timedelta(days=6 - i)).isoformat() for i in range(7)]
    assert body["arrivals"]["studies"] == 1
    assert len(get_stats(web)["arrivals"]["by_day"]) == 30  # the default


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"days": 0}, "days"),
        ({"days": 367}, "days"),
        ({"days": "many"}, "days"),
        ({"since": "2025-03-01T00:00:00", "until": UNTIL}, "since: give a time zone"),
        ({"since": SINCE, "until": "2025-03-04T00:00:00"}, "until: give a time zone"),
        ({"since": SINCE, "days": 3}, "either days or since"),
        ({"since": UNTIL, "until": SINCE}, "later than since"),
        ({"since": "2024-01-01T00:00:00Z", "until": UNTIL}, "at most 366 days"),
        ({"since": "yesterday"}, "since"),
    ],
)
def test_api_refuses_bad_windows(web: Web, params: dict[str, Any], message: str) -> None:
    r = web.client.get("/api/v1/stats", params=params, headers=web.token("rad"))
    assert r.status_code == 422
    assert message in r.json()["detail"]


def test_api_needs_authentication(web: Web) -> None:
    r = web.client.get("/api/v1/stats")
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    r = web.client.get("/api/v1/stats", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401


def test_api_is_documented(web: Web) -> None:
    schema = web.client.get("/api/v1/openapi.json", headers=web.token("rad")).json()
    operation = schema["paths"]["/api/v1/stats"]["get"]
    assert operation["tags"] == ["stats"]
    assert {p["name"] for p in operation["parameters"]} == {"days", "since", "until"}
    ref = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    stats = schema["components"]["schemas"][ref.rsplit("/", 1)[1]]
    sections = {"arrivals", "turnaround", "open_reviews", "agreement", "accuracy"}
    assert sections <= set(stats["required"])
    assert "/dashboards" not in schema["paths"]


# -- page --------------------------------------------------------------------------------------


@dataclass
class Card:
    svg: ET.Element | None
    tables: dict[str, list[list[str]]]  # id -> rows of cell texts (header row first)
    facts: dict[str, str]
    text: str


def _text(fragment: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", fragment)).strip()


def card(page: str, card_id: str) -> Card:
    found = re.search(rf'<section class="card[^"]*" id="{card_id}".*?</section>', page, re.S)
    assert found is not None, card_id
    section = found.group(0)
    svg = re.search(r"<svg .*?</svg>", section, re.S)
    tables = {}
    for table_id, body in re.findall(r'<table [^>]*id="([^"]+)"[^>]*>(.*?)</table>', section, re.S):
        rows = re.findall(r"<tr>(.*?)</tr>", body, re.S)
        tables[table_id] = [
            [_text(c) for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)] for row in rows
        ]
    facts = dict(
        (_text(k), _text(v)) for k, v in re.findall(r"<dt>(.*?)</dt><dd>(.*?)</dd>", section)
    )
    return Card(
        svg=None if svg is None else ET.fromstring(svg.group(0)),
        tables=tables,
        facts=facts,
        text=_text(section),
    )


def by_class(root: ET.Element | None, name: str) -> list[ET.Element]:
    assert root is not None
    return [e for e in root.iter() if name in e.get("class", "").split()]


def values(elements: list[ET.Element]) -> list[tuple[str | None, float]]:
    return [(e.get("data-label"), float(e.get("data-value", "nan"))) for e in elements]


def series(root: ET.Element | None, index: int) -> list[float]:
    group = by_class(root, f"chart-series-{index}")
    points = [p for g in group for p in by_class(g, "chart-point")]
    return [float(p.get("data-value", "nan")) for p in points]


@pytest.fixture
def page(seeded: Web) -> str:
    seeded.login("rad")
    r = seeded.client.get("/dashboards", params={"from": DAYS[0], "to": DAYS[-1]})
    assert r.status_code == 200, r.text
    assert "<script" not in r.text and " style=" not in r.text  # the CSP forbids both
    return r.text


def test_page_window(page: str) -> None:
    assert 'data-since="2025-03-01T00:00:00+00:00"' in page
    assert 'data-until="2025-03-04T00:00:00+00:00"' in page
    assert "2025-03-01 to 2025-03-03" in page


def test_page_arrivals_by_hour(page: str) -> None:
    c = card(page, "arrivals-by-hour")
    bars = values(by_class(c.svg, "chart-bar"))
    assert len(bars) == 24
    expected = {"08": 3, "09": 1, "14": 1, "16": 1, "20": 1, "21": 1, "23": 1}
    assert bars == [(f"{h:02d}", float(expected.get(f"{h:02d}", 0))) for h in range(24)]
    rows = c.tables["arrivals-by-hour-table"]
    assert rows[0] == ["Hour (UTC)", "Studies", "Images"]
    assert rows[1 + 8] == ["08:00", "3", "4"]
    assert rows[1 + 21] == ["21:00", "1", "1"]
    assert rows[1 + 0] == ["00:00", "0", "0"]
    assert len(rows) == 25
    assert c.facts == {"Studies": "9", "Images": "10"}


def test_page_arrivals_by_day(page: str) -> None:
    c = card(page, "arrivals-by-day")
    assert series(c.svg, 0) == [3, 2, 4]  # studies
    assert series(c.svg, 1) == [4, 2, 4]  # images
    assert c.tables["arrivals-by-day-table"][1:] == [
        ["2025-03-01", "3", "4"],
        ["2025-03-02", "2", "2"],
        ["2025-03-03", "4", "4"],
    ]


def test_page_turnaround(page: str) -> None:
    c = card(page, "turnaround")
    # The largest p90 is 600 s, so the chart is in minutes.
    assert c.svg is not None and "minutes" in (c.svg.get("aria-label") or "")
    assert series(c.svg, 0) == [2, 10, 0.75]  # medians: 120 s, 600 s, 45 s
    assert series(c.svg, 1) == [4.4, 10, 0.75]  # p90: 264 s, 600 s, 45 s
    assert c.tables["turnaround-table"][1:] == [
        ["2025-03-01", "3", "2 min 00 s", "4 min 24 s"],
        ["2025-03-02", "1", "10 min 00 s", "10 min 00 s"],
        ["2025-03-03", "1", "45 s", "45 s"],
    ]
    assert c.facts == {
        "Median": "2 min 00 s",
        "90th percentile": "8 min 00 s",
        "Studies delivered": "5",
        "Not delivered (yet)": "4",
    }


def test_page_open_reviews(page: str) -> None:
    c = card(page, "open-reviews")
    assert values(by_class(c.svg, "chart-bar")) == [("rad", 2.0), ("rad2", 1.0)]
    assert c.tables["open-reviews-table"][1:] == [["rad", "2"], ["rad2", "1"]]
    assert c.facts == {"Assigned, open": "3", "Unassigned": "1"}


def test_page_agreement_over_time(page: str) -> None:
    c = card(page, "agreement-by-day")
    assert series(c.svg, 0) == pytest.approx([1.0, 0.5, 2 / 3])
    assert len(by_class(c.svg, "chart-band")) == 1  # the confidence band
    assert c.tables["agreement-by-day-table"][1:] == [
        ["2025-03-01", "2", "2", "100.0 %", "34.2 to 100.0 %"],
        ["2025-03-02", "2", "1", "50.0 %", "9.5 to 90.5 %"],
        ["2025-03-03", "3", "2", "66.7 %", "20.8 to 93.9 %"],
    ]
    assert c.facts == {"Agreement": "71.4 %", "95 % CI": "35.9 to 91.8 %", "Reviews": "7"}


def test_page_agreement_by_body_part(page: str) -> None:
    c = card(page, "agreement-by-body-part")
    bars = values(by_class(c.svg, "chart-bar"))
    assert [label for label, _ in bars] == ["ankle (n=1)", "hand (n=3)", "wrist (n=3)"]
    assert [v for _, v in bars] == pytest.approx([1.0, 2 / 3, 2 / 3])
    assert c.tables["agreement-by-body-part-table"][1:] == [
        ["ankle", "1", "1", "100.0 %", "20.7 to 100.0 %"],
        ["hand", "3", "2", "66.7 %", "20.8 to 93.9 %"],
        ["wrist", "3", "2", "66.7 %", "20.8 to 93.9 %"],
    ]


def test_page_accuracy(page: str) -> None:
    c = card(page, "accuracy")
    assert c.tables["accuracy-table"][1:] == [
        ["Sensitivity", "75.0 %", "30.1 to 95.4 %", "3 of 4 fractures flagged"],
        ["Specificity", "66.7 %", "20.8 to 93.9 %", "2 of 3 without fracture not flagged"],
    ]
    assert c.tables["accuracy-counts"][1:] == [
        ["True positives (TP)", "3"],
        ["False positives (FP)", "1"],
        ["True negatives (TN)", "2"],
        ["False negatives (FN)", "1"],
        ["AI indeterminate (counted as flagged)", "1"],
        ["Reviews left out (no usable labels)", "1"],
    ]
    assert "estimated from the radiologists' reviews" in c.text
    assert "Only reviewed studies count" in c.text
    assert "indeterminate AI result counts as flagged" in c.text
    assert "not a clinical validation" in c.text


def test_page_default_window_and_empty_database(web: Web) -> None:
    web.login("rad2")
    r = web.client.get("/dashboards")
    assert r.status_code == 200
    today = last_days(1).since.date()
    assert f"{(today - timedelta(days=29)).isoformat()} to {today.isoformat()}" in r.text
    assert len(by_class(card(r.text, "arrivals-by-hour").svg, "chart-bar")) == 24  # zeros
    empty = card(r.text, "agreement-by-body-part")
    assert by_class(empty.svg, "chart-no-data")
    assert "Nothing to show." in empty.text
    assert ["Sensitivity", "n/a", "n/a", "0 of 0 fractures flagged"] in card(
        r.text, "accuracy"
    ).tables["accuracy-table"]
    r = web.client.get("/dashboards", params={"days": 7})
    assert f"{(today - timedelta(days=6)).isoformat()} to {today.isoformat()}" in r.text


def test_page_escapes_names_in_charts(web: Web) -> None:
    study = seed_study(web.sessions, web.ctx.spool)
    assign(web, study, "<b>x&y</b>")
    web.login("admin")
    c = card(web.client.get("/dashboards").text, "open-reviews")
    assert values(by_class(c.svg, "chart-bar")) == [("<b>x&y</b>", 1.0)]
    assert c.tables["open-reviews-table"][1:] == [["<b>x&y</b>", "1"]]


def test_page_needs_login(web: Web) -> None:
    r = web.client.get("/dashboards")
    assert r.status_code == 401
    assert 'name="password"' in r.text and "chart" not in r.text


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"days": 0}, "days"),
        ({"days": 367}, "days"),
        ({"days": "x"}, "days"),
        ({"from": "2025-13-01"}, "from: expected a date"),
        ({"from": "2025-03-03", "to": "2025-03-01"}, "to: must not be before from"),
        ({"from": "2024-01-01", "to": "2025-03-01"}, "at most 366 days"),
    ],
)
def test_page_refuses_bad_windows(web: Web, params: dict[str, str], message: str) -> None:
    web.login("rad")
    r = web.client.get("/dashboards", params=params)
    assert r.status_code == 422
    assert message in html.unescape(r.text)


def test_last_days_is_whole_utc_days() -> None:
    w = last_days(3, datetime(2025, 3, 3, 23, 59, tzinfo=UTC))
    assert (w.since, w.until) == (at(1), at(4))
    assert (w.first_day, w.last_day) == ("2025-03-01", "2025-03-03")
    assert date.fromisoformat(w.last_day) - date.fromisoformat(w.first_day) == timedelta(days=2)
