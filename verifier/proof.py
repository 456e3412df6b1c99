"""C2SP tlog-proof@v1: an offline-checkable inclusion proof with its checkpoint.

::

    c2sp.org/tlog-proof@v1
    [extra <base64>]
    index <n>
    <base64 hash, leaf's sibling first> ...

    <signed checkpoint, verbatim>
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from verifier import checkpoint as checkpoint_mod
from verifier import merkle
from verifier.encoding import b64decode, b64encode
from verifier.errors import MalformedError, ProofError
from verifier.merkle import Hash
from verifier.note import NoteVerifier

HEADER = "c2sp.org/tlog-proof@v1"
MAX_PROOF_HASHES = 64


@dataclass(frozen=True)
class TlogProof:
    index: int
    hashes: tuple[Hash, ...]
    checkpoint_note: bytes
    extra: bytes | None = None

    def to_bytes(self) -> bytes:
        lines = [HEADER]
        if self.extra is not None:
            lines.append(f"extra {b64encode(self.extra)}")
        lines.append(f"index {self.index}")
        lines += [b64encode(h) for h in self.hashes]
        return ("\n".join(lines) + "\n\n").encode("ascii") + self.checkpoint_note

    @classmethod
    def from_bytes(cls, data: bytes) -> TlogProof:
        head, sep, checkpoint_note = data.partition(b"\n\n")
        if not sep:
            raise MalformedError("tlog-proof has no checkpoint")
        try:
            lines = head.decode("ascii").split("\n")
        except UnicodeDecodeError:
            raise MalformedError("tlog-proof header is not ASCII") from None
        if lines[0] != HEADER:
            raise MalformedError(f"not a {HEADER} file")
        pos = 1
        extra = None
        if pos < len(lines) and lines[pos].startswith("extra "):
            extra = b64decode(lines[pos][len("extra ") :], "tlog-proof extra data")
            pos += 1
        if pos >= len(lines) or not lines[pos].startswith("index "):
            raise MalformedError("tlog-proof lacks its index line")
        index_text = lines[pos][len("index ") :]
        if (
            not index_text.isdigit()
            or not index_text.isascii()
            or (index_text != "0" and index_text.startswith("0"))
        ):
            raise MalformedError("tlog-proof index is not a decimal without leading zeros")
        if len(index_text) > len(str(checkpoint_mod.MAX_TREE_SIZE)):
            raise MalformedError("tlog-proof index is too large")
        hash_lines = lines[pos + 1 :]
        if len(hash_lines) > MAX_PROOF_HASHES:
            raise MalformedError("tlog-proof has too many hashes")
        hashes = []
        for n, line in enumerate(hash_lines):
            raw = b64decode(line, f"tlog-proof hash {n}")
            if len(raw) != merkle.HASH_SIZE:
                raise MalformedError(f"tlog-proof hash {n} is not 32 bytes")
            hashes.append(Hash(raw))
        return cls(int(index_text), tuple(hashes), checkpoint_note, extra)

    def verify(
        self, leaf_data: bytes, log_key: NoteVerifier | Iterable[NoteVerifier]
    ) -> checkpoint_mod.SignedCheckpoint:
        """Check that ``leaf_data`` is entry ``index`` of the log under this proof's
        checkpoint: the checkpoint's signature, then the inclusion proof."""
        signed = checkpoint_mod.verify(self.checkpoint_note, log_key)
        cp = signed.checkpoint
        merkle.verify_inclusion(
            merkle.leaf_hash(leaf_data), self.index, cp.size, self.hashes, cp.root
        )
        return signed


def verify(
    data: bytes, leaf_data: bytes, log_key: NoteVerifier | Iterable[NoteVerifier]
) -> checkpoint_mod.SignedCheckpoint:
    """Check that ``leaf_data`` is logged: checkpoint signature, then inclusion."""
    return TlogProof.from_bytes(data).verify(leaf_data, log_key)


def format_consistency(hashes: Sequence[bytes]) -> bytes:
    """Consistency proof as base64 lines (the C2SP tlog-witness request body form)."""
    return "".join(b64encode(h) + "\n" for h in hashes).encode("ascii")


def parse_consistency(data: bytes) -> list[Hash]:
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise MalformedError("consistency proof is not ASCII") from None
    if text and not text.endswith("\n"):
        raise MalformedError("consistency proof must end with a newline")
    lines = text[:-1].split("\n") if text else []
    if len(lines) > MAX_PROOF_HASHES:
        raise MalformedError("consistency proof has too many hashes")
    hashes = []
    for n, line in enumerate(lines):
        raw = b64decode(line, f"consistency proof hash {n}")
        if len(raw) != merkle.HASH_SIZE:
            raise MalformedError(f"consistency proof hash {n} is not 32 bytes")
        hashes.append(Hash(raw))
    return hashes


__all__ = ["HEADER", "ProofError", "TlogProof", "format_consistency", "parse_consistency", "verify"]
