"""'Traceability at risk' on the public status read and the verification page
(issue 15, item 3): derived when read, for exactly the certificates whose
traceability walk finds a suspended, withdrawn or invalid certificate, on SQLite
and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime

import pytest
from fastapi.testclient import TestClient

from registry import traceability as traceability_views
from registry.api.app import create_app
from registry.config import Settings
from tests.helpers import register_document
from tests.test_traceability import (
    ISSUER_KEYS,
    Graph,
    build_graph,
    change,
    dependents_by_depth,
)
from verifier import links, statement, trust
from verifier.links import EQUIPMENT, Link


@pytest.fixture
def graph(settings: Settings) -> Iterator[Graph]:
    g = build_graph(settings, shape=(2, 3, 5, 8))
    yield g
    g.ledger.close()


def _status(client: TestClient, cert_id: str) -> dict[str, object]:
    answer = client.get(f"/api/v1/certificates/{cert_id}")
    assert answer.status_code == 200, answer.text
    body: dict[str, object] = answer.json()
    return body


def _page(client: TestClient, cert_id: str, lang: str = "en") -> str:
    answer = client.get(f"/c/{cert_id}", params={"lang": lang})
    assert answer.status_code == 200, answer.text
    return answer.text


def test_the_status_read_and_the_page_say_when_traceability_is_at_risk(graph: Graph) -> None:
    g = graph
    with TestClient(create_app(g.ledger)) as client:
        for cert_id in g.ids:  # nothing at risk yet: roots (no links) and the rest alike
            body = _status(client, cert_id)
            assert (body["traceability_at_risk"], body["at_risk_because"]) == (False, [])
            assert 'id="traceability-risk"' not in _page(client, cert_id)
        middle = g.tiers[1][1]
        change(g, middle, "withdraw")
        expected = dependents_by_depth(g, middle)
        assert expected  # the generated graph gives the test something to find
        for cert_id in g.ids:
            body = _status(client, cert_id)
            at_risk = cert_id in expected
            assert body["traceability_at_risk"] is at_risk, cert_id
            assert body["at_risk_because"] == ([middle] if at_risk else []), cert_id
            # the same as the traceability route says
            assert {
                k: body[k] for k in ("traceability_at_risk", "at_risk_because")
            } == g.ledger.traceability_risk(cert_id)
            page = _page(client, cert_id)
            assert ('id="traceability-risk"' in page) is at_risk, cert_id
            if at_risk:
                assert "Traceability at risk" in page
                assert f">{middle}</a>" in page  # through which certificate
                assert "溯源存在风险" in _page(client, cert_id, "zh")
            # the certificate's own verdict is unchanged: it is still valid
            assert body["status"] == ("Withdrawn" if cert_id == middle else "Active")
        # a suspension lifted lifts the risk again
        top = g.tiers[0][0]
        change(g, top, "suspend")
        above = dependents_by_depth(g, top)
        for cert_id in g.ids:
            assert _status(client, cert_id)["traceability_at_risk"] is (
                cert_id in above or cert_id in expected
            ), cert_id
        change(g, top, "reinstate")
        for cert_id in g.ids:
            assert _status(client, cert_id)["traceability_at_risk"] is (cert_id in expected)


def test_a_dependents_page_shows_each_status_as_a_status_read_would(graph: Graph) -> None:
    # A dependents page reads two columns of each certificate where the recorded
    # status decides (no compromised key, nothing logged later); the statuses must be
    # status_of's, for every status a certificate can have, on both engines.
    g = graph
    w = g.world
    expiring = []
    for n, until in enumerate((date(2026, 6, 1), date(2030, 1, 1))):
        cert_id = f"LAB-A/EXP-{n}"
        fields = statement.CertificateIssue(
            issuer_id="LAB-A",
            certificate_id=cert_id,
            kind="dcc",
            document_sha256=register_document(f"expiring {n}".encode()),
            issued=date(2026, 5, 1),
            valid_until=until,
            links=links.DocumentLinks(
                (Link(EQUIPMENT, g.tiers[0][0], "SHA-256", g.digests[g.tiers[0][0]]),), ()
            ).links_json(),
        ).to_json()
        w.ok(fields, ISSUER_KEYS["LAB-A"])
        expiring.append(cert_id)
    mid = g.tiers[1]
    change(g, mid[0], "suspend")
    change(g, mid[1], "withdraw")
    change(g, mid[2 % len(mid)], "suspend")
    change(g, mid[2 % len(mid)], "reinstate")
    ids = [*g.ids, *expiring]

    def compare(expect_two_columns: bool) -> None:
        ledger = g.ledger
        ledger.trust_state()
        last = ledger.entry(ledger.storage.tail_size() - 1).logged_at
        for at in (w.clock.now, datetime(2027, 1, 1, tzinfo=UTC), datetime(2031, 1, 1, tzinfo=UTC)):
            with ledger._reading_in() as (tx, state):
                shown = traceability_views._statuses(
                    traceability_views._Reads(
                        ledger.certificate_index, tx, state, last
                    ),
                    ids,
                    at,
                )
                decides = trust.recorded_status_decides(state, at, last, "LAB-B")
                want = {i: trust.certificate_status(state, i, at).status for i in ids}
            assert decides == expect_two_columns
            assert shown == want
        assert {"suspended", "withdrawn", "active"} <= set(shown.values())
        assert shown[expiring[0]] == "expired"

    compare(expect_two_columns=True)
    key = ISSUER_KEYS["LAB-B"].public_key
    w.ok(
        statement.IssuerKeyRevoke(
            issuer_id="LAB-B", key_id=key.key_id, reason="stolen", compromised_at=w.clock.now
        ).to_json(),
        ISSUER_KEYS["LAB-B"],
    )
    compare(expect_two_columns=False)  # a compromise: each certificate read whole
