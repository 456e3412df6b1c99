"""QR mark tokens: JWS (EdDSA) signed by the log key, checked by our verifier and
by an independent JOSE library (PyJWT)."""

from __future__ import annotations

import base64
import hashlib
import json

import jwt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.helpers import key_from
from verifier import mark
from verifier.encoding import b64url_encode
from verifier.errors import MalformedError, SignatureError

LOG_KEY = key_from("log")
ORIGIN = "registry.example.org/log"
CLAIMS = mark.MarkClaims(
    ORIGIN, "LAB-1/DCC-2026-0001", "LAB-1", hashlib.sha256(b"doc").digest(), 7, 1795600000
)


def test_round_trip_and_independent_jose_library() -> None:
    token = mark.sign(CLAIMS, LOG_KEY)
    assert mark.verify(token, LOG_KEY.public_key, ORIGIN) == CLAIMS
    decoded = jwt.decode(
        token,
        jwt.PyJWK({"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(LOG_KEY.public_key.raw)}),
        algorithms=["EdDSA"],
        options={"verify_iat": False},
    )
    assert decoded == CLAIMS.to_json()
    assert len(token) < 320  # small enough for a QR code on a 25 mm mark


@given(
    st.text(min_size=1, max_size=40),
    st.integers(min_value=0, max_value=2**48),
    st.integers(min_value=0, max_value=2**40),
)
def test_any_claims_round_trip(certificate_id: str, index: int, issued_at: int) -> None:
    claims = mark.MarkClaims(ORIGIN, certificate_id, "X", bytes(32), index, issued_at)
    assert mark.verify(mark.sign(claims, LOG_KEY), LOG_KEY.public_key) == claims


def _parts(token: str) -> list[str]:
    return token.split(".")


def _with_claims(token: str, change: dict[str, object]) -> str:
    head, body, sig = _parts(token)
    claims = json.loads(base64.urlsafe_b64decode(body + "=="))
    claims.update(change)
    return ".".join([head, b64url_encode(json.dumps(claims).encode()), sig])


TOKEN = mark.sign(CLAIMS, LOG_KEY)


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
    ],
)
def test_bad_tokens_are_refused(token: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        mark.verify(token, LOG_KEY.public_key)


def test_token_of_another_origin_is_refused() -> None:
    with pytest.raises(SignatureError, match="issued by log"):
        mark.verify(TOKEN, LOG_KEY.public_key, "other.example/log")


@pytest.mark.parametrize(
    "claims",
    [
        {"iss": ORIGIN},  # missing claims
        {**CLAIMS.to_json(), "idx": "7"},
        {**CLAIMS.to_json(), "idx": True},
        {**CLAIMS.to_json(), "idx": -1},
        {**CLAIMS.to_json(), "dig": b64url_encode(b"short")},
        [1, 2],
    ],
)
def test_well_signed_but_malformed_claims_are_refused(claims: object) -> None:
    head = b64url_encode(mark.HEADER)
    body = b64url_encode(json.dumps(claims).encode())
    sig = b64url_encode(LOG_KEY.sign(f"{head}.{body}".encode()))
    with pytest.raises(MalformedError):
        mark.verify(f"{head}.{body}.{sig}", LOG_KEY.public_key)
