"""Known answers from an independent implementation (Go golang.org/x/mod tlog and note).

The vectors live in the shared folder next to DESIGN.md and are read in place, never
copied: ``/work/shared/vectors/tlog-vectors.json`` (see its README).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from tests.verifier_helpers import leaf_data, leaf_hashes, node_map, reader
from verifier import checkpoint, dsse, merkle, note
from verifier.keys import PublicKey, SigningKey
from verifier.note import NoteVerifier

VECTORS_PATH = Path(__file__).resolve().parents[2] / "shared" / "vectors" / "tlog-vectors.json"
VECTORS: dict[str, Any] = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
LEAVES = VECTORS["leaves_count"]
NOTE = VECTORS["signed_note"]


def _b(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def test_vector_file_has_every_section() -> None:
    assert LEAVES == 1000
    assert len(VECTORS["roots"]) >= 20
    assert len(VECTORS["inclusion"]) >= 10
    assert len(VECTORS["consistency"]) >= 9
    assert {"signed_note", "dsse_pae"} <= VECTORS.keys()


@pytest.mark.parametrize("size", sorted(int(s) for s in VECTORS["roots"]))
def test_roots(size: int) -> None:
    expected = _b(VECTORS["roots"][str(size)])
    assert merkle.root_from_leaf_hashes(leaf_hashes(LEAVES)[:size]) == expected
    assert merkle.tree_root(size, reader(node_map(LEAVES))) == expected


@pytest.mark.parametrize(
    "vector", VECTORS["inclusion"], ids=lambda v: f"index{v['Index']}-size{v['Size']}"
)
def test_inclusion_proofs(vector: dict[str, Any]) -> None:
    index, size = vector["Index"], vector["Size"]
    leaf, root = _b(vector["LeafHash"]), _b(vector["Root"])
    expected = [_b(h) for h in vector["Proof"]]
    assert merkle.leaf_hash(leaf_data(index)) == leaf
    assert merkle.tree_root(size, reader(node_map(LEAVES))) == root

    plan = merkle.inclusion_plan(index, size)
    assert merkle.resolve_plan(plan, node_map(LEAVES)) == expected

    merkle.verify_inclusion(leaf, index, size, expected, root)


@pytest.mark.parametrize(
    "vector", VECTORS["consistency"], ids=lambda v: f"{v['First']}-{v['Second']}"
)
def test_consistency_proofs(vector: dict[str, Any]) -> None:
    first, second = vector["First"], vector["Second"]
    first_root, second_root = _b(vector["FirstRoot"]), _b(vector["SecondRoot"])
    expected = [_b(h) for h in vector["Proof"]]
    read = reader(node_map(LEAVES))
    assert merkle.tree_root(first, read) == first_root
    assert merkle.tree_root(second, read) == second_root

    plan = merkle.consistency_plan(first, second)
    assert merkle.resolve_plan(plan, node_map(LEAVES)) == expected

    merkle.verify_consistency(first, second, expected, first_root, second_root)


def _note_key() -> SigningKey:
    return SigningKey.from_seed(_b(NOTE["ed25519_seed"]))


def test_note_key_matches_seed() -> None:
    assert _b(NOTE["ed25519_seed"]) == bytes(range(32))
    assert _note_key().public_key.raw == _b(NOTE["public_key"])


def test_note_key_id() -> None:
    public = PublicKey.from_raw(_b(NOTE["public_key"]))
    assert note.key_id(NOTE["key_name"], public).hex() == NOTE["key_id_hex"]


def test_verifier_key_string() -> None:
    public = _note_key().public_key
    made = NoteVerifier.for_key(NOTE["key_name"], public)
    assert str(made) == NOTE["verifier_key"]
    parsed = NoteVerifier.parse(NOTE["verifier_key"])
    assert parsed == made
    assert parsed.key_id.hex() == NOTE["key_id_hex"]


def test_checkpoint_body_is_the_tree_head() -> None:
    cp = checkpoint.Checkpoint.from_text(NOTE["checkpoint_body"])
    assert cp.origin == NOTE["key_name"]
    assert cp.size == LEAVES
    assert cp.root == _b(VECTORS["roots"][str(LEAVES)])
    assert cp.to_text() == NOTE["checkpoint_body"]


def test_signed_note_is_byte_exact() -> None:
    expected = NOTE["signed_note"].encode("utf-8")
    assert note.sign(NOTE["checkpoint_body"], NOTE["key_name"], _note_key()) == expected
    cp = checkpoint.Checkpoint.from_text(NOTE["checkpoint_body"])
    assert checkpoint.sign(cp, _note_key()) == expected


def test_signed_note_verifies() -> None:
    data = NOTE["signed_note"].encode("utf-8")
    signed = checkpoint.verify(data, NoteVerifier.parse(NOTE["verifier_key"]))
    assert signed.note == data
    assert signed.checkpoint.size == LEAVES
    verified = note.verify(data, [NoteVerifier.parse(NOTE["verifier_key"])])
    assert verified.text == NOTE["checkpoint_body"]
    assert verified.verified_by == (NOTE["key_name"],)


def test_dsse_pae() -> None:
    vector = VECTORS["dsse_pae"]
    got = dsse.pae(vector["payload_type"], vector["payload"].encode("utf-8"))
    assert got == vector["pae"].encode("utf-8")
