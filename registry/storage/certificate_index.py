"""Certificate state in indexed tables, derived from the log.

A national registry logs tens of millions of certificates a year, so no process
holds them all in memory: each certificate's row (who issued it, its document's
digest, what supersedes it, its issue event) and its later events live in
tables written **in the same transaction as the entries they come from** — they
can never disagree with the log — and rebuilt from the log alone by
``qiledger reindex``. ``qiledger fsck`` compares them, row by row, with a full
replay through the :mod:`verifier.trust` rules.

Tables (not append-only: a status change updates a row; they are not the log):

- ``certificates``: one row per certificate, keyed by the index of the entry
  that registered it (log order, the listing cursor); unique id; indexed by
  issuer and by document digest;
- ``certificate_events``: every later event (suspend, reinstate, withdraw) by
  log index;
- ``trust_entries``: the indices of every other entry (bodies, accreditations,
  keys): a start-up replays just those into the in-memory
  :class:`verifier.trust.TrustState`;
- ``derived_state``: the log size the tables reflect (equal to the log's,
  since both commit together);
- ``certificate_links``: each certificate's outgoing links (:mod:`verifier.links`:
  the certificate it names, its digest and procedure, the role), keyed by the
  linking certificate's first index and the link's place; indexed by the
  linking certificate and by the certificate linked to. Each link also holds
  its digest check against its target's registered document (set when the
  target is registered) and a copy of its certificate's issuer, valid-until and
  recorded status (rewritten with the row's), so a dependents walk reads this
  index alone; fsck checks both against the certificates' rows;
- ``certificate_standards``: the standards each certificate names, by standard
  (compared case and spacing aside) and by certificate.

``recorded_status`` is the status the events alone give (active, suspended,
withdrawn, superseded), for filters; what a reader is told is always derived
when read by :func:`verifier.trust.certificate_status`, which also knows about
expiry and compromised keys.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from itertools import zip_longest
from typing import TYPE_CHECKING, Any

from registry.errors import StorageError
from registry.storage.database import Database
from registry.storage.protocol import Transaction
from verifier import trust
from verifier.links import DocumentLinks, Link, standard_key
from verifier.statement import parse_date
from verifier.traceability import link_digest_check

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

COVERING_LINKS_INDEX = "certificate_links_walk"
"""The links index a dependents walk reads alone; its presence tells this layout
from those before it (:meth:`CertificateIndex.is_current`)."""
_LINK_COLUMNS = "from_index, position, from_certificate, to_certificate, to_digest, procedure, role"
_LINKING_COLUMNS = "from_issuer, from_valid_until, from_status"
"""The linking certificate's own columns, copied onto each of its links."""
_STANDARD_COLUMNS = "standard_key, first_index, standard_ref, certificate_id"

_CERT_COLUMNS = (
    "first_index, certificate_id, issuer_id, kind, document_sha256, valid_until, "
    "superseded_by, laboratory_name, laboratory_code, issued, first_type, first_logged_at, "
    "first_key_id, first_reason"
)
_N_CERT_COLUMNS = 14
_EVENT_COLUMNS = "idx, certificate_id, type, logged_at, key_id, reason"
_PREFIXED_CERT_COLUMNS = ", ".join(f"c.{name.strip()}" for name in _CERT_COLUMNS.split(","))
_CHUNK = 500  # values per IN (...): bounded statement size on both engines


def _read_now_sql(column: str, placeholder: str) -> str:
    return (
        f"SELECT ds.size, {_PREFIXED_CERT_COLUMNS}, e.idx, e.type, e.logged_at, e.key_id, "
        "e.reason, "
        # Whether the certificate links to others (its traceability is then walked
        # when read): a primary-key probe, so a certificate without links costs
        # the hot read no second statement.
        "EXISTS (SELECT 1 FROM certificate_links l WHERE l.from_index = c.first_index) "
        f"FROM derived_state ds LEFT JOIN certificates c ON c.{column} = {placeholder} "
        "LEFT JOIN certificate_events e ON e.certificate_id = c.certificate_id "
        "WHERE ds.id = 1 ORDER BY c.first_index, e.idx"
    )


def recorded_status(certificate: trust.Certificate) -> str:
    """The status the certificate's events alone give (no expiry, no compromise)."""
    status = trust.ACTIVE
    for event in certificate.events[1:]:
        status = trust.STATUS_AFTER.get(event.type, status)
    if status == trust.ACTIVE and certificate.superseded_by is not None:
        return trust.SUPERSEDED
    return status


@dataclass(frozen=True)
class Narrowing:
    """What a listing's query keeps: every condition given must hold. The status
    part is a superset of what a status filter shows (the exact status needs the
    trust state: see ``Ledger.list_certificates``): certificates whose recorded
    status is one of ``recorded_statuses`` (and, if given, expired or not on a
    date), or any certificate of ``or_issuers``."""

    issuer_id: str | None = None
    kind: str | None = None
    issued_from: date | None = None
    issued_to: date | None = None
    recorded_statuses: tuple[str, ...] | None = None
    expired_on: date | None = None
    unexpired_on: date | None = None
    or_issuers: tuple[str, ...] = ()


@dataclass(frozen=True)
class CertificateRow:
    """A certificate as the tables hold it, in a form two sources can be compared in."""

    certificate: trust.Certificate
    recorded_status: str


class CertificateIndex:
    """The derived certificate tables of one database."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._p = db.placeholder
        self._read_now = {
            column: _read_now_sql(column, self._p)
            for column in ("certificate_id", "document_sha256")
        }

    # --- schema ------------------------------------------------------------------

    def exists(self) -> bool:
        return self.db.has_table("derived_state")

    def is_current(self) -> bool:
        """Whether the tables have every column this version writes (derived
        tables from an older version are rebuilt from the log, not migrated)."""
        return (
            "issued" in self.db.column_names("certificates")
            and all(self.db.has_table(t) for t in ("certificate_links", "certificate_standards"))
            and COVERING_LINKS_INDEX in self.db.index_names("certificate_links")
        )

    def drop(self, tx: Connection) -> None:
        """Drop the derived tables (before rebuilding tables of an older layout)."""
        from registry.storage.derived_tables import METADATA, TABLES

        METADATA.drop_all(tx, tables=list(TABLES))

    def create(self, tx: Connection) -> None:
        """Create the tables (idempotent) and, if it has none, the row of their size."""
        from registry.storage.derived_tables import METADATA, TABLES

        METADATA.create_all(tx, tables=list(TABLES))
        if tx.exec_driver_sql("SELECT size FROM derived_state WHERE id = 1").first() is None:
            tx.exec_driver_sql(f"INSERT INTO derived_state (id, size) VALUES (1, {self._p})", (0,))

    def reset(self, tx: Transaction) -> None:
        """Delete every derived row (before a rebuild, in the same transaction)."""
        for table in (
            "certificate_events",
            "certificates",
            "trust_entries",
            "derived_state",
            "certificate_links",
            "certificate_standards",
        ):
            tx.exec_driver_sql(f"DELETE FROM {table}")
        tx.exec_driver_sql(f"INSERT INTO derived_state (id, size) VALUES (1, {self._p})", (0,))

    # --- the writer's side ---------------------------------------------------------

    def writer(self, tx: Transaction) -> SqlCertificates:
        """A certificate store inside the writer's transaction ``tx``."""
        return SqlCertificates(self, tx, writable=True)

    def record_batch(
        self,
        tx: Transaction,
        store: SqlCertificates,
        trust_indices: Sequence[int],
        size: int,
        references: Sequence[tuple[int, str, DocumentLinks]] = (),
    ) -> None:
        """Write what a batch changed, in the batch's own transaction
        (``references``: (first index, certificate id, what it links to) of the
        certificates it registered)."""
        # Before the flush: the store still holds the batch's certificates, whose
        # columns each of their links copies (as the batch left them).
        added = store.added_documents()
        link_rows, standard_rows = reference_rows(references, store.get)
        store.flush()
        if added:
            self._check_links_to(tx, added)
        if link_rows:
            # After the flush: a link's target may be in this batch.
            targets = self._document_digests(tx, [row[3] for row in link_rows])
            tx.exec_driver_sql(
                f"INSERT INTO certificate_links ({_LINK_COLUMNS}, digest_check, "
                f"{_LINKING_COLUMNS}) VALUES ({', '.join([self._p] * 11)})",
                [
                    (*row[:7], link_digest_check(row[5], row[4], targets.get(row[3])), *row[7:])
                    for row in link_rows
                ],
            )
        if standard_rows:
            tx.exec_driver_sql(
                f"INSERT INTO certificate_standards ({_STANDARD_COLUMNS}) "
                f"VALUES ({', '.join([self._p] * 4)})",
                standard_rows,
            )
        if trust_indices:
            tx.exec_driver_sql(
                f"INSERT INTO trust_entries (idx) VALUES ({self._p})",
                [(i,) for i in trust_indices],
            )
        tx.exec_driver_sql(f"UPDATE derived_state SET size = {self._p} WHERE id = 1", (size,))

    def _check_links_to(self, tx: Transaction, added: Mapping[str, str]) -> None:
        """Check the links logged earlier that name these newly registered
        certificates (id: document digest) against their documents (until now
        they were external)."""
        p = self._p
        checked: list[tuple[str, int, int]] = []
        for chunk in _chunks(list(added)):
            for index, position, to_cert, procedure, digest in tx.exec_driver_sql(
                "SELECT from_index, position, to_certificate, procedure, to_digest "
                f"FROM certificate_links WHERE to_certificate IN ({','.join([p] * len(chunk))})",
                tuple(chunk),
            ):
                check = link_digest_check(procedure, digest, added[to_cert])
                checked.append((check, int(index), int(position)))
        if checked:
            tx.exec_driver_sql(
                f"UPDATE certificate_links SET digest_check = {p} "
                f"WHERE from_index = {p} AND position = {p}",
                checked,
            )

    def _document_digests(self, tx: Transaction, certificate_ids: Sequence[str]) -> dict[str, str]:
        """The registered document digest of each of these certificates that is registered."""
        found: dict[str, str] = {}
        for chunk in _chunks(list(dict.fromkeys(certificate_ids))):
            found.update(
                tx.exec_driver_sql(
                    "SELECT certificate_id, document_sha256 FROM certificates "
                    f"WHERE certificate_id IN ({','.join([self._p] * len(chunk))})",
                    tuple(chunk),
                ).all()
            )
        return found

    # --- reading -----------------------------------------------------------------

    def reader(self, tx: Transaction) -> SqlCertificates:
        """A read-only certificate store inside the read transaction ``tx``."""
        return SqlCertificates(self, tx, writable=False)

    def derived_size(self, tx: Transaction) -> int:
        row = tx.exec_driver_sql("SELECT size FROM derived_state WHERE id = 1").first()
        if row is None:
            raise StorageError("the certificate tables are empty; run 'qiledger reindex'")
        return int(row[0])

    def trust_entries_from(self, tx: Transaction, start: int) -> Iterator[tuple[int, bytes]]:
        """(index, leaf data) of the non-certificate entries from ``start``, in order."""
        p = self._p
        after = start - 1
        while True:
            rows = tx.exec_driver_sql(
                "SELECT e.idx, e.data FROM trust_entries t JOIN entries e ON e.idx = t.idx "
                f"WHERE t.idx > {p} ORDER BY t.idx LIMIT 1000",
                (after,),
            ).all()
            for index, data in rows:
                yield int(index), bytes(data)
            if len(rows) < 1000:
                return
            after = rows[-1][0]

    def certificates_page(
        self, tx: Transaction, narrowed: Narrowing, *, after_index: int, limit: int
    ) -> list[trust.Certificate]:
        """Certificates that ``narrowed`` lets through, registered after log index
        ``after_index``, in log order, at most ``limit``."""
        p = self._p
        terms = [f"first_index > {p}"]
        params: list[Any] = [after_index]

        def term(sql: str, *values: Any) -> None:
            terms.append(sql)
            params.extend(values)

        if narrowed.issuer_id is not None:
            term(f"issuer_id = {p}", narrowed.issuer_id)
        if narrowed.kind is not None:
            term(f"kind = {p}", narrowed.kind)
        # ISO dates compare as text.
        if narrowed.issued_from is not None:
            term(f"issued >= {p}", narrowed.issued_from.isoformat())
        if narrowed.issued_to is not None:
            term(f"issued <= {p}", narrowed.issued_to.isoformat())
        if narrowed.recorded_statuses is not None:
            either: list[str] = []  # "IN ()" is not SQL everywhere: only lists with values
            values: list[Any] = []
            if narrowed.recorded_statuses:
                status = f"recorded_status IN ({', '.join([p] * len(narrowed.recorded_statuses))})"
                values += narrowed.recorded_statuses
                if narrowed.expired_on is not None:
                    status += f" AND valid_until < {p}"
                    values.append(narrowed.expired_on.isoformat())
                elif narrowed.unexpired_on is not None:
                    status += f" AND (valid_until IS NULL OR valid_until >= {p})"
                    values.append(narrowed.unexpired_on.isoformat())
                either.append(f"({status})")
            if narrowed.or_issuers:
                either.append(f"issuer_id IN ({', '.join([p] * len(narrowed.or_issuers))})")
                values += narrowed.or_issuers
            if not either:
                return []
            term(f"({' OR '.join(either)})", *values)
        rows = tx.exec_driver_sql(
            f"SELECT {_CERT_COLUMNS} FROM certificates WHERE {' AND '.join(terms)} "
            f"ORDER BY first_index LIMIT {int(limit)}",
            tuple(params),
        ).all()
        return _with_events(tx, self._p, [_certificate(row) for row in rows])

    def read_now(self, column: str, value: str) -> tuple[int, list[trust.Certificate]]:
        """The size the tables reflect and the certificates whose ``column``
        (``certificate_id`` or ``document_sha256``) is ``value``, in log order,
        with all their events: one statement, so one snapshot on both engines,
        outside any explicit transaction (the hot public reads)."""
        size, found, _ = self.read_now_linked(column, value)
        return size, found

    def read_now_linked(
        self, column: str, value: str
    ) -> tuple[int, list[trust.Certificate], frozenset[str]]:
        """:meth:`read_now`, and the ids of those certificates that link to others."""
        rows = self.db.read_rows(self._read_now[column], (value,))
        if not rows:
            raise StorageError("the certificate tables are empty; run 'qiledger reindex'")
        found: dict[int, trust.Certificate] = {}
        _fold_rows((row[1:-1] for row in rows), found)  # no such certificate: the size alone
        linked = frozenset(str(row[2]) for row in rows if row[1] is not None and row[-1])
        return int(rows[0][0]), list(found.values()), linked

    def iter_rows(self, tx: Transaction, batch: int = 2000) -> Iterator[CertificateRow]:
        """Every certificate in log order, in pages of ``batch`` (for fsck)."""
        after = -1
        while True:
            rows = tx.exec_driver_sql(
                f"SELECT {_CERT_COLUMNS}, recorded_status FROM certificates "
                f"WHERE first_index > {self._p} ORDER BY first_index LIMIT {int(batch)}",
                (after,),
            ).all()
            certs = _with_events(tx, self._p, [_certificate(row) for row in rows])
            for cert, row in zip(certs, rows, strict=True):
                yield CertificateRow(cert, row[-1])
            if len(rows) < batch:
                return
            after = rows[-1][0]

    def iter_event_indices(self, tx: Transaction) -> Iterator[tuple[int, str]]:
        """(index, certificate id) of every later event, in log order (for fsck)."""
        yield from (
            (int(i), c)
            for i, c in tx.exec_driver_sql(
                "SELECT idx, certificate_id FROM certificate_events ORDER BY idx"
            )
        )

    def trust_indices(self, tx: Transaction) -> list[int]:
        return [int(i) for (i,) in tx.exec_driver_sql("SELECT idx FROM trust_entries ORDER BY idx")]

    # --- links and standards -------------------------------------------------------

    def links_from(self, tx: Transaction, certificate_ids: Sequence[str]) -> dict[str, list[Link]]:
        """The outgoing links of these certificates, in their statements' order
        (a certificate without links is absent); one query per 500 ids."""
        found: dict[str, list[Link]] = {}
        for chunk in _chunks(list(dict.fromkeys(certificate_ids))):
            for cert_id, to_cert, digest, procedure, role in tx.exec_driver_sql(
                "SELECT from_certificate, to_certificate, to_digest, procedure, role "
                "FROM certificate_links "
                f"WHERE from_certificate IN ({','.join([self._p] * len(chunk))}) "
                "ORDER BY from_index, position",
                tuple(chunk),
            ):
                found.setdefault(cert_id, []).append(Link(role, to_cert, procedure, digest))
        return found

    def links_to(
        self, tx: Transaction, certificate_ids: Sequence[str], roles: Collection[str]
    ) -> list[tuple[Any, ...]]:
        """The links with one of ``roles`` naming these certificates, each a
        :data:`verifier.traceability.LinkRow` (linked-to id, linking id, role,
        digest check) followed by the linking certificate's status columns
        (issuer, recorded status, valid until as written), by linked-to id then
        log order of the linking certificate, answered from the covering index
        alone (each link carries what the walk needs): on PostgreSQL one query,
        on SQLite one per 500 ids."""
        found: list[tuple[Any, ...]] = []
        role_list = sorted(roles)
        ids = list(dict.fromkeys(certificate_ids))
        if not role_list or not ids:
            return found
        columns = (
            "SELECT to_certificate, from_certificate, role, digest_check, "
            "from_issuer, from_status, from_valid_until FROM certificate_links "
        )
        order = " ORDER BY to_certificate, from_index, position"
        if not self.db.is_sqlite and not any(_ID_SEPARATOR in i for i in ids):
            # One statement, the ids as one text the server splits: a short
            # statement text the driver parses once (500 placeholders cost it
            # about 2 ms), and no array to dump (psycopg quotes each element of
            # a text array after a regular-expression test: 0.8 ms for 500).
            # A certificate id holds no control character, so the separator
            # never occurs in one the walk asks about.
            sql = (
                f"{columns}WHERE to_certificate = ANY(string_to_array(%s, E'\\n')) "
                f"AND role = ANY(%b){order}"
            )
            return list(tx.exec_driver_sql(sql, (_ID_SEPARATOR.join(ids), role_list)).all())
        for chunk in _chunks(ids):
            if self.db.is_sqlite:
                sql = (
                    f"{columns}WHERE to_certificate IN ({','.join([self._p] * len(chunk))}) "
                    f"AND role IN ({','.join([self._p] * len(role_list))}){order}"
                )
                parameters: tuple[Any, ...] = (*chunk, *role_list)
            else:  # an id holding the separator: the ids as an array
                sql = f"{columns}WHERE to_certificate = ANY(%b) AND role = ANY(%b){order}"
                parameters = (list(chunk), role_list)
            found += tx.exec_driver_sql(sql, parameters).all()  # one fetch: a walk reads many
        return found

    def status_columns(
        self, tx: Transaction, certificate_ids: Sequence[str]
    ) -> dict[str, tuple[str, str, str | None]]:
        """(issuer, recorded status, valid until as written) of the registered ones
        of these certificates: what decides a status where the recorded status
        does; one query per 500 ids."""
        found: dict[str, tuple[str, str, str | None]] = {}
        for chunk in _chunks(list(dict.fromkeys(certificate_ids))):
            for cert_id, issuer_id, status, until in tx.exec_driver_sql(
                "SELECT certificate_id, issuer_id, recorded_status, valid_until "
                f"FROM certificates WHERE certificate_id IN ({','.join([self._p] * len(chunk))})",
                tuple(chunk),
            ):
                found[cert_id] = (issuer_id, status, until)
        return found

    def standard_page(
        self, tx: Transaction, reference: str, *, after_index: int, limit: int
    ) -> list[tuple[int, str, str]]:
        """(first index, certificate id, the reference as it wrote it) of each
        certificate naming this standard (case and spacing aside), registered
        after ``after_index``, in log order, at most ``limit``."""
        return [
            (int(first), cert_id, ref)
            for first, cert_id, ref in tx.exec_driver_sql(
                "SELECT first_index, certificate_id, MIN(standard_ref) "
                "FROM certificate_standards "
                f"WHERE standard_key = {self._p} AND first_index > {self._p} "
                f"GROUP BY first_index, certificate_id ORDER BY first_index LIMIT {int(limit)}",
                (standard_key(reference), after_index),
            )
        ]

    def standard_counts(self, tx: Transaction, reference: str) -> dict[str, int]:
        """How many certificates name this standard, by recorded status."""
        return {
            str(status): int(count)
            for status, count in tx.exec_driver_sql(
                "SELECT c.recorded_status, COUNT(DISTINCT c.first_index) "
                "FROM certificate_standards s JOIN certificates c ON c.first_index = s.first_index "
                f"WHERE s.standard_key = {self._p} GROUP BY c.recorded_status",
                (standard_key(reference),),
            )
        }

    def reference_rows_between(
        self, tx: Transaction, first: int, last: int
    ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """The link and standard rows of certificates registered by entries
        ``first`` .. ``last`` (for fsck), in key order."""
        p = self._p
        links = tx.exec_driver_sql(
            f"SELECT {_LINK_COLUMNS} FROM certificate_links "
            f"WHERE from_index >= {p} AND from_index <= {p} ORDER BY from_index, position",
            (first, last),
        ).all()
        standards = tx.exec_driver_sql(
            f"SELECT {_STANDARD_COLUMNS} FROM certificate_standards "
            f"WHERE first_index >= {p} AND first_index <= {p} "
            "ORDER BY first_index, standard_key, standard_ref",
            (first, last),
        ).all()
        return [_plain(r) for r in links], [_plain(r) for r in standards]

    def links_disagreeing_with_their_certificates(
        self, tx: Transaction, first: int, last: int
    ) -> tuple[int, int, str, str] | None:
        """The first link row of entries ``first`` .. ``last`` whose digest check
        or copy of its certificate's columns is not what the certificates' rows
        give (for fsck): (from index, position, from certificate, what differs),
        or None."""
        p = self._p
        rows = tx.exec_driver_sql(
            "SELECT l.from_index, l.position, l.from_certificate, l.from_issuer, "
            "l.from_valid_until, l.from_status, l.digest_check, l.procedure, l.to_digest, "
            "c.certificate_id, c.issuer_id, c.valid_until, c.recorded_status, t.document_sha256 "
            "FROM certificate_links l LEFT JOIN certificates c ON c.first_index = l.from_index "
            "LEFT JOIN certificates t ON t.certificate_id = l.to_certificate "
            f"WHERE l.from_index >= {p} AND l.from_index <= {p} ORDER BY l.from_index, l.position",
            (first, last),
        ).all()
        names = ("issuer", "valid until", "recorded status")
        for row in rows:
            index, position, cert_id = int(row[0]), int(row[1]), str(row[2])
            if row[9] != cert_id:
                return index, position, cert_id, "its certificate has no row"
            differs = [
                f"it carries {name} {carried!r}, its certificate's row {own!r}"
                for name, carried, own in zip(names, row[3:6], row[10:13], strict=True)
                if carried != own
            ]
            check = link_digest_check(row[7], row[8], row[13])
            if row[6] != check:
                differs.append(
                    f"it carries digest check {row[6]!r}, its target's registered document "
                    f"gives {check!r}"
                )
            if differs:
                return index, position, cert_id, "; ".join(differs)
        return None

    def reference_rows_from(self, tx: Transaction, start: int) -> int:
        """How many link and standard rows name an entry at or after ``start`` (fsck)."""
        total = 0
        for sql in (
            f"SELECT COUNT(*) FROM certificate_links WHERE from_index >= {self._p}",
            f"SELECT COUNT(*) FROM certificate_standards WHERE first_index >= {self._p}",
        ):
            total += int(tx.exec_driver_sql(sql, (start,)).scalar_one())
        return total


def reference_rows(
    references: Iterable[tuple[int, str, DocumentLinks]],
    certificate: Callable[[str], trust.Certificate | None],
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The ``certificate_links`` rows (but their digest check) and
    ``certificate_standards`` rows of these certificates (first index, id, what
    their statement links to), in key order; ``certificate`` gives each one as
    it is now (its links copy its columns)."""
    link_rows: list[tuple[Any, ...]] = []
    standard_rows: list[tuple[Any, ...]] = []
    for first, cert_id, refs in references:
        if refs.links:
            linking = certificate(cert_id)
            if linking is None:
                raise StorageError(f"links of {cert_id}, a certificate this batch did not add")
            own = linking_columns(linking)
            link_rows.extend(
                (
                    first,
                    position,
                    cert_id,
                    link.certificate_id,
                    link.digest,
                    link.procedure,
                    link.role,
                    *own,
                )
                for position, link in enumerate(refs.links)
            )
        standard_rows.extend(
            sorted((standard_key(ref), first, ref, cert_id) for ref in refs.standards)
        )
    return link_rows, standard_rows


def linking_columns(certificate: trust.Certificate) -> tuple[str, str | None, str]:
    """What each link of ``certificate`` copies of its row (:data:`_LINKING_COLUMNS`)."""
    until = certificate.valid_until
    return (
        certificate.issuer_id,
        None if until is None else until.isoformat(),
        recorded_status(certificate),
    )


def _plain(row: Any) -> tuple[Any, ...]:
    return tuple(int(v) if isinstance(v, int) else v for v in row)


class ShortReads:
    """A read-only :class:`verifier.trust.CertificateStore` whose every read is a
    short transaction of its own (for a process's long-lived trust state)."""

    def __init__(self, index: CertificateIndex) -> None:
        self._index = index

    def get(self, certificate_id: str) -> trust.Certificate | None:
        _, found = self._index.read_now("certificate_id", certificate_id)
        return found[0] if found else None

    def with_document(self, document_sha256: str) -> list[trust.Certificate]:
        return self._index.read_now("document_sha256", document_sha256)[1]

    def add(self, certificate: trust.Certificate) -> None:
        raise StorageError("certificates are recorded only inside a batch")

    def add_event(self, certificate: trust.Certificate, event: trust.CertificateEvent) -> None:
        raise StorageError("certificates are recorded only inside a batch")

    def supersede(self, certificate: trust.Certificate, successor_id: str) -> None:
        raise StorageError("certificates are recorded only inside a batch")


class SqlCertificates:
    """A :class:`verifier.trust.CertificateStore` over the derived tables, inside
    one transaction. What it read or changed is kept for that transaction only
    (a batch's worth), so memory never grows with the log."""

    def __init__(self, index: CertificateIndex, tx: Transaction, *, writable: bool) -> None:
        self._tx = tx
        self._p = index.db.placeholder
        self._writable = writable
        self._by_id: dict[str, trust.Certificate | None] = {}
        self._ids_by_digest: dict[str, list[str]] = {}
        self._new: dict[str, trust.Certificate] = {}
        self._changed: dict[str, trust.Certificate] = {}
        self._events: list[tuple[str, trust.CertificateEvent]] = []

    # --- CertificateStore -------------------------------------------------------------

    def get(self, certificate_id: str) -> trust.Certificate | None:
        if certificate_id not in self._by_id:
            self.prefetch([certificate_id], ())
        return self._by_id[certificate_id]

    def with_document(self, document_sha256: str) -> list[trust.Certificate]:
        if document_sha256 not in self._ids_by_digest:
            self.prefetch((), [document_sha256])
        found = (self.get(i) for i in self._ids_by_digest[document_sha256])
        return [c for c in found if c is not None]

    def add(self, certificate: trust.Certificate) -> None:
        self._check_writable()
        digest = certificate.document_sha256
        if digest not in self._ids_by_digest:
            self.prefetch((), [digest])  # the digest's earlier certificates first
        self._by_id[certificate.certificate_id] = certificate
        self._ids_by_digest[digest].append(certificate.certificate_id)
        self._new[certificate.certificate_id] = certificate

    def add_event(self, certificate: trust.Certificate, event: trust.CertificateEvent) -> None:
        self._check_writable()
        certificate.events.append(event)
        self._events.append((certificate.certificate_id, event))
        self._changed[certificate.certificate_id] = certificate

    def supersede(self, certificate: trust.Certificate, successor_id: str) -> None:
        self._check_writable()
        certificate.superseded_by = successor_id
        self._changed[certificate.certificate_id] = certificate

    def added_documents(self) -> dict[str, str]:
        """Id and document digest of each certificate added since the last flush."""
        return {i: c.document_sha256 for i, c in self._new.items()}

    # --- reading ahead and writing back -------------------------------------------------

    def prefetch(self, certificate_ids: Collection[str], digests: Collection[str]) -> None:
        """Load these certificates (and those about these documents), each with its
        events, in one statement per 500 ids and 500 digests (a batch's worth
        usually), so a batch's admission checks do not query one by one."""
        wanted_digests = [d for d in dict.fromkeys(digests) if d not in self._ids_by_digest]
        wanted_ids = [i for i in dict.fromkeys(certificate_ids) if i not in self._by_id]
        found: dict[int, trust.Certificate] = {}  # by first index
        for ids, digest_chunk in zip_longest(
            _chunks(wanted_ids), _chunks(wanted_digests), fillvalue=()
        ):
            rows = self._tx.exec_driver_sql(
                self._prefetch_sql(len(ids), len(digest_chunk)), (*ids, *digest_chunk)
            ).all()
            # A certificate that two chunks name comes back twice: keep the first.
            _fold_rows(rows, found, skip=set(found))
        for certificate_id in wanted_ids:
            self._by_id[certificate_id] = None
        for digest in wanted_digests:
            self._ids_by_digest[digest] = []
        wanted = set(wanted_digests)
        for first in sorted(found):  # log order; a certificate is about one document
            cert = found[first]
            if self._by_id.get(cert.certificate_id) is None:  # never replace one held
                self._by_id[cert.certificate_id] = cert
            if cert.document_sha256 in wanted:
                self._ids_by_digest[cert.document_sha256].append(cert.certificate_id)

    def _prefetch_sql(self, ids: int, digests: int) -> str:
        p = self._p
        terms = []
        if ids:
            terms.append(f"c.certificate_id IN ({','.join([p] * ids)})")
        if digests:
            terms.append(f"c.document_sha256 IN ({','.join([p] * digests)})")
        return (
            f"SELECT {_PREFIXED_CERT_COLUMNS}, e.idx, e.type, e.logged_at, e.key_id, e.reason "
            "FROM certificates c "
            "LEFT JOIN certificate_events e ON e.certificate_id = c.certificate_id "
            f"WHERE {' OR '.join(terms)} ORDER BY c.first_index, e.idx"
        )

    def flush(self) -> None:
        """Write the certificates added and changed since the last flush, and forget
        what was read (the next read goes to the tables, which now hold it)."""
        self._check_writable()
        tx, p = self._tx, self._p
        if self._new:
            tx.exec_driver_sql(
                f"INSERT INTO certificates ({_CERT_COLUMNS}, recorded_status, last_index) "
                f"VALUES ({', '.join([p] * (_N_CERT_COLUMNS + 2))})",
                [_row(c) for c in self._new.values()],
            )
        if self._events:
            tx.exec_driver_sql(
                f"INSERT INTO certificate_events ({_EVENT_COLUMNS}) VALUES ({', '.join([p] * 6)})",
                [
                    (e.index, cert_id, e.type, e.logged_at, e.key_id, e.reason)
                    for cert_id, e in self._events
                ],
            )
        changed = [c for i, c in self._changed.items() if i not in self._new]
        if changed:
            statuses = [(c, recorded_status(c)) for c in changed]
            tx.exec_driver_sql(
                f"UPDATE certificates SET superseded_by = {p}, recorded_status = {p}, "
                f"last_index = {p} WHERE certificate_id = {p}",
                [
                    (c.superseded_by, status, _last_index(c), c.certificate_id)
                    for c, status in statuses
                ],
            )
            # Its links carry its status too (a key range: none if it has no links).
            tx.exec_driver_sql(
                f"UPDATE certificate_links SET from_status = {p} WHERE from_index = {p}",
                [(status, c.events[0].index) for c, status in statuses],
            )
        self._by_id.clear()
        self._ids_by_digest.clear()
        self._new.clear()
        self._changed.clear()
        self._events.clear()

    def _check_writable(self) -> None:
        if not self._writable:
            raise StorageError("a read transaction cannot change certificates")


_ID_SEPARATOR = "\n"
"""Joins the ids :meth:`CertificateIndex.links_to` sends PostgreSQL as one text."""


def _chunks(values: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(values), _CHUNK):
        yield values[start : start + _CHUNK]


def _fold_rows(
    rows: Iterable[Sequence[Any]],
    found: dict[int, trust.Certificate],
    skip: Collection[int] = (),
) -> None:
    """Add to ``found`` (by first index) the certificates of rows holding the
    certificate columns then the event columns of a LEFT JOIN, in event order;
    rows without a certificate and certificates in ``skip`` are passed over."""
    for row in rows:
        first = row[0]
        if first is None or first in skip:
            continue
        cert = found.get(first)
        if cert is None:
            cert = found[first] = _certificate(row[:_N_CERT_COLUMNS])
        event = row[_N_CERT_COLUMNS:]
        if event[0] is not None:
            cert.events.append(trust.CertificateEvent(int(event[0]), *event[1:6]))


def _certificate(row: Any) -> trust.Certificate:
    (first, cert_id, issuer, kind, digest, until, successor, lab_name, lab_code, issued) = row[:10]
    first_type, logged_at, key_id, reason = row[10:14]
    return trust.Certificate(
        cert_id,
        issuer,
        kind,
        digest,
        None if until is None else parse_date(until),
        [trust.CertificateEvent(int(first), first_type, logged_at, key_id, reason)],
        successor,
        None if lab_name is None and lab_code is None else (lab_name or "", lab_code or ""),
        None if issued is None else parse_date(issued),
    )


def _with_events(
    tx: Transaction, p: str, certificates: list[trust.Certificate]
) -> list[trust.Certificate]:
    """Add each certificate's later events (one query per 500 certificates)."""
    by_id = {c.certificate_id: c for c in certificates}
    ids = list(by_id)
    for chunk in _chunks(ids):
        for index, cert_id, type_, logged_at, key_id, reason in tx.exec_driver_sql(
            f"SELECT {_EVENT_COLUMNS} FROM certificate_events "
            f"WHERE certificate_id IN ({','.join([p] * len(chunk))}) ORDER BY idx",
            tuple(chunk),
        ):
            by_id[cert_id].events.append(
                trust.CertificateEvent(int(index), type_, logged_at, key_id, reason)
            )
    return certificates


def _last_index(certificate: trust.Certificate) -> int:
    return certificate.events[-1].index


def _row(c: trust.Certificate) -> tuple[Any, ...]:
    first = c.events[0]
    lab_name, lab_code = (None, None) if c.laboratory is None else c.laboratory
    return (
        first.index,
        c.certificate_id,
        c.issuer_id,
        c.kind,
        c.document_sha256,
        None if c.valid_until is None else c.valid_until.isoformat(),
        c.superseded_by,
        lab_name,
        lab_code,
        None if c.issued is None else c.issued.isoformat(),
        first.type,
        first.logged_at,
        first.key_id,
        first.reason,
        recorded_status(c),
        _last_index(c),
    )
