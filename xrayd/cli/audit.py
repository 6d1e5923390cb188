"""``xrayd audit verify`` and ``xrayd audit list``: check and read the audit trail.

``verify`` walks the hash chain (:mod:`storage.audit`) in id order and prints how many rows it
checked and the head hash (write it down: ``verify --known-head HASH`` later fails if the
chain no longer passes through it, i.e. rows were dropped from the end or the log rewritten);
on an edited, deleted or inserted row it names the first bad row's id and exits 1. ``list``
prints the newest rows: time, actor, action and object.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from config.settings import Settings
from xrayd.cli.parsers import CommandGroup, Subparsers

if TYPE_CHECKING:
    from storage.db import Sessions

__all__ = ["add_parsers", "cmd_audit_list", "cmd_audit_verify"]


def _sessions(settings: Settings) -> Sessions:
    """The site's database as it is (an empty or outdated one is an error, not created)."""
    from storage.opened import open_storage

    return open_storage(settings, create_if_empty=False, require_current=True).sessions


def cmd_audit_verify(args: argparse.Namespace, settings: Settings) -> int:
    from storage import audit

    result = audit.verify(_sessions(settings), known_head=args.known_head)
    if result.ok and result.known_head_found is not False:
        print(f"audit trail intact: {result.checked} row(s) verified")
        print(f"head hash: {result.head_hash}")
        return 0
    if result.ok:
        print(
            f"audit trail intact ({result.checked} row(s)) but it no longer passes through the "
            "known head hash: rows were dropped from its end or the whole log was rewritten",
            file=sys.stderr,
        )
        return 1
    print(
        f"audit trail broken at row {result.first_bad_id}: {result.problem} "
        f"({result.checked} row(s) before it verified)",
        file=sys.stderr,
    )
    return 1


def cmd_audit_list(args: argparse.Namespace, settings: Settings) -> int:
    from storage import audit

    if args.limit < 1:
        print("xrayd audit list: --limit must be at least 1", file=sys.stderr)
        return 2
    rows = audit.list_audit(_sessions(settings), limit=args.limit)
    print(f"{'TIME (UTC)':<19} {'ACTOR':<24} {'ACTION':<24} OBJECT")
    for row in rows:
        target = row.object_type if row.object_id is None else f"{row.object_type} {row.object_id}"
        print(f"{row.at:%Y-%m-%d %H:%M:%S} {row.actor:<24} {row.action:<24} {target}")
    if not rows:
        print("(no audit events)")
    return 0


def add_parsers(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    group = CommandGroup(sub, common, "audit", help="check and read the audit trail")
    q = group.action(
        "verify", cmd_audit_verify, help="check the audit trail's hash chain (exit 1 if broken)"
    )
    q.add_argument(
        "--known-head",
        metavar="HASH",
        default=None,
        help="a head hash printed by an earlier verify: fail unless the chain still contains it",
    )
    q = group.action("list", cmd_audit_list, help="the newest audit events")
    q.add_argument("--limit", type=int, default=50, help="how many (default 50)")
