"""``qiledger serve`` (the HTTP service) and ``qiledger token`` (its API tokens)."""

from __future__ import annotations

import argparse
import copy
import os
from dataclasses import replace
from typing import Any

from registry.cli import context
from registry.cli import marks as cli_marks
from registry.cli.output import Output
from registry.cli.parsing import Commands
from registry.config import ServerSettings
from registry.errors import ConfigError


def cmd_serve(args: argparse.Namespace, out: Output) -> int:
    import uvicorn

    from registry.ledger import Ledger
    from registry.witnessing import parse_witnesses

    if args.workers < 1:
        raise ConfigError(f"--workers must be at least 1, not {args.workers}")
    # A bad setting is one clear error here, not one per worker; and no prompt:
    # the workers could not be given what was typed.
    server = ServerSettings.from_env(args.public_url, args.witness)
    cli_marks.configured_public_url(server.public_url)  # marks must be able to live under it
    parse_witnesses(server.witnesses)  # a bad witness is refused here, once
    settings = replace(context.settings(args), passphrase_prompt=False)
    ledger = Ledger.open(settings)  # fail here, clearly, before uvicorn starts
    ledger.load_log_key()
    # Several workers on SQLite are fine: BEGIN IMMEDIATE serializes their
    # sequencers, and group commit keeps batches large.
    ledger.close()
    # Each worker process opens the ledger itself from these (app_from_env).
    for name, value in (settings.worker_env() | server.worker_env()).items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    uvicorn.run(
        "registry.api.app:app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        log_config=_log_config(args.log_level),
        proxy_headers=True,
        server_header=False,
    )
    return 0


def _log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging, with the registry's own loggers (``qiledger.*``) on
    the same handler and at the same level, so the operator's log has both."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["qiledger"] = {
        "handlers": ["default"],
        "level": level.upper(),
        "propagate": False,
    }
    return config


def cmd_token_create(args: argparse.Namespace, out: Output) -> int:
    if sum(x is not None for x in (args.issuer, args.body, args.role)) != 1:
        raise ConfigError("name exactly one of --issuer ID, --body ID or --role auditor|operator")
    role = "issuer" if args.issuer else "body" if args.body else args.role
    subject = args.issuer or args.body or ""
    ledger = context.ledger(args)
    token, holder = ledger.tokens.create(role, subject, args.label or "")
    out.emit(
        f"token {holder.token_id} ({role}{' ' + subject if subject else ''}):\n{token}\n"
        "(shown once; only its hash is stored)",
        {"token_id": holder.token_id, "role": role, "subject": subject, "token": token},
    )
    return 0


def cmd_token_list(args: argparse.Namespace, out: Output) -> int:
    infos = context.ledger(args).tokens.list()
    rows = [
        {
            "token_id": i.holder.token_id,
            "role": i.holder.role,
            "subject": i.holder.subject,
            "label": i.holder.label,
            "created_at": i.created_at,
            "revoked_at": i.revoked_at,
        }
        for i in infos
    ]
    human = "\n".join(
        f"{r['token_id']}  {r['role']:8} {r['subject'] or '-':16} {r['created_at']}"
        + (f"  revoked {r['revoked_at']}" if r["revoked_at"] else "")
        + (f"  {r['label']}" if r["label"] else "")
        for r in rows
    )
    out.emit(human or "(no API tokens)", rows)
    return 0


def cmd_token_revoke(args: argparse.Namespace, out: Output) -> int:
    context.ledger(args).tokens.revoke(args.token_id)
    out.emit(f"token {args.token_id} revoked", {"token_id": args.token_id, "revoked": True})
    return 0


def register(commands: Commands) -> None:
    p = commands.add("serve", cmd_serve, "run the HTTP API (uvicorn)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    p.add_argument(
        "--workers",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="server processes (default: one per usable core; a process uses one core)",
    )
    p.add_argument(
        "--public-url",
        help="scheme://host[:port] of the public verifier, for QR mark URLs "
        "(env QILEDGER_PUBLIC_URL; default: the host each request was made to)",
    )
    p.add_argument(
        "--witness",
        action="append",
        metavar="URL=VKEY",
        help="a C2SP tlog-witness to ask for cosignatures of each checkpoint: its URL "
        "and verifier key (repeatable; env QILEDGER_WITNESSES)",
    )
    p.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info"],
        help="least severe message logged (default info)",
    )
    token = commands.group("token", "API tokens")
    p = token.add("create", cmd_token_create, "create a token (printed once)")
    p.add_argument("--issuer", help="a token for this issuer id (its certificates and keys)")
    p.add_argument("--body", help="a token for this accreditation body id")
    p.add_argument(
        "--role", choices=["auditor", "operator"], help="a token for a role, not a holder"
    )
    p.add_argument("--label", help="a note for the operator, e.g. who holds it")
    token.add("list", cmd_token_list, "list tokens (never their secrets)")
    p = token.add("revoke", cmd_token_revoke, "revoke a token")
    p.add_argument("token_id", metavar="TOKEN-ID", help="as token list shows it")
