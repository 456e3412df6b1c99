"""QR accreditation mark tokens: JWS compact serialization (RFC 7515) with
``alg`` EdDSA (RFC 8037), signed by the log key.

The claims say which certificate the mark stands for and where the log
recorded it: ``iss`` (log origin), ``sub`` (certificate id), ``isr`` (issuer id),
``dig`` (base64url SHA-256 of the document), ``idx`` (log index of the issue
entry), ``iat`` (seconds since the epoch). Any JOSE library verifies a token
offline with the log's public key; :func:`verify` is ours.

The header is the fixed ``{"alg":"EdDSA"}`` and the claims are JCS bytes, so one
mark has one encoding and the token stays short enough for a small QR code.
:func:`verify` compares the header with those exact bytes (any other header,
``typ`` included, is refused unparsed) and parses the claims only after the
signature verified.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from verifier import jcs
from verifier.encoding import b64url_encode
from verifier.errors import MalformedError, SignatureError
from verifier.keys import PublicKey, SigningKey

HEADER = b'{"alg":"EdDSA"}'
_HEADER_B64 = b64url_encode(HEADER)
MAX_TOKEN_LENGTH = 2048
_CLAIMS = {"iss": str, "sub": str, "isr": str, "dig": str, "idx": int, "iat": int}


@dataclass(frozen=True)
class MarkClaims:
    origin: str
    certificate_id: str
    issuer_id: str
    document_sha256: bytes
    index: int
    issued_at: int

    def to_json(self) -> dict[str, Any]:
        return {
            "iss": self.origin,
            "sub": self.certificate_id,
            "isr": self.issuer_id,
            "dig": b64url_encode(self.document_sha256),
            "idx": self.index,
            "iat": self.issued_at,
        }


def sign(claims: MarkClaims, key: SigningKey) -> str:
    """The compact JWS of ``claims`` signed with the log key."""
    signing_input = (
        b64url_encode(HEADER) + "." + b64url_encode(jcs.canonical_bytes(claims.to_json()))
    )
    signature = key.sign(signing_input.encode("ascii"))
    return signing_input + "." + b64url_encode(signature)


def verify(token: str, log_key: PublicKey, origin: str | None = None) -> MarkClaims:
    """Check a mark token's signature with the log key; return its claims.

    ``origin`` (the log the caller trusts) must equal the token's ``iss`` when given.
    """
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
        raise MalformedError("a mark token is a JWS compact string of at most 2048 characters")
    parts = token.split(".")
    if len(parts) != 3:
        raise MalformedError("a mark token has three dot-separated parts")
    # The header is compared as exact bytes with the one fixed header and never
    # parsed: a hostile header (say ``[[[[...``) cannot reach a JSON parser.
    if parts[0] != _HEADER_B64:
        raise MalformedError(
            'the mark header is not the fixed {"alg":"EdDSA"} (base64url '
            + _HEADER_B64
            + "); no other header, alg or typ is accepted"
        )
    raw_claims = _b64url_decode(parts[1], "mark claims")
    signature = _b64url_decode(parts[2], "mark signature")
    log_key.verify(signature, f"{parts[0]}.{parts[1]}".encode("ascii"))
    claims = _parse_claims(raw_claims)  # parsed only once the log key signed them
    if origin is not None and claims.origin != origin:
        raise SignatureError(f"the mark was issued by log {claims.origin!r}, not {origin!r}")
    return claims


def _parse_claims(raw: bytes) -> MarkClaims:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        raise MalformedError("the mark claims are not JSON") from None
    if not isinstance(value, dict):
        raise MalformedError("the mark claims are not a JSON object")
    for name, kind in _CLAIMS.items():
        item = value.get(name)
        if not isinstance(item, kind) or isinstance(item, bool):
            raise MalformedError(f"the mark claim {name!r} is missing or not a {kind.__name__}")
    digest = _b64url_decode(value["dig"], "mark claim 'dig'")
    if len(digest) != 32:
        raise MalformedError("the mark claim 'dig' is not a SHA-256 digest")
    if value["idx"] < 0:
        raise MalformedError("the mark claim 'idx' is negative")
    return MarkClaims(value["iss"], value["sub"], value["isr"], digest, value["idx"], value["iat"])


def _b64url_decode(text: str, what: str) -> bytes:
    """Unpadded base64url (RFC 7515 §2), refusing every other spelling."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise MalformedError(f"{what} is not base64url") from None
    if b64url_encode(raw) != text:
        raise MalformedError(f"{what} is not canonical unpadded base64url")
    return raw
