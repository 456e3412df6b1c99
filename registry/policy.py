"""Trust policies: who may write to the log.

A policy answers two questions, split so the expensive cryptography can run
before the sequencer takes its lock:

1. :meth:`TrustPolicy.candidate_keys` — which public keys could vouch for an
   envelope naming these key IDs (signatures are verified against them outside
   the lock);
2. :meth:`TrustPolicy.admit` — inside the lock, at the log's own ``logged_at``,
   is the verified signer allowed to log this statement now? Refusals raise
   :class:`PolicyRefusal` naming the failed link.

The accreditation-based policy of DESIGN.md's trust model replaces
:class:`AllowListPolicy` in its own issue.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Protocol

from sqlalchemy import insert
from sqlalchemy.engine import Connection

from registry import tables
from registry.database import Database
from verifier.dsse import VerifiedEnvelope
from verifier.entry import format_time
from verifier.keys import KeyId, PublicKey
from verifier.statement import Statement


class TrustPolicy(Protocol):
    def candidate_keys(self, key_ids: Collection[KeyId]) -> dict[KeyId, PublicKey]:
        """Public keys for these IDs that the policy might accept (no time check)."""
        ...

    def admit(
        self,
        conn: Connection,
        verified: VerifiedEnvelope,
        statement: Statement,
        logged_at: datetime,
    ) -> None:
        """Raise PolicyRefusal unless the signer may log ``statement`` at ``logged_at``."""
        ...


class AllowListPolicy:
    """Accept statements signed by any key the operator allowed (``qiledger keys allow``)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def allow(self, key: PublicKey, label: str, now: datetime) -> bool:
        """Add a key; returns False if it was already allowed."""
        with self.db.write() as conn:
            if self._lookup(conn, [key.key_id]):
                return False
            conn.execute(
                insert(tables.ALLOWED_KEYS),
                {
                    "key_id": key.key_id,
                    "public_key": key.raw,
                    "label": label,
                    "added_at": format_time(now),
                },
            )
        return True

    def allowed(self) -> list[tuple[KeyId, str, str]]:
        with self.db.read() as conn:
            rows = conn.exec_driver_sql(
                "SELECT key_id, label, added_at FROM allowed_keys ORDER BY added_at, key_id"
            ).all()
        return [(KeyId(r[0]), r[1], r[2]) for r in rows]

    def candidate_keys(self, key_ids: Collection[KeyId]) -> dict[KeyId, PublicKey]:
        if not key_ids:
            return {}
        with self.db.read() as conn:
            return self._lookup(conn, key_ids)

    def _lookup(self, conn: Connection, key_ids: Collection[KeyId]) -> dict[KeyId, PublicKey]:
        ids = list(dict.fromkeys(key_ids))
        found: dict[KeyId, PublicKey] = {}
        p = self.db.placeholder
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            rows = conn.exec_driver_sql(
                f"SELECT key_id, public_key FROM allowed_keys "
                f"WHERE key_id IN ({','.join([p] * len(chunk))})",
                tuple(chunk),
            )
            found.update((KeyId(k), PublicKey.from_raw(bytes(raw))) for k, raw in rows)
        return found

    def admit(
        self,
        conn: Connection,
        verified: VerifiedEnvelope,
        statement: Statement,
        logged_at: datetime,
    ) -> None:
        # The signer was verified against candidate_keys, i.e. the allow-list,
        # and keys never leave it: there is no later link to check.
        return None
