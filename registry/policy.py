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
   the same batch see it. If the batch does not commit, :meth:`abort_batch`.

:class:`TrustChainPolicy` is DESIGN.md's trust model; its rules are the pure
functions of :mod:`verifier.trust`, so a replay of the log reaches the same
verdicts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from datetime import datetime
from typing import Protocol

from sqlalchemy.exc import SQLAlchemyError

from registry import long_lived
from registry.errors import StorageError, database_error_detail
from registry.storage import snapshots as trust_snapshot
from registry.storage.protocol import LogStorage, Transaction
from verifier import trust
from verifier.dsse import VerifiedEnvelope
from verifier.entry import format_time
from verifier.errors import MalformedError, QILedgerError, TrustError
from verifier.keys import KeyId, PublicKey
from verifier.statement import Statement

log = logging.getLogger("qiledger.policy")


class TrustPolicy(Protocol):
    def candidate_keys(self, key_ids: Collection[KeyId]) -> dict[KeyId, PublicKey]: ...
    def unknown_signer(self, statement: Statement, key_ids: Collection[KeyId]) -> QILedgerError:
        """The refusal for a statement signed by no candidate key (names the link)."""
        ...

    def begin_batch(self, tx: Transaction, log_size: int) -> None:
        """Catch up with the log inside the writer's transaction ``tx``."""
        ...

    def admit(
        self, verified: VerifiedEnvelope, statement: Statement, logged_at: datetime
    ) -> None: ...
    def record(
        self, index: int, verified: VerifiedEnvelope, statement: Statement, logged_at: str
    ) -> None: ...
    def abort_batch(self) -> None: ...


class TrustChainPolicy:
    """Accreditation body → accredited issuer → issuer key → statement.

    Keeps a :class:`verifier.trust.TrustState` in memory and catches it up
    from the log (other processes may have appended) at every batch. The log's
    entries were verified when appended and ``fsck`` re-verifies them, so the
    catch-up replays without repeating signature and canonical-form checks.
    """

    def __init__(
        self,
        storage: LogStorage,
        snapshots: trust_snapshot.SnapshotStore,
        log_key: PublicKey,
        clock: Callable[[], datetime],
        snapshot_after: int = trust_snapshot.SNAPSHOT_AFTER,
    ) -> None:
        self.storage = storage
        self.log_key = log_key
        self.snapshots = snapshots
        self.snapshot_after = snapshot_after
        self._clock = clock
        self.state = trust.TrustState(log_key)
        self._from_scratch = True
        """The state was reset: start from the newest snapshot, not entry 0."""
        self._snapshot_size = 0
        """The size of the snapshot the state started from or last stored."""

    def sync(self, tx: Transaction | None = None) -> trust.TrustState:
        """Bring the state up to the log's current size and return it.

        Starting from nothing, begin at the newest usable snapshot. A catch-up
        outside a batch (``tx`` None) that replayed ``snapshot_after`` entries or
        more (a start-up) stores a snapshot; a running server's small catch-ups
        never do, so no request waits for one (``qiledger snapshot`` stores one
        on demand)."""
        if tx is not None:
            self._catch_up(tx)
            return self.state
        with self.storage.read() as read_tx:
            replayed = self._catch_up(read_tx)
        if replayed >= self.snapshot_after:
            try:
                self.save_snapshot()
            except (SQLAlchemyError, StorageError) as exc:  # e.g. a read-only database user
                log.warning("could not store a trust snapshot: %s", database_error_detail(exc))
        return self.state

    def _catch_up(self, tx: Transaction) -> int:
        """Replay what the state lacks; returns how many entries were replayed
        (not counting those a snapshot brought)."""
        before = self.state.size
        with long_lived.collector_paused():
            loaded = self._from_scratch and self._start_from_snapshot(tx)
            self._from_scratch = False
            start = self.state.size
            try:
                self._replay_from(tx, start)
            except TrustError as exc:
                if not loaded:
                    raise
                # A snapshot that passed its checks but that the log does not
                # continue from (fsck names it): fall back to the whole log.
                log.warning(
                    "the log does not replay from the trust snapshot at size %d (%s); "
                    "replaying the log from the start",
                    start,
                    exc.message,
                )
                self.state, self._snapshot_size, start = trust.TrustState(self.log_key), 0, 0
                self._replay_from(tx, 0)
        if self.state.size - before >= long_lived.FREEZE_AFTER:
            long_lived.freeze_survivors()
        return self.state.size - start

    def _replay_from(self, tx: Transaction, start: int) -> None:
        for stored in self.storage.entries_from(tx, start):
            trust.replay_one(self.state, stored.index, stored.data, trust_append_checks=True)

    def _start_from_snapshot(self, tx: Transaction) -> bool:
        """Load the newest usable snapshot into the state; whether one was loaded."""
        snapshot = self.snapshots.latest(tx, self.storage.tail(tx).size)
        if snapshot is None:
            return False
        try:
            signed = self.storage.checkpoint_in(tx, snapshot.size)
            if signed is None or signed.root != snapshot.root:
                raise MalformedError("its root is not the log's signed root at that size")
            state = trust_snapshot.decode(trust_snapshot.unpack(snapshot), self.log_key)
            if state.size != snapshot.size:
                raise MalformedError(f"it holds {state.size} entries")
        except QILedgerError as exc:
            log.warning(
                "ignoring the trust snapshot at size %d (%s); replaying the log from the start",
                snapshot.size,
                exc.message,
            )
            return False
        self.state = state
        self._snapshot_size = snapshot.size
        return True

    def save_snapshot(self) -> int | None:
        """Store the current state as a snapshot; its size, or None if there is
        nothing new since the snapshot it started from (or it is not at a
        checkpointed size, which cannot happen between batches)."""
        if self.state.size == self._snapshot_size:
            return None
        with self.storage.read() as tx:
            signed = self.storage.checkpoint_in(tx, self.state.size)
        if signed is None:
            return None
        self.snapshots.save(self.state, signed.root, format_time(self._clock()))
        self._snapshot_size = self.state.size
        return self.state.size

    def candidate_keys(self, key_ids: Collection[KeyId]) -> dict[KeyId, PublicKey]:
        return self.sync().keys_for(key_ids)

    def unknown_signer(self, statement: Statement, key_ids: Collection[KeyId]) -> QILedgerError:
        return self.state.unknown_signer(statement, key_ids)

    def begin_batch(self, tx: Transaction, log_size: int) -> None:
        if self.state.size > log_size:  # cannot happen unless the log was replaced
            self._reset()
        self.sync(tx)

    def admit(self, verified: VerifiedEnvelope, statement: Statement, logged_at: datetime) -> None:
        self.state.admit(verified.signed_by, statement, logged_at)

    def record(
        self, index: int, verified: VerifiedEnvelope, statement: Statement, logged_at: str
    ) -> None:
        self.state.apply(index, verified.signed_by, statement, logged_at)

    def abort_batch(self) -> None:
        # The batch's records never reached the log: rebuild from the log next time.
        self._reset()

    def _reset(self) -> None:
        self.state = trust.TrustState(self.log_key)
        self._from_scratch = True
        self._snapshot_size = 0
