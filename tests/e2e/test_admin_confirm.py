"""Destructive admin actions ask first (issue 19): removing a destination in Chromium shows a
confirmation dialog; dismissed, nothing is sent; accepted, the destination is removed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_helpers import chromium

from storage.opened import Storage, open_storage
from storage.peers import DestinationRow, add_destination, list_destinations
from storage.users import add_user
from xrayd.web.context import WebContext
from xrayd.web.server import WebServer

from helpers import make_settings

ADMIN, PASSWORD = "it_admin", "correct-horse-battery"
EXPECT_MS = 30_000  # generous for a 2-core runner; expect() returns as soon as it holds


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Storage, str]]:
    settings = make_settings(tmp_path / "data", "", web={"host": "127.0.0.1", "port": 0})
    storage = open_storage(settings, create_if_empty=True, require_current=True)
    add_user(storage.sessions, ADMIN, "admin", PASSWORD)
    add_destination(storage.sessions, DestinationRow("pacs", "PACS", "127.0.0.1", 104, ("sr",)))
    server = WebServer(
        WebContext(settings=settings, sessions=storage.sessions, spool=storage.spool)
    )
    server.start()
    try:
        yield storage, f"http://127.0.0.1:{server.port}"
    finally:
        server.stop(timeout=10)
        storage.close()


@pytest.fixture
def page() -> Iterator[Any]:
    with chromium() as browser:
        context = browser.new_context(viewport={"width": 1440, "height": 900})
        context.set_default_timeout(EXPECT_MS)
        yield context.new_page()


def test_removing_a_destination_asks_first(served: tuple[Storage, str], page: Any) -> None:
    from playwright.sync_api import expect

    storage, base = served
    page.goto(f"{base}/login")
    page.locator("form.login input[name=username]").fill(ADMIN)
    page.locator("form.login input[name=password]").fill(PASSWORD)
    page.locator("form.login button[type=submit]").click()
    expect(page).to_have_url(f"{base}/worklist")
    page.goto(f"{base}/admin")
    remove = page.locator('form[action="/admin/destinations/pacs/remove"] button')

    questions: list[str] = []

    def dismiss(dialog: Any) -> None:
        questions.append(dialog.message)
        dialog.dismiss()

    page.once("dialog", dismiss)
    remove.click()
    assert questions == ["Remove destination pacs? Results will no longer be sent there."]
    expect(page).to_have_url(f"{base}/admin")  # nothing was sent
    assert [d.name for d in list_destinations(storage.sessions)] == ["pacs"]

    page.once("dialog", lambda dialog: dialog.accept())
    with page.expect_navigation():
        remove.click()
    expect(remove).to_have_count(0)
    assert list_destinations(storage.sessions) == []
