"""Certificate listings (issue 14, item 1): every filter, paged with every cursor,
shows exactly what a full ``verifier.trust`` replay of the log says, in log order,
on SQLite and PostgreSQL; over HTTP and on the command line; while submissions
arrive; and after the tables of an older layout are rebuilt."""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from registry.cli.certificates import CERTIFICATE_KINDS as CLI_KINDS
from registry.cli.certificates import STATUS_WORDS
from registry.cli.main import main as qiledger
from registry.config import Settings
from registry.errors import IntegrityError
from registry.fsck import fsck
from registry.ledger import Ledger
from registry.listing import STATUSES, CertificateListing
from registry.sequencer import Accepted
from tests.helpers import BODY_KEY, grant, key_from, register_document
from tests.test_trust_chain import K, World, make_world, unsigned
from verifier import statement, trust

CB_KEY = key_from("cb-1")
ISSUERS = ("LAB-1", "LAB-2", "CB-1")
KINDS_OF = {"LAB-1": ("dcc",), "LAB-2": ("dcc",), "CB-1": ("management_system", "product")}
KEY_OF = {"LAB-1": K["lab1-new"], "LAB-2": K["lab2"], "CB-1": CB_KEY}
ISSUED = [date(2026, 1, 1) + timedelta(days=30 * n) for n in range(5)]


@dataclass
class Registry:
    world: World
    ids: list[str]

    @property
    def ledger(self) -> Ledger:
        return self.world.ledger


def build(settings: Settings, seed: int = 7, count: int = 40) -> Registry:
    """A log with certificates of three issuers and two kinds on five issue dates,
    then suspended, reinstated, withdrawn, amended (superseded), some expired, and
    LAB-1's key declared compromised (its certificates from then on invalid)."""
    w = make_world(settings)
    w.ok(
        unsigned(
            grant(
                "CB-1",
                [CB_KEY],
                kind="certification_body",
                covers=("management_system", "product"),
            )
        ),
        BODY_KEY,
    )
    rng = random.Random(seed)
    ids: list[str] = []
    for n in range(count):
        issuer = rng.choice(ISSUERS)
        issued = rng.choice(ISSUED)
        expired = rng.random() < 0.25
        cert_id = f"{issuer}/N-{n}"
        w.ok(
            statement.CertificateIssue(
                issuer_id=issuer,
                certificate_id=cert_id,
                kind=rng.choice(KINDS_OF[issuer]),
                document_sha256=register_document(f"listing {cert_id}".encode()),
                issued=issued,
                valid_until=date(2026, 5, 20) if expired else issued + timedelta(days=900),
            ).to_json(),
            KEY_OF[issuer],
        )
        ids.append(cert_id)
        w.clock.advance(minutes=1)
        if rng.random() < 0.4 and len(ids) > 2:
            target = rng.choice(ids[:-1])
            op = rng.choice(["suspend", "withdraw", "reinstate", "amend"])
            issuer = target.split("/")[0]
            outcome = w.submit(_op(target, op, n), KEY_OF[issuer])
            if op == "amend" and isinstance(outcome, Accepted):
                ids.append(f"{target}-A{n}")
            w.clock.advance(minutes=1)
    # LAB-1 reports its key compromised since partway into the log: its later
    # events are void (certificates issued with it then: Invalid).
    w.ok(
        statement.IssuerKeyRevoke(
            issuer_id="LAB-1",
            key_id=K["lab1-new"].public_key.key_id,
            reason="stolen",
            compromised_at=w.clock.now - timedelta(minutes=count // 2),
        ).to_json(),
        K["lab1-new"],
    )
    return Registry(w, ids)


def _op(target: str, op: str, n: int) -> dict[str, Any]:
    issuer = target.split("/")[0]
    if op == "amend":
        return statement.CertificateAmend(
            issuer_id=issuer,
            certificate_id=f"{target}-A{n}",
            supersedes=target,
            kind=KINDS_OF[issuer][0],
            document_sha256=register_document(f"amended {target} {n}".encode()),
            issued=ISSUED[-1],
        ).to_json()
    return statement.CERTIFICATE_CHANGES[op](
        issuer_id=issuer, certificate_id=target, reason=f"test {op}"
    ).to_json()


@pytest.fixture
def registry(settings: Settings) -> Iterator[Registry]:
    r = build(settings)
    yield r
    r.ledger.close()


def expected(ledger: Ledger, listing: CertificateListing) -> list[tuple[str, str]]:
    """(certificate id, IAF status) of what the listing must show: a full replay."""
    entries = [(e.index, e.data) for e in ledger.storage.iter_entries()]
    replayed = trust.replay(ledger.identity.public_key, entries)
    now = ledger.clock()
    out = []
    for cert in sorted(replayed.certificates.values(), key=lambda c: c.events[0].index):
        status = trust.status_of(replayed, cert, now).status
        if listing.issuer_id is not None and cert.issuer_id != listing.issuer_id:
            continue
        if listing.kind is not None and cert.kind != listing.kind:
            continue
        assert cert.issued is not None
        if listing.issued_from is not None and cert.issued < listing.issued_from:
            continue
        if listing.issued_to is not None and cert.issued > listing.issued_to:
            continue
        if listing.status is not None and status != listing.status:
            continue
        out.append((cert.certificate_id, trust.IAF_STATUS[status]))
    return out


def listed(ledger: Ledger, listing: CertificateListing, limit: int) -> list[tuple[str, str]]:
    """Every page, following the cursors to the end."""
    seen: list[tuple[str, str]] = []
    after = -1
    for _ in range(10_000):
        page = ledger.list_certificates(listing, after_index=after, limit=limit)
        assert len(page.certificates) <= limit
        seen += [(c["certificate_id"], c["status"]) for c in page.certificates]
        if page.next_after is None:
            return seen
        assert page.next_after > after  # every page moves on
        after = page.next_after
    raise AssertionError("the cursor never ended")


def test_the_log_has_every_status_to_filter(registry: Registry) -> None:
    everything = expected(registry.ledger, CertificateListing())
    assert {status for _, status in everything} == set(trust.IAF_STATUS.values())


def test_every_issuer_and_status_listing_equals_the_replay(registry: Registry) -> None:
    for issuer in (None, *ISSUERS, "LAB-9"):
        for status in (None, *trust.IAF_STATUS):
            listing = CertificateListing(issuer_id=issuer, status=status)
            want = expected(registry.ledger, listing)
            assert listed(registry.ledger, listing, 500) == want, (issuer, status)
            assert listed(registry.ledger, listing, 3) == want, (issuer, status)


@hyp_settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    issuer=st.sampled_from([None, *ISSUERS]),
    status=st.sampled_from([None, *trust.IAF_STATUS]),
    kind=st.sampled_from([None, "dcc", "management_system", "product", "person"]),
    issued_from=st.sampled_from([None, *ISSUED]),
    span=st.sampled_from([None, 0, 31, 400]),
    limit=st.integers(1, 7),
)
def test_any_filter_combination_equals_the_replay(
    registry: Registry,
    issuer: str | None,
    status: str | None,
    kind: str | None,
    issued_from: date | None,
    span: int | None,
    limit: int,
) -> None:
    issued_to = None if span is None else (issued_from or ISSUED[0]) + timedelta(days=span)
    listing = CertificateListing(
        issuer_id=issuer, status=status, kind=kind, issued_from=issued_from, issued_to=issued_to
    )
    assert listed(registry.ledger, listing, limit) == expected(registry.ledger, listing)


def test_the_cli_words_are_the_listings(registry: Registry) -> None:
    assert set(STATUS_WORDS) == set(STATUSES)
    assert set(CLI_KINDS) == set(statement.CERTIFICATE_KINDS)


def test_a_page_that_discards_most_of_its_scan_ends_short_with_a_cursor(
    sqlite_settings: Settings,
) -> None:
    """A filter whose query superset is mostly discarded (here: the compromised
    issuer's certificates, for "Invalid") answers pages of a bounded scan."""
    r = build(sqlite_settings, seed=3, count=120)
    try:
        listing = CertificateListing(status=trust.INVALID)
        want = expected(r.ledger, listing)
        assert want, "the log should hold invalid certificates"
        assert listed(r.ledger, listing, 1) == want
    finally:
        r.ledger.close()


def test_listing_over_http(registry: Registry) -> None:
    from fastapi.testclient import TestClient

    from registry.api.app import create_app

    with TestClient(create_app(registry.ledger)) as client:
        for params, listing in [
            ({}, CertificateListing()),
            ({"status": "withdrawn"}, CertificateListing(status=trust.WITHDRAWN)),
            (
                {"status": "EXPIRED", "kind": "dcc"},
                CertificateListing(status="expired", kind="dcc"),
            ),
            (
                {"issuer": "CB-1", "issued_from": "2026-02-01", "issued_to": "2026-04-01"},
                CertificateListing(
                    issuer_id="CB-1", issued_from=date(2026, 2, 1), issued_to=date(2026, 4, 1)
                ),
            ),
        ]:
            seen: list[tuple[str, str]] = []
            cursor: str | None = None
            while True:
                query = {**params, "limit": "4"} | ({"cursor": cursor} if cursor else {})
                answer = client.get("/api/v1/certificates", params=query)
                assert answer.status_code == 200, answer.text
                body = answer.json()
                assert body["tree_size"] == registry.ledger.storage.tail_size()
                seen += [(c["certificate_id"], c["status"]) for c in body["certificates"]]
                cursor = body["next"]
                if cursor is None:
                    break
            assert seen == expected(registry.ledger, listing), params
        by_issuer = client.get("/api/v1/issuers/LAB-2/certificates", params={"status": "active"})
        assert [(c["certificate_id"], c["status"]) for c in by_issuer.json()["certificates"]] == (
            expected(registry.ledger, CertificateListing(issuer_id="LAB-2", status="active"))
        )
        first = client.get("/api/v1/certificates", params={"limit": 1}).json()["certificates"][0]
        assert first["issued"] in {d.isoformat() for d in ISSUED}


def test_listing_on_the_command_line(
    registry: Registry, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = registry.ledger.settings
    base = ["--data-dir", str(settings.data_dir)]
    if settings.database_url:
        base = ["--database-url", settings.database_url]
    code = qiledger([*base, "--json", "certificates", "--status", "Superseded", "--limit", "500"])
    out = capsys.readouterr().out
    assert code == 0
    shown = [(c["certificate_id"], c["status"]) for c in json.loads(out)["certificates"]]
    again = Ledger.open(settings, clock=registry.world.clock)
    try:
        assert shown == expected(again, CertificateListing(status=trust.SUPERSEDED))
        assert shown
    finally:
        again.close()
    code = qiledger([*base, "certificates", "--issuer", "CB-1", "--limit", "2"])
    out = capsys.readouterr().out
    assert code == 0
    assert "(more: --after " in out
    for bad in (
        ["certificates", "--status", "revoked"],
        ["certificates", "--issued-from", "2026-13-01"],
        ["certificates", "--limit", "0"],
    ):
        assert qiledger([*base, *bad]) == 2, bad
        capsys.readouterr()
    assert qiledger([*base, "certificates", "--issuer", "NOPE"]) == 4
    assert (
        qiledger(
            [*base, "certificates", "--issued-from", "2026-05-01", "--issued-to", "2026-01-01"]
        )
        == 1
    )


def test_a_listing_stays_correct_while_submissions_arrive(registry: Registry) -> None:
    """Paging through while another thread registers certificates: every
    certificate that existed when the listing began shows exactly once, all in
    log order, none twice; those registered meanwhile come after them."""
    ledger = registry.ledger
    before = [c for c, _ in expected(ledger, CertificateListing(issuer_id="LAB-2"))]
    stop = threading.Event()
    added: list[str] = []

    def submit() -> None:
        n = 0
        while not stop.is_set() and n < 60:
            cert_id = f"LAB-2/LIVE-{n}"
            registry.world.ok(
                statement.CertificateIssue(
                    issuer_id="LAB-2",
                    certificate_id=cert_id,
                    kind="dcc",
                    document_sha256=register_document(cert_id.encode()),
                    issued=ISSUED[0],
                ).to_json(),
                K["lab2"],
            )
            added.append(cert_id)
            n += 1

    writer = threading.Thread(target=submit)
    writer.start()
    seen: list[str] = []
    indices: list[int] = []
    after = -1
    try:
        while True:
            page = ledger.list_certificates(
                CertificateListing(issuer_id="LAB-2"), after_index=after, limit=2
            )
            seen += [c["certificate_id"] for c in page.certificates]
            indices += [c["history"][0]["index"] for c in page.certificates]
            if page.next_after is None:
                break
            after = page.next_after
    finally:
        stop.set()
        writer.join()
    assert indices == sorted(indices)
    assert len(set(seen)) == len(seen)
    assert seen[: len(before)] == before
    assert set(seen[len(before) :]) <= set(added)
    # and once the writer stopped, a fresh listing has them all
    final = [c for c, _ in expected(ledger, CertificateListing(issuer_id="LAB-2"))]
    assert listed(ledger, CertificateListing(issuer_id="LAB-2"), 5) == [
        (c, s) for c, s in expected(ledger, CertificateListing(issuer_id="LAB-2"))
    ]
    assert final == before + added


def test_tables_of_an_older_layout_are_rebuilt_when_opened(sqlite_settings: Settings) -> None:
    """A ledger whose certificate tables predate the issue-date column: opening it
    rebuilds them from the log, and the issue-date filter works."""
    r = build(sqlite_settings, count=12)
    clock = r.world.clock
    with r.ledger.db.write() as tx:
        tx.exec_driver_sql("DROP INDEX certificates_by_issued")
        tx.exec_driver_sql("ALTER TABLE certificates DROP COLUMN issued")
    r.ledger.close()
    again = Ledger.open(sqlite_settings, clock=clock)
    try:
        assert again.certificate_index.is_current()
        again.trust_state()  # catch bodies, issuers and keys up, as every caller does
        listing = CertificateListing(issued_from=ISSUED[2])
        assert listed(again, listing, 4) == expected(again, listing)
        fsck(again)
    finally:
        again.close()


def test_fsck_names_a_wrong_issue_date(sqlite_settings: Settings) -> None:
    r = build(sqlite_settings, count=6)
    try:
        with r.ledger.db.write() as tx:
            tx.exec_driver_sql("UPDATE certificates SET issued = '1999-01-01'")
        with pytest.raises(IntegrityError) as caught:
            fsck(r.ledger)
        assert "issued is" in caught.value.message
        r.ledger.reindex()
        fsck(r.ledger)
    finally:
        r.ledger.close()
