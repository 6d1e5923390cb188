"""The shapes every command group's parser shares: ``xrayd GROUP ACTION [options]``.

Each module of :mod:`xrayd.cli` adds its commands through :class:`CommandGroup`, so every
action inherits the common options (``--config``) and names the function that runs it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeAlias

from config.settings import Settings

Command = Callable[[argparse.Namespace, Settings], int]
#: What ``ArgumentParser.add_subparsers`` returns: where a command adds its parser.
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


class CommandGroup:
    """``xrayd NAME ACTION ...``: one command whose first argument picks one of its actions."""

    def __init__(
        self, sub: Subparsers, common: argparse.ArgumentParser, name: str, help: str
    ) -> None:
        parser = sub.add_parser(name, parents=[common], help=help)
        self._actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        self._common = common

    def action(self, name: str, func: Command, help: str | None = None) -> argparse.ArgumentParser:
        """The parser of ``xrayd NAME <name>``, which runs ``func``.

        Without ``help`` the action is left out of the group's list of actions (argparse lists
        every action given a help, even an empty one).
        """
        if help is None:
            parser = self._actions.add_parser(name, parents=[self._common])
        else:
            parser = self._actions.add_parser(name, parents=[self._common], help=help)
        parser.set_defaults(func=func)
        return parser


def add_id_or_dead(parser: argparse.ArgumentParser, dead_help: str) -> None:
    """``retry ID`` or ``retry --dead``: one item by its id, or every dead one."""
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("id", nargs="?", type=int, default=None, metavar="ID")
    which.add_argument("--dead", action="store_true", help=dead_help)
