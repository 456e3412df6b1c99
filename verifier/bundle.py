"""Audit bundles (DESIGN.md item 10): the format, and their offline audit.

An auditor takes a selection of the log away from the registry and checks it
with nothing but the log's verifier key. The bundle is a ZIP file.

Container (so one selection exported twice is byte-identical): member names
sorted (byte order), every member dated 1980-01-01 00:00:00, permissions 0644,
made by "Unix" version 4.5, raw DEFLATE at level 6, written strictly forward
(never seeking): each local header carries no CRC or sizes (flag bit 3) and the
member's data is followed by a data descriptor; ZIP64 extra fields only where a
member's size or offset needs them, ZIP64 end records only where the member count,
the directory's size or its offset do. The file ``qiledger export`` writes and the
stream ``GET /api/v1/export`` sends are therefore the same bytes. (The audit reads
any valid ZIP: the container's form is not evidence, its members are.)

Members:

``manifest.json``
    JCS (RFC 8785) of ``{"format": "qiledger-audit-bundle/v1", "origin",
    "log_key": <verifier key string>, "selection": {"kind": ..., parameters},
    "checkpoint_size": N, "counts": {"entries", "trust", "selected",
    "documents"}, "with_documents": bool, "files": {name: sha256 hex}}``;
    ``files`` names every other member.
``entries.jsonl`` and ``trust.jsonl``
    One line per entry in log order, the JCS of ``{"entry": <leaf data object>,
    "index": N, "selected": bool}`` and ``\\n``. Leaf data is JCS, so its bytes
    are exactly the slice of the line after ``{"entry":``. ``entries.jsonl``
    holds certificate statements: the selected ones and, as context
    (``"selected": false``), every earlier event of a certificate with a selected
    event and of the certificates it amends, so every event replays.
    ``trust.jsonl`` holds every other entry (bodies, accreditations, issuer keys)
    below the checkpoint size, selected when the selection names it.
``proofs/<index>.tlog-proof``
    C2SP tlog-proof@v1 of every line, all under the bundle checkpoint; the index
    is zero-padded to the digits of ``checkpoint_size - 1`` so that name order is
    log order.
``checkpoints/<size>.checkpoint``, ``consistency/<old>-<new>.proof``
    The bundle checkpoint (the largest) and, for index and time selections, the
    signed checkpoints around the range (the last at or before its first index,
    the first at or after its end); a consistency proof (base64 lines) between
    each two consecutive ones.
``documents/<sha256>``
    Only with documents: the exact bytes of each selected issue/amend's document.
``report.csv``, ``report.html``
    One row per selected entry (:mod:`verifier.audit_report`), derived from the
    replayed entries; the audit derives them again and compares byte for byte.

Selections (``kind``): ``log``; ``certificate`` (``certificate_id``: its events
and the amendment that supersedes it); ``issuer`` (``issuer_id``: every entry
naming it); ``time`` (``from_time``/``to_time``, RFC 3339, inclusive, by
``logged_at``); ``index`` (``from_index``/``to_index``, inclusive).

What the audit proves: every member's SHA-256 is the manifest's; every checkpoint
is signed by the log key and consistent with the next; every line's leaf data is
entry ``index`` of the log under the bundle checkpoint (its inclusion proof), its
``prev`` links the entry before wherever both are present, its envelope's one
signature verifies, and the entries replayed in log order pass the trust rules
(:mod:`verifier.trust`); the ``selected`` flags are the selection's; both reports
are the ones the entries give. What it cannot prove from a partial bundle is that
no entry was left out: only a bundle holding every index below the checkpoint
(``complete``) proves that.
"""

from __future__ import annotations

import binascii
import gc
import hashlib
import heapq
import itertools
import os
import re
import struct
import zipfile
import zlib
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any

from verifier import audit_report, checkpoint, dsse, entry, jcs, merkle, statement, trust
from verifier.audit_report import ReportRow
from verifier.encoding import hex_decode
from verifier.errors import MalformedError, QILedgerError, VerificationError
from verifier.keys import KeyId, PublicKey
from verifier.note import MAX_NOTE_SIZE, NoteVerifier
from verifier.proof import MAX_PROOF_HASHES, TlogProof, parse_consistency
from verifier.statement import DOCUMENT_TYPES, Statement, parse_instant

FORMAT = "qiledger-audit-bundle/v1"
MANIFEST, ENTRIES, TRUST = "manifest.json", "entries.jsonl", "trust.jsonl"
REPORT_CSV, REPORT_HTML = "report.csv", "report.html"
KINDS = ("log", "certificate", "issuer", "time", "index")

ZIP_DATE = (1980, 1, 1, 0, 0, 0)
ZIP_PERMISSIONS = 0o100644  # a regular file, rw-r--r--
ZIP_LEVEL = 6

# Bounds on what the audit reads (a bundle is hostile input until it checks).
MAX_MEMBERS = 2_000_000
MAX_TOTAL_SIZE = 64 << 30
MAX_LINE = entry.MAX_ENTRY_SIZE + 64
MAX_PROOF_FILE = 64 * 1024
MAX_CONSISTENCY_FILE = 8 * 1024
MAX_DOCUMENT = 64 << 20  # above the registry's own limit (verifier.dcc: 20 MiB)
MAX_RATIO = 200
"""Largest uncompressed/compressed ratio of a member above 1 MiB (DEFLATE can
reach ~1000: such a member is a bomb, not a bundle)."""
POOL_THRESHOLD = 4000
"""Above this many lines the audit checks envelope signatures in worker processes."""
SIGNATURE_CHUNK = 2000

_NAME = re.compile(
    r"manifest\.json|entries\.jsonl|trust\.jsonl|report\.csv|report\.html"
    r"|checkpoints/(?:0|[1-9][0-9]{0,18})\.checkpoint"
    r"|consistency/(?:0|[1-9][0-9]{0,18})-(?:0|[1-9][0-9]{0,18})\.proof"
    r"|proofs/[0-9]{1,19}\.tlog-proof"
    r"|documents/[0-9a-f]{64}"
)
_LINE_TAIL = re.compile(rb',"index":(0|[1-9][0-9]{0,18}),"selected":(true|false)\}\n')
_LINE_HEAD = b'{"entry":'
_LOCAL_HEADER = struct.Struct("<4s5H3I2H")  # ZIP local file header (APPNOTE 4.3.7)
_PROOF_HEAD = b"c2sp.org/tlog-proof@v1\nindex %d\n"


# --- errors -----------------------------------------------------------------------------


class BundleError(VerificationError):
    """Something in the bundle does not verify; names the member and entry index."""

    code = "bundle_invalid"

    def __init__(self, member: str, index: int | None, detail: str, code: str = "") -> None:
        where = member if index is None else f"{member}, entry {index}"
        super().__init__(f"{where}: {detail}")
        self.member = member
        self.index = index
        self.detail = detail
        if code:
            self.code = code


class BundleUnreadableError(MalformedError):
    """The file cannot be read as a ZIP at all (missing, unreadable, not a ZIP)."""

    code = "bundle_unreadable"


# --- names and lines -------------------------------------------------------------------------


def proof_name(index: int, checkpoint_size: int) -> str:
    width = len(str(max(checkpoint_size - 1, 0)))
    return f"proofs/{index:0{width}d}.tlog-proof"


def checkpoint_name(size: int) -> str:
    return f"checkpoints/{size}.checkpoint"


def consistency_name(old: int, new: int) -> str:
    return f"consistency/{old}-{new}.proof"


def document_name(digest: str) -> str:
    return f"documents/{digest}"


def encode_line(index: int, leaf_data: bytes, selected: bool) -> bytes:
    """JCS of ``{"entry", "index", "selected"}`` and a newline; ``leaf_data`` is
    already JCS, so it is spliced in as it is."""
    return b'%s%s,"index":%d,"selected":%s}\n' % (
        _LINE_HEAD,
        leaf_data,
        index,
        b"true" if selected else b"false",
    )


def parse_line(line: bytes) -> tuple[int, bytes, bool]:
    """(index, leaf data, selected) of a line; the leaf's own form is checked by
    :func:`verifier.entry.parse`, which makes the whole line canonical."""
    if not line.startswith(_LINE_HEAD):
        raise MalformedError('line does not start with {"entry":')
    cut = line.rfind(b',"index":')
    tail = _LINE_TAIL.fullmatch(line, cut) if cut > 0 else None
    if tail is None:
        raise MalformedError('line does not end with ,"index":N,"selected":BOOL} and a newline')
    return int(tail.group(1)), line[len(_LINE_HEAD) : cut], tail.group(2) == b"true"


# --- selections ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """What an export selects. Times are RFC 3339 strings as given; bounds inclusive."""

    kind: str
    certificate_id: str | None = None
    issuer_id: str | None = None
    from_time: str | None = None
    to_time: str | None = None
    from_index: int | None = None
    to_index: int | None = None

    def __post_init__(self) -> None:
        params = {
            "log": (),
            "certificate": ("certificate_id",),
            "issuer": ("issuer_id",),
            "time": ("from_time", "to_time"),
            "index": ("from_index", "to_index"),
        }
        if self.kind not in params:
            raise MalformedError(f"selection kind must be one of {', '.join(KINDS)}")
        for name in ("certificate_id", "issuer_id", "from_time", "to_time"):
            value = getattr(self, name)
            if name not in params[self.kind] and value is not None:
                raise MalformedError(f"a {self.kind} selection takes no {name}")
            if value is not None and (not isinstance(value, str) or not 0 < len(value) <= 300):
                raise MalformedError(f"selection {name} must be a non-empty string")
        for name in ("from_index", "to_index"):
            value = getattr(self, name)
            if name not in params[self.kind] and value is not None:
                raise MalformedError(f"a {self.kind} selection takes no {name}")
            if value is not None and (
                type(value) is not int or not 0 <= value <= checkpoint.MAX_TREE_SIZE
            ):
                raise MalformedError(f"selection {name} must be a non-negative integer")
        if self.kind == "certificate" and self.certificate_id is None:
            raise MalformedError("a certificate selection needs certificate_id")
        if self.kind == "issuer" and self.issuer_id is None:
            raise MalformedError("an issuer selection needs issuer_id")
        start, end = self.time_bounds
        if start is not None and end is not None and start > end:
            raise MalformedError("from_time is later than to_time")
        if (
            self.from_index is not None
            and self.to_index is not None
            and self.from_index > self.to_index
        ):
            raise MalformedError("from_index is larger than to_index")

    @property
    def time_bounds(self) -> tuple[datetime | None, datetime | None]:
        def instant(value: str | None, name: str) -> datetime | None:
            if value is None:
                return None
            try:
                return parse_instant(value)
            except MalformedError as exc:
                raise MalformedError(f"selection {name} {exc.message}") from None

        return instant(self.from_time, "from_time"), instant(self.to_time, "to_time")

    def to_json(self) -> dict[str, Any]:
        value: dict[str, Any] = {"kind": self.kind}
        for name in ("certificate_id", "issuer_id", "from_time", "to_time"):
            if getattr(self, name) is not None:
                value[name] = getattr(self, name)
        for name in ("from_index", "to_index"):
            if getattr(self, name) is not None:
                value[name] = getattr(self, name)
        return value

    @classmethod
    def from_json(cls, value: object) -> Selection:
        if not isinstance(value, dict) or not isinstance(value.get("kind"), str):
            raise MalformedError("selection must be an object with a kind")
        allowed = {"kind", "certificate_id", "issuer_id", "from_time", "to_time"}
        allowed |= {"from_index", "to_index"}
        unknown = set(value) - allowed
        if unknown:
            raise MalformedError(f"selection has unknown fields {', '.join(sorted(unknown))}")
        return cls(**value)

    def selects(self, index: int, stmt: Statement, logged_at: datetime) -> bool:
        """Whether the entry at ``index`` holding ``stmt`` is one this selection names."""
        kind = self.kind
        if kind == "log":
            return True
        if kind == "certificate":
            return stmt.type.startswith("certificate.") and (
                bool(stmt["certificate_id"] == self.certificate_id)
                or (stmt.type == "certificate.amend" and stmt["supersedes"] == self.certificate_id)
            )
        if kind == "issuer":
            return bool(stmt.get("issuer_id") == self.issuer_id)
        if kind == "time":
            start, end = self.time_bounds
            return (start is None or logged_at >= start) and (end is None or logged_at <= end)
        return (self.from_index is None or index >= self.from_index) and (
            self.to_index is None or index <= self.to_index
        )


# --- the manifest ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    origin: str
    log_key: str
    selection: Selection
    checkpoint_size: int
    counts: Mapping[str, int]
    with_documents: bool
    files: Mapping[str, str]

    def to_bytes(self) -> bytes:
        return b"".join(
            manifest_chunks(
                self.origin,
                self.log_key,
                self.selection,
                self.checkpoint_size,
                self.counts,
                self.with_documents,
                sorted(self.files.items()),
            )
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        value = jcs.parse_canonical(data)
        fields = {"format", "origin", "log_key", "selection", "checkpoint_size", "counts"}
        fields |= {"with_documents", "files"}
        if not isinstance(value, dict) or set(value) != fields:
            raise MalformedError(f"the manifest must have exactly {', '.join(sorted(fields))}")
        if value["format"] != FORMAT:
            raise MalformedError(f"format is {value['format']!r}, not {FORMAT!r}")
        size = value["checkpoint_size"]
        if type(size) is not int or not 0 <= size <= checkpoint.MAX_TREE_SIZE:
            raise MalformedError("checkpoint_size must be a non-negative integer")
        counts = value["counts"]
        if (
            not isinstance(counts, dict)
            or set(counts) != {"entries", "trust", "selected", "documents"}
            or any(type(v) is not int or v < 0 for v in counts.values())
        ):
            raise MalformedError("counts must be entries, trust, selected and documents")
        files = value["files"]
        if not isinstance(files, dict):
            raise MalformedError("files must be an object")
        for name, digest in files.items():
            hex_decode(digest, 32, f"the SHA-256 of {name}")
        if not isinstance(value["origin"], str) or not isinstance(value["log_key"], str):
            raise MalformedError("origin and log_key must be strings")
        if type(value["with_documents"]) is not bool:
            raise MalformedError("with_documents must be true or false")
        return cls(
            value["origin"],
            value["log_key"],
            Selection.from_json(value["selection"]),
            size,
            counts,
            value["with_documents"],
            files,
        )


def manifest_chunks(
    origin: str,
    log_key: str,
    selection: Selection,
    checkpoint_size: int,
    counts: Mapping[str, int],
    with_documents: bool,
    files: Iterable[tuple[str, str]],
) -> Iterator[bytes]:
    """The manifest's JCS bytes in pieces, ``files`` (name, sha256 hex) streamed in
    name order: a bundle lists a proof per entry, so its manifest is as long as the
    log part it holds and the writer need not hold it. Keys are ASCII, so JCS
    orders them by byte; names and hex digests need no escaping."""
    yield b'{"checkpoint_size":%d,"counts":%s,"files":{' % (
        checkpoint_size,
        jcs.canonical_bytes(dict(counts)),
    )
    last = ""
    for n, (name, digest) in enumerate(files):
        if not _NAME.fullmatch(name) or name == MANIFEST or name <= last:
            raise MalformedError(f"manifest file names must be bundle members in order: {name!r}")
        hex_decode(digest, 32, f"the SHA-256 of {name}")
        last = name
        yield b'%s"%s":"%s"' % (b"," if n else b"", name.encode(), digest.encode())
    yield b'},"format":%s,"log_key":%s,"origin":%s,"selection":%s,"with_documents":%s}' % (
        jcs.canonical_bytes(FORMAT),
        jcs.canonical_bytes(log_key),
        jcs.canonical_bytes(origin),
        jcs.canonical_bytes(selection.to_json()),
        b"true" if with_documents else b"false",
    )


# --- the replay both sides share -----------------------------------------------------------------


def compromise_times(statements: Iterable[Statement]) -> dict[KeyId, datetime]:
    """The earliest compromise time each key is ever reported with in ``statements``."""
    found: dict[KeyId, datetime] = {}
    for stmt in statements:
        if stmt.type == "issuer.key.revoke" and "compromised_at" in stmt.fields:
            key_id = KeyId(stmt["key_id"])
            moment = parse_instant(stmt["compromised_at"])
            if key_id not in found or moment < found[key_id]:
                found[key_id] = moment
    return found


@dataclass
class Summary:
    """Counts over the selected rows (what both reports end with)."""

    rows: int = 0
    issuers: set[str] = field(default_factory=set)
    events_by_type: Counter[str] = field(default_factory=Counter)
    events_by_verdict: Counter[str] = field(default_factory=Counter)
    certificates_by_status: Counter[str] = field(default_factory=Counter)

    def add(self, row: ReportRow) -> None:
        self.rows += 1
        self.issuers.add(row.issuer)
        self.events_by_type[row.event_type] += 1
        self.events_by_verdict[row.verdict] += 1

    def to_json(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "issuers": len(self.issuers),
            "events_by_type": dict(sorted(self.events_by_type.items())),
            "events_by_verdict": dict(sorted(self.events_by_verdict.items())),
            "certificates_by_status": dict(sorted(self.certificates_by_status.items())),
        }


def _trust_status(state: trust.TrustState, stmt: Statement) -> str:
    """What a trust entry left its subject as."""
    kind = stmt.type
    if kind == "trust.body.add":
        return "trusted"
    if kind == "trust.body.remove":
        return "removed"
    if kind.startswith("accreditation."):
        issuer = state.issuers[stmt["issuer_id"]]
        return issuer.accreditations[(stmt["body_id"], stmt["accreditation_number"])].status
    if kind == "issuer.key.add":
        return "active"
    return "compromised" if "compromised_at" in stmt.fields else "revoked"


class BundleReplay:
    """Entries of a bundle in log order through :mod:`verifier.trust`, and the report
    row of each selected one.

    ``check=True`` (the audit): every entry must pass :meth:`TrustState.admit`, and
    its signature is handed back to be verified. ``check=False`` (the registry,
    exporting entries it admitted itself): recorded only; ``certificates`` is then
    a store that answers each certificate as it stood at the entry being replayed.
    """

    def __init__(
        self,
        log_key: PublicKey,
        compromised: Mapping[KeyId, datetime],
        *,
        check: bool,
        certificates: trust.CertificateStore | None = None,
    ) -> None:
        self.state = trust.TrustState(log_key, certificates, remember_recent=check)
        self.compromised = compromised
        self.check = check
        self.summary = Summary()

    def feed(
        self, index: int, parsed: entry.LogEntry, stmt: Statement, selected: bool
    ) -> tuple[ReportRow | None, PublicKey]:
        """Replay one entry; its row (if selected) and the key whose signature on its
        envelope is still to be checked (:func:`check_lines`)."""
        state = self.state
        signature = dsse.only_signature(parsed.envelope)
        if parsed.envelope.payload_type != dsse.STATEMENT_PAYLOAD_TYPE:
            raise MalformedError(
                f"payloadType {parsed.envelope.payload_type!r} is not a statement's"
            )
        signer = state.keys_for({signature.keyid}).get(signature.keyid)
        if signer is None:
            raise state.unknown_signer(stmt, {signature.keyid})
        state.skip_to(index)
        moment = entry.parse_time(parsed.logged_at)
        if self.check:
            state.admit(signer, stmt, moment)
        state.apply(index, signer, stmt, parsed.logged_at)
        if not selected:
            return None, signer
        row = self.row(index, stmt, parsed.logged_at, moment, signer)
        self.summary.add(row)
        return row, signer

    def row(
        self, index: int, stmt: Statement, logged_at: str, moment: datetime, signer: PublicKey
    ) -> ReportRow:
        if not stmt.type.startswith("certificate."):
            subject = stmt.get("issuer_id") or stmt.get("body_id") or ""
            return ReportRow(
                logged_at,
                index,
                "",
                subject,
                stmt.type,
                _trust_status(self.state, stmt),
                "authentic",
            )
        cert = self.state.certificate(stmt["certificate_id"])
        if cert is None:  # cannot happen: apply() recorded it
            raise VerificationError(f"certificate {stmt['certificate_id']} was not recorded")
        status = trust.status_of(self.state, cert, moment).status
        since = self.compromised.get(signer.key_id)
        verdict = "void" if since is not None and moment >= since else "authentic"
        return ReportRow(
            logged_at, index, cert.certificate_id, cert.issuer_id, stmt.type, status, verdict
        )


# --- signatures in worker processes ---------------------------------------------------------


LineJob = tuple[int, str, bytes, "MemberPlace", bytes, bytes, bytes]
"""(index, member, leaf hash, where its proof file is, signer's raw public key, signature,
the signed message): the line itself was parsed, canonical form included, by the replay."""
LineFault = tuple[int, str, str, str]
"""(index, member to blame, detail, code) of the first line that fails."""
MAX_OUTSTANDING = 4
"""Chunks handed to workers and not yet answered (bounds the memory they hold)."""


def check_lines(
    jobs: list[LineJob], size: int, root: bytes, note: bytes, source: str | IO[bytes]
) -> LineFault | None:
    """What each line's entry needs checked on its own, in order: its inclusion
    proof under the bundle checkpoint and its envelope's signature by the key the
    replay found. Runs on a worker process,
    which opens the bundle at ``source`` itself; inline, ``source`` is the open file."""
    if isinstance(source, str):
        with open(source, "rb") as file:
            return check_lines(jobs, size, root, note, file)
    inclusions = merkle.InclusionVerifier(size, root)  # a chunk's proofs share their paths
    keys: dict[bytes, PublicKey] = {}  # few signers sign many entries
    for index, member, leaf_hash, place, raw_key, signature, message in jobs:
        try:
            proof = read_place(source, place, index)
        except BundleError as exc:
            return index, exc.member, exc.detail, exc.code
        name = proof_name(index, size)
        hashes = _proof_hashes(proof, index, note)
        if hashes is None:  # not the form the registry writes: parse it to say why
            try:
                parsed_proof = TlogProof.from_bytes(proof)
            except QILedgerError as exc:
                return index, name, exc.message, exc.code
            if parsed_proof.index != index:
                return index, name, f"is the proof of entry {parsed_proof.index}", "proof_invalid"
            if parsed_proof.checkpoint_note != note:
                return index, name, "is not under the bundle checkpoint", "proof_invalid"
            hashes = list(parsed_proof.hashes)
        try:
            inclusions.verify(leaf_hash, index, hashes)
        except QILedgerError as exc:
            detail = f"is not the entry its proof {name} proves: {exc.message}"
            return index, member, detail, exc.code
        try:
            key = keys.get(raw_key)
            if key is None:
                key = keys[raw_key] = PublicKey.from_raw(raw_key)
            key.verify(signature, message)
        except QILedgerError:
            return index, member, "the envelope's signature does not verify", "signature_invalid"
    return None


class _LineChecks:
    """:func:`check_lines` inline, or in chunks on worker processes while the replay
    goes on. A chunk whose worker fails (the pool broke, the machine refused a
    process) is checked inline instead: no line is left unchecked."""

    def __init__(
        self, workers: int, size: int, root: bytes, note: bytes, path: str, file: IO[bytes]
    ) -> None:
        self._context = (size, root, note)
        self._path, self._file = path, file
        self._pool: ProcessPoolExecutor | None = None
        if workers > 0:
            import multiprocessing

            # fork where there is one: spawn would re-run a caller's unguarded script
            method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
            try:
                self._pool = ProcessPoolExecutor(
                    workers, mp_context=multiprocessing.get_context(method)
                )
            except (OSError, ValueError):
                self._pool = None
        self._jobs: list[LineJob] = []
        self._outstanding: deque[tuple[Future[LineFault | None], list[LineJob]]] = deque()
        self._faults: list[LineFault] = []
        self.signatures = 0

    def add(self, job: LineJob) -> None:
        self.signatures += 1
        if self._pool is None:
            fault = check_lines([job], *self._context, self._file)
            if fault is not None:
                raise BundleError(fault[1], fault[0], fault[2], fault[3])
            return
        self._jobs.append(job)
        if len(self._jobs) >= SIGNATURE_CHUNK:
            self._submit()

    def _submit(self) -> None:
        if not self._jobs:
            return
        jobs, self._jobs = self._jobs, []
        if self._pool is not None:
            try:
                future = self._pool.submit(check_lines, jobs, *self._context, self._path)
                self._outstanding.append((future, jobs))
            except (BrokenProcessPool, RuntimeError, OSError):
                self._pool = None
        if self._pool is None:
            self._record(check_lines(jobs, *self._context, self._file))
        while len(self._outstanding) > MAX_OUTSTANDING:
            self._settle()

    def _record(self, fault: LineFault | None) -> None:
        if fault is not None:
            self._faults.append(fault)

    def _settle(self) -> None:
        future, jobs = self._outstanding.popleft()
        try:
            self._record(future.result())
        except Exception:  # noqa: BLE001  # the worker, not the line, failed: check it here
            self._record(check_lines(jobs, *self._context, self._file))

    def finish(self) -> None:
        """Wait for every check; raise for the first bad line in log order."""
        self._submit()
        while self._outstanding:
            self._settle()
        if self._faults:
            index, member, detail, code = min(self._faults)
            raise BundleError(member, index, detail, code)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)


# --- reading a bundle ----------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditResult:
    """What a bundle was proven to hold."""

    origin: str
    checkpoint_size: int
    selection: Selection
    lines: int
    selected: int
    signatures: int
    prev_links: int
    documents: int
    checkpoints: tuple[int, ...]
    complete: bool
    """Every index below the checkpoint is in the bundle (so nothing was left out)."""
    summary: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "origin": self.origin,
            "checkpoint_size": self.checkpoint_size,
            "selection": self.selection.to_json(),
            "lines": self.lines,
            "selected": self.selected,
            "signatures_verified": self.signatures,
            "prev_links_checked": self.prev_links,
            "documents": self.documents,
            "checkpoints": list(self.checkpoints),
            "complete": self.complete,
            "summary": dict(self.summary),
        }


class _Member:
    """One member read as a stream through a buffer, hashed as it goes;
    :meth:`finish` checks that it was read to its end and that its SHA-256 is
    the manifest's."""

    CHUNK = 1 << 18
    """Bytes inflated at a time (lines are cut from the buffer, not read one by one)."""

    def __init__(self, bundle: _Bundle, name: str) -> None:
        self.name = name
        self._bundle = bundle
        self._digest = hashlib.sha256()
        self._buffer = b""
        self._at = 0  # where the unread bytes of the buffer start
        self._ended = False
        self.next_index: int | None = None
        try:
            self._stream: IO[bytes] = bundle.zip.open(bundle.infos[name])
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError) as exc:
            raise BundleError(name, None, f"cannot be read from the ZIP: {exc}") from None

    def _fill(self, index: int | None) -> bool:
        """Append the next chunk to the buffer; False at the member's end."""
        if self._ended:
            return False
        try:
            data = self._stream.read(self.CHUNK)
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError) as exc:
            raise BundleError(self.name, index, f"cannot be read from the ZIP: {exc}") from None
        if not data:
            self._ended = True
            return False
        self._digest.update(data)
        self._buffer = self._buffer[self._at :] + data
        self._at = 0
        return True

    def read(self, n: int, index: int | None = None) -> bytes:
        """The next ``n`` bytes (fewer at the end)."""
        while len(self._buffer) - self._at < n and self._fill(index):
            pass
        start = self._at
        self._at = min(start + n, len(self._buffer))
        return self._buffer[start : self._at]

    def lines(self, limit: int) -> Iterator[bytes]:
        """Each line with its newline; a piece longer than ``limit`` or the last one
        without a newline comes as it is (the caller refuses it). A read failure is
        blamed on the entry the caller set in :attr:`next_index`."""
        while True:
            end = self._buffer.find(b"\n", self._at)
            if end < 0:
                if len(self._buffer) - self._at > limit:
                    yield self.read(limit + 1)
                    return
                if self._fill(self.next_index):
                    continue
                if self._at < len(self._buffer):
                    yield self.read(len(self._buffer) - self._at)
                return
            start, self._at = self._at, end + 1
            yield self._buffer[start : self._at]

    def finish(self) -> None:
        if self.read(1):
            raise BundleError(self.name, None, "has more bytes than its content")
        self._stream.close()
        if self._digest.hexdigest() != self._bundle.manifest.files[self.name]:
            raise BundleError(
                self.name, None, f"its SHA-256 is not the one {MANIFEST} lists", "digest_mismatch"
            )


class _Bundle:
    """The opened ZIP, its members checked for shape, and its verified manifest."""

    def __init__(self, file: IO[bytes], log_key: NoteVerifier) -> None:
        self.file = file
        try:
            self.zip = zipfile.ZipFile(file)
        except (
            zipfile.BadZipFile,
            zipfile.LargeZipFile,
            OSError,
            EOFError,
            ValueError,
            NotImplementedError,
            struct.error,
            KeyError,
            IndexError,
            OverflowError,
        ) as exc:  # what zipfile raises on a damaged central directory
            raise BundleUnreadableError(f"not a readable ZIP file: {exc}") from None
        self.infos: dict[str, zipfile.ZipInfo] = {}
        infos = self.zip.infolist()
        if len(infos) > MAX_MEMBERS:
            raise BundleError(
                "(container)", None, f"has more than {MAX_MEMBERS} members", "too_large"
            )
        total = 0
        for info in infos:
            name = info.filename
            if name in self.infos:
                raise BundleError(name, None, "is in the ZIP twice", "duplicate_member")
            if not _NAME.fullmatch(name):
                raise BundleError(name, None, "is not a member of the bundle format")
            if info.flag_bits & 0x1:
                raise BundleError(name, None, "is encrypted")
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise BundleError(name, None, "uses a compression other than DEFLATE")
            if info.file_size > _limit(name):
                raise BundleError(name, None, f"is larger than {_limit(name)} bytes", "too_large")
            if info.file_size > 1 << 20 and info.file_size > MAX_RATIO * max(info.compress_size, 1):
                raise BundleError(
                    name, None, "expands more than a bundle member can (a ZIP bomb)", "too_large"
                )
            total += info.file_size
            self.infos[name] = info
        if total > MAX_TOTAL_SIZE:
            raise BundleError(
                "(container)", None, "expands to more than the size limit", "too_large"
            )
        if MANIFEST not in self.infos:
            raise BundleError(MANIFEST, None, "is missing")
        self.manifest = self._read_manifest(log_key)

    def _read_manifest(self, log_key: NoteVerifier) -> Manifest:
        try:
            with self.zip.open(self.infos[MANIFEST]) as stream:
                data = stream.read(_limit(MANIFEST) + 1)
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError) as exc:
            raise BundleError(MANIFEST, None, f"cannot be read from the ZIP: {exc}") from None
        try:
            manifest = Manifest.from_bytes(data)
        except QILedgerError as exc:
            raise BundleError(MANIFEST, None, exc.message, exc.code) from None
        if manifest.log_key != str(log_key) or manifest.origin != log_key.name:
            raise BundleError(
                MANIFEST,
                None,
                f"names log {manifest.origin!r} with key {manifest.log_key!r}, "
                "not the log key given",
                "unknown_key",
            )
        listed, present = set(manifest.files), set(self.infos) - {MANIFEST}
        for name in sorted(present - listed):
            raise BundleError(name, None, f"is not listed in {MANIFEST}")
        for name in sorted(listed - present):
            raise BundleError(name, None, f"is listed in {MANIFEST} but missing")
        return manifest

    def member(self, name: str) -> _Member:
        if name not in self.infos:
            raise BundleError(name, None, "is missing")
        return _Member(self, name)

    def locate(self, name: str) -> MemberPlace:
        """Where a member's bytes are, and what they must be (for :func:`read_place`)."""
        info = self.infos.get(name)
        if info is None:
            raise BundleError(name, None, "is missing")
        return (
            name,
            info.header_offset,
            info.compress_size,
            info.file_size,
            info.CRC,
            info.compress_type,
            self.manifest.files[name],
        )

    def small(self, name: str, index: int | None = None) -> bytes:
        """A whole small member, its digest checked."""
        return read_place(self.file, self.locate(name), index)


MemberPlace = tuple[str, int, int, int, int, int, str]
"""(name, local header offset, compressed size, size, CRC-32, method, manifest SHA-256)."""


def read_place(file: IO[bytes], place: MemberPlace, index: int | None) -> bytes:
    """A small member read straight from its local header (a proof per entry:
    ``ZipFile.open`` costs more than checking the proof): the name must be the
    directory's, the bytes must inflate to the directory's size and CRC-32, and
    their SHA-256 must be the manifest's."""
    name, offset, compressed, size, crc, method, digest = place
    try:
        file.seek(offset)
        header = file.read(_LOCAL_HEADER.size)
        if len(header) != _LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
            raise BundleError(name, index, "has no local header where the directory says")
        name_length, extra_length = _LOCAL_HEADER.unpack(header)[-2:]
        if file.read(name_length) != name.encode("ascii"):
            raise BundleError(name, index, "has another name in its local header")
        file.seek(extra_length, os.SEEK_CUR)
        raw = file.read(compressed)
    except OSError as exc:
        raise BundleError(name, index, f"cannot be read: {exc.strerror}") from None
    if len(raw) != compressed:
        raise BundleError(name, index, "is cut short")
    if method == zipfile.ZIP_STORED:
        data = raw
    else:
        try:
            data = zlib.decompressobj(-15).decompress(raw, size + 1)
        except zlib.error as exc:
            raise BundleError(name, index, f"does not inflate: {exc}") from None
    if len(data) != size or zlib.crc32(data) != crc:
        raise BundleError(name, index, "does not match its size and CRC-32 in the directory")
    if hashlib.sha256(data).hexdigest() != digest:
        raise BundleError(
            name, index, f"its SHA-256 is not the one {MANIFEST} lists", "digest_mismatch"
        )
    return data


def _limit(name: str) -> int:
    if name.startswith("proofs/"):
        return MAX_PROOF_FILE
    if name.startswith("checkpoints/"):
        return MAX_NOTE_SIZE
    if name.startswith("consistency/"):
        return MAX_CONSISTENCY_FILE
    if name.startswith("documents/"):
        return MAX_DOCUMENT
    if name == MANIFEST:
        return 200 * MAX_MEMBERS + (1 << 16)
    return MAX_MEMBERS * MAX_LINE  # the two .jsonl and the two reports


def _lines(member: _Member) -> Iterator[tuple[int, bytes, bool]]:
    """(index, leaf data, selected) of each line, in strictly increasing index order."""
    last = -1
    for line in member.lines(MAX_LINE):
        try:
            if len(line) > MAX_LINE or not line.endswith(b"\n"):
                raise MalformedError("line is too long or lacks its newline")
            index, leaf, selected = parse_line(line)
        except QILedgerError as exc:
            raise BundleError(
                member.name, None, f"after entry {last}: {exc.message}", exc.code
            ) from None
        if index <= last:
            raise BundleError(member.name, index, f"comes after entry {last}: not in log order")
        last = index
        member.next_index = index + 1
        yield index, leaf, selected
    member.finish()


def _tagged(member: _Member) -> Iterator[tuple[int, str, bytes, bool]]:
    for index, leaf, selected in _lines(member):
        yield index, member.name, leaf, selected


class _ReportCheck:
    """Compares derived report bytes with a report member as both are produced."""

    def __init__(self, bundle: _Bundle, name: str) -> None:
        self.member = bundle.member(name)

    def expect(self, data: bytes, index: int | None, source: str = "the verified entries") -> None:
        if self.member.read(len(data), index) != data:
            raise BundleError(
                self.member.name, index, f"differs from the report {source} give", "report_forged"
            )

    def finish(self) -> None:
        try:
            self.member.finish()
        except BundleError as exc:
            if exc.code == "digest_mismatch":
                raise
            raise BundleError(
                self.member.name,
                None,
                "has more than the report the verified entries give",
                "report_forged",
            ) from None


def audit(
    path: str | os.PathLike[str],
    log_key: NoteVerifier,
    *,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> AuditResult:
    """Check the bundle at ``path`` with nothing but ``log_key``; raise
    :class:`BundleError` naming the first bad member and entry, or
    :class:`BundleUnreadableError` if it cannot be read at all.

    ``workers``: processes checking envelope signatures (None: one per spare CPU
    when the bundle is large; 0: inline). ``progress(done, total)`` is called
    every few thousand lines."""
    try:
        file = open(path, "rb")  # noqa: SIM115  # closed below; a with block would nest all
    except OSError as exc:
        raise BundleUnreadableError(f"cannot read {os.fspath(path)}: {exc.strerror}") from None
    try:
        bundle = _Bundle(file, log_key)
        total = bundle.manifest.counts["entries"] + bundle.manifest.counts["trust"]
        if workers is None:
            workers = max((os.cpu_count() or 1) - 1, 1) if total >= POOL_THRESHOLD else 0
        # The replay builds a certificate per entry and frees almost nothing: the
        # cyclic collector would re-scan that growing heap again and again (~10 %).
        collecting = gc.isenabled()
        gc.disable()
        try:
            return _audit(bundle, os.fspath(path), log_key, workers, progress)
        finally:
            if collecting:
                gc.enable()
    finally:
        file.close()


def _checkpoints(bundle: _Bundle, log_key: NoteVerifier) -> tuple[list[int], bytes, merkle.Hash]:
    manifest = bundle.manifest
    sizes = sorted(
        int(name[len("checkpoints/") : -len(".checkpoint")])
        for name in bundle.infos
        if name.startswith("checkpoints/")
    )
    if not sizes or sizes[-1] != manifest.checkpoint_size:
        raise BundleError(
            checkpoint_name(manifest.checkpoint_size),
            None,
            "the bundle checkpoint (the manifest's size, the largest) is missing",
        )
    roots = {}
    for size in sizes:
        name = checkpoint_name(size)
        data = bundle.small(name)
        try:
            signed = checkpoint.verify(data, log_key).checkpoint
        except QILedgerError as exc:
            raise BundleError(name, None, exc.message, exc.code) from None
        if signed.size != size:
            raise BundleError(name, None, f"holds a checkpoint of size {signed.size}")
        roots[size] = signed.root
    wanted = {consistency_name(a, b) for a, b in itertools.pairwise(sizes)}
    present = {n for n in bundle.infos if n.startswith("consistency/")}
    for name in sorted(present ^ wanted):
        raise BundleError(
            name,
            None,
            "is missing"
            if name in wanted
            else "is not between two consecutive checkpoints of the bundle",
        )
    for old, new in itertools.pairwise(sizes):
        name = consistency_name(old, new)
        try:
            hashes = parse_consistency(bundle.small(name))
            merkle.verify_consistency(old, new, hashes, roots[old], roots[new])
        except BundleError:
            raise
        except QILedgerError as exc:
            raise BundleError(name, None, exc.message, exc.code) from None
    note = bundle.small(checkpoint_name(manifest.checkpoint_size))
    return sizes, note, roots[manifest.checkpoint_size]


def _audit(
    bundle: _Bundle,
    path: str,
    log_key: NoteVerifier,
    workers: int,
    progress: Callable[[int, int], None] | None,
) -> AuditResult:
    manifest = bundle.manifest
    size = manifest.checkpoint_size
    sizes, bundle_note, root = _checkpoints(bundle, log_key)
    checks = _LineChecks(workers, size, root, bundle_note, path, bundle.file)
    try:
        return _audit_lines(bundle, log_key, checks, progress, sizes)
    finally:
        checks.close()


def _audit_lines(
    bundle: _Bundle,
    log_key: NoteVerifier,
    checks: _LineChecks,
    progress: Callable[[int, int], None] | None,
    sizes: list[int],
) -> AuditResult:
    manifest = bundle.manifest
    size = manifest.checkpoint_size
    for name in (ENTRIES, TRUST, REPORT_CSV, REPORT_HTML):
        if name not in bundle.infos:
            raise BundleError(name, None, "is missing")

    # Compromise reports first: a row's verdict knows every report in the bundle.
    trust_statements: list[Statement] = []
    for index, leaf, _ in _lines(bundle.member(TRUST)):
        try:
            trust_statements.append(statement.parse(entry.parse(leaf).envelope.payload))
        except QILedgerError as exc:
            raise BundleError(TRUST, index, exc.message, exc.code) from None
    replay = BundleReplay(log_key.public_key, compromise_times(trust_statements), check=True)
    del trust_statements

    facts = {
        "origin": manifest.origin,
        "log_key": manifest.log_key,
        "checkpoint_size": size,
        "selection": manifest.selection.to_json(),
    }
    csv_check, html_check = _ReportCheck(bundle, REPORT_CSV), _ReportCheck(bundle, REPORT_HTML)
    csv_check.expect(audit_report.csv_head(), None)
    html_check.expect(audit_report.html_head(facts), None, f"the facts of {MANIFEST}")

    last_status: dict[str, str] = {}
    wanted_documents: set[str] = set()
    lines = prev_links = trust_lines = 0
    last_index, last_leaf_hash = -1, b""
    total = manifest.counts["entries"] + manifest.counts["trust"]
    merged = heapq.merge(_tagged(bundle.member(ENTRIES)), _tagged(bundle.member(TRUST)))
    index, member_name = -1, ENTRIES
    try:
        for index, member_name, leaf, selected in merged:
            if index == last_index:
                raise BundleError(member_name, index, "is in both entries.jsonl and trust.jsonl")
            if index >= size:
                raise BundleError(member_name, index, f"is beyond the checkpoint size {size}")
            try:
                # Parsed once, canonical form included: the worker gets only what
                # it hashes and verifies.
                parsed = entry.parse(leaf)
                stmt = statement.parse(parsed.envelope.payload)
            except QILedgerError as exc:
                raise BundleError(member_name, index, exc.message, exc.code) from None
            is_certificate = stmt.type.startswith("certificate.")
            if is_certificate != (member_name == ENTRIES):
                raise BundleError(
                    member_name,
                    index,
                    f"a {stmt.type} entry belongs in {ENTRIES if is_certificate else TRUST}",
                )
            leaf_hash = merkle.leaf_hash(leaf)
            if index == 0 or index == last_index + 1:
                expected = entry.GENESIS_PREV if index == 0 else last_leaf_hash
                if parsed.prev != expected:
                    raise BundleError(
                        member_name,
                        index,
                        "its prev is not the leaf hash of the entry before it",
                        "chain_broken",
                    )
                prev_links += 1
            proof = _proof_place(bundle, member_name, index, size)
            moment = entry.parse_time(parsed.logged_at)
            if selected != manifest.selection.selects(index, stmt, moment):
                raise BundleError(
                    member_name,
                    index,
                    "is marked "
                    + ("selected" if selected else "context")
                    + f", which the selection in {MANIFEST} does not say",
                    "selection_mismatch",
                )
            try:
                row, signer = replay.feed(index, parsed, stmt, selected)
            except QILedgerError as exc:
                raise BundleError(member_name, index, exc.message, exc.code) from None
            envelope = parsed.envelope
            signature = envelope.signatures[0].sig  # the only one (feed checked)
            message = dsse.pae(envelope.payload_type, envelope.payload)
            checks.add((index, member_name, leaf_hash, proof, signer.raw, signature, message))
            if row is not None:
                csv_check.expect(audit_report.csv_row(row), index)
                html_check.expect(audit_report.html_row(row), index)
                if is_certificate:
                    last_status[row.certificate_id] = row.status_after
                if stmt.type in DOCUMENT_TYPES:
                    wanted_documents.add(stmt["document_sha256"])
            last_index, last_leaf_hash = index, leaf_hash
            lines += 1
            trust_lines += member_name == TRUST
            if progress is not None and lines % 2000 == 0:
                progress(lines, total)
    except BundleError as exc:
        # An earlier line may have failed its checks on a worker meanwhile.
        checks.finish()
        raise exc from None
    checks.finish()
    if progress is not None:
        progress(lines, total)

    summary = replay.summary
    summary.certificates_by_status.update(last_status.values())
    csv_check.finish()
    html_check.expect(audit_report.html_tail(summary.to_json()), None)
    html_check.finish()

    proofs = sum(1 for n in bundle.infos if n.startswith("proofs/"))
    if proofs != lines:
        extra = sorted(n for n in bundle.infos if n.startswith("proofs/"))
        raise BundleError(
            extra[-1] if extra else "proofs/",
            None,
            f"the bundle has {proofs} proofs for {lines} entries",
        )
    documents = _check_documents(bundle, wanted_documents)
    counts = {
        "documents": documents,
        "entries": lines - trust_lines,
        "selected": summary.rows,
        "trust": trust_lines,
    }
    if counts != dict(manifest.counts):
        raise BundleError(
            MANIFEST, None, f"counts {dict(manifest.counts)} are not the bundle's {counts}"
        )
    return AuditResult(
        manifest.origin,
        size,
        manifest.selection,
        lines,
        summary.rows,
        checks.signatures,
        prev_links,
        documents,
        tuple(sizes),
        lines == size,
        summary.to_json(),
    )


def _proof_place(bundle: _Bundle, member: str, index: int, size: int) -> MemberPlace:
    """Where the proof file of the line at ``index`` is: it is read and checked
    against the manifest with the line (:func:`check_lines`), so once its bytes
    match, a proof that fails convicts the line."""
    name = proof_name(index, size)
    if name not in bundle.infos:
        raise BundleError(member, index, f"has no inclusion proof ({name} is missing)")
    return bundle.locate(name)


def _proof_hashes(data: bytes, index: int, note: bytes) -> list[bytes] | None:
    """The hashes of a tlog-proof of ``index`` under ``note`` written exactly as
    :meth:`TlogProof.to_bytes` writes one (no extra line, canonical base64), else
    None. Checking that form costs a few C calls instead of a parse per hash."""
    head = _PROOF_HEAD % index
    tail_length = len(note) + 1
    if not data.startswith(head) or not data.endswith(note) or len(data) < len(head) + tail_length:
        return None
    block = data[len(head) : len(data) - tail_length]
    if len(block) % 45 or len(block) > 45 * MAX_PROOF_HASHES or data[-tail_length] != 0x0A:
        return None
    try:
        hashes = [
            binascii.a2b_base64(block[i : i + 44], strict_mode=True)
            for i in range(0, len(block), 45)
        ]
    except binascii.Error:
        return None
    if (
        any(len(h) != merkle.HASH_SIZE for h in hashes)
        or b"".join(map(binascii.b2a_base64, hashes)) != block
    ):
        return None
    return hashes


def _check_documents(bundle: _Bundle, wanted: set[str]) -> int:
    present = sorted(n for n in bundle.infos if n.startswith("documents/"))
    for name in present:
        digest = name[len("documents/") :]
        if digest not in wanted:
            raise BundleError(name, None, "is no selected certificate's document")
        member = bundle.member(name)
        content = hashlib.sha256()
        while chunk := member.read(1 << 20):
            content.update(chunk)
        member.finish()
        if content.hexdigest() != digest:
            raise BundleError(
                name, None, "its bytes do not have the SHA-256 it is named by", "digest_mismatch"
            )
    if bundle.manifest.with_documents:
        for digest in sorted(wanted - {n[len("documents/") :] for n in present}):
            raise BundleError(document_name(digest), None, "is missing")
    elif present:
        raise BundleError(present[0], None, "is in a bundle exported without documents")
    return len(present)
