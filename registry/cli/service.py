"""``qiledger serve`` (the HTTP service) and ``qiledger token`` (its API tokens)."""

from __future__ import annotations

import argparse
import copy
import os
from collections.abc import Callable
from typing import Any

from registry.cli.output import Output
from registry.config import Settings
from registry.errors import ConfigError
from registry.ledger import Ledger
from registry.storage.tokens import TokenStore


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env(args.data_dir, args.database_url, args.log_key, args.demo)


def cmd_serve(args: argparse.Namespace, out: Output) -> int:
    import uvicorn

    from registry.api.app import options_from_env

    if args.workers < 1:
        raise ConfigError(f"--workers must be at least 1, not {args.workers}")
    settings = _settings(args)
    ledger = Ledger.open(settings)  # fail here, clearly, before uvicorn starts
    ledger.load_log_key()
    # Several workers on SQLite are fine: BEGIN IMMEDIATE serializes their
    # sequencers, and group commit keeps batches large.
    ledger.close()
    # Each worker process opens the ledger itself from these (app_from_env).
    env = {
        "QILEDGER_DATA_DIR": str(settings.data_dir),
        "QILEDGER_DATABASE_URL": settings.database_url or "",
        "QILEDGER_LOG_KEY": str(settings.log_key_file),
        "QILEDGER_DEMO": "1" if settings.demo else "",
        "QILEDGER_PUBLIC_URL": args.public_url or os.environ.get("QILEDGER_PUBLIC_URL", ""),
    }
    os.environ.update({k: v for k, v in env.items() if v})
    if not settings.database_url:
        os.environ.pop("QILEDGER_DATABASE_URL", None)
    options_from_env()  # a bad setting is one clear error here, not one per worker
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
    ledger = Ledger.open(_settings(args))
    token, holder = TokenStore(ledger.db).create(role, subject, args.label or "")
    out.emit(
        f"token {holder.token_id} ({role}{' ' + subject if subject else ''}):\n{token}\n"
        "(shown once; only its hash is stored)",
        {"token_id": holder.token_id, "role": role, "subject": subject, "token": token},
    )
    return 0


def cmd_token_list(args: argparse.Namespace, out: Output) -> int:
    infos = TokenStore(Ledger.open(_settings(args)).db).list()
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
    TokenStore(Ledger.open(_settings(args)).db).revoke(args.token_id)
    out.emit(f"token {args.token_id} revoked", {"token_id": args.token_id, "revoked": True})
    return 0


def register(
    sub: Any,
    add: Callable[..., argparse.ArgumentParser],
    common: argparse.ArgumentParser,
) -> None:
    p = add("serve", cmd_serve, "run the HTTP API (uvicorn)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--workers",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="server processes (default: one per usable core; a process uses one core)",
    )
    p.add_argument("--public-url", help="base URL of the public verifier, for QR mark URLs")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info"])
    token = sub.add_parser("token", help="API tokens", parents=[common])
    token_sub = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    p = token_sub.add_parser("create", help="create a token (printed once)", parents=[common])
    p.set_defaults(func=cmd_token_create)
    p.add_argument("--issuer", help="a token for this issuer id (its certificates and keys)")
    p.add_argument("--body", help="a token for this accreditation body id")
    p.add_argument("--role", choices=["auditor", "operator"])
    p.add_argument("--label", help="a note for the operator, e.g. who holds it")
    p = token_sub.add_parser("list", help="list tokens (never their secrets)", parents=[common])
    p.set_defaults(func=cmd_token_list)
    p = token_sub.add_parser("revoke", help="revoke a token", parents=[common])
    p.set_defaults(func=cmd_token_revoke)
    p.add_argument("token_id", metavar="TOKEN-ID")
