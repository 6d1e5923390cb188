"""``xrayd queue``: the operator's view of the one work queue (analysis, delivery, retrain).

``list`` shows jobs (of one queue, in one state) with attempts, due time, holder and last
error; ``retry ID`` / ``retry --dead [--queue Q]`` queue dead jobs again with fresh attempts
(their study, delivery or training run follows); ``cancel ID`` cancels a queued job. Retries
and cancellations are audited under the operating-system user who ran the command.
"""

from __future__ import annotations

import argparse

from config.settings import Settings
from xrayd.cli.parsers import CommandGroup, Subparsers, add_id_or_dead
from xrayd.cli.sessions import open_sessions

QUEUES = ("analysis", "delivery", "retrain")
STATES = ("queued", "running", "done", "dead", "cancelled")


def cmd_queue_list(args: argparse.Namespace, settings: Settings) -> int:
    from storage import queue

    rows = queue.list_queue(
        open_sessions(settings), queue=args.queue, state=args.state, limit=args.limit
    )
    print(
        f"{'ID':>7} {'QUEUE':<9} {'TASK':<8} {'REF':>7} {'STATE':<9} {'TRIES':>5} "
        f"{'DUE / LEASE END (UTC)':<21} {'HOLDER':<24} LAST ERROR"
    )
    for r in rows:
        when = r.lease_expires_at if r.state == "running" else r.next_attempt_at
        at = (
            when.strftime("%Y-%m-%d %H:%M:%S") if when and r.state in ("queued", "running") else "-"
        )
        error = (r.last_error or "").replace("\n", " ")
        ref = "-" if r.ref_id is None else str(r.ref_id)
        print(
            f"{r.job_id:>7} {r.queue:<9} {r.task:<8} {ref:>7} {r.state:<9} "
            f"{r.attempts:>2}/{r.max_attempts:<2} {at:<21} {(r.worker_id or '-'):<24} {error}"
        )
    if not rows:
        print("(no jobs)")
    return 0


def cmd_queue_retry(args: argparse.Namespace, settings: Settings) -> int:
    from storage.errors import ConflictError
    from xrayd.admin import jobs
    from xrayd.admin.actor import Actor

    sessions = open_sessions(settings)
    try:
        ids = jobs.retry_jobs(
            sessions, Actor.cli(), None if args.dead else args.id, queue_name=args.queue
        )  # an unknown id: JobNotFoundError, exit 1
    except ConflictError as exc:
        print(exc)
        return 1
    print(f"{len(ids)} dead job{'' if len(ids) == 1 else 's'} queued again")
    return 0 if ids else 1


def cmd_queue_cancel(args: argparse.Namespace, settings: Settings) -> int:
    from storage.errors import ConflictError
    from xrayd.admin import jobs
    from xrayd.admin.actor import Actor

    try:
        jobs.cancel_job(open_sessions(settings), Actor.cli(), args.id)  # unknown id: exit 1
    except ConflictError as exc:
        print(exc)
        return 1
    print(f"job {args.id} cancelled")
    return 0


def add_parsers(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    group = CommandGroup(sub, common, "queue", help="the work queue: list, retry, cancel jobs")
    q = group.action("list", cmd_queue_list, help="list jobs, oldest first")
    q.add_argument("--queue", choices=QUEUES, default=None)
    q.add_argument("--state", choices=STATES, default=None)
    q.add_argument("--limit", type=int, default=1000)

    q = group.action("retry", cmd_queue_retry, help="queue dead jobs again")
    add_id_or_dead(q, "every dead job")
    q.add_argument("--queue", choices=QUEUES, default=None, help="with --dead: only this queue")

    q = group.action("cancel", cmd_queue_cancel, help="cancel a queued job")
    q.add_argument("id", type=int, metavar="ID")
