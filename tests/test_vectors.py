"""Known answers from an independent implementation (Go golang.org/x/mod tlog and note).

The vectors live in the shared folder next to DESIGN.md and are read in place, never
copied: ``shared/vectors/tlog-vectors.json`` beside the repository (see its README;
QILEDGER_SHARED_DIR names another folder). Without it these tests are skipped.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest

from tests.helpers import shared_params, tlog_vectors
from tests.verifier_helpers import leaf_data, leaf_hashes, node_map, reader
from verifier import checkpoint, dsse, merkle, note
from verifier.keys import PublicKey, SigningKey
from verifier.note import NoteVerifier

pytestmark = pytest.mark.shared
LEAVES = 1000
"""The vectors' tree size (``leaves_count``, checked below)."""


@pytest.fixture
def note_vectors() -> dict[str, Any]:
    signed: dict[str, Any] = tlog_vectors()["signed_note"]
    return signed


def _b(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def test_vector_file_has_every_section() -> None:
    assert tlog_vectors()["leaves_count"] == LEAVES
    assert len(tlog_vectors()["roots"]) >= 20
    assert len(tlog_vectors()["inclusion"]) >= 10
    assert len(tlog_vectors()["consistency"]) >= 9
    assert {"signed_note", "dsse_pae"} <= tlog_vectors().keys()


@pytest.mark.parametrize(
    "size", shared_params(lambda: sorted(int(s) for s in tlog_vectors()["roots"]))
)
def test_roots(size: int) -> None:
    expected = _b(tlog_vectors()["roots"][str(size)])
    assert merkle.root_from_leaf_hashes(leaf_hashes(LEAVES)[:size]) == expected
    assert merkle.tree_root(size, reader(node_map(LEAVES))) == expected


@pytest.mark.parametrize(
    "vector",
    shared_params(lambda: tlog_vectors()["inclusion"]),
    ids=lambda v: f"index{v['Index']}-size{v['Size']}",
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
    "vector",
    shared_params(lambda: tlog_vectors()["consistency"]),
    ids=lambda v: f"{v['First']}-{v['Second']}",
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


def _note_key(note_vectors: dict[str, Any]) -> SigningKey:
    return SigningKey.from_seed(_b(note_vectors["ed25519_seed"]))


def test_note_key_matches_seed(note_vectors: dict[str, Any]) -> None:
    assert _b(note_vectors["ed25519_seed"]) == bytes(range(32))
    assert _note_key(note_vectors).public_key.raw == _b(note_vectors["public_key"])


def test_note_key_id(note_vectors: dict[str, Any]) -> None:
    public = PublicKey.from_raw(_b(note_vectors["public_key"]))
    assert note.key_id(note_vectors["key_name"], public).hex() == note_vectors["key_id_hex"]


def test_verifier_key_string(note_vectors: dict[str, Any]) -> None:
    public = _note_key(note_vectors).public_key
    made = NoteVerifier.for_key(note_vectors["key_name"], public)
    assert str(made) == note_vectors["verifier_key"]
    parsed = NoteVerifier.parse(note_vectors["verifier_key"])
    assert parsed == made
    assert parsed.key_id.hex() == note_vectors["key_id_hex"]


def test_checkpoint_body_is_the_tree_head(note_vectors: dict[str, Any]) -> None:
    cp = checkpoint.Checkpoint.from_text(note_vectors["checkpoint_body"])
    assert cp.origin == note_vectors["key_name"]
    assert cp.size == LEAVES
    assert cp.root == _b(tlog_vectors()["roots"][str(LEAVES)])
    assert cp.to_text() == note_vectors["checkpoint_body"]


def test_signed_note_is_byte_exact(note_vectors: dict[str, Any]) -> None:
    expected = note_vectors["signed_note"].encode("utf-8")
    assert (
        note.sign(
            note_vectors["checkpoint_body"], note_vectors["key_name"], _note_key(note_vectors)
        )
        == expected
    )
    cp = checkpoint.Checkpoint.from_text(note_vectors["checkpoint_body"])
    assert checkpoint.sign(cp, _note_key(note_vectors)) == expected


def test_signed_note_verifies(note_vectors: dict[str, Any]) -> None:
    data = note_vectors["signed_note"].encode("utf-8")
    signed = checkpoint.verify(data, NoteVerifier.parse(note_vectors["verifier_key"]))
    assert signed.note == data
    assert signed.checkpoint.size == LEAVES
    verified = note.verify(data, [NoteVerifier.parse(note_vectors["verifier_key"])])
    assert verified.text == note_vectors["checkpoint_body"]
    assert verified.verified_by == (note_vectors["key_name"],)


def test_dsse_pae() -> None:
    vector = tlog_vectors()["dsse_pae"]
    got = dsse.pae(vector["payload_type"], vector["payload"].encode("utf-8"))
    assert got == vector["pae"].encode("utf-8")
