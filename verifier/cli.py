"""``qiverify``: check QI Ledger evidence offline, trusting only the log's key.

Example::

    qiledger log-key | head -n 1 > log.vkey
    qiledger entry 7 --raw > entry7.bin
    qiledger proof --index 7 > entry7.tlog-proof
    qiverify inclusion entry7.tlog-proof entry7.bin --log-key log.vkey
    qiverify consistency --old old.checkpoint --new new.checkpoint \\
        --proof old-new.proof --log-key log.vkey

Exit codes: 0 verified, 1 verification failed (one line on stderr says why),
2 bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from verifier import checkpoint, dsse, merkle, statement
from verifier import proof as tlog_proof
from verifier.encoding import b64encode
from verifier.errors import MalformedError, QILedgerError
from verifier.keys import PublicKey
from verifier.note import NoteVerifier

MAX_INPUT = 64 << 20


def _read(path: str) -> bytes:
    try:
        if path == "-":
            return sys.stdin.buffer.read(MAX_INPUT + 1)
        with Path(path).open("rb") as handle:
            data = handle.read(MAX_INPUT + 1)
    except OSError as exc:
        raise MalformedError(f"cannot read {path}: {exc.strerror}") from None
    if len(data) > MAX_INPUT:
        raise MalformedError(f"{path} is larger than {MAX_INPUT} bytes")
    return data


def _log_key(value: str) -> NoteVerifier:
    """A verifier-key string, or a file whose first line is one."""
    if "+" not in value or Path(value).is_file():
        first = _read(value).decode("utf-8", "replace").split("\n", 1)[0]
        return NoteVerifier.parse(first)
    return NoteVerifier.parse(value)


def cmd_checkpoint(args: argparse.Namespace) -> str:
    signed = checkpoint.verify(_read(args.checkpoint), _log_key(args.log_key))
    cp = signed.checkpoint
    return f"OK: checkpoint of {cp.origin}, size {cp.size}, root {b64encode(cp.root)}"


def cmd_inclusion(args: argparse.Namespace) -> str:
    signed = tlog_proof.verify(_read(args.proof), _read(args.entry), _log_key(args.log_key))
    index = tlog_proof.TlogProof.from_bytes(_read(args.proof)).index
    cp = signed.checkpoint
    return f"OK: entry {index} is included in {cp.origin} at size {cp.size}"


def cmd_consistency(args: argparse.Namespace) -> str:
    key = _log_key(args.log_key)
    old = checkpoint.verify(_read(args.old), key).checkpoint
    new = checkpoint.verify(_read(args.new), key).checkpoint
    if old.origin != new.origin:
        raise MalformedError("the two checkpoints are from different logs")
    hashes = tlog_proof.parse_consistency(_read(args.proof))
    merkle.verify_consistency(old.size, new.size, hashes, old.root, new.root)
    return f"OK: {new.origin} at size {new.size} extends size {old.size}"


def cmd_envelope(args: argparse.Namespace) -> str:
    key = PublicKey.from_pem(_read(args.key))
    verified = dsse.verify(dsse.parse(_read(args.envelope)), {key.key_id: key})
    stmt = statement.parse(verified.payload)
    return f"OK: {stmt.type} signed by {key.key_id}\n" + json.dumps(
        stmt.fields, indent=2, ensure_ascii=False
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qiverify", description="Check QI Ledger proofs, checkpoints and envelopes offline."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    log_key_help = "the log's verifier key string, or a file whose first line is it"

    p = sub.add_parser("checkpoint", help="verify a signed checkpoint")
    p.add_argument("checkpoint", metavar="CHECKPOINT")
    p.add_argument("--log-key", required=True, help=log_key_help)
    p.set_defaults(func=cmd_checkpoint)

    p = sub.add_parser("inclusion", help="verify a tlog-proof for an entry's leaf data")
    p.add_argument("proof", metavar="PROOF.tlog-proof")
    p.add_argument("entry", metavar="ENTRY", help="leaf data (qiledger entry N --raw)")
    p.add_argument("--log-key", required=True, help=log_key_help)
    p.set_defaults(func=cmd_inclusion)

    p = sub.add_parser("consistency", help="verify that a newer checkpoint extends an older one")
    p.add_argument("--old", required=True, metavar="CHECKPOINT")
    p.add_argument("--new", required=True, metavar="CHECKPOINT")
    p.add_argument("--proof", required=True, help="base64 hashes, one per line")
    p.add_argument("--log-key", required=True, help=log_key_help)
    p.set_defaults(func=cmd_consistency)

    p = sub.add_parser("envelope", help="verify a DSSE statement envelope against a public key")
    p.add_argument("envelope", metavar="ENVELOPE.json")
    p.add_argument("--key", required=True, metavar="PUBKEY.pem")
    p.set_defaults(func=cmd_envelope)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        print(args.func(args))
    except QILedgerError as exc:
        print(f"qiverify: FAILED ({exc.code}): {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
