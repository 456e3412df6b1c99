"""Checking a certificate against a registry, believing only the log's key: its status
and history, the latest checkpoint (consistent with the last one seen), each history
entry proven included, and, for logs of at most ``max_replay`` entries, the whole log
replayed through :mod:`verifier.trust` (issuer signatures, keys and accreditations at
log time, and the status the registry claimed)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from verifier import checkpoint, cosignature, entry, merkle, statement, tiles, trust
from verifier.checkpoint_state import check_state
from verifier.cosignature import CosignatureVerifier
from verifier.encoding import b64decode
from verifier.errors import MalformedError
from verifier.note import NoteVerifier
from verifier.online import Registry
from verifier.online import field as json_field
from verifier.trust import IAF_STATUS
from verifier.verdict import (
    EXIT_NOT_AUTHENTIC,
    EXIT_NOT_VALID,
    EXIT_UNCHECKED,
    EXIT_VALID,
    Report,
)

_IAF_TO_STATUS = {words: status for status, words in IAF_STATUS.items()}
STATUS_EXIT = {
    trust.ACTIVE: EXIT_VALID,
    trust.SUSPENDED: EXIT_NOT_VALID,
    trust.WITHDRAWN: EXIT_NOT_VALID,
    trust.SUPERSEDED: EXIT_NOT_VALID,
    trust.EXPIRED: EXIT_NOT_VALID,
    trust.INVALID: EXIT_NOT_AUTHENTIC,
}
"""The exit code a certificate's status means."""


def check_online(
    report: Report,
    registry: Registry,
    key: NoteVerifier,
    certificate_id: str,
    document_sha256: str,
    state_path: Path,
    now: datetime,
    *,
    mark_index: int | None,
    max_replay: int,
    witnesses: Sequence[CosignatureVerifier] = (),
    min_witnesses: int = 0,
) -> None:
    view = report.run(
        "certificate in registry",
        lambda: registry.certificate(certificate_id),
        f"the registry holds {certificate_id}",
    )
    history = report.run(
        "registry answer", lambda: _history(view), "the certificate's history is well-formed"
    )
    for name in ("issuer_id", "kind", "valid_until"):
        if isinstance(view.get(name), str):  # shown as context; the checks below use the log
            report.facts[name] = view[name]

    # Read after the certificate, so this checkpoint covers every entry it listed.
    def fetch() -> bytes:
        # With a witness policy, the C2SP /checkpoint: it carries the cosignatures.
        return registry.get("/checkpoint") if witnesses else registry.checkpoint()

    signed = report.run(
        "checkpoint signature",
        lambda: checkpoint.verify(fetch(), key),
        lambda s: f"size {s.checkpoint.size} signed by {key.name}",
    )
    if witnesses:
        check_witnesses(report, signed.note, key, witnesses, min_witnesses, now)
    cp = signed.checkpoint
    report.facts["tree_size"] = cp.size
    check_state(report, registry, key, cp, signed.note, state_path)

    first: statement.Statement | None = None
    for index, claimed_type in history:
        stmt = report.run(
            f"entry {index}",
            functools.partial(_included_statement, registry, key, cp, index),
            f"included under the checkpoint of size {cp.size}",
        )
        if stmt.get("certificate_id") != certificate_id or stmt.type != claimed_type:
            report.fail(
                f"entry {index}",
                f"the registry lists {claimed_type} of {certificate_id} here, but the log "
                f"holds {stmt.type} of {stmt.get('certificate_id')!r}",
            )
        first = first or stmt
    if first is None or first.type not in ("certificate.issue", "certificate.amend"):
        report.fail("issue entry", "the certificate's history does not start with its issue")
    if first["document_sha256"] != document_sha256:
        report.fail(
            "document digest",
            f"the logged statement is about SHA-256 {first['document_sha256']}, "
            f"not {document_sha256}",
        )
    report.ok("document digest", "the logged issue statement names this SHA-256")
    if mark_index is not None:
        if history[0][0] != mark_index:
            report.fail(
                "mark's log index",
                f"the mark names entry {mark_index}, but the certificate was issued at "
                f"entry {history[0][0]}",
            )
        report.ok("mark's log index", f"entry {mark_index} is the certificate's issue statement")

    claimed = _IAF_TO_STATUS.get(str(view.get("status")))
    if claimed is None:
        report.fail("registry answer", f"unknown status {view.get('status')!r}")
    if cp.size > max_replay:
        _unreplayed(report, cp.size, max_replay)
        status, reason = claimed, str(view.get("reason") or "")
        report.skip("status", f"{IAF_STATUS[status]} as the registry reports it (no replay)")
    else:
        state = _replay(report, registry, key, cp)
        replayed = state.certificate(certificate_id)
        if replayed is None or [e.index for e in replayed.events] != [i for i, _ in history]:
            report.fail(
                "history",
                "the registry's history of the certificate is not the one its log holds",
            )
        entries = f"{len(history)} entr{'y' if len(history) == 1 else 'ies'}"
        report.ok("history", f"{entries}, the same as replaying the log gives")
        result = trust.certificate_status(state, certificate_id, now)
        status, reason = result.status, result.reason
        report.ok("issuer signature", f"each entry verifies with the key of {replayed.issuer_id}")
        report.ok(
            "issuer key and accreditation at log time",
            "the trust rules admit every entry (active key, accreditation covering "
            f"{replayed.kind}, body trusted)",
        )
        if claimed != status:
            report.fail(
                "status",
                f"the registry says {IAF_STATUS[claimed]}, its own log says {IAF_STATUS[status]}",
            )
    report.facts.update(status=IAF_STATUS[status], reason=reason)
    if status == trust.INVALID:  # e.g. signed with a key reported compromised
        report.fail("status", f"the log voids this certificate: {reason}")
    if cp.size <= max_replay:
        report.ok("status", IAF_STATUS[status] + (f" ({reason})" if reason else ""))
    report.code = STATUS_EXIT[status]


def check_witnesses(
    report: Report,
    note: bytes,
    key: NoteVerifier,
    witnesses: Sequence[CosignatureVerifier],
    min_witnesses: int,
    now: datetime,
) -> None:
    """The witness policy: at least ``min_witnesses`` of ``witnesses`` cosigned (else
    exit 2, "not authentic": nobody independent vouches this is the one history)."""
    cosigned = report.run(
        "witness cosignatures",
        lambda: cosignature.require_cosignatures(
            note, key, witnesses, min_witnesses, now=int(now.timestamp())
        ),
        lambda c: (
            f"{len(c.witnesses)} of {len(witnesses)} trusted witnesses cosigned "
            f"(policy: at least {min_witnesses})"
            + (f": {', '.join(name for name, _ in c.witnesses)}" if c.witnesses else "")
        ),
    )
    report.facts["witnesses"] = [name for name, _ in cosigned.witnesses]


def _history(view: dict[str, Any]) -> list[tuple[int, str]]:
    history = json_field(view, "history", list, "certificate")
    out: list[tuple[int, str]] = []
    for item in history:
        if not isinstance(item, dict):
            raise MalformedError("certificate: a history item is not an object")
        out.append(
            (json_field(item, "index", int, "history"), json_field(item, "type", str, "history"))
        )
    if not out:
        raise MalformedError("certificate: the history is empty")
    return out


def _included_statement(
    registry: Registry, key: NoteVerifier, cp: checkpoint.Checkpoint, index: int
) -> statement.Statement:
    """Entry ``index``, proven included under ``cp``, and its (unverified) statement."""
    answer = registry.entry(index, cp.size)
    where = f"entry {index}"
    note = json_field(answer, "checkpoint", str, where).encode("utf-8")
    pinned = checkpoint.verify(note, key).checkpoint
    if (pinned.size, pinned.root) != (cp.size, cp.root):
        raise MalformedError(f"{where}: proven against another tree (size {pinned.size})")
    data = b64decode(json_field(answer, "leaf_data", str, where), "leaf data")
    hashes = [
        b64decode(h, "proof hash") if isinstance(h, str) else b""
        for h in json_field(answer, "inclusion_proof", list, where)
    ]
    merkle.verify_inclusion(merkle.leaf_hash(data), index, cp.size, hashes, cp.root)
    parsed = entry.parse(data)
    return statement.parse(parsed.envelope.payload)


def _unreplayed(report: Report, size: int, max_replay: int) -> None:
    why = (
        f"needs a replay of the log ({size} entries > --max-replay {max_replay}); no API "
        "gives the log indices of the issuer's grant, key and accreditation statements"
    )
    report.skip("issuer signature", why)
    report.skip("issuer key and accreditation at log time", why)


def _replay(
    report: Report, registry: Registry, key: NoteVerifier, cp: checkpoint.Checkpoint
) -> trust.TrustState:
    """Every entry up to ``cp``, proven to be exactly that tree, replayed through the
    trust rules: issuer signatures, keys and accreditations at log time."""

    def download() -> list[bytes]:
        leaves: list[bytes] = []
        for bundle in tiles.bundles_for_size(cp.size):
            leaves += tiles.parse_entry_bundle(registry.entry_bundle(bundle.path), bundle.width)
        root = merkle.root_from_leaf_hashes([merkle.leaf_hash(d) for d in leaves])
        if root != cp.root:
            raise MalformedError("the entry bundles do not make the checkpoint's tree")
        return leaves

    leaves = report.run(
        "log contents",
        download,
        f"all {cp.size} entries downloaded; their tree is the checkpoint's",
        not_found=EXIT_UNCHECKED,
    )
    return report.run(
        "trust replay",
        lambda: trust.replay(key.public_key, enumerate(leaves)),
        "every entry of the log passes the trust rules",
    )
