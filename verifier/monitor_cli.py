"""``qiverify monitor``: follow a registry's log and catch it rewriting or forking its
history, and tell a lab at once about every statement made in its name.

    qiverify monitor --registry https://registry.example --log-key log.vkey \\
        --state monitor.json --once --watch LAB-1

Each poll reads the registry's ``/checkpoint`` (its log signature verified), then
the C2SP tiles from the last size verified up to it, and checks them as
:mod:`verifier.monitor` describes: consistency with the last checkpoint verified,
every new tile and entry, every ``prev`` link, every signature and the trust
rules replayed over the whole log. Only then is the state file (``--state``) moved
to the new checkpoint, atomically. ``--watch ISSUER`` (repeatable) prints every new
statement naming that issuer (or accreditation body): its certificates, keys and
accreditations, one line each; and, for each of its certificates, when it becomes
*traceability at risk* (a certificate it is traced to, at any depth, is suspended,
withdrawn or invalid) and when it stops being so (``AT-RISK`` and
``NO-LONGER-AT-RISK`` lines: those at risk are reported once, the first time an
issuer is watched too). ``--once`` checks up to the current checkpoint and
exits; otherwise it polls every ``--interval`` seconds (a poll that could not check
is reported and retried from the state saved, so a watched statement it printed
may be printed again) until interrupted.

Output: a line per checkpoint verified (polling, an unchanged log only once) and
per watched statement; with ``--json`` a stream of JSON objects, one per line
(``"event"``: ``"checkpoint"``, ``"statement"``, ``"at_risk"``,
``"no_longer_at_risk"``, ``"unchecked"``), then qiverify's
verdict object (``jq`` reads such a stream as it is).

Exit codes: 0 everything up to the registry's checkpoint verified (``--once``);
2 the log misbehaved — a fork (a checkpoint of the same or a smaller size with
another root, or one that does not extend the last verified), a tile or entry that
does not match, a broken ``prev`` link, an entry the trust rules refuse, a
checkpoint not signed by the log key — with the evidence (both signed checkpoints,
the proof or tile hashes, the entry and its tlog-proof) written to a file in
``--evidence DIR`` (default: beside the state file) named in the output; 3 could
not check: the registry is unreachable or answers garbage, serves a checkpoint
older than the one verified (a stale view), or the state file is corrupt or of
another log — the state file unchanged; 130 interrupted (the state file keeps the
last checkpoint verified).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from verifier.errors import QILedgerError
from verifier.verdict import EXIT_NOT_AUTHENTIC, EXIT_UNCHECKED, Report, Stop

if TYPE_CHECKING:  # imported when the command runs (tests/test_cli_startup.py)
    from verifier.monitor import Alarm, MonitorState, Observed, Step

DEFAULT_INTERVAL = 60.0


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "monitor",
        parents=[common],
        help="follow a registry's log: catch forks and rewrites, watch an issuer",
        description="Check every new checkpoint, tile and entry of a registry's log "
        "against the last checkpoint verified, replaying the trust rules.",
    )
    p.add_argument("--registry", required=True, metavar="URL", help="the registry's base URL")
    p.add_argument(
        "--log-key",
        required=True,
        help="the log's verifier key string, or a file whose first line is it",
    )
    p.add_argument(
        "--state",
        required=True,
        metavar="FILE",
        help="the monitor's state: last checkpoint verified and the replayed trust state",
    )
    p.add_argument("--once", action="store_true", help="check up to the current checkpoint, exit")
    p.add_argument(
        "--watch",
        action="extend",
        nargs="+",
        default=[],
        metavar="ISSUER",
        help="print every new statement naming this issuer or body (repeatable)",
    )
    p.add_argument(
        "--interval",
        type=float,
        default=DEFAULT_INTERVAL,
        metavar="SECONDS",
        help="seconds between polls without --once (default %(default)s)",
    )
    p.add_argument(
        "--evidence",
        metavar="DIR",
        help="where evidence of misbehaviour is written (default: beside the state file)",
    )
    p.set_defaults(func=cmd_monitor)


class _Output:
    """Lines for people, or one JSON object per line with ``--json``."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def emit(self, text: str, value: dict[str, Any], *, stream: Any = None) -> None:
        if self.as_json:
            print(json.dumps(value, ensure_ascii=False, separators=(",", ":")), flush=True)
        else:
            print(text, file=stream or sys.stdout, flush=True)


def cmd_monitor(args: argparse.Namespace, report: Report, now: datetime) -> None:
    from verifier import monitor
    from verifier.cli import _log_key, _registry  # here: verifier.cli imports this module
    from verifier.tiles import CHECKPOINT_PATH

    key = _log_key(args.log_key)
    registry = _registry(args.registry)
    if not args.interval > 0:
        raise Stop(EXIT_UNCHECKED, f"--interval must be a positive number, not {args.interval}")
    state_path = Path(args.state)
    evidence_dir = Path(args.evidence) if args.evidence else state_path.parent
    started = time.monotonic()

    def clock() -> datetime:  # `now` is the parameter; polling moves it on
        return now + timedelta(seconds=time.monotonic() - started)

    out = _Output(args.json)
    report.facts.update(log=key.name, registry=registry.base_url, state=str(state_path))
    state = _load(state_path, key)
    fetch, prove = monitor.http_fetch(registry), monitor.http_prove(registry)
    watch = list(args.watch)
    if watch:
        report.facts["watching"] = watch
    seen, last_size = 0, -1

    def observe(found: Observed) -> None:
        nonlocal seen
        seen += 1
        out.emit(found.to_text(), found.to_json())

    try:
        while True:
            report.checks.clear()  # the last poll's checks (a long run keeps no history)
            try:
                new = monitor.verify_checkpoint(fetch(CHECKPOINT_PATH), key)
                step = monitor.check(state, new, fetch, prove, watch, observe)
                risk_checked = bool(watch) and (
                    step.new_size > step.old_size or state.risk_watch != tuple(sorted(set(watch)))
                )
                if risk_checked:
                    for change in monitor.risk_changes(state, watch, clock()):
                        out.emit(change.to_text(), change.to_json())
                if step.new_size > step.old_size or risk_checked or not state_path.exists():
                    monitor.save_state(state_path, state)
            except monitor.Alarm as alarm:
                _alarm(alarm, report, out, key, registry.base_url, evidence_dir, clock(), watch)
            except monitor.StateFileError as exc:
                raise Stop(EXIT_UNCHECKED, exc.message) from None
            except QILedgerError as exc:  # unreachable, garbage, a stale view: unchecked
                detail = f"{exc.message} ({exc.code})"
                if args.once:
                    report.fail("registry", detail, EXIT_UNCHECKED)
                out.emit(
                    f"qiverify monitor: could not check: {detail}; retrying in {args.interval:g} s",
                    {"event": "unchecked", "detail": detail, "size": state.size},
                    stream=sys.stderr,
                )
                state = _load(state_path, key)  # the one in memory may be part-way
            else:
                # Polling, an unchanged log is said once, not at every poll.
                quiet = step.new_size == step.old_size == last_size
                _verified(step, report, out, key.name, state_path, seen, quiet=quiet)
                last_size = step.new_size
            if args.once:
                return
            time.sleep(args.interval)
    except KeyboardInterrupt:
        out.emit(
            f"qiverify monitor: interrupted; {state_path} keeps the last checkpoint verified",
            {"event": "interrupted", "state": str(state_path)},
            stream=sys.stderr,
        )
        raise


def _load(path: Path, key: Any) -> MonitorState:
    from verifier import monitor

    try:
        return monitor.load_state(path, key)
    except monitor.StateFileError as exc:
        raise Stop(EXIT_UNCHECKED, f"the state file {exc.message}") from None


def _verified(
    step: Step,
    report: Report,
    out: _Output,
    log: str,
    state_path: Path,
    seen: int,
    *,
    quiet: bool,
) -> None:
    from verifier.encoding import b64encode

    new_entries = step.new_size - step.old_size
    if new_entries:
        text = (
            f"OK {log}: size {step.old_size} -> {step.new_size}, {new_entries} new entries "
            "verified (tiles, consistency, prev links, signatures, trust rules)"
        )
    else:
        text = f"OK {log}: size {step.new_size}, unchanged"
    report.ok("log", text.removeprefix(f"OK {log}: "))
    report.facts.update(tree_size=step.new_size, watched_statements=seen)
    if quiet:
        return
    out.emit(
        text,
        {
            "event": "checkpoint",
            "log": log,
            "old_size": step.old_size,
            "size": step.new_size,
            "root": b64encode(step.root),
            "new_entries": new_entries,
            "state": str(state_path),
        },
    )


def _alarm(
    alarm: Alarm,
    report: Report,
    out: _Output,
    key: Any,
    registry: str,
    folder: Path,
    now: datetime,
    watch: list[str],
) -> None:
    from verifier import monitor

    fields = alarm.evidence.get("statement")
    if isinstance(fields, dict) and monitor.names_party(fields, watch):
        index = alarm.evidence.get("index")
        out.emit(
            f"WATCH {index} INVALID {fields.get('type')} issuer={fields.get('issuer_id')} "
            f"({alarm.kind})",
            {"event": "statement", "index": index, "invalid": alarm.kind, "statement": fields},
        )
    document = monitor.evidence_document(alarm, key, registry)
    try:
        path = monitor.write_evidence(folder, document, now)
    except monitor.StateFileError as exc:
        report.fail(alarm.kind, f"{alarm.message} (and the evidence: {exc.message})")
    report.facts["evidence"] = str(path)
    report.fail(alarm.kind, f"{alarm.message}; evidence written to {path}", EXIT_NOT_AUTHENTIC)
