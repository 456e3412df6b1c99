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
from typing import Any

from registry.cli.output import Output
from registry.config import Settings
from registry.errors import NotFoundError
from registry.keys import keyfile
from registry.ledger import Ledger
from registry.reports import issuer_report
from verifier.encoding import b64encode
from verifier.errors import MalformedError
from verifier.keys import SigningKey

Command = Callable[[argparse.Namespace, Output], int]


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env(args.data_dir, args.database_url, args.log_key, args.demo)


def _signing_key(args: argparse.Namespace, path: str) -> SigningKey:
    return keyfile.read_private_key(Path(path), keyfile.passphrase_from_env(), demo=args.demo)


def _public_key_b64(path: str) -> str:
    return b64encode(keyfile.read_public_key(Path(path)).raw)


def _logged(out: Output, what: str, ledger: Ledger, fields: dict[str, Any], key: SigningKey) -> int:
    accepted = ledger.submit_statement(fields, key)
    verb = "already logged" if accepted.duplicate else "logged"
    out.emit(
        f"{what}: {verb} at index {accepted.index}",
        {"index": accepted.index, "duplicate": accepted.duplicate, "statement": fields},
    )
    return 0


def cmd_body_add(args: argparse.Namespace, out: Output) -> int:
    ledger = Ledger.open(_settings(args))
    body_id: str = args.id or args.name
    fields = {
        "type": "trust.body.add",
        "body_id": body_id,
        "name": args.name,
        "country": args.country,
        "public_key": _public_key_b64(args.key),
    }
    return _logged(out, f"trust anchor {body_id}", ledger, fields, ledger.load_log_key().key)


def cmd_body_remove(args: argparse.Namespace, out: Output) -> int:
    ledger = Ledger.open(_settings(args))
    fields = {"type": "trust.body.remove", "body_id": args.body_id, "reason": args.reason}
    return _logged(
        out, f"trust anchor {args.body_id} removed", ledger, fields, ledger.load_log_key().key
    )


def cmd_body_list(args: argparse.Namespace, out: Output) -> int:
    state = Ledger.open(_settings(args)).trust_state()
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
    ledger = Ledger.open(_settings(args))
    fields = {
        "type": "accreditation.grant",
        "body_id": args.body,
        "issuer_id": args.issuer,
        "issuer_name": args.issuer_name,
        "issuer_kind": args.issuer_kind,
        "public_keys": [_public_key_b64(p) for p in args.issuer_key],
        "accreditation_number": args.number,
        "standard": args.standard,
        "scope": args.scope,
        "covers": args.covers,
        "valid_from": args.valid_from,
        "valid_until": args.valid_until,
    }
    return _logged(
        out,
        f"accreditation {args.number} of {args.issuer}",
        ledger,
        fields,
        _signing_key(args, args.body_key),
    )


def cmd_accredit_event(args: argparse.Namespace, out: Output) -> int:
    ledger = Ledger.open(_settings(args))
    fields = {
        "type": f"accreditation.{args.action}",
        "body_id": args.body,
        "issuer_id": args.issuer,
        "accreditation_number": args.number,
        "reason": args.reason,
    }
    return _logged(
        out,
        f"accreditation {args.number} {args.action}",
        ledger,
        fields,
        _signing_key(args, args.body_key),
    )


def cmd_key_add(args: argparse.Namespace, out: Output) -> int:
    ledger = Ledger.open(_settings(args))
    fields = {
        "type": "issuer.key.add",
        "issuer_id": args.issuer,
        "public_key": _public_key_b64(args.new_key),
    }
    return _logged(
        out, f"key of {args.issuer} added", ledger, fields, _signing_key(args, args.signing_key)
    )


def cmd_key_revoke(args: argparse.Namespace, out: Output) -> int:
    ledger = Ledger.open(_settings(args))
    key_id = args.key_id or keyfile.read_public_key(Path(args.revoke)).key_id
    fields: dict[str, Any] = {
        "type": "issuer.key.revoke",
        "issuer_id": args.issuer,
        "key_id": key_id,
        "reason": args.reason,
    }
    if args.compromised_at:
        fields["compromised_at"] = args.compromised_at
    return _logged(
        out,
        f"key {key_id[:16]}… of {args.issuer} revoked",
        ledger,
        fields,
        _signing_key(args, args.signing_key),
    )


def cmd_issuers(args: argparse.Namespace, out: Output) -> int:
    state = Ledger.open(_settings(args)).trust_state()
    rows = [issuer_report(state, i) for i in state.issuers.values()]
    human = "\n".join(
        f"{r['issuer_id']:16} {r['kind']:22} {r['name']}  "
        + ", ".join(f"{a['number']} ({a['body_id']}): {a['status']}" for a in r["accreditations"])
        for r in rows
    )
    out.emit(human or "(no accredited issuers)", rows)
    return 0


def cmd_issuer(args: argparse.Namespace, out: Output) -> int:
    state = Ledger.open(_settings(args)).trust_state()
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
    envelope = dsse.sign(statement.encode(fields), _signing_key(args, args.key))
    sys.stdout.buffer.write(jcs.canonical_bytes(envelope.to_json()) + b"\n")
    return 0


def register(
    sub: Any,
    add: Callable[..., argparse.ArgumentParser],
    common: argparse.ArgumentParser,
) -> None:
    body = sub.add_parser("body", help="trust anchors: accreditation bodies", parents=[common])
    body_sub = body.add_subparsers(dest="body_command", required=True, metavar="ACTION")
    p = body_sub.add_parser(
        "add", help="trust an accreditation body (signed with the log key)", parents=[common]
    )
    p.add_argument("--name", required=True, help="e.g. CNAS")
    p.add_argument("--id", help="body id (default: the name)")
    p.add_argument("--country", required=True, help="ISO 3166-1 alpha-2, e.g. CN")
    p.add_argument("--key", required=True, metavar="BODY.pub.pem")
    p.set_defaults(func=cmd_body_add)
    p = body_sub.add_parser("remove", help="stop trusting a body (logged)", parents=[common])
    p.add_argument("body_id")
    p.add_argument("--reason", required=True)
    p.set_defaults(func=cmd_body_remove)
    p = body_sub.add_parser("list", help="list trust anchors", parents=[common])
    p.set_defaults(func=cmd_body_list)

    acc = sub.add_parser(
        "accredit", help="accreditation statements signed by a body", parents=[common]
    )
    acc_sub = acc.add_subparsers(dest="accredit_command", required=True, metavar="ACTION")
    p = acc_sub.add_parser("grant", help="accredit an issuer", parents=[common])
    p.add_argument("--body-key", required=True, metavar="BODY.key")
    p.add_argument("--body", required=True, help="body id")
    p.add_argument("--issuer", required=True, help="issuer id, e.g. LAB-1")
    p.add_argument("--issuer-name", required=True)
    p.add_argument(
        "--issuer-kind", required=True, choices=["calibration_laboratory", "certification_body"]
    )
    p.add_argument("--issuer-key", required=True, action="append", metavar="ISSUER.pub.pem")
    p.add_argument("--number", required=True, help="accreditation number")
    p.add_argument("--standard", required=True, help="e.g. ISO/IEC 17025:2017")
    p.add_argument("--scope", required=True, help="scope as free text")
    p.add_argument(
        "--covers",
        required=True,
        action="append",
        help="certificate kind covered: dcc, management_system, product, person",
    )
    p.add_argument("--valid-from", required=True, metavar="YYYY-MM-DD")
    p.add_argument("--valid-until", required=True, metavar="YYYY-MM-DD")
    p.set_defaults(func=cmd_accredit_grant)
    for action in ("suspend", "restore", "withdraw"):
        p = acc_sub.add_parser(action, help=f"{action} an accreditation", parents=[common])
        p.add_argument("--body-key", required=True, metavar="BODY.key")
        p.add_argument("--body", required=True)
        p.add_argument("--issuer", required=True)
        p.add_argument("--number", required=True)
        p.add_argument("--reason", required=True)
        p.set_defaults(func=cmd_accredit_event, action=action)

    key = sub.add_parser("key", help="issuer key events", parents=[common])
    key_sub = key.add_subparsers(dest="key_command", required=True, metavar="ACTION")
    p = key_sub.add_parser(
        "add",
        help="add an issuer key (signed by an active issuer key or the accrediting body)",
        parents=[common],
    )
    p.add_argument("--issuer", required=True)
    p.add_argument("--signing-key", required=True, metavar="KEY")
    p.add_argument("--new-key", required=True, metavar="NEW.pub.pem")
    p.set_defaults(func=cmd_key_add)
    p = key_sub.add_parser("revoke", help="revoke an issuer key", parents=[common])
    p.add_argument("--issuer", required=True)
    p.add_argument("--signing-key", required=True, metavar="KEY")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--revoke", metavar="OLD.pub.pem")
    target.add_argument("--key-id", help="hex key id")
    p.add_argument("--reason", required=True)
    p.add_argument(
        "--compromised-at",
        metavar="RFC3339",
        help="statements logged under the key from this time on become invalid",
    )
    p.set_defaults(func=cmd_key_revoke)

    add("issuers", cmd_issuers, "list accredited issuers")
    p = add("issuer", cmd_issuer, "an issuer's accreditation history and keys")
    p.add_argument("issuer_id")
    p = add("sign", cmd_sign, "sign a statement JSON file with a key; print the DSSE envelope")
    p.add_argument("statement", metavar="STATEMENT.json")
    p.add_argument("--key", required=True, metavar="KEY")
