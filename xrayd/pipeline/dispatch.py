"""The one interface between dispatch and analysis: a worker calls ``analyse(job)``.

Today's in-process workers (``xrayd.workers.analysis``) could be swapped for a distributed engine's
workers without touching the pipeline: they only need to claim a job and call
:meth:`Analyser.analyse`.
"""

from __future__ import annotations

import logging
from typing import Protocol

from sqlalchemy.orm import Session, sessionmaker

from storage.jobs import ClaimedJob
from storage.results import record_seen

LOGGER = logging.getLogger(__name__)


class Analyser(Protocol):
    """Analyses one claimed study job; raises to fail the attempt (it will be retried)."""

    def analyse(self, job: ClaimedJob) -> None: ...


class SeenOnlyAnalyser:
    """The smallest analyser: records that the study was seen and nothing else.

    A ``results`` row of kind ``seen`` lists how many instances the job covered: no inference,
    nothing sent anywhere. The node runs :class:`xrayd.pipeline.analyse.StudyAnalyser`; this one
    serves the tests of the job machinery (claiming, retries, leases), which need no model.
    """

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def analyse(self, job: ClaimedJob) -> None:
        count = record_seen(self.sessions, job.study_id, job.job_id)
        LOGGER.info(
            "study %d seen with %d instance(s) (seen-only analyser)",
            job.study_id,
            count,
            extra={"job_id": job.job_id, "study_id": job.study_id},
        )
