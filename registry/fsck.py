"""``qiledger fsck``: re-read everything stored and check it, streaming.

Checks, in one pass over the entries in index order (memory: one batch of
entries, the O(log n) right edge of the tree, and the replayed bodies, issuers
and keys; the replayed certificates go to a scratch file,
:mod:`registry.storage.scratch_certificates`):

- indices run 0..n-1 without gaps;
- each entry's leaf data is canonical JCS with the exact fields, and its stored
  leaf hash, statement hash and ``logged_at`` column match the data;
- the ``prev`` chain links every entry to the one before; ``logged_at`` never
  goes backwards;
- every envelope carries one signature, it verifies, and the statement passes the
  trust rules of :mod:`verifier.trust` at its ``logged_at`` (a full replay of the
  log; it refuses a statement logged twice);
- every certificate.issue/amend entry's document is stored (and, below, every
  stored document hashes to its digest);
- every stored tree node equals the one recomputed from the leaves, and there
  are no extra nodes;
- every checkpoint is signed by the log key, names this log, and its size and
  root match the recomputed tree;
- every stored document's bytes hash to the digest it is stored under;
- the certificate tables (:mod:`registry.storage.certificate_index`) hold
  exactly what the replay derived: every certificate row and event, the list of
  non-certificate entries, and the size they reflect; every link and standard
  row is the one its certificate's statement gives (compared per batch of
  entries, so memory stays bounded), and no row names an entry beyond the log.

The first problem raises :class:`IntegrityError` naming where it is.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from registry.errors import IntegrityError
from registry.ledger import Ledger
from registry.storage.certificate_index import recorded_status
from registry.storage.protocol import StoredCheckpoint, StoredEntry
from registry.storage.scratch_certificates import ScratchCertificates
from verifier import checkpoint, entry, merkle, statement, trust
from verifier.errors import QILedgerError
from verifier.links import standard_key
from verifier.merkle import Hash, Node
from verifier.statement import DOCUMENT_TYPES

BATCH = 1000


@dataclass(frozen=True)
class FsckReport:
    entries: int
    nodes: int
    checkpoints: int
    root: Hash
    documents: int = 0
    certificates: int = 0


def fsck(ledger: Ledger, progress: Callable[[int, int], None] | None = None) -> FsckReport:
    """Check everything stored (see the module). The replay's certificates go to
    a scratch file in the system's temporary directory (``TMPDIR``), deleted
    afterwards: memory stays bounded at any log size."""
    with tempfile.TemporaryDirectory(prefix="qiledger-fsck-") as tmp:
        replayed = ScratchCertificates(Path(tmp) / "replayed-certificates.db")
        try:
            return _fsck(ledger, replayed, progress)
        finally:
            replayed.close()


def _fsck(
    ledger: Ledger,
    replayed: ScratchCertificates,
    progress: Callable[[int, int], None] | None,
) -> FsckReport:
    storage = ledger.storage
    total = storage.tail_size()
    checkpoints = storage.iter_checkpoints()
    next_cp = next(checkpoints, None)
    state = trust.TrustState(ledger.identity.public_key, replayed)
    edge = merkle.RightEdge()
    prev = entry.GENESIS_PREV
    last_time = ""
    expected_index = 0
    checked_checkpoints = 0
    expected_nodes = 0

    def check_checkpoints_at(size: int) -> None:
        nonlocal next_cp, checked_checkpoints
        while next_cp is not None and next_cp.size == size:
            root = edge.root()
            _check_checkpoint(ledger, next_cp, root)
            checked_checkpoints += 1
            next_cp = next(checkpoints, None)
        if next_cp is not None and next_cp.size < size:
            raise IntegrityError(
                f"checkpoint at size {next_cp.size} is out of order",
                where=f"checkpoint {next_cp.size}",
            )

    trust_indices: list[int] = []
    check_checkpoints_at(0)
    for chunk in _chunks(storage.iter_entries(0, BATCH), BATCH):
        computed: dict[Node, bytes] = {}
        documents_needed: dict[str, int] = {}
        link_rows: list[tuple[object, ...]] = []
        standard_rows: list[tuple[object, ...]] = []
        for stored in chunk:
            where = f"entry {stored.index}"
            if stored.index != expected_index:
                raise IntegrityError(
                    f"entry {expected_index} is missing (next stored index is {stored.index})",
                    where=f"entry {expected_index}",
                )
            parsed, stmt = _check_entry(stored, prev, last_time, state, where)
            if stmt.type in DOCUMENT_TYPES:
                documents_needed.setdefault(stmt["document_sha256"], stored.index)
                _expected_references(stored.index, stmt, link_rows, standard_rows)
            if not stmt.type.startswith("certificate."):
                trust_indices.append(stored.index)
            prev = stored.leaf_hash
            last_time = parsed.logged_at
            edge.append(stored.leaf_hash, computed)
            expected_index += 1
            check_checkpoints_at(expected_index)
        _check_nodes(ledger, computed)
        _check_documents_stored(ledger, documents_needed)
        _check_references(ledger, chunk[0].index, chunk[-1].index, link_rows, standard_rows)
        expected_nodes += len(computed)
        if progress is not None:
            progress(expected_index, total)
    if expected_index != total:
        raise IntegrityError(
            f"the log claims {total} entries but {expected_index} were read",
            where=f"entry {expected_index}",
        )
    if next_cp is not None:
        raise IntegrityError(
            f"checkpoint at size {next_cp.size} is beyond the log's {total} entries",
            where=f"checkpoint {next_cp.size}",
        )
    stored_nodes = storage.count_nodes()
    if stored_nodes != expected_nodes:
        raise IntegrityError(
            f"{stored_nodes} tree nodes stored, {expected_nodes} expected",
            where="tree nodes",
        )
    documents = 0
    for document in storage.iter_documents():
        if hashlib.sha256(document.data).hexdigest() != document.digest:
            raise IntegrityError(
                f"document {document.digest}: its bytes no longer hash to its digest",
                where=f"document {document.digest[:16]}",
            )
        documents += 1
    certificates = _check_certificate_tables(ledger, replayed, trust_indices, total)
    root = edge.root()
    return FsckReport(
        expected_index, stored_nodes, checked_checkpoints, root, documents, certificates
    )


def _chunks(items: Iterator[StoredEntry], size: int) -> Iterator[list[StoredEntry]]:
    chunk: list[StoredEntry] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _check_entry(
    stored: StoredEntry,
    prev: bytes,
    last_time: str,
    state: trust.TrustState,
    where: str,
) -> tuple[entry.LogEntry, statement.Statement]:
    try:
        parsed = entry.parse(stored.data)
    except QILedgerError as exc:
        raise IntegrityError(f"{where}: leaf data is damaged: {exc.message}", where=where) from None
    if merkle.leaf_hash(stored.data) != stored.leaf_hash:
        raise IntegrityError(f"{where}: stored leaf hash does not match its data", where=where)
    if parsed.prev != prev:
        raise IntegrityError(f"{where}: prev does not link to the entry before", where=where)
    if parsed.logged_at != stored.logged_at:
        raise IntegrityError(f"{where}: logged_at column differs from the data", where=where)
    if parsed.logged_at < last_time:
        raise IntegrityError(f"{where}: logged_at goes backwards", where=where)
    if hashlib.sha256(parsed.envelope.payload).digest() != stored.statement_hash:
        raise IntegrityError(f"{where}: stored statement hash does not match", where=where)
    try:
        stmt = trust.replay_one(state, stored.index, stored.data, trust_append_checks=False)
    except QILedgerError as exc:
        raise IntegrityError(f"{where}: does not replay: {exc.message}", where=where) from None
    return parsed, stmt


def _check_documents_stored(ledger: Ledger, needed: dict[str, int]) -> None:
    """Every certificate entry's document is stored (one query per batch)."""
    if not needed:
        return
    stored = ledger.storage.stored_document_digests(needed)
    for digest, index in needed.items():
        if digest not in stored:
            raise IntegrityError(
                f"entry {index}: its document (SHA-256 {digest}) is not stored",
                where=f"entry {index}",
            )


def _check_nodes(ledger: Ledger, computed: dict[Node, bytes]) -> None:
    stored = ledger.storage.read_nodes_uncached(list(computed))
    for node in sorted(computed, key=lambda n: (n[1] << n[0], n[0])):
        level, index = node
        if node not in stored:
            raise IntegrityError(
                f"tree node (level {level}, index {index}) is missing",
                where=f"node {level}/{index}",
            )
        if stored[node] != computed[node]:
            first_leaf = index << level
            raise IntegrityError(
                f"tree node (level {level}, index {index}) over entries "
                f"{first_leaf}..{first_leaf + (1 << level) - 1} differs from the recomputed hash",
                where=f"node {level}/{index}",
            )


def _check_checkpoint(ledger: Ledger, stored: StoredCheckpoint, root: bytes) -> None:
    where = f"checkpoint {stored.size}"
    try:
        signed = checkpoint.verify(stored.note, ledger.identity.verifier)
    except QILedgerError as exc:
        raise IntegrityError(
            f"checkpoint at size {stored.size}: {exc.message}", where=where
        ) from None
    cp = signed.checkpoint
    if cp.size != stored.size or cp.root != stored.root:
        raise IntegrityError(
            f"checkpoint at size {stored.size}: stored size/root differ from the signed note",
            where=where,
        )
    if cp.root != root:
        raise IntegrityError(
            f"checkpoint at size {stored.size}: signed root differs from the recomputed tree",
            where=where,
        )


_REINDEX = "; the log is intact: 'qiledger reindex' rebuilds the tables from it"


def _check_certificate_tables(
    ledger: Ledger, replayed: ScratchCertificates, trust_indices: list[int], total: int
) -> int:
    """The derived tables equal the replay's certificates, row by row, in log
    order (two sorted streams: memory stays bounded); returns how many
    certificates were compared."""
    index = ledger.certificate_index
    with ledger.storage.read() as tx:
        size = index.derived_size(tx)
        if size != total:
            raise IntegrityError(
                f"the certificate tables reflect {size} entries, the log has {total}{_REINDEX}",
                where="certificate tables",
            )
        beyond = index.reference_rows_from(tx, total)
        if beyond:
            raise IntegrityError(
                f"{beyond} certificate_links/certificate_standards rows name entries beyond "
                f"the log's {total}{_REINDEX}",
                where="certificate_links",
            )
        stored_trust = index.trust_indices(tx)
        if stored_trust != trust_indices:
            wrong = next(
                (a for a, b in zip(stored_trust, trust_indices, strict=False) if a != b),
                min(len(stored_trust), len(trust_indices)),
            )
            raise IntegrityError(
                f"trust_entries lists {len(stored_trust)} non-certificate entries, the log "
                f"has {len(trust_indices)} (first difference near entry {wrong}){_REINDEX}",
                where="trust_entries",
            )
        expected = replayed.in_log_order()  # as the tables are read
        compared = 0
        for row in index.iter_rows(tx):
            cert = row.certificate
            want = next(expected, None)
            where = f"certificate {cert.certificate_id}"
            if want is None or want.certificate_id != cert.certificate_id:
                wanted = "no more certificates" if want is None else f"{want.certificate_id} next"
                raise IntegrityError(
                    f"certificates row {cert.certificate_id} (entry {cert.events[0].index}) "
                    f"is not the log's next certificate (the log has {wanted}){_REINDEX}",
                    where=where,
                )
            problem = _difference(cert, want)
            if problem is None and row.recorded_status != recorded_status(want):
                problem = (
                    f"recorded_status is {row.recorded_status!r}, the log says "
                    f"{recorded_status(want)!r}"
                )
            if problem is not None:
                raise IntegrityError(
                    f"certificates row {cert.certificate_id}: {problem}{_REINDEX}", where=where
                )
            compared += 1
        missing = next(expected, None)
        if missing is not None:
            raise IntegrityError(
                f"certificate {missing.certificate_id} (entry {missing.events[0].index}) has "
                f"no row in the certificate tables{_REINDEX}",
                where=f"certificate {missing.certificate_id}",
            )
        # Every row compared above holds the right events; here no event row is
        # left over (one naming no certificate, or a certificate it is not about).
        replayed_events = replayed.later_events()
        for event_index, cert_id in index.iter_event_indices(tx):
            want_event = next(replayed_events, None)
            if want_event != (event_index, cert_id):
                raise IntegrityError(
                    f"certificate_events row {event_index} ({cert_id}) is not a certificate "
                    f"event of the log{_REINDEX}",
                    where=f"certificate_events {event_index}",
                )
        missing_event = next(replayed_events, None)
        if missing_event is not None:
            raise IntegrityError(
                f"certificate event {missing_event[0]} ({missing_event[1]}) has no row in "
                f"certificate_events{_REINDEX}",
                where=f"certificate_events {missing_event[0]}",
            )
    return compared


def _expected_references(
    index: int,
    stmt: statement.Statement,
    link_rows: list[tuple[object, ...]],
    standard_rows: list[tuple[object, ...]],
) -> None:
    """The link and standard rows a certificate.issue/amend statement calls for,
    read from its fields here (not by the tables' own writer)."""
    cert_id = stmt["certificate_id"]
    for position, link in enumerate(stmt.get("links", ())):
        sha256 = link.get("sha256")
        digest, procedure = (
            (sha256, "SHA-256") if sha256 is not None else (link["digest"], link["procedure"])
        )
        link_rows.append(
            (index, position, cert_id, link["certificate_id"], digest, procedure, link["role"])
        )
    standard_rows.extend(
        sorted((standard_key(ref), index, ref, cert_id) for ref in stmt.get("standards", ()))
    )


def _check_references(
    ledger: Ledger,
    first: int,
    last: int,
    link_rows: list[tuple[object, ...]],
    standard_rows: list[tuple[object, ...]],
) -> None:
    """The link and standard rows of entries ``first`` .. ``last`` are exactly
    those their statements call for, and each link carries its certificate's
    columns as the certificate's row has them (one read per batch of entries)."""
    with ledger.storage.read() as tx:
        stored_links, stored_standards = ledger.certificate_index.reference_rows_between(
            tx, first, last
        )
        # Each link's copy of its certificate's columns: the rows themselves are
        # checked against the replay, so agreeing with them is agreeing with the log.
        disagreeing = ledger.certificate_index.links_disagreeing_with_their_certificates(
            tx, first, last
        )
    for table, stored, wanted, describe in (
        ("certificate_links", stored_links, link_rows, _describe_link),
        ("certificate_standards", stored_standards, standard_rows, _describe_standard),
    ):
        if stored == wanted:
            continue
        place = next(
            (i for i, (a, b) in enumerate(zip(stored, wanted, strict=False)) if a != b),
            min(len(stored), len(wanted)),
        )
        have = describe(stored[place]) if place < len(stored) else "no row"
        want = describe(wanted[place]) if place < len(wanted) else "no row"
        row = stored[place] if place < len(stored) else wanted[place]
        raise IntegrityError(
            f"{table} row of {row[2] if table == 'certificate_links' else row[3]}: "
            f"stored {have}, the log says {want}{_REINDEX}",
            where=f"{table} entry {row[0] if table == 'certificate_links' else row[1]}",
        )
    if disagreeing is not None:
        index, position, cert_id, differs = disagreeing
        raise IntegrityError(
            f"certificate_links row of {cert_id}, link {position} of entry {index}: "
            f"{differs}{_REINDEX}",
            where=f"certificate_links entry {index}",
        )


def _describe_link(row: tuple[object, ...]) -> str:
    index, position, _, to_cert, digest, procedure, role = row
    return f"link {position} of entry {index} to {to_cert!r} ({role}, {procedure} {digest})"


def _describe_standard(row: tuple[object, ...]) -> str:
    _, index, ref, _ = row
    return f"standard {ref!r} of entry {index}"


def _difference(stored: trust.Certificate, replayed: trust.Certificate) -> str | None:
    """What differs between a stored certificate and the replayed one (first field)."""
    for name in (
        "issuer_id",
        "kind",
        "document_sha256",
        "valid_until",
        "superseded_by",
        "laboratory",
        "issued",
    ):
        have, want = getattr(stored, name), getattr(replayed, name)
        if have != want:
            return f"{name} is {have!r}, the log says {want!r}"
    for have_event, want_event in zip(stored.events, replayed.events, strict=False):
        if have_event != want_event:
            return f"its event at entry {have_event.index} differs from the log's ({want_event})"
    if len(stored.events) != len(replayed.events):
        return f"{len(stored.events)} events stored, the log has {len(replayed.events)}"
    return None
