"""Trust policies: who may write to the log.

A policy answers in two steps, so the expensive cryptography runs before the
sequencer takes its lock:

1. :meth:`TrustPolicy.candidate_keys` — public keys that could vouch for an
   envelope naming these key IDs (signatures are verified against them, no
   time or status check yet);
2. under the lock, :meth:`TrustPolicy.begin_batch` catches up with the log,
   then for each statement :meth:`TrustPolicy.admit` decides at the log's own
   ``logged_at`` (raising :class:`verifier.errors.TrustError` naming the failed
   link) and :meth:`TrustPolicy.record` remembers it, so later statements of
   the same batch see it; :meth:`TrustPolicy.end_batch` writes what it
   derived in the batch's own transaction. If the batch does not commit,
   :meth:`abort_batch`.

:class:`TrustChainPolicy` is DESIGN.md's trust model; its rules are the pure
functions of :mod:`verifier.trust`, so a replay of the log reaches the same
verdicts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from registry import long_lived
from registry.errors import StorageError
from registry.storage.certificate_index import CertificateIndex, ShortReads, SqlCertificates
from registry.storage.protocol import LogStorage, Transaction
from verifier import trust
from verifier.dsse import VerifiedEnvelope
from verifier.errors import QILedgerError
from verifier.keys import KeyId, PublicKey
from verifier.links import DocumentLinks, statement_references
from verifier.statement import DOCUMENT_TYPES, Statement


class TrustPolicy(Protocol):
    def candidate_keys(self, key_ids: Collection[KeyId]) -> dict[KeyId, PublicKey]: ...
    def unknown_signer(self, statement: Statement, key_ids: Collection[KeyId]) -> QILedgerError:
        """The refusal for a statement signed by no candidate key (names the link)."""
        ...

    def begin_batch(self, tx: Transaction, log_size: int, statements: Sequence[Statement]) -> None:
        """Catch up with the log inside the writer's transaction ``tx``; ``statements``
        are those the batch may admit (read ahead what they are about)."""
        ...

    def admit(
        self, verified: VerifiedEnvelope, statement: Statement, logged_at: datetime
    ) -> None: ...
    def record(
        self, index: int, verified: VerifiedEnvelope, statement: Statement, logged_at: str
    ) -> None: ...
    def end_batch(self, tx: Transaction, size: int) -> None:
        """Write what the batch's records derived, in ``tx``, before it commits."""
        ...

    def commit_batch(self) -> None:
        """The batch committed: what it recorded is now the log's."""
        ...

    def abort_batch(self) -> None: ...


@dataclass(frozen=True)
class ReindexReport:
    entries: int
    certificates: int
    seconds: float


REBUILD_FLUSH = 10_000
"""Entries replayed between writes of a rebuild (bounds its memory)."""


class TrustChainPolicy:
    """Accreditation body → accredited issuer → issuer key → statement.

    Bodies, issuers and keys (which grow with issuers) are kept in a
    :class:`verifier.trust.TrustState` in memory, caught up from the log's
    non-certificate entries at every batch (other processes may append);
    certificates (which grow with everything ever certified) are in the
    derived tables of :mod:`registry.storage.certificate_index`, read and written
    inside each batch's transaction. The log's entries were verified when
    appended and ``fsck`` re-verifies them, so catch-ups and rebuilds replay
    without repeating signature and canonical-form checks.

    Duplicates are the sequencer's: it answers every statement already logged
    (looked up in the database) before it asks :meth:`admit`.
    """

    def __init__(
        self,
        storage: LogStorage,
        index: CertificateIndex,
        log_key: PublicKey,
        clock: Callable[[], datetime],
    ) -> None:
        self.storage = storage
        self.index = index
        self.log_key = log_key
        self._clock = clock
        self.state = self._new_state()
        self._batch: trust.TrustState | None = None
        self._batch_store: SqlCertificates | None = None
        self._batch_detached = False
        self._committing: trust.TrustState | None = None
        self._batch_trust_indices: list[int] = []
        self._batch_recorded = 0
        self._batch_references: list[tuple[int, str, DocumentLinks]] = []

    def _new_state(self) -> trust.TrustState:
        # Outside a batch its certificates are read in short transactions of their own.
        return trust.TrustState(self.log_key, ShortReads(self.index), remember_recent=False)

    def sync(self, tx: Transaction | None = None) -> trust.TrustState:
        """Bring the state up to the log's current size and return it."""
        if tx is not None:
            self._catch_up(tx)
            return self.state
        with self.storage.read() as read_tx:
            self._catch_up(read_tx)
        return self.state

    def _catch_up(self, tx: Transaction) -> None:
        """Replay the non-certificate entries the state lacks, then move past the
        certificate entries (their state is in the tables already)."""
        size = self.index.derived_size(tx)
        if size < self.state.size:  # cannot happen unless the database was replaced
            self._reset()
        if size == self.state.size:
            return
        before = self.state.size
        with long_lived.collector_paused():
            for index, data in self.index.trust_entries_from(tx, self.state.size):
                self.state.skip_to(index)
                trust.replay_one(self.state, index, data, trust_append_checks=True)
            self.state.skip_to(size)
        if self.state.size - before >= long_lived.FREEZE_AFTER:
            long_lived.freeze_survivors()

    def rebuild(self, tx: Transaction) -> ReindexReport:
        """Replace the derived tables with a replay of the whole log through the
        trust rules, inside the writer's transaction ``tx``."""
        started = time.perf_counter()
        self.index.reset(tx)
        store = self.index.writer(tx)
        state = trust.TrustState(self.log_key, store, remember_recent=False)
        trust_indices: list[int] = []
        references: list[tuple[int, str, DocumentLinks]] = []
        certificates = 0
        with long_lived.collector_paused():
            for stored in self.storage.entries_from(tx, 0):
                stmt = trust.replay_one(state, stored.index, stored.data, trust_append_checks=True)
                if stmt.type.startswith("certificate."):
                    certificates += stmt.type in DOCUMENT_TYPES
                    _note_references(references, stored.index, stmt)
                else:
                    trust_indices.append(stored.index)
                if state.size % REBUILD_FLUSH == 0:
                    self.index.record_batch(tx, store, trust_indices, state.size, references)
                    trust_indices, references = [], []
            self.index.record_batch(tx, store, trust_indices, state.size, references)
        self._reset()
        return ReindexReport(state.size, certificates, time.perf_counter() - started)

    def candidate_keys(self, key_ids: Collection[KeyId]) -> dict[KeyId, PublicKey]:
        return self.sync().keys_for(key_ids)

    def unknown_signer(self, statement: Statement, key_ids: Collection[KeyId]) -> QILedgerError:
        return self.state.unknown_signer(statement, key_ids)

    def begin_batch(self, tx: Transaction, log_size: int, statements: Sequence[Statement]) -> None:
        if self.state.size > log_size:  # cannot happen unless the log was replaced
            self._reset()
        self.sync(tx)
        if self.state.size != log_size:
            raise StorageError(
                f"the certificate tables reflect {self.state.size} entries, the log has "
                f"{log_size}; run 'qiledger reindex'"
            )
        store = self.index.writer(tx)
        ids: list[str] = []
        digests: list[str] = []
        for stmt in statements:
            if stmt.type.startswith("certificate."):
                ids.append(stmt["certificate_id"])
                if stmt.type == "certificate.amend":
                    ids.append(stmt["supersedes"])
                if stmt.type in DOCUMENT_TYPES:
                    digests.append(stmt["document_sha256"])
        store.prefetch(ids, digests)
        # A view: bodies, issuers and keys are the state's own; certificates this
        # transaction's.
        self._batch = self.state.reading(store)
        self._batch_store = store
        self._batch_detached = False
        self._committing = None
        self._batch_trust_indices = []
        self._batch_recorded = 0
        self._batch_references = []

    def _in_batch(self) -> trust.TrustState:
        if self._batch is None:
            raise StorageError("admit/record outside a batch")
        return self._batch

    def admit(self, verified: VerifiedEnvelope, statement: Statement, logged_at: datetime) -> None:
        self._in_batch().admit(verified.signed_by, statement, logged_at)

    def record(
        self, index: int, verified: VerifiedEnvelope, statement: Statement, logged_at: str
    ) -> None:
        batch = self._in_batch()
        if not statement.type.startswith("certificate.") and not self._batch_detached:
            # Bodies, issuers and keys are shared with every reader: a batch that
            # changes them changes a copy, which replaces them once it commits
            # (readers never see a change the log may yet refuse to hold).
            batch = self._batch = batch.detached(batch.certificates)
            self._batch_detached = True
        batch.apply(index, verified.signed_by, statement, logged_at)
        self._batch_recorded += 1
        if not statement.type.startswith("certificate."):
            self._batch_trust_indices.append(index)
        else:
            _note_references(self._batch_references, index, statement)

    def end_batch(self, tx: Transaction, size: int) -> None:
        batch, store = self._batch, self._batch_store
        self._batch = self._batch_store = None
        if batch is None or store is None:
            return
        if self._batch_recorded:
            self.index.record_batch(
                tx, store, self._batch_trust_indices, size, self._batch_references
            )
        if self._batch_detached:
            self._committing = batch  # the new bodies, issuers and keys, once committed
        else:
            self.state.skip_to(batch.size)

    def commit_batch(self) -> None:
        committed, self._committing = self._committing, None
        if committed is not None:
            committed.certificates = ShortReads(self.index)
            self.state = committed  # one reference swap: a reader sees old or new

    def abort_batch(self) -> None:
        # The batch's records never reached the log: rebuild from the log next time.
        self._reset()

    def _reset(self) -> None:
        self.state = self._new_state()
        self._batch = self._batch_store = self._committing = None
        self._batch_references = []


def _note_references(
    references: list[tuple[int, str, DocumentLinks]], index: int, stmt: Statement
) -> None:
    """Add what a certificate.issue/amend statement links to (if anything)."""
    if stmt.type in DOCUMENT_TYPES and ("links" in stmt.fields or "standards" in stmt.fields):
        references.append((index, stmt["certificate_id"], statement_references(stmt.fields)))
