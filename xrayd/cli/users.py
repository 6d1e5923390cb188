"""``xrayd users``: web users, passwords and API tokens, through :mod:`xrayd.admin.users`
(the audit actor is ``cli:<operating-system user>``).

Passwords are prompted (twice, not echoed) or read from a file's first line
(``--password-file``, e.g. a systemd credential); never from the command line. Setting a
password revokes the user's API tokens and ends their sessions. Tokens may expire
(``users token NAME --days N``).
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from config.settings import Settings
from xrayd.cli.parsers import CommandGroup, Subparsers
from xrayd.cli.sessions import open_sessions

ROLES = ("radiologist", "admin")


def _password(args: argparse.Namespace) -> str:
    if args.password_file is not None:
        lines = Path(args.password_file).read_text(encoding="utf-8").splitlines()
        return lines[0] if lines else ""
    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        raise SystemExit("xrayd: the passwords differ")
    return first


def cmd_add(args: argparse.Namespace, settings: Settings) -> int:
    from xrayd.admin import users
    from xrayd.admin.actor import Actor

    user = users.add_user(
        open_sessions(settings), Actor.cli(), args.name, args.role, _password(args)
    )
    print(f"user {user.name} added ({user.role})")
    return 0


def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    from storage.users import list_users

    users = list_users(open_sessions(settings))
    for u in users:
        state = "disabled" if u.disabled else "enabled"
        print(f"{u.name:<24} {u.role:<12} {state:<9} since {u.created_at:%Y-%m-%d}")
    if not users:
        print("no users yet: xrayd users add NAME --role admin")
    return 0


def cmd_passwd(args: argparse.Namespace, settings: Settings) -> int:
    from xrayd.admin import users
    from xrayd.admin.actor import Actor

    sm = open_sessions(settings)
    tokens, sessions = users.set_password(sm, Actor.cli(), args.name, _password(args))
    print(
        f"password of {args.name} changed; {sessions} session(s) ended, "
        f"{tokens} API token(s) revoked"
    )
    return 0


def cmd_unlock(args: argparse.Namespace, settings: Settings) -> int:
    from xrayd.admin import users
    from xrayd.admin.actor import Actor

    cleared = users.unlock(open_sessions(settings), Actor.cli(), args.name)
    print(f"{args.name}: {cleared} counted failed login(s) forgotten")
    return 0


def cmd_enable(args: argparse.Namespace, settings: Settings) -> int:
    from xrayd.admin import users
    from xrayd.admin.actor import Actor

    users.set_disabled(open_sessions(settings), Actor.cli(), args.name, args.action == "disable")
    print(f"{args.name} {args.action}d")
    return 0


def cmd_token(args: argparse.Namespace, settings: Settings) -> int:
    from xrayd.admin import users
    from xrayd.admin.actor import Actor

    token = users.create_token(
        open_sessions(settings), Actor.cli(), args.name, args.label, args.days
    )
    print(token)
    until = "never expires" if args.days is None else f"expires in {args.days:g} day(s)"
    print(f"(shown once: xrayd keeps only its hash; {until})", file=sys.stderr)
    return 0


def cmd_tokens(args: argparse.Namespace, settings: Settings) -> int:
    from storage.users import list_tokens

    for t in list_tokens(open_sessions(settings)):
        state = "revoked" if t.revoked_at else "expired" if t.expired() else "active"
        used = f"{t.last_used_at:%Y-%m-%d %H:%M}" if t.last_used_at else "never"
        until = f" expires {t.expires_at:%Y-%m-%d %H:%M}" if t.expires_at else ""
        print(f"{t.id:>5} {t.user_name:<24} {t.name:<24} {state:<8} last used {used}{until}")
    return 0


def _days(value: str) -> float:
    """``--days``, checked by the rule the web and the API use."""
    from xrayd.admin.validation import InvalidInputError, token_lifetime

    try:
        days = float(value)
        token_lifetime(days)
    except (ValueError, InvalidInputError) as exc:  # InvalidInputError is a ValueError too
        raise argparse.ArgumentTypeError(str(exc)) from None
    return days


def cmd_revoke(args: argparse.Namespace, settings: Settings) -> int:
    from storage.errors import NotFoundError
    from xrayd.admin import users
    from xrayd.admin.actor import Actor

    try:
        users.revoke_token(open_sessions(settings), Actor.cli(), args.id)
    except NotFoundError:
        print(f"xrayd: no active token {args.id}", file=sys.stderr)
        return 1
    print(f"token {args.id} revoked")
    return 0


def add_parsers(sub: Subparsers, common: argparse.ArgumentParser) -> None:
    group = CommandGroup(sub, common, "users", help="web users and API tokens")
    q = group.action("add", cmd_add, help="add a user (password prompted)")
    q.add_argument("name")
    q.add_argument("--role", choices=ROLES, required=True)
    q.add_argument("--password-file", type=Path, default=None, help="read the password here")

    group.action("list", cmd_list, help="list users")

    q = group.action(
        "passwd",
        cmd_passwd,
        help="set a user's password (revokes their API tokens, ends their sessions)",
    )
    q.add_argument("name")
    q.add_argument("--password-file", type=Path, default=None)

    q = group.action(
        "unlock", cmd_unlock, help="forget a user's failed logins (ends their lock-out)"
    )
    q.add_argument("name")

    for action in ("disable", "enable"):
        q = group.action(action, cmd_enable, help=f"{action} a user")
        q.add_argument("name")

    q = group.action("token", cmd_token, help="create an API token for a user")
    q.add_argument("name")
    q.add_argument("--label", default="api", help="what the token is for")
    q.add_argument(
        "--days", type=_days, default=None, help="the token expires after this many days"
    )

    group.action("tokens", cmd_tokens, help="list API tokens")

    q = group.action("revoke", cmd_revoke, help="revoke an API token")
    q.add_argument("id", type=int)
