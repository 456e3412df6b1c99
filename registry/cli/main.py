"""``qiledger``: the operator's command line for the QI Ledger registry.

Example::

    qiledger --data-dir ./data init --no-passphrase
    qiledger --data-dir ./data keys allow lab.pub.pem --label "Demo Lab"
    qiledger --data-dir ./data append statement.dsse.json
    qiledger --data-dir ./data proof --index 0 > entry0.tlog-proof
    qiledger --data-dir ./data fsck

Every error is one line on stderr and a non-zero exit code: 1 for a refused or
failed operation, 2 for bad usage, 3 when fsck finds damage.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from registry.cli import certificates as cli_certificates
from registry.cli import service as cli_service
from registry.cli import tiles as cli_tiles
from registry.cli import trust as cli_trust
from registry.cli.output import Output
from registry.config import Settings
from registry.errors import ConfigError, IntegrityError, KeyFileError, database_error_detail
from registry.keys import keyfile
from registry.ledger import Ledger
from registry.sequencer import Accepted, Refused
from verifier import entry as entry_mod
from verifier import statement as statement_mod
from verifier.encoding import b64encode
from verifier.errors import MalformedError, QILedgerError
from verifier.keys import SigningKey
from verifier.proof import format_consistency

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_DAMAGED = 3


# --- commands ---------------------------------------------------------------------


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env(args.data_dir, args.database_url, args.log_key, args.demo)


def _passphrase(args: argparse.Namespace, what: str) -> bytes | None:
    env = keyfile.passphrase_from_env()
    if env:
        return env
    if args.no_passphrase:
        return None
    if sys.stdin.isatty():
        first = getpass.getpass(f"passphrase for the new {what}: ")
        if first != getpass.getpass("again: "):
            raise KeyFileError("the passphrases differ")
        if not first:
            raise KeyFileError("empty passphrase; use --no-passphrase to store the key unencrypted")
        return first.encode("utf-8")
    raise KeyFileError(
        f"no passphrase for the {what}: set {keyfile.PASSPHRASE_ENV} or pass --no-passphrase"
    )


def cmd_init(args: argparse.Namespace, out: Output) -> int:
    settings = _settings(args)
    ledger = Ledger.init(settings, origin=args.origin, passphrase=_passphrase(args, "log key"))
    verifier_key = str(ledger.identity.verifier)
    out.emit(
        f"created ledger {ledger.identity.origin} in {ledger.db.safe_url}\n"
        f"log key: {settings.log_key_file}\n"
        f"verifier key: {verifier_key}",
        {
            "origin": ledger.identity.origin,
            "database": ledger.db.safe_url,
            "log_key_file": str(settings.log_key_file),
            "verifier_key": verifier_key,
        },
    )
    return 0


def cmd_log_key(args: argparse.Namespace, out: Output) -> int:
    ledger = Ledger.open(_settings(args))
    vkey = str(ledger.identity.verifier)
    pem = ledger.identity.public_key.to_pem().decode("ascii")
    out.emit(
        f"{vkey}\n{pem.rstrip()}",
        {"origin": ledger.identity.origin, "verifier_key": vkey, "public_key_pem": pem},
    )
    return 0


def _read_input(path: str) -> bytes:
    try:
        if path == "-":
            return sys.stdin.buffer.read()
        return Path(path).read_bytes()
    except OSError as exc:
        raise MalformedError(f"cannot read {path}: {exc.strerror}") from None


def cmd_append(args: argparse.Namespace, out: Output) -> int:
    ledger = Ledger.open(_settings(args))
    envelopes = [_read_input(p) for p in args.envelopes]
    outcomes = ledger.submit_envelopes(envelopes)
    failed = 0
    results = []
    for path, outcome in zip(args.envelopes, outcomes, strict=True):
        if isinstance(outcome, Refused):
            failed += 1
            results.append(
                {"file": path, "refused": outcome.error.code, "error": outcome.error.message}
            )
            print(f"qiledger: {path}: refused: {outcome.error.message}", file=sys.stderr)
            continue
        assert isinstance(outcome, Accepted)
        results.append(
            {
                "file": path,
                "index": outcome.index,
                "duplicate": outcome.duplicate,
                "leaf_hash": outcome.leaf_hash.hex(),
                "logged_at": outcome.logged_at,
            }
        )
        if not out.as_json:
            verb = "already logged" if outcome.duplicate else "appended"
            print(f"{path}: {verb} at index {outcome.index} (leaf {outcome.leaf_hash.hex()})")
    if out.as_json:
        print(json.dumps(results, indent=2))
    return EXIT_FAILED if failed else 0


def cmd_checkpoint(args: argparse.Namespace, out: Output) -> int:
    ledger = Ledger.open(_settings(args))
    signed = ledger.verified_checkpoint(args.size)
    cp = signed.checkpoint
    if out.as_json:
        out.emit(
            "",
            {
                "origin": cp.origin,
                "size": cp.size,
                "root": b64encode(cp.root),
                "note": signed.note.decode("utf-8"),
            },
        )
    else:
        sys.stdout.write(signed.note.decode("utf-8"))
    return 0


def cmd_proof(args: argparse.Namespace, out: Output) -> int:
    ledger = Ledger.open(_settings(args))
    proof = ledger.inclusion_proof(args.index, args.size)
    if out.as_json:
        out.emit(
            "",
            {
                "index": proof.index,
                "hashes": [b64encode(h) for h in proof.hashes],
                "checkpoint": proof.checkpoint_note.decode("utf-8"),
            },
        )
    else:
        sys.stdout.buffer.write(proof.to_bytes())
    return 0


def cmd_consistency(args: argparse.Namespace, out: Output) -> int:
    ledger = Ledger.open(_settings(args))
    hashes = ledger.consistency_proof(args.first, args.second)
    if out.as_json:
        out.emit(
            "",
            {"first": args.first, "second": args.second, "hashes": [b64encode(h) for h in hashes]},
        )
    else:
        sys.stdout.buffer.write(format_consistency(hashes))
    return 0


def cmd_entry(args: argparse.Namespace, out: Output) -> int:
    ledger = Ledger.open(_settings(args))
    stored = ledger.storage.entry(args.index)
    if args.raw:
        sys.stdout.buffer.write(stored.data)
        return 0
    parsed = entry_mod.parse(stored.data)
    stmt = statement_mod.parse(parsed.envelope.payload)
    summary = {
        "index": stored.index,
        "leaf_hash": stored.leaf_hash.hex(),
        "logged_at": parsed.logged_at,
        "prev": parsed.prev.hex(),
        "signed_by": [s.keyid for s in parsed.envelope.signatures],
        "statement": stmt.fields,
    }
    out.emit(
        f"entry {stored.index}\n"
        f"  logged at  {parsed.logged_at}\n"
        f"  leaf hash  {stored.leaf_hash.hex()}\n"
        f"  prev       {parsed.prev.hex()}\n"
        f"  signed by  {', '.join(s.keyid for s in parsed.envelope.signatures)}\n"
        f"  statement  {json.dumps(stmt.fields, indent=2, ensure_ascii=False)}",
        summary,
    )
    return 0


def cmd_fsck(args: argparse.Namespace, out: Output) -> int:
    from registry.fsck import fsck

    ledger = Ledger.open(_settings(args))
    show = sys.stderr.isatty() and not out.as_json

    def progress(done: int, total: int) -> None:
        if show:
            print(f"\rchecked {done}/{total} entries", end="", file=sys.stderr, flush=True)

    try:
        report = fsck(ledger, progress)
    except IntegrityError as exc:
        if show:
            print(file=sys.stderr)
        if out.as_json:
            print(json.dumps({"ok": False, "where": exc.where, "error": exc.message}))
        print(f"qiledger: fsck: DAMAGED at {exc.where}: {exc.message}", file=sys.stderr)
        return EXIT_DAMAGED
    if show:
        print(file=sys.stderr)
    out.emit(
        f"fsck OK: {report.entries} entries, {report.nodes} tree nodes, "
        f"{report.checkpoints} checkpoints, {report.documents} documents, "
        f"{report.snapshots} trust snapshots; root {b64encode(report.root)}",
        {
            "ok": True,
            "entries": report.entries,
            "nodes": report.nodes,
            "checkpoints": report.checkpoints,
            "documents": report.documents,
            "trust_snapshots": report.snapshots,
            "root": b64encode(report.root),
        },
    )
    return 0


def cmd_snapshot(args: argparse.Namespace, out: Output) -> int:
    ledger = Ledger.open(_settings(args))
    try:
        ledger.policy.sync()
        size = ledger.policy.save_snapshot()
    finally:
        ledger.close()
    if size is None:
        out.emit("trust snapshot: nothing new since the newest one", {"stored": None})
    else:
        out.emit(f"trust snapshot stored at tree size {size}", {"stored": size})
    return 0


def cmd_keygen(args: argparse.Namespace, out: Output) -> int:
    base = Path(args.out)
    key = SigningKey.generate(os.urandom(32))
    private_path = base.with_name(base.name + ".key")
    public_path = base.with_name(base.name + ".pub.pem")
    keyfile.write_private_key(private_path, key, _passphrase(args, "key"))
    keyfile.write_public_key(public_path, key.public_key)
    out.emit(
        f"wrote {private_path} (private, mode 0600) and {public_path}\n"
        f"key id: {key.public_key.key_id}",
        {
            "private_key": str(private_path),
            "public_key": str(public_path),
            "key_id": key.public_key.key_id,
        },
    )
    return 0


def cmd_demo(args: argparse.Namespace, out: Output) -> int:
    from registry.demo.run import run_demo

    return run_demo(Path(args.data_dir) if args.data_dir else None)


# --- parser -------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data-dir",
        default=argparse.SUPPRESS,
        help="data directory (env QILEDGER_DATA_DIR; default ./qiledger-data)",
    )
    common.add_argument(
        "--database-url",
        default=argparse.SUPPRESS,
        help="SQLAlchemy URL (env QILEDGER_DATABASE_URL; default SQLite in the data dir)",
    )
    common.add_argument(
        "--log-key",
        default=argparse.SUPPRESS,
        help="log private key file (env QILEDGER_LOG_KEY; default DATA_DIR/log.key)",
    )
    common.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="machine-readable JSON output",
    )
    common.add_argument(
        "--demo",
        action="store_true",
        default=argparse.SUPPRESS,
        help="allow the public demo keys of keys.example/ (never in production)",
    )

    parser = argparse.ArgumentParser(
        prog="qiledger",
        description="QI Ledger registry: a verifiable certificate log.",
        parents=[common],
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        name: str, func: Callable[[argparse.Namespace, Output], int], help_text: str
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text, parents=[common])
        p.set_defaults(func=func)
        return p

    p = add("init", cmd_init, "create the data dir, database and log key")
    p.add_argument(
        "--origin", help="log origin / checkpoint key name (default derived from the key)"
    )
    p.add_argument("--no-passphrase", action="store_true", help="store the log key unencrypted")
    add("log-key", cmd_log_key, "print the log's verifier key string and public key PEM")
    p = add("append", cmd_append, "append DSSE envelope files ('-' for stdin) as one batch")
    p.add_argument("envelopes", nargs="+", metavar="ENVELOPE.json")
    p = add("checkpoint", cmd_checkpoint, "print the latest (or --size) signed checkpoint")
    p.add_argument("--size", type=int, help="a signed tree size")
    p = add("proof", cmd_proof, "print a C2SP tlog-proof@v1 inclusion proof")
    p.add_argument("--index", type=int, required=True)
    p.add_argument("--size", type=int, help="signed tree size (default: latest)")
    p = add(
        "consistency",
        cmd_consistency,
        "print a consistency proof between two signed sizes (base64, one per line)",
    )
    p.add_argument("--from", dest="first", type=int, required=True)
    p.add_argument("--to", dest="second", type=int, required=True)
    p = add("entry", cmd_entry, "show entry N (--raw: leaf data bytes exactly as hashed)")
    p.add_argument("index", type=int)
    p.add_argument("--raw", action="store_true")
    add("fsck", cmd_fsck, "re-check everything stored; exit 3 on damage")
    add(
        "snapshot",
        cmd_snapshot,
        "store the trust state at the current size, so the next start replays only newer entries",
    )
    p = add("keygen", cmd_keygen, "write NAME.key (PKCS#8, mode 0600) and NAME.pub.pem")
    p.add_argument("--out", required=True, metavar="NAME")
    p.add_argument("--no-passphrase", action="store_true", help="store the key unencrypted")
    add("demo", cmd_demo, "run the end-to-end demo in a fresh ledger")
    cli_trust.register(sub, add, common)
    cli_service.register(sub, add, common)
    cli_certificates.register(add)
    cli_tiles.register(add)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name, default in (
        ("data_dir", None),
        ("database_url", None),
        ("log_key", None),
        ("json", False),
        ("demo", False),
    ):
        if not hasattr(args, name):
            setattr(args, name, default)
    out = Output(args.json)
    try:
        return int(args.func(args, out))
    except ConfigError as exc:
        print(f"qiledger: configuration error: {exc.message}", file=sys.stderr)
    except QILedgerError as exc:
        print(f"qiledger: error: {exc.message}", file=sys.stderr)
    except SQLAlchemyError as exc:
        print(f"qiledger: database error: {database_error_detail(exc)}", file=sys.stderr)
    except KeyboardInterrupt:
        print("qiledger: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_FAILED
    return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
