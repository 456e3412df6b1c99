"""Log storage: the small interface the sequencer, proof builder and fsck use.

Rules (for any implementation of :class:`LogStorage`):

- methods taking ``conn`` run inside the caller's transaction; writes become
  visible and durable together when that transaction commits;
- entries, nodes and checkpoints are only ever inserted, never changed, so a
  node hash once read can be cached forever;
- readers see only committed data.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import insert
from sqlalchemy.engine import Connection

from registry.errors import NotFoundError, StorageError
from registry.storage import tables
from registry.storage.database import Database
from registry.storage.node_keys import node_id, node_of
from verifier.entry import GENESIS_PREV
from verifier.merkle import Hash, Node


@dataclass(frozen=True)
class Tail:
    """The end of the log: its size, last leaf hash and last ``logged_at``."""

    size: int
    last_leaf_hash: Hash
    last_logged_at: str | None


@dataclass(frozen=True)
class StoredEntry:
    index: int
    leaf_hash: Hash
    statement_hash: bytes
    logged_at: str
    data: bytes


@dataclass(frozen=True)
class StoredDocument:
    """A certificate document stored by the lowercase hex SHA-256 of its exact bytes."""

    digest: str
    media_type: str
    data: bytes


@dataclass(frozen=True)
class StoredCheckpoint:
    size: int
    root: Hash
    note: bytes
    created_at: str


class LogStorage(Protocol):
    def tail(self, conn: Connection) -> Tail: ...
    def logged_statements(
        self, conn: Connection, statement_hashes: Collection[bytes]
    ) -> dict[bytes, tuple[int, Hash, str]]: ...
    def read_nodes(
        self, nodes: Sequence[Node], conn: Connection | None = None
    ) -> dict[Node, bytes]: ...
    def append(
        self,
        conn: Connection,
        entries: Sequence[StoredEntry],
        nodes: Mapping[Node, bytes],
        checkpoint: StoredCheckpoint,
        documents: Sequence[StoredDocument] = (),
    ) -> None: ...
    def document(self, digest: str) -> StoredDocument: ...
    def stored_document_digests(self, digests: Collection[str]) -> set[str]: ...
    def read_nodes_uncached(self, nodes: Sequence[Node]) -> dict[Node, bytes]: ...
    def count_nodes(self) -> int: ...
    def tail_size(self) -> int: ...
    def latest_checkpoint(self) -> StoredCheckpoint: ...
    def checkpoint(self, size: int) -> StoredCheckpoint: ...
    def entry(self, index: int) -> StoredEntry: ...
    def iter_entries(self, start: int = 0, batch: int = 1000) -> Iterator[StoredEntry]: ...
    def entries_from(self, conn: Connection, start: int) -> Iterator[StoredEntry]: ...
    def iter_nodes(self, batch: int = 5000) -> Iterator[tuple[Node, bytes]]: ...
    def iter_checkpoints(self) -> Iterator[StoredCheckpoint]: ...


class SqlStorage:
    """:class:`LogStorage` on SQLite or PostgreSQL through SQLAlchemy."""

    NODE_CACHE_LIMIT = 1 << 18

    def __init__(self, db: Database) -> None:
        self.db = db
        self._node_cache: dict[int, bytes] = {}
        p = db.placeholder
        self._sql_nodes = {
            n: f"SELECT node_id, hash FROM tree_nodes WHERE node_id IN ({','.join([p] * n)})"
            for n in range(1, 129)
        }

    # --- inside the sequencer's write transaction ---------------------------

    def tail(self, conn: Connection) -> Tail:
        row = conn.exec_driver_sql(
            "SELECT idx, leaf_hash, logged_at FROM entries ORDER BY idx DESC LIMIT 1"
        ).first()
        if row is None:
            return Tail(0, GENESIS_PREV, None)
        return Tail(row[0] + 1, Hash(bytes(row[1])), row[2])

    def logged_statements(
        self, conn: Connection, statement_hashes: Collection[bytes]
    ) -> dict[bytes, tuple[int, Hash, str]]:
        """Index, leaf hash and logged_at of those statements already in the log."""
        rows = self._rows_where_in(
            conn,
            "SELECT statement_hash, idx, leaf_hash, logged_at FROM entries",
            "statement_hash",
            statement_hashes,
        )
        return {bytes(h): (i, Hash(bytes(leaf)), t) for h, i, leaf, t in rows}

    def _rows_where_in(
        self, conn: Connection, select: str, column: str, values: Collection[Any]
    ) -> Iterator[Any]:
        """Rows of ``select`` whose ``column`` is one of ``values``, 500 at a time
        (bounded statement size on both engines)."""
        wanted = list(values)
        p = self.db.placeholder
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            yield from conn.exec_driver_sql(
                f"{select} WHERE {column} IN ({','.join([p] * len(chunk))})", tuple(chunk)
            )

    def append(
        self,
        conn: Connection,
        entries: Sequence[StoredEntry],
        nodes: Mapping[Node, bytes],
        checkpoint: StoredCheckpoint,
        documents: Sequence[StoredDocument] = (),
    ) -> None:
        # Raw executemany: SQLAlchemy's per-row parameter processing costs more
        # than the insert itself on the ingest path.
        p = self.db.placeholder
        if entries:
            conn.exec_driver_sql(
                f"INSERT INTO entries (idx, leaf_hash, statement_hash, logged_at, data) "
                f"VALUES ({p}, {p}, {p}, {p}, {p})",
                [(e.index, e.leaf_hash, e.statement_hash, e.logged_at, e.data) for e in entries],
            )
        if nodes:
            conn.exec_driver_sql(
                f"INSERT INTO tree_nodes (node_id, hash) VALUES ({p}, {p})",
                [(node_id(n), h) for n, h in nodes.items()],
            )
        if documents:
            # Content-addressed: bytes already stored under this digest (also
            # earlier in this batch) are not inserted again (a collision would
            # trip the append-only trigger). One executemany for the batch.
            conn.exec_driver_sql(
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
        conn.execute(
            insert(tables.CHECKPOINTS),
            {
                "size": checkpoint.size,
                "root": checkpoint.root,
                "note": checkpoint.note,
                "created_at": checkpoint.created_at,
            },
        )

    # --- reads ---------------------------------------------------------------

    def read_nodes(
        self, nodes: Sequence[Node], conn: Connection | None = None
    ) -> dict[Node, bytes]:
        """Hashes of stored nodes; raises StorageError if one is missing."""
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
            if conn is None:
                with self.db.read() as read_conn:
                    fetched = self._fetch_nodes(read_conn, missing)
            else:
                fetched = self._fetch_nodes(conn, missing)
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
        """Read nodes straight from the database (fsck must not trust the cache)."""
        with self.db.read() as conn:
            return {node_of(k): v for k, v in self._fetch_nodes(conn, [node_id(n) for n in nodes])}

    def count_nodes(self) -> int:
        with self.db.read() as conn:
            return int(conn.exec_driver_sql("SELECT count(*) FROM tree_nodes").scalar() or 0)

    def tail_size(self) -> int:
        with self.db.read() as conn:
            return self.tail(conn).size

    def _fetch_nodes(self, conn: Connection, keys: list[int]) -> list[tuple[int, bytes]]:
        out: list[tuple[int, bytes]] = []
        for start in range(0, len(keys), 128):
            chunk = keys[start : start + 128]
            rows = conn.exec_driver_sql(self._sql_nodes[len(chunk)], tuple(chunk))
            out.extend((k, bytes(h)) for k, h in rows)
        return out

    def node_range(self, level: int, start: int, end: int) -> list[bytes]:
        """Hashes of nodes ``(level, start)`` .. ``(level, end - 1)`` in order, by one
        key-range read; raises StorageError if one is missing."""
        p = self.db.placeholder
        with self.db.read() as conn:
            rows = conn.exec_driver_sql(
                f"SELECT hash FROM tree_nodes WHERE node_id >= {p} AND node_id < {p} "
                f"ORDER BY node_id",
                (node_id((level, start)), node_id((level, end))),
            ).all()
        if len(rows) != end - start:
            raise StorageError(
                f"tree nodes missing from storage: level {level}, indices [{start}, {end})"
            )
        return [bytes(row[0]) for row in rows]

    def entry_data_range(self, start: int, end: int) -> list[bytes]:
        """Leaf data of entries ``start`` .. ``end - 1`` in order, by one range read."""
        p = self.db.placeholder
        with self.db.read() as conn:
            rows = conn.exec_driver_sql(
                f"SELECT data FROM entries WHERE idx >= {p} AND idx < {p} ORDER BY idx",
                (start, end),
            ).all()
        if len(rows) != end - start:
            raise StorageError(f"entries missing from storage: indices [{start}, {end})")
        return [bytes(row[0]) for row in rows]

    def latest_checkpoint(self) -> StoredCheckpoint:
        with self.db.read() as conn:
            row = conn.exec_driver_sql(
                "SELECT size, root, note, created_at FROM checkpoints ORDER BY size DESC LIMIT 1"
            ).first()
        if row is None:
            raise NotFoundError("the log has no checkpoint; run qiledger init")
        return StoredCheckpoint(row[0], Hash(bytes(row[1])), bytes(row[2]), row[3])

    def checkpoint(self, size: int) -> StoredCheckpoint:
        with self.db.read() as conn:
            stored = self.checkpoint_in(conn, size)
        if stored is None:
            raise NotFoundError(f"no signed checkpoint at tree size {size}")
        return stored

    def checkpoint_in(self, conn: Connection, size: int) -> StoredCheckpoint | None:
        row = conn.exec_driver_sql(
            f"SELECT size, root, note, created_at FROM checkpoints "
            f"WHERE size = {self.db.placeholder}",
            (size,),
        ).first()
        if row is None:
            return None
        return StoredCheckpoint(row[0], Hash(bytes(row[1])), bytes(row[2]), row[3])

    def document(self, digest: str) -> StoredDocument:
        with self.db.read() as conn:
            row = conn.exec_driver_sql(
                "SELECT digest, media_type, data FROM documents "
                f"WHERE digest = {self.db.placeholder}",
                (digest,),
            ).first()
        if row is None:
            raise NotFoundError(f"no stored document with SHA-256 {digest}")
        return StoredDocument(row[0], row[1], bytes(row[2]))

    def entry(self, index: int) -> StoredEntry:
        with self.db.read() as conn:
            row = conn.exec_driver_sql(
                f"SELECT idx, leaf_hash, statement_hash, logged_at, data FROM entries "
                f"WHERE idx = {self.db.placeholder}",
                (index,),
            ).first()
        if row is None:
            raise NotFoundError(f"no entry at index {index}")
        return _entry(row)

    def iter_entries(self, start: int = 0, batch: int = 1000) -> Iterator[StoredEntry]:
        """Entries in index order, fetched in bounded batches (bounded memory)."""
        next_index = start
        p = self.db.placeholder
        while True:
            with self.db.read() as conn:
                rows = conn.exec_driver_sql(
                    f"SELECT idx, leaf_hash, statement_hash, logged_at, data FROM entries "
                    f"WHERE idx >= {p} ORDER BY idx LIMIT {int(batch)}",
                    (next_index,),
                ).all()
            if not rows:
                return
            for row in rows:
                yield _entry(row)
            next_index = rows[-1][0] + 1

    def entries_from(
        self, conn: Connection, start: int, batch: int = 2000
    ) -> Iterator[StoredEntry]:
        """Entries from ``start`` to the end, read inside the caller's transaction."""
        p = self.db.placeholder
        while True:
            rows = conn.exec_driver_sql(
                f"SELECT idx, leaf_hash, statement_hash, logged_at, data FROM entries "
                f"WHERE idx >= {p} ORDER BY idx LIMIT {int(batch)}",
                (start,),
            ).all()
            for row in rows:
                yield _entry(row)
            if len(rows) < batch:
                return
            start = rows[-1][0] + 1

    def iter_nodes(self, batch: int = 5000) -> Iterator[tuple[Node, bytes]]:
        after = -1
        p = self.db.placeholder
        while True:
            with self.db.read() as conn:
                rows = conn.exec_driver_sql(
                    f"SELECT node_id, hash FROM tree_nodes WHERE node_id > {p} "
                    f"ORDER BY node_id LIMIT {int(batch)}",
                    (after,),
                ).all()
            if not rows:
                return
            for key, value in rows:
                yield node_of(key), bytes(value)
            after = rows[-1][0]

    def stored_document_digests(self, digests: Collection[str]) -> set[str]:
        """Those of ``digests`` under which a document is stored."""
        with self.db.read() as conn:
            rows = self._rows_where_in(conn, "SELECT digest FROM documents", "digest", digests)
            return {row[0] for row in rows}

    def iter_documents(self, batch: int = 50) -> Iterator[StoredDocument]:
        """Every stored document, a few at a time (they can be 20 MiB each)."""
        after = ""
        p = self.db.placeholder
        while True:
            with self.db.read() as conn:
                rows = conn.exec_driver_sql(
                    f"SELECT digest, media_type, data FROM documents WHERE digest > {p} "
                    f"ORDER BY digest LIMIT {int(batch)}",
                    (after,),
                ).all()
            if not rows:
                return
            for digest, media_type, data in rows:
                yield StoredDocument(digest, media_type, bytes(data))
            after = rows[-1][0]

    def iter_checkpoints(self) -> Iterator[StoredCheckpoint]:
        after = -1
        p = self.db.placeholder
        while True:
            with self.db.read() as conn:
                rows = conn.exec_driver_sql(
                    f"SELECT size, root, note, created_at FROM checkpoints WHERE size > {p} "
                    f"ORDER BY size LIMIT 1000",
                    (after,),
                ).all()
            if not rows:
                return
            for row in rows:
                yield StoredCheckpoint(row[0], Hash(bytes(row[1])), bytes(row[2]), row[3])
            after = rows[-1][0]

    def checkpoint_sizes_near(self, size: int) -> list[int]:
        p = self.db.placeholder
        with self.db.read() as conn:
            below = conn.exec_driver_sql(
                f"SELECT max(size) FROM checkpoints WHERE size < {p}", (size,)
            ).scalar()
            above = conn.exec_driver_sql(
                f"SELECT min(size) FROM checkpoints WHERE size > {p}", (size,)
            ).scalar()
        return [s for s in (below, above) if s is not None]


def _entry(row: Any) -> StoredEntry:
    idx, leaf, statement_hash, logged_at, data = row
    return StoredEntry(
        int(idx), Hash(bytes(leaf)), bytes(statement_hash), str(logged_at), bytes(data)
    )
