"""``qiledger`` traceability commands: ``trace`` (what a certificate is traced
to), ``impact`` (what depends on it), ``standard`` (which certificates name a
standard). Each imports the ledger when it runs (``qiledger --help`` stays quick)."""

from __future__ import annotations

import argparse

from registry.cli import context
from registry.cli.output import Output
from registry.cli.parsing import Commands, number_up_to

_MAX_DEPTH = 32  # verifier.traceability.MAX_DEPTH, kept here so the parser imports no rules
_MAX_PAGE = 500  # registry.traceability.MAX_PAGE
_MAX_DEPENDENTS_PAGE = 100_000  # registry.traceability.MAX_DEPENDENTS_PAGE


def _cursor(value: str) -> int:
    if not value.isdigit() or len(value) > 18:
        raise argparse.ArgumentTypeError(f"not a cursor (a 'next' value): {value!r}")
    return int(value)


def cmd_trace(args: argparse.Namespace, out: Output) -> int:
    ledger = context.ledger(args)
    ledger.trust_state()  # bodies, issuers and keys caught up: statuses depend on keys
    found = ledger.traceability(args.certificate_id)
    risk = " — TRACEABILITY AT RISK" if found["traceability_at_risk"] else ""
    lines = [f"{found['certificate_id']}: {found['status']}{risk}"]
    lines += [
        f"  {'  ' * (link['depth'] - 1)}{link['from']} -> {link['to']}  [{link['role']}] "
        f"{link['status']}, digest {link['digest_check']}"
        for link in found["links"]
    ]
    if not found["links"]:
        lines.append("  no links: traced to nothing this log records")
    if found["at_risk_because"]:
        lines.append("  at risk because of: " + ", ".join(found["at_risk_because"]))
    if found["ends"]:
        lines.append("  chain ends at: " + ", ".join(found["ends"]))
    lines += ["  cycle: " + " <-> ".join(cycle) for cycle in found["cycles"]]
    if found["truncated"]:
        lines.append("  (walk stopped at its depth or size limit)")
    out.emit("\n".join(lines), found)
    return 0


def cmd_impact(args: argparse.Namespace, out: Output) -> int:
    ledger = context.ledger(args)
    ledger.trust_state()
    page = ledger.dependents(
        args.certificate_id, offset=args.after, limit=args.limit, max_depth=args.depth
    )
    if args.all:  # every page, into one answer
        while page["next"] is not None:
            more = ledger.dependents(
                args.certificate_id,
                offset=int(page["next"]),
                limit=_MAX_DEPENDENTS_PAGE,
                max_depth=args.depth,
            )
            page = {**more, "dependents": page["dependents"] + more["dependents"]}
    lines = [f"{page['certificate_id']}: {page['status']}; certificates that trace to it:"]
    lines += [
        f"  depth {d['depth']:>2}  {d['status']:<10}  {d['certificate_id']}  (via {d['via']}, "
        f"digest {d['digest_check']})"
        for d in page["dependents"]
    ]
    if not page["dependents"]:
        lines.append("  none")
    if page["next"] is not None:
        lines.append(f"(more: --after {page['next']}, or --all)")
    out.emit("\n".join(lines), page)
    return 0


def cmd_standard(args: argparse.Namespace, out: Output) -> int:
    ledger = context.ledger(args)
    ledger.trust_state()
    page = ledger.standard(args.reference, after_index=args.after, limit=args.limit)
    counts = ", ".join(f"{k} {v}" for k, v in sorted(page["counts_by_recorded_status"].items()))
    lines = [f"{page['standard']}: {counts or 'no certificates'}"]
    lines += [
        f"  {c['status']:<10}  {c['kind']:<17}  {c['certificate_id']}" for c in page["certificates"]
    ]
    if page["next"] is not None:
        lines.append(f"(more: --after {page['next']})")
    out.emit("\n".join(lines), page)
    return 0


def register(commands: Commands) -> None:
    p = commands.add("trace", cmd_trace, "what a certificate is traced to, and whether at risk")
    p.add_argument("certificate_id", metavar="CERT-ID", help="e.g. LAB-1/DCC-2026-0001")
    p = commands.add("impact", cmd_impact, "the certificates that trace to a certificate")
    p.add_argument("certificate_id", metavar="CERT-ID", help="e.g. NMI-1/REF-7")
    p.add_argument(
        "--depth",
        type=number_up_to(_MAX_DEPTH),
        default=_MAX_DEPTH,
        metavar="N",
        help=f"follow at most N levels ({_MAX_DEPTH})",
    )
    p.add_argument(
        "--limit",
        type=number_up_to(_MAX_DEPENDENTS_PAGE),
        default=100,
        metavar="N",
        help=f"at most N a page (100; up to {_MAX_DEPENDENTS_PAGE:,})",
    )
    p.add_argument(
        "--after", type=_cursor, default=0, metavar="CURSOR", help="the 'next' of the previous page"
    )
    p.add_argument("--all", action="store_true", help="every dependent, however many pages")
    p = commands.add("standard", cmd_standard, "the certificates naming a standard")
    p.add_argument("reference", metavar="REF", help="e.g. 'ISO/IEC 17025:2017' or GUM")
    p.add_argument(
        "--limit", type=number_up_to(_MAX_PAGE), default=100, metavar="N", help="at most N (100)"
    )
    p.add_argument(
        "--after", type=int, default=-1, metavar="INDEX", help="the 'next' of the previous page"
    )
