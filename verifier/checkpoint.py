"""C2SP tlog-checkpoint: the signed tree head of the log.

Body: origin line, decimal tree size (no leading zeros), base64 root hash,
optional non-empty extension lines; signed as a C2SP signed note whose key name
is the origin.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from verifier import merkle, note
from verifier.encoding import b64decode, b64encode
from verifier.errors import MalformedError, SignatureError
from verifier.keys import SigningKey
from verifier.merkle import Hash

MAX_TREE_SIZE = (1 << 63) - 1


@dataclass(frozen=True)
class Checkpoint:
    """A tree head: which log, how many entries, and their Merkle root."""

    origin: str
    size: int
    root: Hash
    extensions: tuple[str, ...] = ()

    def to_text(self) -> str:
        if not self.origin or "\n" in self.origin:
            raise MalformedError("checkpoint origin must be one non-empty line")
        lines = [self.origin, str(self.size), b64encode(self.root), *self.extensions]
        return "".join(line + "\n" for line in lines)

    @classmethod
    def from_text(cls, text: str) -> Checkpoint:
        """Parse a checkpoint body (the note text), strictly."""
        if not text.endswith("\n"):
            raise MalformedError("checkpoint must end with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise MalformedError("checkpoint needs origin, size and root lines")
        origin, size_text, root_text, *extensions = lines
        if not origin:
            raise MalformedError("checkpoint origin is empty")
        if (
            not size_text.isascii()
            or not size_text.isdigit()
            or (size_text != "0" and size_text.startswith("0"))
        ):
            raise MalformedError("checkpoint size is not a decimal without leading zeros")
        if len(size_text) > len(str(MAX_TREE_SIZE)):  # before int(): it refuses >4300 digits
            raise MalformedError("checkpoint size is too large")
        size = int(size_text)
        if size > MAX_TREE_SIZE:
            raise MalformedError("checkpoint size is too large")
        root = b64decode(root_text, "checkpoint root hash")
        if len(root) != merkle.HASH_SIZE:
            raise MalformedError("checkpoint root is not a 32-byte hash")
        if any(not ext for ext in extensions):
            raise MalformedError("checkpoint has an empty extension line")
        return cls(origin, size, Hash(root), tuple(extensions))


@dataclass(frozen=True)
class SignedCheckpoint:
    """A checkpoint whose log signature has been verified, with the exact note bytes."""

    checkpoint: Checkpoint
    note: bytes


def sign(checkpoint: Checkpoint, key: SigningKey) -> bytes:
    """Sign a checkpoint with the log key; the key name is the origin."""
    return note.sign(checkpoint.to_text(), checkpoint.origin, key)


def verify(
    data: bytes, log_key: note.NoteVerifier | Iterable[note.NoteVerifier]
) -> SignedCheckpoint:
    """Verify a signed checkpoint from the log whose note key is ``log_key``.

    Witness cosignatures may be present and are ignored here; the log's own
    signature is required.
    """
    log_keys = [log_key] if isinstance(log_key, note.NoteVerifier) else list(log_key)
    verified = note.verify(data, log_keys)
    checkpoint = Checkpoint.from_text(verified.text)
    if checkpoint.origin not in verified.verified_by:
        raise SignatureError(
            f"checkpoint origin {checkpoint.origin!r} is not the name of the key that signed it"
        )
    return SignedCheckpoint(checkpoint, data)
