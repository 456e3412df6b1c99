"""What the registry reads from a DCC, checked against values read independently.

Every shared example under ``shared/dcc/examples`` (globbed: a new one is not
skipped silently) is read with ``verifier.dcc.read_dcc`` and compared with what
plain lxml XPath finds in the file; the statement ``DocumentReader`` derives
from it must carry those values. The examples hold no issueDate, laboratory
code, amendment or previous report, so variants of one example with random such
values (still schema-valid) check those fields too. The same DCCs re-encoded
(UTF-8 with a byte-order mark, UTF-16 LE and BE) give the same statement, and a
DOCTYPE or entity is refused in every encoding.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from registry.config import Settings
from registry.demo import DEMO_DOCUMENTS
from registry.documents.intake import DCC_MEDIA_TYPE, DocumentReader, media_type_of
from tests.helpers import (
    DCC_EXAMPLES,
    DCC_SCHEMAS,
    LUTAML,
    dcc_schemas,
    shared_bytes,
    shared_params,
)
from verifier import dcc, statement
from verifier.dcc_signature import DocumentSignatureError
from verifier.entry import format_time
from verifier.errors import MalformedError, QILedgerError


def valid() -> bytes:
    """The lutaml valid.xml (schema 3.3.0)."""
    return shared_bytes(LUTAML / "valid.xml")


def examples() -> list[Path]:
    return sorted(DCC_EXAMPLES.rglob("*.xml"))


EXAMPLES = shared_params(examples)
DEMO = DEMO_DOCUMENTS
NS = {"dcc": dcc.DCC_NS, "ds": dcc.DS_NS}
# The lutaml test certificate is valid 2026-01-06 .. 2027-01-06 (XMLDSig is
# checked at "now"); XAdES signatures are checked at their signing time.
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)

# Examples the registry refuses, and why (every other example must be read).
REFUSED_BY_SCHEMA = {"lutaml-dcc/invalid_schema.xml"}
REFUSED_SIGNATURES = {
    "lutaml-dcc/invalid_signature.xml": "Digest mismatch",
    "siemens-pydcc/dcc_gp_temperature_typical_v12_v3.2.0_signed_manipulated.xml": (
        "Digest mismatch"
    ),
    "siemens-pydcc/dcc_gp_temperature_typical_v12_v3.2.0_signed_lt_revoked.xml": "was revoked",
}


def name_of(path: Path) -> str:
    return path.relative_to(DCC_EXAMPLES).as_posix()


@pytest.mark.shared
def test_the_examples_are_there() -> None:
    names = {name_of(p) for p in examples()}
    assert len(names) >= 10
    assert REFUSED_BY_SCHEMA | set(REFUSED_SIGNATURES) <= names


# --- values read independently, with XPath ------------------------------------------


@dataclass(frozen=True)
class Expected:
    schema_version: str
    unique_identifier: str
    begin: date
    end: date
    issue_date: date | None
    laboratory_name: str
    laboratory_code: str | None
    replaces: str | None
    change: str | None
    previous_report: str | None
    has_signature: bool


def xpath_values(data: bytes) -> Expected:
    tree = etree.fromstring(data, etree.XMLParser(resolve_entities=False, no_network=True))

    def text(path: str) -> str | None:
        found = tree.xpath(
            f"/dcc:digitalCalibrationCertificate/dcc:administrativeData/{path}/text()",
            namespaces=NS,
        )
        joined = "".join(str(t) for t in found).strip()
        return joined or None

    def day(path: str) -> date | None:
        value = text(path)
        return None if value is None else date.fromisoformat(value[:10])

    core = "dcc:coreData/"
    amended = core + "dcc:reportAmendedSubstituted/"
    uid = text(core + "dcc:uniqueIdentifier")
    begin, end = day(core + "dcc:beginPerformanceDate"), day(core + "dcc:endPerformanceDate")
    assert uid is not None
    assert begin is not None
    assert end is not None
    lab = "dcc:calibrationLaboratory/"
    return Expected(
        schema_version=str(tree.xpath("string(/*/@schemaVersion)")),
        unique_identifier=uid,
        begin=begin,
        end=end,
        issue_date=day(core + "dcc:issueDate"),
        laboratory_name=text(lab + "dcc:contact/dcc:name/dcc:content[1]") or "",
        laboratory_code=text(lab + "dcc:calibrationLaboratoryCode"),
        replaces=text(amended + "dcc:replacedUniqueIdentifier"),
        change=text(amended + "dcc:typeOfChange"),
        previous_report=text(core + "dcc:previousReport/dcc:referralID"),
        has_signature=bool(tree.xpath("count(/*/ds:Signature) > 0", namespaces=NS)),
    )


def assert_read_as_expected(core: dcc.DccCoreData, expected: Expected) -> None:
    assert core.schema_version == expected.schema_version
    assert core.unique_identifier == expected.unique_identifier
    assert core.begin_performance_date == expected.begin
    assert core.end_performance_date == expected.end
    assert core.issue_date == expected.issue_date
    assert core.laboratory_name == expected.laboratory_name
    assert core.laboratory_code == expected.laboratory_code
    assert core.replaces == expected.replaces
    assert core.change == expected.change
    assert core.previous_report == expected.previous_report
    assert core.has_signature == expected.has_signature


def reader(tmp_path: Path) -> DocumentReader:
    return DocumentReader(Settings(data_dir=tmp_path / "d", dcc_schemas=DCC_SCHEMAS))


def assert_statement_as_expected(fields: dict[str, Any], expected: Expected) -> None:
    """The statement a DCC calls for, from the independently read values."""
    assert fields["certificate_id"] == f"LAB-1/{expected.unique_identifier}"
    assert fields["issued"] == (expected.issue_date or expected.end).isoformat()
    assert fields["schema_version"] == expected.schema_version
    assert fields["schema_validated"] is True
    assert fields["kind"] == "dcc"
    public = dict(fields["fields"])
    signature = public.pop("document_signature", None)
    assert (signature is not None) == expected.has_signature
    wanted: dict[str, Any] = {
        "begin_performance_date": expected.begin.isoformat(),
        "end_performance_date": expected.end.isoformat(),
        "laboratory": expected.laboratory_name,
    }
    if expected.laboratory_code is not None:
        wanted["laboratory_code"] = expected.laboratory_code
    if expected.previous_report is not None:
        wanted["previous_report"] = expected.previous_report
    if expected.replaces is not None:
        wanted["change"] = expected.change
        assert fields["type"] == "certificate.amend"
        assert fields["supersedes"] == f"LAB-1/{expected.replaces}"
    else:
        assert fields["type"] == "certificate.issue"
        assert "supersedes" not in fields
    assert public == wanted


@pytest.mark.shared
@pytest.mark.parametrize("path", EXAMPLES, ids=name_of)
def test_every_example_is_read_as_xpath_reads_it(path: Path) -> None:
    data = path.read_bytes()
    if name_of(path) in REFUSED_BY_SCHEMA:
        version = etree.fromstring(data).get("schemaVersion")
        with pytest.raises(dcc.DccSchemaError, match=re.escape(f"PTB {version} schema")):
            dcc.read_dcc(data, dcc_schemas())
        return
    expected = xpath_values(data)
    assert_read_as_expected(dcc.read_dcc(data, dcc_schemas()), expected)
    core = dcc.read_dcc(data, None)  # the same without schemas, only not validated
    assert_read_as_expected(core, expected)
    assert (core.schema_validated, dcc.read_dcc(data, dcc_schemas()).schema_validated) == (
        False,
        True,
    )


@pytest.mark.shared
@pytest.mark.parametrize("path", EXAMPLES, ids=name_of)
def test_every_example_gives_its_statement(path: Path, tmp_path: Path) -> None:
    data = path.read_bytes()
    name = name_of(path)
    if name in REFUSED_BY_SCHEMA:
        with pytest.raises(QILedgerError) as caught:
            reader(tmp_path).statement(data, "LAB-1", NOW)
        assert caught.value.code == "schema_invalid"
        return
    if name in REFUSED_SIGNATURES:  # refused without a trust store too
        with pytest.raises(DocumentSignatureError, match=REFUSED_SIGNATURES[name]):
            reader(tmp_path).statement(data, "LAB-1", NOW)
        return
    derived = reader(tmp_path).statement(data, "LAB-1", NOW)
    assert derived.media_type == DCC_MEDIA_TYPE
    assert_statement_as_expected(derived.fields, xpath_values(data))


@pytest.mark.shared
@pytest.mark.parametrize("path", sorted(DEMO.glob("*.xml")), ids=lambda p: p.name)
def test_the_demo_dccs_are_read_and_stated_as_xpath_reads_them(path: Path, tmp_path: Path) -> None:
    """The demo DCCs hold what the shared examples lack: an issueDate, a
    laboratory code and (the amended one) a reportAmendedSubstituted."""
    data = path.read_bytes()
    expected = xpath_values(data)
    assert expected.issue_date is not None
    assert expected.laboratory_code is not None
    assert_read_as_expected(dcc.read_dcc(data, dcc_schemas()), expected)
    assert_statement_as_expected(reader(tmp_path).statement(data, "LAB-1", NOW).fields, expected)


# --- variants with the fields the examples lack ---------------------------------------

identifiers = (
    st.text(
        alphabet=st.characters(codec="ascii", categories=("L", "N")) | st.sampled_from("-_./ "),
        min_size=1,
        max_size=40,
    )
    .map(str.strip)
    .filter(bool)
)
dates = st.dates(min_value=date(1990, 1, 1), max_value=date(2099, 12, 31))


def variant(
    issue: date | None,
    code: str | None,
    replaced: tuple[str, str] | None,
    previous: str | None,
) -> bytes:
    """valid.xml with these coreData and laboratory elements, in schema order."""
    core = b""
    if issue is not None:
        core += b"<dcc:issueDate>%s</dcc:issueDate>" % issue.isoformat().encode()
    if replaced is not None:
        core += (
            b"<dcc:reportAmendedSubstituted><dcc:typeOfChange>%s</dcc:typeOfChange>"
            b"<dcc:replacedUniqueIdentifier>%s</dcc:replacedUniqueIdentifier>"
            b"</dcc:reportAmendedSubstituted>" % (replaced[1].encode(), replaced[0].encode())
        )
    if previous is not None:
        core += (
            b"<dcc:previousReport><dcc:referral><dcc:content>Earlier report</dcc:content>"
            b"</dcc:referral><dcc:referralID>%s</dcc:referralID><dcc:procedure>SHA256"
            b"</dcc:procedure><dcc:value>00</dcc:value></dcc:previousReport>" % previous.encode()
        )
    data = valid().replace(b"</dcc:coreData>", core + b"</dcc:coreData>", 1)
    if code is not None:
        data = data.replace(
            b"<dcc:calibrationLaboratory>",
            b"<dcc:calibrationLaboratory><dcc:calibrationLaboratoryCode>%s"
            b"</dcc:calibrationLaboratoryCode>" % code.encode(),
            1,
        )
    return data


@pytest.mark.shared
@settings(max_examples=40)
@given(
    issue=st.none() | dates,
    code=st.none() | identifiers,
    replaced=st.none() | st.tuples(identifiers, st.sampled_from(["amended", "substituted"])),
    previous=st.none() | identifiers,
)
def test_variants_are_read_and_stated_as_xpath_reads_them(
    issue: date | None,
    code: str | None,
    replaced: tuple[str, str] | None,
    previous: str | None,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    data = variant(issue, code, replaced, previous)
    expected = xpath_values(data)
    assert (expected.issue_date, expected.laboratory_code, expected.previous_report) == (
        issue,
        code,
        previous,
    )
    core = dcc.read_dcc(data, dcc_schemas())  # still schema-valid
    assert_read_as_expected(core, expected)
    fields = reader(tmp_path_factory.mktemp("r")).statement(data, "LAB-1", NOW).fields
    assert_statement_as_expected(fields, expected)
    # The public fields (laboratory_code included) pass the statement check.
    statement.validate({**fields, "signed_at": format_time(NOW)})


@pytest.mark.shared
def test_laboratory_code_is_a_public_field(tmp_path: Path) -> None:
    data = variant(None, "CNAS L0001", None, None)
    fields = reader(tmp_path).statement(data, "LAB-1", NOW).fields
    assert fields["fields"]["laboratory_code"] == "CNAS L0001"
    assert fields["fields"]["laboratory"] == xpath_values(data).laboratory_name
    without = reader(tmp_path).statement(valid(), "LAB-1", NOW).fields
    assert "laboratory_code" not in without["fields"]


@pytest.mark.shared
@pytest.mark.parametrize(
    ("make", "words"),
    [
        (
            lambda: variant(None, "L" * 129, None, None),
            "calibrationLaboratoryCode is 129 characters",
        ),
        (lambda: valid().replace(b">1234<", b">%s<" % (b"D" * 200), 1), "uniqueIdentifier is 200"),
        (
            lambda: variant(None, None, ("R" * 129, "amended"), None),
            "replacedUniqueIdentifier is 129",
        ),
    ],
    ids=["laboratory-code", "unique-identifier", "replaced-identifier"],
)
def test_identifiers_longer_than_a_certificate_number_are_refused(
    make: Callable[[], bytes], words: str
) -> None:
    data = make()
    assert data != valid()
    for with_schemas in (dcc_schemas(), None):
        with pytest.raises(MalformedError, match=words):
            dcc.read_dcc(data, with_schemas)


# --- encodings ------------------------------------------------------------------------

_DECLARATION = re.compile(r"^<\?xml[^>]*\?>")


def reencoded(data: bytes, how: str) -> bytes:
    """``data`` (UTF-8) as UTF-8 with a byte-order mark or as UTF-16 with a
    byte-order mark (``utf-16-le``/``utf-16-be``) or without one
    (``utf-16-le-nobom``), declaring ``encoding="UTF-16"``."""
    if how == "utf-8-bom":
        return b"\xef\xbb\xbf" + data
    text = '<?xml version="1.0" encoding="UTF-16"?>' + _DECLARATION.sub("", data.decode("utf-8"))
    codec = how.removesuffix("-nobom")
    bom = (
        b""
        if how.endswith("-nobom")
        else {"utf-16-le": b"\xff\xfe", "utf-16-be": b"\xfe\xff"}[codec]
    )
    return bom + text.encode(codec)


ENCODINGS = ["utf-8-bom", "utf-16-le", "utf-16-be", "utf-16-le-nobom"]


def outcome(derive: Any) -> Any:
    try:
        fields = dict(derive().fields)
    except QILedgerError as exc:
        return exc.code
    fields.pop("document_sha256")  # the bytes differ, nothing else may
    return fields


@pytest.mark.shared
@pytest.mark.parametrize("how", ENCODINGS)
@pytest.mark.parametrize("path", EXAMPLES, ids=name_of)
def test_a_reencoded_example_gives_the_same_statement(path: Path, how: str, tmp_path: Path) -> None:
    data = path.read_bytes()
    other = reencoded(data, how)
    assert media_type_of(other) == DCC_MEDIA_TYPE
    original = outcome(lambda: reader(tmp_path).statement(data, "LAB-1", NOW))
    assert outcome(lambda: reader(tmp_path).statement(other, "LAB-1", NOW)) == original
    expected = "schema_invalid" if name_of(path) in REFUSED_BY_SCHEMA else None
    if name_of(path) in REFUSED_SIGNATURES:
        expected = "document_signature_invalid"
    assert original == expected or isinstance(original, dict)


ENTITY_DCC = (
    '<?xml version="1.0" encoding="{encoding}"?>\n'
    '<!DOCTYPE dcc:digitalCalibrationCertificate [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n'
    '<dcc:digitalCalibrationCertificate xmlns:dcc="https://ptb.de/dcc" schemaVersion="3.3.0">'
    "&x;</dcc:digitalCalibrationCertificate>"
)


@pytest.mark.parametrize(
    ("encoding", "codec", "bom"),
    [
        ("UTF-16", "utf-16-le", b"\xff\xfe"),
        ("UTF-16", "utf-16-be", b"\xfe\xff"),
        ("UTF-16", "utf-16-le", b""),
        ("UTF-8", "utf-8", b"\xef\xbb\xbf"),
        ("ISO-8859-1", "iso-8859-1", b""),
        ("UTF-7", "utf-7", b""),
    ],
)
@pytest.mark.shared
def test_a_doctype_is_refused_in_every_encoding(encoding: str, codec: str, bom: bytes) -> None:
    text = ENTITY_DCC.format(encoding=encoding)
    if codec == "utf-7":  # "<" written as "+ADw-", as UTF-7 may
        head, rest = text.split("\n", 1)
        data = head.encode("ascii") + b"\n" + rest.encode("ascii").replace(b"<", b"+ADw-")
        assert data.decode("utf-7") == text
    else:
        data = bom + text.encode(codec)
    if codec != "utf-8" and codec != "iso-8859-1":
        assert b"<!DOCTYPE" not in data  # a byte search would not see it
    for with_schemas in (dcc_schemas(), None):
        with pytest.raises(MalformedError, match="DOCTYPE") as caught:
            dcc.read_dcc(data, with_schemas)
        assert caught.value.code == "malformed"


@pytest.mark.shared
def test_a_utf16_dcc_without_doctype_still_checks_entities() -> None:
    """An entity reference without a declaration is not well-formed in any encoding."""
    data = reencoded(valid().replace(b">1234<", b">&x;<", 1), "utf-16-le")
    with pytest.raises(MalformedError, match="Entity 'x' not defined"):
        dcc.read_dcc(data, None)


@pytest.mark.parametrize(
    "data",
    [
        b"\x00\x00\xfe\xff" + "<x/>".encode("utf-32-be"),  # UTF-32: not supported
        b'<?xml version="1.0" encoding="zlib"?><x/>',  # not a text encoding
        b'<?xml version="1.0" encoding="no-such-codec"?><x/>',
        b'<?xml version="1.0" encoding="UTF-16"?><x/>',  # says UTF-16, is not
        b"\xff\xfe" + b"\x00\xd8",  # a lone surrogate
    ],
)
def test_unsupported_or_false_encodings_are_malformed(data: bytes) -> None:
    with pytest.raises(MalformedError):
        dcc.read_dcc(data, None)


@pytest.mark.shared
def test_other_declared_encodings_are_read() -> None:
    text = valid().decode("utf-8").replace(">1234<", ">1234-\u00e9t\u00e9<", 1)
    text = '<?xml version="1.0" encoding="ISO-8859-1"?>' + _DECLARATION.sub("", text)
    data = text.encode("iso-8859-1", errors="xmlcharrefreplace")
    assert b"\xe9t\xe9" in data
    assert dcc.read_dcc(data, dcc_schemas()).unique_identifier == "1234-\u00e9t\u00e9"
