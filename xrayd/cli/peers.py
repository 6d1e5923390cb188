"""``xrayd callers`` and ``xrayd destinations``: who may send to us, and where results go.

Adding and removing go through :mod:`xrayd.admin.peers` (the same rules and audit rows as the
admin pages and the REST API), as the operating-system user who ran the command.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from config.errors import ConfigError
from config.settings import DEFAULT_SEND, OBJECT_KINDS, Settings
from storage.errors import NotFoundError
from xrayd.cli.parsers import CommandGroup, Subparsers
from xrayd.cli.sessions import open_sessions

if TYPE_CHECKING:
    from storage.db import Sessions

__all__ = ["add_parsers", "cmd_callers", "cmd_destinations"]


def cmd_callers(args: argparse.Namespace, settings: Settings) -> int:
    from storage import peers
    from xrayd.admin import peers as admin_peers
    from xrayd.admin.actor import Actor

    sessions = open_sessions(settings, peers=True)
    if args.action == "add":
        row = admin_peers.add_caller(sessions, Actor.cli(), args.ae_title, args.host)
        print(f"caller {row.ae_title} added" + (f" (host {row.host})" if row.host else ""))
        return 0
    if args.action == "remove":
        try:
            admin_peers.remove_caller(sessions, Actor.cli(), args.ae_title, args.host)
        except NotFoundError:
            print("0 caller row(s) removed")
            return 1
        print("1 caller row(s) removed")
        return 0
    rows = peers.list_callers(sessions)
    if settings.node.accept_any_caller:
        print("note: node.accept_any_caller = true: every calling AE title is accepted")
    print(f"{'AE TITLE':<17} {'HOST':<40} SOURCE")
    for row in rows:
        print(f"{row.ae_title:<17} {row.host or '(any)':<40} {row.source}")
    return 0


def _echo(args: argparse.Namespace, settings: Settings, sessions: Sessions) -> int:
    from dicom_node.scu import RemoteAE, diagnose_echo
    from dicom_node.tls import ClientTLS
    from storage import peers
    from xrayd.pipeline.delivery import outgoing_limits

    row = peers.get_destination(sessions, args.name)
    if row is None:
        raise ConfigError(f"no destination named {args.name!r}")
    try:
        tls = None if row.tls is None else ClientTLS.from_mapping(row.tls)
    except ValueError as exc:
        raise ConfigError(f"destination {row.name}: {exc}") from None
    remote = RemoteAE(row.ae_title, row.host, row.port, tls=tls)
    limits = outgoing_limits(settings.delivery, at_most=args.timeout)
    diagnosis = diagnose_echo(remote, settings.node.ae_title, limits=limits)
    if diagnosis.ok:
        print(f"C-ECHO {row.name} ({remote}): status 0x0000")
        return 0
    print(f"C-ECHO {row.name} failed ({diagnosis.cause}): {diagnosis.explanation}", file=sys.stderr)
    print(f"fix: {diagnosis.fix}", file=sys.stderr)
    return 1


def cmd_destinations(args: argparse.Namespace, settings: Settings) -> int:
    from storage import peers
    from xrayd.admin import peers as admin_peers
    from xrayd.admin import validation
    from xrayd.admin.actor import Actor

    sessions = open_sessions(settings, peers=True)
    if args.action == "add":
        ae_title, host, port = validation.remote(args.remote)
        values = {
            "name": args.name,
            "ae_title": ae_title,
            "host": host,
            "port": port,
            "send": args.send.split(","),
        }
        row = admin_peers.add_destination(sessions, Actor.cli(), values)
        remote = f"{row.ae_title}@{row.host}:{row.port}"
        print(f"destination {row.name} -> {remote} ({','.join(row.send)}) added")
        return 0
    if args.action == "remove":
        try:
            admin_peers.remove_destination(sessions, Actor.cli(), args.name)
        except NotFoundError:
            print("0 destination(s) removed")
            return 1
        print("1 destination(s) removed")
        return 0
    if args.action == "echo":
        return _echo(args, settings, sessions)
    print(f"{'NAME':<16} {'AE TITLE':<17} {'HOST:PORT':<30} {'SEND':<10} SOURCE")
    for row in peers.list_destinations(sessions):
        print(
            f"{row.name:<16} {row.ae_title:<17} {f'{row.host}:{row.port}':<30} "
            f"{','.join(row.send):<10} {row.source}"
        )
    return 0


def add_parsers(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    callers = CommandGroup(sub, common, "callers", help="AE titles allowed to send to us")
    callers.action("list", cmd_callers)
    for name in ("add", "remove"):
        q = callers.action(name, cmd_callers)
        q.add_argument("ae_title", help="checked by the same rule as the web and the API")
        q.add_argument("--host", default=None, help="also require this source address")

    destinations = CommandGroup(sub, common, "destinations", help="where results are sent")
    destinations.action("list", cmd_destinations)
    q = destinations.action("add", cmd_destinations)
    q.add_argument("name")
    q.add_argument("remote", metavar="AE@HOST:PORT")
    q.add_argument(
        "--send",
        default=",".join(DEFAULT_SEND),
        help=f"object kinds: {','.join(OBJECT_KINDS)} (default {','.join(DEFAULT_SEND)})",
    )
    for name in ("remove", "echo"):
        q = destinations.action(name, cmd_destinations)
        q.add_argument("name")
        q.add_argument("--timeout", type=float, default=10.0)
