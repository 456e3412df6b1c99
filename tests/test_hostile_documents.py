"""Hostile certificate documents cost little and are refused in few words.

Certification JSON: a document or record over 256 KiB is ``document_too_large``
before it is parsed; validation stops at the first schema error, whose message
is built from the failing path and keyword and never quotes more than ~100
characters of the document; every string, array and object of the published
schema is bounded.

DCC XML: the tree is refused as soon as it passes a structural limit (checked
here at each limit exactly, with and without schemas), schema validation stops
at the first chunk holding an error, and no message quotes an unbounded part of
the document. (Costs are measured by ``bench/hostile.py``; tests time nothing.)
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from registry.config import Settings
from registry.documents.intake import DocumentReader
from tests.helpers import DCC_SCHEMAS, LUTAML, certification_fields, dcc_schemas, shared_bytes
from verifier import certification, dcc
from verifier.errors import MalformedError, QILedgerError, TooLargeError


def valid() -> bytes:
    """The lutaml valid.xml (DCC 3.3.0)."""
    return shared_bytes(LUTAML / "valid.xml")


NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
SHORT = 400
"""Longest refusal message a test accepts: a few quoted words, not the document."""


def with_sites(n: int) -> bytes:
    entity = {"name": "Example", "country": "CN", "sites": [{}] * n}
    return json.dumps(certification_fields(certified_entity=entity), separators=(",", ":")).encode()


def refusal(check: Callable[[], object]) -> QILedgerError | None:
    """The error ``check`` raises (only ours may escape), or None."""
    try:
        check()
    except QILedgerError as exc:
        return exc
    return None


def reader(tmp_path: Path) -> DocumentReader:
    return DocumentReader(Settings(data_dir=tmp_path / "d", dcc_schemas=DCC_SCHEMAS))


# --- certification JSON ---------------------------------------------------------------


@pytest.mark.parametrize("sites", [333_000, 666_000], ids=["1MB", "2MB"])
def test_a_certification_document_over_its_limit_is_too_large(sites: int, tmp_path: Path) -> None:
    data = with_sites(sites)
    assert len(data) > certification.MAX_RECORD_SIZE == 256 * 1024
    with pytest.raises(TooLargeError) as caught:
        certification.read_certification(data)
    assert caught.value.code == "document_too_large"
    with pytest.raises(QILedgerError) as caught:
        reader(tmp_path).statement(data, "CB-1", NOW)
    assert caught.value.code == "document_too_large"
    assert str(certification.MAX_RECORD_SIZE) in caught.value.message


def test_a_record_beside_a_pdf_has_the_same_limit(tmp_path: Path) -> None:
    pdf = b"%PDF-1.7\n%%EOF\n"
    with pytest.raises(QILedgerError) as caught:
        reader(tmp_path).statement(pdf, "CB-1", NOW, record=with_sites(100_000))
    assert caught.value.code == "document_too_large"


def test_the_largest_document_is_parsed_and_refused_by_its_first_error() -> None:
    n = (certification.MAX_RECORD_SIZE - len(with_sites(0))) // 3
    data = with_sites(n)
    assert len(data) <= certification.MAX_RECORD_SIZE
    with pytest.raises(certification.CertificationSchemaError) as caught:
        certification.read_certification(data)
    message = caught.value.message
    assert len(message) <= SHORT
    assert "certified_entity/sites" in message
    assert "maxItems is 200" in message
    assert str(n) in message


def _bounded(node: Any, path: str = "") -> list[str]:
    """Paths of the schema's unbounded strings, arrays and objects."""
    unbounded = []
    if isinstance(node, dict):
        kind = node.get("type")
        if kind == "string" and "maxLength" not in node and "enum" not in node:
            unbounded.append(path)
        if kind == "array" and "maxItems" not in node:
            unbounded.append(path)
        if kind == "object" and "maxProperties" not in node:
            unbounded.append(path)
        for key, sub in node.items():
            unbounded += _bounded(sub, f"{path}/{key}")
    elif isinstance(node, list):
        for i, sub in enumerate(node):
            unbounded += _bounded(sub, f"{path}/{i}")
    return unbounded


def test_every_string_array_and_object_of_the_published_schema_is_bounded() -> None:
    assert _bounded(certification.schema()) == []
    # maxProperties never hides the clearer additionalProperties error.
    with pytest.raises(certification.CertificationSchemaError, match="Additional properties"):
        certification.read_certification(json.dumps(certification_fields(extra=1)).encode())


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.text(max_size=30)
    | st.text(min_size=1000, max_size=5000),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=20,
)
FIELD_PATHS = [
    ("certificate_number",),
    ("certified_entity",),
    ("certified_entity", "name"),
    ("certified_entity", "country"),
    ("certified_entity", "sites"),
    ("scope",),
    ("scheme",),
    ("certification_body",),
    ("certification_body", "id"),
    ("accreditation_body", "accreditation_number"),
    ("issue_date",),
    ("status",),
    ("x" * 3000,),
]


@settings(max_examples=150)
@given(path=st.sampled_from(FIELD_PATHS), value=json_values, repeat=st.integers(1, 3000))
def test_a_refusal_never_quotes_much_of_the_document(
    path: tuple[str, ...], value: Any, repeat: int
) -> None:
    doc = certification_fields()
    target = doc
    for key in path[:-1]:
        target = target[key]
    if isinstance(value, list):
        value = value * repeat
    target[path[-1]] = value
    error = refusal(lambda: certification.read_certification(json.dumps(doc).encode()))
    assert error is None or len(error.message) <= SHORT, error.message[:500]


# --- DCC: structural limits, each checked at the limit exactly ------------------------


def with_comment(content: bytes) -> bytes:
    """valid.xml with a dcc:comment (any content, processed lax) holding ``content``."""
    return valid().replace(
        b"</dcc:measurementResults>",
        b"</dcc:measurementResults><dcc:comment>" + content + b"</dcc:comment>",
        1,
    )


def nodes_of(data: bytes) -> int:
    """Elements, attributes, comments and processing instructions, counted with lxml."""
    root = etree.fromstring(data)
    count = 0
    for node in root.iter():
        count += 1
        if isinstance(node.tag, str):
            count += len(node.attrib)
    return count


def attributes(n: int) -> bytes:
    return b"<x%s/>" % b"".join(b' a%d="v"' % i for i in range(n))


def namespaces(n: int) -> bytes:
    return b"<x%s/>" % b"".join(b' xmlns:p%d="urn:p%d"' % (i, i) for i in range(n))


def nested(depth: int) -> bytes:
    # The root is depth 1 and dcc:comment depth 2.
    inner = depth - 2
    return b"<x>" * inner + b"</x>" * inner


def text_in(tag: bytes, length: int) -> bytes:
    return b'<%s xmlns="urn:other">%s</%s>' % (tag, b"x" * length, tag)


def filler(total: int) -> bytes:
    """Empty elements to bring the document to ``total`` nodes."""
    base = nodes_of(with_comment(b""))
    return b"<x/>" * (total - base)


LIMITS = {
    "attributes": (attributes, dcc.MAX_ATTRIBUTES, "attributes"),
    "namespaces": (namespaces, dcc.MAX_NAMESPACES, "namespaces"),
    "depth": (nested, dcc.MAX_DEPTH, "nested"),
    "nodes": (filler, dcc.MAX_NODES, "elements, attributes"),
    "text": (lambda n: text_in(b"x", n), dcc.MAX_TEXT, "a text of"),
    "attribute value": (lambda n: b'<x a="%s"/>' % (b"v" * n), dcc.MAX_TEXT, "attribute value"),
    # a value list may be longer than MAX_TEXT, but not one of its items
    "list item": (
        lambda n: text_in(b"valueXMLList", 0).replace(
            b"></", b">%s%s</" % (b"1 " * (dcc.MAX_TEXT // 2), b"2" * n)
        ),
        dcc.MAX_TEXT,
        "an item of more than",
    ),
}


LONG = {"text", "attribute value", "list item"}  # documents over 1 MiB anyway


@pytest.mark.shared
@pytest.mark.parametrize(
    ("limit", "streamed"),
    [(limit, True) for limit in sorted(LIMITS)]
    + [(limit, False) for limit in sorted(LIMITS) if limit not in LONG],
)
def test_each_structural_limit_exactly(limit: str, streamed: bool) -> None:
    """Small documents are parsed at once and walked, larger ones streamed: the
    same limits either way (white space, no node, makes a document large)."""
    build, value, words = LIMITS[limit]
    padding = b" " * (dcc._SMALL_DOCUMENT + 1) if streamed and limit not in LONG else b""
    at_limit = with_comment(build(value) + padding)
    assert (len(at_limit) > dcc._SMALL_DOCUMENT) == streamed
    if limit == "nodes":
        assert nodes_of(at_limit) == value
    for schemas in (None, dcc_schemas()):  # dcc:comment takes anything: valid at the limit
        assert dcc.read_dcc(at_limit, schemas).unique_identifier == "1234"
        with pytest.raises(dcc.DccStructureError, match=words) as caught:
            dcc.read_dcc(with_comment(build(value + 1) + padding), schemas)
        assert caught.value.code == "malformed"
        assert len(caught.value.message) <= SHORT
    if limit == "text":  # but for base64 data and value lists
        for tag in (b"dataBase64", b"EncapsulatedCRLValue"):
            longer = with_comment(text_in(tag, dcc.MAX_TEXT * 2))
            assert dcc.read_dcc(longer, dcc_schemas()).unique_identifier == "1234"
        values = text_in(b"valueXMLList", 0).replace(b"></", b">%s</" % (b"1.5 " * dcc.MAX_TEXT))
        assert dcc.read_dcc(with_comment(values), dcc_schemas()).unique_identifier == "1234"


@settings(max_examples=300)
@given(
    text=st.lists(st.sampled_from(["x", "y", " ", "\n", "\t", "xx", "xxxxx"]), max_size=60).map(
        "".join
    ),
    limit=st.integers(1, 12),
)
def test_value_list_items_are_measured_exactly(text: str, limit: int) -> None:
    longest = max((len(item) for item in re.split(r"[ \t\r\n]", text)), default=0)
    assert dcc._has_item_longer_than(text, limit) == (longest > limit)


def with_attributes_on(elements: list[bytes], n: int) -> bytes:
    data = valid()
    for tag in elements:
        data = data.replace(
            b"<" + tag, b"<" + tag + b"".join(b' undeclared_%d="x"' % i for i in range(n)), 1
        )
    return data


HOSTILE: dict[str, Callable[[], bytes]] = {
    # the issue's: undeclared attributes spread over four elements ...
    "attributes over four elements": lambda: with_attributes_on(
        [
            b"dcc:administrativeData",
            b"dcc:coreData",
            b"dcc:measurementResults",
            b"dcc:calibrationLaboratory",
        ],
        2_000,
    ),
    # ... and 400,000 undeclared elements
    "400,000 undeclared elements": lambda: valid().replace(
        b"</dcc:coreData>", b"<undeclared/>" * 400_000 + b"</dcc:coreData>", 1
    ),
    "comments": lambda: valid().replace(
        b"</dcc:coreData>", b"<!---->" * 300_000 + b"</dcc:coreData>", 1
    ),
    "processing instructions": lambda: valid().replace(
        b"<dcc:coreData>", b"<?p?>" * 300_000 + b"<dcc:coreData>", 1
    ),
    "a huge identifier": lambda: valid().replace(b">1234<", b">%s<" % (b"9" * 5_000_000), 1),
}


@pytest.mark.shared
@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_trees_are_refused_before_validation(case: str) -> None:
    data = HOSTILE[case]()
    for schemas in (None, dcc_schemas()):
        with pytest.raises(dcc.DccStructureError) as caught:
            dcc.read_dcc(data, schemas)
        assert len(caught.value.message) <= SHORT


@pytest.mark.shared
@pytest.mark.parametrize(
    "tag",
    [
        b"<dcc:coreData" + b"".join(b' a%06d="v"' % i for i in range(20_000)) + b">",
        b"<dcc:coreData" + b"".join(b" xmlns:p%06d = 'urn:p'" % i for i in range(20_000)) + b">",
    ],
    ids=["attributes", "namespaces"],
)
def test_an_element_too_long_for_its_limits_is_refused_before_it_is_built(tag: bytes) -> None:
    """A start tag over many chunks: refused from its bytes, before the parser has
    built it (the message says so: counted assignments, not attributes)."""
    data = valid().replace(b"<dcc:coreData>", tag, 1)
    with pytest.raises(dcc.DccStructureError, match="attribute assignments") as caught:
        dcc.read_dcc(data, None)
    assert len(caught.value.message) <= SHORT


@pytest.mark.shared
def test_a_long_text_without_markup_is_not_mistaken_for_a_start_tag() -> None:
    text = b"x = 'y'; " * 60 + b"=" * 100_000 + b"z" * 100_000
    data = with_comment(b"<x>%s</x>" % text)
    assert dcc.read_dcc(data, dcc_schemas()).unique_identifier == "1234"


@pytest.mark.shared
def test_validation_stops_at_the_first_chunk_with_an_error() -> None:
    """A document whose schema error comes first and whose end is not even XML:
    validation reports the schema error, so it never read that far."""
    invalid = valid().replace(b"<dcc:coreData>", b'<dcc:coreData undeclared="1">', 1)
    truncated = invalid + b"<" * (1024 * 1024)  # well-formedness broken after the root
    with pytest.raises(dcc.DccSchemaError, match="undeclared") as caught:
        dcc_schemas().validate(truncated, "3.3.0")
    assert caught.value.code == "schema_invalid"
    with pytest.raises(MalformedError) as parsed:  # parse_xml does read it all
        dcc.parse_xml(truncated)
    assert parsed.value.code == "malformed"


@pytest.mark.shared
@pytest.mark.parametrize(
    ("change", "validated"),
    [
        (
            lambda v: v.replace(b">1957-08-13</dcc:begin", b">%s</dcc:begin" % (b"x" * 500_000), 1),
            False,
        ),
        (
            lambda v: v.replace(b">1957-08-13</dcc:begin", b">%s</dcc:begin" % (b"x" * 500_000), 1),
            True,
        ),
        (lambda v: v.replace(b'lang="de"', b'lang="%s"' % (b"d" * 500_000), 1), True),
        (lambda v: v.replace(b"<dcc:coreData>", b"<%s/><dcc:coreData>" % (b"u" * 40_000), 1), True),
        (
            lambda v: v.replace(b'schemaVersion="3.3.0"', b'schemaVersion="%s"' % (b"3" * 500_000)),
            False,
        ),
    ],
    ids=[
        "date-text",
        "date-text-schema",
        "lang-attribute",
        "element-name",
        "schema-version",
    ],
)
def test_no_refusal_quotes_a_long_part_of_the_document(
    change: Callable[[bytes], bytes], validated: bool
) -> None:
    with pytest.raises(MalformedError) as caught:
        dcc.read_dcc(change(valid()), dcc_schemas() if validated else None)
    assert len(caught.value.message) <= 3 * 220 + 100


def valid_text() -> str:
    return valid().decode("utf-8")


def declaration_end() -> int:
    return valid_text().index("?>") + 2


def verdict(data: bytes, schemas: Any) -> str:
    error = refusal(lambda: dcc.read_dcc(data, schemas))
    if error is not None:
        assert len(error.message) <= 3 * 220 + 100
        return error.code
    return "accepted"


@pytest.mark.shared
@settings(max_examples=150)
@given(
    position=st.deferred(lambda: st.integers(declaration_end(), len(valid_text()))),
    junk=st.text(max_size=20)
    | st.sampled_from(["<", ">", "&", "<!--", "<![CDATA[", "<?", "\x00", "]]>", "&#0;", "é"]),
    cut=st.booleans(),
)
def test_a_mangled_dcc_gets_one_verdict_in_utf8_and_utf16(
    position: int, junk: str, cut: bool
) -> None:
    """Only our errors, with short messages; and the same verdict whatever the
    encoding (before, a UTF-16 DCC was "not XML" whatever it held)."""
    text = valid_text()[declaration_end() : position] + junk
    if not cut:
        text += valid_text()[position:]
    utf8 = ('<?xml version="1.0" encoding="UTF-8"?>' + text).encode("utf-8", "surrogatepass")
    utf16 = b"\xff\xfe" + ('<?xml version="1.0" encoding="UTF-16"?>' + text).encode(
        "utf-16-le", "surrogatepass"
    )
    for schemas in (None, dcc_schemas()):
        assert verdict(utf8, schemas) == verdict(utf16, schemas)
