"""In-process workers and the study-completion timer, both driven from the database."""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from config.settings import JobSettings, StudySettings
from storage import jobs
from storage.db import Sessions
from storage.errors import JobLostError
from storage.redact import describe_exception
from xrayd.pipeline.dispatch import Analyser
from xrayd.workers.base import LoopWorker, Wakeup

LOGGER = logging.getLogger(__name__)


class HeldJob(Protocol):
    """What :class:`LeaseKeeper` needs of a claim (an analysis job, a retraining run...)."""

    @property
    def job_id(self) -> int: ...


class LeaseKeeper(threading.Thread):
    """Renews the lease of the job a worker holds while it runs, so a slow analysis is not
    taken for a dead worker's and claimed again; notices when the job was lost anyway."""

    def __init__(
        self,
        sessions: Sessions,
        job: HeldJob,
        worker_id: str,
        lease_seconds: float,
        clock: Callable[[], datetime],
        interval: float,
        on_renewed: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__(name=f"xrayd-lease-{job.job_id}", daemon=True)
        self.sessions = sessions
        self.job = job
        self.worker_id = worker_id
        self.lease_seconds = lease_seconds
        self.clock = clock
        self.interval = interval
        self.on_renewed = on_renewed
        self.done = threading.Event()
        #: set when a renewal found the job no longer ours
        self.lost = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.interval):
            try:
                held = jobs.renew_lease(
                    self.sessions, self.job.job_id, self.worker_id, self.clock(), self.lease_seconds
                )
            except Exception:  # the database is away: try again; the lease may still hold
                LOGGER.exception("job %d: lease renewal failed; retrying", self.job.job_id)
                continue
            if not held:
                LOGGER.error(
                    "job %d: lease lost (another worker may run it); its results will not be "
                    "committed by this worker",
                    self.job.job_id,
                )
                self.lost.set()
                return
            if self.on_renewed is not None:
                self.on_renewed(self.job.job_id)

    def __enter__(self) -> LeaseKeeper:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.join()


class Worker(LoopWorker):
    """Claims queued jobs and runs the analyser until stopped; finishes the job in hand first.

    While a job runs, a :class:`LeaseKeeper` renews its lease every third of
    ``[jobs] lease_seconds`` (``renew_interval``); the job is completed or failed only by the
    worker that holds it.
    """

    def __init__(
        self,
        index: int,
        sessions: Sessions,
        analyser: Analyser,
        settings: JobSettings,
        clock: Callable[[], datetime],
        stop: threading.Event,
        wakeup: Wakeup,
        *,
        renew_interval: float | None = None,
        on_lease_renewed: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__(f"xrayd-worker-{index}", stop, wakeup, settings.poll_seconds)
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{index}"
        self.sessions = sessions
        self.analyser = analyser
        self.settings = settings
        self.clock = clock
        self.renew_interval = renew_interval or settings.lease_seconds / 3
        self.on_lease_renewed = on_lease_renewed

    def turn(self) -> bool:
        return self.run_once()

    def run_once(self) -> bool:
        """Claim and run at most one job; returns whether there was one."""
        job = jobs.claim_job(
            self.sessions, self.worker_id, self.clock(), self.settings.lease_seconds
        )
        if job is None:
            return False
        LOGGER.info("job %d claimed (attempt %d)", job.job_id, job.attempts)
        keeper = LeaseKeeper(
            self.sessions,
            job,
            self.worker_id,
            self.settings.lease_seconds,
            self.clock,
            self.renew_interval,
            self.on_lease_renewed,
        )
        try:
            with keeper:
                self.analyser.analyse(job)
        except JobLostError:
            LOGGER.warning(
                "job %d: lost to another worker; its results were not committed", job.job_id
            )
            return True
        except Exception as exc:
            LOGGER.exception("job %d failed", job.job_id)
            outcome = jobs.fail_job(
                self.sessions,
                job.job_id,
                self.clock(),
                describe_exception(exc),  # its type and message, no quoted values
                base_delay_seconds=self.settings.retry_base_seconds,
                max_delay_seconds=self.settings.retry_max_seconds,
                worker_id=self.worker_id,
            )
            if outcome == "dead":
                LOGGER.error("job %d dead-lettered after %d attempts", job.job_id, job.attempts)
            elif outcome == "stale":
                LOGGER.warning("job %d: failed after it was lost; not recorded", job.job_id)
            return True
        if jobs.complete_job(self.sessions, job.job_id, self.clock(), worker_id=self.worker_id):
            LOGGER.info("job %d done", job.job_id)
        else:
            LOGGER.warning("job %d: finished after it was lost; not marked done", job.job_id)
        return True


class CompletionTimer(LoopWorker):
    """Turns quiet or capped studies into jobs and recovers jobs whose worker died."""

    what = "completion timer"

    def __init__(
        self,
        sessions: Sessions,
        study: StudySettings,
        job_settings: JobSettings,
        clock: Callable[[], datetime],
        stop: threading.Event,
        wakeup_workers: Wakeup,
        interval: float = 0.5,
    ) -> None:
        super().__init__("xrayd-completion", stop, Wakeup(), interval)
        self.sessions = sessions
        self.study = study
        self.job_settings = job_settings
        self.clock = clock
        self.wakeup_workers = wakeup_workers
        self.interval = interval

    def turn(self) -> bool:
        self.tick()
        return False  # a timer: always waits its interval before the next tick

    def idle(self) -> None:
        self.stop_event.wait(self.interval)

    def tick(self) -> int:
        now = self.clock()
        created = jobs.promote_ready_studies(
            self.sessions,
            now,
            self.study.quiet_seconds,
            self.study.max_wait_seconds,
            max_attempts=self.job_settings.max_attempts,
        )
        recovered = jobs.requeue_expired(self.sessions, now)
        if created or recovered:
            if recovered:
                LOGGER.warning("%d job(s) whose worker stopped were queued again", recovered)
            self.wakeup_workers.set()
        return len(created) + recovered
