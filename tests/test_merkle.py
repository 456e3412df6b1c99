"""RFC 9162 Merkle trees: hashing, proof planning over stored nodes, and verification.

Exhaustive over every tree size up to 256 (every index, every size pair), with
tampering; property tests over random sizes up to 2**40 on a sparse synthetic tree.
Reference proofs come from a direct transcription of RFC 9162 §2.1.3.1 (PATH) and
§2.1.4.1 (SUBPROOF), independent of the planner under test.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Callable, Mapping, Sequence
from functools import cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.verifier_helpers import leaf_hashes, node_map, reader
from verifier import merkle
from verifier.errors import InconsistencyError, ProofError
from verifier.merkle import Node, Range

N = 256
SMALL = 32  # sizes up to which the most expensive tamper loops run over everything

sha256 = hashlib.sha256

# --- an independent reference -----------------------------------------------------


def _split(n: int) -> int:
    """RFC 9162: the largest power of two smaller than n (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_path(m: int, start: int, end: int) -> list[Range]:
    """RFC 9162 PATH(m, D[start:end]) as leaf ranges, the leaf's sibling first."""
    n = end - start
    if n == 1:
        return []
    k = _split(n)
    if m < k:
        return [*ref_path(m, start, start + k), (start + k, end)]
    return [*ref_path(m - k, start + k, end), (start, start + k)]


def ref_subproof(m: int, start: int, end: int, whole: bool) -> list[Range]:
    """RFC 9162 SUBPROOF(m, D[start:end], b) as leaf ranges."""
    n = end - start
    if m == n:
        return [] if whole else [(start, end)]
    k = _split(n)
    if m <= k:
        return [*ref_subproof(m, start, start + k, whole), (start + k, end)]
    return [*ref_subproof(m - k, start + k, end, False), (start, start + k)]


def ref_proof(m: int, n: int) -> list[Range]:
    """RFC 9162 PROOF(m, D[n])."""
    return [] if m in (0, n) else ref_subproof(m, 0, n, True)


def ref_mth(leaves: Sequence[bytes], start: int, end: int) -> bytes:
    """RFC 9162 MTH(D[start:end]) straight from the definition (hash every level)."""
    n = end - start
    if n == 0:
        return sha256(b"").digest()
    if n == 1:
        return sha256(b"\x00" + leaves[start]).digest()
    k = _split(n)
    left = ref_mth(leaves, start, start + k)
    right = ref_mth(leaves, start + k, end)
    return sha256(b"\x01" + left + right).digest()


DATA = [f"leaf {i}".encode() for i in range(256)]


@cache
def ref_range(start: int, end: int) -> bytes:
    """MTH of leaves ``leaf <start>`` .. ``leaf <end-1>`` by the definition (memoized)."""
    return ref_mth(DATA, start, end)


def inclusion_shape(index: int, size: int) -> tuple[bool, ...]:
    """For each proof hash: is it a left sibling? (All an honest verifier's fold depends
    on besides the hash values.)"""
    return tuple(end <= index for _, end in ref_path(index, 0, size))


def consistency_shape(m: int, n: int) -> tuple[object, ...]:
    """The fold a consistency verifier performs: whether the old root seeds it (m a
    power of two), then for each further hash whether it lies left of the boundary."""
    ranges = ref_proof(m, n)
    power_of_two = m & (m - 1) == 0
    rest = ranges if power_of_two else ranges[1:]
    return (power_of_two, *(end <= m for _, end in rest))


# --- fixtures over the 256-leaf tree ----------------------------------------------

NODES = node_map(N)
LEAVES = leaf_hashes(N)


@cache
def root(size: int) -> bytes:
    return merkle.tree_root(size, reader(NODES))


def inclusion_proof(index: int, size: int) -> list[bytes]:
    return list(merkle.resolve_plan(merkle.inclusion_plan(index, size), NODES))


def consistency_proof(m: int, n: int) -> list[bytes]:
    return list(merkle.resolve_plan(merkle.consistency_plan(m, n), NODES))


def flip(h: bytes, bit: int = 0) -> bytes:
    return bytes([h[0] ^ (1 << bit), *h[1:]])


def raises_inclusion(leaf: bytes, index: int, size: int, proof: list[bytes], r: bytes) -> bool:
    try:
        merkle.verify_inclusion(leaf, index, size, proof, r)
    except ProofError:
        return True
    return False


def raises_consistency(m: int, n: int, proof: list[bytes], r1: bytes, r2: bytes) -> bool:
    try:
        merkle.verify_consistency(m, n, proof, r1, r2)
    except InconsistencyError:
        return True
    return False


# --- RFC 9162 hashing known answers -------------------------------------------------


def test_hash_prefixes_and_empty_tree() -> None:
    assert merkle.LEAF_PREFIX == b"\x00"
    assert merkle.NODE_PREFIX == b"\x01"
    assert merkle.HASH_SIZE == 32
    assert sha256(b"").digest() == merkle.EMPTY_ROOT
    assert merkle.EMPTY_ROOT.hex() == (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    assert merkle.root_from_leaf_hashes([]) == sha256(b"").digest()
    assert merkle.tree_root(0, lambda nodes: pytest.fail("read nodes for an empty tree")) == (
        sha256(b"").digest()
    )


def test_leaf_and_node_hash_known_answers() -> None:
    assert merkle.leaf_hash(b"") == sha256(b"\x00").digest()
    assert merkle.leaf_hash(b"").hex() == (
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    )
    assert merkle.leaf_hash(b"abc") == sha256(b"\x00abc").digest()
    left, right = sha256(b"l").digest(), sha256(b"r").digest()
    assert merkle.node_hash(left, right) == sha256(b"\x01" + left + right).digest()
    assert merkle.node_hash(left, right) != merkle.node_hash(right, left)
    # A leaf can never pass for a node and vice versa: the prefixes differ.
    assert merkle.leaf_hash(left + right) != merkle.node_hash(left, right)


def test_small_roots_by_hand() -> None:
    h = [merkle.leaf_hash(bytes([i])) for i in range(3)]
    assert merkle.root_from_leaf_hashes(h[:1]) == h[0]
    assert merkle.root_from_leaf_hashes(h[:2]) == merkle.node_hash(h[0], h[1])
    assert merkle.root_from_leaf_hashes(h) == merkle.node_hash(merkle.node_hash(h[0], h[1]), h[2])


@pytest.mark.parametrize("size", range(N + 1))
def test_roots_against_the_definition(size: int) -> None:
    expected = ref_mth(DATA, 0, size)
    assert merkle.root_from_leaf_hashes(LEAVES[:size]) == expected
    assert root(size) == expected


# --- planning -------------------------------------------------------------------


def test_plans_match_the_rfc_for_every_small_size() -> None:
    for n in range(1, N + 1):
        for i in range(n):
            assert merkle.inclusion_plan(i, n) == ref_path(i, 0, n), (i, n)
        for m in range(n + 1):
            assert merkle.consistency_plan(m, n) == ref_proof(m, n), (m, n)


def test_plans_refuse_impossible_positions() -> None:
    for index, size in [(0, 0), (1, 1), (-1, 5), (5, 5), (7, 3)]:
        with pytest.raises(ProofError):
            merkle.inclusion_plan(index, size)
    for m, n in [(2, 1), (-1, 3), (9, 8)]:
        with pytest.raises(ProofError):
            merkle.consistency_plan(m, n)


def test_nodes_of_range_and_fold() -> None:
    assert merkle.nodes_of_range(0, 1) == [(0, 0)]
    assert merkle.nodes_of_range(0, 7) == [(2, 0), (1, 2), (0, 6)]
    assert merkle.nodes_of_range(8, 12) == [(2, 2)]
    assert merkle.nodes_of_range(5, 5) == []
    for n in range(1, N + 1):
        for start, end in merkle.inclusion_plan(n - 1, n) + merkle.consistency_plan(n // 2, n):
            nodes = merkle.nodes_of_range(start, end)
            covered = [i for level, idx in nodes for i in range(idx << level, (idx + 1) << level)]
            assert covered == list(range(start, end))
            assert merkle.fold_nodes([NODES[x] for x in nodes]) == ref_range(start, end)


def test_plan_nodes_dedups_in_first_use_order() -> None:
    ranges = [(0, 4), (4, 7), (0, 4)]
    assert merkle.plan_nodes(ranges) == [(2, 0), (1, 2), (0, 6)]
    for n in range(2, 64):
        for m in range(1, n):
            plan = merkle.consistency_plan(m, n)
            nodes = merkle.plan_nodes(plan)
            assert len(nodes) == len(set(nodes))
            assert set(nodes) == {x for r in plan for x in merkle.nodes_of_range(*r)}
            # Every planned node is complete in the tree of size n (a writer has it).
            assert all((idx + 1) << level <= n for level, idx in nodes)


# --- exhaustive: every size, every index / size pair ------------------------------------


def test_every_inclusion_proof_verifies() -> None:
    for n in range(1, N + 1):
        r = root(n)
        for i in range(n):
            proof = inclusion_proof(i, n)
            assert len(proof) == len(ref_path(i, 0, n))
            merkle.verify_inclusion(LEAVES[i], i, n, proof, r)


def test_every_consistency_proof_verifies() -> None:
    for n in range(1, N + 1):
        for m in range(0, n + 1):
            proof = consistency_proof(m, n)
            assert len(proof) == len(ref_proof(m, n))
            merkle.verify_consistency(m, n, proof, root(m), root(n))


@pytest.mark.parametrize("sizes", [range(1, 96), range(96, 160), range(160, 208), range(208, 257)])
def test_tampered_inclusion_proofs_fail(sizes: range) -> None:
    other = sha256(b"not in the tree").digest()
    for n in sizes:
        r = root(n)
        for i in range(n):
            leaf = LEAVES[i]
            proof = inclusion_proof(i, n)
            for k in range(len(proof)):
                bad = list(proof)
                bad[k] = flip(bad[k], (i + k) % 8)
                assert raises_inclusion(leaf, i, n, bad, r), ("flip", i, n, k)
                assert raises_inclusion(leaf, i, n, proof[:k] + proof[k + 1 :], r), (i, n, k)
            for k in range(len(proof) + 1) if n <= SMALL else {0, len(proof) // 2, len(proof)}:
                longer = [*proof[:k], other, *proof[k:]]
                assert raises_inclusion(leaf, i, n, longer, r), ("add", i, n, k)
            assert raises_inclusion(flip(leaf, 7), i, n, proof, r)
            assert raises_inclusion(leaf, i, n, proof, flip(r, 3))
            assert raises_inclusion(LEAVES[(i + 1) % n], i, n, proof, r) or n == 1
            # Wrong index in the same tree: the path to another leaf always differs.
            for j in range(n) if n <= SMALL else (i - 1, i + 1, n - 1 - i):
                if j != i and 0 <= j < n:
                    assert raises_inclusion(leaf, j, n, proof, r), ("index", i, j, n)
            for j in (-1, n, n + 1, 2**63):
                assert raises_inclusion(leaf, j, n, proof, r)


def test_inclusion_with_a_wrong_size() -> None:
    """A proof also checks against a different size exactly when RFC 9162 would fold the
    same hashes the same way (the size is bound by the signed checkpoint, not the
    proof); otherwise it must fail. Any other outcome is a verifier bug."""
    failures = passes = 0
    for n in range(1, 129):
        r = root(n)
        for i in range(n):
            proof = inclusion_proof(i, n)
            for wrong in range(max(0, n - 4), n + 5) if n > SMALL else range(0, 2 * SMALL):
                if wrong == n:
                    continue
                same_fold = i < wrong and inclusion_shape(i, wrong) == inclusion_shape(i, n)
                failed = raises_inclusion(LEAVES[i], i, wrong, proof, r)
                assert failed != same_fold, (i, n, wrong)
                failures += failed
                passes += not failed
    # Both outcomes occur many times.
    assert passes > 1000
    assert failures > 1000


@pytest.mark.parametrize(
    "sizes", [range(1, 128), range(128, 180), range(180, 222), range(222, 257)]
)
def test_tampered_consistency_proofs_fail(sizes: range) -> None:
    other = sha256(b"not in the tree").digest()
    for n in sizes:
        r2 = root(n)
        for m in range(1, n):
            r1 = root(m)
            proof = consistency_proof(m, n)
            for k in range(len(proof)):
                bad = list(proof)
                bad[k] = flip(bad[k], (m + k) % 8)
                assert raises_consistency(m, n, bad, r1, r2), ("flip", m, n, k)
                assert raises_consistency(m, n, proof[:k] + proof[k + 1 :], r1, r2), (m, n, k)
            for k in (0, len(proof)) if n > SMALL else range(len(proof) + 1):
                longer = [*proof[:k], other, *proof[k:]]
                assert raises_consistency(m, n, longer, r1, r2), ("add", m, n, k)
            assert raises_consistency(m, n, proof, flip(r1, 1), r2)
            assert raises_consistency(m, n, proof, r1, flip(r2, 2))
            assert raises_consistency(m, n, proof, r2, r1)
            assert raises_consistency(n, m, proof, r1, r2)
        # Equal sizes: only the same root, only an empty proof.
        merkle.verify_consistency(n, n, [], r2, r2)
        assert raises_consistency(n, n, [], r2, flip(r2))
        assert raises_consistency(n, n, [r2], r2, r2)
        merkle.verify_consistency(0, n, [], merkle.EMPTY_ROOT, r2)
        assert raises_consistency(0, n, [], flip(merkle.EMPTY_ROOT), r2)
        assert raises_consistency(0, n, [r2], merkle.EMPTY_ROOT, r2)


def test_consistency_with_wrong_sizes() -> None:
    """As for inclusion: a proof checks for other sizes exactly when RFC 9162 folds it
    the same way; every other size pair must be refused."""
    failures = passes = 0
    for n in range(2, 97):
        for m in range(1, n):
            proof = consistency_proof(m, n)
            shape = consistency_shape(m, n)
            r1, r2 = root(m), root(n)
            candidates = (
                [(a, b) for b in range(1, SMALL) for a in range(0, b + 1)]
                if n <= SMALL // 2
                else [(a, b) for a in (m - 1, m, m + 1) for b in (n - 1, n, n + 1)]
            )
            for a, b in candidates:
                if (a, b) == (m, n) or not 0 <= a <= b:
                    continue
                same_fold = 0 < a < b and consistency_shape(a, b) == shape
                failed = raises_consistency(a, b, proof, r1, r2)
                assert failed != same_fold, (m, n, a, b)
                failures += failed
                passes += not failed
    assert passes > 1000
    assert failures > 1000


def test_inconsistency_error_keeps_the_evidence() -> None:
    proof = consistency_proof(5, 11)
    bad_root = flip(root(11))
    with pytest.raises(InconsistencyError) as caught:
        merkle.verify_consistency(5, 11, proof, root(5), bad_root)
    err = caught.value
    assert isinstance(err, ProofError)
    assert err.code == "inconsistent"
    assert (err.first_size, err.second_size) == (5, 11)
    assert (err.first_root, err.second_root) == (root(5), bad_root)
    assert err.proof == tuple(proof)
    assert "5" in err.message
    assert "11" in err.message

    with pytest.raises(InconsistencyError) as caught:
        merkle.verify_consistency(12, 11, proof, root(5), root(11))
    assert (caught.value.first_size, caught.value.second_size) == (12, 11)


@pytest.mark.parametrize(
    "bad",
    [b"", b"\x00" * 31, b"\x00" * 33, "0" * 32],
)
def test_wrong_hash_lengths_are_proof_errors(bad: object) -> None:
    proof = inclusion_proof(3, 10)
    with pytest.raises(ProofError):
        merkle.verify_inclusion(bad, 3, 10, proof, root(10))  # type: ignore[arg-type]
    with pytest.raises(ProofError):
        merkle.verify_inclusion(LEAVES[3], 3, 10, proof, bad)  # type: ignore[arg-type]
    with pytest.raises(ProofError):
        merkle.verify_inclusion(LEAVES[3], 3, 10, [*proof[:-1], bad], root(10))  # type: ignore[list-item]
    cproof = consistency_proof(3, 10)
    with pytest.raises(ProofError):
        merkle.verify_consistency(3, 10, [bad, *cproof[1:]], root(3), root(10))  # type: ignore[list-item]
    with pytest.raises(ProofError):
        merkle.verify_consistency(3, 10, cproof, bad, root(10))  # type: ignore[arg-type]
    with pytest.raises(ProofError):
        merkle.verify_consistency(3, 10, cproof, root(3), bad)  # type: ignore[arg-type]


# --- large trees: a sparse synthetic tree up to 2**40 leaves --------------------------


class SparseTree:
    """A real RFC 9162 tree of up to 2**40 leaves where every leaf hash is one default
    value except a few distinct "special" leaves; subtrees without a special leaf have a
    per-level hash, so any node is O(specials * depth) work."""

    def __init__(self, specials: set[int]) -> None:
        self.specials = sorted(specials)
        self._uniform = [sha256(b"\x00default leaf").digest()]
        self._memo: dict[tuple[int, int], bytes] = {}

    def leaf(self, index: int) -> bytes:
        if index in self.specials:
            return merkle.leaf_hash(b"special %d" % index)
        return self._uniform[0]

    def _uniform_at(self, level: int) -> bytes:
        while len(self._uniform) <= level:
            top = self._uniform[-1]
            self._uniform.append(merkle.node_hash(top, top))
        return self._uniform[level]

    def _has_special(self, start: int, end: int) -> bool:
        pos = bisect.bisect_left(self.specials, start)
        return pos < len(self.specials) and self.specials[pos] < end

    def mth(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]) by the RFC's recursive definition."""
        n = end - start
        if n == 0:
            return merkle.EMPTY_ROOT
        if n == 1:
            return self.leaf(start)
        if n & (n - 1) == 0 and not self._has_special(start, end):
            return self._uniform_at(n.bit_length() - 1)
        if (start, end) not in self._memo:
            k = _split(n)
            self._memo[(start, end)] = merkle.node_hash(
                self.mth(start, start + k), self.mth(start + k, end)
            )
        return self._memo[(start, end)]

    def node(self, node: Node) -> bytes:
        level, idx = node
        return self.mth(idx << level, (idx + 1) << level)

    def store(self) -> LazyNodes:
        return LazyNodes(self)


class LazyNodes:
    """Stored node hashes, computed on demand; records which nodes were read."""

    def __init__(self, tree: SparseTree) -> None:
        self.tree = tree
        self.read: list[Node] = []

    def __getitem__(self, node: Node) -> bytes:
        self.read.append(node)
        return self.tree.node(node)


@st.composite
def sparse_case(draw: st.DrawFn, max_size: int = 2**40) -> tuple[SparseTree, int, int, int]:
    """(tree, m, n, index): 1 <= m <= n, 0 <= index < n, with special leaves at the
    interesting places and a few random ones."""
    n = draw(st.integers(1, max_size) | st.sampled_from([1, 2, 3, 2**40, 2**40 - 1, 2**39 + 1]))
    n = min(n, max_size)
    m = draw(st.integers(1, n) | st.sampled_from([1, n, max(1, n - 1), 1 << (n.bit_length() - 1)]))
    m = min(max(m, 1), n)
    index = draw(st.integers(0, n - 1) | st.sampled_from([0, n - 1, m - 1, min(m, n - 1)]))
    index = min(index, n - 1)
    randoms = draw(st.lists(st.integers(0, n - 1), max_size=6))
    specials = {index, m - 1, min(m, n - 1), n - 1, 0, *randoms}
    return SparseTree(specials), m, n, index


def _read(store: LazyNodes) -> Callable[[Sequence[Node]], Mapping[Node, bytes]]:
    def read(nodes: Sequence[Node]) -> Mapping[Node, bytes]:
        return {x: store[x] for x in nodes}

    return read


@settings(max_examples=150, deadline=None)
@given(sparse_case())
def test_large_inclusion_plans_agree_with_the_rfc(case: tuple[SparseTree, int, int, int]) -> None:
    tree, _, n, index = case
    store = tree.store()
    plan = merkle.inclusion_plan(index, n)
    reference = ref_path(index, 0, n)
    assert plan == reference
    proof = merkle.resolve_plan(plan, store)
    assert proof == [tree.mth(a, b) for a, b in reference]
    # A writer can serve every node the plan reads: each is complete in the tree.
    assert all((idx + 1) << level <= n for level, idx in store.read)
    assert set(store.read) == set(merkle.plan_nodes(plan))
    r = merkle.tree_root(n, _read(store))
    assert r == tree.mth(0, n)
    merkle.verify_inclusion(tree.leaf(index), index, n, proof, r)
    if proof:
        bad = list(proof)
        bad[-1] = flip(bad[-1])
        with pytest.raises(ProofError):
            merkle.verify_inclusion(tree.leaf(index), index, n, bad, r)
    with pytest.raises(ProofError):
        merkle.verify_inclusion(flip(tree.leaf(index)), index, n, proof, r)


@settings(max_examples=150, deadline=None)
@given(sparse_case())
def test_large_consistency_plans_agree_with_the_rfc(
    case: tuple[SparseTree, int, int, int],
) -> None:
    tree, m, n, _ = case
    store = tree.store()
    plan = merkle.consistency_plan(m, n)
    assert plan == ref_proof(m, n)
    proof = merkle.resolve_plan(plan, store)
    assert proof == [tree.mth(a, b) for a, b in plan]
    assert all((idx + 1) << level <= n for level, idx in store.read)
    r1 = merkle.tree_root(m, _read(store))
    r2 = merkle.tree_root(n, _read(store))
    assert (r1, r2) == (tree.mth(0, m), tree.mth(0, n))
    merkle.verify_consistency(m, n, proof, r1, r2)
    if proof:
        bad = list(proof)
        bad[0] = flip(bad[0])
        with pytest.raises(InconsistencyError):
            merkle.verify_consistency(m, n, bad, r1, r2)
        with pytest.raises(InconsistencyError):
            merkle.verify_consistency(m, n, proof[:-1], r1, r2)
    if m < n:
        with pytest.raises(InconsistencyError):
            merkle.verify_consistency(m, n, proof, r1, flip(r2))


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 2**40), st.data())
def test_large_proof_lengths(n: int, data: st.DataObject) -> None:
    """Proof sizes stay logarithmic: at most ceil(log2 n) hashes."""
    index = data.draw(st.integers(0, n - 1))
    m = data.draw(st.integers(1, n))
    depth = (n - 1).bit_length()
    assert len(merkle.inclusion_plan(index, n)) <= depth
    assert len(merkle.consistency_plan(m, n)) <= depth + 1
    assert len(merkle.plan_nodes(merkle.consistency_plan(m, n))) <= 2 * depth + 2


# --- real trees up to ~1e5 leaves ------------------------------------------------------

BIG = 70_000


@cache
def big_nodes() -> Mapping[Node, bytes]:
    return node_map(BIG)


@settings(max_examples=40, deadline=None)
@given(st.integers(0, BIG))
def test_root_from_leaf_hashes_equals_tree_root_over_stored_nodes(size: int) -> None:
    expected = merkle.root_from_leaf_hashes(leaf_hashes(BIG)[:size])
    assert merkle.tree_root(size, reader(big_nodes())) == expected


@settings(max_examples=60, deadline=None)
@given(st.integers(1, BIG), st.data())
def test_real_tree_proofs(n: int, data: st.DataObject) -> None:
    nodes = big_nodes()
    index = data.draw(st.integers(0, n - 1))
    m = data.draw(st.integers(1, n))
    r1 = merkle.tree_root(m, reader(nodes))
    r2 = merkle.tree_root(n, reader(nodes))
    inclusion = merkle.resolve_plan(merkle.inclusion_plan(index, n), nodes)
    merkle.verify_inclusion(leaf_hashes(BIG)[index], index, n, inclusion, r2)
    consistency = merkle.resolve_plan(merkle.consistency_plan(m, n), nodes)
    merkle.verify_consistency(m, n, consistency, r1, r2)


# --- batched proofs from a writer's nodes in memory ------------------------------


def _appended_nodes(old: int, size: int) -> dict[Node, bytes]:
    """What a writer holds after appending leaves ``old`` .. ``size-1`` to a tree of
    ``old``: the old right edge and every node the appends completed."""
    full = node_map(size)
    edge_nodes = merkle.nodes_of_range(0, old)
    held: dict[Node, bytes] = {n: full[n] for n in edge_nodes}
    edge = merkle.RightEdge(old, [full[n] for n in edge_nodes])
    for leaf in leaf_hashes(size)[old:]:
        edge.append(leaf, held)
    return held


def _check_batch(old: int, size: int) -> None:
    held = _appended_nodes(old, size)
    indexes = list(range(old, size))
    assert set(merkle.inclusion_nodes(indexes, size)) <= held.keys()
    proofs = merkle.inclusion_proofs(indexes, size, held)
    full = node_map(size)
    root = merkle.root_from_leaf_hashes(leaf_hashes(size))
    for index, batched in zip(indexes, proofs, strict=True):
        assert merkle.inclusion_plan(index, size) == ref_path(index, 0, size)
        assert batched == merkle.resolve_plan(merkle.inclusion_plan(index, size), full)
        merkle.verify_inclusion(leaf_hashes(size)[index], index, size, batched, root)


@pytest.mark.parametrize("size", range(1, 41))
def test_batched_proofs_from_held_nodes_exhaustive(size: int) -> None:
    """Every batch (old size, new size) up to 40 leaves: the proof of each appended
    entry needs only nodes the writer holds, and equals the one-at-a-time proof
    from all stored nodes and the RFC's PATH."""
    for old in range(size):
        _check_batch(old, size)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 3000), st.integers(1, 64))
def test_batched_proofs_from_held_nodes_random(old: int, batch: int) -> None:
    _check_batch(old, old + batch)


def test_batched_proofs_name_a_missing_node() -> None:
    held = _appended_nodes(5, 8)
    with pytest.raises(ProofError, match="entry 2"):
        merkle.inclusion_proofs([2], 8, held)  # an old entry's path leaves the edge
    assert merkle.inclusion_proofs([], 8, held) == []


# --- many proofs under one head (InclusionVerifier) -----------------------------------------


def _outcome(check: Callable[..., None], *args: object) -> str:
    try:
        check(*args)
    except ProofError as exc:
        return f"{type(exc).__name__}: {exc.message}"
    return "ok"


def _tampered(proof: list[bytes], kind: int, k: int) -> list[bytes]:
    """One of the proof's single changes: 0 flip, 1 drop, 2 add, 3 swap two hashes."""
    k %= len(proof) + 1
    if kind == 0 and proof:
        return [flip(h, 5) if j == k % len(proof) else h for j, h in enumerate(proof)]
    if kind == 1 and proof:
        return proof[: k % len(proof)] + proof[k % len(proof) + 1 :]
    if kind == 3 and len(proof) > 1:
        a, b = k % len(proof), (k + 1) % len(proof)
        swapped = list(proof)
        swapped[a], swapped[b] = swapped[b], swapped[a]
        return swapped
    return [*proof[:k], sha256(b"not in the tree").digest(), *proof[k:]]


def test_the_inclusion_verifier_passes_every_proof_in_every_order() -> None:
    for n in range(1, 130):
        indexes = list(range(n))
        for order in (indexes, indexes[::-1], indexes[::3] + indexes[1::3] + indexes[2::3]):
            verifier = merkle.InclusionVerifier(n, root(n))
            for i in order:
                verifier.verify(LEAVES[i], i, inclusion_proof(i, n))
            for i in order:  # every one again, now all from kept states
                verifier.verify(LEAVES[i], i, tuple(inclusion_proof(i, n)))


def test_the_inclusion_verifier_fails_exactly_as_verify_inclusion_between_good_proofs() -> None:
    # A bad proof after, before and among good ones that share its path: it must not
    # ride on a kept state, must fail with verify_inclusion's message, and must not
    # leave a state that lets a later bad proof through.
    for n in range(1, 100):
        r = root(n)
        verifier = merkle.InclusionVerifier(n, r)
        for i in range(n):
            good = inclusion_proof(i, n)
            for kind in range(4):
                for k in range(len(good) + 1):
                    bad = _tampered(good, kind, k)
                    expected = _outcome(merkle.verify_inclusion, LEAVES[i], i, n, bad, r)
                    assert _outcome(verifier.verify, LEAVES[i], i, bad) == expected
            verifier.verify(LEAVES[i], i, good)
            wrong_leaf = LEAVES[(i + 1) % N]
            assert _outcome(verifier.verify, wrong_leaf, i, good) == _outcome(
                merkle.verify_inclusion, wrong_leaf, i, n, good, r
            )
            for j in {i - 1, i + 1, n}:
                assert _outcome(verifier.verify, LEAVES[i], j, good) == _outcome(
                    merkle.verify_inclusion, LEAVES[i], j, n, good, r
                )


@settings(max_examples=300)
@given(
    n=st.integers(1, N),
    steps=st.lists(
        st.tuples(st.integers(0, N - 1), st.integers(-1, 3), st.integers(0, 20)), max_size=60
    ),
)
def test_the_inclusion_verifier_agrees_with_verify_inclusion(
    n: int, steps: list[tuple[int, int, int]]
) -> None:
    r = root(n)
    verifier = merkle.InclusionVerifier(n, r)
    for index, kind, k in steps:
        i = index % n
        proof = inclusion_proof(i, n)
        if kind >= 0:
            proof = _tampered(proof, kind, k)
        expected = _outcome(merkle.verify_inclusion, LEAVES[i], i, n, proof, r)
        assert _outcome(verifier.verify, LEAVES[i], i, proof) == expected
