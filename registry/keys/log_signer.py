"""The log's signing identity: its origin (the note key name) and Ed25519 key."""

from __future__ import annotations

from verifier import checkpoint
from verifier.keys import SigningKey
from verifier.merkle import Hash
from verifier.note import NoteVerifier


class LogSigner:
    def __init__(self, origin: str, key: SigningKey) -> None:
        self.origin = origin
        self.key = key
        self.verifier = NoteVerifier.for_key(origin, key.public_key)

    def sign(self, size: int, root: Hash) -> bytes:
        """A C2SP signed checkpoint note for the tree of ``size`` with ``root``."""
        return checkpoint.sign(checkpoint.Checkpoint(self.origin, size, root), self.key)
