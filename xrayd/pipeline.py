"""The one interface between dispatch and analysis: a worker calls ``analyse(job)``.

Today's in-process workers (``xrayd.worker``) could be swapped for a distributed engine's workers
without touching the pipeline: they only need to claim a job and call :meth:`Analyser.analyse`.
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
    """PLACEHOLDER until the classifier and result objects exist (issues 3 and 4).

    Records that the study was seen — a ``results`` row of kind ``seen`` listing how many
    instances the job covered — and nothing else: no inference, nothing sent anywhere.
    """

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def analyse(self, job: ClaimedJob) -> None:
        count = record_seen(self.sessions, job.study_id, job.job_id)
        LOGGER.info(
            "placeholder analysis: study %d seen with %d instance(s) (no model yet)",
            job.study_id,
            count,
            extra={"job_id": job.job_id, "study_id": job.study_id},
        )
