"""C2SP signed-note: Ed25519 note signatures, key IDs and verifier-key strings.

Format (https://c2sp.org/signed-note): the note text (UTF-8, ending in a
newline), a blank line, then signature lines ``— <name> <base64(keyid4 ‖ sig)>``.
Key ID = SHA-256(name ‖ 0x0A ‖ 0x01 ‖ pubkey)[:4]; verifier key
``<name>+<hex8>+<base64(0x01 ‖ pubkey)>``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from verifier.encoding import b64decode, b64encode
from verifier.errors import MalformedError, SignatureError, UnknownKeyError
from verifier.keys import ED25519_SIGNATURE_SIZE, PublicKey, SigningKey

ALG_ED25519 = 0x01
SIGNATURE_PREFIX = "\u2014 "  # em dash and space
MAX_SIGNATURES = 100
MAX_NOTE_SIZE = 1 << 20
# "+", whitespace (re's \s is str.isspace), control characters, and lone surrogates
# (e.g. argv bytes under surrogateescape), which have no UTF-8 form.
_BAD_NAME_CHARACTER = re.compile("[+\\s\x00-\x1f\ud800-\udfff]")
_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f]")  # control characters but newline


def _check_key_name(name: str) -> None:
    if not isinstance(name, str) or not name or _BAD_NAME_CHARACTER.search(name):
        raise MalformedError(f"invalid note key name {name!r}")


def key_id(name: str, public_key: PublicKey, alg: int = ALG_ED25519) -> bytes:
    """The 4-byte C2SP key ID of an Ed25519 key; ``alg`` is the signature type byte
    (0x01 note signatures, 0x04 tlog-cosignature/v1)."""
    return hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([alg]) + public_key.raw).digest()[
        :4
    ]


def split_verifier_key(vkey: str, alg: int) -> tuple[str, bytes, PublicKey]:
    """Name, claimed 4-byte ID and Ed25519 key of ``<name>+<hex8>+<base64(alg ‖ pubkey)>``;
    the ID is checked to match."""
    if not isinstance(vkey, str):
        raise MalformedError("verifier key must be a string")
    parts = vkey.strip().split("+", 2)
    if len(parts) != 3:
        raise MalformedError("verifier key must look like name+hex8+base64")
    name, hex_id, b64_key = parts
    _check_key_name(name)
    if len(hex_id) != 8 or hex_id.lower() != hex_id:
        raise MalformedError("verifier key ID must be 8 lowercase hex digits")
    try:
        claimed_id = bytes.fromhex(hex_id)
    except ValueError:
        raise MalformedError("verifier key ID must be 8 lowercase hex digits") from None
    key_bytes = b64decode(b64_key, "verifier key")
    if len(key_bytes) != 33 or key_bytes[0] != alg:
        raise MalformedError(f"verifier key is not an Ed25519 (type 0x{alg:02x}) key")
    public_key = PublicKey.from_raw(key_bytes[1:])
    if key_id(name, public_key, alg) != claimed_id:
        raise MalformedError("verifier key ID does not match its name and key")
    return name, claimed_id, public_key


@dataclass(frozen=True)
class NoteVerifier:
    """A trusted note key: name, 4-byte ID and Ed25519 public key."""

    name: str
    key_id: bytes
    public_key: PublicKey

    @classmethod
    def for_key(cls, name: str, public_key: PublicKey) -> NoteVerifier:
        _check_key_name(name)
        return cls(name, key_id(name, public_key), public_key)

    @classmethod
    def parse(cls, vkey: str) -> NoteVerifier:
        """Parse ``<name>+<hex8>+<base64(0x01 ‖ pubkey)>``; the ID must match."""
        return cls(*split_verifier_key(vkey, ALG_ED25519))

    def __str__(self) -> str:
        return (
            f"{self.name}+{self.key_id.hex()}+"
            f"{b64encode(bytes([ALG_ED25519]) + self.public_key.raw)}"
        )


@dataclass(frozen=True)
class NoteSignature:
    name: str
    key_id: bytes
    signature: bytes


@dataclass(frozen=True)
class UnverifiedNote:
    """A parsed note whose signatures nobody has checked yet."""

    text: str
    signatures: tuple[NoteSignature, ...]


@dataclass(frozen=True)
class VerifiedNote:
    """A note with at least one signature verified by a trusted key."""

    text: str
    verified_by: tuple[str, ...]
    signatures: tuple[NoteSignature, ...]


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise MalformedError("note text must end with a newline")
    if _CONTROL.search(text):
        raise MalformedError("note text contains a control character")


def parse(data: bytes) -> UnverifiedNote:
    """Split a signed note into its text and signature lines (strict)."""
    if len(data) > MAX_NOTE_SIZE:
        raise MalformedError("signed note is too large")
    try:
        whole = data.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedError("signed note is not UTF-8") from None
    split = whole.rfind("\n\n")
    if split < 0:
        raise MalformedError("signed note has no signature block")
    text, block = whole[: split + 1], whole[split + 2 :]
    _check_text(text)
    if not block.endswith("\n"):
        raise MalformedError("signed note must end with a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise MalformedError("signed note has too many signatures")
    signatures = []
    for line in lines:
        if not line.startswith(SIGNATURE_PREFIX):
            raise MalformedError("malformed signature line in signed note")
        fields = line[len(SIGNATURE_PREFIX) :].split(" ")
        if len(fields) != 2:
            raise MalformedError("malformed signature line in signed note")
        name, b64_sig = fields
        _check_key_name(name)
        raw = b64decode(b64_sig, "note signature")
        if len(raw) < 5:
            raise MalformedError("note signature is too short")
        signatures.append(NoteSignature(name, raw[:4], raw[4:]))
    return UnverifiedNote(text, tuple(signatures))


def verify(data: bytes, verifiers: Iterable[NoteVerifier]) -> VerifiedNote:
    """Verify a signed note against trusted keys.

    Signatures by unknown keys are ignored, as C2SP requires (witness
    cosignatures travel in the same note). A known key's signature must verify,
    may appear only once, and at least one known key must have signed.
    """
    note = parse(data)
    trusted = {(v.name, v.key_id): v for v in verifiers}
    message = note.text.encode("utf-8")
    verified: list[str] = []
    seen: set[tuple[str, bytes]] = set()
    for sig in note.signatures:
        verifier = trusted.get((sig.name, sig.key_id))
        if verifier is None:
            continue
        if (sig.name, sig.key_id) in seen:
            raise SignatureError(f"note has two signatures by key {sig.name}")
        seen.add((sig.name, sig.key_id))
        if len(sig.signature) != ED25519_SIGNATURE_SIZE:
            raise SignatureError(f"note signature by {sig.name} has the wrong length")
        try:
            verifier.public_key.verify(sig.signature, message)
        except SignatureError:
            raise SignatureError(f"note signature by {sig.name} does not verify") from None
        verified.append(sig.name)
    if not verified:
        names = sorted({s.name for s in note.signatures})
        raise UnknownKeyError(f"note is not signed by a trusted key (signed by: {names})")
    return VerifiedNote(note.text, tuple(verified), note.signatures)


def sign(text: str, name: str, key: SigningKey, extra: Sequence[NoteSignature] = ()) -> bytes:
    """Sign note text with an Ed25519 note key; returns the whole signed note."""
    _check_text(text)
    _check_key_name(name)
    kid = key_id(name, key.public_key)
    signature = key.sign(text.encode("utf-8"))
    lines = [f"{SIGNATURE_PREFIX}{name} {b64encode(kid + signature)}\n"]
    lines += [f"{SIGNATURE_PREFIX}{s.name} {b64encode(s.key_id + s.signature)}\n" for s in extra]
    return (text + "\n" + "".join(lines)).encode("utf-8")
