"""QR accreditation mark v2 (DESIGN.md item 7): a COSE_Sign1 (RFC 9052) with CWT
claims (RFC 8392), signed by the log key, written as base32 in an upper-case URL.

Wire form, byte for byte (deterministic CBOR, RFC 8949 §4.2: shortest heads,
map keys in bytewise order of their encodings, so one mark has one encoding)::

    18([                                  tag 18: COSE_Sign1
        << {1: -19, 4: h'<key id>'} >>,   protected: alg Ed25519 (RFC 9864), kid =
                                          the log's 4-byte C2SP note key ID
        {},                               unprotected: empty
        << {2: sub, 6: iat,               payload: CWT claims, certificate id (text),
            -70001: h'<sha256>',          seconds since the epoch (uint), document
            -70002: index} >>,            SHA-256 (32-byte bstr), issue entry's index
        h'<64-byte Ed25519 signature>'    over Sig_structure
    ])                                    ["Signature1", protected, h'', payload]

The token is RFC 4648 base32 of those bytes, upper case without padding (all of it
in QR alphanumeric mode); the URL is ``HTTPS://HOST[:PORT]/M/TOKEN``.

CBOR is written and read here, not by a library: a mark has exactly one shape
(a handful of fixed keys, ints, one text and three byte strings), and a reader for
that shape alone is short, refuses every other encoding by construction (no
indefinite lengths, floats, tags other than 18, duplicate or unsorted keys,
non-shortest heads), and keeps ``verifier/`` free of a general CBOR decoder that a
hostile token could exercise. Independent COSE libraries (the ``cwt`` package in
tests/test_mark.py) check that this is the standard encoding.

:func:`verify` compares the protected header with the one exact encoding the
log's key ID gives (a foreign key ID is :class:`ForeignLogError`), verifies the
signature over the still unparsed payload bytes, and only then parses the claims.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass

from verifier.errors import MalformedError, TooLargeError, UnknownKeyError
from verifier.keys import ED25519_SIGNATURE_SIZE, SigningKey
from verifier.note import NoteVerifier

COSE_SIGN1_TAG = 18
ALG_ED25519 = -19  # RFC 9864: fully specified Ed25519 (not the polymorphic EdDSA, -8)
HEADER_ALG = 1
HEADER_KID = 4
CLAIM_SUB = 2
CLAIM_IAT = 6
CLAIM_DOCUMENT_SHA256 = -70001
CLAIM_INDEX = -70002
KEY_ID_SIZE = 4
SHA256_SIZE = 32

MAX_TOKEN_BYTES = 1024
"""The longest certificate id (193 characters, at most 577 UTF-8 bytes) with the
largest integers makes a mark of about 720 bytes; longer tokens are refused
before any decoding."""
MAX_TOKEN_LENGTH = -(-MAX_TOKEN_BYTES * 8 // 5)  # base32 characters for that many bytes

# scheme://host[:port]; a host is a DNS name, IPv4 or bracketed IPv6 address.
_ORIGIN = r"[hH][tT][tT][pP][sS]?://(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?"
_BASE_URL = re.compile(_ORIGIN + "/?")
_MARK_URL = re.compile(_ORIGIN + r"/[mM]/([A-Za-z2-7]+)")
_BASE32 = re.compile(r"[A-Za-z2-7]*")
_BASE32_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_INT_DIGITS = "0123456789abcdefghijklmnopqrstuv"  # int(text, 32)'s digits, in value order
_BASE32_TO_INT_DIGITS = str.maketrans(
    _BASE32_ALPHABET + _BASE32_ALPHABET.lower(), _INT_DIGITS + _INT_DIGITS
)
_UINT64_MAX = (1 << 64) - 1


class ForeignLogError(UnknownKeyError):
    """A well-formed mark names (by key ID) another log than the one trusted."""

    code = "foreign_log"


@dataclass(frozen=True)
class MarkClaims:
    """What a mark asserts: this certificate, with this document, is entry
    ``index`` of the log that signed it (``issued_at``: seconds since the epoch)."""

    certificate_id: str
    document_sha256: bytes
    index: int
    issued_at: int


def sign(claims: MarkClaims, key: SigningKey, log: NoteVerifier) -> str:
    """The base32 token of ``claims`` signed with the log key ``key``; ``log`` is
    that key's note verifier, whose key ID the protected header names."""
    if key.public_key != log.public_key:
        raise MalformedError("the mark signing key is not the key of the log it names")
    payload = encode_claims(claims)
    protected = _protected_header(log.key_id)
    signature = key.sign(_sig_structure(protected, payload))
    return _b32encode(_cose_sign1(protected, payload, signature))


def verify(token: str, log: NoteVerifier) -> MarkClaims:
    """Check a mark token (base32 in any letter case) against the log ``log``;
    return its claims. Raises :class:`MalformedError` for anything that is not
    exactly a mark, :class:`ForeignLogError` for another log's mark and
    :class:`~verifier.errors.SignatureError` for a bad signature."""
    raw = _b32decode(token)
    expected = _protected_header(log.key_id)
    split = _split_as_written(raw, expected)
    if split is None:  # not laid out as sign() writes: the general reader decides
        protected, payload, signature = _split_cose_sign1(raw)
        if protected != expected:
            _explain_protected(protected, log)
    else:
        payload, signature = split
    log.public_key.verify(signature, _sig_structure(expected, payload))
    return decode_claims(payload)  # parsed only once the log key signed them


def mark_url(public_base_url: str, token: str) -> str:
    """``HTTPS://HOST[:PORT]/M/TOKEN``: the base URL's scheme and authority, all
    upper case so the whole URL fits QR alphanumeric mode."""
    # No path: upper-casing a path prefix would change it, so marks live at the root.
    if not isinstance(public_base_url, str) or not _BASE_URL.fullmatch(public_base_url):
        raise MalformedError(
            f"a mark base URL is http(s)://host[:port] only, not {public_base_url!r}"
        )
    if not isinstance(token, str) or not token or not _BASE32.fullmatch(token):
        raise MalformedError("a mark token is base32")
    return f"{public_base_url.rstrip('/')}/M/{token}".upper()


def token_from_url(url: str) -> str:
    """The token (upper case) from a mark URL in any letter case (``/M/`` or ``/m/``)."""
    # A regex, not urllib's urlsplit, which silently drops tabs and newlines in a URL.
    match = (
        _MARK_URL.fullmatch(url.strip())
        if isinstance(url, str) and len(url) <= MAX_TOKEN_LENGTH + 512
        else None
    )
    if match is None:
        raise MalformedError("not a mark URL (http(s)://host[:port]/M/<base32 token>)")
    return match.group(1).upper()


# --- CBOR, for this one structure ---------------------------------------------------


def encode_claims(claims: MarkClaims) -> bytes:
    """The deterministic CBOR of the CWT claims map (the COSE payload)."""
    if not isinstance(claims.certificate_id, str) or not claims.certificate_id:
        raise MalformedError("a mark's certificate id is a non-empty string")
    if not isinstance(claims.document_sha256, bytes) or len(claims.document_sha256) != 32:
        raise MalformedError("a mark's document digest is 32 bytes of SHA-256")
    for name, value in (("index", claims.index), ("issued_at", claims.issued_at)):
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _UINT64_MAX:
            raise MalformedError(f"a mark's {name} is an unsigned 64-bit integer")
    try:
        sub = claims.certificate_id.encode("utf-8")
    except UnicodeEncodeError:
        raise MalformedError("a mark's certificate id is not valid Unicode") from None
    # Keys in bytewise order of their encodings: 02, 06, 3a00011170, 3a00011171.
    return b"".join(
        [
            _head(5, 4),
            _int(CLAIM_SUB),
            _head(3, len(sub)) + sub,
            _int(CLAIM_IAT),
            _int(claims.issued_at),
            _int(CLAIM_DOCUMENT_SHA256),
            _bstr(claims.document_sha256),
            _int(CLAIM_INDEX),
            _int(claims.index),
        ]
    )


def decode_claims(payload: bytes) -> MarkClaims:
    """Parse the claims map, refusing any other key, type or encoding."""
    claims = _claims_as_written(payload)
    return claims if claims is not None else _decode_claims_item_by_item(payload)


def _decode_claims_item_by_item(payload: bytes) -> MarkClaims:
    """The general reader: every head checked in turn, with the error that names it."""
    reader = _Reader(payload, "mark claims")
    reader.expect_head(5, 4, "a map of exactly four claims")
    reader.expect_int(CLAIM_SUB, "claim 2 (sub)")
    raw_sub = reader.read_string(3, "claim 2 (sub)")
    reader.expect_int(CLAIM_IAT, "claim 6 (iat)")
    issued_at = reader.read_uint("claim 6 (iat)")
    reader.expect_int(CLAIM_DOCUMENT_SHA256, "claim -70001 (document SHA-256)")
    digest = reader.read_string(2, "claim -70001 (document SHA-256)")
    reader.expect_int(CLAIM_INDEX, "claim -70002 (log index)")
    index = reader.read_uint("claim -70002 (log index)")
    reader.expect_end()
    if len(digest) != SHA256_SIZE:
        raise MalformedError("the mark's document digest is not 32 bytes")
    try:
        certificate_id = raw_sub.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedError("the mark's certificate id is not UTF-8") from None
    if not certificate_id:
        raise MalformedError("the mark's certificate id is empty")
    return MarkClaims(certificate_id, digest, index, issued_at)


def _protected_header(key_id: bytes) -> bytes:
    return _head(5, 2) + _int(HEADER_ALG) + _int(ALG_ED25519) + _int(HEADER_KID) + _bstr(key_id)


def _sig_structure(protected: bytes, payload: bytes) -> bytes:
    return _SIG_STRUCTURE_START + _bstr(protected) + _bstr(b"") + _bstr(payload)  # b"": no aad


def _split_as_written(raw: bytes, protected: bytes) -> tuple[bytes, bytes] | None:
    """Payload and signature of a COSE_Sign1 laid out exactly as :func:`sign` writes
    one with header ``protected``, by comparing its fixed bytes; None for anything
    else, which :func:`_split_cose_sign1` then reads (or refuses) item by item.
    Whatever this accepts, that reader reads the same (tests/test_mark_fast_path.py)."""
    start = _COSE_SIGN1_START + _bstr(protected) + _EMPTY_MAP
    end = len(raw) - len(_SIGNATURE_HEAD) - ED25519_SIGNATURE_SIZE  # payload's end
    if end < len(start) + 2 or not raw.startswith(start):
        return None
    if raw[end : end + len(_SIGNATURE_HEAD)] != _SIGNATURE_HEAD:
        return None
    # The payload's head: a mark's payload is 24 to 65,535 bytes, so one or two
    # length bytes, each in its shortest form.
    at = len(start)
    if raw[at] == 0x58:
        length, body = raw[at + 1], at + 2
        shortest = length >= 24
    elif raw[at] == 0x59:
        length, body = int.from_bytes(raw[at + 1 : at + 3], "big"), at + 3
        shortest = length >= 256
    else:
        return None
    if not shortest or body + length != end:
        return None
    return raw[body:end], raw[end + len(_SIGNATURE_HEAD) :]


def _claims_as_written(payload: bytes) -> MarkClaims | None:
    """The claims of a payload laid out exactly as :func:`encode_claims` writes them
    (fixed keys compared as bytes, shortest heads); None for anything else, which
    :func:`_decode_claims_item_by_item` then reads (or refuses) with the reason.
    Whatever this accepts, that reader reads the same (tests/test_mark_fast_path.py)."""
    if not payload.startswith(_CLAIMS_START):
        return None
    sub = _shortest_head(payload, len(_CLAIMS_START), 3)
    if sub is None or sub[0] == 0:
        return None
    sub_length, sub_at = sub
    iat_at = sub_at + sub_length + len(_IAT_KEY)
    if payload[iat_at - len(_IAT_KEY) : iat_at] != _IAT_KEY:
        return None
    iat = _shortest_head(payload, iat_at, 0)
    if iat is None:
        return None
    issued_at, at = iat
    digest_at = at + len(_DIGEST_KEY)
    index_at = digest_at + SHA256_SIZE + len(_INDEX_KEY)
    if (
        payload[at:digest_at] != _DIGEST_KEY
        or payload[index_at - len(_INDEX_KEY) : index_at] != _INDEX_KEY
    ):
        return None
    index = _shortest_head(payload, index_at, 0)
    if index is None or index[1] != len(payload):
        return None
    try:
        certificate_id = payload[sub_at : sub_at + sub_length].decode("utf-8")
    except UnicodeDecodeError:
        return None
    digest = payload[digest_at : digest_at + SHA256_SIZE]
    return MarkClaims(certificate_id, digest, index[0], issued_at)


def _shortest_head(data: bytes, at: int, major: int) -> tuple[int, int] | None:
    """The argument of the head of major type ``major`` at ``data[at]`` and the offset
    after it, if that head is definite and in its shortest form; else None."""
    if at >= len(data) or data[at] >> 5 != major:
        return None
    info = data[at] & 0x1F
    if info < 24:
        return info, at + 1
    if info > 27:
        return None
    size = 1 << (info - 24)
    end = at + 1 + size
    if end > len(data):
        return None
    value = int.from_bytes(data[at + 1 : end], "big")
    if value < (24 if size == 1 else 1 << (4 * size)):
        return None
    return value, end


def _cose_sign1(protected: bytes, payload: bytes, signature: bytes) -> bytes:
    return (
        _head(6, COSE_SIGN1_TAG)
        + _head(4, 4)
        + _bstr(protected)
        + _head(5, 0)  # unprotected header: empty map
        + _bstr(payload)
        + _bstr(signature)
    )


def _split_cose_sign1(raw: bytes) -> tuple[bytes, bytes, bytes]:
    reader = _Reader(raw, "mark")
    reader.expect_head(6, COSE_SIGN1_TAG, "a COSE_Sign1 (CBOR tag 18)")
    reader.expect_head(4, 4, "a COSE_Sign1 array of four items")
    protected = reader.read_string(2, "protected header")
    reader.expect_head(5, 0, "an empty unprotected header")
    payload = reader.read_string(2, "payload")
    signature = reader.read_string(2, "signature")
    reader.expect_end()
    if len(signature) != ED25519_SIGNATURE_SIZE:
        raise MalformedError("the mark signature is not 64 bytes of Ed25519")
    return protected, payload, signature


def _explain_protected(protected: bytes, log: NoteVerifier) -> None:
    """Raise the right error for a protected header other than this log's."""
    reader = _Reader(protected, "protected header")
    reader.expect_head(5, 2, "the map {1: alg, 4: kid}")
    reader.expect_int(HEADER_ALG, "header 1 (alg)")
    reader.expect_int(ALG_ED25519, "alg -19 (Ed25519)")
    reader.expect_int(HEADER_KID, "header 4 (kid)")
    key_id = reader.read_string(2, "header 4 (kid)")
    reader.expect_end()
    if len(key_id) != KEY_ID_SIZE:
        raise MalformedError("the mark's key ID is not a 4-byte note key ID")
    raise ForeignLogError(
        f"the mark was signed by the log with key ID {key_id.hex()}, "
        f"not by {log.name} ({log.key_id.hex()})"
    )


def _head(major: int, value: int) -> bytes:
    """A CBOR initial byte and argument in its shortest form (RFC 8949 §4.2.1)."""
    if value < 24:
        return bytes([major << 5 | value])
    for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if value < 1 << (8 * size):
            return bytes([major << 5 | info]) + value.to_bytes(size, "big")
    raise MalformedError("integer too large for CBOR")


def _int(value: int) -> bytes:
    return _head(0, value) if value >= 0 else _head(1, -1 - value)


def _bstr(data: bytes) -> bytes:
    return _head(2, len(data)) + data


# Fixed bytes of the one layout (see the module docstring), for the fast paths above.
_COSE_SIGN1_START = _head(6, COSE_SIGN1_TAG) + _head(4, 4)
_EMPTY_MAP = _head(5, 0)
_SIGNATURE_HEAD = _head(2, ED25519_SIGNATURE_SIZE)
_SIG_STRUCTURE_START = _head(4, 4) + _head(3, len(b"Signature1")) + b"Signature1"
_CLAIMS_START = _head(5, 4) + _int(CLAIM_SUB)
_IAT_KEY = _int(CLAIM_IAT)
_DIGEST_KEY = _int(CLAIM_DOCUMENT_SHA256) + _head(2, SHA256_SIZE)
_INDEX_KEY = _int(CLAIM_INDEX)


class _Reader:
    """Reads the next item of an expected shape; every mismatch is MalformedError."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.at = 0
        self.what = what

    def _fail(self, message: str) -> MalformedError:
        return MalformedError(f"{self.what}: {message} (at byte {self.at})")

    def _take(self, n: int) -> bytes:
        if n > len(self.data) - self.at:
            raise self._fail("truncated")
        chunk = self.data[self.at : self.at + n]
        self.at += n
        return chunk

    def read_head(self) -> tuple[int, int]:
        """Major type and argument; only definite, shortest-form heads."""
        initial = self._take(1)[0]
        major, info = initial >> 5, initial & 0x1F
        if info < 24:
            return major, info
        if info > 27:  # reserved, or indefinite length (31): never in a mark
            raise self._fail("not a definite-length CBOR item")
        size = 1 << (info - 24)
        value = int.from_bytes(self._take(size), "big")
        if value < (24 if size == 1 else 1 << (4 * size)):
            raise self._fail("not the shortest (deterministic) CBOR encoding")
        return major, value

    def expect_head(self, major: int, value: int, what: str) -> None:
        if self.read_head() != (major, value):
            raise self._fail(f"expected {what}")

    def expect_int(self, value: int, what: str) -> None:
        expected = (0, value) if value >= 0 else (1, -1 - value)
        if self.read_head() != expected:
            raise self._fail(f"expected {what}")

    def read_uint(self, what: str) -> int:
        major, value = self.read_head()
        if major != 0:
            raise self._fail(f"{what} is not an unsigned integer")
        return value

    def read_string(self, major: int, what: str) -> bytes:
        kind, length = self.read_head()
        if kind != major:
            raise self._fail(f"{what} is not a {'byte' if major == 2 else 'text'} string")
        return self._take(length)

    def expect_end(self) -> None:
        if self.at != len(self.data):
            raise self._fail("unexpected bytes after the end")


# --- base32 --------------------------------------------------------------------------


def _b32encode(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=")


def _b32decode(token: str) -> bytes:
    """RFC 4648 base32 without padding, any letter case; only canonical spellings
    (the unused low bits of the last character are zero)."""
    if not isinstance(token, str):
        raise MalformedError("a mark token is a base32 string")
    if len(token) > MAX_TOKEN_LENGTH:
        raise TooLargeError(f"a mark token is at most {MAX_TOKEN_LENGTH} characters")
    if not token or not _BASE32.fullmatch(token):
        raise MalformedError("a mark token is base32 (A-Z, 2-7) without padding")
    # The token as one big integer, 5 bits a character, read by int() in C (the
    # standard library's b32decode is a Python loop and was half of verify's time):
    # the regex above left only base32 letters, which map onto int()'s base-32 digits.
    size, spare = divmod(len(token) * 5, 8)
    if -(-size * 8 // 5) != len(token):  # 1, 3 or 6 characters past a 5-byte group
        raise MalformedError("a mark token has a length no base32 spelling has")
    value = int(token.translate(_BASE32_TO_INT_DIGITS), 32)
    if value & ((1 << spare) - 1):
        raise MalformedError("a mark token is not canonical base32")
    return (value >> spare).to_bytes(size, "big")
