"""``xrayd models list|show|promote|rollback``: the model registry from the command line.

A running ``xrayd serve`` notices a promotion or rollback within ``ModelHolder.check_seconds``
and analyses the next study with that model; studies in progress finish on theirs.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING

from config.settings import Settings
from xrayd.cli.parsers import CommandGroup, Subparsers
from xrayd.cli.sessions import open_sessions

if TYPE_CHECKING:
    from storage.model_versions import ModelVersionRow


#: ``--actor`` names no one: the audit trail records the operating-system user
_NOTE_HELP = "a note for the audit trail (the actor recorded is the operating-system user)"


def _line(r: ModelVersionRow) -> str:
    auc = (r.metrics or {}).get("auc")
    gate = (r.gate or {}).get("verdict", "")
    promoted = f"{r.promoted_at:%Y-%m-%d %H:%M} by {r.promoted_by}" if r.promoted_at else ""
    return (
        f"{r.version:<20} {r.state:<9} {r.name:<16} {r.sha256[:12]}  "
        f"auc {auc if auc is not None else '-':<8} gate {gate or '-':<7} {promoted}"
    )


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    from storage.model_versions import list_model_versions

    for row in list_model_versions(open_sessions(settings, model=True)):
        print(_line(row))
    return 0


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    from storage.model_versions import get_version

    row = get_version(open_sessions(settings, model=True), args.version)
    if row is None:
        print(f"xrayd: no model version {args.version!r}", file=sys.stderr)
        return 1
    doc = {
        "name": row.name,
        "version": row.version,
        "state": row.state,
        "sha256": row.sha256,
        "path": row.path,
        "parent_version": row.parent_version,
        "run_id": row.run_id,
        "created_at": row.created_at.isoformat(),
        "promoted_at": row.promoted_at.isoformat() if row.promoted_at else None,
        "promoted_by": row.promoted_by,
        "manifest_sha256": row.manifest_sha256,
        "metrics": row.metrics,
        "gate": row.gate,
    }
    print(json.dumps(doc, indent=2, default=str))
    return 0


def cmd_promote(args: argparse.Namespace, settings: Settings) -> int:
    from xrayd.admin import models
    from xrayd.admin.actor import Actor

    row = models.promote(open_sessions(settings, model=True), Actor.cli(args.note), args.version)
    print(f"model {row.name} {row.version} is active (sha256 {row.sha256[:12]})")
    return 0


def cmd_rollback(args: argparse.Namespace, settings: Settings) -> int:
    from xrayd.admin import models
    from xrayd.admin.actor import Actor

    row = models.rollback(open_sessions(settings, model=True), Actor.cli(args.note))
    print(f"rolled back: model {row.name} {row.version} is active again (sha256 {row.sha256[:12]})")
    return 0


def add_parsers(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    group = CommandGroup(sub, common, "models", help="the model registry")
    group.action("list", cmd_list, help="every registered model version")
    q = group.action("show", cmd_show, help="one version: metrics, gate, manifest")
    q.add_argument("version")
    q = group.action("promote", cmd_promote, help="serve this version from now on")
    q.add_argument("version")
    q.add_argument("--actor", dest="note", default=None, help=_NOTE_HELP)
    q = group.action("rollback", cmd_rollback, help="serve the previous version again")
    q.add_argument("--actor", dest="note", default=None, help=_NOTE_HELP)
