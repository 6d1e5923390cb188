"""Queue jobs and deliveries: retry dead ones, cancel a queued job. Each job or delivery
queued again (or cancelled) gets its audit row in the same transaction."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from storage import outbox, queue
from storage.errors import ConflictError, NotFoundError
from storage.schema import utcnow
from xrayd.admin.actor import Actor

if TYPE_CHECKING:
    from storage.db import Sessions

__all__ = ["cancel_job", "retry_deliveries", "retry_jobs"]


def _task_modules() -> None:
    """Import every task's storage module, so its settler is registered (a revived job's
    study, delivery or training run follows it)."""
    import storage.jobs
    import storage.outbox
    import storage.training  # noqa: F401


def retry_jobs(
    sm: Sessions,
    actor: Actor,
    job_id: int | None = None,
    *,
    queue_name: str | None = None,
) -> list[int]:
    """Queue one dead job (``job_id``) or every dead one (of ``queue_name`` if given) again
    with fresh attempts; the ids queued. For one job: NotFoundError
    (:class:`storage.errors.JobNotFoundError`) if unknown, ConflictError if it is not dead."""
    _task_modules()
    ids = queue.retry_dead(sm, utcnow(), job_id=job_id, queue=queue_name, actor=actor.name)
    if job_id is not None and not ids:
        raise ConflictError(f"job {job_id} is not dead: nothing to retry")
    return ids


def cancel_job(sm: Sessions, actor: Actor, job_id: int) -> None:
    """Cancel a queued job (a running one finishes first). NotFoundError if unknown,
    ConflictError if it is not queued."""
    _task_modules()
    if not queue.cancel(sm, job_id, utcnow(), actor=actor.name):
        raise ConflictError(
            f"job {job_id} is not queued: nothing to cancel (a running job finishes first)"
        )


def retry_deliveries(
    sm: Sessions,
    actor: Actor,
    delivery_id: int | None = None,
    *,
    destination: str | None = None,
    max_attempts: int,
    wake: Callable[[], None] | None = None,
) -> list[int]:
    """Make one dead delivery (``delivery_id``) or every dead one (to ``destination`` if
    given) pending again with fresh attempts; the ids queued. ``max_attempts`` applies to a
    delivery that died before the one queue (it has no job to revive); ``wake`` wakes the
    sender when something was queued. For one delivery: NotFoundError if unknown,
    ConflictError if it is not dead."""
    now = utcnow()
    if delivery_id is None:
        ids = outbox.retry_dead_deliveries(
            sm, now, destination=destination, max_attempts=max_attempts, actor=actor.name
        )
    else:
        try:
            row = outbox.get_delivery(sm, delivery_id)
        except outbox.DeliveryNotFoundError:
            raise NotFoundError(f"no delivery with id {delivery_id}") from None
        if not outbox.retry_delivery(
            sm, delivery_id, now, max_attempts=max_attempts, actor=actor.name
        ):
            raise ConflictError(f"delivery {delivery_id} is {row.state}, not dead")
        ids = [delivery_id]
    if ids and wake is not None:
        wake()
    return ids
