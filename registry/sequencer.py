"""The sequencer: turns submitted envelopes into log entries, in batches.

Per batch: parse and verify every envelope *before* taking the lock (the
cryptography is the expensive part and needs no shared state), then, holding
the database's single-writer lock, read the log's tail, drop statements already
logged — in whatever envelope (DESIGN.md item 8) — answering with their index,
let the trust policy admit each new one at
the log's own time, chain and hash the new leaves, extend the stored Merkle
nodes, sign one checkpoint and commit. An append is durable and covered by a
signed checkpoint when :meth:`Sequencer.submit_many` returns.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from registry import long_lived
from registry.errors import DocumentRequiredError
from registry.keys.log_signer import LogSigner
from registry.policy import TrustPolicy
from registry.storage.protocol import LogStorage, StoredCheckpoint, StoredDocument, StoredEntry
from registry.verify_pool import VerifyWorker, WorkerLost
from verifier import dsse, entry, merkle, statement
from verifier.errors import MalformedError, QILedgerError, UnknownKeyError
from verifier.keys import KeyId, PublicKey
from verifier.merkle import Hash, Node
from verifier.statement import DOCUMENT_TYPES

VERIFY_CHUNK = 64
WORKER_MIN_BATCH = 256  # below this, a worker round trip costs more than it saves
WORKER_SHARE = 3  # of every WORKER_SHARE chunks, the last is checked by the sequencer


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, eq=False)
class BatchProofs:
    """Inclusion proofs of a batch's entries under the checkpoint it signed, from
    the nodes the batch held in memory (the old right edge and every node its
    appends completed): a receipt needs no read of the tree. Shared, read-only,
    by every outcome of the batch."""

    size: int
    note: bytes
    nodes: Mapping[Node, bytes] = field(repr=False)

    def inclusion(self, index: int) -> list[Hash]:
        """RFC 9162 inclusion proof of ``index`` (an entry this batch appended)."""
        (proof,) = merkle.inclusion_proofs([index], self.size, self.nodes)
        return proof


@dataclass(frozen=True)
class Accepted:
    """The envelope is in the log at ``index`` (``duplicate``: it already was)."""

    index: int
    leaf_hash: Hash
    logged_at: str
    duplicate: bool
    checkpoint_size: int
    proofs: BatchProofs | None = field(default=None, compare=False, repr=False)
    """Set when the batch that answered appended ``index`` under ``checkpoint_size``."""


@dataclass(frozen=True)
class Checked:
    """An envelope parsed and its one signature verified before it was queued (the
    HTTP service checks the signer before it reads a document). The sequencer
    parses it no second time and, if the key that verified it has the envelope's
    key ID (its SHA-256), neither looks the key up nor checks the signature again:
    any key the policy names for that ID is that key, and whether it may sign
    the statement the policy's ``admit`` decides, as for any envelope."""

    envelope: dsse.VerifiedEnvelope
    statement: statement.Statement


@dataclass(frozen=True)
class Refused:
    """The envelope was not logged; ``error`` says why."""

    error: QILedgerError


Outcome = Accepted | Refused


@dataclass(frozen=True)
class _Verified:
    envelope: dsse.VerifiedEnvelope
    statement: statement.Statement
    canonical_envelope: bytes

    @property
    def statement_hash(self) -> bytes:
        return self.statement.digest


_Parsed = tuple[
    int, dsse.UnverifiedEnvelope, statement.Statement, tuple[dsse.PendingSignature, ...]
]


class Sequencer:
    def __init__(
        self,
        storage: LogStorage,
        signer: LogSigner,
        policy: TrustPolicy,
        clock: Callable[[], datetime] = utc_now,
        verify_worker: bool | None = None,
    ) -> None:
        # With a spare core, a worker process checks signatures of large batches.
        self.verify_worker = (os.cpu_count() or 1) > 1 if verify_worker is None else verify_worker
        self._worker_process: VerifyWorker | None = None
        self.storage = storage
        self.signer = signer
        self.policy = policy
        self.clock = clock

    def submit(self, envelope_bytes: bytes) -> Accepted:
        """Append one envelope; raises the refusal's error."""
        (outcome,) = self.submit_many([envelope_bytes])
        if isinstance(outcome, Refused):
            raise outcome.error
        return outcome

    def submit_many(
        self,
        envelopes: Sequence[bytes | Checked],
        documents: Mapping[int, StoredDocument] | None = None,
    ) -> list[Outcome]:
        """Append a batch; one outcome per envelope, in order (an envelope as bytes,
        or already parsed and verified: :class:`Checked`).

        ``documents`` maps a position in the batch to the document its
        certificate statement is about; it is stored, by digest, in the same
        transaction as the entry — or not at all. A certificate.issue or .amend
        without its document is refused (``document_required``): every path to the
        log passes here, so no certificate entry lacks its stored document.
        """
        # A batch allocates many short-lived objects and no cycles worth chasing;
        # the cyclic collector's passes over them cost about 6 % of the sequencer's
        # CPU (bench/ingest.py, 5 alternated runs). Reference counting frees them;
        # a later pass finds any cycle.
        with long_lived.collector_paused():
            return self._submit_many(envelopes, documents or {})

    def _submit_many(
        self, envelopes: Sequence[bytes | Checked], documents: Mapping[int, StoredDocument]
    ) -> list[Outcome]:
        outcomes: list[Outcome | None] = [None] * len(envelopes)
        prepared = self._verify_all(envelopes, outcomes)
        for position, item in prepared:
            doc = documents.get(position)
            if item.statement.type in DOCUMENT_TYPES:
                if doc is None:
                    outcomes[position] = Refused(
                        DocumentRequiredError(
                            f"{item.statement.type} needs its document: register it with "
                            "'qiledger issue FILE' or POST /api/v1/certificates"
                        )
                    )
                    continue
            elif doc is not None:
                outcomes[position] = Refused(
                    MalformedError(f"{item.statement.type} does not come with a document")
                )
                continue
            if doc is None:
                continue
            actual = hashlib.sha256(doc.data).hexdigest()
            if item.statement.get("document_sha256") != actual or doc.digest != actual:
                outcomes[position] = Refused(
                    MalformedError("the document's SHA-256 differs from the statement's")
                )
        prepared = [(p, v) for p, v in prepared if outcomes[p] is None]
        if prepared:
            self._sequence(prepared, outcomes, documents)
        return [o if o is not None else Refused(QILedgerError("not processed")) for o in outcomes]

    # --- before the lock -----------------------------------------------------

    def _verify_all(
        self, envelopes: Sequence[bytes | Checked], outcomes: list[Outcome | None]
    ) -> list[tuple[int, _Verified]]:
        """Parse every envelope and verify its signature against the policy's keys.

        Large batches are pipelined: while this thread parses the next chunk, a
        worker process checks the signatures of earlier ones; this thread
        checks one chunk in WORKER_SHARE itself. Either way each signature is
        checked by :class:`verifier.keys.PublicKey`, and an envelope is
        accepted only if every signature :func:`verifier.dsse.pending_signatures`
        names verifies.
        """
        worker = self._worker() if len(envelopes) >= WORKER_MIN_BATCH else None
        keys: dict[KeyId, PublicKey] = {}
        looked_up: set[KeyId] = set()
        started: list[tuple[list[_Parsed], int | None]] = []
        chunk: list[_Parsed] = []
        verified: list[tuple[int, _Verified]] = []
        for position, raw in enumerate(envelopes):
            if isinstance(raw, Checked):
                checked = self._recheck(raw, keys, looked_up, outcomes, position)
                if checked is not None:
                    verified.append((position, checked))
                continue
            try:
                unverified = dsse.parse(raw)
                dsse.only_signature(unverified)
                stmt = statement.parse(unverified.payload)
                wanted = {s.keyid for s in unverified.signatures} - looked_up
                if wanted:  # one policy lookup per new key ID, not per envelope
                    keys.update(self.policy.candidate_keys(wanted))
                    looked_up |= wanted
                pending = dsse.pending_signatures(unverified, keys)
            except UnknownKeyError:
                ids = {s.keyid for s in unverified.signatures}
                outcomes[position] = Refused(self.policy.unknown_signer(stmt, ids))
                continue
            except QILedgerError as exc:
                outcomes[position] = Refused(exc)
                continue
            chunk.append((position, unverified, stmt, pending))
            if len(chunk) == VERIFY_CHUNK or position == len(envelopes) - 1:
                started.append((chunk, self._send_to_worker(worker, chunk, len(started))))
                chunk = []
        if chunk:
            started.append((chunk, None))

        for parsed, ticket in started:
            verdicts = self._verdicts(ticket)
            flags = iter(verdicts if verdicts is not None else bytes(VERIFY_CHUNK * 8))
            for position, unverified, stmt, pending in parsed:
                worker_said = [next(flags) for _ in pending]
                try:
                    for signature, good in zip(pending, worker_said, strict=True):
                        if not good:
                            signature.check()  # here, or again for the exact error
                except QILedgerError as exc:
                    outcomes[position] = Refused(exc)
                    continue
                envelope = dsse.VerifiedEnvelope(unverified, pending[0].key)
                verified.append((position, _Verified(envelope, stmt, unverified.canonical_bytes())))
        verified.sort(key=lambda item: item[0])  # log order is batch order
        return verified

    def _recheck(
        self,
        checked: Checked,
        keys: dict[KeyId, PublicKey],
        looked_up: set[KeyId],
        outcomes: list[Outcome | None],
        position: int,
    ) -> _Verified | None:
        """A :class:`Checked` envelope ready to sequence (None: refused, in
        ``outcomes``). Verified by another key than its key ID names, it is checked
        anew against the policy's key for that ID, as an envelope in bytes is."""
        unverified = checked.envelope.envelope
        stmt = checked.statement
        try:
            keyid = dsse.only_signature(unverified).keyid
            if checked.envelope.signed_by.key_id == keyid:
                return _Verified(checked.envelope, stmt, unverified.canonical_bytes())
            if keyid not in looked_up:
                keys.update(self.policy.candidate_keys({keyid}))
                looked_up.add(keyid)
            key = keys.get(keyid)
            if key is None:
                outcomes[position] = Refused(self.policy.unknown_signer(stmt, {keyid}))
                return None
            envelope = dsse.verify(unverified, {keyid: key})
        except QILedgerError as exc:
            outcomes[position] = Refused(exc)
            return None
        return _Verified(envelope, stmt, unverified.canonical_bytes())

    def _send_to_worker(
        self, worker: VerifyWorker | None, chunk: list[_Parsed], number: int
    ) -> int | None:
        """Send a chunk's signatures to the worker; None = this thread checks them."""
        if worker is None or number % WORKER_SHARE == WORKER_SHARE - 1:
            return None
        try:
            return worker.send([sig for *_, pending in chunk for sig in pending])
        except WorkerLost:
            self._lose_worker()
            return None

    def _verdicts(self, ticket: int | None) -> bytes | None:
        if ticket is None or self._worker_process is None:
            return None
        try:
            return self._worker_process.verdicts(ticket)
        except WorkerLost:
            self._lose_worker()
            return None

    def _lose_worker(self) -> None:
        # Keep ingesting on this core alone; every signature is still checked.
        self.close()
        self.verify_worker = False

    def _worker(self) -> VerifyWorker | None:
        if not self.verify_worker:
            return None
        if self._worker_process is None:
            self._worker_process = VerifyWorker()
        return self._worker_process

    def close(self) -> None:
        if self._worker_process is not None:
            self._worker_process.close()
            self._worker_process = None

    # --- under the lock ------------------------------------------------------

    def _sequence(
        self,
        prepared: list[tuple[int, _Verified]],
        outcomes: list[Outcome | None],
        documents: Mapping[int, StoredDocument],
    ) -> None:
        pending: list[tuple[int, StoredEntry, bool]] = []
        try:
            size, proofs = self._sequence_locked(prepared, outcomes, pending, documents)
        except BaseException:
            self.policy.abort_batch()
            raise
        self.policy.commit_batch()
        for position, stored, duplicate in pending:
            outcomes[position] = Accepted(
                stored.index, stored.leaf_hash, stored.logged_at, duplicate, size, proofs
            )

    def _sequence_locked(
        self,
        prepared: list[tuple[int, _Verified]],
        outcomes: list[Outcome | None],
        pending: list[tuple[int, StoredEntry, bool]],
        documents: Mapping[int, StoredDocument],
    ) -> tuple[int, BatchProofs | None]:
        """Sequence under the writer lock; returns the new tree size and, if the
        batch appended, what proves its entries under its checkpoint."""
        with self.storage.write() as tx:
            tail = self.storage.tail(tx)
            self.policy.begin_batch(tx, tail.size, [v.statement for _, v in prepared])
            logged = self.storage.logged_statements(tx, {v.statement_hash for _, v in prepared})
            moment = self.clock()
            if tail.last_logged_at is not None:
                # logged_at never goes backwards along the chain, even if the clock does.
                moment = max(moment, entry.parse_time(tail.last_logged_at))
            moment = moment.replace(microsecond=moment.microsecond // 1000 * 1000)
            logged_at = entry.format_time(moment)
            edge_nodes = merkle.nodes_of_range(0, tail.size)
            edge_hashes = self.storage.read_nodes(edge_nodes, tx)
            edge = merkle.RightEdge(tail.size, [edge_hashes[n] for n in edge_nodes])

            prev = tail.last_leaf_hash
            size = tail.size
            new_entries: list[StoredEntry] = []
            new_nodes: dict[Node, bytes] = {}
            new_documents: list[StoredDocument] = []
            in_batch: dict[bytes, StoredEntry] = {}
            for position, item in prepared:
                if item.statement_hash in logged:
                    index, leaf, when = logged[item.statement_hash]
                    outcomes[position] = Accepted(index, leaf, when, True, tail.size)
                    continue
                if item.statement_hash in in_batch:
                    pending.append((position, in_batch[item.statement_hash], True))
                    continue
                try:
                    self.policy.admit(item.envelope, item.statement, moment)
                    data = entry.encode_spliced(prev, logged_at, item.canonical_envelope)
                except QILedgerError as exc:  # a TrustError, or an entry too large
                    outcomes[position] = Refused(exc)
                    continue
                self.policy.record(size, item.envelope, item.statement, logged_at)
                if position in documents:
                    new_documents.append(documents[position])
                leaf = merkle.leaf_hash(data)
                stored = StoredEntry(size, leaf, item.statement_hash, logged_at, data)
                new_entries.append(stored)
                in_batch[item.statement_hash] = stored
                pending.append((position, stored, False))
                edge.append(leaf, new_nodes)
                prev = leaf
                size += 1
            proofs = None
            if new_entries:
                root = edge.root()
                note = self.signer.sign(size, root)
                self.storage.append(
                    tx,
                    new_entries,
                    new_nodes,
                    StoredCheckpoint(size, root, note, logged_at),
                    new_documents,
                )
                # Every node a new entry's proof names is on the old right edge or
                # was completed by this batch (tests/test_merkle.py checks every batch shape).
                proofs = BatchProofs(size, note, {**edge_hashes, **new_nodes})
            # The certificate tables, in the same transaction as the entries.
            self.policy.end_batch(tx, size)
            return size, proofs
