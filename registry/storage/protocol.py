"""The log's storage interface: what the sequencer, policy, proofs, tiles and fsck
may ask of storage, and the plain records that cross it.

Rules (for any implementation of :class:`LogStorage`):

- :meth:`LogStorage.write` is the log's one writer: it holds the writer lock for
  its whole transaction, and what was written in it is durable when the ``with``
  block returns (or none of it is, if the block raises);
- methods taking ``tx`` run inside the caller's transaction (from ``read`` or
  ``write``); callers only pass it through, never use it themselves;
- entries, nodes, checkpoints and documents are only ever inserted, never
  changed, so a node hash once read can be cached forever;
- readers see only committed data.

:class:`registry.storage.sql_log.SqlStorage` implements it on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from verifier.merkle import Hash, Node


class Rows(Protocol):
    """What a statement answers: its rows, as tuples."""

    def __iter__(self) -> Iterator[Any]: ...
    def first(self) -> Any: ...
    def all(self) -> Sequence[Any]: ...
    def scalar(self) -> Any: ...
    def scalar_one(self) -> Any: ...


class Transaction(Protocol):
    """A storage transaction: a SQLAlchemy connection, or on a SQLite file a read
    on the driver's own connection (``registry.storage.database``). Opaque to
    callers: handed from ``read``/``write`` to the methods taking ``tx``, which
    run DB-API SQL on it and nothing else."""

    def exec_driver_sql(self, statement: str, parameters: Any = None) -> Rows: ...


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
    # --- transactions ---------------------------------------------------------

    def read(self) -> AbstractContextManager[Transaction]:
        """A read-only transaction (a consistent view of committed data)."""
        ...

    def write(self) -> AbstractContextManager[Transaction]:
        """The writer's transaction: holds the writer lock, commits on normal exit."""
        ...

    # --- inside the caller's transaction ---------------------------------------

    def tail(self, tx: Transaction) -> Tail: ...
    def logged_statements(
        self, tx: Transaction, statement_hashes: Collection[bytes]
    ) -> dict[bytes, tuple[int, Hash, str]]:
        """Index, leaf hash and ``logged_at`` of those statements already logged."""
        ...

    def append(
        self,
        tx: Transaction,
        entries: Sequence[StoredEntry],
        nodes: Mapping[Node, bytes],
        checkpoint: StoredCheckpoint,
        documents: Sequence[StoredDocument] = (),
    ) -> None:
        """Insert entries, their new tree nodes, the batch's signed checkpoint and
        the documents not stored yet (content-addressed)."""
        ...

    def entries_from(self, tx: Transaction, start: int) -> Iterator[StoredEntry]:
        """Entries from ``start`` to the end of the log, in index order."""
        ...


    # --- tree nodes -------------------------------------------------------------

    def read_nodes(self, nodes: Sequence[Node], tx: Transaction | None = None) -> dict[Node, bytes]:
        """Hashes of stored nodes (may come from a cache); StorageError if one is missing."""
        ...

    def read_nodes_uncached(self, nodes: Sequence[Node]) -> dict[Node, bytes]:
        """Those of ``nodes`` that are stored, read from storage itself (for fsck)."""
        ...

    def node_range(self, level: int, start: int, end: int) -> list[bytes]:
        """Hashes of nodes ``(level, start)`` .. ``(level, end - 1)`` in order."""
        ...

    def count_nodes(self) -> int: ...

    # --- entries ----------------------------------------------------------------

    def tail_size(self) -> int: ...
    def entry(self, index: int) -> StoredEntry: ...
    def entries_at(self, indexes: Collection[int]) -> dict[int, StoredEntry]:
        """The entries at these indexes, in few reads; absent ones are left out."""
        ...

    def iter_entries(self, start: int = 0, batch: int = 1000) -> Iterator[StoredEntry]:
        """Entries in index order, in short reads of ``batch`` (bounded memory)."""
        ...

    def entry_data_range(self, start: int, end: int) -> list[bytes]:
        """Leaf data of entries ``start`` .. ``end - 1`` in order."""
        ...

    # --- what an audit export includes (registry.export) ----------------------------

    def issuer_entry_indices(self, issuer_id: str, after: int, size: int, limit: int) -> list[int]:
        """Indices of ``issuer_id``'s certificate entries in (``after``, ``size``), in order."""
        ...

    def certificate_entry_indices(self, certificate_id: str) -> list[int]:
        """Indices of the entries about a certificate, the amendment superseding it
        and the certificates it amends (transitively), in order."""
        ...

    def range_context_indices(self, start: int, end: int) -> list[int]:
        """Indices below ``start`` of the entries about the certificates with an entry
        in [``start``, ``end``) and those they amend, in order."""
        ...

    # --- checkpoints ------------------------------------------------------------

    def latest_checkpoint(self) -> StoredCheckpoint: ...
    def latest_checkpoint_with_entries(
        self, indexes: Collection[int]
    ) -> tuple[StoredCheckpoint, dict[int, StoredEntry]]:
        """:meth:`latest_checkpoint` and :meth:`entries_at` of ``indexes`` (a
        certificate's history), in one read for a short history."""
        ...

    def checkpoint(self, size: int) -> StoredCheckpoint: ...
    def checkpoint_sizes_near(self, size: int) -> list[int]:
        """The nearest checkpointed sizes below and above ``size`` (for hints)."""
        ...

    def iter_checkpoints(self) -> Iterator[StoredCheckpoint]: ...

    # --- documents --------------------------------------------------------------

    def document(self, digest: str) -> StoredDocument: ...
    def stored_document_digests(self, digests: Collection[str]) -> set[str]: ...
    def iter_documents(self) -> Iterator[StoredDocument]: ...

    # --- witness cosignatures (not part of the log) -------------------------------

    def ensure_cosignature_table(self) -> None: ...
    def add_cosignature(self, size: int, witness_key: str, line: str, gathered_at: str) -> None:
        """Keep a cosignature line for ``size`` unless one of this witness is kept."""
        ...

    def cosignature_lines(self, size: int) -> list[tuple[str, str]]:
        """(witness key, line) of the cosignatures kept for ``size``."""
        ...

    def cosigned_sizes(self) -> dict[str, int]:
        """The largest size each witness's kept cosignatures are for."""
        ...
