"""How ``qiledger``'s parsers are made and how they fail.

Every sub-command accepts the global options too (``qiledger fsck --json`` as
well as ``qiledger --json fsck``) but does not list them: its help points to
``qiledger --help``, where they are listed once. A usage error raises
:class:`UsageError` instead of exiting, so ``main`` can report it under
``--json`` like any other error.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import NoReturn

from registry.cli.output import Output

Command = Callable[[argparse.Namespace, Output], int]


def number_up_to(upper: int) -> Callable[[str], int]:
    """An argparse ``type``: a whole number from 1 to ``upper``."""

    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            number = 0
        if not 1 <= number <= upper:
            raise argparse.ArgumentTypeError(f"not a number from 1 to {upper}: {value!r}")
        return number

    return parse

GLOBALS_EPILOG = (
    "global options (data dir, database, log key, JSON output, demo): see qiledger --help"
)


class UsageError(Exception):
    """The command line does not parse; ``usage`` is the parser's usage line."""

    def __init__(self, message: str, usage: str, prog: str) -> None:
        super().__init__(message)
        self.message = message
        self.usage = usage
        self.prog = prog


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message, self.format_usage(), self.prog)


class Commands:
    """Adds the sub-commands of one level (``qiledger X`` or ``qiledger body X``)."""

    def __init__(self, sub: argparse._SubParsersAction[Parser], hidden_globals: Parser) -> None:
        self._sub = sub
        self._globals = hidden_globals

    def add(self, name: str, func: Command | None, help_text: str) -> Parser:
        parser = self._sub.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=GLOBALS_EPILOG,
            parents=[self._globals],
        )
        if func is not None:
            parser.set_defaults(func=func)
        return parser

    def group(self, name: str, help_text: str) -> Commands:
        """A command whose actions are sub-commands, e.g. ``body add``."""
        parser = self.add(name, None, help_text)
        sub = parser.add_subparsers(
            dest=f"{name}_command", required=True, metavar="ACTION", help="one of:"
        )
        return Commands(sub, self._globals)
