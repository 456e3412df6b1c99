"""QR mark v2 (DESIGN.md item 7): COSE_Sign1 with CWT claims, alg Ed25519 (-19),
base32 in an upper-case URL. Checked against independent implementations in both
directions: ``cwt`` (COSE/CWT) verifies our marks with nothing but the log's raw
public key, and ``cbor2`` writes the expected bytes from the documented format,
not from our encoder.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import string
from typing import Any

import cbor2
import cwt
import pytest
from cwt import COSE, COSEKey
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.verifier_helpers import key_from
from verifier import mark
from verifier.errors import MalformedError, QILedgerError, SignatureError, TooLargeError
from verifier.keys import SigningKey
from verifier.note import NoteVerifier

LOG_KEY = key_from("mark log")
LOG = NoteVerifier.for_key("registry.example.org/log", LOG_KEY.public_key)
CLAIMS = mark.MarkClaims("LAB-1/DCC-2026-0001", hashlib.sha256(b"doc").digest(), 7, 1795600000)
TOKEN = mark.sign(CLAIMS, LOG_KEY, LOG)
QR_ALPHANUMERIC = set(string.digits + string.ascii_uppercase + " $%*+-./:")


def b32(data: bytes) -> str:
    return base64.b32encode(data).decode("ascii").rstrip("=")


def unb32(token: str) -> bytes:
    return base64.b32decode(token + "=" * (-len(token) % 8))


RAW = unb32(TOKEN)


def cose_key(key: SigningKey, key_id: bytes, *, private: bool = False) -> Any:
    """A COSE OKP key (RFC 9053 §7.2) built from the raw Ed25519 key alone."""
    params: dict[int, Any] = {1: 1, -1: 6, -2: key.public_key.raw, 3: -19, 2: key_id}
    if private:
        params[-4] = key.seed()
    return COSEKey.new(params)


def claims_map(claims: mark.MarkClaims) -> dict[int, Any]:
    """The documented CWT claims map, written out here (not by verifier.mark)."""
    return {
        2: claims.certificate_id,
        6: claims.issued_at,
        -70001: claims.document_sha256,
        -70002: claims.index,
    }


def signed_raw(
    payload: bytes,
    protected: bytes | None = None,
    *,
    key: SigningKey = LOG_KEY,
    unprotected: bytes = b"\xa0",
    tag: bytes = b"\xd2",
) -> bytes:
    """A COSE_Sign1 over arbitrary protected and payload bytes with a valid
    signature by ``key``, assembled with cbor2 (for strictness cases)."""
    if protected is None:
        protected = cbor2.dumps({1: -19, 4: LOG.key_id}, canonical=True)
    to_sign = cbor2.dumps(["Signature1", protected, b"", payload])
    signature = key.sign(to_sign)
    body = (
        b"\x84"
        + cbor2.dumps(protected)
        + unprotected
        + cbor2.dumps(payload)
        + cbor2.dumps(signature)
    )
    return tag + body


# --- the wire form, checked by independent code ---------------------------------------


def test_the_token_is_the_documented_cose_sign1() -> None:
    decoded = cbor2.loads(RAW)
    assert isinstance(decoded, cbor2.CBORTag)
    assert decoded.tag == 18
    protected, unprotected, payload, signature = decoded.value
    assert cbor2.loads(protected) == {1: -19, 4: LOG.key_id}
    assert unprotected == {}
    assert cbor2.loads(payload) == claims_map(CLAIMS)
    assert len(signature) == 64
    # Deterministic CBOR (RFC 8949 §4.2): cbor2's canonical encoding is ours, byte for byte.
    assert protected == cbor2.dumps({1: -19, 4: LOG.key_id}, canonical=True)
    assert payload == cbor2.dumps(claims_map(CLAIMS), canonical=True)
    assert cbor2.dumps(cbor2.CBORTag(18, decoded.value), canonical=True) == RAW
    assert b32(RAW) == TOKEN  # upper case, unpadded
    assert set(TOKEN) <= set(string.ascii_uppercase + "234567")


def test_the_protected_header_names_the_logs_c2sp_key_id() -> None:
    expected = hashlib.sha256(b"registry.example.org/log\n\x01" + LOG_KEY.public_key.raw).digest()
    protected = cbor2.loads(cbor2.loads(RAW).value[0])
    assert protected[4] == expected[:4] == LOG.key_id


def test_signing_is_deterministic() -> None:
    assert mark.sign(CLAIMS, LOG_KEY, LOG) == TOKEN


def test_cwt_verifies_our_mark_with_only_the_log_public_key() -> None:
    public = cose_key(LOG_KEY, LOG.key_id)
    payload = COSE.new().decode(RAW, public)
    assert cbor2.loads(payload) == claims_map(CLAIMS)
    # And as a CWT, through cwt's own claims decoding.
    decoded = cwt.decode(RAW, public)
    assert decoded[2] == CLAIMS.certificate_id
    assert decoded[-70001] == CLAIMS.document_sha256
    assert (decoded[6], decoded[-70002]) == (CLAIMS.issued_at, CLAIMS.index)


@pytest.mark.parametrize("where", ["payload", "signature", "protected kid"])
def test_cwt_rejects_a_tampered_mark(where: str) -> None:
    protected, unprotected, payload, signature = cbor2.loads(RAW).value
    key_id = LOG.key_id
    if where == "payload":
        claims = cbor2.loads(payload)
        claims[-70002] = 8
        payload = cbor2.dumps(claims, canonical=True)
    elif where == "signature":
        signature = bytes([signature[0] ^ 1]) + signature[1:]
    else:  # the header names another key ID; cwt is given the same key under that ID
        key_id = bytes([key_id[0] ^ 1]) + key_id[1:]
        protected = cbor2.dumps({1: -19, 4: key_id}, canonical=True)
    tampered = cbor2.dumps(cbor2.CBORTag(18, [protected, unprotected, payload, signature]))
    with pytest.raises(cwt.VerifyError):
        COSE.new().decode(tampered, cose_key(LOG_KEY, key_id))
    with pytest.raises(QILedgerError):
        mark.verify(b32(tampered), LOG)


def test_our_verify_accepts_the_mark_cwt_makes() -> None:
    private = cose_key(LOG_KEY, LOG.key_id, private=True)
    payload = cbor2.dumps(claims_map(CLAIMS), canonical=True)
    made = COSE.new().encode_and_sign(
        payload, private, protected={1: -19, 4: LOG.key_id}, unprotected={}
    )
    assert mark.verify(b32(made), LOG) == CLAIMS
    assert made == RAW  # one mark, one encoding


# --- every change is refused -----------------------------------------------------------


def test_every_single_byte_change_of_the_mark_is_refused() -> None:
    for position in range(len(RAW)):
        for flip in range(1, 256):
            changed = bytearray(RAW)
            changed[position] ^= flip
            with pytest.raises(QILedgerError):
                mark.verify(b32(bytes(changed)), LOG)


def test_every_character_change_of_the_token_is_refused() -> None:
    alphabet = string.ascii_uppercase + "234567"
    for position, original in enumerate(TOKEN):
        for letter in alphabet:
            if letter != original:
                changed = TOKEN[:position] + letter + TOKEN[position + 1 :]
                with pytest.raises(QILedgerError):
                    mark.verify(changed, LOG)


def test_every_truncation_and_extension_is_refused() -> None:
    for length in range(len(TOKEN)):
        with pytest.raises(MalformedError):
            mark.verify(TOKEN[:length], LOG)
    for length in range(len(RAW)):
        with pytest.raises(MalformedError):
            mark.verify(b32(RAW[:length]), LOG)
    for extra in (b"\x00", b"\xa0", RAW):
        with pytest.raises(MalformedError):
            mark.verify(b32(RAW + extra), LOG)


def test_any_letter_case_is_the_same_token() -> None:
    assert mark.verify(TOKEN.lower(), LOG) == CLAIMS
    mixed = "".join(c.lower() if i % 3 else c for i, c in enumerate(TOKEN))
    assert mark.verify(mixed, LOG) == CLAIMS


@pytest.mark.parametrize(
    "token",
    [TOKEN + "=" * (-len(TOKEN) % 8), TOKEN + "====", " " + TOKEN, TOKEN + "\n", TOKEN[:-1] + "1"],
    ids=["padded", "over-padded", "leading space", "newline", "not base32"],
)
def test_other_spellings_are_refused(token: str) -> None:
    with pytest.raises(MalformedError):
        mark.verify(token, LOG)


def test_an_oversized_token_is_refused_before_decoding() -> None:
    with pytest.raises(TooLargeError):
        mark.verify("A" * (mark.MAX_TOKEN_LENGTH + 1), LOG)
    with pytest.raises(TooLargeError):
        mark.verify(TOKEN * 10, LOG)


def test_the_longest_certificate_id_still_fits() -> None:
    longest = mark.MarkClaims(
        "L" * 64 + "/" + "\U0001f600" * 128, CLAIMS.document_sha256, 2**64 - 1, 2**64 - 1
    )
    token = mark.sign(longest, LOG_KEY, LOG)
    assert len(token) <= mark.MAX_TOKEN_LENGTH
    assert mark.verify(token, LOG) == longest


# --- foreign logs ----------------------------------------------------------------------


def test_a_mark_of_another_log_is_foreign() -> None:
    other_key = key_from("another log")
    other = NoteVerifier.for_key("other.example/log", other_key.public_key)
    with pytest.raises(mark.ForeignLogError, match=other.key_id.hex()):
        mark.verify(mark.sign(CLAIMS, other_key, other), LOG)
    # Same key under another log name: another key ID, so another log.
    renamed = NoteVerifier.for_key("registry.example.org/other", LOG_KEY.public_key)
    with pytest.raises(mark.ForeignLogError):
        mark.verify(mark.sign(CLAIMS, LOG_KEY, renamed), LOG)


def test_a_mark_claiming_our_key_id_but_signed_by_another_key_is_refused() -> None:
    payload = cbor2.dumps(claims_map(CLAIMS), canonical=True)
    forged = signed_raw(payload, key=key_from("forger"))
    with pytest.raises(SignatureError):
        mark.verify(b32(forged), LOG)


def test_sign_refuses_a_key_that_is_not_the_logs() -> None:
    with pytest.raises(MalformedError):
        mark.sign(CLAIMS, key_from("forger"), LOG)


# --- strict parsing of validly signed but wrong structures ------------------------------

GOOD_PROTECTED = cbor2.dumps({1: -19, 4: LOG.key_id}, canonical=True)
GOOD_PAYLOAD = cbor2.dumps(claims_map(CLAIMS), canonical=True)
SIGNATURE = cbor2.loads(RAW).value[3]


def _payload(value: Any, canonical: bool = True) -> bytes:
    return cbor2.dumps(value, canonical=canonical)


WRONG_PAYLOADS: dict[str, bytes] = {
    "unsorted keys": b"\xa4"
    + b"".join(
        cbor2.dumps(k) + cbor2.dumps(v) for k, v in reversed(list(claims_map(CLAIMS).items()))
    ),
    "extra claim": _payload({**claims_map(CLAIMS), 1: "issuer"}),
    "missing index": _payload({k: v for k, v in claims_map(CLAIMS).items() if k != -70002}),
    "float iat": _payload({**claims_map(CLAIMS), 6: 1795600000.0}),
    "negative index": _payload({**claims_map(CLAIMS), -70002: -1}),
    "text index": _payload({**claims_map(CLAIMS), -70002: "7"}),
    "short digest": _payload({**claims_map(CLAIMS), -70001: CLAIMS.document_sha256[:31]}),
    "text digest": _payload({**claims_map(CLAIMS), -70001: CLAIMS.document_sha256.hex()}),
    "bytes sub": _payload({**claims_map(CLAIMS), 2: CLAIMS.certificate_id.encode()}),
    "empty sub": _payload({**claims_map(CLAIMS), 2: ""}),
    "invalid UTF-8 sub": GOOD_PAYLOAD.replace(b"\x73LAB-1", b"\x73\xffAB-1"),
    "array": _payload(list(claims_map(CLAIMS).values())),
    "tagged map": _payload(cbor2.CBORTag(61, claims_map(CLAIMS))),
    "non-shortest iat": GOOD_PAYLOAD.replace(b"\x06\x1a", b"\x06\x1b\x00\x00\x00\x00"),
    "non-shortest index": GOOD_PAYLOAD[:-1] + b"\x18\x07",
    "indefinite map": b"\xbf" + GOOD_PAYLOAD[1:] + b"\xff",
    "trailing byte": GOOD_PAYLOAD + b"\x00",
    "empty": b"",
}


@pytest.mark.parametrize("case", sorted(WRONG_PAYLOADS))
def test_a_validly_signed_wrong_payload_is_malformed(case: str) -> None:
    token = b32(signed_raw(WRONG_PAYLOADS[case]))
    with pytest.raises(MalformedError):
        mark.verify(token, LOG)


WRONG_ENVELOPES: dict[str, bytes] = {
    "alg -8 (EdDSA)": signed_raw(GOOD_PAYLOAD, cbor2.dumps({1: -8, 4: LOG.key_id})),
    "no kid": signed_raw(GOOD_PAYLOAD, cbor2.dumps({1: -19})),
    "extra header": signed_raw(
        GOOD_PAYLOAD, cbor2.dumps({1: -19, 3: "application/cwt", 4: LOG.key_id}, canonical=True)
    ),
    "unsorted header": signed_raw(GOOD_PAYLOAD, b"\xa2\x04\x44" + LOG.key_id + b"\x01\x32"),
    "8-byte kid": signed_raw(GOOD_PAYLOAD, cbor2.dumps({1: -19, 4: LOG.key_id * 2})),
    "unprotected kid": signed_raw(GOOD_PAYLOAD, unprotected=cbor2.dumps({4: LOG.key_id})),
    "untagged": signed_raw(GOOD_PAYLOAD, tag=b""),
    "tag 98 (COSE_Sign)": signed_raw(GOOD_PAYLOAD, tag=b"\xd8\x62"),
    "CWT tag 61 around it": b"\xd8\x3d" + signed_raw(GOOD_PAYLOAD),
    "null payload": cbor2.dumps(cbor2.CBORTag(18, [GOOD_PROTECTED, {}, None, SIGNATURE])),
    "indefinite array": b"\xd2\x9f" + RAW[2:] + b"\xff",
    "short signature": cbor2.dumps(
        cbor2.CBORTag(18, [GOOD_PROTECTED, {}, GOOD_PAYLOAD, SIGNATURE[:63]])
    ),
    "text signature": cbor2.dumps(
        cbor2.CBORTag(18, [GOOD_PROTECTED, {}, GOOD_PAYLOAD, SIGNATURE.hex()])
    ),
    "five items": cbor2.dumps(
        cbor2.CBORTag(18, [GOOD_PROTECTED, {}, GOOD_PAYLOAD, SIGNATURE, b""])
    ),
}


@pytest.mark.parametrize("case", sorted(WRONG_ENVELOPES))
def test_a_wrong_cose_structure_is_refused(case: str) -> None:
    with pytest.raises(MalformedError):
        mark.verify(b32(WRONG_ENVELOPES[case]), LOG)


# --- hostile input: only the project's errors -------------------------------------------


@settings(max_examples=300)
@given(st.text(max_size=400))
def test_arbitrary_text_gives_only_project_errors(text: str) -> None:
    with contextlib.suppress(QILedgerError):
        mark.verify(text, LOG)


@settings(max_examples=300)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_give_only_project_errors(data: bytes) -> None:
    with pytest.raises(QILedgerError):
        mark.verify(b32(data), LOG)


CBOR_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.binary(max_size=40)
    | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.integers(-70003, 10) | st.text(max_size=3), inner, max_size=5)
    ),
    max_leaves=12,
)


@settings(max_examples=300)
@given(CBOR_VALUES)
def test_arbitrary_signed_claims_give_only_malformed(value: Any) -> None:
    """Anything the log key signed that is not exactly the claims map is refused
    cleanly (the registry never signs such a thing, but the parser must hold)."""
    payload = cbor2.dumps(value)
    if payload == GOOD_PAYLOAD:
        return
    try:
        claims = mark.verify(b32(signed_raw(payload)), LOG)
    except MalformedError:
        return
    # Accepted: then it was exactly the canonical claims map of what it returned.
    assert payload == cbor2.dumps(claims_map(claims), canonical=True)


@given(
    st.text(min_size=1, max_size=80).filter(lambda s: s.strip() == s),
    st.binary(min_size=32, max_size=32),
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**64 - 1),
)
def test_any_claims_round_trip_and_cwt_agrees(
    certificate_id: str, digest: bytes, index: int, issued_at: int
) -> None:
    try:
        certificate_id.encode("utf-8")
    except UnicodeEncodeError:
        with pytest.raises(MalformedError):
            mark.sign(mark.MarkClaims(certificate_id, digest, index, issued_at), LOG_KEY, LOG)
        return
    claims = mark.MarkClaims(certificate_id, digest, index, issued_at)
    token = mark.sign(claims, LOG_KEY, LOG)
    assert mark.verify(token, LOG) == claims
    payload = COSE.new().decode(unb32(token), cose_key(LOG_KEY, LOG.key_id))
    assert payload == cbor2.dumps(claims_map(claims), canonical=True)


@pytest.mark.parametrize(
    "claims",
    [
        mark.MarkClaims("", CLAIMS.document_sha256, 1, 1),
        mark.MarkClaims("A/B", b"\x00" * 31, 1, 1),
        mark.MarkClaims("A/B", CLAIMS.document_sha256, -1, 1),
        mark.MarkClaims("A/B", CLAIMS.document_sha256, 1, 2**64),
        mark.MarkClaims("A/B", CLAIMS.document_sha256, True, 1),
    ],
    ids=["empty id", "short digest", "negative index", "iat too large", "bool index"],
)
def test_sign_refuses_claims_outside_the_format(claims: mark.MarkClaims) -> None:
    with pytest.raises(MalformedError):
        mark.sign(claims, LOG_KEY, LOG)


# --- URLs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "prefix"),
    [
        ("https://registry.example.org", "HTTPS://REGISTRY.EXAMPLE.ORG/M/"),
        ("https://registry.example.org/", "HTTPS://REGISTRY.EXAMPLE.ORG/M/"),
        ("http://127.0.0.1:8000", "HTTP://127.0.0.1:8000/M/"),
        ("HTTPS://Qi-Ledger.Example:8443", "HTTPS://QI-LEDGER.EXAMPLE:8443/M/"),
    ],
)
def test_mark_url_is_upper_case_and_qr_alphanumeric(base: str, prefix: str) -> None:
    url = mark.mark_url(base, TOKEN)
    assert url == prefix + TOKEN
    assert set(url) <= QR_ALPHANUMERIC
    assert mark.token_from_url(url) == TOKEN
    assert mark.token_from_url(url.lower()) == TOKEN
    assert mark.verify(mark.token_from_url(url.lower()), LOG) == CLAIMS


def test_an_ipv6_host_works_but_leaves_alphanumeric_mode() -> None:
    url = mark.mark_url("http://[::1]:8000", TOKEN)
    assert url == f"HTTP://[::1]:8000/M/{TOKEN}"
    assert set(url) - QR_ALPHANUMERIC == {"[", "]"}
    assert mark.token_from_url(url) == TOKEN


@pytest.mark.parametrize(
    "base",
    [
        "ftp://registry.example.org",
        "registry.example.org",
        "https://",
        "https://registry.example.org/verifier",
        "https://registry.example.org/?x=1",
        "https://user@registry.example.org",
        "https://[::1",
        "https://exa\tmple.org",
        "https://example.org\n",
        "https://exa mple.org",
        "https://example.org:99999999",
        "https://example.org//",
    ],
)
def test_mark_url_refuses_other_base_urls(base: str) -> None:
    with pytest.raises(MalformedError):
        mark.mark_url(base, TOKEN)


def test_mark_url_refuses_a_token_that_is_not_base32() -> None:
    for token in ("", "abc!", TOKEN + "="):
        with pytest.raises(MalformedError):
            mark.mark_url("https://x.example", token)


@pytest.mark.parametrize(
    "url",
    [
        f"https://x.example/M/{TOKEN}".lower(),
        f"HtTpS://X.Example/m/{TOKEN.lower()}",
        f"http://x.example:8000/M/{TOKEN}",
    ],
)
def test_token_from_url_takes_any_case(url: str) -> None:
    assert mark.token_from_url(url) == TOKEN


@pytest.mark.parametrize(
    "url",
    [
        "",
        TOKEN,
        f"https://x.example/c/{TOKEN}",
        f"https://x.example/M/{TOKEN}/",
        f"https://x.example/M/{TOKEN}?x=1",
        f"https://x.example/M/{TOKEN}#f",
        f"https://x.example/prefix/M/{TOKEN}",
        f"file:///M/{TOKEN}",
        f"https:///M/{TOKEN}",
        "https://x.example/M/",
        "https://x.example/M/AB=C",
        "https://[::1/M/AAAA",
        "https://x.example/M/" + "A" * 5000,
        "https://x.example/M/AB\tCD",
        "https://x.example/M/AB\nCD",
        "https://x.example:123456/M/AAAA",
        "https://a b/M/AAAA",
    ],
)
def test_token_from_url_refuses_other_urls(url: str) -> None:
    with pytest.raises(MalformedError):
        mark.token_from_url(url)


@given(st.text(max_size=200))
def test_token_from_url_on_arbitrary_text_gives_only_malformed(text: str) -> None:
    try:
        token = mark.token_from_url(text)
    except MalformedError:
        return
    assert token
    assert set(token) <= set(string.ascii_uppercase + "234567")
