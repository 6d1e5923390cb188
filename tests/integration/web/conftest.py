"""Fixtures of the web tests (helpers in ``web_helpers``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from web_helpers import Web, make_web


@pytest.fixture
def web(tmp_path: Path) -> Iterator[Web]:
    w = make_web(tmp_path / "data")
    yield w
    w.storage.engine.dispose()
