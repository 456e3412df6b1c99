"""RFC 8785 (JCS) canonical JSON: the RFC's examples, the reference package as an
oracle for both encoder paths, and the strict parsers' refusals."""

from __future__ import annotations

import contextlib
import json
import struct
import sys
from typing import Any

import pytest
import rfc8785
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.verifier_helpers import json_values, mutated, only_our_errors
from verifier import jcs
from verifier.errors import MalformedError, NonCanonicalError

# --- RFC 8785 examples ----------------------------------------------------------------


def test_rfc8785_sorting_example() -> None:
    """§3.2.3: keys sort by UTF-16 code units, not by code points or UTF-8 bytes."""
    value = {
        "\u20ac": "Euro Sign",
        "\r": "Carriage Return",
        "\ufb33": "Hebrew Letter Dalet With Dagesh",
        "1": "One",
        "\U0001f600": "Emoji: Grinning Face",
        "\u0080": "Control",
        "\u00f6": "Latin Small Letter O With Diaeresis",
    }
    expected = (
        '{"\\r":"Carriage Return","1":"One","\u0080":"Control",'
        '"\u00f6":"Latin Small Letter O With Diaeresis","\u20ac":"Euro Sign",'
        '"\U0001f600":"Emoji: Grinning Face","\ufb33":"Hebrew Letter Dalet With Dagesh"}'
    ).encode()
    assert jcs.canonical_bytes(value) == expected
    # The same object written with JSON escapes (as in the RFC) parses to it.
    escaped = (
        b'{"\\u20ac":"Euro Sign","\\r":"Carriage Return",'
        b'"\\ufb33":"Hebrew Letter Dalet With Dagesh","1":"One",'
        b'"\\ud83d\\ude00":"Emoji: Grinning Face","\\u0080":"Control",'
        b'"\\u00f6":"Latin Small Letter O With Diaeresis"}'
    )
    assert jcs.parse_json(escaped) == value
    assert jcs.parse_canonical(expected) == value
    with pytest.raises(NonCanonicalError):
        jcs.parse_canonical(escaped)


def test_rfc8785_main_example() -> None:
    """§3.2.4 (Figure 1 → Figure 3), byte for byte."""
    source = (
        b"{\n"
        b'  "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],\n'
        b'  "string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/",\n'
        b'  "literals": [null, true, false]\n'
        b"}"
    )
    expected = bytes.fromhex(
        "7b 22 6c 69 74 65 72 61 6c 73 22 3a 5b 6e 75 6c 6c 2c 74 72"
        "75 65 2c 66 61 6c 73 65 5d 2c 22 6e 75 6d 62 65 72 73 22 3a"
        "5b 33 33 33 33 33 33 33 33 33 2e 33 33 33 33 33 33 33 2c 31"
        "65 2b 33 30 2c 34 2e 35 2c 30 2e 30 30 32 2c 31 65 2d 32 37"
        "5d 2c 22 73 74 72 69 6e 67 22 3a 22 e2 82 ac 24 5c 75 30 30"
        "30 66 5c 6e 41 27 42 5c 22 5c 5c 5c 5c 5c 22 2f 22 7d"
    )
    assert expected == (
        b'{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
        b'"string":"\xe2\x82\xac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    )
    assert jcs.canonical_bytes(jcs.parse_json(source)) == expected
    assert jcs.parse_canonical(expected) == jcs.parse_json(source)
    with pytest.raises(NonCanonicalError):
        jcs.parse_canonical(source)


# RFC 8785 Appendix B: IEEE 754 bit patterns and their canonical text.
NUMBERS = [
    ("0000000000000000", "0"),
    ("8000000000000000", "0"),
    ("0000000000000001", "5e-324"),
    ("8000000000000001", "-5e-324"),
    ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("ffefffffffffffff", "-1.7976931348623157e+308"),
    ("4340000000000000", "9007199254740992"),
    ("c340000000000000", "-9007199254740992"),
    ("4430000000000000", "295147905179352830000"),
    ("44b52d02c7e14af5", "9.999999999999997e+22"),
    ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"),
    ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"),
    ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
    ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"),
    ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"),
    ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"),
    ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),
]


def _double(bits: str) -> float:
    value: float = struct.unpack(">d", bytes.fromhex(bits))[0]
    return value


@pytest.mark.parametrize(("bits", "text"), NUMBERS)
def test_rfc8785_number_examples(bits: str, text: str) -> None:
    assert jcs.canonical_bytes(_double(bits)) == text.encode()
    assert jcs.canonical_bytes([_double(bits)]) == f"[{text}]".encode()


@pytest.mark.parametrize("bits", ["7fffffffffffffff", "7ff0000000000000", "fff0000000000000"])
def test_nan_and_infinity_have_no_canonical_form(bits: str) -> None:
    with pytest.raises(MalformedError):
        jcs.canonical_bytes(_double(bits))
    with pytest.raises(MalformedError):
        jcs.canonical_bytes({"a": [_double(bits)]})


def test_integers_and_strings() -> None:
    assert jcs.canonical_bytes(jcs.MAX_SAFE_INTEGER) == b"9007199254740991"
    assert jcs.canonical_bytes(-jcs.MAX_SAFE_INTEGER) == b"-9007199254740991"
    assert jcs.canonical_bytes({"b": [True, False, None], "a": ""}) == (
        b'{"a":"","b":[true,false,null]}'
    )
    # ECMAScript escaping: short forms, \u00XX for other controls, DEL and U+2028 raw.
    assert jcs.canonical_bytes('\b\t\n\f\r\x00\x1f\x7f\u2028"\\/') == (
        b'"\\b\\t\\n\\f\\r\\u0000\\u001f\x7f\xe2\x80\xa8\\"\\\\/"'
    )
    for bad in (2**53, -(2**53), 10**30):
        with pytest.raises(MalformedError):
            jcs.canonical_bytes(bad)
        with pytest.raises(MalformedError):
            jcs.canonical_bytes({"n": bad})


@pytest.mark.parametrize(
    "value", ["\ud800", {"\udfff": 1}, ["x\udc00"], {"k": "\ud83d"}, b"bytes", {1: "x"}, {1.5}]
)
def test_values_without_a_canonical_form(value: object) -> None:
    with pytest.raises(MalformedError):
        jcs.canonical_bytes(value)


# --- the reference package as an oracle ------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(json_values)
def test_canonical_bytes_matches_the_reference(value: Any) -> None:
    assert jcs.canonical_bytes(value) == rfc8785.dumps(value)


ascii_keys = st.text(st.characters(max_codepoint=0x7F), max_size=8)
fast_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-jcs.MAX_SAFE_INTEGER, jcs.MAX_SAFE_INTEGER)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(ascii_keys, children, max_size=4)
    ),
    max_leaves=15,
)


@settings(max_examples=400, deadline=None)
@given(fast_values)
def test_fast_path_agrees_with_the_fallback(value: Any) -> None:
    assert jcs._fast_path_applies(value)
    fast = jcs._FAST_ENCODER.encode(value).encode("utf-8")
    assert fast == rfc8785.dumps(value)
    assert jcs.canonical_bytes(value) == fast


def test_fast_path_is_refused_where_it_would_differ() -> None:
    assert not jcs._fast_path_applies({"\u00e9": 1})
    assert not jcs._fast_path_applies([{"a": {"\u20ac": 1}}])
    assert not jcs._fast_path_applies(1.5)
    assert not jcs._fast_path_applies(2**53)
    assert not jcs._fast_path_applies((1, 2))
    # Non-ASCII keys sort by UTF-16 units, which code-point order gets wrong:
    value = {"\U0001f600": 1, "\ufb33": 2}
    assert jcs.canonical_bytes(value) == rfc8785.dumps(value)
    assert jcs.canonical_bytes(value) != jcs._FAST_ENCODER.encode(value).encode()


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_parse_canonical_round_trips(value: Any) -> None:
    data = jcs.canonical_bytes(value)
    try:
        parsed = jcs.parse_canonical(data)
    except MalformedError:
        # The one legitimate refusal: an integral float of 2**53 or more is written as
        # an integer, and integers beyond I-JSON's range are refused on input.
        assert _has_big_integral_float(value)
        return
    assert parsed == value
    assert jcs.canonical_bytes(parsed) == data
    assert jcs.parse_json(data) == value


def _has_big_integral_float(value: Any) -> bool:
    if isinstance(value, float):
        return value.is_integer() and abs(value) > jcs.MAX_SAFE_INTEGER and abs(value) < 1e21
    if isinstance(value, list):
        return any(_has_big_integral_float(v) for v in value)
    if isinstance(value, dict):
        return any(_has_big_integral_float(v) for v in value.values())
    return False


def test_big_integers_are_refused_on_input() -> None:
    """Integers beyond ±(2**53-1) lose precision in I-JSON consumers: refused."""
    with pytest.raises(MalformedError):
        jcs.parse_canonical(b"9007199254740992")
    with pytest.raises(MalformedError):
        jcs.parse_canonical(b"10000000000000000")  # JCS text of the double 1e16
    assert jcs.parse_canonical(b"9007199254740991") == jcs.MAX_SAFE_INTEGER


# --- strict parsing --------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b'{"a": 1}',  # whitespace
        b' {"a":1}',
        b'{"a":1}\n',
        b'{"b":1,"a":2}',  # key order
        b'{"a":1,"a":1}',  # duplicate key
        b'"\\u0041"',  # non-minimal escapes
        b'"\\/"',
        b'"\\u00e9"',
        b'"\\u000A"',
        b'"\\u000a"',
        b'"\\u001F"',
        b'"\\ud83d\\ude00"',
        b"1.0",  # number forms
        b"1e2",
        b"1E+30",
        b"-0",
        b"0.10",
        b"[1,2 ]",
    ],
)
def test_parse_canonical_refuses_non_canonical_json(data: bytes) -> None:
    with pytest.raises(NonCanonicalError):
        jcs.parse_canonical(data)


@pytest.mark.parametrize(
    "data",
    [
        b'{"a":1,"a":2}',
        b'{"a":{"x":1,"x":1}}',
        b'[{"":1,"":1}]',
        b"NaN",
        b"[Infinity]",
        b'{"a":-Infinity}',
        b"\xef\xbb\xbf{}",  # UTF-8 BOM
        b"\xff",
        b'"\xc3"',
        b'"\xed\xa0\x80"',  # UTF-8-encoded surrogate
        b'"\xc0\xaf"',  # overlong
        b"",
        b"{",
        b"[1,]",
        b"{'a':1}",
        b'"\x01"',  # raw control character
        b"[" * 100_000,
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
        b"1" * 5000,  # beyond Python's int-parsing digit limit
        b"-" + b"9" * 10_000,
        b"[" + b"1" * 4301 + b"]",
    ],
)
def test_parse_json_refuses_hostile_input(data: bytes) -> None:
    with pytest.raises(MalformedError):
        jcs.parse_json(data)
    with pytest.raises(MalformedError):
        jcs.parse_canonical(data)


def test_parse_json_duplicate_keys_is_not_last_wins() -> None:
    with pytest.raises(MalformedError, match="duplicate"):
        jcs.parse_json(b'{"keyid":"a","sig":"b","keyid":"c"}')
    assert jcs.parse_json(b'{"a":1,"b":{"a":2}}') == {"a": 1, "b": {"a": 2}}


def _nested(depth: int, inner: bytes) -> bytes:
    return b"[" * depth + inner + b"]" * depth


@pytest.mark.parametrize("inner", [b"1", b"1.5", b'{"\xc3\xa9":1}', b'{"a":1}'])
def test_every_nesting_depth_parses_or_is_refused(inner: bytes) -> None:
    """Around the recursion limit, the parser and the two encoder paths give out at
    different depths; every depth must give a value or our error."""
    limit = sys.getrecursionlimit()
    for depth in range(limit // 2, limit + 20):
        data = _nested(depth, inner)
        for parse in (jcs.parse_json, jcs.parse_canonical):
            only_our_errors(parse, data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_give_a_value_or_our_error(data: bytes) -> None:
    only_our_errors(jcs.parse_json, data)
    only_our_errors(jcs.parse_canonical, data)


CANONICAL_SAMPLE = jcs.canonical_bytes(
    {
        "a": [1, -2, 3.25, True, None, "x\u00e9\U0001f600\n"],
        "b": {"c": "", "d": [], "e": {}},
        "\u00e9": 1e21,
    }
)


@settings(max_examples=400, deadline=None)
@given(mutated(CANONICAL_SAMPLE))
def test_mutated_json_gives_a_value_or_our_error(data: bytes) -> None:
    parsed = only_our_errors(jcs.parse_canonical, data)
    if parsed is not None or data == b"null":
        # Whatever parse_canonical accepts is exactly canonical.
        assert jcs.canonical_bytes(parsed) == data
    only_our_errors(jcs.parse_json, data)


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_non_canonical_spellings_of_values_are_refused(value: Any) -> None:
    canonical = jcs.canonical_bytes(value)
    spaced = json.dumps(value, ensure_ascii=True, indent=1).encode()
    if spaced != canonical:
        with pytest.raises(MalformedError):
            jcs.parse_canonical(spaced)


def _reference_outcome(data: bytes) -> str:
    """The definition: accepted exactly when the reference package writes the value
    these bytes decode to as these very bytes."""
    try:
        value = jcs.parse_json(data)
        if rfc8785.dumps(value) != data:
            return "refused"
    except (MalformedError, rfc8785.CanonicalizationError, ValueError, TypeError):
        return "refused"
    return "accepted"


def _outcome(data: bytes) -> str:
    try:
        jcs.parse_canonical(data)
    except MalformedError:
        return "refused"
    return "accepted"


# Keys and strings around the code points where code-point order and UTF-16 order part.
tricky_text = st.text(
    st.sampled_from(["a", "\u00e9", "\ud7ff", "\ue000", "\ufb33", "\uffff", "\U0001f600"])
    | st.characters(),
    max_size=6,
)
tricky_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**60), 2**60)
    | st.floats(allow_nan=False, allow_infinity=False)
    | tricky_text,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(tricky_text, children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=600)
@given(tricky_values)
@example({"\U0001f600": 1, "\ufb33": 2})  # the two orders differ
@example([{"\ue000": 0, "\U00010000": [1.5, 2**53]}])
@example({"a": 1e16, "b": -0.0, "c": 2**53 + 1})
def test_parse_canonical_accepts_exactly_what_the_reference_writes(value: Any) -> None:
    # The stdlib's own sorted, compact text is the candidate the fast check compares
    # against: it must be accepted only where it is also JCS (floats, big integers,
    # keys from U+E000 up and lone surrogates are where the two differ).
    candidates = []
    for ascii_only in (False, True):
        try:
            text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=ascii_only)
            candidates.append(text.encode("utf-8"))
        except (UnicodeEncodeError, ValueError):
            pass
    with contextlib.suppress(rfc8785.CanonicalizationError, ValueError, TypeError):
        candidates.append(rfc8785.dumps(value))
    for data in candidates:
        assert _outcome(data) == _reference_outcome(data), data
