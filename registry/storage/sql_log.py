"""All of the log's SQL: :class:`SqlStorage`, the :class:`LogStorage` on SQLite or
PostgreSQL.

One SQL style: DB-API SQL through ``exec_driver_sql``, with the engine's
parameter marker. The ingest path needs it (SQLAlchemy's per-row parameter
processing costs more than the inserts themselves), and the rest follows, so
one reading of the module covers every query. Only the placeholder marker,
this module's own column and table names and ints are ever interpolated.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

from registry.errors import NotFoundError, StorageError
from registry.storage.database import Database
from registry.storage.node_keys import node_id, node_of
from registry.storage.protocol import (
    StoredCheckpoint,
    StoredDocument,
    StoredEntry,
    Tail,
    Transaction,
)
from verifier.entry import GENESIS_PREV
from verifier.merkle import Hash, Node

_ENTRY = "idx, leaf_hash, statement_hash, logged_at, data"
_CHECKPOINT = "size, root, note, created_at"
_JOINED_ENTRY = ", ".join(f"e.{column}" for column in _ENTRY.split(", "))
_DOCUMENT = "digest, media_type, data"


class SqlStorage:
    """:class:`registry.storage.protocol.LogStorage` through SQLAlchemy engines."""

    NODE_CACHE_LIMIT = 1 << 18

    def __init__(self, db: Database) -> None:
        self.db = db
        self._node_cache: dict[int, bytes] = {}
        p = db.placeholder
        self._sql_nodes = {
            n: f"SELECT node_id, hash FROM tree_nodes WHERE node_id IN ({','.join([p] * n)})"
            for n in range(1, 129)
        }

    # --- transactions ----------------------------------------------------------

    def read(self) -> AbstractContextManager[Transaction]:
        return self.db.read()

    def write(self) -> AbstractContextManager[Transaction]:
        return self.db.write()

    # --- the log's identity (written once by init) -------------------------------

    def create_log(self, origin: str, public_key: bytes, empty: StoredCheckpoint) -> None:
        """Write the log's identity and its signed empty checkpoint, together."""
        p = self.db.placeholder
        with self.db.write() as tx:
            tx.exec_driver_sql(
                f"INSERT INTO log_meta (id, origin, public_key, created_at, schema_version) "
                f"VALUES (1, {p}, {p}, {p}, 1)",
                (origin, public_key, empty.created_at),
            )
            self._insert_checkpoint(tx, empty)

    def log_identity(self) -> tuple[str, bytes] | None:
        """The log's origin and raw public key, or None before init."""
        with self.db.read() as tx:
            row = tx.exec_driver_sql("SELECT origin, public_key FROM log_meta WHERE id = 1").first()
        return None if row is None else (row[0], bytes(row[1]))

    # --- inside the caller's transaction ------------------------------------------

    def tail(self, tx: Transaction) -> Tail:
        row = tx.exec_driver_sql(
            "SELECT idx, leaf_hash, logged_at FROM entries ORDER BY idx DESC LIMIT 1"
        ).first()
        if row is None:
            return Tail(0, GENESIS_PREV, None)
        return Tail(row[0] + 1, Hash(bytes(row[1])), row[2])

    def logged_statements(
        self, tx: Transaction, statement_hashes: Collection[bytes]
    ) -> dict[bytes, tuple[int, Hash, str]]:
        rows = self._rows_where_in(
            tx,
            "SELECT statement_hash, idx, leaf_hash, logged_at FROM entries",
            "statement_hash",
            statement_hashes,
        )
        return {bytes(h): (i, Hash(bytes(leaf)), t) for h, i, leaf, t in rows}

    def append(
        self,
        tx: Transaction,
        entries: Sequence[StoredEntry],
        nodes: Mapping[Node, bytes],
        checkpoint: StoredCheckpoint,
        documents: Sequence[StoredDocument] = (),
    ) -> None:
        p = self.db.placeholder
        if entries:
            tx.exec_driver_sql(
                f"INSERT INTO entries ({_ENTRY}) VALUES ({p}, {p}, {p}, {p}, {p})",
                [(e.index, e.leaf_hash, e.statement_hash, e.logged_at, e.data) for e in entries],
            )
        if nodes:
            tx.exec_driver_sql(
                f"INSERT INTO tree_nodes (node_id, hash) VALUES ({p}, {p})",
                [(node_id(n), h) for n, h in nodes.items()],
            )
        if documents:
            # Content-addressed: bytes already stored under this digest (also
            # earlier in this batch) are not inserted again (a collision would
            # trip the append-only trigger). One executemany for the batch.
            tx.exec_driver_sql(
                f"INSERT INTO documents (digest, size, media_type, data, stored_at) "
                f"SELECT {p}, {p}, {p}, {p}, {p} "
                f"WHERE NOT EXISTS (SELECT 1 FROM documents WHERE digest = {p})",
                [
                    (
                        doc.digest,
                        len(doc.data),
                        doc.media_type,
                        doc.data,
                        checkpoint.created_at,
                        doc.digest,
                    )
                    for doc in documents
                ],
            )
        self._insert_checkpoint(tx, checkpoint)

    def _insert_checkpoint(self, tx: Transaction, checkpoint: StoredCheckpoint) -> None:
        p = self.db.placeholder
        tx.exec_driver_sql(
            f"INSERT INTO checkpoints ({_CHECKPOINT}) VALUES ({p}, {p}, {p}, {p})",
            (checkpoint.size, checkpoint.root, checkpoint.note, checkpoint.created_at),
        )

    def entries_from(self, tx: Transaction, start: int, batch: int = 2000) -> Iterator[StoredEntry]:
        for row in self._pages(_ENTRY, "entries", "idx", start - 1, batch, tx):
            yield _entry(row)

    def checkpoint_in(self, tx: Transaction, size: int) -> StoredCheckpoint | None:
        row = tx.exec_driver_sql(
            f"SELECT {_CHECKPOINT} FROM checkpoints WHERE size = {self.db.placeholder}",
            (size,),
        ).first()
        return None if row is None else _checkpoint(row)

    # --- shared query shapes -------------------------------------------------------

    def _rows_where_in(
        self, tx: Transaction, select: str, column: str, values: Collection[Any]
    ) -> Iterator[Any]:
        """Rows of ``select`` whose ``column`` is one of ``values``, 500 at a time
        (bounded statement size on both engines)."""
        wanted = list(values)
        p = self.db.placeholder
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            yield from tx.exec_driver_sql(
                f"{select} WHERE {column} IN ({','.join([p] * len(chunk))})", tuple(chunk)
            )

    def _pages(
        self,
        columns: str,
        table: str,
        key: str,
        after: object,
        batch: int,
        tx: Transaction | None = None,
    ) -> Iterator[Any]:
        """Rows with ``key`` above ``after`` in key order, ``batch`` per query (keyset
        pagination: bounded memory, no OFFSET scans). ``key`` is the first of
        ``columns``. Each page is its own short read unless ``tx`` is given."""
        sql = (
            f"SELECT {columns} FROM {table} WHERE {key} > {self.db.placeholder} "
            f"ORDER BY {key} LIMIT {int(batch)}"
        )
        while True:
            if tx is None:
                with self.db.read() as read_tx:
                    rows = read_tx.exec_driver_sql(sql, (after,)).all()
            else:
                rows = tx.exec_driver_sql(sql, (after,)).all()
            yield from rows
            if len(rows) < batch:
                return
            after = rows[-1][0]

    # --- tree nodes ------------------------------------------------------------------

    def read_nodes(self, nodes: Sequence[Node], tx: Transaction | None = None) -> dict[Node, bytes]:
        cache = self._node_cache
        result: dict[Node, bytes] = {}
        missing: list[int] = []
        for node in nodes:
            key = node_id(node)
            cached = cache.get(key)
            if cached is None:
                missing.append(key)
            else:
                result[node] = cached
        if missing:
            fetched = self._fetch_nodes(tx, missing)
            if len(cache) > self.NODE_CACHE_LIMIT:
                cache.clear()
            for key, value in fetched:
                cache[key] = value
                result[node_of(key)] = value
            if len(result) != len(set(nodes)):
                absent = sorted(set(nodes) - result.keys())
                raise StorageError(f"tree nodes missing from storage: {absent[:5]}")
        return result

    def read_nodes_uncached(self, nodes: Sequence[Node]) -> dict[Node, bytes]:
        with self.db.read() as tx:
            return {node_of(k): v for k, v in self._fetch_nodes(tx, [node_id(n) for n in nodes])}

    def _fetch_nodes(self, tx: Transaction | None, keys: list[int]) -> list[tuple[int, bytes]]:
        """Outside a transaction each chunk is one statement of its own: nodes never
        change once written, so chunks need no common snapshot."""
        out: list[tuple[int, bytes]] = []
        for start in range(0, len(keys), 128):
            chunk = keys[start : start + 128]
            sql = self._sql_nodes[len(chunk)]
            rows = (
                self.db.read_rows(sql, chunk)
                if tx is None
                else tx.exec_driver_sql(sql, tuple(chunk)).all()
            )
            out.extend((k, bytes(h)) for k, h in rows)
        return out

    def node_range(self, level: int, start: int, end: int) -> list[bytes]:
        """By one key-range read (a tile's nodes are consecutive keys); raises
        StorageError if one is missing."""
        p = self.db.placeholder
        with self.db.read() as tx:
            rows = tx.exec_driver_sql(
                f"SELECT hash FROM tree_nodes WHERE node_id >= {p} AND node_id < {p} "
                f"ORDER BY node_id",
                (node_id((level, start)), node_id((level, end))),
            ).all()
        if len(rows) != end - start:
            raise StorageError(
                f"tree nodes missing from storage: level {level}, indices [{start}, {end})"
            )
        return [bytes(row[0]) for row in rows]

    def count_nodes(self) -> int:
        with self.db.read() as tx:
            return int(tx.exec_driver_sql("SELECT count(*) FROM tree_nodes").scalar() or 0)

    # --- entries -----------------------------------------------------------------------

    def tail_size(self) -> int:
        with self.db.read() as tx:
            return self.tail(tx).size

    def entry(self, index: int) -> StoredEntry:
        rows = self.db.read_rows(
            f"SELECT {_ENTRY} FROM entries WHERE idx = {self.db.placeholder}", (index,)
        )
        if not rows:
            raise NotFoundError(f"no entry at index {index}")
        return _entry(rows[0])

    def entries_at(self, indexes: Collection[int]) -> dict[int, StoredEntry]:
        """The entries at these indexes, one statement per 500; absent ones are
        left out (entries never change once written: no common snapshot needed)."""
        wanted = sorted(set(indexes))
        found: dict[int, StoredEntry] = {}
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ", ".join([self.db.placeholder] * len(chunk))
            for row in self.db.read_rows(
                f"SELECT {_ENTRY} FROM entries WHERE idx IN ({marks})", chunk
            ):
                found[int(row[0])] = _entry(row)
        return found

    def iter_entries(self, start: int = 0, batch: int = 1000) -> Iterator[StoredEntry]:
        for row in self._pages(_ENTRY, "entries", "idx", start - 1, batch):
            yield _entry(row)

    def entry_data_range(self, start: int, end: int) -> list[bytes]:
        """By one range read; raises StorageError if one is missing."""
        p = self.db.placeholder
        with self.db.read() as tx:
            rows = tx.exec_driver_sql(
                f"SELECT data FROM entries WHERE idx >= {p} AND idx < {p} ORDER BY idx",
                (start, end),
            ).all()
        if len(rows) != end - start:
            raise StorageError(f"entries missing from storage: indices [{start}, {end})")
        return [bytes(row[0]) for row in rows]

    # --- what an audit export includes (reads the derived certificate tables) ---------

    def issuer_entry_indices(self, issuer_id: str, after: int, size: int, limit: int) -> list[int]:
        """Indices of the certificate entries of ``issuer_id`` (registrations and later
        events) above ``after`` and below ``size``, in order, at most ``limit``."""
        p = self.db.placeholder
        rows = self.db.read_rows(
            "SELECT idx FROM (SELECT first_index AS idx FROM certificates "
            f"WHERE issuer_id = {p} UNION ALL SELECT e.idx FROM certificate_events e "
            "JOIN certificates c ON c.certificate_id = e.certificate_id "
            f"WHERE c.issuer_id = {p}) AS i WHERE idx > {p} AND idx < {p} "
            f"ORDER BY idx LIMIT {int(limit)}",
            (issuer_id, issuer_id, after, size),
        )
        return [int(i) for (i,) in rows]

    def certificate_entry_indices(self, certificate_id: str) -> list[int]:
        """Indices of every entry about the certificate, of the amendment superseding
        it, and of every entry about the certificates it amends (transitively), in order."""
        p = self.db.placeholder
        rows = self.db.read_rows(
            "WITH RECURSIVE chain(cid) AS ("
            f"SELECT certificate_id FROM certificates WHERE certificate_id = {p} "
            "UNION SELECT c.certificate_id FROM certificates c "
            "JOIN chain ON c.superseded_by = chain.cid) "
            "SELECT first_index FROM certificates WHERE certificate_id IN (SELECT cid FROM chain) "
            "UNION SELECT idx FROM certificate_events "
            "WHERE certificate_id IN (SELECT cid FROM chain) "
            "UNION SELECT s.first_index FROM certificates s JOIN certificates x "
            f"ON x.superseded_by = s.certificate_id WHERE x.certificate_id = {p} ORDER BY 1",
            (certificate_id, certificate_id),
        )
        return [int(i) for (i,) in rows]

    def range_context_indices(self, start: int, end: int) -> list[int]:
        """Indices below ``start`` of the entries about every certificate with an entry
        in [``start``, ``end``) and about the certificates those amend (transitively)."""
        p = self.db.placeholder
        rows = self.db.read_rows(
            "WITH RECURSIVE touched(cid) AS ("
            f"SELECT certificate_id FROM certificates WHERE first_index >= {p} "
            f"AND first_index < {p} "
            f"UNION SELECT certificate_id FROM certificate_events WHERE idx >= {p} AND idx < {p} "
            "UNION SELECT c.certificate_id FROM certificates c "
            "JOIN touched t ON c.superseded_by = t.cid) "
            f"SELECT first_index FROM certificates WHERE first_index < {p} "
            "AND certificate_id IN (SELECT cid FROM touched) "
            f"UNION SELECT idx FROM certificate_events WHERE idx < {p} "
            "AND certificate_id IN (SELECT cid FROM touched) ORDER BY 1",
            (start, end, start, end, start, start),
        )
        return [int(i) for (i,) in rows]

    # --- checkpoints -------------------------------------------------------------------

    def latest_checkpoint(self) -> StoredCheckpoint:
        rows = self.db.read_rows(
            f"SELECT {_CHECKPOINT} FROM checkpoints ORDER BY size DESC LIMIT 1", ()
        )
        if not rows:
            raise NotFoundError("the log has no checkpoint; run qiledger init")
        return _checkpoint(rows[0])

    def latest_checkpoint_with_entries(
        self, indexes: Collection[int]
    ) -> tuple[StoredCheckpoint, dict[int, StoredEntry]]:
        """One statement for up to 500 indexes: the latest checkpoint joined with
        each entry found (one row with no entry if none is)."""
        wanted = sorted(set(indexes))
        if not wanted or len(wanted) > 500:
            return self.latest_checkpoint(), self.entries_at(wanted)
        marks = ", ".join([self.db.placeholder] * len(wanted))
        rows = self.db.read_rows(
            f"SELECT c.size, c.root, c.note, c.created_at, {_JOINED_ENTRY} FROM "
            f"(SELECT {_CHECKPOINT} FROM checkpoints ORDER BY size DESC LIMIT 1) AS c "
            f"LEFT JOIN entries AS e ON e.idx IN ({marks})",
            wanted,
        )
        if not rows:
            raise NotFoundError("the log has no checkpoint; run qiledger init")
        found = {int(row[4]): _entry(row[4:]) for row in rows if row[4] is not None}
        return _checkpoint(rows[0][:4]), found

    def checkpoint(self, size: int) -> StoredCheckpoint:
        with self.db.read() as tx:
            stored = self.checkpoint_in(tx, size)
        if stored is None:
            raise NotFoundError(f"no signed checkpoint at tree size {size}")
        return stored

    def checkpoint_sizes_near(self, size: int) -> list[int]:
        p = self.db.placeholder
        with self.db.read() as tx:
            below = tx.exec_driver_sql(
                f"SELECT max(size) FROM checkpoints WHERE size < {p}", (size,)
            ).scalar()
            above = tx.exec_driver_sql(
                f"SELECT min(size) FROM checkpoints WHERE size > {p}", (size,)
            ).scalar()
        return [s for s in (below, above) if s is not None]

    def iter_checkpoints(self) -> Iterator[StoredCheckpoint]:
        for row in self._pages(_CHECKPOINT, "checkpoints", "size", -1, 1000):
            yield _checkpoint(row)

    # --- documents ---------------------------------------------------------------------

    def document(self, digest: str) -> StoredDocument:
        with self.db.read() as tx:
            row = tx.exec_driver_sql(
                f"SELECT {_DOCUMENT} FROM documents WHERE digest = {self.db.placeholder}",
                (digest,),
            ).first()
        if row is None:
            raise NotFoundError(f"no stored document with SHA-256 {digest}")
        return _document(row)

    def stored_document_digests(self, digests: Collection[str]) -> set[str]:
        """Those of ``digests`` under which a document is stored."""
        with self.db.read() as tx:
            rows = self._rows_where_in(tx, "SELECT digest FROM documents", "digest", digests)
            return {row[0] for row in rows}

    def iter_documents(self, batch: int = 50) -> Iterator[StoredDocument]:
        """Every stored document, a few at a time (they can be 20 MiB each)."""
        for row in self._pages(_DOCUMENT, "documents", "digest", "", batch):
            yield _document(row)

    # --- witness cosignatures (gathered after the log; not part of it) ----------------

    def ensure_cosignature_table(self) -> None:
        """Ledgers created before witnessing get the table on first use."""
        from sqlalchemy.exc import SQLAlchemyError

        from registry.storage import tables

        try:
            tables.CHECKPOINT_COSIGNATURES.create(self.db.write_engine, checkfirst=True)
        except SQLAlchemyError as exc:
            raise StorageError(f"cannot create the cosignature table: {exc}") from None

    def add_cosignature(self, size: int, witness_key: str, line: str, gathered_at: str) -> None:
        """Keep a witness's cosignature line on the checkpoint of ``size``, unless one
        is kept already (then this one is dropped: the first stays)."""
        from sqlalchemy.exc import IntegrityError as SQLAlchemyIntegrityError

        p = self.db.placeholder
        try:
            with self.db.write() as tx:
                tx.exec_driver_sql(
                    "INSERT INTO checkpoint_cosignatures (size, witness_key, line, gathered_at) "
                    f"SELECT {p}, {p}, {p}, {p} WHERE NOT EXISTS (SELECT 1 FROM "
                    f"checkpoint_cosignatures WHERE size = {p} AND witness_key = {p})",
                    (size, witness_key, line, gathered_at, size, witness_key),
                )
        except SQLAlchemyIntegrityError:
            pass  # another process stored this witness's line for this size first

    def cosignature_lines(self, size: int) -> list[tuple[str, str]]:
        """(witness key, line) of the cosignatures kept for ``size``, by witness key."""
        rows = self.db.read_rows(
            "SELECT witness_key, line FROM checkpoint_cosignatures "
            f"WHERE size = {self.db.placeholder} ORDER BY witness_key",
            (size,),
        )
        return [(str(w), str(line)) for w, line in rows]

    def cosigned_sizes(self) -> dict[str, int]:
        """The largest size each witness's kept cosignatures are for."""
        rows = self.db.read_rows(
            "SELECT witness_key, max(size) FROM checkpoint_cosignatures GROUP BY witness_key", ()
        )
        return {str(w): int(size) for w, size in rows}


def _entry(row: Any) -> StoredEntry:
    idx, leaf, statement_hash, logged_at, data = row
    return StoredEntry(
        int(idx), Hash(bytes(leaf)), bytes(statement_hash), str(logged_at), bytes(data)
    )


def _checkpoint(row: Any) -> StoredCheckpoint:
    size, root, note, created_at = row
    return StoredCheckpoint(int(size), Hash(bytes(root)), bytes(note), str(created_at))


def _document(row: Any) -> StoredDocument:
    digest, media_type, data = row
    return StoredDocument(str(digest), str(media_type), bytes(data))
