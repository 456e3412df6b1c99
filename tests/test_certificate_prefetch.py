"""The writer's read-ahead (SqlCertificates.prefetch: certificates by id and by
document digest, with their events, one statement per 500 of each) loads exactly
what reading each one alone would, across chunk boundaries, on both engines; and
the SQLite writer's settings (bounded page cache, checkpoints off the commit path)
leave the WAL checkpointed once the ledger closes."""

from __future__ import annotations

import sqlite3

from sqlalchemy import event

from registry.config import Settings
from registry.ledger import Ledger
from registry.storage import database
from tests.conftest import make_ledger
from verifier import trust

N = 1200  # past two chunks of ids and of digests


def _certificate(i: int) -> trust.Certificate:
    # Every third shares the document of the one before it (an amend's shape).
    digest = f"{(i - 1 if i % 3 == 2 else i):064x}"
    return trust.Certificate(
        f"LAB-{i % 4}/C-{i:05d}",
        f"LAB-{i % 4}",
        "dcc",
        digest,
        None,
        [trust.CertificateEvent(1000 + 10 * i, "certificate.issue", "2026-01-01T00:00:00Z", "k")],
    )


def _fill(ledger: Ledger) -> None:
    with ledger.db.write() as tx:
        store = ledger.certificate_index.writer(tx)
        certs = [_certificate(i) for i in range(N)]
        for cert in certs:
            store.add(cert)
        for i in range(0, N, 7):
            event = trust.CertificateEvent(
                1000 + 10 * i + 1, "certificate.suspend", "2026-01-02T00:00:00Z", "k", "why"
            )
            store.add_event(certs[i], event)
        for i in range(0, N, 11):
            store.supersede(certs[i], f"LAB-{i % 4}/C-{i + 1:05d}")
        store.flush()


def test_prefetch_loads_what_one_at_a_time_reads_load(settings: Settings) -> None:
    ledger = make_ledger(settings)
    try:
        _fill(ledger)
        ids = [f"LAB-{i % 4}/C-{i:05d}" for i in range(0, N, 2)] + ["LAB-0/none"]
        digests = [f"{i:064x}" for i in range(1, N, 2)] + [f"{N * 9:064x}"]
        statements: list[str] = []

        def count(_conn: object, _cursor: object, sql: str, *_args: object) -> None:
            statements.append(sql)

        with ledger.db.write() as tx:
            ahead = ledger.certificate_index.writer(tx)
            ahead.prefetch(ids, digests)
            event.listen(ledger.db.write_engine, "before_cursor_execute", count)
            read_ahead = [ahead.get(i) for i in ids], [ahead.with_document(d) for d in digests]
            event.remove(ledger.db.write_engine, "before_cursor_execute", count)
            assert statements == []  # all answered from what was read ahead
            alone = (
                [ledger.certificate_index.writer(tx).get(i) for i in ids],
                [ledger.certificate_index.writer(tx).with_document(d) for d in digests],
            )
        assert read_ahead == alone
        for got in read_ahead[1]:
            assert [c.events[0].index for c in got] == sorted(c.events[0].index for c in got)
        assert sum(len(got) for got in read_ahead[1]) > N // 3
        assert ahead.get("LAB-0/none") is None
        found = ahead.get("LAB-0/C-00000")
        assert found is not None
        assert [e.type for e in found.events] == ["certificate.issue", "certificate.suspend"]
        assert found.superseded_by == "LAB-0/C-00001"
    finally:
        ledger.close()


def test_sqlite_writer_has_a_bounded_cache_and_the_wal_is_checkpointed(
    sqlite_settings: Settings,
) -> None:
    ledger = make_ledger(sqlite_settings)
    try:
        _fill(ledger)
        with ledger.db.write() as conn:
            cache = conn.exec_driver_sql("PRAGMA cache_size").scalar()
            assert cache == -database.WRITER_CACHE_KIB
    finally:
        ledger.close()
    path = sqlite_settings.data_dir / "ledger.db"
    with sqlite3.connect(path) as check:
        busy, frames, checkpointed = check.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert (busy, frames - checkpointed) == (0, 0)
        assert check.execute("SELECT count(*) FROM certificates").fetchone() == (N,)
