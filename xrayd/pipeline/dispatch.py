"""The one interface between dispatch and analysis: a worker calls ``analyse(job)``.

Today's in-process workers (``xrayd.workers.analysis``) could be swapped for a distributed engine's
workers without touching the pipeline: they only need to claim a job and call
:meth:`Analyser.analyse`. The node's analyser is :class:`xrayd.pipeline.analyse.StudyAnalyser`;
the tests of the job machinery bring their own (``tests/node_helpers.py``).
"""

from __future__ import annotations

from typing import Protocol

from storage.jobs import ClaimedJob

__all__ = ["Analyser"]


class Analyser(Protocol):
    """Analyses one claimed study job; raises to fail the attempt (it will be retried)."""

    def analyse(self, job: ClaimedJob) -> None: ...
