"""Byte formats owned by ``verifier``: round trips, strict parsing, signature rules, and
hostile input. Every parser, fed random or mutated bytes, must either parse or raise a
:class:`QILedgerError`; a stray built-in exception fails the test (see
``verifier_helpers.only_our_errors``). Where a mutated input is *accepted*, the tests
check it still says what the signer signed.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, x25519
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.verifier_helpers import (
    ISSUER_KEY,
    LOG_KEY,
    LOG_ORIGIN,
    LOG_VERIFIER,
    SIGNED_AT,
    TYPE_CONFUSION,
    any_text,
    b64,
    json_values,
    key_from,
    leaf_data,
    leaf_hashes,
    mutated,
    node_map,
    only_our_errors,
    reader,
    sample_statements,
    signed_checkpoint,
    with_field_replaced,
)
from verifier import checkpoint, dsse, encoding, entry, jcs, merkle, note, proof, statement
from verifier.errors import (
    MalformedError,
    NonCanonicalError,
    ProofError,
    QILedgerError,
    SignatureError,
    TooLargeError,
    UnknownKeyError,
    VerificationError,
)
from verifier.keys import KeyId, PublicKey, SigningKey
from verifier.merkle import Hash
from verifier.note import NoteSignature, NoteVerifier

HOSTILE = settings(max_examples=250, deadline=None)
PROPERTY = settings(max_examples=100, deadline=None)

WITNESS_KEY = key_from("witness")
WITNESS_NAME = "witness.example/w1"
STRANGER = key_from("stranger")


# === encoding =========================================================================


@PROPERTY
@given(st.binary(max_size=100))
def test_base64_round_trip(data: bytes) -> None:
    text = encoding.b64encode(data)
    assert text == base64.b64encode(data).decode()
    assert encoding.b64decode(text, "x") == data
    url = encoding.b64url_encode(data)
    assert "=" not in url
    assert "+" not in url
    assert "/" not in url
    assert base64.urlsafe_b64decode(url + "=" * (-len(url) % 4)) == data


@pytest.mark.parametrize(
    "text",
    ["QR==", "QQ", "QQ=", "QQ===", "QQ==\n", " QQ==", "Q Q==", "-_8=", "+/8", "é", "====", "A"],
)
def test_base64_refuses_every_other_spelling(text: str) -> None:
    with pytest.raises(MalformedError):
        encoding.b64decode(text, "x")


@pytest.mark.parametrize("value", [b"QQ==", None, 5, ["QQ=="]])
def test_base64_refuses_non_strings(value: object) -> None:
    with pytest.raises(MalformedError):
        encoding.b64decode(value, "x")  # type: ignore[arg-type]


def test_hex_decode() -> None:
    assert encoding.hex_decode("00ff10", 3, "x") == b"\x00\xff\x10"
    for bad in [
        "00FF10",
        "00ff1",
        "00ff1000",
        "00 ff 10",
        "00 ff1 ",
        " 00ff1",
        "0xff10",
        "\u0660\u0660ff10",
        "00ff1g",
        "",
        5,
        None,
        b"00ff10",
    ]:
        with pytest.raises(MalformedError):
            encoding.hex_decode(bad, 3, "x")  # type: ignore[arg-type]


def test_hex_decode_refuses_whitespace_that_shortens_the_value() -> None:
    """Regression: bytes.fromhex skips spaces, so 64 characters could decode to fewer
    than 32 bytes and pass the length check on the text."""
    text = "00 " * 20 + "0000"
    assert len(text) == 64
    with pytest.raises(MalformedError):
        encoding.hex_decode(text, 32, "prev")


@HOSTILE
@given(any_text, st.integers(0, 40))
def test_encoding_hostile_text(text: str, length: int) -> None:
    raw = only_our_errors(encoding.b64decode, text, "x")
    if raw is not None:
        assert encoding.b64encode(raw) == text  # type: ignore[arg-type]
    raw = only_our_errors(encoding.hex_decode, text, length, "x")
    if raw is not None:
        assert raw.hex() == text  # type: ignore[attr-defined]
        assert len(raw) == length  # type: ignore[arg-type]


# === keys =============================================================================

# RFC 8032 §7.1, TEST 1 and TEST 2.
RFC8032 = [
    (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e"
        "39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f"
        "3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
]


@pytest.mark.parametrize(("seed", "public", "message", "signature"), RFC8032)
def test_ed25519_rfc8032_vectors(seed: str, public: str, message: str, signature: str) -> None:
    key = SigningKey.from_seed(bytes.fromhex(seed))
    assert key.public_key.raw == bytes.fromhex(public)
    assert key.sign(bytes.fromhex(message)) == bytes.fromhex(signature)
    verifying = PublicKey.from_raw(bytes.fromhex(public))
    verifying.verify(bytes.fromhex(signature), bytes.fromhex(message))
    with pytest.raises(SignatureError):
        verifying.verify(bytes.fromhex(signature), bytes.fromhex(message) + b"\x00")
    bad = bytearray(bytes.fromhex(signature))
    bad[10] ^= 1
    with pytest.raises(SignatureError):
        verifying.verify(bytes(bad), bytes.fromhex(message))


def test_public_key_forms() -> None:
    key = ISSUER_KEY.public_key
    assert key.key_id == hashlib.sha256(key.raw).hexdigest()
    assert PublicKey.from_pem(key.to_pem()) == key
    assert key.to_pem().startswith(b"-----BEGIN PUBLIC KEY-----\n")
    assert PublicKey.from_raw(key.raw) == key
    assert key != STRANGER.public_key
    with pytest.raises(SignatureError):
        key.verify(b"\x00" * 63, b"m")
    with pytest.raises(SignatureError):
        key.verify(STRANGER.sign(b"m"), b"m")


@pytest.mark.parametrize("raw", [b"", b"\x00" * 31, b"\x00" * 33, "a" * 32, bytearray(32), None])
def test_public_key_wrong_raw_values(raw: object) -> None:
    with pytest.raises(MalformedError):
        PublicKey.from_raw(raw)  # type: ignore[arg-type]


def test_public_key_pem_refusals() -> None:
    ec_pem = (
        ec.derive_private_key(12345, ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    x_pem = (
        x25519.X25519PrivateKey.from_private_bytes(bytes(32))
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    for pem in [ec_pem, x_pem, b"", b"not a pem", ISSUER_KEY.public_key.to_pem()[:-30], "text"]:
        with pytest.raises(MalformedError):
            PublicKey.from_pem(pem)  # type: ignore[arg-type]


def test_signing_key() -> None:
    seed = hashlib.sha256(b"seed").digest()
    key = SigningKey.from_seed(seed)
    assert SigningKey.generate(seed).seed() == seed
    assert key.seed() == seed
    assert seed.hex() not in repr(key)
    assert str(list(seed)) not in repr(key)
    assert key.sign(b"m") == key.sign(b"m")  # Ed25519 is deterministic
    key.public_key.verify(key.sign(b"m"), b"m")
    for bad in [b"", seed[:31], seed + b"\x00", seed.hex()]:
        with pytest.raises(MalformedError):
            SigningKey.from_seed(bad)  # type: ignore[arg-type]


@HOSTILE
@given(st.binary(min_size=32, max_size=32), st.binary(max_size=70), st.binary(max_size=40))
def test_random_keys_and_signatures(raw: bytes, signature: bytes, message: bytes) -> None:
    key = only_our_errors(PublicKey.from_raw, raw)
    if isinstance(key, PublicKey):
        with pytest.raises(VerificationError):
            key.verify(signature, message)


@HOSTILE
@given(mutated(ISSUER_KEY.public_key.to_pem()))
def test_mutated_pem(data: bytes) -> None:
    only_our_errors(PublicKey.from_pem, data)


# === signed notes =====================================================================

TEXT = "hello note\nsecond line\n"


def _cosign(text: str, name: str, key: SigningKey) -> NoteSignature:
    return NoteSignature(name, note.key_id(name, key.public_key), key.sign(text.encode()))


def _log_note(text: str = TEXT, *extra: NoteSignature) -> bytes:
    return note.sign(text, LOG_ORIGIN, LOG_KEY, extra)


def test_note_round_trip_and_layout() -> None:
    data = _log_note()
    text, _, block = data.decode().partition("\n\n")
    assert text + "\n" == TEXT
    assert block.startswith(f"\u2014 {LOG_ORIGIN} ")
    raw = base64.b64decode(block.split(" ")[2])
    assert raw[:4] == LOG_VERIFIER.key_id
    assert len(raw) == 68
    parsed = note.parse(data)
    assert parsed.text == TEXT
    assert parsed.signatures == (
        NoteSignature(LOG_ORIGIN, LOG_VERIFIER.key_id, LOG_KEY.sign(TEXT.encode())),
    )
    verified = note.verify(data, [LOG_VERIFIER])
    assert verified.text == TEXT
    assert verified.verified_by == (LOG_ORIGIN,)


def test_note_unknown_key_signatures_are_ignored() -> None:
    witness = _cosign(TEXT, WITNESS_NAME, WITNESS_KEY)
    junk = NoteSignature("someone.else", b"\x01\x02\x03\x04", b"\x00" * 5)
    data = _log_note(TEXT, witness, junk)
    verified = note.verify(data, [LOG_VERIFIER])
    assert verified.verified_by == (LOG_ORIGIN,)
    assert len(verified.signatures) == 3
    # Same name as the log but a different key ID: also just unknown.
    impostor = NoteSignature(LOG_ORIGIN, b"\xff\xff\xff\xff", STRANGER.sign(TEXT.encode()))
    assert note.verify(_log_note(TEXT, impostor), [LOG_VERIFIER]).verified_by == (LOG_ORIGIN,)
    # Both trusted: both verified.
    witness_verifier = NoteVerifier.for_key(WITNESS_NAME, WITNESS_KEY.public_key)
    both = note.verify(data, [LOG_VERIFIER, witness_verifier])
    assert sorted(both.verified_by) == sorted([LOG_ORIGIN, WITNESS_NAME])


def test_note_bad_signature_by_a_known_key_is_an_error() -> None:
    data = bytearray(_log_note())
    sig_line_start = data.index("\u2014".encode())
    # Flip a bit inside the signature bytes (not the key ID): decode, flip, re-encode.
    name, b64sig = data[sig_line_start:].decode()[2:].rstrip("\n").split(" ")
    raw = bytearray(base64.b64decode(b64sig))
    raw[20] ^= 0x10
    bad = bytes(data[:sig_line_start]) + f"\u2014 {name} {b64(bytes(raw))}\n".encode()
    with pytest.raises(SignatureError):
        note.verify(bad, [LOG_VERIFIER])
    # A known key with a truncated signature.
    short = NoteSignature(LOG_ORIGIN, LOG_VERIFIER.key_id, b"\x00" * 10)
    data2 = note.sign(TEXT, WITNESS_NAME, WITNESS_KEY, [short])
    with pytest.raises(SignatureError):
        note.verify(data2, [LOG_VERIFIER])
    # Signed text changed after signing.
    with pytest.raises(SignatureError):
        note.verify(_log_note().replace(b"hello", b"jello"), [LOG_VERIFIER])
    # A bad known signature is not excused by a good one from another trusted key.
    witness_verifier = NoteVerifier.for_key(WITNESS_NAME, WITNESS_KEY.public_key)
    with pytest.raises(SignatureError):
        note.verify(data2, [witness_verifier, LOG_VERIFIER])


def test_note_duplicate_known_signature_is_refused() -> None:
    again = _cosign(TEXT, LOG_ORIGIN, LOG_KEY)
    with pytest.raises(SignatureError):
        note.verify(_log_note(TEXT, again), [LOG_VERIFIER])
    # Duplicates by an unknown key are nobody's business.
    witness = _cosign(TEXT, WITNESS_NAME, WITNESS_KEY)
    note.verify(_log_note(TEXT, witness, witness), [LOG_VERIFIER])


def test_note_without_a_trusted_signature() -> None:
    data = note.sign(TEXT, WITNESS_NAME, WITNESS_KEY)
    with pytest.raises(UnknownKeyError):
        note.verify(data, [LOG_VERIFIER])
    with pytest.raises(UnknownKeyError):
        note.verify(_log_note(), [])
    other = NoteVerifier.for_key(LOG_ORIGIN, STRANGER.public_key)
    with pytest.raises(UnknownKeyError):
        note.verify(_log_note(), [other])


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"no signatures\n",
        TEXT.encode() + b"\n",
        TEXT.encode() + b"\n- name AAAAAAAAAAA=\n",  # hyphen, not em dash
        TEXT.encode() + "\n\u2014 name AAAAAAAAAAA=".encode(),  # no final newline
        TEXT.encode() + "\n\u2014 name  AAAAAAAAAAA=\n".encode(),
        TEXT.encode() + "\n\u2014 name AAAAAAAAAAA= extra\n".encode(),
        TEXT.encode() + "\n\u2014 name AAAAAA==\n".encode(),  # 4 bytes: no signature
        TEXT.encode() + "\n\u2014 name AAAAAAAAAAB=\n".encode(),  # non-canonical base64
        TEXT.encode() + "\n\u2014 na+me AAAAAAAAAAA=\n".encode(),
        TEXT.encode() + "\n\u2014  AAAAAAAAAAA=\n".encode(),
        TEXT.encode() + "\n\u2014 name AAAAAAAAAAA=\n\n".encode(),
        b"text\x01\n\n" + "\u2014 name AAAAAAAAAAA=\n".encode(),
        b"text\x7f\n\n" + "\u2014 name AAAAAAAAAAA=\n".encode(),
        b"text\r\n\n" + "\u2014 name AAAAAAAAAAA=\n".encode(),
        b"text\xff\n\n" + "\u2014 name AAAAAAAAAAA=\n".encode(),
        TEXT.encode() + b"\n" + "\u2014 name AAAAAAAAAAA=\n".encode() * 101,
        b"x" * (note.MAX_NOTE_SIZE + 1),
    ],
)
def test_note_parse_refuses(data: bytes) -> None:
    with pytest.raises(MalformedError):
        note.parse(data)
    with pytest.raises(MalformedError):
        note.verify(data, [LOG_VERIFIER])


def test_note_sign_refuses_bad_text_and_names() -> None:
    for text in ["no newline", "ctrl\x00\n", "tab\t\n"]:
        with pytest.raises(MalformedError):
            note.sign(text, LOG_ORIGIN, LOG_KEY)
    for name in ["", "a+b", "a b", "a\nb", "tab\tname"]:
        with pytest.raises(MalformedError):
            note.sign(TEXT, name, LOG_KEY)
        with pytest.raises(MalformedError):
            NoteVerifier.for_key(name, LOG_KEY.public_key)


def test_note_verifier_key_strings() -> None:
    text = str(LOG_VERIFIER)
    name, hex_id, key = text.split("+", 2)
    assert name == LOG_ORIGIN
    assert bytes.fromhex(hex_id) == note.key_id(LOG_ORIGIN, LOG_KEY.public_key)
    assert base64.b64decode(key) == b"\x01" + LOG_KEY.public_key.raw
    assert NoteVerifier.parse(text) == LOG_VERIFIER
    assert (
        note.key_id(LOG_ORIGIN, LOG_KEY.public_key)
        == hashlib.sha256(LOG_ORIGIN.encode() + b"\n\x01" + LOG_KEY.public_key.raw).digest()[:4]
    )
    other_id = note.key_id("other", LOG_KEY.public_key).hex()
    not_ed25519 = b64(b"\x02" + LOG_KEY.public_key.raw)
    short_key = b64(b"\x01" + LOG_KEY.public_key.raw[:31])
    bad_strings = [
        f"{name}+{other_id}+{key}",  # ID of another name
        f"{name}+{hex_id.upper()}+{key}",
        f"{name}+{hex_id[:6]}+{key}",
        f"{name}+{hex_id}",
        f"{name}+{hex_id}+{not_ed25519}",
        f"{name}+{hex_id}+{short_key}",
        f"{name}+{hex_id}+{key[:-1]}",
        f"+{hex_id}+{key}",
        f"a b+{hex_id}+{key}",
        "",
    ]
    for bad in bad_strings:
        with pytest.raises(MalformedError):
            NoteVerifier.parse(bad)
    with pytest.raises(MalformedError):
        NoteVerifier.parse(None)  # type: ignore[arg-type]


def test_note_key_names_with_lone_surrogates_are_refused() -> None:
    """Regression: a verifier key from argv with undecodable bytes (surrogateescape)
    raised UnicodeEncodeError when its key ID was computed."""
    name, rest = str(LOG_VERIFIER).split("+", 1)
    for bad in [f"\udcff+{rest}", f"{name}\udcff+{rest}", f"{name}\ud800+{rest}"]:
        with pytest.raises(MalformedError):
            NoteVerifier.parse(bad)
    with pytest.raises(MalformedError):
        NoteVerifier.for_key("log\udcff", LOG_KEY.public_key)
    with pytest.raises(MalformedError):
        note.sign(TEXT, "log\udcff", LOG_KEY)


NOTE_SAMPLE = _log_note(TEXT, _cosign(TEXT, WITNESS_NAME, WITNESS_KEY))


@HOSTILE
@given(st.binary(max_size=300) | mutated(NOTE_SAMPLE))
def test_hostile_notes(data: bytes) -> None:
    only_our_errors(note.parse, data)
    verified = only_our_errors(note.verify, data, [LOG_VERIFIER])
    if verified is not None:
        # Whatever got through says exactly what the log key signed.
        assert verified.text == TEXT  # type: ignore[attr-defined]


@HOSTILE
@given(
    any_text
    # A key given on the command line: undecodable bytes arrive as lone surrogates.
    | mutated(str(LOG_VERIFIER).encode()).map(lambda b: b.decode("utf-8", "surrogateescape"))
)
def test_hostile_verifier_keys(text: str) -> None:
    parsed = only_our_errors(NoteVerifier.parse, text)
    if parsed is not None:
        assert isinstance(parsed, NoteVerifier)
        assert parsed.key_id == note.key_id(parsed.name, parsed.public_key)


# === checkpoints ======================================================================

ROOT = Hash(hashlib.sha256(b"root").digest())


@PROPERTY
@given(
    st.text(min_size=1, max_size=40).filter(lambda s: "\n" not in s),
    st.integers(0, checkpoint.MAX_TREE_SIZE),
    st.binary(min_size=32, max_size=32),
    st.lists(st.text(min_size=1, max_size=20).filter(lambda s: "\n" not in s), max_size=3),
)
def test_checkpoint_text_round_trip(
    origin: str, size: int, root: bytes, extensions: list[str]
) -> None:
    cp = checkpoint.Checkpoint(origin, size, Hash(root), tuple(extensions))
    text = cp.to_text()
    assert text == "".join(f"{line}\n" for line in [origin, size, b64(root), *extensions])
    assert checkpoint.Checkpoint.from_text(text) == cp


@pytest.mark.parametrize(
    "text",
    [
        f"{LOG_ORIGIN}\n5\n{b64(ROOT)}",  # no final newline
        f"{LOG_ORIGIN}\n5\n",
        f"\n5\n{b64(ROOT)}\n",
        f"{LOG_ORIGIN}\n05\n{b64(ROOT)}\n",
        f"{LOG_ORIGIN}\n+5\n{b64(ROOT)}\n",
        f"{LOG_ORIGIN}\n-5\n{b64(ROOT)}\n",
        f"{LOG_ORIGIN}\n 5\n{b64(ROOT)}\n",
        f"{LOG_ORIGIN}\n5 \n{b64(ROOT)}\n",
        f"{LOG_ORIGIN}\n\u0665\n{b64(ROOT)}\n",  # ARABIC-INDIC DIGIT FIVE
        f"{LOG_ORIGIN}\n\n{b64(ROOT)}\n",
        f"{LOG_ORIGIN}\n{2**63}\n{b64(ROOT)}\n",
        f"{LOG_ORIGIN}\n{'9' * 5000}\n{b64(ROOT)}\n",
        f"{LOG_ORIGIN}\n5\n{b64(ROOT[:31])}\n",
        f"{LOG_ORIGIN}\n5\n{b64(ROOT)[:-1]}\n",
        f"{LOG_ORIGIN}\n5\n{b64(ROOT)}\n\n",  # empty extension line
        f"{LOG_ORIGIN}\n5\n{b64(ROOT)}\next\n\n",
    ],
)
def test_checkpoint_from_text_refuses(text: str) -> None:
    with pytest.raises(MalformedError):
        checkpoint.Checkpoint.from_text(text)


def test_checkpoint_sizes_at_the_limits() -> None:
    top = checkpoint.MAX_TREE_SIZE
    assert checkpoint.Checkpoint.from_text(f"o\n{top}\n{b64(ROOT)}\n").size == top
    assert checkpoint.Checkpoint.from_text(f"o\n0\n{b64(merkle.EMPTY_ROOT)}\n").size == 0


def test_checkpoint_sign_and_verify() -> None:
    cp = checkpoint.Checkpoint(LOG_ORIGIN, 5, ROOT, ("ext line",))
    data = checkpoint.sign(cp, LOG_KEY)
    assert data == note.sign(cp.to_text(), LOG_ORIGIN, LOG_KEY)
    signed = checkpoint.verify(data, LOG_VERIFIER)
    assert signed.checkpoint == cp
    assert signed.note == data
    assert checkpoint.verify(data, [LOG_VERIFIER]).checkpoint == cp
    # Witness cosignatures ride along.
    cosigned = note.sign(cp.to_text(), LOG_ORIGIN, LOG_KEY, [_cosign(cp.to_text(), "w", STRANGER)])
    assert checkpoint.verify(cosigned, LOG_VERIFIER).checkpoint == cp
    with pytest.raises(UnknownKeyError):
        checkpoint.verify(data, NoteVerifier.for_key(LOG_ORIGIN, STRANGER.public_key))
    with pytest.raises(SignatureError):
        checkpoint.verify(data.replace(b"\n5\n", b"\n6\n"), LOG_VERIFIER)


def test_checkpoint_origin_must_be_the_signing_key_name() -> None:
    """A key trusted under one name must not vouch for another log's checkpoints."""
    other_name = "other.example/log"
    other = NoteVerifier.for_key(other_name, LOG_KEY.public_key)
    text = checkpoint.Checkpoint(LOG_ORIGIN, 5, ROOT).to_text()
    data = note.sign(text, other_name, LOG_KEY)
    assert note.verify(data, [other]).verified_by == (other_name,)
    with pytest.raises(SignatureError):
        checkpoint.verify(data, other)
    with pytest.raises(SignatureError):
        checkpoint.verify(data, [other, NoteVerifier.for_key("third", STRANGER.public_key)])


def test_checkpoint_note_that_is_not_a_checkpoint() -> None:
    data = note.sign("just a note\n", LOG_ORIGIN, LOG_KEY)
    with pytest.raises(MalformedError):
        checkpoint.verify(data, LOG_VERIFIER)
    with pytest.raises(MalformedError):
        checkpoint.Checkpoint("two\nlines", 1, ROOT).to_text()


CHECKPOINT_SAMPLE = checkpoint.sign(checkpoint.Checkpoint(LOG_ORIGIN, 12345, ROOT, ("x",)), LOG_KEY)


@HOSTILE
@given(st.binary(max_size=200) | mutated(CHECKPOINT_SAMPLE))
def test_hostile_checkpoints(data: bytes) -> None:
    signed = only_our_errors(checkpoint.verify, data, LOG_VERIFIER)
    if signed is not None:
        assert signed.checkpoint == checkpoint.Checkpoint(  # type: ignore[attr-defined]
            LOG_ORIGIN, 12345, ROOT, ("x",)
        )
    text = data.decode("utf-8", "replace")
    only_our_errors(checkpoint.Checkpoint.from_text, text)


@HOSTILE
@given(any_text | mutated(CHECKPOINT_SAMPLE).map(lambda b: b.decode("utf-8", "surrogateescape")))
def test_hostile_checkpoint_text(text: str) -> None:
    cp = only_our_errors(checkpoint.Checkpoint.from_text, text)
    if cp is not None:
        assert cp.to_text() == text  # type: ignore[attr-defined]


# === DSSE =============================================================================

PAYLOAD = statement.encode(sample_statements()["certificate.issue"])
KEYS = {ISSUER_KEY.public_key.key_id: ISSUER_KEY.public_key}


def _envelope_json(**changes: Any) -> dict[str, Any]:
    return {**dsse.sign(PAYLOAD, ISSUER_KEY).to_json(), **changes}


def _dumps(value: object) -> bytes:
    return json.dumps(value).encode()


def test_pae_known_answers() -> None:
    assert dsse.pae("", b"") == b"DSSEv1 0  0 "
    assert dsse.pae("\u00e9", b"ab") == b"DSSEv1 2 \xc3\xa9 2 ab"
    assert dsse.pae(dsse.STATEMENT_PAYLOAD_TYPE, b"{}") == (
        b"DSSEv1 39 application/vnd.qiledger.statement+json 2 {}"
    )


def test_dsse_round_trip() -> None:
    env = dsse.sign(PAYLOAD, ISSUER_KEY)
    assert env.payload_type == dsse.STATEMENT_PAYLOAD_TYPE
    assert env.signatures[0].keyid == ISSUER_KEY.public_key.key_id
    ISSUER_KEY.public_key.verify(env.signatures[0].sig, dsse.pae(env.payload_type, PAYLOAD))
    data = env.canonical_bytes()
    assert data == jcs.canonical_bytes(env.to_json())
    assert dsse.parse(data) == env
    assert dsse.from_json(env.to_json()) == env
    verified = dsse.verify(dsse.parse(data), KEYS)
    assert verified.payload == PAYLOAD
    assert verified.signed_by == ISSUER_KEY.public_key
    # Non-canonical JSON spelling is accepted for an envelope (it is not hashed as is).
    assert dsse.parse(json.dumps(env.to_json(), indent=2).encode()) == env


@PROPERTY
@given(
    st.text(max_size=30),
    st.binary(max_size=100),
    st.lists(st.tuples(st.binary(min_size=32, max_size=32), st.binary(max_size=70)), max_size=3),
)
def test_dsse_spliced_canonical_bytes(
    payload_type: str, payload: bytes, sigs: list[tuple[bytes, bytes]]
) -> None:
    env = dsse.UnverifiedEnvelope(
        payload_type,
        payload,
        tuple(dsse.Signature(KeyId(raw.hex()), sig) for raw, sig in sigs),
    )
    assert env.canonical_bytes() == jcs.canonical_bytes(env.to_json())
    if sigs:
        assert dsse.parse(env.canonical_bytes()) == env


def test_dsse_payload_type_mismatch() -> None:
    env = dsse.sign(PAYLOAD, ISSUER_KEY, payload_type="application/vnd.in-toto+json")
    with pytest.raises(MalformedError):
        dsse.verify(env, KEYS)
    assert dsse.verify(env, KEYS, payload_type="application/vnd.in-toto+json").payload == PAYLOAD
    # The type is signed: relabelling a signed envelope breaks the signature.
    relabelled = dsse.UnverifiedEnvelope(
        "application/vnd.in-toto+json", PAYLOAD, dsse.sign(PAYLOAD, ISSUER_KEY).signatures
    )
    with pytest.raises(SignatureError):
        dsse.verify(relabelled, KEYS, payload_type="application/vnd.in-toto+json")


def test_dsse_unknown_key() -> None:
    env = dsse.sign(PAYLOAD, STRANGER)
    with pytest.raises(UnknownKeyError):
        dsse.verify(env, KEYS)
    with pytest.raises(UnknownKeyError):
        dsse.verify(env, {})
    # A signature claiming a known keyid is checked against that key.
    claimed = dsse.Signature(ISSUER_KEY.public_key.key_id, env.signatures[0].sig)
    forged = dsse.UnverifiedEnvelope(env.payload_type, PAYLOAD, (claimed,))
    with pytest.raises(SignatureError):
        dsse.verify(forged, KEYS)


def test_dsse_bad_signatures() -> None:
    env = dsse.sign(PAYLOAD, ISSUER_KEY)
    good = env.signatures[0]
    flipped = dsse.Signature(good.keyid, bytes([good.sig[0] ^ 1]) + good.sig[1:])
    short = dsse.Signature(good.keyid, good.sig[:-1])
    stranger = dsse.sign(PAYLOAD, STRANGER).signatures[0]
    for sigs in [(flipped,), (short,), (good, flipped), (flipped, good), (stranger, flipped)]:
        with pytest.raises(SignatureError):
            dsse.verify(dsse.UnverifiedEnvelope(env.payload_type, PAYLOAD, sigs), KEYS)
    tampered = dsse.UnverifiedEnvelope(env.payload_type, PAYLOAD + b" ", env.signatures)
    with pytest.raises(SignatureError):
        dsse.verify(tampered, KEYS)
    # Unknown keys' signatures are skipped; the known one decides.
    mixed = dsse.UnverifiedEnvelope(env.payload_type, PAYLOAD, (stranger, good))
    assert dsse.verify(mixed, KEYS).signed_by == ISSUER_KEY.public_key
    with pytest.raises(SignatureError):
        dsse.from_json(_envelope_json(signatures=[]))


def test_dsse_pending_signatures() -> None:
    env = dsse.sign(PAYLOAD, ISSUER_KEY)
    stranger = dsse.sign(PAYLOAD, STRANGER).signatures[0]
    mixed = dsse.UnverifiedEnvelope(env.payload_type, PAYLOAD, (stranger, *env.signatures))
    pending = dsse.pending_signatures(mixed, KEYS)
    assert len(pending) == 1
    assert pending[0].key == ISSUER_KEY.public_key
    assert pending[0].message == dsse.pae(env.payload_type, PAYLOAD)
    pending[0].check()
    bad = dsse.PendingSignature(ISSUER_KEY.public_key, stranger.sig, pending[0].message)
    with pytest.raises(SignatureError):
        bad.check()


def test_dsse_size_limit() -> None:
    base = dsse.sign(b"", ISSUER_KEY).canonical_bytes()
    assert len(base) < dsse.MAX_ENVELOPE_SIZE
    exact = base[:-1] + b" " * (dsse.MAX_ENVELOPE_SIZE - len(base)) + b"}"
    assert len(exact) == dsse.MAX_ENVELOPE_SIZE
    assert dsse.parse(exact).payload == b""
    with pytest.raises(TooLargeError):
        dsse.parse(exact[:-1] + b" }")
    big = dsse.sign(b"x" * 60_000, ISSUER_KEY).canonical_bytes()
    assert len(big) > dsse.MAX_ENVELOPE_SIZE
    with pytest.raises(TooLargeError) as caught:
        dsse.parse(big)
    assert isinstance(caught.value, MalformedError)


def _sig_entry(**changes: Any) -> dict[str, Any]:
    return {**_envelope_json()["signatures"][0], **changes}


@pytest.mark.parametrize(
    "value",
    [
        _envelope_json(payload="YWI"),  # no padding (b"ab" is "YWI=")
        _envelope_json(payload="QR=="),  # non-zero padding bits
        _envelope_json(payload=_envelope_json()["payload"] + "\n"),
        _envelope_json(payload=base64.urlsafe_b64encode(b"\xfb\xff" * 5).decode()),
        _envelope_json(signatures=[_sig_entry(sig=_sig_entry()["sig"].rstrip("="))]),
        _envelope_json(signatures=[_sig_entry(sig="QR==")]),
        _envelope_json(extra="field"),  # unknown fields
        _envelope_json(signatures=[_sig_entry(extra=1)]),
        _envelope_json(signatures=[_sig_entry(cert="pem")]),
        {k: v for k, v in _envelope_json().items() if k != "payloadType"},  # missing fields
        {k: v for k, v in _envelope_json().items() if k != "payload"},
        {k: v for k, v in _envelope_json().items() if k != "signatures"},
        _envelope_json(signatures=[{"sig": _sig_entry()["sig"]}]),
        _envelope_json(payloadType=5),  # wrong types
        _envelope_json(payloadType=None),
        _envelope_json(payload=5),
        _envelope_json(signatures={"keyid": "x"}),
        _envelope_json(signatures=["sig"]),
        _envelope_json(signatures=[_sig_entry(keyid=_sig_entry()["keyid"].upper())]),
        _envelope_json(signatures=[_sig_entry(keyid=_sig_entry()["keyid"][:-2])]),
        _envelope_json(signatures=[_sig_entry(keyid="g" * 64)]),
        _envelope_json(signatures=[_sig_entry(keyid="\u0660" * 64)]),
        _envelope_json(signatures=[_sig_entry(keyid=5)]),
        _envelope_json(signatures=[_sig_entry()] * (dsse.MAX_SIGNATURES + 1)),
        [],
        "envelope",
        None,
    ],
)
def test_dsse_from_json_refuses(value: object) -> None:
    with pytest.raises(MalformedError):
        dsse.from_json(value)
    with pytest.raises(MalformedError):
        dsse.parse(_dumps(value))


def test_dsse_parse_refuses_duplicate_keys() -> None:
    good = dsse.sign(PAYLOAD, ISSUER_KEY).canonical_bytes()
    doubled = good[:-1] + b',"payloadType":"text/plain"}'
    with pytest.raises(MalformedError):
        dsse.parse(doubled)


ENVELOPE_SAMPLE = dsse.sign(b'{"a":1}', ISSUER_KEY).canonical_bytes()


@HOSTILE
@given(st.binary(max_size=300) | mutated(ENVELOPE_SAMPLE))
def test_hostile_envelopes(data: bytes) -> None:
    env = only_our_errors(dsse.parse, data)
    if isinstance(env, dsse.UnverifiedEnvelope):
        verified = only_our_errors(dsse.verify, env, KEYS)
        if verified is not None:
            assert verified.payload == b'{"a":1}'  # type: ignore[attr-defined]


@HOSTILE
@given(with_field_replaced(json.loads(ENVELOPE_SAMPLE)))
def test_hostile_envelope_json(value: dict[str, Any]) -> None:
    env = only_our_errors(dsse.from_json, value)
    if isinstance(env, dsse.UnverifiedEnvelope):
        only_our_errors(dsse.verify, env, KEYS)
        only_our_errors(env.canonical_bytes)


# --- type confusion: what each field accepts, written out from the field rules ---------
#
# Each table names the TYPE_CONFUSION values (by their JSON spelling: json.dumps keeps
# 0 and false apart) that still satisfy a field's rule. Every other value must be
# refused. The tables are the test's oracle, kept apart from the code under test.

_ZEROS = "0" * 64  # 64 lowercase hex digits, and 64 characters of valid base64
_LONE_SURROGATE = "\ud800"  # a Python str, but no Unicode text: JCS cannot write it


def _spelling(value: object) -> str:
    return json.dumps(value)


def _spellings(*values: object) -> frozenset[str]:
    return frozenset(_spelling(v) for v in values)


def _has_lone_surrogate(value: object) -> bool:
    if isinstance(value, str):
        return value == _LONE_SURROGATE
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_lone_surrogate(v) for v in value)
    return False


def _outcome(call: Any, *args: object) -> tuple[type[QILedgerError] | None, Any]:
    """(None, result) if ``call`` accepts, (error class, None) if it refuses with our
    error; any other exception propagates and fails the test."""
    try:
        return None, call(*args)
    except QILedgerError as exc:
        return type(exc), None


def _assert_outcome(
    expected: type[QILedgerError] | None, call: Any, *args: object, what: str
) -> Any:
    error, result = _outcome(call, *args)
    assert error is expected, f"{what}: expected {expected}, got {error}"
    return result


# DSSE (DESIGN.md item 2): payloadType any string (verify then requires ours),
# payload and sig canonical padded base64, keyid 64 lowercase hex digits,
# signatures a non-empty list of {keyid, sig}.
_ENVELOPE_SHAPE_ACCEPTS = {
    "payloadType": _spellings("", " ", "x", _ZEROS, _LONE_SURROGATE, "\x00", "\u0660"),
    "payload": _spellings("", _ZEROS),
    "signatures": frozenset(),
    "keyid": _spellings(_ZEROS),
    "sig": _spellings("", _ZEROS),
    "signatures[0]": frozenset(),
}
# What verify must say of an envelope whose shape was accepted: the signed payload
# type is not ours, the signed payload changed, no known key, the signature is not one.
_ENVELOPE_VERIFY_ERROR: dict[str, type[QILedgerError]] = {
    "payloadType": MalformedError,
    "payload": SignatureError,
    "keyid": UnknownKeyError,
    "sig": SignatureError,
}


def _envelope_confusions(good: dict[str, Any]) -> list[tuple[str, Any, dict[str, Any]]]:
    """(field, replacement, envelope) for every field and TYPE_CONFUSION value."""
    sig = good["signatures"][0]
    out = [(name, bad, {**good, name: bad}) for name in good for bad in TYPE_CONFUSION]
    out += [
        (name, bad, {**good, "signatures": [{**sig, name: bad}]})
        for name in sig
        for bad in TYPE_CONFUSION
    ]
    out += [("signatures[0]", bad, {**good, "signatures": [bad]}) for bad in TYPE_CONFUSION]
    return out


def _envelope_shape_error(field: str, bad: object) -> type[QILedgerError] | None:
    if _spelling(bad) in _ENVELOPE_SHAPE_ACCEPTS[field]:
        return None
    if field == "signatures" and bad == []:
        return SignatureError  # "envelope has no signature"
    return MalformedError


def test_envelope_type_confusion() -> None:
    good = json.loads(ENVELOPE_SAMPLE)
    variants = _envelope_confusions(good)
    assert len(variants) == (len(good) + len(good["signatures"][0]) + 1) * len(TYPE_CONFUSION)
    accepted = 0
    for field, bad, value in variants:
        what = f"envelope {field} = {bad!r}"
        shape_error = _envelope_shape_error(field, bad)
        env = _assert_outcome(shape_error, dsse.from_json, value, what=what)
        if shape_error is None:
            accepted += 1
            _assert_outcome(_ENVELOPE_VERIFY_ERROR[field], dsse.verify, env, KEYS, what=what)
        if _has_lone_surrogate(value):
            _assert_outcome(MalformedError, jcs.canonical_bytes, value, what=what)
            continue
        data = _assert_outcome(None, jcs.canonical_bytes, value, what=what)
        assert _assert_outcome(shape_error, dsse.parse, data, what=what) == env
    assert accepted == sum(len(v) for v in _ENVELOPE_SHAPE_ACCEPTS.values())


# === log entries ======================================================================

LOGGED_AT = "2026-11-24T08:00:00.123Z"


def _entry(prev: bytes = entry.GENESIS_PREV, logged_at: str = LOGGED_AT) -> bytes:
    return entry.encode(prev, logged_at, dsse.sign(PAYLOAD, ISSUER_KEY).to_json())


def test_entry_round_trip() -> None:
    prev = hashlib.sha256(b"previous").digest()
    data = _entry(prev)
    assert data.startswith(b'{"envelope":{"payload":"')
    assert data.endswith(f'"logged_at":"{LOGGED_AT}","prev":"{prev.hex()}","v":1}}'.encode())
    parsed = entry.parse(data)
    assert parsed.prev == prev
    assert parsed.logged_at == LOGGED_AT
    assert parsed.envelope == dsse.sign(PAYLOAD, ISSUER_KEY)
    assert entry.parse(_entry()).prev == bytes(32)
    assert b'"prev":"' + b"0" * 64 + b'"' in _entry()


@PROPERTY
@given(
    st.binary(min_size=32, max_size=32),
    st.datetimes(
        min_value=datetime(1970, 1, 1), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
    ),
    st.binary(max_size=200),
    st.text(max_size=30),
)
def test_entry_spliced_encoding_equals_encode(
    prev: bytes, moment: datetime, payload: bytes, payload_type: str
) -> None:
    logged_at = entry.format_time(moment)
    env = dsse.sign(payload, ISSUER_KEY, payload_type=payload_type)
    data = entry.encode(prev, logged_at, env.to_json())
    assert entry.encode_spliced(prev, logged_at, env.canonical_bytes()) == data
    parsed = entry.parse(data)
    assert parsed.envelope == env
    assert parsed.prev == prev
    assert entry.parse_time(logged_at) == moment.replace(
        microsecond=moment.microsecond // 1000 * 1000
    )


def test_format_and_parse_time() -> None:
    moment = datetime(2026, 11, 24, 16, 0, 0, 123999, tzinfo=timezone(timedelta(hours=8)))
    assert entry.format_time(moment) == "2026-11-24T08:00:00.123Z"
    assert entry.parse_time("2026-11-24T08:00:00.123Z") == datetime(
        2026, 11, 24, 8, 0, 0, 123000, tzinfo=UTC
    )
    assert entry.parse_time("2024-02-29T23:59:59.999Z").tzinfo is not None
    for bad in [
        "2026-02-30T00:00:00.000Z",
        "2026-13-01T00:00:00.000Z",
        "2026-11-24T24:00:00.000Z",
        "2026-11-24T08:00:00Z",
        "2026-11-24T08:00:00.1234Z",
        "2026-11-24T08:00:00.123z",
        "2026-11-24T08:00:00.123+00:00",
        "2026-11-24 08:00:00.123Z",
        "\uff12\uff10\uff12\uff16-11-24T08:00:00.123Z",  # fullwidth digits
        "\u0662\u0660\u0662\u0666-11-24T08:00:00.123Z",  # Arabic-Indic digits
        " 2026-11-24T08:00:00.123Z",
        "2026-11-24T08:00:00.123Z\n",
        1732435200,
        None,
    ]:
        with pytest.raises(MalformedError):
            entry.parse_time(bad)


def _entry_json(**changes: Any) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(_entry())
    value.update(changes)
    return value


@pytest.mark.parametrize(
    "value",
    [
        _entry_json(v=2),
        _entry_json(v="1"),
        _entry_json(v=True),
        _entry_json(v=None),
        _entry_json(prev="0" * 63),
        _entry_json(prev="A" * 64),
        _entry_json(prev="00 " * 20 + "0000"),
        _entry_json(prev=None),
        _entry_json(logged_at="2026-02-30T00:00:00.000Z"),
        _entry_json(logged_at="2026-11-24T08:00:00Z"),
        _entry_json(envelope={}),
        _entry_json(envelope=None),
        _entry_json(extra=1),
        {k: v for k, v in _entry_json().items() if k != "prev"},
        [],
        "entry",
    ],
)
def test_entry_parse_refuses(value: object) -> None:
    with pytest.raises(MalformedError):
        entry.parse(jcs.canonical_bytes(value))


def test_entry_must_be_canonical_and_small() -> None:
    data = _entry()
    with pytest.raises(NonCanonicalError):
        entry.parse(json.dumps(json.loads(data), indent=1).encode())
    with pytest.raises(NonCanonicalError):
        entry.parse(data.replace(b'"v":1', b'"v":1.0'))
    with pytest.raises(MalformedError):
        entry.parse(b" " * (entry.MAX_ENTRY_SIZE + 1))
    big = dsse.sign(b"x" * 50_000, ISSUER_KEY)
    with pytest.raises(MalformedError):
        entry.encode(entry.GENESIS_PREV, LOGGED_AT, big.to_json())
    with pytest.raises(MalformedError):
        entry.encode_spliced(entry.GENESIS_PREV, LOGGED_AT, big.canonical_bytes())
    with pytest.raises(MalformedError):
        entry.encode_spliced(entry.GENESIS_PREV, "yesterday", ENVELOPE_SAMPLE)


ENTRY_SAMPLE = _entry(hashlib.sha256(b"p").digest())


@HOSTILE
@given(st.binary(max_size=300) | mutated(ENTRY_SAMPLE))
def test_hostile_entries(data: bytes) -> None:
    parsed = only_our_errors(entry.parse, data)
    if isinstance(parsed, entry.LogEntry):
        assert jcs.canonical_bytes(json.loads(data)) == data
        only_our_errors(dsse.verify, parsed.envelope, KEYS)


@HOSTILE
@given(with_field_replaced(json.loads(ENTRY_SAMPLE)))
def test_hostile_entry_fields(value: dict[str, Any]) -> None:
    data = only_our_errors(jcs.canonical_bytes, value)
    if isinstance(data, bytes):
        only_our_errors(entry.parse, data)


# Log entry (DESIGN.md item 3): v is 1, prev 64 lowercase hex digits, logged_at RFC 3339
# UTC with milliseconds, envelope a DSSE envelope (its fields as above).
_ENTRY_ACCEPTS = {
    "v": frozenset(),
    "prev": _spellings(_ZEROS),
    "logged_at": frozenset(),
    "envelope": frozenset(),
}


def test_entry_type_confusion() -> None:
    good = json.loads(ENTRY_SAMPLE)
    # (field, replacement, entry, parse error, verify error of the parsed envelope)
    variants: list[tuple[str, Any, dict[str, Any], Any, Any]] = [
        (
            name,
            bad,
            {**good, name: bad},
            None if _spelling(bad) in _ENTRY_ACCEPTS[name] else MalformedError,
            None,
        )
        for name in good
        for bad in TYPE_CONFUSION
    ]
    variants += [
        (
            f"envelope.{field}",
            bad,
            {**good, "envelope": env},
            _envelope_shape_error(field, bad),
            _ENVELOPE_VERIFY_ERROR.get(field),
        )
        for field, bad, env in _envelope_confusions(good["envelope"])
    ]
    for field, bad, value, parse_error, verify_error in variants:
        what = f"entry {field} = {bad!r}"
        if _has_lone_surrogate(value):
            _assert_outcome(MalformedError, jcs.canonical_bytes, value, what=what)
            continue
        data = _assert_outcome(None, jcs.canonical_bytes, value, what=what)
        parsed = _assert_outcome(parse_error, entry.parse, data, what=what)
        if parse_error is None:
            assert parsed.prev == bytes.fromhex(value["prev"])
            assert parsed.logged_at == value["logged_at"]
            assert parsed.envelope == dsse.from_json(value["envelope"])
            _assert_outcome(verify_error, dsse.verify, parsed.envelope, KEYS, what=what)


# === statements =======================================================================

SAMPLES = sample_statements()


def test_every_statement_type_has_a_sample() -> None:
    assert set(SAMPLES) == statement.STATEMENT_TYPES
    assert {
        "accreditation.grant",
        "accreditation.suspend",
        "accreditation.restore",
        "accreditation.withdraw",
        "issuer.key.add",
        "issuer.key.revoke",
        "certificate.issue",
        "certificate.amend",
        "certificate.suspend",
        "certificate.reinstate",
        "certificate.withdraw",
    } <= statement.STATEMENT_TYPES


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_statement_round_trip(kind: str) -> None:
    fields = SAMPLES[kind]
    payload = statement.encode(fields)
    assert payload == jcs.canonical_bytes(fields)
    parsed = statement.parse(payload)
    assert parsed.type == kind
    assert parsed.fields == fields
    assert parsed["signed_at"] == SIGNED_AT
    assert parsed.get("no such field", "default") == "default"
    assert parsed.signed_at == datetime(2026, 11, 24, 8, 0, 0, 123000, tzinfo=UTC)


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_statement_fields_are_exact(kind: str) -> None:
    fields = SAMPLES[kind]
    with pytest.raises(MalformedError, match="unknown fields"):
        statement.validate({**fields, "customer": "ACME"})
    for name in fields:
        reduced = {k: v for k, v in fields.items() if k != name}
        required = name in ("type", "signed_at") or statement.FIELDS[kind][name][0]
        if required:
            with pytest.raises(MalformedError):
                statement.validate(reduced)
        else:
            statement.validate(reduced)


@pytest.mark.parametrize(
    ("kind", "changes"),
    [
        ("certificate.issue", {"type": "certificate.publish"}),
        ("certificate.issue", {"type": 5}),
        ("certificate.issue", {"certificate_id": "LAB-2/DCC-1"}),
        ("certificate.issue", {"certificate_id": "LAB-1"}),
        ("certificate.issue", {"kind": "banana"}),
        ("certificate.issue", {"kind": ["dcc"]}),
        ("certificate.issue", {"kind": {"dcc": 1}}),
        ("certificate.issue", {"document_sha256": "A" * 64}),
        ("certificate.issue", {"issued": "2026-02-30"}),
        ("certificate.issue", {"issued": "2026-11-24T00:00:00Z"}),
        ("certificate.issue", {"schema_validated": "yes"}),
        ("certificate.issue", {"schema_version": "x" * 17}),
        ("certificate.issue", {"fields": {"x": "y" * 17_000}}),
        ("certificate.issue", {"fields": ["x"]}),
        ("certificate.issue", {"issuer_id": "-LAB"}),
        ("certificate.issue", {"issuer_id": "LAB 1"}),
        ("certificate.issue", {"signed_at": "2026-11-24T08:00:00"}),
        ("certificate.issue", {"signed_at": "2026-11-24T08:00:00.1234567Z"}),
        ("certificate.issue", {"signed_at": "2026-11-31T08:00:00Z"}),
        ("certificate.issue", {"signed_at": "\u0662\u0660\u0662\u0666-11-24T08:00:00Z"}),
        ("certificate.suspend", {"reason": ""}),
        ("certificate.suspend", {"reason": "   "}),
        ("certificate.suspend", {"reason": "bell\x07"}),
        ("certificate.suspend", {"reason": "x" * 501}),
        ("accreditation.grant", {"valid_until": "2019-12-31"}),
        ("accreditation.grant", {"covers": []}),
        ("accreditation.grant", {"covers": ["dcc", "dcc"]}),
        ("accreditation.grant", {"covers": ["product"]}),
        ("accreditation.grant", {"covers": [["dcc"]]}),
        ("accreditation.grant", {"covers": [{"dcc": 1}]}),
        ("accreditation.grant", {"covers": "dcc"}),
        ("accreditation.grant", {"issuer_kind": "bakery"}),
        ("accreditation.grant", {"issuer_kind": []}),
        ("accreditation.grant", {"public_keys": []}),
        ("accreditation.grant", {"public_keys": [SAMPLES["issuer.key.add"]["public_key"]] * 2}),
        ("accreditation.grant", {"public_keys": [b64(bytes(31))]}),
        ("accreditation.grant", {"public_keys": ["not base64"]}),
        ("accreditation.grant", {"public_keys": [5]}),
        ("trust.body.add", {"country": "cn"}),
        ("trust.body.add", {"public_key": b64(bytes(33))}),
        ("issuer.key.revoke", {"compromised_at": "2026-11-01"}),
        ("issuer.key.revoke", {"key_id": "x"}),
    ],
)
def test_statement_refusals(kind: str, changes: dict[str, Any]) -> None:
    with pytest.raises(MalformedError):
        statement.validate({**SAMPLES[kind], **changes})
    with pytest.raises(MalformedError):
        statement.encode({**SAMPLES[kind], **changes})


def test_statement_certification_body_kinds() -> None:
    grant = {**SAMPLES["accreditation.grant"], "issuer_kind": "certification_body"}
    statement.validate({**grant, "covers": ["management_system", "product", "person"]})
    with pytest.raises(MalformedError):
        statement.validate(grant)  # covers dcc


def test_statement_parse_requires_canonical_json() -> None:
    fields = SAMPLES["certificate.withdraw"]
    with pytest.raises(NonCanonicalError):
        statement.parse(json.dumps(fields).encode())
    with pytest.raises(MalformedError):
        statement.parse(b"[]")
    with pytest.raises(MalformedError):
        statement.parse(b'"certificate.issue"')


def test_statement_time_and_date_parsers() -> None:
    assert statement.parse_instant("2026-11-24T08:00:00Z") == datetime(2026, 11, 24, 8, tzinfo=UTC)
    assert statement.parse_instant("2026-11-24T08:00:00.5Z").microsecond == 500_000
    assert statement.parse_date("2024-02-29").day == 29
    for bad in ["2025-02-29", "2026-1-01", "20261101", "\u0662\u0660\u0662\u0666-01-01", 5, None]:
        with pytest.raises(MalformedError):
            statement.parse_date(bad)


@HOSTILE
@given(
    any_text
    | st.sampled_from([SIGNED_AT, "2026-11-24", LOGGED_AT]).flatmap(
        lambda t: mutated(t.encode()).map(lambda b: b.decode("utf-8", "surrogateescape"))
    )
)
def test_hostile_times_dates_and_keys(text: str) -> None:
    for parse in (
        entry.parse_time,
        statement.parse_instant,
        statement.parse_date,
        statement.parse_public_key,
    ):
        only_our_errors(parse, text)


@HOSTILE
@given(st.sampled_from(sorted(SAMPLES)).flatmap(lambda k: with_field_replaced(SAMPLES[k])))
def test_hostile_statement_fields(value: dict[str, Any]) -> None:
    only_our_errors(statement.validate, value)
    data = only_our_errors(jcs.canonical_bytes, value)
    if isinstance(data, bytes):
        only_our_errors(statement.parse, data)


# Statement fields (verifier/statement.py's docstring and field rules): identifiers
# start with a letter or digit, then letters, digits, '.', '_', '-' (64 at most);
# text is non-blank, without control characters (tab and newline aside), within its
# length; digests and key ids are 64 lowercase hex digits; schema_validated a boolean;
# fields any JSON object of at most 16 KiB. Dates, times, keys, kinds, countries,
# types and certificate ids ("<issuer id>/<number>") match no TYPE_CONFUSION value.
_IDENTIFIER = _spellings("x", _ZEROS)
_TEXT = _spellings("x", _ZEROS, "\u0660")  # each limit is at least 64 characters
_STATEMENT_ACCEPTS: dict[str, frozenset[str]] = {
    "type": frozenset(),
    "signed_at": frozenset(),
    "body_id": _IDENTIFIER,
    "issuer_id": _IDENTIFIER,
    "certificate_id": frozenset(),
    "supersedes": frozenset(),
    "name": _TEXT,
    "issuer_name": _TEXT,
    "accreditation_number": _TEXT,  # at most 64: exactly the length of _ZEROS
    "standard": _TEXT,
    "scope": _TEXT,
    "reason": _TEXT,
    "schema_version": _spellings("x", "\u0660"),  # at most 16 characters
    "country": frozenset(),
    "public_key": frozenset(),
    "public_keys": frozenset(),
    "issuer_kind": frozenset(),
    "covers": _spellings(["dcc"]),  # the sample grant is for a calibration laboratory
    "valid_from": frozenset(),
    "valid_until": frozenset(),
    "compromised_at": frozenset(),
    "kind": frozenset(),
    "issued": frozenset(),
    "document_sha256": _spellings(_ZEROS),
    "key_id": _spellings(_ZEROS),
    "schema_validated": _spellings(True, False),
    "fields": _spellings({}, {"": None}, {"a": []}),
}


def _statement_accepts(kind: str, field: str, bad: object) -> bool:
    assert field in _STATEMENT_ACCEPTS, f"no rule written for {kind}.{field}"
    if kind.startswith("certificate.") and field == "issuer_id":
        return False  # certificate_id must start with "<issuer_id>/" ("LAB-1/...")
    return _spelling(bad) in _STATEMENT_ACCEPTS[field]


def _check_statement(value: dict[str, Any], accept: bool, what: str) -> None:
    error = None if accept else MalformedError
    parsed = _assert_outcome(error, statement.validate, value, what=what)
    if accept:
        assert parsed.fields == value
    if _has_lone_surrogate(value):
        assert not accept
        _assert_outcome(MalformedError, jcs.canonical_bytes, value, what=what)
        _assert_outcome(MalformedError, statement.encode, value, what=what)
        return
    data = _assert_outcome(None, jcs.canonical_bytes, value, what=what)
    parsed = _assert_outcome(error, statement.parse, data, what=what)
    if accept:
        assert parsed.fields == value
        assert statement.encode(value) == data


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_statement_type_confusion(kind: str) -> None:
    """Every field of every statement type, set to a value of every JSON type: accepted
    exactly when the value satisfies the field's rule, else refused as malformed."""
    sample = SAMPLES[kind]
    accepted = 0
    for field in sample:
        for bad in TYPE_CONFUSION:
            accept = _statement_accepts(kind, field, bad)
            accepted += accept
            _check_statement({**sample, field: bad}, accept, f"{kind}.{field} = {bad!r}")
    assert accepted == _ACCEPTED_CONFUSIONS[kind]


# How many confused statements of each type the tables accept, counted by hand
# (e.g. certificate.issue: document_sha256 1, schema_version 2, schema_validated 2,
# fields 3): a table entry that matches no TYPE_CONFUSION value changes a count.
_ACCEPTED_CONFUSIONS = {
    "trust.body.add": 2 + 3,  # body_id, name
    "trust.body.remove": 2 + 3,  # body_id, reason
    "accreditation.grant": 2 + 2 + 3 * 4 + 1,  # body_id, issuer_id, 4 texts, covers
    "accreditation.suspend": 2 + 2 + 3 + 3,  # body_id, issuer_id, number, reason
    "accreditation.restore": 2 + 2 + 3 + 3,
    "accreditation.withdraw": 2 + 2 + 3 + 3,
    "issuer.key.add": 2,  # issuer_id
    "issuer.key.revoke": 2 + 1 + 3,  # issuer_id, key_id, reason
    "certificate.issue": 1 + 2 + 2 + 3,
    "certificate.amend": 1 + 2 + 2 + 3,
    "certificate.suspend": 3,  # reason
    "certificate.reinstate": 3,
    "certificate.withdraw": 3,
}


def test_type_confusion_tables_name_only_real_replacements() -> None:
    real = _spellings(*TYPE_CONFUSION)
    for table in (_ENVELOPE_SHAPE_ACCEPTS, _ENTRY_ACCEPTS, _STATEMENT_ACCEPTS):
        for field, accepted in table.items():
            assert accepted <= real, field
    assert set(_ACCEPTED_CONFUSIONS) == set(SAMPLES)


def test_statement_nested_type_confusion() -> None:
    issue = SAMPLES["certificate.issue"]
    # Public fields may hold any JSON value; only text that is no Unicode is refused.
    for name in issue["fields"]:
        for bad in TYPE_CONFUSION:
            value = {**issue, "fields": {**issue["fields"], name: bad}}
            accept = not _has_lone_surrogate(bad)
            _check_statement(value, accept, f"fields.{name} = {bad!r}")
    grant = SAMPLES["accreditation.grant"]
    # No TYPE_CONFUSION value is a base64 Ed25519 key or a certificate kind.
    for bad in TYPE_CONFUSION:
        _check_statement({**grant, "public_keys": [bad]}, False, f"public_keys = [{bad!r}]")
        _check_statement({**grant, "covers": [bad]}, False, f"covers = [{bad!r}]")


@HOSTILE
@given(json_values)
def test_hostile_statement_values(value: Any) -> None:
    only_our_errors(statement.validate, value)


@HOSTILE
@given(
    st.sampled_from(sorted(SAMPLES)).flatmap(
        lambda k: st.binary(max_size=200) | mutated(statement.encode(SAMPLES[k]))
    )
)
def test_hostile_statement_bytes(data: bytes) -> None:
    parsed = only_our_errors(statement.parse, data)
    if isinstance(parsed, statement.Statement):
        assert statement.encode(parsed.fields) == data


# === tlog-proof ========================================================================

TREE = 37
TREE_NODES = node_map(TREE)
TREE_ROOT = merkle.tree_root(TREE, reader(TREE_NODES))
TREE_CHECKPOINT = signed_checkpoint(TREE, TREE_ROOT)


def _tlog_proof(index: int, extra: bytes | None = None, size: int = TREE) -> proof.TlogProof:
    hashes = merkle.resolve_plan(merkle.inclusion_plan(index, size), TREE_NODES)
    note_bytes = (
        TREE_CHECKPOINT
        if size == TREE
        else signed_checkpoint(size, merkle.tree_root(size, reader(TREE_NODES)))
    )
    return proof.TlogProof(index, tuple(hashes), note_bytes, extra)


def test_tlog_proof_layout() -> None:
    extra = b"\x00extra"
    p = _tlog_proof(5, extra=extra)
    data = p.to_bytes()
    head, _, rest = data.partition(b"\n\n")
    lines = head.decode().split("\n")
    assert lines[0] == "c2sp.org/tlog-proof@v1"
    assert lines[1] == f"extra {b64(extra)}"
    assert lines[2] == "index 5"
    assert [base64.b64decode(x) for x in lines[3:]] == list(p.hashes)
    assert rest == TREE_CHECKPOINT
    assert b"extra" not in _tlog_proof(5).to_bytes().partition(b"\n\n")[0]


@pytest.mark.parametrize("extra", [None, b"", b"\x00", b"application data"])
def test_tlog_proof_round_trip(extra: bytes | None) -> None:
    for index in range(TREE):
        p = _tlog_proof(index, extra)
        assert proof.TlogProof.from_bytes(p.to_bytes()) == p


def test_tlog_proof_single_leaf_tree() -> None:
    p = _tlog_proof(0, size=1)
    assert p.hashes == ()
    assert proof.TlogProof.from_bytes(p.to_bytes()) == p
    signed = proof.verify(p.to_bytes(), leaf_data(0), LOG_VERIFIER)
    assert signed.checkpoint.size == 1


def test_tlog_proof_verifies_end_to_end() -> None:
    for index in range(TREE):
        data = _tlog_proof(index, extra=b"x" if index % 2 else None).to_bytes()
        signed = proof.verify(data, leaf_data(index), LOG_VERIFIER)
        assert signed.checkpoint == checkpoint.Checkpoint(LOG_ORIGIN, TREE, TREE_ROOT)
        assert signed.note == TREE_CHECKPOINT
        assert proof.verify(data, leaf_data(index), [LOG_VERIFIER]).note == TREE_CHECKPOINT


def test_tampered_tlog_proofs_fail() -> None:
    p = _tlog_proof(11)
    leaf = leaf_data(11)
    with pytest.raises(ProofError):  # wrong leaf
        proof.verify(p.to_bytes(), leaf_data(12), LOG_VERIFIER)
    for index in (10, 12, 0, TREE - 1, TREE, 2**62):  # wrong index
        moved = proof.TlogProof(index, p.hashes, p.checkpoint_note)
        with pytest.raises(ProofError):
            proof.verify(moved.to_bytes(), leaf, LOG_VERIFIER)
    for k in range(len(p.hashes)):  # each hash flipped
        hashes = list(p.hashes)
        hashes[k] = Hash(bytes([hashes[k][0] ^ 0x80]) + hashes[k][1:])
        bad = proof.TlogProof(p.index, tuple(hashes), p.checkpoint_note)
        with pytest.raises(ProofError):
            proof.verify(bad.to_bytes(), leaf, LOG_VERIFIER)
    with pytest.raises(ProofError):  # a hash dropped
        proof.verify(
            proof.TlogProof(11, p.hashes[:-1], p.checkpoint_note).to_bytes(), leaf, LOG_VERIFIER
        )
    # Checkpoint edited after signing.
    edited = TREE_CHECKPOINT.replace(f"\n{TREE}\n".encode(), f"\n{TREE + 1}\n".encode())
    with pytest.raises(SignatureError):
        proof.verify(proof.TlogProof(11, p.hashes, edited).to_bytes(), leaf, LOG_VERIFIER)
    # Checkpoint signed by someone else.
    forged = signed_checkpoint(TREE, TREE_ROOT, key=STRANGER)
    with pytest.raises(UnknownKeyError):
        proof.verify(proof.TlogProof(11, p.hashes, forged).to_bytes(), leaf, LOG_VERIFIER)
    # Validly signed checkpoint of a different tree.
    other = signed_checkpoint(TREE, hashlib.sha256(b"other").digest())
    with pytest.raises(ProofError):
        proof.verify(proof.TlogProof(11, p.hashes, other).to_bytes(), leaf, LOG_VERIFIER)
    smaller = signed_checkpoint(TREE - 1, merkle.tree_root(TREE - 1, reader(TREE_NODES)))
    with pytest.raises(ProofError):
        proof.verify(proof.TlogProof(11, p.hashes, smaller).to_bytes(), leaf, LOG_VERIFIER)


def _proof_text(*lines: str) -> bytes:
    return ("\n".join(lines) + "\n\n").encode() + TREE_CHECKPOINT


H = b64(leaf_hashes(2)[1])


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"c2sp.org/tlog-proof@v1\nindex 0\n",  # no checkpoint separator
        _proof_text("c2sp.org/tlog-proof@v2", "index 0"),
        _proof_text("c2sp.org/tlog-proof@v1"),
        _proof_text("c2sp.org/tlog-proof@v1", "index"),
        _proof_text("c2sp.org/tlog-proof@v1", "index "),
        _proof_text("c2sp.org/tlog-proof@v1", "index 01"),
        _proof_text("c2sp.org/tlog-proof@v1", "index -1"),
        _proof_text("c2sp.org/tlog-proof@v1", "index +1"),
        _proof_text("c2sp.org/tlog-proof@v1", "index 1 "),
        _proof_text("c2sp.org/tlog-proof@v1", "index  1"),
        _proof_text("c2sp.org/tlog-proof@v1", "index " + "9" * 5000),
        _proof_text("c2sp.org/tlog-proof@v1", "index 1", H[:-1]),
        _proof_text("c2sp.org/tlog-proof@v1", "index 1", b64(bytes(31))),
        _proof_text("c2sp.org/tlog-proof@v1", "index 1", *[H] * 65),
        _proof_text("c2sp.org/tlog-proof@v1", "extra QR==", "index 1"),
        _proof_text("c2sp.org/tlog-proof@v1", "index 1", "extra AA=="),
        _proof_text("c2sp.org/tlog-proof@v1", "extra AA==", "extra AA==", "index 1"),
        "c2sp.org/tlog-proof@v1\nindex \u0661\n\n".encode() + TREE_CHECKPOINT,
    ],
)
def test_tlog_proof_parse_refuses(data: bytes) -> None:
    with pytest.raises(MalformedError):
        proof.TlogProof.from_bytes(data)
    with pytest.raises(MalformedError):
        proof.verify(data, leaf_data(1), LOG_VERIFIER)


@PROPERTY
@given(st.lists(st.binary(min_size=32, max_size=32), max_size=proof.MAX_PROOF_HASHES))
def test_consistency_proof_text_round_trip(hashes: list[bytes]) -> None:
    data = proof.format_consistency(hashes)
    assert data == b"".join(b64(h).encode() + b"\n" for h in hashes)
    assert proof.parse_consistency(data) == hashes


@pytest.mark.parametrize(
    "data",
    [
        H.encode(),  # no final newline
        b"\n",
        (H + "\n\n").encode(),
        (H + "\n" + H).encode(),
        (b64(bytes(31)) + "\n").encode(),
        (H[:-1] + "\n").encode(),
        ((H + "\n") * 65).encode(),
        "\u00e9\n".encode(),
        (H + "\r\n").encode(),
    ],
)
def test_consistency_proof_text_refuses(data: bytes) -> None:
    with pytest.raises(MalformedError):
        proof.parse_consistency(data)


PROOF_SAMPLE = _tlog_proof(13, extra=b"extra").to_bytes()


@HOSTILE
@given(st.binary(max_size=300) | mutated(PROOF_SAMPLE))
def test_hostile_tlog_proofs(data: bytes) -> None:
    parsed = only_our_errors(proof.TlogProof.from_bytes, data)
    signed = only_our_errors(proof.verify, data, leaf_data(13), LOG_VERIFIER)
    if signed is not None:
        # Accepted only if it still proves leaf 13 at index 13 under the signed head.
        assert isinstance(parsed, proof.TlogProof)
        assert parsed.index == 13
        assert signed.checkpoint.root == TREE_ROOT  # type: ignore[attr-defined]


@HOSTILE
@given(st.binary(max_size=200) | mutated(proof.format_consistency(leaf_hashes(3))))
def test_hostile_consistency_proofs(data: bytes) -> None:
    parsed = only_our_errors(proof.parse_consistency, data)
    if parsed is not None:
        assert proof.format_consistency(parsed) == data  # type: ignore[arg-type]


# === one error hierarchy ===============================================================


def test_error_codes() -> None:
    assert issubclass(NonCanonicalError, MalformedError)
    assert issubclass(TooLargeError, MalformedError)
    assert issubclass(SignatureError, VerificationError)
    assert issubclass(UnknownKeyError, VerificationError)
    assert issubclass(ProofError, VerificationError)
    for cls in (MalformedError, VerificationError):
        assert issubclass(cls, QILedgerError)
        assert not issubclass(cls, ValueError)
    codes = {
        cls.code
        for cls in (
            MalformedError,
            NonCanonicalError,
            TooLargeError,
            SignatureError,
            UnknownKeyError,
            ProofError,
        )
    }
    assert len(codes) == 6
