"""The retraining schedule: cron with optional seconds, slots named by fire time, and one
coalesced catch-up for firings missed while xrayd was down."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from retrain.scheduler import RetrainScheduler, cron_trigger, slot_name, slot_time

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def test_a_short_schedule_fires_with_distinct_slots() -> None:
    got: list[str] = []
    two = threading.Event()

    def fire(slot: str) -> None:
        got.append(slot)
        if len(got) >= 2:
            two.set()

    s = RetrainScheduler("* * * * * *", fire)
    s.start()
    try:
        assert two.wait(30)
    finally:
        s.stop()
    assert len(set(got)) == len(got) and all(slot_time(g) is not None for g in got)


def test_missed_firings_are_coalesced_into_one_catch_up() -> None:
    s = RetrainScheduler("0 2 * * *", lambda slot: None, misfire_grace_seconds=86400)
    assert s.due_slot(None, NOW) == "scheduled:2026-11-23T02:00:00Z"
    assert s.due_slot(datetime(2026, 11, 23, 2, 0, tzinfo=UTC), NOW) is None
    assert s.due_slot(datetime(2026, 11, 22, 2, 0, tzinfo=UTC), NOW) == slot_name(
        datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
    )
    short = RetrainScheduler("0 2 * * *", lambda slot: None, misfire_grace_seconds=3600)
    assert short.due_slot(None, NOW) is None  # ten hours late: wait for tonight


def test_bad_schedules_are_refused() -> None:
    with pytest.raises(ValueError, match="5 fields"):
        cron_trigger("every night")
    assert slot_time("manual:2026") is None
