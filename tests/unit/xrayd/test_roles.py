"""Queue names for ``xrayd worker --queues`` and the systemd instance names that carry them."""

from __future__ import annotations

import pytest

from xrayd.runtime.roles import ALL_ROLES, QUEUES, parse_queues


@pytest.mark.parametrize(
    ("text", "queues"),
    [
        ("analysis,delivery", {"analysis", "delivery"}),
        ("analysis-delivery", {"analysis", "delivery"}),  # xrayd-worker@analysis-delivery
        (" retrain ", {"retrain"}),
        ("analysis,analysis", {"analysis"}),
    ],
)
def test_queue_lists(text: str, queues: set[str]) -> None:
    assert parse_queues(text) == frozenset(queues)


@pytest.mark.parametrize("text", ["", ",", "analysis,bogus", "listener", "web"])
def test_unknown_or_empty_queue_lists_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="known: analysis, delivery, retention, retrain"):
        parse_queues(text)


def test_every_queue_is_a_role() -> None:
    assert set(QUEUES) <= ALL_ROLES
