"""Trust-state snapshots (``registry.storage.snapshots``): a snapshot holds exactly
the replayed state, a restart replays only what follows it, and a damaged,
foreign or stale snapshot is never used (the state is replayed from entry 0)
while ``fsck`` names it."""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import zlib
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import delete, insert

from registry import long_lived
from registry.config import Settings
from registry.errors import IntegrityError
from registry.fsck import fsck
from registry.ledger import Ledger
from registry.sequencer import Accepted
from registry.storage import snapshots as trust_snapshot
from registry.storage import tables
from tests.conftest import TEST_ORIGIN
from tests.helpers import (
    BODY_KEY,
    body_add,
    envelope_bytes,
    grant,
    key_from,
    register_document,
    submit_with_documents,
)
from verifier import entry, statement, trust
from verifier.entry import format_time
from verifier.errors import MalformedError
from verifier.keys import KeyId, SigningKey

T0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
LAB_A, LAB_B, CB = key_from("snap-lab-a"), key_from("snap-lab-b"), key_from("snap-cb")
BODY2 = key_from("snap-body-2")


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=7)
        return self.now


def _document(issuer: str, n: int) -> str:
    # one issuer's certificates share documents: lookups list several
    return register_document(f"snapshot test {issuer} {n % 3}".encode())


def cert(issuer: str, n: int, kind: str = "dcc", valid_until: date | None = None) -> dict[str, Any]:
    return statement.CertificateIssue(
        issuer_id=issuer,
        certificate_id=f"{issuer}/C-{n}",
        kind=kind,
        document_sha256=_document(issuer, n),
        issued=date(2026, 6, 1),
        valid_until=valid_until,
    ).to_json()


def change(action: str, issuer: str, n: int) -> dict[str, Any]:
    return statement.CERTIFICATE_CHANGES[action](
        issuer_id=issuer, certificate_id=f"{issuer}/C-{n}", reason=f"{action} — test ✓"
    ).to_json()


def accreditation(action: str, issuer: str, body: str = "CNAS") -> dict[str, Any]:
    return statement.ACCREDITATION_CHANGES[action](
        body_id=body,
        issuer_id=issuer,
        accreditation_number=f"{body}-{issuer}",
        reason="surveillance",
    ).to_json()


def history(ledger: Ledger, clock: Clock) -> None:
    """Every kind of statement, so every part of the state is non-trivial."""
    log_key = ledger.load_log_key().key
    second_body = {**body_add(BODY2, "DAkkS"), "name": "DAkkS", "country": "DE"}
    amend = statement.CertificateAmend(
        issuer_id="LAB-A",
        certificate_id="LAB-A/C-4",
        kind="dcc",
        document_sha256=_document("LAB-A", 4),
        issued=date(2026, 6, 1),
        supersedes="LAB-A/C-1",
    )
    revoke = statement.IssuerKeyRevoke(
        issuer_id="LAB-A",
        key_id=LAB_A.public_key.key_id,
        reason="stolen",
        compromised_at=T0 + timedelta(seconds=100),
    )
    steps: list[tuple[dict[str, Any], SigningKey]] = [
        (body_add(), log_key),
        (second_body, log_key),
        (grant("LAB-A", [LAB_A]), BODY_KEY),
        (
            grant("CB-1", [CB], kind="certification_body", covers=("management_system",)),
            BODY_KEY,
        ),
        (grant("LAB-A", [LAB_A], body_id="DAkkS"), BODY2),
        (cert("LAB-A", 1), LAB_A),
        (cert("LAB-A", 2), LAB_A),
        (cert("CB-1", 3, "management_system", valid_until=date(2027, 1, 31)), CB),
        (amend.to_json(), LAB_A),
        (change("suspend", "LAB-A", 2), LAB_A),
        (change("reinstate", "LAB-A", 2), LAB_A),
        (change("withdraw", "CB-1", 3), CB),
        (accreditation("suspend", "LAB-A", "DAkkS"), BODY2),
        (accreditation("restore", "LAB-A", "DAkkS"), BODY2),
        (accreditation("withdraw", "LAB-A", "DAkkS"), BODY2),
        (statement.IssuerKeyAdd(issuer_id="LAB-A", public_key=LAB_B.public_key).to_json(), LAB_A),
        (cert("LAB-A", 5), LAB_B),
        (revoke.to_json(), LAB_B),
        (statement.BodyRemove(body_id="DAkkS", reason="test").to_json(), log_key),
    ]
    for fields, key in steps:
        stamped = {"signed_at": format_time(clock.now), **_without_signed_at(fields)}
        (outcome,) = submit_with_documents(ledger.sequencer, [envelope_bytes(stamped, key)])
        assert isinstance(outcome, Accepted), (fields["type"], outcome)


def _without_signed_at(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if k != "signed_at"}


@pytest.fixture
def built(settings: Settings) -> tuple[Settings, Clock]:
    clock = Clock()
    ledger = Ledger.init(settings, origin=TEST_ORIGIN, passphrase=None, clock=clock)
    history(ledger, clock)
    ledger.close()
    return settings, clock


def full_replay(ledger: Ledger) -> trust.TrustState:
    data = [(e.index, e.data) for e in ledger.storage.iter_entries()]
    return trust.replay(ledger.identity.public_key, data)


def assert_same_state(got: trust.TrustState, want: trust.TrustState) -> None:
    """Field by field (dataclass equality) and query by query, not through the
    encoding under test."""
    assert got.size == want.size
    assert got.bodies == want.bodies
    assert got.issuers == want.issuers
    assert list(got.certificates.items()) == list(want.certificates.items())
    key_ids = [b.key.key_id for b in want.bodies.values()] + [
        k for i in want.issuers.values() for k in i.keys
    ]
    unknown = KeyId("0" * 64)
    assert got.keys_for([*key_ids, unknown]) == want.keys_for([*key_ids, unknown])
    for cert in want.certificates.values():
        assert got.certificate(cert.certificate_id) == cert
        digest = cert.document_sha256
        assert got.certificates_with_document(digest) == want.certificates_with_document(digest)
    assert got.certificates_with_document("0" * 64) == []
    # One record per key, reachable both ways: apply() mutates it through one
    # path and the rules read it through the other.
    for issuer in got.issuers.values():
        for key_id, record in issuer.keys.items():
            assert got.issuer_key(key_id) is record
            assert want.issuer_key(key_id) == record


def opened(settings: Settings, clock: Clock) -> tuple[Ledger, list[int]]:
    """The ledger reopened, recording where each catch-up starts reading."""
    ledger = Ledger.open(settings, clock)
    starts: list[int] = []
    read_from = ledger.storage.entries_from

    def recording(conn: Any, start: int) -> Any:
        starts.append(start)
        return read_from(conn, start)

    ledger.storage.entries_from = recording  # type: ignore[method-assign]
    return ledger, starts


# --- the encoding ------------------------------------------------------------------


def test_a_snapshot_decodes_to_exactly_the_replayed_state(
    built: tuple[Settings, Clock],
) -> None:
    ledger = Ledger.open(*built)
    try:
        state = full_replay(ledger)
        assert len(state.certificates) == 5
        assert any(
            len(state.certificates_with_document(c.document_sha256)) > 1
            for c in state.certificates.values()
        )
        assert any(k.compromised_at for i in state.issuers.values() for k in i.keys.values())
        assert any(b.removed_at for b in state.bodies.values())
        raw = trust_snapshot.encode(state)
        decoded = trust_snapshot.decode(raw, ledger.identity.public_key)
        assert_same_state(decoded, state)
        assert trust_snapshot.encode(decoded) == raw
        for cert_id in state.certificates:
            for moment in (T0, T0 + timedelta(seconds=90), T0 + timedelta(days=400)):
                assert trust.certificate_status(
                    decoded, cert_id, moment
                ) == trust.certificate_status(state, cert_id, moment)
    finally:
        ledger.close()


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b"[]",
        b'{"format": "qiledger-trust-snapshot/2", "size": 1}',
        b'{"format": "qiledger-trust-snapshot/1"}',
        b'{"format": "qiledger-trust-snapshot/1", "size": 1, "bodies": [[1]], '
        b'"issuers": [], "certificates": []}',
        b'{"format": "qiledger-trust-snapshot/1", "size": 1, '
        b'"bodies": [["B", "n", "c", "AAAA", "t", null]], "issuers": [], "certificates": []}',
        b'{"format": "qiledger-trust-snapshot/1", "size": "x", "bodies": [], '
        b'"issuers": [], "certificates": []}',
    ],
)
def test_decode_refuses_what_is_not_a_snapshot(data: bytes) -> None:
    with pytest.raises(MalformedError):
        trust_snapshot.decode(data, BODY_KEY.public_key)


# --- start-up ----------------------------------------------------------------------


def test_a_restart_replays_only_what_follows_the_newest_snapshot(
    built: tuple[Settings, Clock],
) -> None:
    settings, clock = built
    ledger, starts = opened(settings, clock)
    ledger.policy.snapshot_after = 5
    size = ledger.trust_state().size
    assert starts == [0]
    with ledger.db.read() as conn:
        assert [s.size for s in ledger.policy.snapshots.all(conn)] == [size]
    stamped = {"signed_at": format_time(clock.now), **cert("CB-1", 9, "management_system")}
    (outcome,) = submit_with_documents(ledger.sequencer, [envelope_bytes(stamped, CB)])
    assert isinstance(outcome, Accepted)
    assert fsck(ledger).snapshots == 1
    ledger.close()

    again, starts = opened(settings, clock)
    try:
        assert_same_state(again.trust_state(), full_replay(again))
        assert starts == [size]  # one entry replayed, not size + 1
        with again.db.read() as conn:
            assert len(again.policy.snapshots.all(conn)) == 1  # too few new entries for another
    finally:
        again.close()


def test_a_short_catch_up_stores_no_snapshot(built: tuple[Settings, Clock]) -> None:
    ledger = Ledger.open(*built)
    try:
        ledger.trust_state()  # fewer entries than SNAPSHOT_AFTER
        with ledger.db.read() as conn:
            assert ledger.policy.snapshots.all(conn) == []
    finally:
        ledger.close()


def test_a_running_process_stores_a_snapshot_only_on_demand(
    built: tuple[Settings, Clock],
) -> None:
    """Small catch-ups (a server following the log) never pay for a snapshot;
    ``save_snapshot`` (``qiledger snapshot``) stores one when asked."""
    settings, clock = built
    ledger = Ledger.open(settings, clock)
    try:
        ledger.policy.snapshot_after = 5
        start = ledger.trust_state().size  # the start-up catch-up stores one
        for n in range(10, 16):
            stamped = {"signed_at": format_time(clock.now), **cert("CB-1", n, "management_system")}
            (outcome,) = submit_with_documents(ledger.sequencer, [envelope_bytes(stamped, CB)])
            assert isinstance(outcome, Accepted)
            ledger.trust_state()
        with ledger.db.read() as conn:
            assert [s.size for s in ledger.policy.snapshots.all(conn)] == [start]
        assert ledger.policy.save_snapshot() == start + 6
        assert ledger.policy.save_snapshot() is None  # nothing new
        assert fsck(ledger).snapshots == 2
        # A third one: only the newest two are kept.
        stamped = {"signed_at": format_time(clock.now), **cert("CB-1", 99, "management_system")}
        (outcome,) = submit_with_documents(ledger.sequencer, [envelope_bytes(stamped, CB)])
        assert isinstance(outcome, Accepted)
        ledger.trust_state()
        assert ledger.policy.save_snapshot() == start + 7
        with ledger.db.read() as conn:
            assert ledger.policy.snapshots.sizes(conn) == [start + 6, start + 7]
        assert fsck(ledger).snapshots == 2
    finally:
        ledger.close()


REFUSE_INSERTS = {
    "sqlite": [
        "CREATE TRIGGER no_snapshots BEFORE INSERT ON trust_snapshots "
        "BEGIN SELECT RAISE(ABORT, 'permission denied for table trust_snapshots'); END"
    ],
    "postgresql": [
        "CREATE FUNCTION no_snapshots() RETURNS trigger LANGUAGE plpgsql AS "
        "$$BEGIN RAISE EXCEPTION 'permission denied for table trust_snapshots'; END$$",
        "CREATE TRIGGER no_snapshots BEFORE INSERT ON trust_snapshots "
        "FOR EACH ROW EXECUTE FUNCTION no_snapshots()",
    ],
}


def test_a_snapshot_that_cannot_be_stored_does_not_stop_a_start(
    built: tuple[Settings, Clock], caplog: pytest.LogCaptureFixture
) -> None:
    """A reader whose database refuses writes (say, an auditor's read-only role)
    still gets its answer; the snapshot is skipped with a warning."""
    settings, clock = built
    ledger = Ledger.open(settings, clock)
    try:
        with ledger.db.write() as conn:
            for sql in REFUSE_INSERTS[ledger.db.write_engine.dialect.name]:
                conn.exec_driver_sql(sql)
        ledger.policy.snapshot_after = 5
        with caplog.at_level(logging.WARNING, logger="qiledger.policy"):
            assert_same_state(ledger.trust_state(), full_replay(ledger))
        (warning,) = [r.getMessage() for r in caplog.records if r.name == "qiledger.policy"]
        assert warning.startswith("could not store a trust snapshot")
        assert "permission denied" in warning
        with ledger.db.read() as conn:
            assert ledger.policy.snapshots.all(conn) == []
    finally:
        ledger.close()


def test_two_processes_storing_the_same_size_keep_one(built: tuple[Settings, Clock]) -> None:
    first, second = Ledger.open(*built), Ledger.open(*built)
    try:
        state = first.trust_state()
        root = first.latest_checkpoint().root
        assert first.policy.snapshots.save(state, root, "t") is not None
        assert second.policy.snapshots.save(second.trust_state(), root, "t") is None
    finally:
        first.close()
        second.close()


def test_a_ledger_from_before_snapshots_gets_the_table(built: tuple[Settings, Clock]) -> None:
    settings, clock = built
    ledger = Ledger.open(settings, clock)
    tables.TRUST_SNAPSHOTS.drop(ledger.db.write_engine)
    ledger.close()
    ledger, starts = opened(settings, clock)
    try:
        ledger.policy.snapshot_after = 1
        assert_same_state(ledger.trust_state(), full_replay(ledger))
        assert starts == [0]  # no table, no snapshot: a full replay
        with ledger.db.read() as conn:
            assert len(ledger.policy.snapshots.all(conn)) == 1
        assert fsck(ledger).snapshots == 1
    finally:
        ledger.close()


# --- damaged snapshots -------------------------------------------------------------


def _row(size: int, root: bytes, raw: bytes, **changes: Any) -> dict[str, Any]:
    row = {
        "size": size,
        "root": root,
        "digest": hashlib.sha256(raw).digest(),
        "data": zlib.compress(raw),
        "created_at": "2026-06-01T09:00:00.000Z",
    }
    row.update(changes)
    return row


def _damaged(case: str, ledger: Ledger) -> tuple[dict[str, Any], bool]:
    """A bad snapshot row, and whether start-up can see it (at or below the log size)."""
    state = full_replay(ledger)
    size = state.size
    root = ledger.storage.checkpoint(size).root
    raw = trust_snapshot.encode(state)
    earlier_root = ledger.storage.checkpoint(size - 1).root
    value = json.loads(raw)
    lost_certificate = {**value, "certificates": value["certificates"][:-1]}
    wrong_size = {**value, "size": size - 1}
    if case == "flipped-byte":
        data = bytearray(zlib.compress(raw))
        data[len(data) // 2] ^= 0x40
        return _row(size, root, raw, data=bytes(data)), True
    if case == "digest-mismatch":
        return _row(size, root, raw, digest=hashlib.sha256(b"other").digest()), True
    if case == "foreign-root":
        return _row(size, earlier_root, raw), True
    if case == "consistent-but-wrong-state":  # digest fixed up: only fsck can tell
        return _row(size, root, json.dumps(lost_certificate).encode()), True
    if case == "size-mismatch":
        return _row(size, root, json.dumps(wrong_size).encode()), True
    if case == "not-a-snapshot":
        return _row(size, root, b'{"format":"something else"}'), True
    if case == "beyond-the-log":
        return _row(size + 5, root, raw), False
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case",
    [
        "flipped-byte",
        "digest-mismatch",
        "foreign-root",
        "size-mismatch",
        "not-a-snapshot",
        "beyond-the-log",
    ],
)
def test_a_bad_snapshot_is_ignored_and_fsck_names_it(
    built: tuple[Settings, Clock], case: str, caplog: pytest.LogCaptureFixture
) -> None:
    settings, clock = built
    ledger = Ledger.open(settings, clock)
    row, visible = _damaged(case, ledger)
    with ledger.db.write() as conn:
        conn.execute(insert(tables.TRUST_SNAPSHOTS), row)
    ledger.close()

    again, starts = opened(settings, clock)
    try:
        with caplog.at_level(logging.WARNING, logger="qiledger.policy"):
            assert_same_state(again.trust_state(), full_replay(again))
        assert starts == [0]  # replayed from the start
        warned = [r.getMessage() for r in caplog.records if r.name == "qiledger.policy"]
        if visible:
            assert len(warned) == 1
            assert "replaying the log from the start" in warned[0]
        else:
            assert warned == []
        with pytest.raises(IntegrityError) as caught:
            fsck(again)
        assert caught.value.where == f"trust snapshot {row['size']}"
        # Deleting the row is the documented remedy.
        with again.db.write() as conn:
            conn.execute(delete(tables.TRUST_SNAPSHOTS))
        assert fsck(again).snapshots == 0
    finally:
        again.close()


def test_a_self_consistent_but_wrong_snapshot_is_caught_by_fsck(
    built: tuple[Settings, Clock],
) -> None:
    """A snapshot with a fixed-up digest and the right root loads (it is a cache of
    the operator's own database); fsck's full replay is what finds it."""
    ledger = Ledger.open(*built)
    try:
        row, _ = _damaged("consistent-but-wrong-state", ledger)
        with ledger.db.write() as conn:
            conn.execute(insert(tables.TRUST_SNAPSHOTS), row)
        with pytest.raises(IntegrityError, match="differs from the state the log replays to"):
            fsck(ledger)
    finally:
        ledger.close()


def test_a_snapshot_the_log_does_not_continue_from_falls_back_to_a_full_replay(
    built: tuple[Settings, Clock], caplog: pytest.LogCaptureFixture
) -> None:
    """A snapshot that passes every check but lacks certificate LAB-A/C-2, taken
    just before the entry that suspends it: the replay from it fails, so the
    process replays the whole log instead of refusing to start."""
    settings, clock = built
    ledger = Ledger.open(settings, clock)
    data = [(e.index, e.data) for e in ledger.storage.iter_entries()]
    suspend_at = next(
        i for i, d in data if b"certificate.suspend" in entry.parse(d).envelope.payload
    )
    state = trust.replay(ledger.identity.public_key, data[:suspend_at])
    del state.certificates["LAB-A/C-2"]
    raw = trust_snapshot.encode(state)
    with ledger.db.write() as conn:
        conn.execute(
            insert(tables.TRUST_SNAPSHOTS),
            _row(suspend_at, ledger.storage.checkpoint(suspend_at).root, raw),
        )
    ledger.close()

    again, starts = opened(settings, clock)
    try:
        with caplog.at_level(logging.WARNING, logger="qiledger.policy"):
            assert_same_state(again.trust_state(), full_replay(again))
        assert starts == [suspend_at, 0]
        (warning,) = [r.getMessage() for r in caplog.records if r.name == "qiledger.policy"]
        assert f"does not replay from the trust snapshot at size {suspend_at}" in warning
        assert "LAB-A/C-2" in warning
        with pytest.raises(IntegrityError, match="differs from the state the log replays to"):
            fsck(again)
    finally:
        again.close()


def test_dates_in_a_snapshot_are_checked() -> None:
    state = trust.TrustState(BODY_KEY.public_key)
    state.certificates["X/1"] = trust.Certificate("X/1", "X", "dcc", "0" * 64, date(2027, 1, 1))
    value = json.loads(trust_snapshot.encode(state))
    value["certificates"][0][4] = "2027-02-30"
    with pytest.raises(MalformedError):
        trust_snapshot.decode(json.dumps(value).encode(), BODY_KEY.public_key)


@pytest.mark.parametrize("enabled_before", [True, False])
def test_the_collector_pause_restores_what_it_found(enabled_before: bool) -> None:
    was = gc.isenabled()
    try:
        (gc.enable if enabled_before else gc.disable)()
        with long_lived.collector_paused():
            assert not gc.isenabled()
        assert gc.isenabled() == enabled_before
        with pytest.raises(RuntimeError), long_lived.collector_paused():
            raise RuntimeError("a failed load")
        assert gc.isenabled() == enabled_before
    finally:
        (gc.enable if was else gc.disable)()
