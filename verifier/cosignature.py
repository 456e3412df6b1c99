"""C2SP tlog-cosignature ``cosignature/v1``: Ed25519 witness cosignatures of checkpoints.

A cosignature is a note signature line on the checkpoint (https://c2sp.org/tlog-cosignature)::

    — <witness name> base64(key ID[4] ‖ timestamp[8, big-endian] ‖ Ed25519 signature[64])

Key ID = SHA-256(name ‖ 0x0A ‖ 0x04 ‖ pubkey)[:4]; verifier key
``<name>+<hex8>+<base64(0x04 ‖ pubkey)>``. The signed message is
``cosignature/v1\\n``, ``time <timestamp>\\n`` and the checkpoint's note text. It says:
as of that time, this is the largest consistent tree the witness has seen of the log.

A client policy trusts a set of witness keys and needs ``K`` of them
(:func:`require_cosignatures`); cosignatures by other keys are ignored, as C2SP says.

The witness's private key file (``qiverify witness keygen``) is one line,
``PRIVATE+KEY+<name>+<hex8 key ID>+<base64(0x04 ‖ 32-byte Ed25519 seed)>``: the
form of Go's signed-note signer keys, with the cosignature type byte.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

from verifier import checkpoint, note
from verifier.encoding import b64decode, b64encode
from verifier.errors import MalformedError, SignatureError, UnknownKeyError, VerificationError
from verifier.keys import ED25519_SIGNATURE_SIZE, PublicKey, SigningKey

ALG_COSIGNATURE_V1 = 0x04
HEADER = "cosignature/v1\n"
MAX_TIMESTAMP = (1 << 63) - 1
_SIGNATURE_SIZE = 8 + ED25519_SIGNATURE_SIZE
PRIVATE_KEY_PREFIX = "PRIVATE+KEY+"


class WitnessPolicyError(VerificationError):
    """Fewer trusted witnesses validly cosigned a checkpoint than the policy needs."""

    code = "witness_policy"


def signed_message(note_text: str, timestamp: int) -> bytes:
    """What a cosignature/v1 signs: header, time line, then the checkpoint text."""
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise MalformedError("cosignature timestamp is out of range")
    return f"{HEADER}time {timestamp}\n{note_text}".encode()


def key_id(name: str, public_key: PublicKey) -> bytes:
    """The 4-byte key ID of a cosignature/v1 key (type byte 0x04)."""
    return note.key_id(name, public_key, ALG_COSIGNATURE_V1)


@dataclass(frozen=True)
class CosignatureVerifier:
    """A witness key a client (or a log) trusts: name, 4-byte ID, Ed25519 key."""

    name: str
    key_id: bytes
    public_key: PublicKey

    @classmethod
    def for_key(cls, name: str, public_key: PublicKey) -> CosignatureVerifier:
        note.NoteVerifier.for_key(name, public_key)  # checks the name
        return cls(name, key_id(name, public_key), public_key)

    @classmethod
    def parse(cls, vkey: str) -> CosignatureVerifier:
        """Parse ``<name>+<hex8>+<base64(0x04 ‖ pubkey)>``; the ID must match."""
        return cls(*note.split_verifier_key(vkey, ALG_COSIGNATURE_V1))

    def __str__(self) -> str:
        raw = bytes([ALG_COSIGNATURE_V1]) + self.public_key.raw
        return f"{self.name}+{self.key_id.hex()}+{b64encode(raw)}"

    def matches(self, signature: note.NoteSignature) -> bool:
        return signature.name == self.name and signature.key_id == self.key_id

    def verify(self, note_text: str, signature: note.NoteSignature) -> int:
        """The timestamp of ``signature``, a valid cosignature by this key on
        ``note_text``; else SignatureError."""
        if not self.matches(signature):
            raise UnknownKeyError(f"signature line is not by witness {self.name}")
        if len(signature.signature) != _SIGNATURE_SIZE:
            raise SignatureError(f"cosignature by {self.name} has the wrong length")
        (timestamp,) = struct.unpack(">Q", signature.signature[:8])
        if timestamp > MAX_TIMESTAMP:
            raise SignatureError(f"cosignature by {self.name} has an out-of-range timestamp")
        try:
            self.public_key.verify(signature.signature[8:], signed_message(note_text, timestamp))
        except SignatureError:
            raise SignatureError(f"cosignature by {self.name} does not verify") from None
        return int(timestamp)


@dataclass(frozen=True)
class CosignatureSigner:
    """A witness's private key and name. Never printed (no repr of the seed)."""

    name: str
    key: SigningKey

    def __post_init__(self) -> None:
        note.NoteVerifier.for_key(self.name, self.key.public_key)  # checks the name

    @property
    def verifier(self) -> CosignatureVerifier:
        return CosignatureVerifier.for_key(self.name, self.key.public_key)

    def cosign(self, note_text: str, timestamp: int) -> note.NoteSignature:
        """A cosignature/v1 of checkpoint text ``note_text`` made at ``timestamp``
        (POSIX seconds, the caller's clock)."""
        checkpoint.Checkpoint.from_text(note_text)  # a witness cosigns checkpoints only
        signature = self.key.sign(signed_message(note_text, timestamp))
        return note.NoteSignature(
            self.name,
            key_id(self.name, self.key.public_key),
            struct.pack(">Q", timestamp) + signature,
        )

    def private_text(self) -> str:
        raw = bytes([ALG_COSIGNATURE_V1]) + self.key.seed()
        kid = key_id(self.name, self.key.public_key).hex()
        return f"{PRIVATE_KEY_PREFIX}{self.name}+{kid}+{b64encode(raw)}\n"

    @classmethod
    def parse_private(cls, text: str) -> CosignatureSigner:
        """Read :meth:`private_text` (one line; the ID must match the name and key)."""
        if not isinstance(text, str) or not text.startswith(PRIVATE_KEY_PREFIX):
            raise MalformedError("not a witness private key (PRIVATE+KEY+name+hex8+base64)")
        name, claimed_id, raw = _split_private(text.strip()[len(PRIVATE_KEY_PREFIX) :])
        signer = cls(name, SigningKey.from_seed(raw))
        if key_id(name, signer.key.public_key) != claimed_id:
            raise MalformedError("witness private key ID does not match its name and key")
        return signer


def _split_private(rest: str) -> tuple[str, bytes, bytes]:
    parts = rest.split("+", 2)
    if len(parts) != 3 or len(parts[1]) != 8:
        raise MalformedError("not a witness private key (PRIVATE+KEY+name+hex8+base64)")
    name, hex_id, b64_key = parts
    try:
        claimed_id = bytes.fromhex(hex_id)
    except ValueError:
        raise MalformedError("witness private key ID must be 8 hex digits") from None
    raw = b64decode(b64_key, "witness private key")
    if len(raw) != 33 or raw[0] != ALG_COSIGNATURE_V1:
        raise MalformedError("witness private key is not a cosignature/v1 (type 0x04) key")
    return name, claimed_id, raw[1:]


def format_line(signature: note.NoteSignature) -> str:
    """A signature as a note signature line (with its newline)."""
    raw = signature.key_id + signature.signature
    return f"{note.SIGNATURE_PREFIX}{signature.name} {b64encode(raw)}\n"


def add_lines(note_bytes: bytes, lines: Iterable[str]) -> bytes:
    """The signed note with more signature lines appended (a valid note: each line is
    checked to be a note signature line)."""
    whole = note_bytes + "".join(lines).encode("utf-8")
    note.parse(whole)  # refuses a malformed line, or too many
    return whole


def parse_lines(data: bytes) -> list[note.NoteSignature]:
    """Signature lines as a witness answers them (``— name base64\\n`` each)."""
    # A note with a placeholder text reuses the note parser for the lines.
    return list(note.parse(b"x\n\n" + data).signatures)


@dataclass(frozen=True)
class Cosigned:
    """A checkpoint with its log signature verified and the trusted witnesses that
    validly cosigned it (name and timestamp)."""

    signed: checkpoint.SignedCheckpoint
    witnesses: tuple[tuple[str, int], ...]


def valid_cosignatures(
    note_bytes: bytes,
    witnesses: Iterable[CosignatureVerifier],
    *,
    now: int | None = None,
    max_future: int = 300,
) -> tuple[dict[CosignatureVerifier, int], list[str]]:
    """The trusted witnesses whose cosignature on the note verifies, each with its
    (latest) timestamp, and why other lines by trusted keys were refused. The note's
    log signature is not checked here."""
    parsed = note.parse(note_bytes)
    trusted = set(witnesses)
    valid: dict[CosignatureVerifier, int] = {}
    refused: list[str] = []
    for sig in parsed.signatures:
        for witness in trusted:
            if not witness.matches(sig):
                continue
            try:
                timestamp = witness.verify(parsed.text, sig)
            except (SignatureError, UnknownKeyError) as exc:
                refused.append(exc.message)
                continue
            if now is not None and timestamp > now + max_future:
                refused.append(f"cosignature by {witness.name} is dated in the future")
                continue
            valid[witness] = max(timestamp, valid.get(witness, 0))
    return valid, refused


def require_cosignatures(
    note_bytes: bytes,
    log_verifier: note.NoteVerifier,
    witnesses: Iterable[CosignatureVerifier],
    min_count: int,
    *,
    now: int | None = None,
    max_future: int = 300,
) -> Cosigned:
    """The checkpoint, verified with the log key and cosigned by at least
    ``min_count`` distinct trusted witnesses; else a verifier error saying how many
    did. ``now`` (POSIX seconds) refuses cosignatures dated more than
    ``max_future`` seconds after it."""
    trusted = set(witnesses)
    if not 0 <= min_count <= len(trusted):
        raise MalformedError(
            f"a policy of {min_count} witnesses needs as many trusted witness keys "
            f"({len(trusted)} given)"
        )
    signed = checkpoint.verify(note_bytes, log_verifier)
    valid, refused = valid_cosignatures(note_bytes, trusted, now=now, max_future=max_future)
    if len(valid) < min_count:
        why = f" ({'; '.join(sorted(set(refused)))})" if refused else ""
        raise WitnessPolicyError(
            f"checkpoint of size {signed.checkpoint.size} is cosigned by {len(valid)} of the "
            f"trusted witnesses; the policy needs {min_count}{why}"
        )
    return Cosigned(signed, tuple(sorted((w.name, t) for w, t in valid.items())))
