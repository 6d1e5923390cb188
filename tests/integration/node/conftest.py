from __future__ import annotations

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
    from xrayd.app import Node, open_storage

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
