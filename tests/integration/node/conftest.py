from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import make_settings


@pytest.fixture
def start_node(
    database_url: str, tmp_path: Path
) -> Iterator[Callable[..., Any]]:
    """Start an in-process node (listener, timer, workers) on a free port; stopped afterwards."""
    from xrayd.runtime.node import Node, open_storage

    nodes: list[Any] = []

    def _start(**sections: Any) -> Any:
        settings = make_settings(tmp_path / f"data{len(nodes)}", database_url, **sections)
        storage = open_storage(settings, create_if_empty=True, require_current=True)
        node = Node(settings, storage, analyser=sections.pop("analyser", None))
        node.start()
        nodes.append(node)
        return node

    yield _start
    for node in nodes:
        node.stop(timeout=5)


@pytest.fixture
def closing_node(
    start_node: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., tuple[Any, threading.Event]]:
    """Like ``start_node``, plus an event set once the listener has handled a closed connection
    (so a test can wait for the server's side of an abort instead of sleeping)."""
    from dicom_node.scp import StoreSCP

    closed = threading.Event()
    original = StoreSCP._on_closed

    def on_closed(self: StoreSCP, event: Any) -> None:
        original(self, event)
        closed.set()

    monkeypatch.setattr(StoreSCP, "_on_closed", on_closed)

    def _start(**sections: Any) -> tuple[Any, threading.Event]:
        return start_node(**sections), closed

    return _start
