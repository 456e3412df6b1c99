"""Audit bundle export (DESIGN.md item 10; the format is :mod:`verifier.bundle`'s).

:func:`plan` resolves a selection against the log (unknown certificate or issuer:
NotFoundError, before anything is written); :func:`write` streams the bundle to
any byte sink. Memory stays flat in the bundle's size: entries are read in pages
of :data:`PAGE` (their proofs from one read of nodes per page), every member that
``manifest.json`` must hash first is spooled to a temporary directory on disk
while its SHA-256 is taken, and the ZIP is then written from the spool by a
forward-only writer (:class:`_ZipWriter`, its central directory spooled too), so
the CLI's file and the HTTP stream are the same bytes.
What stays in memory grows only with the trust entries (bodies, issuers, keys,
which the registry holds in memory anyway), the context indices of an index or
time selection (8 bytes each), and, with documents, the selected documents'
digests.

The reports are computed by the same replay the audit runs
(:class:`verifier.bundle.BundleReplay`), here without signature checks (the
registry admitted these entries itself) and over a certificate store that answers
each certificate as it stood at the entry being replayed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import os
import struct
import tempfile
import zlib
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from registry.errors import NotFoundError, StorageError
from registry.ledger import Ledger
from registry.storage.protocol import StoredCheckpoint
from verifier import audit_report, bundle, entry, statement, trust
from verifier.bundle import Selection
from verifier.errors import MalformedError
from verifier.proof import TlogProof, format_consistency
from verifier.statement import DOCUMENT_TYPES

PAGE = 500
_SPOOL_CHUNK = 1 << 20
_WRITE_BUFFER = 256 * 1024
_RECORD = struct.Struct(">QI")  # index, length
_ZIP32_LIMIT = 0xFFFFFFFF
_ZIP16_LIMIT = 0xFFFF
"""At and above these a ZIP field holds its sentinel and the ZIP64 record the value
(tests lower them to reach the ZIP64 records with a small bundle)."""


def _field32(value: int) -> int:
    return 0xFFFFFFFF if value >= _ZIP32_LIMIT else value


def _field16(value: int) -> int:
    return 0xFFFF if value >= _ZIP16_LIMIT else value


@dataclass(frozen=True)
class ExportPlan:
    """A selection resolved against the log at one checkpoint."""

    selection: Selection
    with_documents: bool
    checkpoint: StoredCheckpoint
    checkpoint_sizes: tuple[int, ...]
    """Sorted; the last is the bundle checkpoint's."""
    index_range: tuple[int, int] | None
    """[start, end) of an index or time selection."""
    certificate_indices: tuple[int, ...] = ()
    """A certificate selection's entries (few: one certificate's history)."""

    @property
    def size(self) -> int:
        return self.checkpoint.size


@dataclass(frozen=True)
class ExportResult:
    entries: int
    trust: int
    selected: int
    documents: int
    checkpoint_size: int


def selection_of(
    *,
    certificate: str | None = None,
    issuer: str | None = None,
    from_time: str | None = None,
    to_time: str | None = None,
    from_index: int | None = None,
    to_index: int | None = None,
) -> Selection:
    """The selection a command line or query names (at most one kind; none: the log)."""
    kinds = [
        kind
        for kind, given in (
            ("certificate", certificate is not None),
            ("issuer", issuer is not None),
            ("time", from_time is not None or to_time is not None),
            ("index", from_index is not None or to_index is not None),
        )
        if given
    ]
    if len(kinds) > 1:
        raise MalformedError(f"name one selection, not {' and '.join(kinds)}")
    kind = kinds[0] if kinds else "log"
    selection = Selection(
        kind,
        certificate_id=certificate,
        issuer_id=issuer,
        from_time=from_time,
        to_time=to_time,
        from_index=from_index,
        to_index=to_index,
    )
    selection.time_bounds  # noqa: B018  # parses the times: a bad one is refused here
    return selection


def plan(ledger: Ledger, selection: Selection, *, with_documents: bool = False) -> ExportPlan:
    """Resolve ``selection`` at the latest checkpoint; NotFoundError for an unknown
    certificate or issuer or an index range outside the log."""
    stored = ledger.latest_checkpoint()
    size = stored.size
    sizes = {size}
    index_range: tuple[int, int] | None = None
    certificate_indices: tuple[int, ...] = ()
    if selection.kind == "certificate":
        assert selection.certificate_id is not None
        certificate_indices = tuple(
            ledger.certificate_entry_indices(selection.certificate_id, size)
        )
        if not certificate_indices:
            raise NotFoundError(f"no certificate {selection.certificate_id} in the log")
    elif selection.kind == "issuer":
        if selection.issuer_id not in ledger.trust_state().issuers:
            raise NotFoundError(f"no issuer {selection.issuer_id} in the log")
    elif selection.kind in ("time", "index"):
        if selection.kind == "time":
            start_time, end_time = selection.time_bounds
            start = (
                0
                if start_time is None
                else ledger.first_index_logged(start_time, size, after=False)
            )
            end = (
                size if end_time is None else ledger.first_index_logged(end_time, size, after=True)
            )
        else:
            start = selection.from_index or 0
            end = size if selection.to_index is None else min(selection.to_index + 1, size)
            if start >= size:
                raise NotFoundError(f"no entry at index {start}: the log has {size} entries")
        end = max(start, end)
        index_range = (start, end)
        sizes.add(ledger.checkpoint_around(start, at_or_after=False).size)
        sizes.add(ledger.checkpoint_around(end, at_or_after=True).size)
    return ExportPlan(
        selection,
        with_documents,
        stored,
        tuple(sorted(s for s in sizes if s <= size)),
        index_range,
        certificate_indices,
    )


# --- which entries, in log order ----------------------------------------------------------


def _issuer_indices(ledger: Ledger, issuer_id: str, size: int) -> Iterator[int]:
    after = -1
    while True:
        page = ledger.issuer_entry_indices(issuer_id, after, size, 2000)
        yield from page
        if len(page) < 2000:
            return
        after = page[-1]


def _included(ledger: Ledger, export: ExportPlan, trust_indices: Sequence[int]) -> Iterator[int]:
    """Every index the bundle holds, in order, once."""
    size, kind = export.size, export.selection.kind
    if kind == "log":
        yield from range(size)
        return
    streams: list[Iterable[int]] = [trust_indices]
    if kind == "certificate":
        streams.append(export.certificate_indices)
    elif kind == "issuer":
        assert export.selection.issuer_id is not None
        streams.append(_issuer_indices(ledger, export.selection.issuer_id, size))
    else:
        assert export.index_range is not None
        start, end = export.index_range
        streams.append(range(start, end))
        streams.append(array("q", ledger.range_context_indices(start, end)))
    last = -1
    for index in heapq.merge(*streams):
        if index != last:
            yield index
            last = index


def _pages(indices: Iterator[int]) -> Iterator[list[int]]:
    page: list[int] = []
    for index in indices:
        page.append(index)
        if len(page) == PAGE:
            yield page
            page = []
    if page:
        yield page


# --- certificates as they stood -------------------------------------------------------------


class _AsOf:
    """A :class:`verifier.trust.CertificateStore` answering each certificate as it
    stood after the entry at :attr:`index`: its events up to there, superseded only
    by an amendment logged by then. Read a page at a time from the certificate
    tables (the certificates' current rows); nothing is written (the tables hold it)."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self._held: dict[str, trust.Certificate] = {}
        self.index = -1

    def load(self, certificate_ids: Iterable[str]) -> None:
        """Hold these certificates and their successors (one page's worth)."""
        self._held = self._ledger.certificates_by_id(sorted(set(certificate_ids)))
        successors = {c.superseded_by for c in self._held.values() if c.superseded_by}
        missing = sorted(s for s in successors if s not in self._held)
        if missing:
            self._held.update(self._ledger.certificates_by_id(missing))

    def current(self, certificate_id: str) -> trust.Certificate | None:
        held = self._held.get(certificate_id)
        if held is None:
            found = self._ledger.certificates_by_id([certificate_id])
            held = found.get(certificate_id)
            if held is not None:
                self._held[certificate_id] = held
        return held

    def get(self, certificate_id: str) -> trust.Certificate | None:
        cert = self.current(certificate_id)
        if cert is None or cert.events[0].index > self.index:
            return None
        successor_id = cert.superseded_by
        if successor_id is not None:
            successor = self.current(successor_id)
            if successor is None or successor.events[0].index > self.index:
                successor_id = None
        return dataclasses.replace(
            cert,
            events=[e for e in cert.events if e.index <= self.index],
            superseded_by=successor_id,
        )

    def with_document(self, document_sha256: str) -> list[trust.Certificate]:
        return []  # only admission asks, and an export does not admit

    def add(self, certificate: trust.Certificate) -> None:
        pass

    def add_event(self, certificate: trust.Certificate, event: trust.CertificateEvent) -> None:
        pass

    def supersede(self, certificate: trust.Certificate, successor_id: str) -> None:
        pass


def _last_selected(export: ExportPlan, cert: trust.Certificate, index: int) -> bool:
    """Whether ``index`` is the last selected entry about ``cert`` (the summary counts
    each certificate by its status after that one)."""
    if export.selection.kind == "certificate" and cert.certificate_id != (
        export.selection.certificate_id
    ):
        return True  # the amendment superseding the selected certificate: its one entry
    low, high = 0, export.size
    if export.index_range is not None:
        low, high = export.index_range
    selected = [e.index for e in cert.events if low <= e.index < high]
    return bool(selected) and selected[-1] == index


# --- spooling ---------------------------------------------------------------------------------


class _Spool:
    """A member written to disk while its SHA-256 is taken."""

    def __init__(self, directory: Path, name: str, head: bytes = b"") -> None:
        self.path = directory / name.replace("/", "_")
        self._file: IO[bytes] = open(self.path, "wb")  # noqa: SIM115  # closed by close()
        self.digest = hashlib.sha256()
        self.size = 0
        self.write(head)

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self.digest.update(data)
        self.size += len(data)

    def close(self) -> None:
        self._file.close()


class _ProofSpool:
    """Every proof file in index order (so in name order), each with its length."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "proofs.spool"
        self._file: IO[bytes] = open(self.path, "wb")  # noqa: SIM115  # closed by close()
        self.count = 0

    def write(self, index: int, data: bytes) -> None:
        self._file.write(_RECORD.pack(index, len(data)) + data)
        self.count += 1

    def close(self) -> None:
        self._file.close()

    def records(self) -> Iterator[tuple[int, bytes]]:
        with open(self.path, "rb", buffering=_SPOOL_CHUNK) as spool:
            while head := spool.read(_RECORD.size):
                index, length = _RECORD.unpack(head)
                yield index, spool.read(length)


class _ZipWriter:
    """A ZIP written strictly forward into ``sink`` (the container of
    :mod:`verifier.bundle`): each member a local header without sizes (flag bit 3),
    its DEFLATE stream and a data descriptor; then the central directory, spooled to
    ``directory_spool`` as it grows (one record per member: never held in memory),
    and the end records, ZIP64 ones where sizes, offsets or the member count need
    them (APPNOTE 6.3.10: 4.3.7, 4.3.9, 4.3.12, 4.3.14-16, 4.5.3). Headers depend on
    the content alone, so one selection gives one file, whatever reads the stream."""

    _VERSION_MADE_BY = (3 << 8) | 45  # Unix; the spec's version 4.5
    _DOS_DATE = (0 << 9) | (1 << 5) | 1  # 1980-01-01 (bundle.ZIP_DATE)
    _DOS_TIME = 0

    def __init__(self, sink: Callable[[bytes], Any], directory_spool: Path) -> None:
        self._sink = sink
        self._buffer = bytearray()
        self.offset = 0
        self._directory: IO[bytes] = open(directory_spool, "wb+")  # noqa: SIM115  # closed by close()
        self._directory_size = 0
        self.count = 0

    def _write(self, data: bytes) -> None:
        self._buffer += data
        self.offset += len(data)
        if len(self._buffer) >= _WRITE_BUFFER:
            self._flush()

    def _flush(self) -> None:
        if self._buffer:
            self._sink(bytes(self._buffer))
            self._buffer.clear()

    def member(self, name: str, chunks: Iterable[bytes], size_hint: int) -> None:
        """One member; ``size_hint`` (its exact size, or 0 for one known to be small)
        decides ZIP64 before its bytes are written."""
        encoded = name.encode("ascii")
        zip64 = size_hint * 1.05 > _ZIP32_LIMIT
        version = 45 if zip64 else 20
        start = self.offset
        extra = struct.pack("<HHQQ", 1, 16, 0, 0) if zip64 else b""
        self._write(
            struct.pack(
                "<IHHHHHIIIHH",
                0x04034B50,
                version,
                0x08,
                8,
                self._DOS_TIME,
                self._DOS_DATE,
                0,
                0,
                0,
                len(encoded),
                len(extra),
            )
            + encoded
            + extra
        )
        deflate = zlib.compressobj(bundle.ZIP_LEVEL, zlib.DEFLATED, -15)
        crc = size = compressed = 0
        for chunk in chunks:
            crc = zlib.crc32(chunk, crc)
            size += len(chunk)
            out = deflate.compress(chunk)
            compressed += len(out)
            self._write(out)
        out = deflate.flush()
        compressed += len(out)
        self._write(out)
        if not zip64 and max(size, compressed) >= _ZIP32_LIMIT:
            raise StorageError(f"bundle member {name} outgrew its size estimate")
        sizes = "QQ" if zip64 else "II"
        self._write(struct.pack(f"<II{sizes}", 0x08074B50, crc, compressed, size))
        self._central(encoded, version, crc, compressed, size, start, zip64)
        self.count += 1

    def _central(
        self,
        name: bytes,
        version: int,
        crc: int,
        compressed: int,
        size: int,
        start: int,
        zip64: bool,
    ) -> None:
        fields: list[int] = []
        if zip64:
            fields += [size, compressed]
        if start >= _ZIP32_LIMIT:
            fields.append(start)
        extra = struct.pack(f"<HH{len(fields)}Q", 1, 8 * len(fields), *fields) if fields else b""
        record = (
            struct.pack(
                "<IHHHHHHIIIHHHHHII",
                0x02014B50,
                self._VERSION_MADE_BY,
                45 if extra else version,
                0x08,
                8,
                self._DOS_TIME,
                self._DOS_DATE,
                crc,
                0xFFFFFFFF if zip64 else compressed,
                0xFFFFFFFF if zip64 else size,
                len(name),
                len(extra),
                0,
                0,
                0,
                bundle.ZIP_PERMISSIONS << 16,
                _field32(start),
            )
            + name
            + extra
        )
        self._directory.write(record)
        self._directory_size += len(record)

    def close(self) -> None:
        """The central directory and the end records; then everything is in ``sink``."""
        directory_at = self.offset
        self._directory.seek(0)
        while chunk := self._directory.read(_SPOOL_CHUNK):
            self._write(chunk)
        self._directory.close()
        size, count = self._directory_size, self.count
        if count >= _ZIP16_LIMIT or size >= _ZIP32_LIMIT or directory_at >= _ZIP32_LIMIT:
            end64_at = self.offset
            self._write(
                struct.pack(
                    "<IQHHIIQQQQ",
                    0x06064B50,
                    44,
                    self._VERSION_MADE_BY,
                    45,
                    0,
                    0,
                    count,
                    count,
                    size,
                    directory_at,
                )
            )
            self._write(struct.pack("<IIQI", 0x07064B50, 0, end64_at, 1))
        self._write(
            struct.pack(
                "<IHHHHIIH",
                0x06054B50,
                0,
                0,
                _field16(count),
                _field16(count),
                _field32(size),
                _field32(directory_at),
                0,
            )
        )
        self._flush()


# --- writing ---------------------------------------------------------------------------------


def write(
    ledger: Ledger,
    export: ExportPlan,
    sink: Callable[[bytes], Any],
    *,
    spool_dir: str | None = None,
) -> ExportResult:
    """Stream the bundle of ``export`` into ``sink`` (called with successive chunks)."""
    with tempfile.TemporaryDirectory(prefix="qiledger-export-", dir=spool_dir) as tmp:
        return _write(ledger, export, sink, Path(tmp))


def _write(
    ledger: Ledger, export: ExportPlan, sink: Callable[[bytes], Any], tmp: Path
) -> ExportResult:
    size, selection = export.size, export.selection
    facts = {
        "origin": ledger.identity.origin,
        "log_key": str(ledger.identity.verifier),
        "checkpoint_size": size,
        "selection": selection.to_json(),
    }
    # The trust entries first: their indices, and every compromise report (a row's
    # verdict knows them all, as the audit does).
    trust_indices = array("q")
    trust_statements = []
    for index, data in ledger.trust_entries(size):
        trust_indices.append(index)
        stmt = _statement(data)
        if stmt.type == "issuer.key.revoke":
            trust_statements.append(stmt)
    store = _AsOf(ledger)
    replay = bundle.BundleReplay(
        ledger.identity.public_key,
        bundle.compromise_times(trust_statements),
        check=False,
        certificates=store,
    )
    entries = _Spool(tmp, bundle.ENTRIES)
    trust_lines = _Spool(tmp, bundle.TRUST)
    report_csv = _Spool(tmp, bundle.REPORT_CSV, audit_report.csv_head())
    report_html = _Spool(tmp, bundle.REPORT_HTML, audit_report.html_head(facts))
    proofs = _ProofSpool(tmp)
    documents: set[str] = set()
    counts = {"entries": 0, "trust": 0, "selected": 0}
    for page in _pages(_included(ledger, export, trust_indices)):
        stored = ledger.entries_at(page)
        hashes = ledger.inclusion_proofs(page, size)
        parsed_page = []
        for index in page:
            parsed = entry.parse(stored[index].data, form_checked=True)
            parsed_page.append((index, parsed, _statement(stored[index].data, parsed)))
        store.load(
            name
            for _, _, stmt in parsed_page
            if stmt.type.startswith("certificate.")
            for name in (stmt["certificate_id"], stmt.get("supersedes"))
            if name is not None
        )
        for (index, parsed, stmt), proof in zip(parsed_page, hashes, strict=True):
            moment = entry.parse_time(parsed.logged_at)
            selected = selection.selects(index, stmt, moment)
            is_certificate = stmt.type.startswith("certificate.")
            line = bundle.encode_line(index, stored[index].data, selected)
            (entries if is_certificate else trust_lines).write(line)
            counts["entries" if is_certificate else "trust"] += 1
            proofs.write(index, TlogProof(index, tuple(proof), export.checkpoint.note).to_bytes())
            store.index = index
            row, _ = replay.feed(index, parsed, stmt, selected)
            if row is None:
                continue
            counts["selected"] += 1
            report_csv.write(audit_report.csv_row(row))
            report_html.write(audit_report.html_row(row))
            if is_certificate:
                cert = store.current(stmt["certificate_id"])
                if cert is not None and _last_selected(export, cert, index):
                    replay.summary.certificates_by_status[row.status_after] += 1
            if export.with_documents and stmt.type in DOCUMENT_TYPES:
                documents.add(stmt["document_sha256"])
    report_html.write(audit_report.html_tail(replay.summary.to_json()))
    for spool in (entries, trust_lines, report_csv, report_html, proofs):
        spool.close()

    checkpoints = {
        bundle.checkpoint_name(s): (
            export.checkpoint.note if s == size else ledger.checkpoint_at(s).note
        )
        for s in export.checkpoint_sizes
    }
    consistency = {
        bundle.consistency_name(old, new): format_consistency(ledger.consistency_proof(old, new))
        for old, new in zip(export.checkpoint_sizes, export.checkpoint_sizes[1:], strict=False)
    }
    small = {**checkpoints, **consistency}
    by_name = {
        bundle.ENTRIES: entries,
        bundle.TRUST: trust_lines,
        bundle.REPORT_CSV: report_csv,
        bundle.REPORT_HTML: report_html,
    }

    def files() -> Iterator[tuple[str, str]]:
        """(name, sha256) of every member but the manifest, in name order."""
        listed: list[tuple[str, str]] = [
            (n, hashlib.sha256(d).hexdigest()) for n, d in small.items()
        ]
        listed += [(bundle.document_name(d), d) for d in documents]
        listed += [(n, s.digest.hexdigest()) for n, s in by_name.items()]
        listed.sort()
        before = [f for f in listed if f[0] < "proofs/"]
        after = [f for f in listed if f[0] > "proofs/"]
        yield from before
        for index, record in proofs.records():
            yield bundle.proof_name(index, size), hashlib.sha256(record).hexdigest()
        yield from after

    manifest_counts = {
        "documents": len(documents),
        "entries": counts["entries"],
        "selected": counts["selected"],
        "trust": counts["trust"],
    }
    manifest = bundle.manifest_chunks(
        ledger.identity.origin,
        str(ledger.identity.verifier),
        selection,
        size,
        manifest_counts,
        export.with_documents,
        files(),
    )
    archive = _ZipWriter(sink, tmp / "directory.spool")
    members: list[tuple[str, Callable[[], Iterable[bytes]], int]] = []
    for name, data in small.items():
        members.append((name, _const(data), len(data)))
    for digest in documents:
        members.append((bundle.document_name(digest), _document(ledger, digest), 0))
    for name, spool in by_name.items():
        members.append((name, _file_chunks(spool.path), spool.size))
    # The manifest's size is known only once written: an upper bound decides ZIP64.
    manifest_bound = 256 + 200 * (len(members) + proofs.count)
    members.append((bundle.MANIFEST, lambda: manifest, manifest_bound))
    members.sort(key=lambda m: m[0])
    for name, chunks, known_size in members:
        archive.member(name, chunks(), known_size)
        if name == bundle.MANIFEST:  # the proofs sort right after it
            for index, record in proofs.records():
                archive.member(bundle.proof_name(index, size), (record,), len(record))
    archive.close()
    return ExportResult(
        counts["entries"], counts["trust"], counts["selected"], len(documents), size
    )


def _statement(data: bytes, parsed: entry.LogEntry | None = None) -> statement.Statement:
    if parsed is None:
        parsed = entry.parse(data, form_checked=True)
    return statement.parse(parsed.envelope.payload, form_checked=True)


def _const(data: bytes) -> Callable[[], Iterable[bytes]]:
    return lambda: (data,)


def _file_chunks(path: Path) -> Callable[[], Iterable[bytes]]:
    def chunks() -> Iterator[bytes]:
        with open(path, "rb") as spool:
            while chunk := spool.read(_SPOOL_CHUNK):
                yield chunk

    return chunks


def _document(ledger: Ledger, digest: str) -> Callable[[], Iterable[bytes]]:
    return lambda: (ledger.document(digest).data,)


def export_to_file(
    ledger: Ledger, export: ExportPlan, path: Path, *, spool_dir: str | None = None
) -> ExportResult:
    """Write the bundle to ``path`` (through a temporary file beside it, renamed at the
    end, so a failed export leaves no half bundle)."""
    partial = path.with_name(path.name + ".partial")
    try:
        with open(partial, "wb") as out:
            result = write(ledger, export, out.write, spool_dir=spool_dir)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return result
