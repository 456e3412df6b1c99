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

from collections.abc import Collection
from datetime import datetime
from typing import Protocol

from sqlalchemy.engine import Connection

from registry.storage import SqlStorage
from verifier import trust
from verifier.dsse import VerifiedEnvelope
from verifier.errors import QILedgerError
from verifier.keys import KeyId, PublicKey
from verifier.statement import Statement


class TrustPolicy(Protocol):
    def candidate_keys(self, key_ids: Collection[KeyId]) -> dict[KeyId, PublicKey]: ...
    def unknown_signer(self, statement: Statement, key_ids: Collection[KeyId]) -> QILedgerError:
        """The refusal for a statement signed by no candidate key (names the link)."""
        ...

    def begin_batch(self, conn: Connection, log_size: int) -> None: ...
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
    catch-up replays without repeating signature checks.
    """

    def __init__(self, storage: SqlStorage, log_key: PublicKey) -> None:
        self.storage = storage
        self.log_key = log_key
        self.state = trust.TrustState(log_key)

    def sync(self, conn: Connection | None = None) -> trust.TrustState:
        """Bring the state up to the log's current size and return it."""
        if conn is None:
            with self.storage.db.read() as read_conn:
                return self.sync(read_conn)
        for stored in self.storage.entries_from(conn, self.state.size):
            trust.replay_one(self.state, stored.index, stored.data, verify_signatures=False)
        return self.state

    def candidate_keys(self, key_ids: Collection[KeyId]) -> dict[KeyId, PublicKey]:
        return self.sync().keys_for(key_ids)

    def unknown_signer(self, statement: Statement, key_ids: Collection[KeyId]) -> QILedgerError:
        return self.state.unknown_signer(statement, key_ids)

    def begin_batch(self, conn: Connection, log_size: int) -> None:
        if self.state.size > log_size:  # cannot happen unless the log was replaced
            self.state = trust.TrustState(self.log_key)
        self.sync(conn)

    def admit(self, verified: VerifiedEnvelope, statement: Statement, logged_at: datetime) -> None:
        self.state.admit(verified.signed_by, statement, logged_at)

    def record(
        self, index: int, verified: VerifiedEnvelope, statement: Statement, logged_at: str
    ) -> None:
        self.state.apply(index, verified.signed_by, statement, logged_at)

    def abort_batch(self) -> None:
        # The batch's records never reached the log: rebuild from the log next time.
        self.state = trust.TrustState(self.log_key)
