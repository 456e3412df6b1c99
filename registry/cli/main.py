"""``qiledger``: the operator's command line for the QI Ledger registry.

Example::

    qiledger --data-dir ./data init --no-passphrase
    qiledger keygen --out ./cnas --no-passphrase
    qiledger --data-dir ./data body add --name CNAS --country CN --key ./cnas.pub.pem
    qiledger --data-dir ./data accredit grant --body-key ./cnas.key --body CNAS \\
        --issuer LAB-1 --issuer-name "Lab One" --issuer-kind calibration_laboratory \\
        --issuer-key ./lab.pub.pem --number "CNAS L0001" --standard "ISO/IEC 17025:2017" \\
        --scope Temperature --covers dcc --valid-from 2026-01-01 --valid-until 2029-12-31
    qiledger --data-dir ./data issue dcc.xml --key ./lab.key --issuer LAB-1
    qiledger --data-dir ./data append statement.dsse.json
    qiledger --data-dir ./data proof --index 0 > entry0.tlog-proof
    qiledger --data-dir ./data --json fsck

This module assembles the parser (the global options, then one module per
command group) and turns every failure into one line on stderr and an exit code:

==  =====================================================================
0   done
1   refused by a trust rule, invalid input, or a configuration, key file
    or database error
2   bad usage (the command line does not parse)
3   damage found: stored data does not check (fsck)
4   not found: no such entry, checkpoint size, certificate, issuer, token
==  =====================================================================

With ``--json`` that line is one JSON object, ``{"code": ..., "detail": ...}``,
whose ``code`` is the HTTP API's stable code for the same failure
(``registry.cli.output``).

Building the parser imports no database, web, XML or image library: each command
imports what it needs when it runs, so ``--help`` and the read commands start
quickly (``tests/test_cli_startup.py``, ``bench/cli.py``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from registry.cli import certificates as cli_certificates
from registry.cli import export as cli_export
from registry.cli import log as cli_log
from registry.cli import marks as cli_marks
from registry.cli import service as cli_service
from registry.cli import statements as cli_statements
from registry.cli import tiles as cli_tiles
from registry.cli import traceability as cli_traceability
from registry.cli import trust as cli_trust
from registry.cli.output import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    EXIT_USAGE,
    Output,
)
from registry.cli.parsing import Commands, Parser, UsageError
from registry.errors import ConfigError, database_error_detail
from verifier.errors import QILedgerError

GLOBAL_DEFAULTS = {
    "data_dir": None,
    "database_url": None,
    "log_key": None,
    "log_key_passphrase_file": None,
    "json": False,
    "demo": False,
}


def _add_global_options(parser: Parser, *, hidden: bool) -> None:
    """The options every command takes; ``hidden`` for the copy each sub-command
    accepts without listing it. Their default is "not given" (SUPPRESS), so one
    given after the sub-command does not hide one given before it."""

    def text(help_text: str) -> str:
        return argparse.SUPPRESS if hidden else help_text

    parser.add_argument(
        "--data-dir",
        default=argparse.SUPPRESS,
        help=text("data directory (env QILEDGER_DATA_DIR; default ./qiledger-data)"),
    )
    parser.add_argument(
        "--database-url",
        default=argparse.SUPPRESS,
        help=text("SQLAlchemy URL (env QILEDGER_DATABASE_URL; default SQLite in the data dir)"),
    )
    parser.add_argument(
        "--log-key",
        default=argparse.SUPPRESS,
        help=text("log private key file (env QILEDGER_LOG_KEY; default DATA_DIR/log.key)"),
    )
    parser.add_argument(
        "--log-key-passphrase-file",
        default=argparse.SUPPRESS,
        metavar="FILE",
        help=text(
            "file holding the log key's passphrase (env QILEDGER_LOG_KEY_PASSPHRASE_FILE; "
            "default: QILEDGER_LOG_KEY_PASSPHRASE, then QILEDGER_KEY_PASSPHRASE, then a prompt)"
        ),
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help=text("machine-readable JSON output; errors as one JSON object on stderr"),
    )
    parser.add_argument(
        "--demo",
        action="store_true",
        default=argparse.SUPPRESS,
        help=text("allow the public demo keys of keys.example/ (never in production)"),
    )


def build_parser() -> Parser:
    hidden_globals = Parser(add_help=False)
    _add_global_options(hidden_globals, hidden=True)
    parser = Parser(
        prog="qiledger",
        description="QI Ledger registry: a verifiable certificate log.",
        epilog="exit codes: 0 done, 1 refused or failed, 2 bad usage, 3 damage found, "
        "4 not found. 'qiledger COMMAND --help' for a command's options.",
    )
    _add_global_options(parser, hidden=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", help="one of:")
    commands = Commands(sub, hidden_globals)
    cli_log.register(commands)
    cli_trust.register(commands)
    cli_service.register(commands)
    cli_certificates.register(commands)
    cli_marks.register(commands)
    cli_tiles.register(commands)
    cli_statements.register(commands)
    cli_export.register(commands)
    cli_traceability.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        # --json may be anywhere on a line that does not parse
        if "--json" in argv:
            Output(True).error("usage_invalid", exc.message, exc.message)
        else:
            print(f"{exc.usage}{exc.prog}: error: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    for name, default in GLOBAL_DEFAULTS.items():
        if not hasattr(args, name):
            setattr(args, name, default)
    out = Output(args.json)
    try:
        return int(args.func(args, out))
    except ConfigError as exc:
        out.error(exc.code, exc.message, f"configuration error: {exc.message}")
    except QILedgerError as exc:
        out.error(exc.code, exc.message, f"error: {exc.message}")
        # the code, not the class, decides: as the HTTP API answers 404
        return EXIT_NOT_FOUND if exc.code == "not_found" else EXIT_FAILED
    except KeyboardInterrupt:
        out.error("interrupted", "interrupted", "interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_FAILED
    except Exception as exc:
        if not _is_database_error(exc):
            raise
        detail = database_error_detail(exc)
        out.error("storage_error", detail, f"database error: {detail}")
    return EXIT_FAILED


def _is_database_error(exc: Exception) -> bool:
    """Whether ``exc`` is SQLAlchemy's. Looked up, not imported: only a command that
    opened a database imported SQLAlchemy, and only such a command can raise it."""
    sqlalchemy_exc = sys.modules.get("sqlalchemy.exc")
    return sqlalchemy_exc is not None and isinstance(exc, sqlalchemy_exc.SQLAlchemyError)


if __name__ == "__main__":
    sys.exit(main())
