"""``limit``/``offset`` on the list routes of the REST API that the review and admin tests do not
page through: overrides, outbox, jobs, callers, users and models. Each route gets more rows than
fit on two pages; the pages must tile the whole list in its documented order, and bad paging
input is refused with a 422 that names the parameter."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from storage.jobs import promote_studies_now
from storage.model_versions import register_version
from storage.outbox import queue_deliveries
from storage.peers import DestinationRow, add_caller, add_destination
from storage.reviews import ReviewLabel, create_override
from storage.schema import Result, Study
from storage.users import add_user
from xrayd.web.admin_api import MAX_OFFSET

from web_helpers import Web, seed_study

ROWS = 7  # two full pages and one short one
PAGE = 3


@dataclass(frozen=True)
class Listing:
    url: str
    user: str  # who asks (the admin routes answer 403 to radiologists)
    expected: list[Any]  # the key of every row, in the route's documented order
    key: Callable[[dict[str, Any]], Any]
    max_offset: bool  # whether the route refuses offsets past MAX_OFFSET


def _by_id(item: dict[str, Any]) -> Any:
    return item["id"]


def _overrides(web: Web) -> Listing:
    """Reviews of one study by two radiologists; the API lists them newest first."""
    study = seed_study(web.sessions, web.ctx.spool)
    label = ReviewLabel("absent", "0", "wrist", False)
    ids = [
        create_override(
            web.sessions, study, ("rad", "rad2")[n % 2], agree=False, label=label, comment=None
        ).id
        for n in range(ROWS)
    ]
    return Listing("/api/v1/overrides", "rad", sorted(ids, reverse=True), _by_id, False)


def _outbox(web: Web) -> Listing:
    """One result queued to seven destinations; the outbox lists deliveries oldest first."""
    study = seed_study(web.sessions, web.ctx.spool)
    with web.sessions() as session:
        result_id = session.query(Result.id).filter_by(study_id=study, kind="analysis").scalar()
    for n in range(ROWS):
        add_destination(
            web.sessions,
            DestinationRow(
                name=f"pacs{n}", ae_title=f"PACS{n}", host="10.0.0.9", port=104, send=("sr",)
            ),
        )
    ids = queue_deliveries(web.sessions, result_id, "sr")
    assert len(ids) == ROWS
    return Listing("/api/v1/outbox", "admin", sorted(ids), _by_id, True)


def _jobs(web: Web) -> Listing:
    """Seven studies whose association ended; the jobs list is oldest first."""
    now = datetime.now(UTC)
    uids = [f"1.2.826.0.1.3680043.8.498.{n + 1}" for n in range(ROWS)]
    with web.sessions.begin() as session:
        for uid in uids:
            session.add(
                Study(
                    study_instance_uid=uid,
                    state="receiving",
                    first_received_at=now,
                    last_received_at=now,
                    instance_count=1,
                )
            )
    ids = promote_studies_now(web.sessions, uids, now)
    assert len(ids) == ROWS
    return Listing("/api/v1/jobs", "admin", sorted(ids), _by_id, True)


def _callers(web: Web) -> Listing:
    """Callers are listed by AE title, then host."""
    callers = [(f"CT{n}", f"10.0.0.{n}") for n in (5, 2, 6, 0, 3, 1, 4)]
    for title, host in callers:
        assert add_caller(web.sessions, title, host)
    return Listing(
        "/api/v1/callers",
        "admin",
        sorted(callers),
        lambda item: (item["ae_title"], item["host"]),
        True,
    )


def _users(web: Web) -> Listing:
    """Four users beside the admin, rad and rad2 of every web test; listed by name."""
    for name in ("zoe", "bob", "mia", "carl"):
        add_user(web.sessions, name, "radiologist", "a-long-password-1")
    names = sorted(["admin", "rad", "rad2", "zoe", "bob", "mia", "carl"])
    assert len(names) == ROWS
    return Listing("/api/v1/users", "admin", names, lambda item: item["name"], True)


def _models(web: Web) -> Listing:
    """Registered model versions, newest first."""
    ids = []
    with web.sessions.begin() as session:
        for n in range(ROWS):
            version = f"1.0.0+r{n}"
            row = register_version(
                session,
                name="m",
                version=version,
                sha256=version.ljust(64, "0"),
                path=f"/{version}",
                state="candidate",
                actor="retrain",
                gate={"verdict": "passed"},
            )
            ids.append(row.id)
    return Listing("/api/v1/models", "admin", sorted(ids, reverse=True), _by_id, True)


SEEDERS: dict[str, Callable[[Web], Listing]] = {
    "overrides": _overrides,
    "outbox": _outbox,
    "jobs": _jobs,
    "callers": _callers,
    "users": _users,
    "models": _models,
}


@pytest.mark.parametrize("route", sorted(SEEDERS))
def test_list_routes_page_through_every_row_once_in_order(web: Web, route: str) -> None:
    listing = SEEDERS[route](web)
    headers = web.token(listing.user)

    def get(**params: int) -> Any:
        return web.client.get(listing.url, params=params, headers=headers)

    whole = get(limit=500).json()
    assert (whole["total"], whole["limit"], whole["offset"]) == (ROWS, 500, 0)
    keys = [listing.key(item) for item in whole["items"]]
    assert keys == listing.expected

    paged: list[Any] = []
    sizes = []
    for offset in range(0, ROWS + PAGE, PAGE):  # the last page is past the end: empty
        r = get(limit=PAGE, offset=offset)
        assert r.status_code == 200, r.text
        page = r.json()
        assert (page["total"], page["limit"], page["offset"]) == (ROWS, PAGE, offset)
        sizes.append(len(page["items"]))
        paged += [listing.key(item) for item in page["items"]]
    assert sizes == [3, 3, 1, 0]
    assert paged == keys  # the same order across pages, no row twice, none left out
    assert get(limit=PAGE, offset=PAGE).json() == get(limit=PAGE, offset=PAGE).json()

    default = get().json()
    assert default["offset"] == 0 and default["limit"] >= ROWS and len(default["items"]) == ROWS

    bad = [({"limit": 0}, "limit"), ({"limit": 501}, "limit"), ({"offset": -1}, "offset")]
    if listing.max_offset:
        bad.append(({"offset": MAX_OFFSET + 1}, "offset"))
    for params, name in bad:
        r = get(**params)
        assert r.status_code == 422, (params, r.status_code)
        assert name in r.json()["detail"], r.json()
