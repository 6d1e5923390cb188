"""``xrayd store sweep`` and ``xrayd store copy-to-s3``: the operator's tools for the byte store.

``sweep`` deletes objects no row references (bytes uploaded by a listener or written by a worker
killed before its commit) once they are older than a grace period (default 24 h, at least 1 h);
``--dry-run`` only counts. ``copy-to-s3`` copies every referenced object of the local spool to
the S3 store that ``[object_store]`` configures, skipping what is there already (safe to
rerun); ``--verify`` reads each object back and compares its SHA-256. Both print counts, never
keys; a sweep that deletes is audited.
"""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta
from typing import TYPE_CHECKING

from config.errors import ConfigError
from config.settings import Settings
from xrayd.cli.parsers import CommandGroup, Subparsers

if TYPE_CHECKING:
    from storage.opened import Storage

DEFAULT_HOURS = 24.0
MIN_HOURS = 1.0


def _storage(settings: Settings) -> Storage:
    """The site's database (never created here: an empty one would make every object look
    unreferenced), spool and byte store."""
    from storage.opened import open_storage

    return open_storage(settings, create_if_empty=False, require_current=True)


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def cmd_store_sweep(args: argparse.Namespace, settings: Settings) -> int:
    from storage import audit
    from storage.schema import utcnow
    from storage.store_sweep import sweep_unreferenced
    from xrayd.cli.actor import cli_actor

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
            audit.record(  # the bytes are gone already: an event of its own
                storage.sessions,
                actor=cli_actor(),
                action=audit.Action.STORE_SWEPT,
                object_type="store",
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


def cmd_store_copy_to_s3(args: argparse.Namespace, settings: Settings) -> int:
    from storage.bytestore import LocalByteStore
    from storage.store_copy import copy_referenced

    if settings.object_store.backend != "s3":
        raise ConfigError(
            f'object_store.backend is "{settings.object_store.backend}": copy-to-s3 copies the '
            'local spool to the store that [object_store] configures; set backend = "s3" and '
            "the [object_store.s3] table in the configuration this command reads (--config)"
        )
    if args.workers < 1:
        print("xrayd store copy-to-s3: --workers must be at least 1", file=sys.stderr)
        return 2
    storage = _storage(settings)
    source = LocalByteStore(storage.spool)
    try:
        report = copy_referenced(
            storage.sessions,
            source,
            storage.store,
            dry_run=args.dry_run,
            verify=args.verify,
            workers=args.workers,
            progress=lambda r: print(
                f"  ... {r.objects} objects: {r.copied} copied, {r.skipped} already there, "
                f"{r.missing + r.invalid} missing",
                file=sys.stderr,
            ),
        )
    finally:
        storage.engine.dispose()
    dry = " (dry run: nothing copied)" if args.dry_run else ""
    print(f"copy of {source.describe()} to {storage.store.describe()}{dry}")
    print(f"  referenced objects: {report.objects}")
    copied = "would copy" if args.dry_run else "copied"
    print(f"  {copied + ':':<19} {report.copied} ({_size(report.copied_bytes)})")
    print(f"  already there:      {report.skipped} ({_size(report.skipped_bytes)})")
    print(f"  missing locally:    {report.missing} (and not in the store either)")
    if report.invalid:
        print(f"  not a key:          {report.invalid} (a row names a path outside the spool)")
    if report.missing_examples:
        print("    e.g. " + ", ".join(report.missing_examples))
    if args.verify:
        print(f"  verified:           {report.verified} (SHA-256 as recorded)")
        print(f"  mismatched:         {report.mismatched}")
        if report.mismatch_examples:
            print("    e.g. " + ", ".join(report.mismatch_examples))
    return 0 if report.ok else 1


def add_parsers(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    group = CommandGroup(sub, common, "store", help="the byte store: sweep, copy to S3")
    q = group.action(
        "sweep",
        cmd_store_sweep,
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

    q = group.action(
        "copy-to-s3",
        cmd_store_copy_to_s3,
        help="copy the local spool's referenced objects to the configured S3 store",
    )
    q.add_argument("--dry-run", action="store_true", help="count, copy nothing")
    q.add_argument(
        "--verify",
        action="store_true",
        help="read each object back from the store and compare its SHA-256",
    )
    q.add_argument("--workers", type=int, default=4, help="objects copied at once (default 4)")
