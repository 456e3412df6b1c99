"""QR mark tokens: JWS (EdDSA) signed by the log key, checked by our verifier and
by an independent JOSE library (PyJWT) in both directions.

The expected wire form is written here from the documented format (the module
docstring of ``verifier.mark``): header ``{"alg":"EdDSA"}``; claims ``iss`` (log
origin), ``sub`` (certificate id), ``isr`` (issuer id), ``dig`` (base64url SHA-256
of the document), ``idx`` (log index), ``iat`` (seconds), as JCS bytes. Nothing
below takes the expected claims from ``MarkClaims.to_json``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import sys
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from tests.helpers import key_from
from verifier import mark
from verifier.encoding import b64url_encode
from verifier.errors import MalformedError, QILedgerError, SignatureError

LOG_KEY = key_from("log")
# The same Ed25519 key for PyJWT (key_from's seed is SHA-256 of the label).
LOG_KEY_FOR_PYJWT = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"log").digest())
LOG_JWK = jwt.PyJWK({"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(LOG_KEY.public_key.raw)})
ORIGIN = "registry.example.org/log"
CLAIMS = mark.MarkClaims(
    ORIGIN, "LAB-1/DCC-2026-0001", "LAB-1", hashlib.sha256(b"doc").digest(), 7, 1795600000
)

# The documented wire form of CLAIMS, written out by hand.
EXPECTED_HEADER = b'{"alg":"EdDSA"}'
EXPECTED_CLAIMS: dict[str, Any] = {
    "iss": "registry.example.org/log",
    "sub": "LAB-1/DCC-2026-0001",
    "isr": "LAB-1",
    "dig": "E51US4IbE-vqFPGw_hhXciLkFcKWbjo1EcQZYFUjIgI",  # base64url SHA-256 of b"doc"
    "idx": 7,
    "iat": 1795600000,
}
# JCS: keys sorted by code point, no whitespace.
EXPECTED_CLAIMS_BYTES = (
    b'{"dig":"E51US4IbE-vqFPGw_hhXciLkFcKWbjo1EcQZYFUjIgI","iat":1795600000,"idx":7,'
    b'"isr":"LAB-1","iss":"registry.example.org/log","sub":"LAB-1/DCC-2026-0001"}'
)

TOKEN = mark.sign(CLAIMS, LOG_KEY)


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _parts(token: str) -> list[str]:
    return token.split(".")


def _signed(header: bytes, claims: bytes) -> str:
    """A token over arbitrary header and claims bytes, signed by the log key."""
    head, body = b64url_encode(header), b64url_encode(claims)
    return f"{head}.{body}." + b64url_encode(LOG_KEY.sign(f"{head}.{body}".encode()))


def test_wire_form_is_the_documented_one() -> None:
    head, body, sig = _parts(TOKEN)
    assert _b64url_decode(head) == EXPECTED_HEADER
    assert _b64url_decode(body) == EXPECTED_CLAIMS_BYTES
    assert json.loads(EXPECTED_CLAIMS_BYTES) == EXPECTED_CLAIMS
    assert len(_b64url_decode(sig)) == 64
    assert len(TOKEN) < 320  # small enough for a QR code on a 25 mm mark


def test_pyjwt_verifies_our_token() -> None:
    assert jwt.get_unverified_header(TOKEN) == {"alg": "EdDSA"}
    decoded = jwt.decode(TOKEN, LOG_JWK, algorithms=["EdDSA"], options={"verify_iat": False})
    assert decoded == EXPECTED_CLAIMS


def test_we_verify_a_token_made_by_pyjwt() -> None:
    # headers={"typ": None} drops PyJWT's default "typ", leaving {"alg":"EdDSA"}.
    token = jwt.encode(EXPECTED_CLAIMS, LOG_KEY_FOR_PYJWT, algorithm="EdDSA", headers={"typ": None})
    assert _b64url_decode(_parts(token)[0]) == EXPECTED_HEADER
    assert mark.verify(token, LOG_KEY.public_key, ORIGIN) == CLAIMS


@given(
    st.text(max_size=40),
    st.text(max_size=20),
    st.binary(min_size=32, max_size=32),
    st.integers(min_value=0, max_value=2**53),
    st.integers(min_value=0, max_value=2**40),
)
def test_any_pyjwt_token_verifies_to_its_claims(
    certificate_id: str, issuer_id: str, digest: bytes, index: int, issued_at: int
) -> None:
    wire = {
        "iss": ORIGIN,
        "sub": certificate_id,
        "isr": issuer_id,
        "dig": b64url_encode(digest),
        "idx": index,
        "iat": issued_at,
    }
    token = jwt.encode(wire, LOG_KEY_FOR_PYJWT, algorithm="EdDSA", headers={"typ": None})
    expected = mark.MarkClaims(ORIGIN, certificate_id, issuer_id, digest, index, issued_at)
    assert mark.verify(token, LOG_KEY.public_key, ORIGIN) == expected


@pytest.mark.parametrize(
    "headers",
    [
        {},  # PyJWT's default: {"alg":"EdDSA","typ":"JWT"}
        {"typ": "JWT"},
        {"typ": None, "kid": "log"},
    ],
)
def test_pyjwt_token_with_another_header_is_refused(headers: dict[str, Any]) -> None:
    token = jwt.encode(EXPECTED_CLAIMS, LOG_KEY_FOR_PYJWT, algorithm="EdDSA", headers=headers)
    jwt.decode(token, LOG_JWK, algorithms=["EdDSA"], options={"verify_iat": False})  # valid JWS
    with pytest.raises(MalformedError, match=re.escape('not the fixed {"alg":"EdDSA"}')):
        mark.verify(token, LOG_KEY.public_key)


@pytest.mark.parametrize(
    "header",
    [
        b'{"alg": "EdDSA"}',  # the same JSON, other bytes
        b'{"alg":"EdDSA"} ',
        b'{"alg":"EdDSA","alg":"EdDSA"}',
        b'{"alg":"Ed\\u0044SA"}',
        b'["alg","EdDSA"]',
    ],
)
def test_a_signed_token_with_an_equivalent_header_is_refused(header: bytes) -> None:
    with pytest.raises(MalformedError, match="not the fixed"):
        mark.verify(_signed(header, EXPECTED_CLAIMS_BYTES), LOG_KEY.public_key)


def test_deeply_nested_header_is_refused_without_parsing() -> None:
    # Issue 10: a ~1,400-byte token whose header is "[[[[..." made json.loads raise
    # RecursionError out of verify.
    token = b64url_encode(b"[" * 1000) + "." + b64url_encode(b"{}") + "." + "A" * 86
    assert len(token) < mark.MAX_TOKEN_LENGTH
    with pytest.raises(MalformedError, match="not the fixed"):
        mark.verify(token, LOG_KEY.public_key)


def test_deeply_nested_signed_claims_are_malformed() -> None:
    token = _signed(EXPECTED_HEADER, b"[" * 1400)
    assert len(token) <= mark.MAX_TOKEN_LENGTH
    with pytest.raises(MalformedError, match="claims are not JSON"):
        mark.verify(token, LOG_KEY.public_key)


def test_claims_of_a_badly_signed_token_are_not_parsed() -> None:
    # Not JSON at all, but the signature fails first: SignatureError, not MalformedError.
    token = ".".join([b64url_encode(EXPECTED_HEADER), b64url_encode(b"[" * 1400), "A" * 86])
    with pytest.raises(SignatureError):
        mark.verify(token, LOG_KEY.public_key)


def _only_project_errors(token: object, *, signed: bool = False) -> None:
    # Hypothesis raises the recursion limit while it runs a test (to about 2,000,
    # more than any 2,048-character token can nest); check under the interpreter's
    # default instead, which is what a verifier process runs with.
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(1000)
    try:
        result = mark.verify(token, LOG_KEY.public_key)  # type: ignore[arg-type]
    except MalformedError:
        return
    except QILedgerError:
        assert not signed, "a token signed by the log key failed other than as malformed"
        return
    finally:
        sys.setrecursionlimit(limit)
    assert isinstance(result, mark.MarkClaims)


# Shallow nesting, and nesting deeper than Python's default recursion limit (1,000)
# that still fits a 2,048-character token.
_NESTED = st.builds(
    lambda depth, tail: b"[" * depth + tail,
    st.one_of(st.integers(min_value=0, max_value=64), st.integers(min_value=1000, max_value=1440)),
    st.binary(max_size=8),
)
_SEGMENT_BYTES = st.one_of(st.binary(max_size=1450), _NESTED)


@given(st.one_of(st.text(max_size=2100), st.binary(max_size=2100), st.none(), st.integers()))
def test_arbitrary_input_raises_only_project_errors(token: object) -> None:
    _only_project_errors(token)


@given(st.lists(st.text(max_size=700), min_size=1, max_size=4))
def test_arbitrary_dotted_text_raises_only_project_errors(parts: list[str]) -> None:
    _only_project_errors(".".join(parts))


@given(_SEGMENT_BYTES, st.one_of(st.binary(max_size=64), st.just(EXPECTED_CLAIMS_BYTES)))
def test_arbitrary_header_bytes_raise_only_project_errors(header: bytes, claims: bytes) -> None:
    _only_project_errors(_signed(header, claims), signed=False)


@given(_SEGMENT_BYTES)
def test_arbitrary_signed_claims_are_accepted_or_malformed(claims: bytes) -> None:
    _only_project_errors(_signed(EXPECTED_HEADER, claims), signed=True)


@given(
    st.text(min_size=1, max_size=40),
    st.integers(min_value=0, max_value=2**48),
    st.integers(min_value=0, max_value=2**40),
)
def test_any_claims_round_trip(certificate_id: str, index: int, issued_at: int) -> None:
    claims = mark.MarkClaims(ORIGIN, certificate_id, "X", bytes(32), index, issued_at)
    assert mark.verify(mark.sign(claims, LOG_KEY), LOG_KEY.public_key) == claims


def _with_claims(token: str, change: dict[str, object]) -> str:
    head, body, sig = _parts(token)
    claims = json.loads(_b64url_decode(body))
    claims.update(change)
    return ".".join([head, b64url_encode(json.dumps(claims).encode()), sig])


@pytest.mark.parametrize(
    ("token", "error"),
    [
        (_with_claims(TOKEN, {"idx": 8}), SignatureError),  # altered claim
        (mark.sign(CLAIMS, key_from("other")), SignatureError),  # another log's key
        (TOKEN + "AA", SignatureError),  # a 65-byte signature
        ("a.b", MalformedError),
        ("", MalformedError),
        ("x" * 3000, MalformedError),
        (b64url_encode(b'{"alg":"none"}') + "." + _parts(TOKEN)[1] + ".", MalformedError),
        (b64url_encode(b'{"alg":"HS256"}') + "." + ".".join(_parts(TOKEN)[1:]), MalformedError),
        ("!!." + ".".join(_parts(TOKEN)[1:]), MalformedError),
        (_parts(TOKEN)[0] + "=." + ".".join(_parts(TOKEN)[1:]), MalformedError),
        (_parts(TOKEN)[0] + ".\u00e9." + _parts(TOKEN)[2], MalformedError),
    ],
)
def test_bad_tokens_are_refused(token: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        mark.verify(token, LOG_KEY.public_key)


def test_token_of_another_origin_is_refused() -> None:
    with pytest.raises(SignatureError, match="issued by log"):
        mark.verify(TOKEN, LOG_KEY.public_key, "other.example/log")


def _without(name: str) -> dict[str, Any]:
    return {key: value for key, value in EXPECTED_CLAIMS.items() if key != name}


@pytest.mark.parametrize(
    "claims",
    [
        *[_without(name) for name in EXPECTED_CLAIMS],  # each claim is required
        *[{**_without(name), name.upper(): EXPECTED_CLAIMS[name]} for name in EXPECTED_CLAIMS],
        {**EXPECTED_CLAIMS, "iss": 1},
        {**EXPECTED_CLAIMS, "sub": None},
        {**EXPECTED_CLAIMS, "isr": ["LAB-1"]},
        {**EXPECTED_CLAIMS, "idx": "7"},
        {**EXPECTED_CLAIMS, "idx": True},
        {**EXPECTED_CLAIMS, "idx": 7.0},
        {**EXPECTED_CLAIMS, "idx": -1},
        {**EXPECTED_CLAIMS, "iat": "1795600000"},
        {**EXPECTED_CLAIMS, "dig": b64url_encode(b"short")},
        {**EXPECTED_CLAIMS, "dig": hashlib.sha256(b"doc").hexdigest()},
        {**EXPECTED_CLAIMS, "dig": EXPECTED_CLAIMS["dig"] + "="},  # padded
        [1, 2],
    ],
)
def test_well_signed_but_malformed_claims_are_refused(claims: object) -> None:
    with pytest.raises(MalformedError):
        mark.verify(_signed(EXPECTED_HEADER, json.dumps(claims).encode()), LOG_KEY.public_key)
