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
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import io
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from verifier import checkpoint, dsse, entry, mark, merkle, statement, tiles, trust
from verifier import proof as tlog_proof
from verifier.certification import IAF_STATUS
from verifier.encoding import b64decode, b64encode
from verifier.errors import MalformedError, QILedgerError, VerificationError
from verifier.keys import PublicKey
from verifier.note import NoteVerifier
from verifier.online import (
    NetworkError,
    NotFoundError,
    Registry,
    RegistryRefusedError,
)
from verifier.online import (
    field as json_field,
)

MAX_INPUT = 64 << 20
MAX_IMAGE_PIXELS = 50_000_000
"""A photo of a certificate is far smaller; a larger image is refused before decoding."""
DEFAULT_MAX_REPLAY = 100_000
"""Entries ``document`` downloads to replay the trust rules over the whole log."""
STATE_VERSION = 1

EXIT_VALID, EXIT_NOT_VALID, EXIT_NOT_AUTHENTIC, EXIT_UNCHECKED = 0, 1, 2, 3
MEANING = {
    EXIT_VALID: "authentic and valid",
    EXIT_NOT_VALID: "authentic but not valid",
    EXIT_NOT_AUTHENTIC: "not authentic or not found",
    EXIT_UNCHECKED: "could not check",
}
_STATUS_EXIT = {
    trust.ACTIVE: EXIT_VALID,
    trust.SUSPENDED: EXIT_NOT_VALID,
    trust.WITHDRAWN: EXIT_NOT_VALID,
    trust.SUPERSEDED: EXIT_NOT_VALID,
    trust.EXPIRED: EXIT_NOT_VALID,
    trust.INVALID: EXIT_NOT_AUTHENTIC,
}
_IAF_TO_STATUS = {words: status for status, words in IAF_STATUS.items()}

T = TypeVar("T")


class Stop(Exception):
    """Ends a command early with an exit code; the failed check is already recorded."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class Check:
    name: str
    result: str  # "ok" | "failed" | "not checked"
    detail: str


@dataclass
class Report:
    """What one command checked: facts, every check with its result, and the verdict."""

    command: str
    facts: dict[str, Any] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    """Human output of the older single-check commands."""
    code: int = EXIT_VALID
    note: str = ""
    """Qualifies the verdict (``mark`` offline: what was not asked)."""

    def ok(self, name: str, detail: str) -> None:
        self.checks.append(Check(name, "ok", detail))

    def skip(self, name: str, detail: str) -> None:
        self.checks.append(Check(name, "not checked", detail))

    def fail(self, name: str, detail: str, code: int = EXIT_NOT_AUTHENTIC) -> NoReturn:
        self.checks.append(Check(name, "failed", detail))
        raise Stop(code, f"{name}: {detail}")

    def run(
        self,
        name: str,
        action: Callable[[], T],
        detail: str | Callable[[T], str] = "",
        *,
        not_found: int = EXIT_NOT_AUTHENTIC,
    ) -> T:
        """``action()``, recorded as check ``name``: a project error fails it with
        the exit code its kind means (unreachable registry 3, anything else 2)."""
        try:
            value = action()
        except (NetworkError, RegistryRefusedError) as exc:
            self.fail(name, exc.message, EXIT_UNCHECKED)
        except NotFoundError as exc:
            self.fail(name, exc.message, not_found)
        except QILedgerError as exc:
            self.fail(name, f"{exc.message} ({exc.code})")
        self.ok(name, detail(value) if callable(detail) else detail)
        return value

    def to_json(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "verdict": MEANING[self.code],
            "exit_code": self.code,
            **({"note": self.note} if self.note else {}),
            "meaning": {str(k): v for k, v in MEANING.items()},
            **self.facts,
            "checks": [
                {"name": c.name, "result": c.result, "detail": c.detail} for c in self.checks
            ],
        }

    def to_text(self) -> str:
        out = [f"{name.replace('_', ' ')}: {value}" for name, value in self.facts.items()]
        marks = {"ok": "OK     ", "failed": "FAILED ", "not checked": "--     "}
        out += [f"{marks[c.result]}{c.name}: {c.detail}" for c in self.checks]
        note = f" ({self.note})" if self.note else ""
        out.append(f"VERDICT: {MEANING[self.code]}{note}")
        return "\n".join(out)


# --- local inputs ---------------------------------------------------------------------


def _read(path: str) -> bytes:
    """A local file, size-limited; any failure means "could not check" (3)."""
    try:
        if path == "-":
            data = sys.stdin.buffer.read(MAX_INPUT + 1)
        else:
            with Path(path).open("rb") as handle:
                data = handle.read(MAX_INPUT + 1)
    except OSError as exc:
        raise Stop(EXIT_UNCHECKED, f"cannot read {path}: {exc.strerror}") from None
    if len(data) > MAX_INPUT:
        raise Stop(EXIT_UNCHECKED, f"{path} is larger than {MAX_INPUT} bytes")
    return data


def _log_key(value: str) -> NoteVerifier:
    """A verifier-key string, or a file whose first line is one (else exit 3)."""
    try:
        if "+" not in value or _is_file(value):
            first = _read(value).decode("utf-8", "replace").split("\n", 1)[0]
            return NoteVerifier.parse(first)
        return NoteVerifier.parse(value)
    except QILedgerError as exc:
        raise Stop(EXIT_UNCHECKED, f"the log key {value!r} is not usable: {exc.message}") from None


def _registry(url: str) -> Registry:
    try:
        return Registry(url)
    except QILedgerError as exc:
        raise Stop(EXIT_UNCHECKED, exc.message) from None


# --- the single-evidence commands -------------------------------------------------------


def cmd_checkpoint(args: argparse.Namespace, report: Report, now: datetime) -> None:
    key, data = _log_key(args.log_key), _read(args.checkpoint)
    cp = report.run("checkpoint signature", lambda: checkpoint.verify(data, key)).checkpoint
    report.facts.update(log=cp.origin, tree_size=cp.size)
    report.lines.append(f"OK: checkpoint of {cp.origin}, size {cp.size}, root {b64encode(cp.root)}")


def cmd_inclusion(args: argparse.Namespace, report: Report, now: datetime) -> None:
    key, proof_data, leaf_data = _log_key(args.log_key), _read(args.proof), _read(args.entry)
    signed = report.run("inclusion proof", lambda: tlog_proof.verify(proof_data, leaf_data, key))
    index = tlog_proof.TlogProof.from_bytes(proof_data).index
    cp = signed.checkpoint
    report.facts.update(log=cp.origin, tree_size=cp.size, index=index)
    report.lines.append(f"OK: entry {index} is included in {cp.origin} at size {cp.size}")


def cmd_consistency(args: argparse.Namespace, report: Report, now: datetime) -> None:
    key = _log_key(args.log_key)
    old_data, new_data, proof_data = _read(args.old), _read(args.new), _read(args.proof)
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
    key_data, envelope_data = _read(args.key), _read(args.envelope)
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


def _qr_texts(path: str) -> list[str]:
    """The texts of every QR code in an image file (zxing-cpp, imported only here so
    that importing ``verifier`` stays light)."""
    data = _read(path)
    try:
        import zxingcpp
        from PIL import Image
    except ImportError:
        raise Stop(
            EXIT_UNCHECKED, "reading a QR image needs zxing-cpp and pillow (pip install them)"
        ) from None
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise Stop(EXIT_UNCHECKED, f"{path} has more than {MAX_IMAGE_PIXELS} pixels")
            grey = image.convert("L")
    except Stop:
        raise
    except Exception as exc:  # noqa: BLE001 - Pillow raises many kinds for a bad file
        raise Stop(
            EXIT_UNCHECKED, f"{path} is not a readable image ({type(exc).__name__})"
        ) from None
    found = zxingcpp.read_barcodes(
        grey, formats=zxingcpp.BarcodeFormats(zxingcpp.BarcodeFormat.QRCode)
    )
    return [result.text for result in found]


def _is_file(value: str) -> bool:
    try:
        return Path(value).is_file()
    except (OSError, ValueError):  # a name too long or with NUL is no file of ours
        return False


def _mark_token(value: str, report: Report) -> str:
    """The token from an image, a mark URL or the token itself."""
    if _is_file(value):
        texts = _qr_texts(value)
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
    key = _log_key(args.log_key)
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
    _check_online(
        report,
        registry,
        key,
        claims.certificate_id,
        claims.document_sha256.hex(),
        _state_path(args.state),
        now,
        mark_index=claims.index,
        max_replay=args.max_replay,
    )


# --- documents ---------------------------------------------------------------------------


def cmd_document(args: argparse.Namespace, report: Report, now: datetime) -> None:
    key = _log_key(args.log_key)
    registry = _registry(args.registry)
    digest = hashlib.sha256(_read(args.file)).hexdigest()
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
    _check_online(
        report,
        registry,
        key,
        ids[-1],
        digest,
        _state_path(args.state),
        now,
        mark_index=None,
        max_replay=args.max_replay,
    )


# --- what the registry says, checked against the log key ----------------------------------


def _check_online(
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
    signed = report.run(
        "checkpoint signature",
        lambda: checkpoint.verify(registry.checkpoint(), key),
        lambda s: f"size {s.checkpoint.size} signed by {key.name}",
    )
    cp = signed.checkpoint
    report.facts["tree_size"] = cp.size
    _check_state(report, registry, key, cp, signed.note, state_path)

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
    report.code = _STATUS_EXIT[status]


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


# --- the state file: consistency with the last checkpoint seen -------------------------------


def _state_path(value: str | None) -> Path:
    if value:
        return Path(value)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "qiverify" / "checkpoints.json"


def _load_state(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    try:
        value = json.loads(_read(str(path)))
        logs = value["logs"] if value.get("v") == STATE_VERSION else None
    except (ValueError, AttributeError, KeyError, TypeError, RecursionError):
        logs = None
    if not isinstance(logs, dict) or not all(isinstance(v, str) for v in logs.values()):
        raise Stop(EXIT_UNCHECKED, f"{path} is not a qiverify state file (remove it or --state)")
    return logs


def _save_state(path: Path, logs: dict[str, str]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_name(path.name + ".part")
        part.write_text(json.dumps({"v": STATE_VERSION, "logs": logs}, indent=1) + "\n")
        part.replace(path)  # atomic: a crash leaves the old state, never half of one
    except OSError as exc:
        raise Stop(EXIT_UNCHECKED, f"cannot write {path}: {exc.strerror}") from None


def _check_state(
    report: Report,
    registry: Registry,
    key: NoteVerifier,
    new: checkpoint.Checkpoint,
    note: bytes,
    path: Path,
) -> None:
    logs = _load_state(path)
    name = "consistency with the last checkpoint seen"
    seen = logs.get(str(key))
    if seen is None:
        logs[str(key)] = note.decode("utf-8")
        _save_state(path, logs)
        report.ok(name, f"first checkpoint seen of this log (size {new.size}), saved to {path}")
        return
    try:
        old = checkpoint.verify(seen.encode("utf-8"), key).checkpoint
    except QILedgerError as exc:
        raise Stop(EXIT_UNCHECKED, f"{path}: the saved checkpoint: {exc.message}") from None
    if old.size == new.size:
        if old.root != new.root:
            report.fail(name, f"two different trees of size {new.size}: the log forked")
        report.ok(name, f"the same tree of size {new.size} as seen before")
        return
    small, large = (old, new) if old.size < new.size else (new, old)

    def consistent() -> None:
        try:
            answer = registry.consistency(small.size, large.size)
        except (NotFoundError, RegistryRefusedError) as exc:
            if large is old:
                raise  # a lagging mirror cannot prove the newer size: could not check
            # It signed this size itself, so it must be able to prove it extends the old.
            raise VerificationError(
                f"the registry signed size {new.size} but does not prove that it "
                f"extends size {old.size}: {exc.message}"
            ) from None
        hashes = [
            b64decode(h, "proof hash") if isinstance(h, str) else b""
            for h in json_field(answer, "hashes", list, "consistency proof")
        ]
        merkle.verify_consistency(small.size, large.size, hashes, small.root, large.root)

    report.run(name, consistent, f"size {new.size} is consistent with size {old.size} seen before")
    if new.size > old.size:
        logs[str(key)] = note.decode("utf-8")
        _save_state(path, logs)


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

    p = sub.add_parser("mark", parents=[common], help="verify a QR mark (image, URL or token)")
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

    p = sub.add_parser("document", parents=[common], help="verify a certificate document file")
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

    p = sub.add_parser("checkpoint", parents=[common], help="verify a signed checkpoint")
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
