"""A certificate store for a full replay whose memory does not grow with the log.

``qiledger fsck`` replays every entry through the :mod:`verifier.trust` rules
and compares what it derived with the registry's certificate tables. Held in
memory (:class:`verifier.trust.MemoryCertificates`) a replay costs about 1.3 KB
per certificate: some 13 GB at ten million. :class:`ScratchCertificates` keeps
them in a scratch SQLite file instead, with at most ``hot`` of them in memory.

It deliberately shares no code with the certificate tables it is compared with
(:mod:`registry.storage.certificate_index`): its own schema, each certificate
stored whole as JSON, the stdlib driver. A fault in the tables' writer cannot be
repeated here and so hidden from fsck.

The file is scratch: no journal, no fsync; it is deleted with its directory.
"""

from __future__ import annotations

import json
import sqlite3
from collections import OrderedDict
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

from verifier import trust
from verifier.keys import KeyId

_SCHEMA = (
    "CREATE TABLE certificates (first_index INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, "
    "digest TEXT NOT NULL, data TEXT NOT NULL)",
    "CREATE INDEX certificates_by_document ON certificates (digest, first_index)",
    "CREATE TABLE later_events (idx INTEGER PRIMARY KEY, id TEXT NOT NULL)",
)


class ScratchCertificates:
    """A :class:`verifier.trust.CertificateStore` in a scratch SQLite file at
    ``path`` (created; must not exist), keeping the ``hot`` most recently used
    certificates in memory and writing changed ones back when they leave it."""

    def __init__(self, path: Path, hot: int = 50_000) -> None:
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode = OFF")
        self._db.execute("PRAGMA synchronous = OFF")
        self._db.execute("PRAGMA cache_size = -65536")  # KiB: a bounded 64 MB
        for sql in _SCHEMA:
            self._db.execute(sql)
        # One transaction for the store's life: nothing here is ever committed for
        # anyone else, and a statement-sized transaction would cost more than it.
        self._db.execute("BEGIN")
        self._hot: OrderedDict[str, trust.Certificate] = OrderedDict()
        self._changed: set[str] = set()
        # At least three: one statement touches up to three certificates, which
        # must stay the objects the trust rules hold while it is applied.
        self._limit = max(hot, 3)

    def close(self) -> None:
        self._db.close()

    # --- CertificateStore -------------------------------------------------------

    def get(self, certificate_id: str) -> trust.Certificate | None:
        cert = self._hot.get(certificate_id)
        if cert is not None:
            self._hot.move_to_end(certificate_id)
            return cert
        row = self._db.execute(
            "SELECT data FROM certificates WHERE id = ?", (certificate_id,)
        ).fetchone()
        if row is None:
            return None
        cert = decode(row[0])
        self._keep(cert)
        return cert

    def with_document(self, document_sha256: str) -> list[trust.Certificate]:
        ids = self._db.execute(
            "SELECT id FROM certificates WHERE digest = ? ORDER BY first_index",
            (document_sha256,),
        ).fetchall()
        found = (self.get(i) for (i,) in ids)
        return [c for c in found if c is not None]

    def add(self, certificate: trust.Certificate) -> None:
        first = certificate.events[0].index
        self._db.execute(
            "INSERT INTO certificates (first_index, id, digest, data) VALUES (?, ?, ?, ?)",
            (first, certificate.certificate_id, certificate.document_sha256, encode(certificate)),
        )
        self._keep(certificate)

    def add_event(self, certificate: trust.Certificate, event: trust.CertificateEvent) -> None:
        certificate.events.append(event)
        self._db.execute(
            "INSERT INTO later_events (idx, id) VALUES (?, ?)",
            (event.index, certificate.certificate_id),
        )
        self._changed_now(certificate)

    def supersede(self, certificate: trust.Certificate, successor_id: str) -> None:
        certificate.superseded_by = successor_id
        self._changed_now(certificate)

    # --- reading it all back ------------------------------------------------------

    def in_log_order(self) -> Iterator[trust.Certificate]:
        """Every certificate, as the replay left it, by the index that registered it."""
        self._write_back()
        for (data,) in self._db.execute("SELECT data FROM certificates ORDER BY first_index"):
            yield decode(data)

    def later_events(self) -> Iterator[tuple[int, str]]:
        """(index, certificate id) of every later event, in log order."""
        yield from self._db.execute("SELECT idx, id FROM later_events ORDER BY idx")

    # --- the hot set ----------------------------------------------------------------

    def _changed_now(self, certificate: trust.Certificate) -> None:
        # The caller's object may have left the hot set since get() returned it:
        # keeping it again means this change is the one written back.
        self._keep(certificate)
        self._changed.add(certificate.certificate_id)

    def _keep(self, certificate: trust.Certificate) -> None:
        self._hot[certificate.certificate_id] = certificate
        self._hot.move_to_end(certificate.certificate_id)
        while len(self._hot) > self._limit:
            old_id, old = self._hot.popitem(last=False)
            if old_id in self._changed:
                self._changed.discard(old_id)
                self._store(old)

    def _write_back(self) -> None:
        for certificate_id in sorted(self._changed):
            self._store(self._hot[certificate_id])
        self._changed.clear()

    def _store(self, certificate: trust.Certificate) -> None:
        self._db.execute(
            "UPDATE certificates SET data = ? WHERE id = ?",
            (encode(certificate), certificate.certificate_id),
        )


def encode(certificate: trust.Certificate) -> str:
    """A certificate as JSON, every field (see :func:`decode`)."""
    return json.dumps(
        [
            certificate.certificate_id,
            certificate.issuer_id,
            certificate.kind,
            certificate.document_sha256,
            None if certificate.valid_until is None else certificate.valid_until.isoformat(),
            [[e.index, e.type, e.logged_at, e.key_id, e.reason] for e in certificate.events],
            certificate.superseded_by,
            None if certificate.laboratory is None else list(certificate.laboratory),
            None if certificate.issued is None else certificate.issued.isoformat(),
        ],
        ensure_ascii=False,
        separators=(",", ":"),
    )


def decode(data: str) -> trust.Certificate:
    fields: list[Any] = json.loads(data)
    cert_id, issuer, kind, digest, until, events, successor, laboratory, issued = fields
    return trust.Certificate(
        cert_id,
        issuer,
        kind,
        digest,
        None if until is None else date.fromisoformat(until),
        [trust.CertificateEvent(i, t, at, KeyId(k), r) for i, t, at, k, r in events],
        successor,
        None if laboratory is None else (laboratory[0], laboratory[1]),
        None if issued is None else date.fromisoformat(issued),
    )
