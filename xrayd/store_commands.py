"""``xrayd store sweep``: the operator's tools for the byte store.

``sweep`` deletes objects no row references (bytes uploaded by a listener or written by a worker
killed before its commit) once they are older than a grace period (default 24 h, at least 1 h);
``--dry-run`` only counts. It prints counts, never keys; a sweep that deletes is audited.
"""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta
from typing import TYPE_CHECKING

from config.settings import Settings

if TYPE_CHECKING:
    from xrayd.app import Storage

DEFAULT_HOURS = 24.0
MIN_HOURS = 1.0


def _storage(settings: Settings) -> Storage:
    """The site's database (never created here: an empty one would make every object look
    unreferenced), spool and byte store."""
    from xrayd.app import open_storage

    return open_storage(settings, create_if_empty=False, require_current=True)


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def cmd_store_sweep(args: argparse.Namespace, settings: Settings) -> int:
    from storage import registry
    from storage.schema import utcnow
    from storage.store_sweep import sweep_unreferenced

    hours: float = args.older_than_hours
    if not hours >= MIN_HOURS:  # also refuses NaN
        print(
            f"xrayd store sweep: --older-than-hours must be at least {MIN_HOURS:g} (got "
            f"{hours:g}): a younger object may be an upload whose row is about to be committed",
            file=sys.stderr,
        )
        return 2
    storage = _storage(settings)
    try:
        report = sweep_unreferenced(
            storage.sessions,
            storage.store,
            utcnow(),
            older_than=timedelta(hours=hours),
            dry_run=args.dry_run,
        )
        if not args.dry_run:
            registry.record_audit(
                storage.sessions,
                actor="cli",
                action="store.swept",
                object_type="store",
                object_id=None,
                detail={
                    "older_than_hours": hours,
                    "examined": report.examined,
                    "unreferenced": report.unreferenced,
                    "deleted": report.deleted,
                    "deleted_bytes": report.deleted_bytes,
                },
            )
    finally:
        storage.engine.dispose()
    dry = " (dry run: nothing deleted)" if args.dry_run else ""
    print(f"store sweep of {storage.store.describe()}{dry}")
    print(f"  grace period:  {hours:g} h (written before {report.cutoff:%Y-%m-%d %H:%M:%S} UTC)")
    print(f"  examined:      {report.examined} objects ({_size(report.examined_bytes)})")
    print(f"  referenced:    {report.referenced}")
    print(f"  recent:        {report.recent} (within the grace period: kept)")
    print(f"  unreferenced:  {report.unreferenced} ({_size(report.unreferenced_bytes)})")
    if args.dry_run:
        print(f"  would delete:  {report.unreferenced}")
    else:
        print(f"  deleted:       {report.deleted} ({_size(report.deleted_bytes)})")
        if report.spared:
            print(f"  spared:        {report.spared} (written again or gone meanwhile)")
    return 0


def add_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    p = sub.add_parser("store", parents=[common], help="the byte store: sweep")
    ssub = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    q = ssub.add_parser(
        "sweep",
        parents=[common],
        help="delete objects no row references (left by a process killed before its commit)",
    )
    q.add_argument(
        "--older-than-hours",
        type=float,
        default=DEFAULT_HOURS,
        help=f"only objects last written this long ago (default {DEFAULT_HOURS:g}, "
        f"at least {MIN_HOURS:g})",
    )
    q.add_argument("--dry-run", action="store_true", help="count, delete nothing")
    q.set_defaults(func=cmd_store_sweep)
