"""'Traceability at risk' on the public status read and the verification page
(issue 15, item 3): derived when read, for exactly the certificates whose
traceability walk finds a suspended, withdrawn or invalid certificate, on SQLite
and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from registry.api.app import create_app
from registry.config import Settings
from tests.test_traceability import Graph, build_graph, change, dependents_by_depth


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
