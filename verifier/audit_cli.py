"""``qiverify audit FILE.zip --log-key VKEY``: check an audit bundle offline
(:mod:`verifier.bundle`), trusting nothing but the log's verifier key.

Exit codes: 0 every check passed; 2 something does not verify (the first bad
member and entry index are named); 3 the file cannot be read as a ZIP at all, or
the log key is unusable. A progress bar goes to stderr only when stderr is a
terminal and ``--json`` is not given.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime
from typing import Any

from verifier.verdict import EXIT_UNCHECKED, Report


class _Progress:
    """A one-line bar on a terminal's stderr, redrawn at most a few times a second."""

    def __init__(self) -> None:
        self._last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self._last < 0.2 and done < total:
            return
        self._last = now
        width = 40
        filled = width * done // total if total else width
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} entries")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def cmd_audit(args: argparse.Namespace, report: Report, now: datetime) -> None:
    from verifier import bundle
    from verifier.cli import _log_key
    from verifier.errors import QILedgerError

    key = _log_key(args.log_key)
    progress = _Progress() if sys.stderr.isatty() and not args.json else None
    report.facts["file"] = args.file
    try:
        result = bundle.audit(args.file, key, progress=progress)
    except bundle.BundleUnreadableError as exc:
        report.fail("bundle", exc.message, EXIT_UNCHECKED)
    except bundle.BundleError as exc:
        report.facts["bad_file"] = exc.member
        report.facts["bad_entry"] = exc.index
        report.fail("bundle", f"{exc.message} ({exc.code})")
    except QILedgerError as exc:
        report.fail("bundle", f"{exc.message} ({exc.code})")
    except (OSError, MemoryError) as exc:  # the machine, not the bundle, failed
        report.fail("bundle", f"could not be checked: {exc}", EXIT_UNCHECKED)
    report.facts.update(result.to_json())
    report.ok("manifest", "every member's SHA-256 is the one the manifest lists")
    report.ok(
        "checkpoints",
        f"signed by the log key: sizes {', '.join(map(str, result.checkpoints))}"
        + (", each consistent with the next" if len(result.checkpoints) > 1 else ""),
    )
    report.ok(
        "entries",
        f"{result.lines} entries included under checkpoint {result.checkpoint_size}, "
        f"{result.prev_links} prev links, {result.signatures} envelope signatures",
    )
    report.ok("trust chain", "every entry replayed in log order passes the trust rules")
    report.ok("reports", "report.csv and report.html are the ones the entries give")
    if result.complete:
        report.ok("completeness", "the bundle holds every entry below its checkpoint")
    else:
        report.skip(
            "completeness",
            "a partial bundle cannot prove that no entry was left out (export the whole "
            "log for that)",
        )
    summary = result.summary
    report.lines += [
        f"OK: audit bundle of {result.origin} verifies under checkpoint {result.checkpoint_size}",
        f"selection: {result.selection.to_json()}",
        f"entries: {result.lines} ({result.selected} selected), signatures verified: "
        f"{result.signatures}, prev links checked: {result.prev_links}, "
        f"documents: {result.documents}",
        f"issuers: {summary['issuers']}; events by type: {summary['events_by_type']}",
        f"certificates by status: {summary['certificates_by_status']}; "
        f"verdicts: {summary['events_by_verdict']}",
        "complete: every entry below the checkpoint is included"
        if result.complete
        else "partial: the selection's entries and what they depend on",
    ]


def add_parser(
    sub: argparse._SubParsersAction[Any], common: argparse.ArgumentParser
) -> None:
    """``qiverify audit`` (registered by :func:`verifier.cli.build_parser`)."""
    p = sub.add_parser(
        "audit", parents=[common], help="verify an audit bundle (qiledger export) offline"
    )
    p.add_argument("file", metavar="FILE.zip")
    p.add_argument(
        "--log-key",
        required=True,
        help="the log's verifier key string, or a file whose first line is it",
    )
    p.set_defaults(func=cmd_audit)
