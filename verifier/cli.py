"""``qiverify``: check QI Ledger evidence, trusting only the log's key.

Offline first: every command checks what it is given with nothing but the log's
verifier key; the network is used only when asked (``mark --online URL``,
``document --registry URL``), and then everything the registry sends is checked
against that key before it is believed.

Example::

    qiledger log-key | head -n 1 > log.vkey
    qiverify mark mark.png --log-key log.vkey                 # the QR on a certificate
    qiverify mark HTTPS://REGISTRY.EXAMPLE/M/2GQ... --log-key log.vkey \\
        --online https://registry.example
    qiverify document dcc.xml --registry https://registry.example --log-key log.vkey
    qiledger entry 7 --raw > entry7.bin
    qiledger proof --index 7 > entry7.tlog-proof
    qiverify inclusion entry7.tlog-proof entry7.bin --log-key log.vkey
    qiverify consistency --old old.checkpoint --new new.checkpoint \\
        --proof old-new.proof --log-key log.vkey

Exit codes (every command):

- 0 authentic and valid (``mark`` offline: the mark is authentic; its live status
  was not asked for);
- 1 authentic but not valid: suspended, withdrawn, superseded or expired;
- 2 not authentic or not found: a signature, proof or checkpoint does not verify, a
  forged, truncated or foreign-log mark, an image with no, two or a non-mark QR
  code, a certificate or document the registry does not hold, a registry whose
  log contradicts itself or an earlier checkpoint;
- 3 could not check: the registry is unreachable or failed, a local file cannot be
  read, the log key is malformed, or the command line is wrong (usage errors exit
  3, not argparse's 2, so that 2 always means "not authentic").

``--json`` prints one JSON object instead: ``verdict``, ``exit_code``, ``meaning``,
the facts checked, and ``checks`` (each ``name``, ``result`` ``ok`` / ``failed`` /
``not checked``, and ``detail`` saying why).

Online (``document``, ``mark --online``) the registry is asked for the certificate's
status and history, its latest checkpoint (its signature verified with the log key),
each history entry with its inclusion proof under that checkpoint (the entry must be
the statement the registry says, the first one the issue naming the document's
SHA-256, and for a mark the entry the mark names), and then — for logs of at most
``--max-replay`` entries — every entry bundle (``/tile/entries/…``, proven to make
the checkpoint's tree), replayed through :mod:`verifier.trust`: the issuer's
signature, its key and accreditation at log time, and the status, which must be the
one the registry claimed. For a larger log those three are reported "not checked"
and the status is the registry's (no API gives the indices of just the trust
statements a certificate depends on).

``document`` and ``mark --online`` remember the newest checkpoint they verified of
each log in a small JSON state file (``--state``; default
``$XDG_STATE_HOME/qiverify/checkpoints.json``) and require every later checkpoint
to be consistent with it, so a registry cannot show this user a forked history.

``--witness VKEY`` (repeatable) and ``--min-witnesses K`` (``checkpoint``, ``mark``,
``document``) are a witness policy: the checkpoint must carry valid C2SP
tlog-cosignatures by at least K of those witnesses (default: all given), else exit
2. Online the checkpoint is then read from ``/checkpoint``, which carries them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, NoReturn

from verifier import audit_cli, monitor_cli, witness_cli
from verifier.errors import QILedgerError
from verifier.local_input import is_file, read_input
from verifier.qr_image import qr_texts
from verifier.verdict import EXIT_UNCHECKED, MEANING, Report, Stop

# Each command imports the checking modules it uses when it runs: the keys bring
# the cryptography libraries, online checks the HTTP client and the certification
# schemas, so at the top they would make --help (and every command) start slowly
# (tests/test_cli_startup.py).
if TYPE_CHECKING:
    from verifier.cosignature import CosignatureVerifier
    from verifier.note import NoteVerifier
    from verifier.online import Registry

DEFAULT_MAX_REPLAY = 100_000
"""Entries ``document`` downloads to replay the trust rules over the whole log."""


# --- the log key and the registry, from the command line ------------------------------


def _log_key(value: str) -> NoteVerifier:
    """A verifier-key string, or a file whose first line is one (else exit 3)."""
    from verifier.note import NoteVerifier

    try:
        if "+" not in value or is_file(value):
            first = read_input(value).decode("utf-8", "replace").split("\n", 1)[0]
            return NoteVerifier.parse(first)
        return NoteVerifier.parse(value)
    except QILedgerError as exc:
        raise Stop(EXIT_UNCHECKED, f"the log key {value!r} is not usable: {exc.message}") from None


def _witness_policy(args: argparse.Namespace) -> tuple[list[CosignatureVerifier], int]:
    """The trusted witness keys (strings or files) and how many must cosign (exit 3
    if a key is malformed or the count cannot be met)."""
    from verifier.cosignature import CosignatureVerifier

    witnesses = []
    for value in args.witness or ():
        try:
            if "+" not in value or is_file(value):
                value = read_input(value).decode("utf-8", "replace").split("\n", 1)[0]
            witnesses.append(CosignatureVerifier.parse(value))
        except QILedgerError as exc:
            raise Stop(
                EXIT_UNCHECKED, f"--witness {value!r} is not usable: {exc.message}"
            ) from None
    count = len(witnesses) if args.min_witnesses is None else args.min_witnesses
    if not 0 <= count <= len(witnesses):
        raise Stop(EXIT_UNCHECKED, f"--min-witnesses {count} needs as many --witness keys")
    return witnesses, count


def _registry(url: str) -> Registry:
    from verifier.online import Registry

    try:
        return Registry(url)
    except QILedgerError as exc:
        raise Stop(EXIT_UNCHECKED, exc.message) from None


# --- the single-evidence commands -------------------------------------------------------


def cmd_checkpoint(args: argparse.Namespace, report: Report, now: datetime) -> None:
    from verifier import checkpoint
    from verifier.encoding import b64encode

    key, data = _log_key(args.log_key), read_input(args.checkpoint)
    witnesses, min_witnesses = _witness_policy(args)
    cp = report.run("checkpoint signature", lambda: checkpoint.verify(data, key)).checkpoint
    report.facts.update(log=cp.origin, tree_size=cp.size)
    if witnesses:
        from verifier.online_check import check_witnesses

        check_witnesses(report, data, key, witnesses, min_witnesses, now)
        names = ", ".join(report.facts["witnesses"]) or "none"
        report.lines.append(
            f"OK: cosigned by {len(report.facts['witnesses'])} of the "
            f"{len(witnesses)} trusted witnesses ({names})"
        )
    report.lines.append(f"OK: checkpoint of {cp.origin}, size {cp.size}, root {b64encode(cp.root)}")


def cmd_inclusion(args: argparse.Namespace, report: Report, now: datetime) -> None:
    from verifier import proof as tlog_proof

    key, proof_data, leaf_data = (
        _log_key(args.log_key),
        read_input(args.proof),
        read_input(args.entry),
    )
    signed = report.run("inclusion proof", lambda: tlog_proof.verify(proof_data, leaf_data, key))
    index = tlog_proof.TlogProof.from_bytes(proof_data).index
    cp = signed.checkpoint
    report.facts.update(log=cp.origin, tree_size=cp.size, index=index)
    report.lines.append(f"OK: entry {index} is included in {cp.origin} at size {cp.size}")


def cmd_consistency(args: argparse.Namespace, report: Report, now: datetime) -> None:
    from verifier import checkpoint, merkle
    from verifier import proof as tlog_proof

    key = _log_key(args.log_key)
    old_data, new_data, proof_data = (
        read_input(args.old),
        read_input(args.new),
        read_input(args.proof),
    )
    old = report.run("old checkpoint", lambda: checkpoint.verify(old_data, key)).checkpoint
    new = report.run("new checkpoint", lambda: checkpoint.verify(new_data, key)).checkpoint
    if old.origin != new.origin:
        report.fail("consistency", "the two checkpoints are from different logs")

    def consistent() -> None:
        hashes = tlog_proof.parse_consistency(proof_data)
        merkle.verify_consistency(old.size, new.size, hashes, old.root, new.root)

    report.run("consistency", consistent, f"size {new.size} extends size {old.size}")
    report.facts.update(log=new.origin, old_size=old.size, new_size=new.size)
    report.lines.append(f"OK: {new.origin} at size {new.size} extends size {old.size}")


def cmd_envelope(args: argparse.Namespace, report: Report, now: datetime) -> None:
    from verifier import dsse, statement
    from verifier.keys import PublicKey

    key_data, envelope_data = read_input(args.key), read_input(args.envelope)
    try:
        key = PublicKey.from_pem(key_data)
    except QILedgerError as exc:
        raise Stop(EXIT_UNCHECKED, f"{args.key}: {exc.message}") from None
    verified = report.run(
        "envelope signature",
        lambda: dsse.verify(dsse.parse(envelope_data), {key.key_id: key}),
        f"signed by {key.key_id}",
    )
    stmt = report.run("statement", lambda: statement.parse(verified.payload))
    report.facts.update(type=stmt.type, key_id=key.key_id, statement=stmt.fields)
    report.lines.append(
        f"OK: {stmt.type} signed by {key.key_id}\n"
        + json.dumps(stmt.fields, indent=2, ensure_ascii=False)
    )


# --- marks -----------------------------------------------------------------------------


def _mark_token(value: str, report: Report) -> str:
    """The token from an image, a mark URL or the token itself."""
    from verifier import mark

    if is_file(value):
        texts = qr_texts(value)
        if not texts:
            report.fail("QR code", f"no QR code found in {value}")
        if len(texts) > 1:
            report.fail("QR code", f"{len(texts)} QR codes in {value}: give one mark at a time")
        text = texts[0]
        report.facts["qr_text"] = text
        source = "the QR code"
    elif "://" not in value and ("." in value or os.sep in value):
        # Tokens are base32 (no dots, no slashes): this was meant to be a file.
        raise Stop(EXIT_UNCHECKED, f"cannot read {value}: no such file")
    else:
        text, source = value, "the argument"
    if "/" not in text:
        return text  # a bare token; mark.verify refuses anything else
    try:
        token = mark.token_from_url(text)
    except QILedgerError:
        report.fail("mark URL", f"{source} is not a QI Ledger mark URL: {text[:120]!r}")
    report.ok("mark URL", f"{source} is a mark URL")
    return token


def _epoch_text(seconds: int) -> str:
    try:
        return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):  # signed, but beyond any calendar
        return f"{seconds} seconds since 1970"


def cmd_mark(args: argparse.Namespace, report: Report, now: datetime) -> None:
    from verifier import mark

    key = _log_key(args.log_key)
    witnesses, min_witnesses = _witness_policy(args)
    registry = _registry(args.online) if args.online else None
    token = _mark_token(args.mark, report)
    claims = report.run(
        "mark signature",
        lambda: mark.verify(token, key),
        f"COSE_Sign1 signed by the key of log {key.name}",
    )
    report.facts.update(
        certificate_id=claims.certificate_id,
        document_sha256=claims.document_sha256.hex(),
        log_index=claims.index,
        issued_at=_epoch_text(claims.issued_at),
        log=key.name,
    )
    if registry is None:
        report.skip("live status", "offline: pass --online URL for status, proof and history")
        report.note = "the mark is the log's; its live status was not checked (offline)"
        return
    from verifier.checkpoint_state import state_path
    from verifier.online_check import check_online

    check_online(
        report,
        registry,
        key,
        claims.certificate_id,
        claims.document_sha256.hex(),
        state_path(args.state),
        now,
        mark_index=claims.index,
        max_replay=args.max_replay,
        witnesses=witnesses,
        min_witnesses=min_witnesses,
    )


# --- documents ---------------------------------------------------------------------------


def cmd_document(args: argparse.Namespace, report: Report, now: datetime) -> None:
    from verifier.checkpoint_state import state_path
    from verifier.online_check import check_online

    key = _log_key(args.log_key)
    witnesses, min_witnesses = _witness_policy(args)
    registry = _registry(args.registry)
    digest = hashlib.sha256(read_input(args.file)).hexdigest()
    report.facts.update(document_sha256=digest, log=key.name)
    found = report.run(
        "lookup by digest",
        lambda: registry.certificates_with_digest(digest),
        lambda value: f"{len(value.get('certificates') or [])} certificate(s) for this digest",
    )
    ids: list[str] = []
    for item in found.get("certificates") or []:
        if isinstance(item, dict) and isinstance(item.get("certificate_id"), str):
            ids.append(item["certificate_id"])
    if not ids:
        report.fail("registered", f"the registry holds no certificate for SHA-256 {digest}")
    # The newest certificate about this document is the one a reader relies on.
    report.facts["certificates"] = ids
    check_online(
        report,
        registry,
        key,
        ids[-1],
        digest,
        state_path(args.state),
        now,
        mark_index=None,
        max_replay=args.max_replay,
        witnesses=witnesses,
        min_witnesses=min_witnesses,
    )


# --- the command line ---------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # A wrong command line checked nothing: exit 3, never 2 ("not authentic").
        self.print_usage(sys.stderr)
        self.exit(EXIT_UNCHECKED, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="qiverify",
        description="Check QI Ledger marks, documents, proofs and checkpoints against the "
        "log's key.",
        epilog="Exit codes: 0 authentic and valid, 1 authentic but not valid, "
        "2 not authentic or not found, 3 could not check (also usage errors).",
    )
    common = _Parser(add_help=False)
    common.add_argument("--json", action="store_true", help="print one JSON object")
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )
    log_key_help = "the log's verifier key string, or a file whose first line is it"
    state_help = "checkpoint state file (default: $XDG_STATE_HOME/qiverify/checkpoints.json)"
    witness = _Parser(add_help=False)  # the witness policy (C2SP tlog-cosignature)
    witness.add_argument(
        "--witness",
        action="append",
        metavar="VKEY",
        help="a trusted witness's cosignature verifier key string, or a file whose first "
        "line is it (repeatable)",
    )
    witness.add_argument(
        "--min-witnesses",
        type=int,
        metavar="K",
        help="refuse a checkpoint cosigned by fewer than K of them (default: all given)",
    )

    p = sub.add_parser(
        "mark", parents=[common, witness], help="verify a QR mark (image, URL or token)"
    )
    p.add_argument("mark", metavar="PNG|URL|TOKEN")
    p.add_argument("--log-key", required=True, help=log_key_help)
    p.add_argument("--online", metavar="URL", help="also ask this registry: status and proofs")
    p.add_argument("--state", metavar="FILE", help=state_help)
    p.add_argument(
        "--max-replay",
        type=int,
        default=DEFAULT_MAX_REPLAY,
        metavar="N",
        help="online: replay the trust rules over logs of at most N entries (%(default)s)",
    )
    p.set_defaults(func=cmd_mark)

    p = sub.add_parser(
        "document", parents=[common, witness], help="verify a certificate document file"
    )
    p.add_argument("file", metavar="FILE")
    p.add_argument("--registry", required=True, metavar="URL", help="the registry's base URL")
    p.add_argument("--log-key", required=True, help=log_key_help)
    p.add_argument("--state", metavar="FILE", help=state_help)
    p.add_argument(
        "--max-replay",
        type=int,
        default=DEFAULT_MAX_REPLAY,
        metavar="N",
        help="replay the trust rules over logs of at most N entries (default %(default)s)",
    )
    p.set_defaults(func=cmd_document)

    p = sub.add_parser("checkpoint", parents=[common, witness], help="verify a signed checkpoint")
    p.add_argument("checkpoint", metavar="CHECKPOINT")
    p.add_argument("--log-key", required=True, help=log_key_help)
    p.set_defaults(func=cmd_checkpoint)

    p = sub.add_parser(
        "inclusion", parents=[common], help="verify a tlog-proof for an entry's leaf data"
    )
    p.add_argument("proof", metavar="PROOF.tlog-proof")
    p.add_argument("entry", metavar="ENTRY", help="leaf data (qiledger entry N --raw)")
    p.add_argument("--log-key", required=True, help=log_key_help)
    p.set_defaults(func=cmd_inclusion)

    p = sub.add_parser(
        "consistency", parents=[common], help="verify that a newer checkpoint extends an older one"
    )
    p.add_argument("--old", required=True, metavar="CHECKPOINT")
    p.add_argument("--new", required=True, metavar="CHECKPOINT")
    p.add_argument("--proof", required=True, help="base64 hashes, one per line")
    p.add_argument("--log-key", required=True, help=log_key_help)
    p.set_defaults(func=cmd_consistency)

    p = sub.add_parser(
        "envelope", parents=[common], help="verify a DSSE statement envelope against a public key"
    )
    p.add_argument("envelope", metavar="ENVELOPE.json")
    p.add_argument("--key", required=True, metavar="PUBKEY.pem")
    p.set_defaults(func=cmd_envelope)
    witness_cli.add_parser(sub, common)
    audit_cli.add_parser(sub, common)
    monitor_cli.add_parser(sub, common)
    return parser


def main(argv: Sequence[str] | None = None, *, now: datetime | None = None) -> int:
    """Run ``qiverify``; ``now`` (default: the system clock) dates status checks."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (3): returned, as every code is
        return exc.code if isinstance(exc.code, int) else EXIT_UNCHECKED
    report = Report(args.command)
    failure = ""
    try:
        args.func(args, report, now or datetime.now(UTC))
    except Stop as stop:
        report.code, failure = stop.code, stop.message
    except KeyboardInterrupt:
        return 130
    if args.json:
        if failure:
            report.facts["error"] = failure
        print(json.dumps(report.to_json(), indent=2, ensure_ascii=False))
    elif report.lines and not failure:
        print("\n".join(report.lines))
    elif args.command in ("mark", "document"):
        print(report.to_text())
    if failure and not args.json:
        print(f"qiverify: {MEANING[report.code].upper()}: {failure}", file=sys.stderr)
    return report.code


if __name__ == "__main__":
    sys.exit(main())
