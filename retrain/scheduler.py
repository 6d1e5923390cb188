"""The retraining schedule (APScheduler 3.x): a cron trigger that calls ``fire(slot)``.

``slot`` names the firing: the scheduled fire time in UTC (e.g. ``scheduled:2026-11-24T02:00Z``).
The caller *requests* a run for the slot (``storage.training.request_run``: a queued run and its
job of the ``retrain`` queue, which a retrain worker runs), so a firing takes milliseconds, two
schedulers of one deployment firing for the same time queue one run, and a slot already
requested is not requested again. In-process, APScheduler handles one firing at a time
(``max_instances=1``) and coalesces missed firings (``coalesce=True``). Firings missed while
xrayd was down are coalesced into one catch-up request at start
(:meth:`RetrainScheduler.due_slot`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger

__all__ = ["RetrainScheduler", "cron_trigger", "slot_name", "slot_time"]

logger = logging.getLogger(__name__)

JOB_ID = "xrayd-retrain"


def cron_trigger(expression: str, timezone: str = "UTC") -> CronTrigger:
    """A trigger from a crontab: 5 fields, or 6 with seconds first (tests, short schedules)."""
    fields = expression.split()
    tz = ZoneInfo(timezone)
    if len(fields) == 5:
        return CronTrigger.from_crontab(expression, timezone=tz)
    if len(fields) == 6:
        second, minute, hour, day, month, weekday = fields
        return CronTrigger(
            second=second,
            minute=minute,
            hour=hour,
            day=day,
            month=month,
            day_of_week=weekday,
            timezone=tz,
        )
    raise ValueError("a schedule is a crontab of 5 fields (or 6 with seconds first)")


SLOT_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def slot_name(fire_time: datetime) -> str:
    return "scheduled:" + fire_time.astimezone(UTC).strftime(SLOT_FORMAT)


def slot_time(slot: str) -> datetime | None:
    """The fire time of a ``scheduled:`` slot (None for other slots)."""
    if not slot.startswith("scheduled:"):
        return None
    try:
        return datetime.strptime(slot.removeprefix("scheduled:"), SLOT_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


def _previous_fire_time(trigger: CronTrigger, now: datetime, horizon: timedelta) -> datetime | None:
    """The last fire time at or before ``now`` within ``horizon`` (None: none)."""
    start = now - horizon
    last: datetime | None = None
    t = trigger.get_next_fire_time(None, start)
    while t is not None and t <= now:
        last = t
        t = trigger.get_next_fire_time(t, t + timedelta(seconds=1))
    return last


class RetrainScheduler:
    """Calls ``fire(slot)`` at every firing of ``schedule`` in a background thread."""

    def __init__(
        self,
        schedule: str,
        fire: Callable[[str], object],
        *,
        timezone: str = "UTC",
        misfire_grace_seconds: int = 3600,
    ) -> None:
        self.trigger = cron_trigger(schedule, timezone)
        self._fire = fire
        self._grace = misfire_grace_seconds
        self._scheduler = BackgroundScheduler(
            timezone=ZoneInfo(timezone),
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
                "misfire_grace_time": misfire_grace_seconds,
            },
        )
        self._scheduler.add_job(self._run, self.trigger, id=JOB_ID, name="retraining")

    def _run(self) -> None:
        now = datetime.now(UTC)
        fire_time = _previous_fire_time(self.trigger, now, timedelta(seconds=self._grace))
        slot = slot_name(fire_time or now)
        logger.info("retraining schedule fired (%s)", slot)
        try:
            self._fire(slot)
        except Exception:  # e.g. the database is away: the schedule goes on
            logger.exception("requesting the scheduled retraining failed")

    def due_slot(self, last_slot_time: datetime | None, now: datetime) -> str | None:
        """A catch-up slot when firings were missed while nothing ran (coalesced into one):
        the latest fire time within the grace period that is after ``last_slot_time``."""
        fire_time = _previous_fire_time(self.trigger, now, timedelta(seconds=self._grace))
        if fire_time is None or (last_slot_time is not None and fire_time <= last_slot_time):
            return None
        return slot_name(fire_time)

    def catch_up(self, last_slot_time: datetime | None, now: datetime) -> str | None:
        """Fire for the missed firing (coalesced into one) now, in the scheduler's thread;
        returns its slot, or None when nothing was missed within the grace period."""
        slot = self.due_slot(last_slot_time, now)
        if slot is not None:
            logger.info("catching up a missed retraining (%s)", slot)
            self._scheduler.add_job(self._fire, args=[slot], id=JOB_ID + "-catch-up")
        return slot

    def next_fire_time(self) -> datetime | None:
        job = self._scheduler.get_job(JOB_ID)
        return None if job is None else job.next_run_time

    def start(self) -> None:
        self._scheduler.start()
        logger.info("retraining scheduled (%s); next run %s", self.trigger, self.next_fire_time())

    def stop(self, wait: bool = True) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=wait)
