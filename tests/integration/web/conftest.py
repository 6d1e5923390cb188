"""Fixtures of the web tests (helpers in ``web_helpers``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from storage import users

from web_helpers import Web, make_web


@pytest.fixture(autouse=True)
def cheap_password_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """scrypt at N=2^10 instead of the production 2^17 (0.4 s and 128 MiB per hash): these
    tests add three users per test and log in often. The production cost is tested in
    tests/unit/storage/test_password_hashing.py, where this fixture does not apply."""
    monkeypatch.setattr(users, "SCRYPT_LOG2_N", 10)


@pytest.fixture
def web(tmp_path: Path) -> Iterator[Web]:
    w = make_web(tmp_path / "data")
    yield w
    w.storage.engine.dispose()
