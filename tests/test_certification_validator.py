"""The compiled certification schema validator never accepts what the reference
validator (jsonschema, Draft 2020-12 with its format checker) refuses, and the
first error a caller hears is the reference's: hypothesis over records that
are valid, valid but at every bound, and hostile near each rule of the schema."""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonschema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from registry.demo import DEMO_DOCUMENTS
from verifier import certification

TEMPLATE: dict[str, Any] = json.loads((DEMO_DOCUMENTS / "demo-certification.json").read_bytes())
REFERENCE = jsonschema.Draft202012Validator(
    certification.schema(), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
)


def compiled_accepts(value: Any) -> bool:
    try:
        return bool(certification._compiled_validator().is_valid(value))
    except (ValueError, TypeError, OverflowError):
        return False


def error_key(error: jsonschema.ValidationError | None) -> tuple[Any, ...] | None:
    if error is None:
        return None
    return (list(error.absolute_path), error.validator, certification.schema_error_message(error))


def check(value: Any) -> None:
    reference_first = next(iter(REFERENCE.iter_errors(value)), None)
    if compiled_accepts(value):
        assert reference_first is None, certification.schema_error_message(reference_first)
    assert error_key(certification.first_schema_error(value)) == error_key(reference_first)


# Strings near each rule: the schema's patterns ("^[A-Z]{2}$", the identifier
# pattern, no control characters), lengths at and past each bound, dates that
# are not dates, digits that are not ASCII, a final newline (Python's "$" matches
# before it, ECMA-262's does not), lone surrogates (no Rust string holds one).
EDGE_TEXT = st.sampled_from(
    [
        "",
        "A",
        "CN",
        "cn",
        "CN\n",
        "C\n",
        "CNX",
        "C1",
        "ĀB",
        "BENCH-CB-1",
        "B\n",
        "-B",
        "a.b_c-d",
        "x" * 63,
        "x" * 64,
        "x" * 65,
        "x" * 100,
        "x" * 101,
        "x" * 128,
        "x" * 129,
        "😀" * 128,
        "😀" * 129,
        "x" * 300,
        "x" * 301,
        "abc\n",
        "abc\r",
        "a\x00b",
        "a\x7fb",
        "a\x1fb",
        "\ud800",
        "a\udfff",
        "2020-01-01",
        "2020-01-01\n",
        "2020-02-29",
        "2021-02-29",
        "2020-13-01",
        "2020-00-10",
        "2020-1-01",
        "20200101",
        "２０２０-01-01",
        "2020-W01-1",
        "9999-12-31",
        "0000-01-01",
        "2020-01-01T00:00:00Z",
        "management_system",
        "product",
        "person",
        "Active",
        "Suspended",
        "Withdrawn",
        "Expired",
        "active",
    ]
)
JSON_VALUE = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | EDGE_TEXT
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)
ANY_VALUE = EDGE_TEXT | JSON_VALUE

PATHS: list[tuple[str, ...]] = [
    ("certificate_number",),
    ("certified_entity",),
    ("certified_entity", "name"),
    ("certified_entity", "country"),
    ("certified_entity", "identifier"),
    ("certified_entity", "sites"),
    ("certified_entity", "sites", "0"),
    ("certified_entity", "sites", "0", "address"),
    ("certified_entity", "sites", "0", "country"),
    ("certified_entity", "sites", "0", "name"),
    ("certified_entity", "sites", "0", "scope"),
    ("scope",),
    ("standard",),
    ("scheme",),
    ("certification_body",),
    ("certification_body", "id"),
    ("certification_body", "name"),
    ("accreditation_body",),
    ("accreditation_body", "id"),
    ("accreditation_body", "name"),
    ("accreditation_body", "accreditation_number"),
    ("original_issue_date",),
    ("issue_date",),
    ("expiry_date",),
    ("status",),
    ("unexpected",),
    ("certified_entity", "unexpected"),
]


def with_site(record: dict[str, Any]) -> dict[str, Any]:
    record["certified_entity"].setdefault("sites", [{"address": "1 Example Road", "country": "CN"}])
    return record


def _child(parent: Any, step: str) -> Any:
    if isinstance(parent, dict):
        return parent.get(step)
    if isinstance(parent, list) and step.isdigit() and int(step) < len(parent):
        return parent[int(step)]
    return None


def mutated(record: dict[str, Any], path: tuple[str, ...], value: Any, delete: bool) -> Any:
    """``record`` with the member at ``path`` replaced (or deleted), if its parent exists."""
    parent: Any = record
    for step in path[:-1]:
        parent = _child(parent, step)
    last = path[-1]
    if isinstance(parent, dict):
        if delete:
            parent.pop(last, None)
        else:
            parent[last] = value
    elif isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        parent[int(last)] = value
    return record


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(st.sampled_from(PATHS), ANY_VALUE, st.booleans()), min_size=1, max_size=3)
)
def test_hostile_records_get_the_reference_verdict_and_first_error(
    changes: list[tuple[tuple[str, ...], Any, bool]],
) -> None:
    record = with_site(copy.deepcopy(TEMPLATE))
    for path, value, delete in changes:
        record = mutated(record, path, value, delete)
    check(record)


@given(st.one_of(JSON_VALUE, st.lists(JSON_VALUE, max_size=2)))
def test_documents_that_are_not_records_get_the_reference_verdict(value: Any) -> None:
    check(value)


BOUNDED_TEXT = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x2FFF, exclude_characters="\x7f"),
    min_size=1,
)
COUNTRY = st.from_regex(r"\A[A-Z]{2}\Z")
IDENTIFIER = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
DATE = st.dates().map(lambda d: d.isoformat()).filter(lambda s: len(s) == 10)
VALID_RECORDS = st.fixed_dictionaries(
    {
        "certificate_number": BOUNDED_TEXT.filter(lambda s: len(s) <= 128),
        "certified_entity": st.fixed_dictionaries(
            {"name": st.text(min_size=1, max_size=300), "country": COUNTRY},
            optional={
                "identifier": st.text(max_size=100),
                "sites": st.lists(
                    st.fixed_dictionaries(
                        {"address": st.text(min_size=1, max_size=500), "country": COUNTRY},
                        optional={"name": st.text(max_size=300), "scope": st.text(max_size=50)},
                    ),
                    max_size=3,
                ),
            },
        ),
        "scope": st.text(min_size=1, max_size=200),
        "standard": st.text(min_size=1, max_size=100),
        "scheme": st.sampled_from(["management_system", "product", "person"]),
        "certification_body": st.fixed_dictionaries(
            {"id": IDENTIFIER, "name": st.text(min_size=1, max_size=300)}
        ),
        "accreditation_body": st.fixed_dictionaries(
            {"id": IDENTIFIER},
            optional={"name": st.text(max_size=300), "accreditation_number": st.text(max_size=64)},
        ),
        "original_issue_date": DATE,
        "issue_date": DATE,
        "expiry_date": DATE,
        "status": st.sampled_from(["Active", "Suspended", "Withdrawn", "Expired"]),
    }
)


@given(VALID_RECORDS)
def test_valid_records_are_accepted_by_the_compiled_validator(record: dict[str, Any]) -> None:
    # The quick path is taken: the reference accepts them and so does the compiled one.
    assert REFERENCE.is_valid(record)
    assert compiled_accepts(record)
    check(record)


def test_a_final_newline_is_where_the_validators_differ() -> None:
    # Python's "$" matches before a final newline, ECMA-262's does not: the
    # reference accepts this number, the compiled validator refuses it, and the
    # reference's verdict (accept) is what a caller gets.
    record = copy.deepcopy(TEMPLATE)
    record["certificate_number"] = "BENCH-1\n"
    assert REFERENCE.is_valid(record)
    assert not compiled_accepts(record)
    assert certification.first_schema_error(record) is None
