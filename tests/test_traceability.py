"""Traceability (issue 15): links read from DCCs, carried by statements, kept in
derived tables checked by fsck, and walked by the pure rules of
``verifier.traceability`` — the registry's answers equal an independent
computation over a generated calibration hierarchy and an auditor's replay,
on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import random
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from lxml import etree

from registry.cli.main import main as qiledger
from registry.config import Settings
from registry.documents.intake import DocumentMismatch, DocumentReader
from registry.errors import IntegrityError, NotFoundError
from registry.fsck import fsck
from registry.ledger import Ledger
from registry.storage.certificate_index import COVERING_LINKS_INDEX
from tests.helpers import (
    BODY_KEY,
    SIEMENS,
    certification_fields,
    envelope_bytes,
    grant,
    key_from,
    register_document,
    shared_bytes,
    submit_with_documents,
)
from tests.test_trust_chain import World, make_world, unsigned
from verifier import dcc, entry, jcs, links, statement, traceability, trust
from verifier.entry import format_time
from verifier.errors import MalformedError
from verifier.keys import SigningKey
from verifier.links import EQUIPMENT, PREVIOUS_REPORT, Link

T1 = datetime(2026, 1, 2, tzinfo=UTC)
HUMIDITY = SIEMENS / "dcc_gp_humidity_v1.0.xml"
TEMPERATURE = SIEMENS / "dcc_gp_temperature_typical_v12.xml"
NS = {"dcc": dcc.DCC_NS}


# --- 1. reading links from DCCs ---------------------------------------------------------


def _independent_equipment_links(data: bytes) -> list[tuple[str, str, str]]:
    """(referralID, procedure, value) of every measuringEquipment certificate, by XPath."""
    root = etree.fromstring(data)
    return [
        tuple(
            " ".join(c.findtext(f"dcc:{name}", namespaces=NS).split())
            for name in ("referralID", "procedure", "value")
        )
        for c in root.xpath("//dcc:measuringEquipment/dcc:certificate", namespaces=NS)
    ]


@pytest.mark.shared
def test_the_example_dccs_equipment_certificates_are_read() -> None:
    data = shared_bytes(HUMIDITY)
    _, root = dcc.read_dcc_tree(data, None)
    found = links.read_links(root)
    # What the file holds: two instruments, one "analogue", one with a SHA256
    # procedure whose value is no hex digest (so it cannot be checked).
    assert _independent_equipment_links(data) == [
        ("GP-mE-Certificate-x", "analogue", "analogue"),
        ("GP-mE-Certificate-y", "SHA256", "SHA256-value"),
    ]
    assert found.links == (
        Link(EQUIPMENT, "GP-mE-Certificate-x", "analogue", "analogue"),
        Link(EQUIPMENT, "GP-mE-Certificate-y", "SHA256", "SHA256-value"),
    )
    assert all(link.sha256 is None for link in found.links)
    assert set((found.referrals or {}).values()) == {"www.kalibrierfirma.xx/certificate-download"}
    norms = {" ".join(n.text.split()) for n in etree.fromstring(data).iter(f"{{{dcc.DCC_NS}}}norm")}
    assert found.standards == tuple(sorted(norms))
    assert "GUM" in found.standards
    assert "DKD-R 5-8" in found.standards


@pytest.mark.shared
def test_an_example_with_an_instrument_but_no_certificate_has_no_links() -> None:
    data = shared_bytes(TEMPERATURE)
    _, root = dcc.read_dcc_tree(data, None)
    assert root.xpath("count(//dcc:measuringEquipment)", namespaces=NS) == 1
    assert _independent_equipment_links(data) == []
    found = links.read_links(root)
    assert found.links == ()
    assert found.standards == ("DKD-R 5-1:2018", "GUM", "ISO/IEC 17025:2018-03")


@pytest.mark.shared
def test_the_example_dccs_with_schema_validation_give_the_same_links() -> None:
    from tests.helpers import dcc_schemas

    data = shared_bytes(HUMIDITY)
    core, root = dcc.read_dcc_tree(data, dcc_schemas())
    assert core.schema_validated
    assert links.read_links(root).links == links.read_links(dcc.read_dcc_tree(data, None)[1]).links


def _dcc(equipment: str = "", previous: str = "", norms: str = "") -> bytes:
    """A small DCC (not schema-valid: read without schemas) with these parts."""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<dcc:digitalCalibrationCertificate xmlns:dcc="https://ptb.de/dcc" schemaVersion="3.3.0">
 <dcc:administrativeData>
  <dcc:coreData>
   <dcc:uniqueIdentifier>DCC-1</dcc:uniqueIdentifier>
   <dcc:beginPerformanceDate>2026-01-01</dcc:beginPerformanceDate>
   <dcc:endPerformanceDate>2026-01-02</dcc:endPerformanceDate>
   {previous}
  </dcc:coreData>
 </dcc:administrativeData>
 <dcc:measurementResults><dcc:measurementResult>
  <dcc:usedMethods><dcc:usedMethod>{norms}</dcc:usedMethod></dcc:usedMethods>
  <dcc:measuringEquipments>{equipment}</dcc:measuringEquipments>
 </dcc:measurementResult></dcc:measurementResults>
</dcc:digitalCalibrationCertificate>""".encode()


def _certificate(reference: str, procedure: str, value: str, tag: str = "certificate") -> str:
    return (
        f"<dcc:{tag}><dcc:referral><dcc:content>x</dcc:content></dcc:referral>"
        f"<dcc:referralID>{reference}</dcc:referralID><dcc:procedure>{procedure}</dcc:procedure>"
        f"<dcc:value>{value}</dcc:value></dcc:{tag}>"
    )


def _equipment(*certificates: str) -> str:
    return "".join(f"<dcc:measuringEquipment>{c}</dcc:measuringEquipment>" for c in certificates)


def _read(data: bytes) -> links.DocumentLinks:
    return links.read_links(dcc.read_dcc_tree(data, None)[1])


def test_a_sha256_digest_is_lowercase_hex_and_others_are_kept_as_given() -> None:
    digest = "AB" * 32
    found = _read(
        _dcc(
            _equipment(
                _certificate("NMI-1/REF-1", "SHA-256", digest),
                _certificate("NMI-1/REF-2", "sha256", " " + digest[:32] + "\n" + digest[32:]),
                _certificate("NMI-1/REF-3", "MD5", "d41d8cd98f00b204e9800998ecf8427e"),
                _certificate("NMI-1/REF-1", "SHA256", digest.lower()),  # the same link again
            ),
            previous=_certificate("LAB-1/OLD-1", "SHA-256", digest, tag="previousReport"),
            norms="<dcc:norm>  ISO/IEC   17025 </dcc:norm><dcc:norm>GUM</dcc:norm>"
            "<dcc:norm>GUM</dcc:norm>",
        )
    )
    assert {(link.certificate_id, link.role, link.sha256) for link in found.links} == {
        ("NMI-1/REF-1", EQUIPMENT, digest.lower()),
        ("NMI-1/REF-2", EQUIPMENT, digest.lower()),
        ("NMI-1/REF-3", EQUIPMENT, None),
        ("LAB-1/OLD-1", PREVIOUS_REPORT, digest.lower()),
    }
    md5 = next(link for link in found.links if link.certificate_id == "NMI-1/REF-3")
    assert (md5.procedure, md5.digest) == ("MD5", "d41d8cd98f00b204e9800998ecf8427e")
    assert found.standards == ("GUM", "ISO/IEC 17025")
    # What the statement records validates (canonical: sorted, unique).
    built = statement.CertificateIssue(
        issuer_id="LAB-1",
        certificate_id="LAB-1/DCC-1",
        kind="dcc",
        document_sha256="0" * 64,
        issued=date(2026, 1, 2),
        links=found.links_json(),
        standards=found.standards_json(),
    )
    parsed = statement.parse(built.encode(T1))
    assert links.statement_references(parsed.fields).links == found.links


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (
            _dcc(_equipment(*(_certificate(f"R-{n}", "MD5", "x") for n in range(65)))),
            "more than 64",
        ),
        (_dcc(_equipment(_certificate("R" * 129, "MD5", "x"))), "referralID is 129 characters"),
        (_dcc(_equipment(_certificate("R", "P" * 33, "x"))), "procedure is 33 characters"),
        (_dcc(_equipment(_certificate("R", "MD5", "v" * 129))), "value is 129 characters"),
        (
            _dcc(
                _equipment("<dcc:certificate><dcc:procedure>MD5</dcc:procedure></dcc:certificate>")
            ),
            "lacks referralID",
        ),
        (_dcc(norms=f"<dcc:norm>{'N' * 201}</dcc:norm>"), "the limit is 200"),
        (
            _dcc(norms="".join(f"<dcc:norm>N-{n}</dcc:norm>" for n in range(33))),
            "more than 32 distinct norms",
        ),
    ],
)
def test_hostile_links_are_refused_with_a_clear_error(data: bytes, says: str) -> None:
    with pytest.raises(MalformedError) as caught:
        _read(data)
    assert says in caught.value.message


def test_a_norm_outside_a_method_or_statement_is_not_read() -> None:
    data = _dcc(norms="<dcc:norm>GUM</dcc:norm>").replace(
        b"</dcc:coreData>", b"<dcc:comment><dcc:norm>HIDDEN</dcc:norm></dcc:comment></dcc:coreData>"
    )
    assert _read(data).standards == ("GUM",)


# --- 2. links and standards in statements ------------------------------------------------


def _issue(**extra: Any) -> dict[str, Any]:
    value = statement.CertificateIssue(
        issuer_id="LAB-1",
        certificate_id="LAB-1/DCC-1",
        kind="dcc",
        document_sha256="0" * 64,
        issued=date(2026, 1, 2),
    ).to_json(T1)
    return {**value, **extra}


GOOD_LINK = {"certificate_id": "NMI-1/REF-1", "role": "equipment", "sha256": "a" * 64}
OTHER_LINK = {"certificate_id": "B", "role": "equipment", "procedure": "MD5", "digest": "x"}


@pytest.mark.parametrize(
    "links_value",
    [
        [],
        [GOOD_LINK, GOOD_LINK],
        sorted([GOOD_LINK, OTHER_LINK], key=jcs.canonical_bytes, reverse=True),
        [{**GOOD_LINK, "sha256": "A" * 64}],
        [{**GOOD_LINK, "role": "customer"}],
        [{**GOOD_LINK, "extra": 1}],
        [{**GOOD_LINK, "certificate_id": " padded"}],
        [{**GOOD_LINK, "certificate_id": "a\x01b"}],
        [{**GOOD_LINK, "certificate_id": "R" * 129}],
        [{**OTHER_LINK, "procedure": "SHA-256", "digest": "a" * 64}],  # must be "sha256"
        [{**OTHER_LINK, "digest": 5}],
        [
            {"certificate_id": f"R-{n:03d}", "role": "equipment", "sha256": "a" * 64}
            for n in range(65)
        ],
        "not a list",
    ],
)
def test_malformed_links_are_refused(links_value: Any) -> None:
    with pytest.raises(MalformedError) as caught:
        statement.validate(_issue(links=links_value))
    assert "certificate.issue.links" in caught.value.message


@pytest.mark.parametrize(
    "standards_value",
    [[], ["b", "a"], ["a", "a"], ["two  spaces"], [" lead"], [""], ["x" * 201], [1], ["n"] * 33],
)
def test_malformed_standards_are_refused(standards_value: Any) -> None:
    with pytest.raises(MalformedError) as caught:
        statement.validate(_issue(standards=standards_value))
    assert "certificate.issue.standards" in caught.value.message


def test_canonical_links_and_standards_validate_and_old_statements_still_do() -> None:
    ordered = [
        dict(v)
        for v in links.canonical_links([Link.from_json(OTHER_LINK), Link.from_json(GOOD_LINK)])
    ]
    assert statement.validate(_issue(links=ordered, standards=["GUM", "ISO 9001:2015"]))
    old = statement.validate(_issue())
    assert "links" not in old.fields
    assert links.statement_references(old.fields).links == ()


_WORD = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zs", "Zl", "Zp")),
    min_size=1,
    max_size=8,
)
_LINKS = st.lists(
    st.builds(
        Link,
        st.sampled_from([EQUIPMENT, PREVIOUS_REPORT]),
        st.lists(_WORD, min_size=1, max_size=3).map(" ".join),
        st.sampled_from(["SHA-256", "MD5", "analogue"]),
        st.one_of(st.text("0123456789abcdef", min_size=64, max_size=64), _WORD),
    ).filter(lambda link: link.procedure != "SHA-256" or len(link.digest) == 64),
    min_size=1,
    max_size=12,
)


@given(found=_LINKS, seed=st.integers(0, 2**32))
def test_canonical_links_validate_and_any_other_order_is_refused(
    found: list[Link], seed: int
) -> None:
    canonical = [dict(v) for v in links.canonical_links(found)]
    parsed = statement.validate(_issue(links=canonical))
    assert set(links.statement_references(parsed.fields).links) == set(found)
    shuffled = canonical[:]
    random.Random(seed).shuffle(shuffled)
    if shuffled != canonical:
        with pytest.raises(MalformedError):
            statement.validate(_issue(links=shuffled))
    with pytest.raises(MalformedError):
        statement.validate(_issue(links=canonical + canonical[-1:]))  # a repeat


@pytest.mark.shared
def test_the_intake_derives_links_and_standards_and_refuses_a_statement_without_them(
    sqlite_settings: Settings,
) -> None:
    reader = DocumentReader(sqlite_settings)
    data = shared_bytes(HUMIDITY)
    now = T1
    derived = reader.statement(data, "LAB-1", now).fields
    _, root = dcc.read_dcc_tree(data, None)
    expected = links.read_links(root)
    assert derived["links"] == [dict(v) for v in expected.links_json() or ()]
    assert derived["standards"] == list(expected.standards)
    signed = {**derived, "signed_at": format_time(now)}
    assert reader.check(statement.validate(signed), data, now)
    for changed in (
        {k: v for k, v in signed.items() if k != "links"},
        {k: v for k, v in signed.items() if k != "standards"},
        {**signed, "links": derived["links"][:1]},
        {**signed, "standards": ["GUM"]},
    ):
        with pytest.raises(DocumentMismatch) as caught:
            reader.check(statement.validate(changed), data, now)
        assert "links" in caught.value.message or "standards" in caught.value.message


def test_a_certification_statement_names_its_standard(sqlite_settings: Settings) -> None:
    reader = DocumentReader(sqlite_settings)
    record = json.dumps(certification_fields(standard="ISO  9001:2015")).encode()
    fields = reader.statement(record, "CB-1", T1).fields
    assert fields["standards"] == ["ISO 9001:2015"]
    assert "links" not in fields


# --- a generated calibration hierarchy --------------------------------------------------

ISSUER_KEYS = {name: key_from(f"trace-{name}") for name in ("NMI-1", "NMI-2", "LAB-A", "LAB-B")}


@dataclass
class Graph:
    world: World
    tiers: list[list[str]]
    edges: dict[str, list[str]] = field(default_factory=dict)
    """Traced links between registered certificates (the generator's own record)."""
    digests: dict[str, str] = field(default_factory=dict)
    externals: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ledger(self) -> Ledger:
        return self.world.ledger

    @property
    def ids(self) -> list[str]:
        return [c for tier in self.tiers for c in tier]


def _submit_all(w: World, items: list[tuple[dict[str, Any], SigningKey]]) -> None:
    envelopes = [
        envelope_bytes({"signed_at": format_time(w.clock.now), **fields}, key)
        for fields, key in items
    ]
    outcomes = submit_with_documents(w.ledger.sequencer, envelopes)
    assert all(getattr(o, "index", None) is not None for o in outcomes), outcomes


def build_graph(
    settings: Settings, seed: int = 15, shape: tuple[int, ...] = (3, 6, 10, 16, 40)
) -> Graph:
    """National roots (tier 0), tiers of laboratories' reference standards, and
    working instruments at the bottom: each certificate links to one to three
    certificates of the tier above (its instruments), with their SHA-256; some
    also to a certificate this log does not hold and to an earlier report."""
    w = make_world(settings)
    for issuer, key in ISSUER_KEYS.items():
        w.ok(unsigned(grant(issuer, [key])), BODY_KEY)
    rng = random.Random(seed)
    g = Graph(w, [])
    for depth, count in enumerate(shape):
        tier: list[str] = []
        items = []
        for n in range(count):
            issuer = ("NMI-1", "NMI-2")[n % 2] if depth == 0 else ("LAB-A", "LAB-B")[n % 2]
            cert_id = f"{issuer}/T{depth}-{n}"
            digest = register_document(f"trace {cert_id} {seed}".encode())
            up = rng.sample(g.tiers[-1], rng.randint(1, min(3, len(g.tiers[-1])))) if depth else []
            linked = [Link(EQUIPMENT, u, "SHA-256", g.digests[u]) for u in up]
            if depth and rng.random() < 0.2:
                external = f"FOREIGN-NMI/REF-{n}"
                linked.append(Link(EQUIPMENT, external, "SHA-256", "e" * 64))
                g.externals.setdefault(cert_id, []).append(external)
            if depth and rng.random() < 0.2:
                linked.append(
                    Link(PREVIOUS_REPORT, rng.choice(g.tiers[-1]), "analogue", "analogue")
                )
            refs = links.DocumentLinks(
                tuple(linked), ("GUM",) if depth % 2 else ("DKD-R 5-1:2018", "GUM")
            )
            items.append(
                (
                    statement.CertificateIssue(
                        issuer_id=issuer,
                        certificate_id=cert_id,
                        kind="dcc",
                        document_sha256=digest,
                        issued=date(2026, 5, 1),
                        links=refs.links_json(),
                        standards=refs.standards_json(),
                    ).to_json(),
                    ISSUER_KEYS[issuer],
                )
            )
            g.edges[cert_id] = up
            g.digests[cert_id] = digest
            tier.append(cert_id)
        _submit_all(w, items)
        w.clock.advance(minutes=1)
        g.tiers.append(tier)
    return g


@pytest.fixture
def graph(settings: Settings) -> Iterator[Graph]:
    g = build_graph(settings)
    yield g
    g.ledger.close()


def change(g: Graph, cert_id: str, action: str) -> None:
    issuer = cert_id.split("/")[0]
    g.world.clock.advance(minutes=1)
    g.world.ok(
        statement.CERTIFICATE_CHANGES[action](
            issuer_id=issuer, certificate_id=cert_id, reason=f"test {action}"
        ).to_json(),
        ISSUER_KEYS[issuer],
    )


def depends_on(g: Graph, cert_id: str) -> set[str]:
    """Everything ``cert_id`` traces to (independently: a search over the generator's edges)."""
    seen: set[str] = set()
    todo = list(g.edges.get(cert_id, ()))
    while todo:
        up = todo.pop()
        if up not in seen:
            seen.add(up)
            todo.extend(g.edges.get(up, ()))
    return seen


def dependents_by_depth(g: Graph, cert_id: str) -> dict[str, int]:
    """Each certificate tracing to ``cert_id``, with its least distance (BFS over
    the reversed generator edges)."""
    reverse: dict[str, list[str]] = {}
    for down, ups in g.edges.items():
        for up in ups:
            reverse.setdefault(up, []).append(down)
    found: dict[str, int] = {}
    queue = deque([(cert_id, 0)])
    while queue:
        node, depth = queue.popleft()
        for down in reverse.get(node, ()):
            if down not in found and down != cert_id:
                found[down] = depth + 1
                queue.append((down, depth + 1))
    return found


def all_dependents(
    ledger: Ledger, cert_id: str, limit: int, max_depth: int = 32
) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    offset = 0
    for _ in range(10_000):
        page = ledger.dependents(cert_id, offset=offset, limit=limit, max_depth=max_depth)
        assert len(page["dependents"]) <= limit
        seen += page["dependents"]
        if page["next"] is None:
            return seen
        offset = int(page["next"])
    raise AssertionError("the cursor never ended")


def test_withdrawing_a_mid_tier_certificate_flags_exactly_its_dependents(graph: Graph) -> None:
    g = graph
    for cert_id in g.ids:  # nothing is at risk yet
        assert not g.ledger.traceability(cert_id)["traceability_at_risk"], cert_id
    middle = g.tiers[2][1]
    change(g, middle, "withdraw")
    expected = dependents_by_depth(g, middle)
    assert len(expected) > 3  # the generated graph gives the test something to find
    for limit in (1, 4, 500, 100_000):  # 100,000: the whole set in one page
        got = all_dependents(g.ledger, middle, limit)
        assert {d["certificate_id"]: d["depth"] for d in got} == expected
        assert len(got) == len(expected)  # each once
        assert [d["depth"] for d in got] == sorted(d["depth"] for d in got)  # level by level
        assert {d["digest_check"] for d in got} == {"match"}
        for d in got:
            assert middle in depends_on(g, d["certificate_id"])
            assert d["via"] == middle or expected[d["via"]] == d["depth"] - 1
    for cert_id in g.ids:
        answer = g.ledger.traceability(cert_id)
        assert answer["traceability_at_risk"] == (cert_id in expected), cert_id
        assert answer["at_risk_because"] == ([middle] if cert_id in expected else [])
    # depth limits: only the first levels
    shallow = all_dependents(g.ledger, middle, 3, max_depth=1)
    assert {d["certificate_id"] for d in shallow} == {c for c, d in expected.items() if d == 1}
    # suspended (then reinstated) puts at risk too, and lifts it again
    top = g.tiers[0][0]
    change(g, top, "suspend")
    above = dependents_by_depth(g, top)
    for cert_id in g.ids:
        at_risk = g.ledger.traceability(cert_id)["traceability_at_risk"]
        assert at_risk == (cert_id in above or cert_id in expected), cert_id
    change(g, top, "reinstate")
    for cert_id in g.ids:
        assert g.ledger.traceability(cert_id)["traceability_at_risk"] == (cert_id in expected)


def test_a_trace_walks_to_the_roots_with_every_link(graph: Graph) -> None:
    g = graph
    for cert_id in g.tiers[-1][:8] + g.tiers[2][:3]:
        answer = g.ledger.traceability(cert_id)
        reached = depends_on(g, cert_id)
        traced = [
            link for link in answer["links"] if link["role"] == "equipment" and link["registered"]
        ]
        assert {link["to"] for link in traced} == reached
        assert set(answer["ends"]) == {c for c in reached if c in g.tiers[0]}
        assert all(
            link["digest_check"] == "match" and link["status"] == "Active" for link in traced
        )
        externals = [link for link in answer["links"] if not link["registered"]]
        wanted_external = {e for c in {cert_id} | reached for e in g.externals.get(c, ())}
        assert {link["to"] for link in externals} == wanted_external  # kept, never dropped
        assert all(link["status"] == "External, unverified" for link in externals)
        assert all(link["digest_check"] == "external" for link in externals)
        assert answer["cycles"] == []
        assert not answer["truncated"]


def _replay_answer(ledger: Ledger, cert_id: str) -> traceability.Trace:
    """An auditor's answer: a replay of the log's entries, links read from each
    statement, the same pure rules."""
    entries = [(e.index, e.data) for e in ledger.storage.iter_entries()]
    state = trust.replay(ledger.identity.public_key, entries)
    by_id: dict[str, tuple[Link, ...]] = {}
    for _, data in entries:
        stmt = statement.parse(entry.parse(data).envelope.payload)
        if stmt.type in statement.DOCUMENT_TYPES:
            by_id[stmt["certificate_id"]] = links.statement_references(stmt.fields).links
    now = ledger.clock()
    cert = state.certificate(cert_id)
    assert cert is not None
    return traceability.trace(
        cert,
        lambda ids: {i: c for i in ids if (c := state.certificate(i)) is not None},
        lambda ids: {i: by_id[i] for i in ids if by_id.get(i)},
        lambda c: trust.status_of(state, c, now).status,
    )


def test_the_registry_and_an_auditors_replay_reach_the_same_answer(graph: Graph) -> None:
    g = graph
    change(g, g.tiers[1][2], "withdraw")
    for cert_id in g.tiers[-1][:10]:
        registry = g.ledger.traceability(cert_id)
        audited = _replay_answer(g.ledger, cert_id)
        assert registry["traceability_at_risk"] == bool(audited.at_risk)
        assert registry["at_risk_because"] == list(audited.at_risk)
        assert [(x["from"], x["to"], x["digest_check"]) for x in registry["links"]] == [
            (t.from_id, t.link.certificate_id, t.digest) for t in audited.links
        ]


def test_fsck_passes_and_reindex_rebuilds_the_same_rows(graph: Graph) -> None:
    fsck(graph.ledger)
    before = _reference_rows(graph.ledger)
    assert before[0]
    assert before[1]
    graph.ledger.reindex()
    assert _reference_rows(graph.ledger) == before
    fsck(graph.ledger)


def _reference_rows(ledger: Ledger) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    with ledger.db.read() as tx:
        return (
            [tuple(r) for r in tx.exec_driver_sql("SELECT * FROM certificate_links ORDER BY 1, 2")],
            [
                tuple(r)
                for r in tx.exec_driver_sql("SELECT * FROM certificate_standards ORDER BY 1, 2, 3")
            ],
        )


def test_a_standard_lists_the_certificates_naming_it(graph: Graph) -> None:
    g = graph
    withdrawn = g.tiers[1][0]
    change(g, withdrawn, "withdraw")
    naming = [c for depth, tier in enumerate(g.tiers) for c in tier if depth % 2 == 0]
    seen: list[str] = []
    after = -1
    while True:
        page = g.ledger.standard("dkd-r  5-1:2018", after_index=after, limit=4)
        seen += [c["certificate_id"] for c in page["certificates"]]
        if page["next"] is None:
            break
        after = int(page["next"])
    assert seen == naming
    everyone = g.ledger.standard("GUM", after_index=-1, limit=500)
    assert [c["certificate_id"] for c in everyone["certificates"]] == g.ids  # all name GUM
    assert everyone["counts_by_recorded_status"] == {"active": len(g.ids) - 1, "withdrawn": 1}
    statuses = {c["certificate_id"]: c["status"] for c in everyone["certificates"]}
    assert statuses[withdrawn] == "Withdrawn"
    assert g.ledger.standard("ISO 9999", after_index=-1, limit=5)["certificates"] == []


# --- digests, unknown certificates, cycles ----------------------------------------------


def _linked_world(settings: Settings) -> World:
    w = make_world(settings)
    for issuer, key in ISSUER_KEYS.items():
        w.ok(unsigned(grant(issuer, [key])), BODY_KEY)
    return w


def _cert(cert_id: str, *linked: Link) -> tuple[dict[str, Any], SigningKey]:
    issuer = cert_id.split("/")[0]
    refs = links.DocumentLinks(tuple(linked))
    return (
        statement.CertificateIssue(
            issuer_id=issuer,
            certificate_id=cert_id,
            kind="dcc",
            document_sha256=register_document(f"small {cert_id}".encode()),
            issued=date(2026, 5, 1),
            links=refs.links_json(),
        ).to_json(),
        ISSUER_KEYS[issuer],
    )


def _digest(cert_id: str) -> str:
    return register_document(f"small {cert_id}".encode())


def test_digest_mismatch_unknown_certificate_and_cycle(settings: Settings) -> None:
    w = _linked_world(settings)
    try:
        _submit_all(
            w,
            [
                _cert("NMI-1/ROOT"),
                _cert(
                    "LAB-A/REF",
                    Link(EQUIPMENT, "NMI-1/ROOT", "SHA-256", "f" * 64),  # the wrong digest
                    Link(EQUIPMENT, "NOWHERE/REF-9", "SHA-256", "e" * 64),
                    Link(EQUIPMENT, "LAB-B/LOOP-2", "MD5", "abc"),  # not registered yet
                ),
                _cert(
                    "LAB-B/LOOP-2", Link(EQUIPMENT, "LAB-A/REF", "SHA-256", _digest("LAB-A/REF"))
                ),
            ],
        )
        answer = w.ledger.traceability("LAB-A/REF")
        by_to = {(x["from"], x["to"]): x for x in answer["links"]}
        assert by_to[("LAB-A/REF", "NMI-1/ROOT")]["digest_check"] == "mismatch"
        assert by_to[("LAB-A/REF", "NOWHERE/REF-9")]["registered"] is False
        assert by_to[("LAB-A/REF", "NOWHERE/REF-9")]["status"] == "External, unverified"
        assert by_to[("LAB-A/REF", "LAB-B/LOOP-2")]["digest_check"] == "unchecked"
        assert by_to[("LAB-B/LOOP-2", "LAB-A/REF")]["digest_check"] == "match"
        assert answer["cycles"] == [["LAB-A/REF", "LAB-B/LOOP-2"]]
        assert answer["ends"] == ["NMI-1/ROOT"]
        # the walk met the loop once: every link is listed once
        assert len(answer["links"]) == len({(x["from"], x["to"]) for x in answer["links"]}) == 4
        found = all_dependents(w.ledger, "NMI-1/ROOT", 10)
        assert [(d["certificate_id"], d["depth"], d["digest_check"]) for d in found] == [
            ("LAB-A/REF", 1, "mismatch"),
            ("LAB-B/LOOP-2", 2, "match"),
        ]
        assert [d["certificate_id"] for d in all_dependents(w.ledger, "LAB-A/REF", 1)] == [
            "LAB-B/LOOP-2"
        ]
        fsck(w.ledger)
    finally:
        w.ledger.close()


def test_an_unknown_certificate_is_not_found(settings: Settings) -> None:
    w = _linked_world(settings)
    try:
        for call in (
            lambda: w.ledger.traceability("LAB-A/NONE"),
            lambda: w.ledger.dependents("LAB-A/NONE", offset=0, limit=5, max_depth=3),
        ):
            with pytest.raises(NotFoundError):
                call()
    finally:
        w.ledger.close()


def _reach(edges: dict[str, list[str]], a: str) -> set[str]:
    seen: set[str] = set()
    todo = list(edges[a])
    while todo:
        b = todo.pop()
        if b not in seen:
            seen.add(b)
            todo.extend(edges[b])
    return seen


def _cycles_found(nodes: list[str], edges: dict[str, list[str]]) -> set[tuple[str, ...]]:
    certs = {n: trust.Certificate(n, "C", "dcc", "0" * 64) for n in nodes}
    got = traceability.trace(
        certs[nodes[0]],
        lambda ids: {i: certs[i] for i in ids if i in certs},
        lambda ids: {i: [Link(EQUIPMENT, t, "MD5", "x") for t in edges[i]] for i in ids},
        lambda c: trust.ACTIVE,
    )
    return set(got.cycles)


def test_cycles_are_found_by_the_pure_rules() -> None:
    """Tarjan over small graphs equals a brute-force check (every pair reaching each other)."""
    rng = random.Random(3)
    for _ in range(300):
        nodes = [f"C/{n}" for n in range(rng.randint(1, 7))]
        edges = {n: sorted(set(rng.sample(nodes, rng.randint(0, len(nodes))))) for n in nodes}
        reached = {nodes[0]} | _reach(edges, nodes[0])
        parts = {
            tuple(sorted(b for b in reached if b in _reach(edges, a) and a in _reach(edges, b)))
            for a in reached
            if a in _reach(edges, a)
        }
        assert _cycles_found(nodes, edges) == parts


# --- old logs, fsck, the other interfaces -----------------------------------------------


def test_an_old_log_without_links_replays_and_answers(settings: Settings) -> None:
    from tests.test_trust_chain import K, cert

    w = make_world(settings)
    try:
        w.ok(cert("LAB-2", 1), K["lab2"])
        fsck(w.ledger)
        assert _reference_rows(w.ledger) == ([], [])
        answer = w.ledger.traceability("LAB-2/C-1")
        assert (answer["links"], answer["traceability_at_risk"], answer["ends"]) == ([], False, [])
        assert w.ledger.dependents("LAB-2/C-1", offset=0, limit=5, max_depth=3)["dependents"] == []
        # tables of the layout before links are rebuilt when opened
        with w.ledger.db.write() as tx:
            tx.exec_driver_sql("DROP TABLE certificate_links")
        w.ledger.close()
        again = Ledger.open(settings, clock=w.clock)
        try:
            assert again.traceability("LAB-2/C-1")["links"] == []
            fsck(again)
        finally:
            again.close()
    finally:
        w.ledger.close()


@pytest.mark.parametrize("layout", ["links without their certificates' columns", "no covering"])
def test_links_of_an_older_layout_are_rebuilt_when_opened(settings: Settings, layout: str) -> None:
    g = build_graph(settings, shape=(2, 4, 6))
    top = g.tiers[0][0]
    change(g, g.tiers[1][0], "suspend")
    before = g.ledger.dependents(top, offset=0, limit=100, max_depth=6)
    assert before["dependents"]
    with g.ledger.db.write() as tx:
        tx.exec_driver_sql(f"DROP INDEX {COVERING_LINKS_INDEX}")
        if layout == "no covering":
            tx.exec_driver_sql(
                "CREATE INDEX certificate_links_by_to "
                "ON certificate_links (to_certificate, from_index)"
            )
        else:  # the layout before this one: the links alone, covered
            for column in ("digest_check", "from_issuer", "from_valid_until", "from_status"):
                tx.exec_driver_sql(f"ALTER TABLE certificate_links DROP COLUMN {column}")
            tx.exec_driver_sql(
                "CREATE INDEX certificate_links_by_to_covering ON certificate_links "
                "(to_certificate, from_index, position, role, from_certificate, procedure, "
                "to_digest)"
            )
    assert not g.ledger.certificate_index.is_current()
    g.ledger.close()
    again = Ledger.open(settings, clock=g.world.clock)
    try:
        assert COVERING_LINKS_INDEX in again.db.index_names("certificate_links")
        assert again.certificate_index.is_current()
        after = again.dependents(top, offset=0, limit=100, max_depth=6)
        assert after["dependents"] == before["dependents"]
        fsck(again)
    finally:
        again.close()


LINK_DAMAGE = {
    "digest": "UPDATE certificate_links SET to_digest = 'x' WHERE position = 0",
    "target": "UPDATE certificate_links SET to_certificate = 'LAB-A/ELSE' WHERE position = 0",
    "missing": "DELETE FROM certificate_links WHERE position = 0",
    "extra": (
        "INSERT INTO certificate_links VALUES "
        "(3, 9, 'X/Y', 'Z/W', 'd', 'p', 'equipment', 'external', 'X', NULL, 'active')"
    ),
    "beyond": (
        "INSERT INTO certificate_links VALUES "
        "(99999, 0, 'X/Y', 'Z/W', 'd', 'p', 'equipment', 'external', 'X', NULL, 'active')"
    ),
    "standard": "UPDATE certificate_standards SET standard_ref = 'GUX'",
    # What each link copies of its certificate's row (the walk reads only links).
    "linking status": "UPDATE certificate_links SET from_status = 'withdrawn'",
    "digest check": "UPDATE certificate_links SET digest_check = 'mismatch'",
    "linking issuer": "UPDATE certificate_links SET from_issuer = 'LAB-B'",
    "linking valid until": "UPDATE certificate_links SET from_valid_until = '2030-01-01'",
    "certificate's status": (
        "UPDATE certificates SET recorded_status = 'suspended' WHERE certificate_id = 'LAB-A/REF'"
    ),
}


@pytest.mark.parametrize("damage", sorted(LINK_DAMAGE))
def test_fsck_names_a_wrong_link_row(sqlite_settings: Settings, damage: str) -> None:
    w = _linked_world(sqlite_settings)
    try:
        root = _cert("NMI-1/ROOT")
        child_fields, key = _cert(
            "LAB-A/REF", Link(EQUIPMENT, "NMI-1/ROOT", "SHA-256", _digest("NMI-1/ROOT"))
        )
        _submit_all(w, [root, ({**child_fields, "standards": ["GUM"]}, key)])
        fsck(w.ledger)
        with w.ledger.db.write() as tx:
            tx.exec_driver_sql(LINK_DAMAGE[damage])
        with pytest.raises(IntegrityError) as caught:
            fsck(w.ledger)
        message = caught.value.message
        assert "certificate_links" in message or "certificate_standards" in message
        assert "qiledger reindex" in message
        if damage != "beyond":
            assert "LAB-A/REF" in message or "X/Y" in message
        w.ledger.reindex()
        fsck(w.ledger)
    finally:
        w.ledger.close()


def test_a_dependents_walk_gives_the_cyclic_collector_back(graph: Graph) -> None:
    # The walk pauses it (its objects hold no cycles); after an answer and after
    # a refusal alike it runs again.
    import gc

    assert gc.isenabled()
    top = graph.tiers[0][0]
    assert graph.ledger.dependents(top, offset=0, limit=5, max_depth=6)["dependents"]
    assert gc.isenabled()
    with pytest.raises(NotFoundError):
        graph.ledger.dependents("LAB-A/NONE", offset=0, limit=5, max_depth=6)
    assert gc.isenabled()


def test_the_links_to_a_set_of_certificates_are_the_same_however_it_is_asked(
    graph: Graph,
) -> None:
    # On PostgreSQL the ids go as one text the server splits at newlines; an id
    # holding one (none can be registered, but a caller may ask) takes the
    # array path instead. Either way: the rows of each id, in log order.
    g = graph
    index = g.ledger.certificate_index
    ids = g.ids
    with g.ledger.storage.read() as tx:
        one_by_one = {i: index.links_to(tx, [i], links.TRACED_ROLES) for i in ids}
        together = index.links_to(tx, [*ids, *ids[:3]], links.TRACED_ROLES)
        odd = index.links_to(tx, [ids[0], "LAB-A/NOT\nONE", ids[1]], links.TRACED_ROLES)
        none = index.links_to(tx, [], links.TRACED_ROLES)
    assert sum(map(len, one_by_one.values())) > len(ids)  # the graph links
    assert sorted(together) == sorted(row for rows in one_by_one.values() for row in rows)
    for i in ids:
        assert [row for row in together if row[0] == i] == one_by_one[i]
    for i in ids[:2]:
        assert one_by_one[i]  # top-tier certificates: linked to
        assert [row for row in odd if row[0] == i] == one_by_one[i]
    assert len(odd) == len(one_by_one[ids[0]]) + len(one_by_one[ids[1]])
    assert none == []


def test_http_routes(graph: Graph) -> None:
    from fastapi.testclient import TestClient

    from registry.api.app import create_app

    g = graph
    middle = g.tiers[2][0]
    change(g, middle, "withdraw")
    expected = dependents_by_depth(g, middle)
    leaf = next(c for c in g.tiers[-1] if c in expected)
    with TestClient(create_app(g.ledger)) as client:
        answer = client.get(f"/api/v1/traceability/{leaf}")
        assert answer.status_code == 200, answer.text
        assert answer.json() == g.ledger.traceability(leaf)
        assert answer.json()["traceability_at_risk"] is True
        seen: dict[str, int] = {}
        cursor = None
        while True:
            params = {"limit": "3"} | ({"cursor": cursor} if cursor else {})
            page = client.get(f"/api/v1/dependents/{middle}", params=params)
            assert page.status_code == 200, page.text
            seen |= {d["certificate_id"]: d["depth"] for d in page.json()["dependents"]}
            cursor = page.json()["next"]
            if cursor is None:
                break
        assert seen == expected
        whole = client.get(f"/api/v1/dependents/{middle}", params={"limit": "100000"}).json()
        assert {d["certificate_id"]: d["depth"] for d in whole["dependents"]} == expected
        assert whole["next"] is None
        standard = client.get("/api/v1/standards", params={"ref": "GUM", "limit": "2"})
        assert standard.status_code == 200
        assert len(standard.json()["certificates"]) == 2
        for url, code in [
            ("/api/v1/traceability/LAB-A/NONE", 404),
            ("/api/v1/dependents/LAB-A/NONE", 404),
            (f"/api/v1/dependents/{middle}?depth=0", 422),
            (f"/api/v1/dependents/{middle}?limit=100001", 422),
            ("/api/v1/standards?ref=GUM&limit=501", 422),
            (f"/api/v1/dependents/{middle}?cursor=-1", 422),
            ("/api/v1/standards", 422),
            ("/api/v1/standards?ref=" + "x" * 201, 422),
        ]:
            bad = client.get(url)
            assert bad.status_code == code, (url, bad.text)
            assert bad.headers["content-type"].startswith("application/problem+json")


def test_cli_commands(graph: Graph, capsys: pytest.CaptureFixture[str]) -> None:
    g = graph
    middle = g.tiers[2][0]
    change(g, middle, "withdraw")
    expected = dependents_by_depth(g, middle)
    leaf = next(c for c in g.tiers[-1] if c in expected)
    settings = g.ledger.settings
    base = ["--data-dir", str(settings.data_dir)]
    if settings.database_url:
        base += ["--database-url", settings.database_url]

    def run(*args: str) -> tuple[int, str, str]:
        code = qiledger([*base, *args])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = run("trace", leaf)
    assert code == 0
    assert "TRACEABILITY AT RISK" in out
    assert middle in out
    code, out, _ = run("--json", "impact", middle, "--limit", "500")
    assert code == 0
    assert {d["certificate_id"] for d in json.loads(out)["dependents"]} == set(expected)
    code, out, _ = run("--json", "impact", middle, "--limit", "2", "--all")
    assert code == 0
    every = json.loads(out)
    assert [d["certificate_id"] for d in every["dependents"]].count(leaf) == 1
    assert {d["certificate_id"]: d["depth"] for d in every["dependents"]} == expected
    assert every["next"] is None
    code, out, _ = run("impact", middle, "--limit", "2")
    assert "--all" in out  # how to get the rest
    code, _, _ = run("impact", middle, "--limit", "100001")
    assert code == 2
    code, out, _ = run("--json", "standard", "GUM", "--limit", "2")
    assert code == 0
    assert json.loads(out)["next"] is not None
    code, _, err = run("trace", "LAB-A/NONE")
    assert code == 4
    assert err.startswith("qiledger: ")
    assert len(err.strip().splitlines()) == 1
    code, _, err = run("impact", middle, "--depth", "0")
    assert code == 2


def test_the_cli_bounds_are_the_registrys() -> None:
    """The CLI keeps copies of the bounds so that its parser imports no rules."""
    from registry import traceability as registry_traceability
    from registry.cli import traceability as cli_traceability
    from verifier import traceability as rules

    assert cli_traceability._MAX_DEPTH == rules.MAX_DEPTH
    assert cli_traceability._MAX_PAGE == registry_traceability.MAX_PAGE
    assert cli_traceability._MAX_DEPENDENTS_PAGE == registry_traceability.MAX_DEPENDENTS_PAGE


# --- the pure dependents walk against a plain breadth-first search --------------------------


@dataclass(frozen=True)
class _Doc:
    certificate_id: str
    document_sha256: str


def _reference_dependents(
    start: str,
    rows: list[tuple[int, int, str, Link]],
    first: dict[str, int],
    max_depth: int,
) -> list[tuple[str, int, str, str]]:
    """What the walk's docstring promises, one parent at a time: level by level,
    each certificate once at its least depth, within a level in the order of the
    certificates they link to, then the linking certificate's log order (then the
    link's place in its statement); via the first such parent."""
    found: list[tuple[str, int, str, str]] = []
    seen = {start}
    level = [start]
    for depth in range(1, max_depth + 1):
        following = []
        for parent in level:
            incoming = sorted(
                (f, pos, frm, link)
                for f, pos, frm, link in (
                    (first[frm], pos, frm, link)
                    for (_, pos, frm, link) in rows
                    if link.certificate_id == parent and link.role in links.TRACED_ROLES
                )
            )
            for _, _, child, link in incoming:
                if child in seen:
                    continue
                seen.add(child)
                following.append(child)
                digest = traceability.digest_check(link, _Doc(parent, f"doc-{parent}"))
                found.append((child, depth, parent, digest))
        level = following
    return found


@hypothesis_settings(max_examples=300)
@given(
    n=st.integers(2, 14),
    edges=st.lists(
        st.tuples(
            st.integers(0, 13),
            st.integers(0, 13),
            st.sampled_from([EQUIPMENT, PREVIOUS_REPORT]),
            st.sampled_from(["match", "mismatch", "other procedure"]),
        ),
        max_size=40,
    ),
    chunk=st.integers(1, 4),
    max_depth=st.integers(1, 6),
)
def test_the_dependents_walk_is_a_breadth_first_search_in_its_stated_order(
    n: int, edges: list[tuple[int, int, str, str]], chunk: int, max_depth: int
) -> None:
    ids = [f"LAB/C-{i}" for i in range(n)]
    first = {cert_id: i for i, cert_id in enumerate(ids)}
    rows: list[tuple[int, int, str, Link]] = []
    for position, (a, b, role, digest) in enumerate(edges):
        frm, to = ids[a % n], ids[b % n]
        link = {
            "match": Link(role, to, "SHA-256", f"doc-{to}"),
            "mismatch": Link(role, to, "SHA-256", "x"),
            "other procedure": Link(role, to, "SHA-512", f"doc-{to}"),
        }[digest]
        rows.append((first[frm], position, frm, link))

    def links_to(parents: Sequence[str]) -> list[tuple[str, ...]]:
        # Every role, in the contract's order (the walk keeps the traced ones).
        wanted = set(parents)
        picked = [r for r in rows if r[3].certificate_id in wanted]
        picked.sort(key=lambda r: (r[3].certificate_id, r[0], r[1]))
        return [
            (
                link.certificate_id,
                frm,
                link.role,
                traceability.digest_check(link, _Doc(to := link.certificate_id, f"doc-{to}")),
            )
            for _, _, frm, link in picked
        ]

    walked = traceability.dependents(
        _Doc(ids[0], f"doc-{ids[0]}"), links_to, max_depth=max_depth, chunk=chunk
    )
    got = [(d.certificate_id, d.depth, d.via, d.digest) for d in walked]
    assert got == _reference_dependents(ids[0], rows, first, max_depth)
