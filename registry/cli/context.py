"""What commands take from their parsed options: the registry's settings (global
options, then the environment), the ledger they name, and the private key files
they sign with, each opened with its own passphrase (``registry.keys.keyfile``)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from registry.config import Settings
from registry.keys import keyfile
from registry.keys.keyfile import KeyRole, PassphraseSource
from verifier.keys import SigningKey

if TYPE_CHECKING:
    from registry.ledger import Ledger


def settings(args: argparse.Namespace) -> Settings:
    """The settings the global options name; the CLI may prompt for passphrases."""
    return Settings.from_env(
        args.data_dir,
        args.database_url,
        args.log_key,
        args.demo,
        log_key_passphrase_file=args.log_key_passphrase_file,
        passphrase_prompt=True,
    )


def ledger(args: argparse.Namespace) -> Ledger:
    """The ledger the global options name. Imported when a command runs, not when
    the parser is built: the ledger brings the database layer (``--help`` and
    commands without a ledger start without it)."""
    from registry.ledger import Ledger

    return Ledger.open(settings(args))


@dataclass(frozen=True)
class KeyOption:
    """An option naming a private key file, e.g. ``--body-key``, and the
    ``--body-key-passphrase-file`` beside it; ``role`` names the passphrase
    variable tried next (None: only QILEDGER_KEY_PASSPHRASE)."""

    flag: str
    role: KeyRole | None

    @property
    def passphrase_flag(self) -> str:
        return f"{self.flag}-passphrase-file"

    def add_to(self, parser: argparse.ArgumentParser, *, metavar: str, help: str) -> None:
        parser.add_argument(self.flag, required=True, metavar=metavar, help=help)
        variables = f"{self.role.env}, then " if self.role else ""
        parser.add_argument(
            self.passphrase_flag,
            metavar="FILE",
            help=f"file holding the passphrase of {self.flag} if it is encrypted "
            f"(default: {variables}{keyfile.PASSPHRASE_ENV}, then a prompt)",
        )

    def passphrase(self, args: argparse.Namespace) -> PassphraseSource:
        file = getattr(args, _dest(self.passphrase_flag))
        return PassphraseSource(
            self.role, Path(file) if file else None, self.passphrase_flag, prompt=True
        )

    def load(self, args: argparse.Namespace) -> SigningKey:
        path = Path(getattr(args, _dest(self.flag)))
        return keyfile.read_private_key(path, self.passphrase(args), demo=args.demo)


def _dest(flag: str) -> str:
    return flag.removeprefix("--").replace("-", "_")
