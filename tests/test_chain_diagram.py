"""The traceability chain drawn as SVG on the verification page (issue 15, item 3).

The diagram is drawn from the traceability route's own answer, so the test
holds it to that answer: on a generated calibration hierarchy (SQLite and
PostgreSQL), every certificate's page draws exactly the certificates and links
``GET /api/v1/traceability/{id}`` names, each with its status (also after a
withdrawal); the SVG is well-formed XML for any ids, statuses and links
(hypothesis), hostile ids are escaped, a large chain is cut and says so; and in a
real Chromium with JavaScript off the diagram is there.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from registry.api import chain_diagram
from registry.api.app import create_app
from registry.config import Settings
from tests.browser import ServedApp, chromium, require_browser
from tests.test_traceability import Graph, build_graph, change
from verifier.traceability import MATCH, MISMATCH, UNCHECKED

SVG = "{http://www.w3.org/2000/svg}"
PARSER = etree.XMLParser(resolve_entities=False, no_network=True)


def parse(svg: str) -> Any:
    return etree.fromstring(svg.encode("utf-8"), PARSER)


SVG_BLOCK = re.compile(r'<svg xmlns="http://www.w3.org/2000/svg" id="chain".*?</svg>', re.S)


@pytest.fixture
def graph(settings: Settings) -> Iterator[Graph]:
    g = build_graph(settings, shape=(2, 3, 5, 8))
    yield g
    g.ledger.close()


def drawn(html: str) -> tuple[dict[str, str], set[tuple[str, str]], Any] | None:
    """(box id → status, arrows as (from, to), the parsed SVG) of the page's
    diagram, or None when the page has none."""
    found = SVG_BLOCK.search(html)
    if found is None:
        return None
    svg = parse(found.group(0))
    boxes = {g.get("data-certificate"): g.get("data-status") for g in svg.iter(f"{SVG}g")}
    arrows = {(line.get("data-from"), line.get("data-to")) for line in svg.iter(f"{SVG}line")}
    return boxes, arrows, svg


def expected(trace: dict[str, Any]) -> tuple[dict[str, str], set[tuple[str, str]]]:
    boxes = {trace["certificate_id"]: chain_diagram.STATUS_KEY[trace["status"]]}
    for link in trace["links"]:
        boxes.setdefault(link["to"], chain_diagram.STATUS_KEY[link["status"]])
    arrows = {(link["from"], link["to"]) for link in trace["links"] if link["from"] != link["to"]}
    return boxes, arrows


def test_each_page_draws_what_the_traceability_route_says(graph: Graph) -> None:
    g = graph
    middle = g.tiers[1][0]
    with TestClient(create_app(g.ledger)) as client:
        for round_ in ("before", "after a withdrawal"):
            pictured = 0
            for cert_id in g.ids:
                html = client.get(f"/c/{cert_id}", params={"lang": "en"}).text
                trace = client.get(f"/api/v1/traceability/{cert_id}").json()
                diagram = drawn(html)
                if not trace["links"]:
                    assert diagram is None, cert_id  # nothing to draw: no diagram
                    continue
                assert diagram is not None, cert_id
                boxes, arrows, _ = diagram
                assert (boxes, arrows) == expected(trace), (round_, cert_id)
                pictured += 1
            assert pictured > len(g.ids) // 2  # the graph gives most pages a chain
            if round_ == "before":
                change(g, middle, "withdraw")
        page = client.get(f"/c/{g.tiers[-1][0]}", params={"lang": "zh"}).text
        assert "溯源链" in page


def test_a_withdrawn_link_is_drawn_as_withdrawn(graph: Graph) -> None:
    g = graph
    leaf = g.tiers[-1][0]
    parent = g.edges[leaf][0]
    change(g, parent, "withdraw")
    with TestClient(create_app(g.ledger)) as client:
        diagram = drawn(client.get(f"/c/{leaf}").text)
    assert diagram is not None
    boxes, _, svg = diagram
    assert boxes[parent] == "withdrawn"
    rect = next(g for g in svg.iter(f"{SVG}g") if g.get("data-certificate") == parent).find(
        f"{SVG}rect"
    )
    assert "bad" in rect.get("class").split()


# --- the drawing alone, for any answer ------------------------------------------------

HOSTILE = st.text(alphabet=st.sampled_from(list("AB/-_<>&\"' é中\u2014")), min_size=1, max_size=40)
STATUS_WORDS = sorted(chain_diagram.STATUS_KEY)


@st.composite
def traces(draw: st.DrawFn) -> dict[str, Any]:
    ids = draw(st.lists(HOSTILE, min_size=1, max_size=20, unique=True))
    links = []
    for _ in range(draw(st.integers(0, 40))):
        links.append(
            {
                "from": draw(st.sampled_from(ids)),
                "to": draw(st.sampled_from(ids)),
                "role": draw(st.sampled_from(["equipment", "previous_report"])),
                "depth": draw(st.integers(1, 9)),
                "status": draw(st.sampled_from(STATUS_WORDS)),
                "digest_check": draw(st.sampled_from([MATCH, MISMATCH, UNCHECKED, "external"])),
            }
        )
    return {
        "certificate_id": ids[0],
        "status": draw(st.sampled_from(STATUS_WORDS)),
        "links": links,
        "truncated": draw(st.booleans()),
    }


@settings(max_examples=300, deadline=None)
@given(trace=traces())
def test_the_svg_is_well_formed_and_escaped_for_any_answer(trace: dict[str, Any]) -> None:
    svg = parse(str(chain_diagram.chain_svg(trace, str.upper, "cut <here>")))
    boxes = [g.get("data-certificate") for g in svg.iter(f"{SVG}g")]
    assert len(boxes) == len(set(boxes))  # each certificate once
    assert boxes[0] == trace["certificate_id"]
    every = {trace["certificate_id"]} | {link["to"] for link in trace["links"]}
    assert set(boxes) <= every
    for group in svg.iter(f"{SVG}g"):
        title = group.find(f"{SVG}title").text
        assert title.startswith(group.get("data-certificate") + " — ")  # text as written
    for line in svg.iter(f"{SVG}line"):
        assert line.get("data-from") in boxes
        assert line.get("data-to") in boxes
    mismatches = {
        (link["from"], link["to"])
        for link in trace["links"]
        if link["digest_check"] == MISMATCH and link["from"] in boxes and link["to"] in boxes
    }
    marked = {
        (line.get("data-from"), line.get("data-to"))
        for line in svg.iter(f"{SVG}line")
        if "mismatch" in line.get("class").split()
    }
    assert mismatches - {(a, a) for a in boxes} <= marked
    cut = [t for t in svg.iter(f"{SVG}text") if t.get("class") == "cut"]
    if trace["truncated"] or len(set(boxes)) < len(every):
        assert [t.text for t in cut] == ["cut <here>"]
    # a link to a box that is drawn, from a box that is drawn, is drawn
    drawn_links = {(line.get("data-from"), line.get("data-to")) for line in svg.iter(f"{SVG}line")}
    for link in trace["links"]:
        if link["from"] in boxes and link["to"] in boxes and link["from"] != link["to"]:
            assert (link["from"], link["to"]) in drawn_links


def test_a_large_chain_is_cut_and_says_so() -> None:
    links = [
        {
            "from": "LAB/START",
            "to": f"LAB/REF-{n:03d}",
            "role": "equipment",
            "depth": 1,
            "status": "Active",
            "digest_check": MATCH,
        }
        for n in range(chain_diagram.MAX_PER_ROW + 5)
    ]
    trace = {"certificate_id": "LAB/START", "status": "Active", "links": links, "truncated": False}
    svg = parse(str(chain_diagram.chain_svg(trace, str, "cut")))
    boxes = [g.get("data-certificate") for g in svg.iter(f"{SVG}g")]
    assert len(boxes) == 1 + chain_diagram.MAX_PER_ROW
    assert [t.text for t in svg.iter(f"{SVG}text") if t.get("class") == "cut"] == ["cut"]


def test_external_boxes_link_nowhere_and_registered_ones_to_their_page() -> None:
    trace = {
        "certificate_id": "LAB/A B",
        "status": "Active",
        "links": [
            {"from": "LAB/A B", "to": "NMI/ROOT", "role": "equipment", "depth": 1,
             "status": "Active", "digest_check": MATCH},
            {"from": "LAB/A B", "to": "ELSEWHERE/X", "role": "equipment", "depth": 1,
             "status": "External, unverified", "digest_check": "external"},
        ],
        "truncated": False,
    }  # fmt: skip
    svg = parse(str(chain_diagram.chain_svg(trace, str, "cut")))
    hrefs = [a.get("href") for a in svg.iter(f"{SVG}a")]
    assert hrefs == ["/c/LAB/A%20B", "/c/NMI/ROOT"]
    external = next(g for g in svg.iter(f"{SVG}g") if g.get("data-certificate") == "ELSEWHERE/X")
    assert external.get("data-status") == "external"
    assert external.find(f"{SVG}rect").get("stroke-dasharray")


# --- in a real browser with JavaScript off ---------------------------------------------


def test_the_diagram_shows_with_javascript_off(sqlite_settings: Settings) -> None:
    require_browser()
    from selenium.webdriver.common.by import By

    g = build_graph(sqlite_settings, shape=(2, 3, 5))
    try:
        app = create_app(g.ledger)
        leaf = g.tiers[-1][0]
        with ServedApp(app) as server, chromium(javascript=False) as driver:
            driver.get(f"{server.url}/c/{leaf}?lang=en")
            chain = driver.find_element(By.ID, "chain")
            assert chain.is_displayed()
            assert chain.size["width"] > 100
            assert chain.size["height"] > 40
            texts = [t.text for t in driver.find_elements(By.CSS_SELECTOR, "#chain g.box text")]
            assert any(leaf[: chain_diagram.LABEL_CHARS - 1] in t for t in texts)
        app.state.service.close()
    finally:
        g.ledger.close()
