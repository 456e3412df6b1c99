"""The certificate tables (registry.storage.certificate_index): derived from the
log in the same transaction as its entries, equal to a full verifier replay
after every kind of statement, rebuilt by reindex, checked by fsck.

(A crash between batches is covered by tests/test_crash.py, whose fsck after
every kill -9 now compares these tables with a full replay too.)"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

import pytest

from registry import traceability
from registry.config import Settings
from registry.errors import IntegrityError
from registry.fsck import fsck
from registry.ledger import Ledger
from registry.storage.certificate_index import recorded_status
from tests.helpers import BODY_KEY, envelope_bytes
from tests.test_trust_chain import K, World, acc_event, cert, make_world
from verifier import statement, trust
from verifier.entry import format_time, parse_time
from verifier.links import EQUIPMENT, DocumentLinks, Link
from verifier.traceability import digest_check

TABLES = ("certificates", "certificate_events", "trust_entries", "derived_state")


@pytest.fixture
def world(settings: Settings) -> Iterator[World]:
    w = make_world(settings)
    yield w
    w.ledger.close()


def rows(ledger: Ledger) -> dict[str, list[tuple[Any, ...]]]:
    with ledger.db.read() as tx:
        return {
            t: [tuple(r) for r in tx.exec_driver_sql(f"SELECT * FROM {t} ORDER BY 1")]  # noqa: S608
            for t in TABLES
        }


def assert_tables_equal_replay(ledger: Ledger) -> None:
    """fsck (a full, signature-checked replay compared row by row), and every
    certificate's status read from the tables equals the replay's, now and later."""
    report = fsck(ledger)
    entries = [(e.index, e.data) for e in ledger.storage.iter_entries()]
    replayed = trust.replay(ledger.identity.public_key, entries)
    assert report.certificates == len(replayed.certificates)
    now = ledger.clock()
    with ledger.reading() as state:
        assert state.size == len(entries)
        for cert_id, want in replayed.certificates.items():
            assert state.certificate(cert_id) == want
            for at in (now, now + timedelta(days=3650)):
                assert trust.certificate_status(state, cert_id, at) == trust.certificate_status(
                    replayed, cert_id, at
                )
        for digest in {c.document_sha256 for c in replayed.certificates.values()}:
            assert state.certificates_with_document(digest) == replayed.certificates_with_document(
                digest
            )
    assert_one_statement_reads_equal_replay(ledger, replayed, now)
    assert_two_column_statuses_equal_replay(ledger, replayed, now)
    assert_links_carry_their_certificates_columns(ledger, replayed)


def assert_links_carry_their_certificates_columns(
    ledger: Ledger, replayed: trust.TrustState
) -> None:
    """Each link row's digest check and copy of its certificate's columns (what a
    dependents walk reads instead of the certificates' rows) are the replay's."""
    with ledger.db.read() as tx:
        links = tx.exec_driver_sql(
            "SELECT from_certificate, to_certificate, procedure, to_digest, digest_check, "
            "from_issuer, from_valid_until, from_status FROM certificate_links"
        ).all()
    for cert_id, to_id, procedure, digest, check, issuer_id, until, status in links:
        want = replayed.certificates[cert_id]
        target = replayed.certificates.get(to_id)
        assert check == digest_check(Link(EQUIPMENT, to_id, procedure, digest), target)
        assert issuer_id == want.issuer_id
        assert until == (None if want.valid_until is None else want.valid_until.isoformat())
        assert status == recorded_status(want)


def assert_two_column_statuses_equal_replay(
    ledger: Ledger, replayed: trust.TrustState, now: Any
) -> None:
    """The statuses a dependents page shows (registry.traceability._statuses: two
    columns each where the recorded status decides, else whole certificates) are
    the replay's, now, years later (expiry) and before the last entry was logged
    (where the recorded status must not decide)."""
    ids = list(replayed.certificates)
    last = entries_last_logged_at(ledger)
    ledger.trust_state()  # caught up with the trust entries (keys and their reports)
    for at in (now, now + timedelta(days=3650), now - timedelta(days=1)):
        with ledger._reading_in() as (tx, state):
            reads = traceability._Reads(ledger.certificate_index, tx, state, last)
            # As a walk does: those that link are decided from their links' columns.
            reads.links_to(ids)
            shown = traceability._statuses(reads, ids, at)
            issuers = {i: replayed.certificates[i].issuer_id for i in ids}
            decides = {i: trust.recorded_status_decides(state, at, last, issuers[i]) for i in ids}
        assert shown == {i: trust.certificate_status(replayed, i, at).status for i in ids}
        fast = last is None or at >= parse_time(last)
        for i in ids:
            assert decides[i] == (fast and not replayed.has_compromise_reports(issuers[i]))


def entries_last_logged_at(ledger: Ledger) -> str | None:
    size = ledger.storage.tail_size()
    return ledger.entry(size - 1).logged_at if size else None


def assert_one_statement_reads_equal_replay(
    ledger: Ledger, replayed: trust.TrustState, now: Any
) -> None:
    """The hot public reads (one statement per lookup, Ledger.reading_certificate)
    see what the replay sees: each certificate with its events, each digest's
    certificates in log order, the same statuses, the log's size."""
    size = ledger.storage.tail_size()
    for cert_id, want in replayed.certificates.items():
        with ledger.reading_certificate(certificate_id=cert_id) as state:
            assert state.size == size
            assert state.certificate(cert_id) == want
            for at in (now, now + timedelta(days=3650)):
                assert trust.certificate_status(state, cert_id, at) == trust.certificate_status(
                    replayed, cert_id, at
                )
    for digest in {c.document_sha256 for c in replayed.certificates.values()} | {"0" * 64}:
        with ledger.reading_certificate(document_sha256=digest) as state:
            assert state.size == size
            found = state.certificates_with_document(digest)
            assert found == replayed.certificates_with_document(digest)
            for c in found:
                assert trust.status_of(state, c, now) == trust.certificate_status(
                    replayed, c.certificate_id, now
                )
    with ledger.reading_certificate(certificate_id="NOBODY/1") as state:
        assert state.size == size
        assert state.certificate("NOBODY/1") is None


def change(issuer: str, n: int, op: str, why: str) -> dict[str, Any]:
    return statement.CERTIFICATE_CHANGES[op](
        issuer_id=issuer, certificate_id=f"{issuer}/C-{n}", reason=why
    ).to_json()


def test_tables_equal_a_full_replay_after_every_kind_of_statement(world: World) -> None:
    w = world
    assert_tables_equal_replay(w.ledger)  # trust statements only so far
    steps: list[tuple[dict[str, Any], Any]] = [
        # C-1 names C-4 before it is registered (external until then), C-2 names
        # C-1 with its document's digest, and NMI/ROOT, never registered.
        (linked("LAB-2", 1, "NMI/ROOT", "LAB-2/C-4"), K["lab2"]),
        (linked("LAB-2", 2, "LAB-2/C-1", "NMI/ROOT", valid_until=date(2027, 1, 1)), K["lab2"]),
        (change("LAB-2", 1, "suspend", "audit"), K["lab2"]),
        (change("LAB-2", 1, "reinstate", "cleared"), K["lab2"]),
        (change("LAB-2", 2, "withdraw", "error"), K["lab2"]),
        (
            statement.CertificateAmend(
                issuer_id="LAB-2",
                certificate_id="LAB-2/C-3",
                supersedes="LAB-2/C-1",
                kind="dcc",
                document_sha256=cert("LAB-2", 3)["document_sha256"],
                issued=cert("LAB-2", 3)["issued"],
            ).to_json(),
            K["lab2"],
        ),
        (cert("LAB-1", 1), K["lab1-new"]),
        (cert("LAB-2", 4), K["lab2"]),
        (acc_event("suspend", "LAB-2"), None),
        (acc_event("restore", "LAB-2"), None),
        (
            statement.IssuerKeyRevoke(
                issuer_id="LAB-1",
                key_id=K["lab1-new"].public_key.key_id,
                reason="stolen",
                compromised_at=w.clock.now - timedelta(minutes=5),
            ).to_json(),
            K["lab1-new"],
        ),
    ]
    for fields, key in steps:
        w.clock.advance(minutes=1)
        w.ok(fields, key or BODY_KEY)
        assert_tables_equal_replay(w.ledger)
    with w.ledger.db.read() as tx:
        carried = dict(
            tx.exec_driver_sql("SELECT from_certificate, from_status FROM certificate_links").all()
        )
    assert carried == {"LAB-2/C-1": trust.SUPERSEDED, "LAB-2/C-2": trust.WITHDRAWN}
    with w.ledger.db.read() as tx:
        checks = set(
            tx.exec_driver_sql(
                "SELECT from_certificate, to_certificate, digest_check FROM certificate_links"
            ).all()
        )
    assert checks == {
        ("LAB-2/C-1", "NMI/ROOT", "external"),
        ("LAB-2/C-1", "LAB-2/C-4", "match"),  # checked once C-4 was registered
        ("LAB-2/C-2", "LAB-2/C-1", "match"),
        ("LAB-2/C-2", "NMI/ROOT", "external"),
    }
    with w.ledger.reading() as state:
        assert state.certificate("LAB-2/C-1").superseded_by == "LAB-2/C-3"  # type: ignore[union-attr]
        at = w.clock.now
        assert trust.certificate_status(state, "LAB-1/C-1", at).status == trust.INVALID


def _document_of(cert_id: str) -> str:
    """The digest :func:`cert` registers for ``<issuer>/C-<n>`` (or any other)."""
    issuer, _, number = cert_id.partition("/C-")
    return str(cert(issuer, int(number))["document_sha256"]) if number.isdigit() else "0" * 64


def linked(
    issuer: str, n: int, *to: str, valid_until: date | None = None
) -> dict[str, Any]:
    """:func:`cert`, linking to ``to`` (the instruments used)."""
    fields = cert(issuer, n)
    return statement.CertificateIssue(
        issuer_id=issuer,
        certificate_id=fields["certificate_id"],
        kind="dcc",
        document_sha256=fields["document_sha256"],
        issued=date(2026, 6, 1),
        valid_until=valid_until,
        links=DocumentLinks(
            tuple(Link(EQUIPMENT, target, "SHA-256", _document_of(target)) for target in to), ()
        ).links_json(),
    ).to_json()


def test_a_refused_batch_leaves_the_tables_as_they_were(world: World) -> None:
    w = world
    w.ok(cert("LAB-2", 1), K["lab2"])
    before = rows(w.ledger)
    # the same id for another document: refused
    outcome = w.submit(cert("LAB-2", 1, document=b"another"), K["lab2"])
    assert outcome.__class__.__name__ == "Refused"
    assert rows(w.ledger) == before


def test_reindex_rebuilds_the_same_rows(world: World) -> None:
    w = world
    for n in range(1, 4):
        w.ok(cert("LAB-2", n), K["lab2"])
    w.ok(change("LAB-2", 2, "suspend", "audit"), K["lab2"])
    before = rows(w.ledger)
    with w.ledger.db.write() as tx:
        tx.exec_driver_sql("DELETE FROM certificate_events")
        tx.exec_driver_sql("DELETE FROM certificates")
    report = w.ledger.reindex()
    assert (report.entries, report.certificates) == (w.ledger.storage.tail_size(), 3)
    assert rows(w.ledger) == before
    assert_tables_equal_replay(w.ledger)
    w.ok(change("LAB-2", 2, "reinstate", "ok"), K["lab2"])  # and writing goes on
    assert_tables_equal_replay(w.ledger)


DAMAGE = {
    "status": (
        "UPDATE certificates SET recorded_status = 'withdrawn' WHERE certificate_id = 'LAB-2/C-1'",
        "recorded_status",
    ),
    "issuer": (
        "UPDATE certificates SET issuer_id = 'LAB-9' WHERE certificate_id = 'LAB-2/C-1'",
        "issuer_id",
    ),
    "digest": (
        "UPDATE certificates SET document_sha256 = 'ab' WHERE certificate_id = 'LAB-2/C-2'",
        "document_sha256",
    ),
    "lost event": ("DELETE FROM certificate_events", "1 events stored, the log has 2"),
    "lost row": (
        "DELETE FROM certificates WHERE certificate_id = 'LAB-2/C-2'",
        "LAB-2/C-2 (entry",
    ),
    "stray event": (
        "INSERT INTO certificate_events VALUES (99999, 'NOBODY/1', 'certificate.withdraw', "
        "'2026-01-01T00:00:00Z', 'k', 'x')",
        "certificate_events row 99999 (NOBODY/1) is not a certificate event of the log",
    ),
    "size": ("UPDATE derived_state SET size = size - 1", "reflect"),
    "trust entry": ("DELETE FROM trust_entries WHERE idx = 0", "trust_entries lists"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_fsck_names_a_derived_row_that_disagrees_with_the_log(
    sqlite_settings: Settings, damage: str
) -> None:
    w = make_world(sqlite_settings)
    try:
        w.ok(cert("LAB-2", 1), K["lab2"])
        w.ok(cert("LAB-2", 2), K["lab2"])
        w.ok(change("LAB-2", 1, "suspend", "audit"), K["lab2"])
        sql, named = DAMAGE[damage]
        with w.ledger.db.write() as tx:
            tx.exec_driver_sql(sql)
        with pytest.raises(IntegrityError) as caught:
            fsck(w.ledger)
        assert named in caught.value.message
        assert "qiledger reindex" in caught.value.message
        w.ledger.reindex()
        assert_tables_equal_replay(w.ledger)
    finally:
        w.ledger.close()


def test_a_ledger_from_before_the_tables_derives_them_when_opened(
    sqlite_settings: Settings,
) -> None:
    w = make_world(sqlite_settings)
    w.ok(cert("LAB-2", 1), K["lab2"])
    w.ok(change("LAB-2", 1, "withdraw", "error"), K["lab2"])
    before = rows(w.ledger)
    with w.ledger.db.write() as tx:
        for table in TABLES:
            tx.exec_driver_sql(f"DROP TABLE {table}")
    w.ledger.close()
    again = Ledger.open(sqlite_settings, clock=w.clock)
    try:
        assert rows(again) == before
        assert_tables_equal_replay(again)
    finally:
        again.close()


@pytest.mark.postgres
def test_two_ledgers_on_one_database_see_each_others_writes_at_once(
    postgres_url: str, tmp_path: Any
) -> None:
    """Two registry processes share one PostgreSQL database: a status read in one
    sees what the other committed, with no catch-up step in between."""
    settings = Settings(data_dir=tmp_path / "a", database_url=postgres_url)
    w = make_world(settings)
    other = Ledger.open(settings, w.clock)  # its own engine and connections
    try:
        w.ok(cert("LAB-2", 1), K["lab2"])
        with other.reading() as state:
            status = trust.certificate_status(state, "LAB-2/C-1", w.clock.now)
        assert status.status == trust.ACTIVE
        w.clock.advance(minutes=1)
        w.ok(change("LAB-2", 1, "suspend", "audit"), K["lab2"])
        with other.reading() as state:
            status = trust.certificate_status(state, "LAB-2/C-1", w.clock.now)
        assert (status.status, status.reason) == (trust.SUSPENDED, "audit")
        # and the other one writes on top of it
        w.clock.advance(minutes=1)
        reinstate = {
            "signed_at": format_time(w.clock.now),
            **change("LAB-2", 1, "reinstate", "ok"),
        }
        other.sequencer.submit(envelope_bytes(reinstate, K["lab2"]))
        with w.ledger.reading() as state:
            assert trust.certificate_status(state, "LAB-2/C-1", w.clock.now).status == "active"
        assert_tables_equal_replay(w.ledger)
    finally:
        other.close()
        w.ledger.close()


def test_an_issuers_certificates_come_a_page_at_a_time_in_log_order(
    sqlite_settings: Settings,
) -> None:
    from fastapi.testclient import TestClient

    from registry.api.app import create_app

    w = make_world(sqlite_settings)
    try:
        for n in range(1, 8):
            w.ok(cert("LAB-2", n), K["lab2"])
            w.ok(cert("LAB-1", n), K["lab1-new"])
        w.ok(change("LAB-2", 3, "withdraw", "error"), K["lab2"])
        with TestClient(create_app(w.ledger)) as client:
            seen: list[dict[str, Any]] = []
            cursor: str | None = None
            while True:
                params = {"limit": 3} | ({"cursor": cursor} if cursor else {})
                answer = client.get("/api/v1/issuers/LAB-2/certificates", params=params)
                assert answer.status_code == 200, answer.text
                body = answer.json()
                seen += body["certificates"]
                cursor = body["next"]
                if cursor is None:
                    break
            assert [c["certificate_id"] for c in seen] == [f"LAB-2/C-{n}" for n in range(1, 8)]
            assert [c["status"] for c in seen].count("Withdrawn") == 1
            assert client.get("/api/v1/issuers/NOPE/certificates").status_code == 404
            beyond = client.get("/api/v1/issuers/LAB-2/certificates", params={"cursor": "9" * 18})
            assert (beyond.status_code, beyond.json()["certificates"]) == (200, [])
            bad_params: list[dict[str, Any]] = [
                {"limit": 0},
                {"limit": 501},
                {"cursor": "x"},
                {"cursor": "-1"},
                {"cursor": "9" * 19},  # beyond a 64-bit index: refused, not a database error
            ]
            for bad in bad_params:
                answer = client.get("/api/v1/issuers/LAB-2/certificates", params=bad)
                assert answer.status_code == 422, bad
    finally:
        w.ledger.close()


def _accreditation_of(state: trust.TrustState, issuer: str) -> str:
    (accreditation,) = state.issuers[issuer].accreditations.values()
    return accreditation.status


@pytest.mark.parametrize("commits", [True, False])
def test_readers_see_a_batchs_trust_changes_only_once_it_commits(
    world: World, monkeypatch: pytest.MonkeyPatch, commits: bool
) -> None:
    """A batch that suspends an accreditation changes its own copy of bodies,
    issuers and keys: readers (the long-lived state and a read view) still see the
    accreditation granted inside the batch's transaction, see it suspended once
    the batch commits, and never see it suspended if the commit fails."""
    w = world
    policy = w.ledger.policy
    real_end_batch = policy.end_batch
    seen: list[str] = []

    def end_batch(tx: Any, size: int) -> None:
        real_end_batch(tx, size)  # every record applied; the commit is next
        seen.append(_accreditation_of(w.ledger.unsynced_trust_state, "LAB-2"))
        with w.ledger.reading() as state:
            seen.append(_accreditation_of(state, "LAB-2"))
        if not commits:
            raise OSError("disk full")  # the batch's transaction rolls back

    monkeypatch.setattr(policy, "end_batch", end_batch)
    size = w.ledger.storage.tail_size()
    if commits:
        w.ok(acc_event("suspend", "LAB-2"), BODY_KEY)
    else:
        with pytest.raises(OSError, match="disk full"):
            w.submit(acc_event("suspend", "LAB-2"), BODY_KEY)
    assert seen == [trust.GRANTED, trust.GRANTED]
    monkeypatch.setattr(policy, "end_batch", real_end_batch)
    after = trust.SUSPENDED if commits else trust.GRANTED
    assert w.ledger.storage.tail_size() == size + commits
    assert _accreditation_of(w.ledger.trust_state(), "LAB-2") == after
    with w.ledger.reading() as state:
        assert _accreditation_of(state, "LAB-2") == after
    if not commits:
        w.ok(cert("LAB-2", 7), K["lab2"])  # the refused batch left nothing behind
    assert_tables_equal_replay(w.ledger)
