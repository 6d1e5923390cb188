"""The ``xrayd`` command line. Every subcommand takes ``--config FILE``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from config.errors import ConfigError, XraydError
from config.loader import load_settings
from config.settings import Settings, _check_ae_title
from storage.peers import InvalidEntryError
from xrayd.cli.parsers import Command
from xrayd.cli.sessions import open_sessions
from xrayd.runtime.logging_setup import configure_logging
from xrayd.runtime.roles import DEFAULT_WORKER_QUEUES


def _ae(value: str) -> str:
    try:
        return _check_ae_title(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from xrayd.runtime.shutdown import block_stop_signals

    block_stop_signals()  # before xrayd.runtime.node imports torch (see block_stop_signals)
    from xrayd.runtime.node import serve

    return serve(settings, args.config, listener_only=args.listener_only)


def cmd_listener(args: argparse.Namespace, settings: Settings) -> int:
    from xrayd.runtime.roles import LISTENER_ROLES
    from xrayd.runtime.shutdown import block_stop_signals

    block_stop_signals()
    from xrayd.runtime.node import serve

    return serve(settings, args.config, roles=LISTENER_ROLES)


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from xrayd.runtime.roles import parse_queues
    from xrayd.runtime.shutdown import block_stop_signals

    try:
        queues = parse_queues(args.queues)
    except ValueError as exc:
        raise ConfigError(f"--queues: {exc}") from None
    block_stop_signals()
    from xrayd.runtime.node import serve

    return serve(settings, args.config, roles=queues, concurrency=args.concurrency)


def cmd_echo(args: argparse.Namespace, settings: Settings) -> int:
    from dicom_node.scu import echo, parse_remote
    from xrayd.pipeline.delivery import outgoing_limits

    try:
        remote = parse_remote(args.remote)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    limits = outgoing_limits(settings.delivery, at_most=args.timeout)
    status = echo(remote, args.calling_ae or settings.node.ae_title, limits=limits)
    print(f"C-ECHO {remote}: status 0x{status:04X} ({'success' if status == 0 else 'failure'})")
    return 0 if status == 0 else 1


def cmd_db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    from storage.migrate import current_revision, head_revision, upgrade
    from storage.opened import open_storage

    storage = open_storage(settings, create_if_empty=False, require_current=False)
    before = current_revision(storage.engine)
    upgrade(storage.engine)
    print(f"database at revision {head_revision()} (was {before or 'empty'})")
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from storage.status import status_counts

    counts = status_counts(open_sessions(settings, peers=True))
    print(f"instances: {counts.instances}")
    print("studies:   " + _fmt(counts.studies_by_state))
    print("jobs:      " + _fmt(counts.jobs_by_state))
    print("deliveries: " + _fmt(counts.deliveries_by_state))
    for name, states in counts.queues.items():
        due = counts.oldest_due[name]
        oldest = "" if due is None else f" (oldest due {due:%Y-%m-%d %H:%M:%S} UTC)"
        print(f"queue {name + ':':<10} " + _fmt(states) + oldest)
    print(f"dead letters: {counts.dead_letters}")
    return 0


def _fmt(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from xrayd.cli.demo import run_demo

    return run_demo(Path(args.data_dir), images=args.images)


def cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    from storage.analyses import objects_of, study_id_of
    from storage.bytestore import ByteStoreError, open_byte_store
    from storage.spool import Spool

    sessions = open_sessions(settings, peers=True)
    study_id = study_id_of(sessions, args.study_uid)
    if study_id is None:
        print(f"xrayd report: no study {args.study_uid}", file=sys.stderr)
        return 1
    reports = [o for o in objects_of(sessions, study_id) if o.kind == "report" and o.file_path]
    if not reports:
        print(
            "xrayd report: the study has no report yet (not analysed, or nothing analysable)",
            file=sys.stderr,
        )
        return 1
    latest = reports[-1]
    assert latest.file_path is not None
    try:
        store = open_byte_store(settings.object_store, Spool(settings.spool_dir))
        data = store.get(latest.file_path)
    except ByteStoreError as exc:
        print(f"xrayd report: cannot read the report: {exc}", file=sys.stderr)
        return 1
    args.out.write_bytes(data)
    amended = f" (amended: the latest of {len(reports)})" if len(reports) > 1 else ""
    print(f"wrote {args.out} ({len(data)} bytes){amended}")
    return 0


CONFIG_HELP = "TOML settings file (default /etc/xrayd/xrayd.toml if present, else built-ins)"


def build_parser() -> argparse.ArgumentParser:
    # --config is accepted before the subcommand (xrayd --config F users add ...) and after it
    # (xrayd users add ... --config F). The subcommands' copy must not default to None: argparse
    # would then overwrite a --config given before the subcommand with that default.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, default=argparse.SUPPRESS, help=CONFIG_HELP)
    parser = argparse.ArgumentParser(
        prog="xrayd", description="DICOM node that triages radiographs for fractures."
    )
    parser.add_argument("--config", dest="config_before", type=Path, default=None, help=CONFIG_HELP)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", parents=[common], help="run the DICOM node")
    p.add_argument("--listener-only", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "listener",
        parents=[common],
        help="run the DICOM listener and the web UI only (workers run elsewhere)",
    )
    p.set_defaults(func=cmd_listener)

    p = sub.add_parser(
        "worker", parents=[common], help="run workers of some queues only (no listener)"
    )
    p.add_argument(
        "--queues",
        default=",".join(DEFAULT_WORKER_QUEUES),
        help="comma-separated: analysis, delivery, retention, retrain (default analysis,delivery)",
    )
    p.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="worker threads per queue (default: [jobs] workers / [delivery] workers)",
    )
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("echo", parents=[common], help="C-ECHO a remote AE")
    p.add_argument("remote", metavar="AE@HOST:PORT")
    p.add_argument("--calling-ae", type=_ae, default=None)
    p.add_argument(
        "--timeout", type=float, default=10.0, help="seconds per step at most (default 10)"
    )
    p.set_defaults(func=cmd_echo)

    p = sub.add_parser("db", parents=[common], help="database maintenance")
    dbsub = p.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    q = dbsub.add_parser("upgrade", parents=[common], help="migrate the schema to this version")
    q.set_defaults(func=cmd_db_upgrade)

    p = sub.add_parser("status", parents=[common], help="counts of studies, jobs, dead letters")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("demo", parents=[common], help="run the end-to-end demo locally")
    p.add_argument("--data-dir", default="demo-data")
    p.add_argument("--images", type=int, default=6)
    p.set_defaults(func=cmd_demo)

    from xrayd.cli import audit as audit_commands
    from xrayd.cli import model as model_commands
    from xrayd.cli import model_versions as registry_commands
    from xrayd.cli import outbox as outbox_commands
    from xrayd.cli import peers as peer_commands
    from xrayd.cli import predict as predict_command
    from xrayd.cli import queue as queue_commands
    from xrayd.cli import retrain as retrain_commands
    from xrayd.cli import store as store_commands
    from xrayd.cli import users as user_commands

    peer_commands.add_parsers(sub, common)
    model_commands.add_parsers(sub, common)
    predict_command.add_parsers(sub, common)
    outbox_commands.add_parsers(sub, common)
    queue_commands.add_parsers(sub, common)
    user_commands.add_parsers(sub, common)
    registry_commands.add_parsers(sub, common)
    retrain_commands.add_parsers(sub, common)
    store_commands.add_parsers(sub, common)
    audit_commands.add_parsers(sub, common)

    p = sub.add_parser("report", parents=[common], help="write a study's PDF report to a file")
    p.add_argument("study_uid", metavar="STUDY_UID")
    p.add_argument("--out", required=True, type=Path, help="PDF file to write")
    p.set_defaults(func=cmd_report)
    return parser


def config_path(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Path | None:
    """The ``--config`` file, given before or after the subcommand; two different files are
    refused (exit 2) rather than one of them silently ignored."""
    before: Path | None = args.config_before
    after: Path | None = getattr(args, "config", None)
    if before is not None and after is not None and before != after:
        parser.error(f"--config given twice, as {before} and as {after}: give it once")
    return after if after is not None else before


#: bits xrayd always masks: what it creates (data directory, spool, SQLite database, bundles,
#: reports, logs) is for its own user only, started by hand as under systemd (UMask=0077)
UMASK = 0o077


def main(argv: Sequence[str] | None = None) -> int:
    os.umask(os.umask(UMASK) | UMASK)  # tighten, never loosen, the inherited mask
    parser = build_parser()
    args = parser.parse_args(argv)
    args.config = config_path(parser, args)
    try:
        settings = load_settings(args.config)
        configure_logging(settings.logging.level, settings.logging.format)
        func: Command = args.func
        return func(args, settings)
    except ConfigError as exc:
        print(f"xrayd: configuration error: {exc}", file=sys.stderr)
        return 2
    except InvalidEntryError as exc:  # an argument broke a rule: same exit as argparse's
        print(f"xrayd: invalid input: {exc}", file=sys.stderr)
        return 2
    except XraydError as exc:
        print(f"xrayd: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
