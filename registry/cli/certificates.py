"""``qiledger`` commands for certificates: issue, status changes, status, documents."""

from __future__ import annotations

import argparse
from dataclasses import replace
from datetime import UTC, date, datetime

from registry.cli import context, files
from registry.cli import marks as cli_marks
from registry.cli.context import KeyOption
from registry.cli.output import Output
from registry.cli.parsing import Commands, number_up_to
from registry.config import Settings
from registry.errors import NotFoundError, RequestInvalidError
from registry.keys.keyfile import KeyRole

ISSUER_KEY = KeyOption("--key", KeyRole.ISSUER)
# The words a status filter takes (IAF CertSearch's, as answers print them); kept
# here so building the parser imports no listing code.
STATUS_WORDS = ("active", "suspended", "withdrawn", "expired", "superseded", "invalid")
CERTIFICATE_KINDS = ("dcc", "management_system", "person", "product")


def _issue_settings(args: argparse.Namespace) -> Settings:
    """The global options' settings, and ``issue --require-schema`` on top."""
    settings = context.settings(args)
    return replace(settings, require_schema=True) if args.require_schema else settings


def cmd_issue(args: argparse.Namespace, out: Output) -> int:
    from registry.ledger import Ledger

    base_url = cli_marks.configured_public_url(args.public_url)
    ledger = Ledger.open(_issue_settings(args))
    document = files.read_document(args.document)
    record = None if args.record is None else files.read_document(args.record)
    key = ISSUER_KEY.load(args)
    derived = ledger.documents.statement(document, args.issuer, ledger.clock(), record)
    accepted = ledger.issue_certificate(document, args.issuer, key, record)
    fields = derived.fields
    mark_url = (
        None
        if base_url is None
        else cli_marks.certificate_mark_url(ledger, fields["certificate_id"], base_url)
    )
    mark_line = (
        "\n  mark URL: set --public-url or QILEDGER_PUBLIC_URL to print it"
        if mark_url is None
        else f"\n  mark URL: {mark_url}"
    )
    if accepted.duplicate:
        out.emit(
            f"{fields['certificate_id']}: already registered at index {accepted.index}" + mark_line,
            {
                "certificate_id": fields["certificate_id"],
                "index": accepted.index,
                "duplicate": True,
                "mark_url": mark_url,
            },
        )
        return 0
    verb = "amends " + fields["supersedes"] + ", " if "supersedes" in fields else ""
    validated = fields.get("schema_validated")
    note = "" if validated is None else f" (schema validated: {str(validated).lower()})"
    out.emit(
        f"{fields['certificate_id']}: {verb}logged at index {accepted.index}{note}{mark_line}",
        {
            "certificate_id": fields["certificate_id"],
            "index": accepted.index,
            "duplicate": accepted.duplicate,
            "statement": fields,
            "mark_url": mark_url,
        },
    )
    return 0


def cmd_status_change(args: argparse.Namespace, out: Output) -> int:
    from verifier import statement

    ledger = context.ledger(args)
    issuer_id = args.certificate_id.split("/", 1)[0]
    key = ISSUER_KEY.load(args)
    built = statement.CERTIFICATE_CHANGES[args.action](
        issuer_id=issuer_id, certificate_id=args.certificate_id, reason=args.reason
    )
    accepted = ledger.submit_statement(built, key)
    out.emit(
        f"{args.certificate_id}: {args.action} logged at index {accepted.index}",
        {"certificate_id": args.certificate_id, "index": accepted.index},
    )
    return 0


def cmd_certificate(args: argparse.Namespace, out: Output) -> int:
    from registry.reports import certificate_report

    ledger = context.ledger(args)
    report = certificate_report(ledger.trust_state(), args.certificate_id, datetime.now(UTC))
    lines = [
        f"{report['certificate_id']}: {report['status']}"
        + (f" ({report['reason']})" if report["reason"] else ""),
        f"  issuer {report['issuer_id']}, kind {report['kind']}, "
        f"document sha256 {report['document_sha256']}",
    ]
    lines += [
        f"  index {h['index']:>6}  {h['logged_at']}  {h['type']}"
        + (f"  ({h['reason']})" if h["reason"] else "")
        for h in report["history"]
    ]
    out.emit("\n".join(lines), report)
    return 0


def cmd_certificates(args: argparse.Namespace, out: Output) -> int:
    from registry.listing import STATUSES, CertificateListing

    if args.issued_from and args.issued_to and args.issued_from > args.issued_to:
        raise RequestInvalidError(
            f"--issued-from {args.issued_from} is after --issued-to {args.issued_to}"
        )
    ledger = context.ledger(args)
    state = ledger.trust_state()
    if args.issuer is not None and args.issuer not in state.issuers:
        raise NotFoundError(f"no issuer {args.issuer} in this log")
    listing = CertificateListing(
        issuer_id=args.issuer,
        status=None if args.status is None else STATUSES[args.status.lower()],
        kind=args.kind,
        issued_from=args.issued_from,
        issued_to=args.issued_to,
    )
    page = ledger.list_certificates(listing, after_index=args.after, limit=args.limit)
    lines = [
        f"{c['history'][0]['index']:>8}  {c['status']:<10}  {c['issued'] or '-':<10}  "
        f"{c['valid_until'] or '-':<10}  {c['kind']:<17}  {c['certificate_id']}"
        for c in page.certificates
    ]
    if page.next_after is not None:
        lines.append(f"(more: --after {page.next_after})")
    elif not lines:
        lines.append("no certificates match")
    out.emit(
        "\n".join(lines),
        {
            "tree_size": page.tree_size,
            "certificates": page.certificates,
            "next": page.next_after,
        },
    )
    return 0


def _date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {value!r}") from None


def cmd_document(args: argparse.Namespace, out: Output) -> int:
    ledger = context.ledger(args)
    cert = ledger.trust_state().certificate(args.certificate_id)
    if cert is None:
        raise NotFoundError(f"no certificate {args.certificate_id} in this log")
    stored = ledger.document(cert.document_sha256)
    files.write_new(args.out, stored.data, 0o600)
    out.emit(
        f"wrote {len(stored.data)} bytes ({stored.media_type}) to {args.out}",
        {"file": args.out, "size": len(stored.data), "sha256": stored.digest},
    )
    return 0


def register(commands: Commands) -> None:
    p = commands.add(
        "issue",
        cmd_issue,
        "register a DCC (XML) or certification certificate (JSON, or PDF with --record)",
    )
    p.add_argument("document", metavar="FILE", help="the certificate document")
    p.add_argument(
        "--record",
        metavar="JSON",
        help="with a PDF certification certificate: the same certificate as JSON",
    )
    ISSUER_KEY.add_to(p, metavar="KEY", help="the issuer's signing key file")
    p.add_argument("--issuer", required=True, help="issuer id, e.g. LAB-1")
    p.add_argument(
        "--require-schema", action="store_true", help="refuse a DCC that cannot be schema-validated"
    )
    p.add_argument(
        "--public-url",
        help="scheme://host[:port] of the public verifier, to print the QR mark URL "
        "(env QILEDGER_PUBLIC_URL)",
    )
    p = commands.add("status", cmd_status_change, "suspend, reinstate or withdraw a certificate")
    p.add_argument("certificate_id", metavar="CERT-ID", help="e.g. LAB-1/DCC-2026-0001")
    p.add_argument("action", choices=["suspend", "reinstate", "withdraw"], help="the status change")
    p.add_argument("--reason", required=True, help="why, as free text (logged)")
    ISSUER_KEY.add_to(p, metavar="KEY", help="the issuer's signing key file")
    p = commands.add("certificate", cmd_certificate, "a certificate's status and history")
    p.add_argument("certificate_id", metavar="CERT-ID", help="e.g. LAB-1/DCC-2026-0001")
    p = commands.add(
        "certificates", cmd_certificates, "list certificates in log order, with filters"
    )
    p.add_argument("--issuer", metavar="ID", help="only this issuer's")
    p.add_argument(
        "--status",
        type=str.lower,
        choices=sorted(STATUS_WORDS),
        help="only those with this status now",
    )
    p.add_argument("--kind", choices=sorted(CERTIFICATE_KINDS), help="only this kind")
    p.add_argument("--issued-from", type=_date, metavar="YYYY-MM-DD", help="issued on or after")
    p.add_argument("--issued-to", type=_date, metavar="YYYY-MM-DD", help="issued on or before")
    p.add_argument(
        "--limit", type=number_up_to(10_000), default=100, metavar="N", help="at most N (100)"
    )
    p.add_argument(
        "--after", type=int, default=-1, metavar="INDEX", help="after this log index (a cursor)"
    )
    p = commands.add(
        "document", cmd_document, "write a certificate's document (exact bytes) to a file"
    )
    p.add_argument("certificate_id", metavar="CERT-ID", help="e.g. LAB-1/DCC-2026-0001")
    p.add_argument("--out", required=True, metavar="FILE", help="a new file (never overwritten)")
