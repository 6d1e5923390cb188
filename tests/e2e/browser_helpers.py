"""Shared pieces of the Chromium (Playwright) tests: starting Chromium (skipped locally, failed
in CI when it is missing), collecting console and script errors, waiting for the study page's
viewport, the artifacts folder, and keyboard helpers that count the keys a flow presses.

Every wait is on page state (Playwright polls), never on time.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from helpers import need

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
EXPECT_MS = 30_000  # generous for a 2-core runner; waits return as soon as they hold
REPO = Path(__file__).resolve().parents[2]

#: the study page's viewport has started (or failed) and every view has its image
VIEWPORT_SETTLED_JS = """() => {
    if (!document.querySelector('.vp-element')) return true;  // no images on this page
    const v = window.xraydViewer;
    if (!v || !(v.ready || v.failed)) return false;
    if (v.failed) return true;
    const figures = document.querySelectorAll('figure.vp');
    for (let i = 0; i < v.count; i++) {
        if (!v.loaded(i) && !figures[i].classList.contains('failed')) return false;
    }
    return true;
}"""


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium (Playwright's sync API); skips here, fails in CI, when missing."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        need(False, "the playwright Python package is not installed (pip install -e '.[dev]')")
        raise
    need(
        Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK),
        f"chromium not found at {CHROMIUM} (apt-get install chromium)",
    )
    with sync_playwright() as p:
        # --no-sandbox: Chromium's sandbox refuses to start as root (containers, CI runners).
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


def artifacts() -> Path:
    """test-artifacts/ui/ (or XRAYD_TEST_ARTIFACTS/ui/), kept by CI."""
    root = Path(os.environ.get("XRAYD_TEST_ARTIFACTS") or REPO / "test-artifacts")
    path = root / "ui"
    path.mkdir(parents=True, exist_ok=True)
    return path


def collect_errors(page: Any) -> list[str]:
    """Uncaught script errors and console errors of ``page`` from now on."""
    errors: list[str] = []

    def console(message: Any) -> None:
        url = str((message.location or {}).get("url", ""))
        if message.type == "error":
            errors.append(f"console: {message.text} ({url})")

    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    page.on("console", console)
    return errors


def wait_for_viewport(page: Any) -> None:
    """Until the study page's viewport is ready and each view has drawn its image (or says
    why not); returns at once on a page without images."""
    page.wait_for_function(VIEWPORT_SETTLED_JS)


class Keys:
    """Presses keys on a page and counts them per step of a flow (``counts[step]``)."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.counts: Counter[str] = Counter()
        self.sequence: dict[str, list[str]] = {}

    def press(self, key: str, step: str) -> None:
        self.page.keyboard.press(key)
        self.counts[step] += 1
        self.sequence.setdefault(step, []).append(key)

    def type(self, text: str, step: str) -> None:
        for char in text:
            self.press(char, step)

    def tab_to(self, selector: str, step: str, limit: int = 60) -> int:
        """Tab until the focused element matches ``selector``; returns the Tabs pressed."""
        for n in range(1, limit + 1):
            self.press("Tab", step)
            if self.page.evaluate(
                "(s) => !!document.activeElement && document.activeElement.matches(s)", selector
            ):
                return n
        raise AssertionError(f"{limit} Tabs did not reach {selector} on {self.page.url}")


@contextmanager
def served_web(data_dir: Path, users_to_add: dict[str, tuple[str, str]]) -> Iterator[Any]:
    """xrayd's web UI on a fresh SQLite database under ``data_dir`` with ``users_to_add``
    (name: (role, password)), served on a free loopback port: yields ``(base_url, storage)``.
    Password hashes are cheap here (the production cost is not what these tests check)."""
    import pytest

    from storage import users
    from storage.opened import open_storage
    from xrayd.web.context import WebContext
    from xrayd.web.server import WebServer

    from helpers import make_settings

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(users, "SCRYPT_LOG2_N", 10)
        settings = make_settings(data_dir, "", web={"host": "127.0.0.1", "port": 0})
        storage = open_storage(settings, create_if_empty=True, require_current=True)
        for name, (role, password) in users_to_add.items():
            users.add_user(storage.sessions, name, role, password)
        server = WebServer(
            WebContext(settings=settings, sessions=storage.sessions, spool=storage.spool)
        )
        server.start()
        try:
            yield f"http://127.0.0.1:{server.port}", storage
        finally:
            server.stop(timeout=10)
            storage.close()
