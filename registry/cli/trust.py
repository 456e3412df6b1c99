"""``qiledger`` commands for the trust chain: bodies, accreditations, issuers, keys.

Each write command builds a statement, signs it with the named key file (the
log key for trust anchors, a body key for accreditations, an issuer or body key
for key events) and appends it; the log refuses it with the failed link named
if the trust rules say no.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from registry.cli import context
from registry.cli.context import KeyOption
from registry.cli.output import Output
from registry.cli.parsing import Commands
from registry.errors import NotFoundError
from registry.keys import keyfile
from registry.keys.keyfile import KeyRole
from verifier.errors import MalformedError
from verifier.keys import PublicKey, SigningKey

if TYPE_CHECKING:
    from registry.ledger import Ledger
    from verifier.statement import StatementBuilder

BODY_KEY = KeyOption("--body-key", KeyRole.BODY)
SIGNING_KEY = KeyOption("--signing-key", KeyRole.ISSUER)
"""An issuer's key usually; a body key signing for its issuer takes its
passphrase from --signing-key-passphrase-file or QILEDGER_KEY_PASSPHRASE."""
SIGN_KEY = KeyOption("--key", None)


def _public_key(path: str) -> PublicKey:
    return keyfile.read_public_key(Path(path))


def _parsed(parse: Callable[[Any], Any], text: str, option: str) -> Any:
    """A date or time option as the statement's typed value (the parser's check,
    naming the option)."""
    try:
        return parse(text)
    except MalformedError as exc:
        raise MalformedError(f"{option} {exc.message}") from None


def _logged(
    out: Output, what: str, ledger: Ledger, built: StatementBuilder, key: SigningKey
) -> int:
    accepted = ledger.submit_statement(built, key)
    verb = "already logged" if accepted.duplicate else "logged"
    out.emit(
        f"{what}: {verb} at index {accepted.index}",
        {"index": accepted.index, "duplicate": accepted.duplicate, "statement": built.to_json()},
    )
    return 0


def cmd_body_add(args: argparse.Namespace, out: Output) -> int:
    from verifier import statement

    ledger = context.ledger(args)
    body_id: str = args.id or args.name
    built = statement.BodyAdd(
        body_id=body_id, name=args.name, country=args.country, public_key=_public_key(args.key)
    )
    return _logged(out, f"trust anchor {body_id}", ledger, built, ledger.load_log_key().key)


def cmd_body_remove(args: argparse.Namespace, out: Output) -> int:
    from verifier import statement

    ledger = context.ledger(args)
    built = statement.BodyRemove(body_id=args.body_id, reason=args.reason)
    return _logged(
        out, f"trust anchor {args.body_id} removed", ledger, built, ledger.load_log_key().key
    )


def cmd_body_list(args: argparse.Namespace, out: Output) -> int:
    state = context.ledger(args).trust_state()
    rows = [
        {
            "body_id": b.body_id,
            "name": b.name,
            "country": b.country,
            "key_id": b.key.key_id,
            "added_at": b.added_at,
            "removed_at": b.removed_at,
        }
        for b in state.bodies.values()
    ]
    human = "\n".join(
        f"{b.body_id:12} {b.country}  {b.name}  key {b.key.key_id[:16]}…  "
        + (f"REMOVED {b.removed_at}" if b.removed_at else f"since {b.added_at}")
        for b in state.bodies.values()
    )
    out.emit(human or "(no trusted accreditation bodies)", rows)
    return 0


def cmd_accredit_grant(args: argparse.Namespace, out: Output) -> int:
    from verifier import statement

    ledger = context.ledger(args)
    built = statement.AccreditationGrant(
        body_id=args.body,
        issuer_id=args.issuer,
        issuer_name=args.issuer_name,
        issuer_kind=args.issuer_kind,
        public_keys=tuple(_public_key(p) for p in args.issuer_key),
        accreditation_number=args.number,
        standard=args.standard,
        scope=args.scope,
        covers=tuple(args.covers),
        valid_from=_parsed(statement.parse_date, args.valid_from, "--valid-from"),
        valid_until=_parsed(statement.parse_date, args.valid_until, "--valid-until"),
    )
    return _logged(
        out,
        f"accreditation {args.number} of {args.issuer}",
        ledger,
        built,
        BODY_KEY.load(args),
    )


def cmd_accredit_event(args: argparse.Namespace, out: Output) -> int:
    from verifier import statement

    ledger = context.ledger(args)
    built = statement.ACCREDITATION_CHANGES[args.action](
        body_id=args.body,
        issuer_id=args.issuer,
        accreditation_number=args.number,
        reason=args.reason,
    )
    return _logged(
        out,
        f"accreditation {args.number} {args.action}",
        ledger,
        built,
        BODY_KEY.load(args),
    )


def cmd_key_add(args: argparse.Namespace, out: Output) -> int:
    from verifier import statement

    ledger = context.ledger(args)
    built = statement.IssuerKeyAdd(issuer_id=args.issuer, public_key=_public_key(args.new_key))
    return _logged(out, f"key of {args.issuer} added", ledger, built, SIGNING_KEY.load(args))


def cmd_key_revoke(args: argparse.Namespace, out: Output) -> int:
    from verifier import statement

    ledger = context.ledger(args)
    key_id = args.key_id or keyfile.read_public_key(Path(args.revoke)).key_id
    built = statement.IssuerKeyRevoke(
        issuer_id=args.issuer,
        key_id=key_id,
        reason=args.reason,
        compromised_at=(
            _parsed(statement.parse_instant, args.compromised_at, "--compromised-at")
            if args.compromised_at
            else None
        ),
    )
    return _logged(
        out,
        f"key {key_id[:16]}… of {args.issuer} revoked",
        ledger,
        built,
        SIGNING_KEY.load(args),
    )


def cmd_issuers(args: argparse.Namespace, out: Output) -> int:
    from registry.reports import issuer_report

    state = context.ledger(args).trust_state()
    rows = [issuer_report(state, i) for i in state.issuers.values()]
    human = "\n".join(
        f"{r['issuer_id']:16} {r['kind']:22} {r['name']}  "
        + ", ".join(f"{a['number']} ({a['body_id']}): {a['status']}" for a in r["accreditations"])
        for r in rows
    )
    out.emit(human or "(no accredited issuers)", rows)
    return 0


def cmd_issuer(args: argparse.Namespace, out: Output) -> int:
    from registry.reports import issuer_report

    state = context.ledger(args).trust_state()
    issuer = state.issuers.get(args.issuer_id)
    if issuer is None:
        raise NotFoundError(f"no issuer {args.issuer_id} in this log")
    summary = issuer_report(state, issuer)
    lines = [f"{issuer.issuer_id}: {issuer.name} ({issuer.kind})", "accreditations:"]
    for a in summary["accreditations"]:
        lines.append(
            f"  {a['number']} from {a['body_id']} — {a['standard']}, covers "
            f"{', '.join(a['covers'])}, {a['valid_from']}..{a['valid_until']}: "
            f"{a['status']}{'' if a['body_trusted'] else ' (body no longer trusted)'}"
        )
        lines += [f"    {h['logged_at']}  {h['status']}  {h['reason']}" for h in a["history"]]
    lines.append("keys:")
    for k in summary["keys"]:
        state_text = "active" if not k["revoked_at"] else f"revoked {k['revoked_at']}"
        if k["compromised_at"]:
            state_text += f", compromised since {k['compromised_at']}"
        lines.append(f"  {k['key_id']}  added {k['added_at']}  {state_text}")
    out.emit("\n".join(lines), summary)
    return 0


def cmd_sign(args: argparse.Namespace, out: Output) -> int:
    """Sign a statement file offline and print the envelope (nothing is logged)."""
    from datetime import UTC, datetime

    from verifier import dsse, jcs, statement
    from verifier.entry import format_time

    try:
        fields = json.loads(Path(args.statement).read_bytes())
    except (OSError, ValueError) as exc:
        raise MalformedError(f"cannot read statement {args.statement}: {exc}") from None
    if isinstance(fields, dict):
        fields.setdefault("signed_at", format_time(datetime.now(UTC)))
    envelope = dsse.sign(statement.encode(fields), SIGN_KEY.load(args))
    sys.stdout.buffer.write(jcs.canonical_bytes(envelope.to_json()) + b"\n")
    return 0


def register(commands: Commands) -> None:
    body = commands.group("body", "trust anchors: accreditation bodies")
    p = body.add("add", cmd_body_add, "trust an accreditation body (signed with the log key)")
    p.add_argument("--name", required=True, help="e.g. CNAS")
    p.add_argument("--id", help="body id (default: the name)")
    p.add_argument("--country", required=True, help="ISO 3166-1 alpha-2, e.g. CN")
    p.add_argument("--key", required=True, metavar="BODY.pub.pem", help="the body's public key")
    p = body.add("remove", cmd_body_remove, "stop trusting a body (signed with the log key)")
    p.add_argument("body_id", help="the body's id")
    p.add_argument("--reason", required=True, help="why, as free text (logged)")
    body.add("list", cmd_body_list, "list trust anchors")

    accredit = commands.group("accredit", "accreditation statements signed by a body")
    p = accredit.add("grant", cmd_accredit_grant, "accredit an issuer")
    BODY_KEY.add_to(p, metavar="BODY.key", help="the accrediting body's private key")
    p.add_argument("--body", required=True, help="body id")
    p.add_argument("--issuer", required=True, help="issuer id, e.g. LAB-1")
    p.add_argument("--issuer-name", required=True, help="the issuer's name")
    p.add_argument(
        "--issuer-kind",
        required=True,
        choices=["calibration_laboratory", "certification_body"],
        help="what the issuer is",
    )
    p.add_argument(
        "--issuer-key",
        required=True,
        action="append",
        metavar="ISSUER.pub.pem",
        help="a public key of the issuer (repeat for more)",
    )
    p.add_argument("--number", required=True, help="accreditation number")
    p.add_argument("--standard", required=True, help="e.g. ISO/IEC 17025:2017")
    p.add_argument("--scope", required=True, help="scope as free text")
    p.add_argument(
        "--covers",
        required=True,
        action="append",
        help="certificate kind covered: dcc, management_system, product, person",
    )
    p.add_argument("--valid-from", required=True, metavar="YYYY-MM-DD", help="first valid day")
    p.add_argument("--valid-until", required=True, metavar="YYYY-MM-DD", help="last valid day")
    for action in ("suspend", "restore", "withdraw"):
        p = accredit.add(action, cmd_accredit_event, f"{action} an accreditation")
        BODY_KEY.add_to(p, metavar="BODY.key", help="the accrediting body's private key")
        p.add_argument("--body", required=True, help="body id")
        p.add_argument("--issuer", required=True, help="issuer id")
        p.add_argument("--number", required=True, help="accreditation number")
        p.add_argument("--reason", required=True, help="why, as free text (logged)")
        p.set_defaults(action=action)

    key = commands.group("key", "issuer key events")
    p = key.add(
        "add",
        cmd_key_add,
        "add an issuer key (signed by an active issuer key or the accrediting body)",
    )
    p.add_argument("--issuer", required=True, help="issuer id")
    SIGNING_KEY.add_to(p, metavar="KEY", help="an active key of the issuer, or the body's key")
    p.add_argument("--new-key", required=True, metavar="NEW.pub.pem", help="the key to add")
    p = key.add("revoke", cmd_key_revoke, "revoke an issuer key")
    p.add_argument("--issuer", required=True, help="issuer id")
    SIGNING_KEY.add_to(p, metavar="KEY", help="an active key of the issuer, or the body's key")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--revoke", metavar="OLD.pub.pem", help="the public key to revoke")
    target.add_argument("--key-id", help="hex key id of the key to revoke")
    p.add_argument("--reason", required=True, help="why, as free text (logged)")
    p.add_argument(
        "--compromised-at",
        metavar="RFC3339",
        help="statements logged under the key from this time on become invalid",
    )

    commands.add("issuers", cmd_issuers, "list accredited issuers")
    p = commands.add("issuer", cmd_issuer, "an issuer's accreditation history and keys")
    p.add_argument("issuer_id", help="issuer id, e.g. LAB-1")
    p = commands.add(
        "sign", cmd_sign, "sign a statement JSON file with a key; print the DSSE envelope"
    )
    p.add_argument("statement", metavar="STATEMENT.json", help="the statement to sign")
    SIGN_KEY.add_to(p, metavar="KEY", help="the private key to sign with")
