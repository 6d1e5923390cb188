"""One-key verdicts on the study page (issue 19), driven with the keyboard in Chromium: ``A``
agrees and saves, ``D`` opens the correction whose fields the arrow keys change and ``Enter``
saves, a wrong entry comes back beside its field without leaving the page, ``N`` goes to the
next study needing attention, ``?`` opens the help, and letters typed into the comment stay
there. Each step waits on what the page shows (Playwright ``expect``), never on time."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from browser_helpers import chromium
from integration.web.web_helpers import seed_study

from storage import users
from storage.opened import open_storage
from storage.reviews import list_overrides
from storage.users import add_user
from xrayd.web.context import WebContext
from xrayd.web.server import WebServer

from helpers import make_settings

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

USER, PASSWORD = "rad", "radiologist-pw-456"
EXPECT_MS = 30_000  # generous for a 2-core runner; expect() returns as soon as it holds


@dataclass(frozen=True)
class Site:
    base: str
    sessions: Any
    studies: dict[str, int]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("keys")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(users, "SCRYPT_LOG2_N", 10)  # cheap hashes: the production cost is not tested
        settings = make_settings(tmp / "data", "", web={"host": "127.0.0.1", "port": 0})
        storage = open_storage(settings, create_if_empty=True, require_current=True)
        add_user(storage.sessions, USER, "radiologist", PASSWORD)
        sm, spool = storage.sessions, storage.spool
        studies = {
            name: seed_study(sm, spool, decision="present", probability=0.97, count="1")
            for name in ("agree", "correct", "wrong", "help", "next")
        }
        studies["indeterminate"] = seed_study(
            sm, spool, decision="indeterminate", probability=0.85, count="1"
        )
        server = WebServer(WebContext(settings=settings, sessions=sm, spool=spool))
        server.start()
        try:
            yield Site(f"http://127.0.0.1:{server.port}", sm, studies)
        finally:
            server.stop(timeout=10)
            storage.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b


@dataclass
class Tab:
    page: Any
    errors: list[str]


@pytest.fixture
def tab(site: Site, browser: Any) -> Iterator[Tab]:
    """A logged-in radiologist's page at 1440x900; uncaught script errors are collected."""
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1440, "height": 900})
    context.set_default_timeout(EXPECT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{site.base}/login")
    page.locator("form.login input[name=username]").fill(USER)
    page.locator("form.login input[name=password]").fill(PASSWORD)
    page.locator("form.login button[type=submit]").click()
    expect(page).to_have_url(re.compile(r"/worklist"))
    try:
        yield Tab(page, errors)
    finally:
        context.close()


def _open(tab: Tab, site: Site, study: int) -> Any:
    """The study page, its verdict script running (it shows the shortcuts button)."""
    from playwright.sync_api import expect

    page = tab.page
    page.goto(f"{site.base}/studies/{study}")
    expect(page.locator("#help-toggle")).to_be_visible()
    page.evaluate("() => { window.sameDocument = true; }")  # gone if the page is reloaded
    return page


def _same_document(page: Any) -> bool:
    return bool(page.evaluate("() => window.sameDocument === true"))


def test_a_agrees_and_saves(tab: Tab, site: Site) -> None:
    from playwright.sync_api import expect

    study = site.studies["agree"]
    page = _open(tab, site, study)
    expect(page.locator("#verdict-lead")).to_contain_text("AI: present")
    page.keyboard.press("a")
    expect(page).to_have_url(re.compile(rf"/studies/{study}\?saved=\d+"))
    expect(page.locator("#saved")).to_contain_text("Review saved")
    expect(page.locator("#review-state")).to_contain_text(f"reviewed by {USER}")
    expect(page.locator("#review-state")).to_contain_text("(agree)")
    expect(page.locator("#verdict-lead")).to_contain_text(
        f"Radiologist: fracture present, count 1 — reviewed by {USER}"
    )
    [override], _ = list_overrides(site.sessions, study_id=study)
    assert override.agree is True and override.radiologist_label["fracture"] == "present"
    assert tab.errors == []


def test_d_then_arrow_keys_then_enter_saves_the_correction(tab: Tab, site: Site) -> None:
    from playwright.sync_api import expect

    study = site.studies["correct"]
    page = _open(tab, site, study)
    correction = page.locator("#correction")
    expect(correction).not_to_have_attribute("open", "")
    page.keyboard.press("d")
    expect(correction).to_have_attribute("open", "")
    present = page.locator('input[name="fracture"][value="present"]')
    expect(present).to_be_focused()  # the AI's label, to change
    page.keyboard.press("ArrowDown")  # absent; a fracture absent counts 0
    expect(page.locator('input[name="fracture"][value="absent"]')).to_be_checked()
    expect(page.locator('input[name="count"][value="0"]')).to_be_checked()
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(rf"/studies/{study}\?saved=\d+"))
    expect(page.locator("#review-state")).to_contain_text("(disagree)")
    expect(page.locator("#verdict-lead")).to_contain_text("Radiologist: fracture absent, count 0")
    [override], _ = list_overrides(site.sessions, study_id=study)
    assert override.agree is False
    assert override.radiologist_label == {
        "fracture": "absent",
        "count": "0",
        "body_part": "wrist",
        "hardware": False,
    }
    assert tab.errors == []


def test_a_wrong_entry_is_shown_beside_its_field_and_the_page_stays(tab: Tab, site: Site) -> None:
    from playwright.sync_api import expect

    study = site.studies["wrong"]
    page = _open(tab, site, study)
    url = page.url
    page.keyboard.press("d")
    page.keyboard.press("ArrowDown")  # fracture absent (count 0 follows)
    page.keyboard.press("Tab")  # to the count group, on its checked radio
    expect(page.locator('input[name="count"][value="0"]')).to_be_focused()
    page.keyboard.press("ArrowRight")  # count 1: contradicts "absent"
    expect(page.locator('input[name="count"][value="1"]')).to_be_checked()
    page.keyboard.press("Enter")
    message = page.locator("#error-count")
    expect(message).to_be_visible()
    expect(message).to_have_text("Count must be '0' when no fracture is present")
    expect(page.locator("#field-count")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#field-count")).to_have_attribute("aria-describedby", "error-count")
    summary = page.locator("#review-errors")
    expect(summary).to_be_visible()
    expect(summary).to_have_attribute("role", "alert")
    expect(summary).to_contain_text("Count must be '0'")
    expect(page.locator('input[name="count"][value="1"]')).to_be_focused()  # to fix it
    assert page.url == url and _same_document(page)  # no navigation, nothing reloaded
    assert list_overrides(site.sessions, study_id=study)[1] == 0
    # Fixed with the keyboard and saved: the messages were only for the wrong entry.
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(rf"/studies/{study}\?saved=\d+"))
    assert list_overrides(site.sessions, study_id=study)[1] == 1
    assert tab.errors == []


def test_repeating_the_ai_is_refused_inline(tab: Tab, site: Site) -> None:
    from playwright.sync_api import expect

    page = _open(tab, site, site.studies["help"])
    page.keyboard.press("d")
    page.keyboard.press("Enter")  # the fields still say what the AI said
    expect(page.locator("#error-label")).to_have_text(
        "This is the AI's result — choose Agree, or change a field"
    )
    assert _same_document(page)
    assert tab.errors == []


def test_question_mark_opens_the_help_and_letters_in_the_comment_stay_there(
    tab: Tab, site: Site
) -> None:
    from playwright.sync_api import expect

    study = site.studies["help"]
    page = _open(tab, site, study)
    help_panel = page.locator("#key-help")
    expect(help_panel).to_be_hidden()
    page.keyboard.press("?")
    expect(help_panel).to_be_visible()
    expect(help_panel).to_contain_text("Agree with the AI and save")
    expect(page.locator("#help-toggle")).to_have_attribute("aria-expanded", "true")
    page.keyboard.press("Escape")
    expect(help_panel).to_be_hidden()
    page.locator("#help-toggle").click()
    expect(help_panel).to_be_visible()
    comment = page.locator("#field-comment")
    comment.focus()
    page.keyboard.type("and a dn?")
    expect(comment).to_have_value("and a dn?")
    expect(page.locator("#review-status")).to_have_text("")  # no key acted (it would say so)
    expect(page.locator("#correction")).not_to_have_attribute("open", "")
    assert _same_document(page)
    assert list_overrides(site.sessions, study_id=study)[1] == 0
    assert tab.errors == []


def test_n_goes_to_the_next_study_needing_attention(tab: Tab, site: Site) -> None:
    from playwright.sync_api import expect

    study = site.studies["next"]
    page = _open(tab, site, study)
    page.keyboard.press("n")
    expect(page).not_to_have_url(re.compile(rf"/studies/{study}$"))
    expect(page).to_have_url(re.compile(r"/studies/\d+$|/worklist"))
    assert tab.errors == []


def test_agree_on_an_indeterminate_study_says_why_not(tab: Tab, site: Site) -> None:
    from playwright.sync_api import expect

    page = _open(tab, site, site.studies["indeterminate"])
    expect(page.locator("#unsure")).to_contain_text("AI is unsure: p = 0.850")
    expect(page.locator("#agree")).to_be_disabled()
    expect(page.locator("#correction")).to_have_attribute("open", "")
    expect(page.locator('input[name="fracture"]:checked')).to_have_count(0)
    page.keyboard.press("a")
    expect(page.locator("#review-status")).to_contain_text("Agree is not possible here")
    assert _same_document(page)
    assert tab.errors == []
