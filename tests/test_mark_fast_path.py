"""The mark's fast paths (fixed bytes compared, for the layout sign() writes) agree
with the general item-by-item reader on every input: whatever a fast path accepts,
the reader reads the same; what it declines goes to the reader. Inputs are marks
mutated byte by byte and COSE/claims built from random heads around the layout."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.verifier_helpers import key_from
from verifier import mark
from verifier.errors import MalformedError
from verifier.note import NoteVerifier

LOG_KEY = key_from("mark fast path log")
LOG = NoteVerifier.for_key("registry.example.org/log", LOG_KEY.public_key)
PROTECTED = mark._protected_header(LOG.key_id)


def raw_mark(claims: mark.MarkClaims) -> bytes:
    return mark._b32decode(mark.sign(claims, LOG_KEY, LOG))


def general_split(raw: bytes) -> tuple[bytes, bytes, bytes] | None:
    try:
        return mark._split_cose_sign1(raw)
    except MalformedError:
        return None


def general_claims(payload: bytes) -> mark.MarkClaims | None:
    try:
        return mark._decode_claims_item_by_item(payload)
    except MalformedError:
        return None


def assert_split_agrees(raw: bytes) -> None:
    fast = mark._split_as_written(raw, PROTECTED)
    if fast is not None:
        assert general_split(raw) == (PROTECTED, *fast)


def assert_claims_agree(payload: bytes) -> None:
    fast = mark._claims_as_written(payload)
    if fast is not None:
        assert general_claims(payload) == fast


CLAIMS = st.builds(
    mark.MarkClaims,
    st.text(min_size=1, max_size=300).filter(lambda s: max(s) < "\ud800" or min(s) > "\udfff"),
    st.binary(min_size=32, max_size=32),
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**64 - 1),
)


def mutate(data: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    """Apply (kind, position, byte) edits: 0 replace, 1 insert, 2 delete, 3 truncate."""
    out = bytearray(data)
    for kind, position, value in edits:
        at = position % (len(out) + 1)
        if kind == 0 and at < len(out):
            out[at] = value
        elif kind == 1:
            out.insert(at, value)
        elif kind == 2 and at < len(out):
            del out[at]
        elif kind == 3:
            del out[at:]
    return bytes(out)


EDITS = st.lists(
    st.tuples(st.integers(0, 3), st.integers(0, 2000), st.integers(0, 255)), max_size=4
)


@settings(max_examples=500)
@given(CLAIMS, EDITS)
def test_the_fast_split_agrees_with_the_reader_on_mutated_marks(
    claims: mark.MarkClaims, edits: list[tuple[int, int, int]]
) -> None:
    raw = raw_mark(claims)
    assert mark._split_as_written(raw, PROTECTED) is not None  # a real mark takes it
    assert_split_agrees(mutate(raw, edits))


@settings(max_examples=500)
@given(CLAIMS, EDITS)
def test_the_fast_claims_agree_with_the_reader_on_mutated_payloads(
    claims: mark.MarkClaims, edits: list[tuple[int, int, int]]
) -> None:
    payload = mark.encode_claims(claims)
    assert mark._claims_as_written(payload) == claims  # a real payload takes it
    assert_claims_agree(mutate(payload, edits))


HEADS = st.sampled_from(
    [
        *(b"", b"\x00", b"\x17", b"\x18", b"\x19", b"\x1a", b"\x1b", b"\x1f", b"\x40"),
        *(b"\x57", b"\x58", b"\x59", b"\x5a", b"\x5f", b"\x60", b"\x77", b"\x78", b"\x79"),
        b"\x7f",
    ]
) | st.binary(max_size=3)


@settings(max_examples=1000)
@given(HEADS, st.binary(max_size=3), st.binary(max_size=300), HEADS, st.binary(max_size=70))
def test_the_fast_split_agrees_on_built_envelopes(
    payload_head: bytes, length: bytes, payload: bytes, signature_head: bytes, rest: bytes
) -> None:
    start = mark._COSE_SIGN1_START + mark._bstr(PROTECTED) + mark._EMPTY_MAP
    assert_split_agrees(start + payload_head + length + payload + signature_head + rest)
    assert_split_agrees(start + mark._bstr(payload) + b"\x58\x40" + rest)


UINTS = st.integers(0, 2**64 - 1).map(mark._int) | HEADS.map(lambda h: h + b"\x00" * 8)


@settings(max_examples=1000)
@given(HEADS, st.binary(max_size=40), UINTS, st.binary(max_size=34), UINTS, st.binary(max_size=3))
def test_the_fast_claims_agree_on_built_payloads(
    sub_head: bytes, sub: bytes, iat: bytes, digest: bytes, index: bytes, tail: bytes
) -> None:
    for head in (sub_head, mark._head(3, len(sub))):
        payload = mark._CLAIMS_START + head + sub + mark._IAT_KEY + iat + mark._DIGEST_KEY + digest
        assert_claims_agree(payload + mark._INDEX_KEY + index + tail)
        assert_claims_agree(payload + mark._INDEX_KEY + index)


def test_both_paths_refuse_what_the_reader_refuses_in_verify() -> None:
    claims = mark.MarkClaims("LAB-1/DCC-1", hashlib.sha256(b"doc").digest(), 7, 1795600000)
    payload = mark.encode_claims(claims)
    for bad in (payload[:-1], payload + b"\x00", payload.replace(b"\x6bLAB", b"\x6b\xffAB")):
        assert mark._claims_as_written(bad) is None
        assert general_claims(bad) is None
