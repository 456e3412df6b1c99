"""``qiledger`` commands on the log itself: create it, append, read checkpoints,
proofs and entries, re-check it all (fsck), rebuild the certificate tables from
it (reindex), make key files; and the demo, which runs all of it in a fresh
ledger."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from registry.cli import context
from registry.cli.output import EXIT_DAMAGED, EXIT_FAILED, Output
from registry.cli.parsing import Commands
from registry.errors import IntegrityError
from registry.keys import keyfile
from registry.keys.keyfile import PassphraseSource
from verifier.encoding import b64encode
from verifier.errors import MalformedError
from verifier.keys import SigningKey


def cmd_init(args: argparse.Namespace, out: Output) -> int:
    from registry.ledger import Ledger

    settings = context.settings(args)
    passphrase = keyfile.log_key_passphrase(settings).for_new_key(
        settings.log_key_file, unencrypted=args.no_passphrase
    )
    ledger = Ledger.init(settings, origin=args.origin, passphrase=passphrase)
    verifier_key = str(ledger.identity.verifier)
    out.emit(
        f"created ledger {ledger.identity.origin} in {ledger.database_url}\n"
        f"log key: {settings.log_key_file}\n"
        f"verifier key: {verifier_key}",
        {
            "origin": ledger.identity.origin,
            "database": ledger.database_url,
            "log_key_file": str(settings.log_key_file),
            "verifier_key": verifier_key,
        },
    )
    return 0


def cmd_log_key(args: argparse.Namespace, out: Output) -> int:
    ledger = context.ledger(args)
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
    from registry.sequencer import Accepted, Refused

    ledger = context.ledger(args)
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
            error = outcome.error
            out.error(error.code, error.message, f"{path}: refused: {error.message}", file=path)
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
    ledger = context.ledger(args)
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
    ledger = context.ledger(args)
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
    from verifier.proof import format_consistency

    ledger = context.ledger(args)
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
    from verifier import entry as entry_mod
    from verifier import statement as statement_mod

    ledger = context.ledger(args)
    stored = ledger.entry(args.index)
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

    ledger = context.ledger(args)
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
        human = f"fsck: DAMAGED at {exc.where}: {exc.message}"
        out.error(exc.code, exc.message, human, where=exc.where)
        return EXIT_DAMAGED
    if show:
        print(file=sys.stderr)
    out.emit(
        f"fsck OK: {report.entries} entries, {report.nodes} tree nodes, "
        f"{report.checkpoints} checkpoints, {report.documents} documents, "
        f"{report.certificates} certificates (tables match the replay); "
        f"root {b64encode(report.root)}",
        {
            "ok": True,
            "entries": report.entries,
            "nodes": report.nodes,
            "checkpoints": report.checkpoints,
            "documents": report.documents,
            "certificates": report.certificates,
            "root": b64encode(report.root),
        },
    )
    return 0


def cmd_reindex(args: argparse.Namespace, out: Output) -> int:
    ledger = context.ledger(args)
    try:
        report = ledger.reindex()
    finally:
        ledger.close()
    out.emit(
        f"reindexed {report.entries} entries: {report.certificates} certificates "
        f"in {report.seconds:.1f} s",
        {"entries": report.entries, "certificates": report.certificates, "seconds": report.seconds},
    )
    return 0


def cmd_keygen(args: argparse.Namespace, out: Output) -> int:
    base = Path(args.out)
    key = SigningKey.generate(os.urandom(32))
    private_path = base.with_name(base.name + ".key")
    public_path = base.with_name(base.name + ".pub.pem")
    source = PassphraseSource(None, args.passphrase_file, "--passphrase-file", prompt=True)
    passphrase = source.for_new_key(private_path, unencrypted=args.no_passphrase)
    keyfile.write_private_key(private_path, key, passphrase)
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


def register(commands: Commands) -> None:
    p = commands.add("init", cmd_init, "create the data dir, database and log key")
    p.add_argument(
        "--origin", help="log origin / checkpoint key name (default derived from the key)"
    )
    p.add_argument(
        "--no-passphrase",
        action="store_true",
        help="store the log key unencrypted (if no passphrase file or variable gives one)",
    )
    commands.add("log-key", cmd_log_key, "print the log's verifier key string and public key PEM")
    p = commands.add(
        "append", cmd_append, "append DSSE envelope files ('-' for stdin) as one batch"
    )
    p.add_argument(
        "envelopes", nargs="+", metavar="ENVELOPE.json", help="signed statements ('-': stdin)"
    )
    p = commands.add("checkpoint", cmd_checkpoint, "print the latest (or --size) signed checkpoint")
    p.add_argument("--size", type=int, help="a signed tree size")
    p = commands.add("proof", cmd_proof, "print a C2SP tlog-proof@v1 inclusion proof")
    p.add_argument("--index", type=int, required=True, help="the entry's index in the log")
    p.add_argument("--size", type=int, help="signed tree size (default: latest)")
    p = commands.add(
        "consistency",
        cmd_consistency,
        "print a consistency proof between two signed sizes (base64, one per line)",
    )
    p.add_argument("--from", dest="first", type=int, required=True, help="the older signed size")
    p.add_argument("--to", dest="second", type=int, required=True, help="the newer signed size")
    p = commands.add("entry", cmd_entry, "show entry N (--raw: leaf data bytes exactly as hashed)")
    p.add_argument("index", type=int, help="the entry's index in the log")
    p.add_argument("--raw", action="store_true", help="write the leaf data bytes exactly as hashed")
    commands.add("fsck", cmd_fsck, "re-check everything stored; exit 3 on damage")
    commands.add(
        "reindex",
        cmd_reindex,
        "rebuild the certificate tables (status, history, digest index) from the log alone",
    )
    p = commands.add("keygen", cmd_keygen, "write NAME.key (PKCS#8, mode 0600) and NAME.pub.pem")
    p.add_argument("--out", required=True, metavar="NAME", help="path and name, without suffix")
    p.add_argument(
        "--passphrase-file",
        type=Path,
        metavar="FILE",
        help=f"file holding the new key's passphrase (default: {keyfile.PASSPHRASE_ENV}, "
        "then a prompt)",
    )
    p.add_argument(
        "--no-passphrase",
        action="store_true",
        help="store the key unencrypted (if no passphrase file or variable gives one)",
    )
    commands.add("demo", cmd_demo, "run the end-to-end demo in a fresh ledger")
