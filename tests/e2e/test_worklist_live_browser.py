"""The live worklist in Chromium (issue 19): a study analysed while the worklist is open appears
without a reload (the page's own JavaScript state and navigation entry survive), is announced
in the polite live region, the keyboard focus stays on the control it was on, times are shown
in the browser's time zone, and a study is claimed with its row's button. Every step waits on
what the page shows (Playwright ``expect``), never on time."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from browser_helpers import chromium, served_web
from integration.web.web_helpers import seed_study

from storage.audit import list_audit
from storage.opened import Storage

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

USER, PASSWORD = "rad", "radiologist-pw-456"
EXPECT_MS = 30_000  # generous for a 2-core runner; expect() returns as soon as it holds
TIME_ZONE = "Pacific/Auckland"  # far from UTC, so a local time cannot pass for the UTC one


@dataclass(frozen=True)
class Site:
    base: str
    storage: Storage

    def seed(self, hours_ago: float, **kwargs: Any) -> int:
        """An analysed flagged study (the rows the analysis job leaves), received then."""
        return seed_study(
            self.storage.sessions,
            self.storage.spool,
            received_at=datetime.now(UTC) - timedelta(hours=hours_ago),
            **kwargs,
        )


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    with served_web(tmp_path / "data", {USER: ("radiologist", PASSWORD)}) as (base, storage):
        yield Site(base, storage)


@pytest.fixture
def page() -> Iterator[Any]:
    """A Chromium page at 1440x900 in a time zone far from UTC; script errors fail the test."""
    with chromium() as browser:
        context = browser.new_context(
            viewport={"width": 1440, "height": 900}, timezone_id=TIME_ZONE
        )
        context.set_default_timeout(EXPECT_MS)
        tab = context.new_page()
        errors: list[str] = []
        tab.on("pageerror", lambda exc: errors.append(str(exc)))
        tab.on("console", lambda m: _console_error(m, errors))  # CSP refusals, failed loads
        tab.on(
            "response",
            lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None,
        )
        yield tab
        assert errors == [], errors


def _console_error(message: Any, errors: list[str]) -> None:
    url = str((message.location or {}).get("url", ""))
    if message.type == "error":
        errors.append(f"{message.text} ({url})")


def _navigations(page: Any) -> list[Any]:
    """The page's navigation entry and its time origin: a reload would give new ones."""
    return list(
        page.evaluate(
            "() => [performance.timeOrigin, performance.getEntriesByType('navigation').length]"
        )
    )


def test_new_studies_appear_without_a_reload(site: Site, page: Any) -> None:
    from playwright.sync_api import expect

    first = site.seed(3)
    page.goto(f"{site.base}/login")
    page.locator("form.login input[name=username]").fill(USER)
    page.locator("form.login input[name=password]").fill(PASSWORD)
    page.locator("form.login button[type=submit]").click()
    expect(page).to_have_url(f"{site.base}/worklist")
    rows = page.locator("table.worklist tbody tr[data-study-id]")
    expect(rows).to_have_count(1)
    row = page.locator(f'tr[data-study-id="{first}"]')
    expect(row.locator("td.patient a")).to_have_text("Doe, Jane")
    expect(row.locator("td.mrn")).to_have_text("PAT-SECRET-42")
    expect(row.locator("td.accession")).to_have_text("ACC1")
    expect(row.locator("td.exam")).to_have_text("HAND")
    expect(row.locator("td.waiting")).to_have_text(re.compile(r"^\s*(2 h 59|3 h 00) min\s*$"))
    expect(page.locator("nav.views a[aria-current=page]")).to_contain_text("Needs my attention")

    # Received: shown in the browser's time zone, the server's UTC text kept as the tooltip.
    received = row.locator("td.received time")
    utc_text = received.get_attribute("title")
    assert utc_text is not None and utc_text.endswith(" UTC"), utc_text
    local = received.inner_text()
    assert local != utc_text and "UTC" not in local, local
    iso = received.get_attribute("datetime")
    assert iso is not None
    in_zone = page.evaluate(
        "(iso) => new Date(iso).toLocaleString(undefined, {year: 'numeric', month: '2-digit',"
        " day: '2-digit', hour: '2-digit', minute: '2-digit', timeZoneName: 'short'})",
        iso,
    )
    assert local == in_zone and re.search(r"GMT\+1[23]|NZ", local), (local, in_zone)

    # Mark this document, keep the focus on the first row's Claim button, poll often.
    page.evaluate("() => { window.xraydMarker = 'same document'; }")
    before = _navigations(page)
    claim_first = row.get_by_role("button", name=re.compile(r"^Claim"))
    claim_first.focus()
    # while nothing changes, the poll is answered 304 (no rows sent)
    with page.expect_response(lambda r: "/worklist/rows" in r.url and r.status == 304):
        page.locator("#worklist-live").evaluate("(el) => { el.dataset.pollMs = '250'; }")

    second = site.seed(0.5, decision="indeterminate", probability=0.85, patient_name="Roe^Ann")
    new_row = page.locator(f'tr[data-study-id="{second}"]')
    expect(new_row).to_have_count(1)  # no reload: the poller swapped the rows in
    expect(page.locator("#live-status")).to_have_text("1 new study")
    expect(new_row.locator("td.patient a")).to_have_text("Roe, Ann")
    expect(rows).to_have_count(2)
    assert [r.get_attribute("data-study-id") for r in rows.all()] == [str(first), str(second)]
    assert page.evaluate("() => window.xraydMarker") == "same document"
    assert _navigations(page) == before
    expect(page.locator("#attention-count")).to_have_text("2")
    # the focus stayed on the same control of the same study (the rows were replaced)
    focused = page.evaluate(
        "() => [document.activeElement.dataset.focus,"
        " document.activeElement.closest('tr').dataset.studyId]"
    )
    assert focused == ["claim", str(first)]
    # new rows are localised too
    expect(new_row.locator("td.received time")).not_to_have_text(re.compile("UTC"))

    # Claim by the row's button (keyboard: the focused button, Enter): back on the worklist.
    page.keyboard.press("Enter")
    expect(row.locator("td.review-state")).to_contain_text("claimed by you")
    expect(row.get_by_role("button", name=re.compile(r"^Release"))).to_be_visible()
    claimed = [e for e in list_audit(site.storage.sessions) if e.action == "study.claimed"]
    assert [(e.actor, e.object_id) for e in claimed] == [(USER, str(first))]

    # Away from the keyboard longer than the session's idle time: polling stops (so an open
    # worklist does not keep the session alive), says so, and resumes on the next key press.
    live = page.locator("#worklist-live")
    live.evaluate("(el) => { el.dataset.idleMs = '1'; el.dataset.pollMs = '250'; }")
    status = page.locator("#live-status")
    expect(status).to_contain_text("Live updates paused")
    third = site.seed(0.1, patient_name="Poe^Edgar")
    live.evaluate("(el) => { el.dataset.idleMs = '600000'; }")
    expect(page.locator(f'tr[data-study-id="{third}"]')).to_have_count(0)  # still paused
    page.keyboard.press("Shift")
    expect(page.locator(f'tr[data-study-id="{third}"]')).to_have_count(1)
    expect(status).to_have_text("1 new study")
