"""``xrayd outbox list`` and ``xrayd outbox retry``: the operator's view of deliveries.

``list`` shows every delivery (or those in one state) with its attempts, next attempt (its
queue job's due time, or the end of the running attempt's lease; none once sent or dead) and
last error; ``retry ID`` / ``retry --dead`` make dead deliveries pending again with fresh
attempts by reviving their queue jobs (a running node picks them up at its next poll, at once
on PostgreSQL). Retries are audited under the operating-system user, each in the
transaction that queues it.
"""

from __future__ import annotations

import argparse
import sys

from config.settings import Settings
from xrayd.cli.parsers import CommandGroup, Subparsers, add_id_or_dead
from xrayd.cli.sessions import open_sessions

STATES = ("pending", "sent", "dead")


def cmd_outbox_list(args: argparse.Namespace, settings: Settings) -> int:
    from storage import outbox

    rows = outbox.list_deliveries(open_sessions(settings), args.state, limit=args.limit)
    print(
        f"{'ID':>6} {'STATE':<8} {'DESTINATION':<16} {'KIND':<5} {'RESULT':>7} {'TRIES':>5} "
        f"{'NEXT ATTEMPT (UTC)':<20} {'STATUS':<7} LAST ERROR"
    )
    for r in rows:
        # when its queued job falls due, or when its running job's lease ends
        next_at = "-" if r.next_attempt_at is None else f"{r.next_attempt_at:%Y-%m-%d %H:%M:%S}"
        status = "-" if r.last_status is None else f"0x{r.last_status:04X}"
        error = (r.last_error or "").replace("\n", " ")
        print(
            f"{r.delivery_id:>6} {r.state:<8} {r.destination_name:<16} {r.kind:<5} "
            f"{r.result_id:>7} {r.attempts:>5} {next_at:<20} {status:<7} {error}"
        )
    if not rows:
        print("(no deliveries)")
    return 0


def cmd_outbox_retry(args: argparse.Namespace, settings: Settings) -> int:
    from storage.errors import ConflictError
    from xrayd.admin import jobs
    from xrayd.admin.actor import Actor

    if args.destination is not None and not args.dead:
        print("xrayd: --destination is only used with --dead", file=sys.stderr)
        return 2
    try:
        ids = jobs.retry_deliveries(
            open_sessions(settings),
            Actor.cli(),
            None if args.dead else args.id,  # an unknown id: NotFoundError, exit 1
            destination=args.destination,
            # for one dead before the one queue (no job to revive)
            max_attempts=settings.delivery.max_attempts,
        )
    except ConflictError as exc:
        print(f"{exc}: nothing to retry")
        return 1
    print(f"{len(ids)} dead deliver{'y' if len(ids) == 1 else 'ies'} queued again")
    return 0 if ids else 1


def add_parsers(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    group = CommandGroup(sub, common, "outbox", help="deliveries of results to destinations")
    q = group.action("list", cmd_outbox_list, help="list deliveries")
    q.add_argument("--state", choices=STATES, default=None)
    q.add_argument("--limit", type=int, default=1000)

    q = group.action("retry", cmd_outbox_retry, help="send dead deliveries again")
    add_id_or_dead(q, "every dead delivery")
    q.add_argument(
        "--destination", default=None, help="with --dead: only those to this destination"
    )
