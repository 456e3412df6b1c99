"""RFC 9162 §2.1 Merkle tree hashing, proof verification and proof planning.

Pure functions over bytes and ints; failures raise :class:`ProofError`.

A *node* ``(level, index)`` is the complete, aligned subtree covering leaves
``[index << level, (index + 1) << level)``. Every hash an inclusion or
consistency proof needs is a node hash or a right-fold of node hashes, so a
writer that stores node hashes (as C2SP tlog-tiles do) builds any proof from
O(log n) stored hashes: :func:`inclusion_plan` / :func:`consistency_plan` name
them, :func:`resolve_plan` turns fetched hashes into the proof.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import NewType

from verifier.errors import InconsistencyError, ProofError

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

Hash = NewType("Hash", bytes)
"""A 32-byte SHA-256 Merkle hash (leaf, node or root)."""

Node = tuple[int, int]
"""``(level, index)`` of a complete aligned subtree."""

Range = tuple[int, int]
"""``[start, end)`` leaf range whose RFC 9162 hash a proof step needs."""

_sha256 = hashlib.sha256


def leaf_hash(data: bytes) -> Hash:
    """RFC 9162 leaf hash: SHA-256(0x00 ‖ data)."""
    return Hash(_sha256(LEAF_PREFIX + data).digest())


def node_hash(left: bytes, right: bytes) -> Hash:
    """RFC 9162 interior node hash: SHA-256(0x01 ‖ left ‖ right)."""
    return Hash(_sha256(NODE_PREFIX + left + right).digest())


def _largest_power_of_two_below(n: int) -> int:
    """Largest power of two strictly less than ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_from_leaf_hashes(hashes: Sequence[bytes]) -> Hash:
    """MTH of a whole tree given its leaf hashes (O(n) memory; for checks and tests)."""
    if not hashes:
        return Hash(EMPTY_ROOT)
    # Fold complete subtrees bottom-up, keeping the right edge as a stack.
    stack: list[tuple[int, bytes]] = []
    for count, h in enumerate(hashes, start=1):
        node = h
        level = 0
        size = count
        while size & 1 == 0:
            _, left = stack.pop()
            node = node_hash(left, node)
            level += 1
            size >>= 1
        stack.append((level, node))
    node = stack[-1][1]
    for _, left in reversed(stack[:-1]):
        node = node_hash(left, node)
    return Hash(node)


# --- verification (RFC 9162 §2.1.3.2 and §2.1.4.2) -------------------------


def _check_hash(value: bytes, what: str) -> None:
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        raise ProofError(f"{what} is not a {HASH_SIZE}-byte hash")


def verify_inclusion(
    leaf: bytes, index: int, tree_size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf`` (a leaf hash) is at ``index`` in the tree with ``root``."""
    _check_hash(leaf, "leaf hash")
    _check_hash(root, "root hash")
    if not 0 <= index < tree_size:
        raise ProofError(f"index {index} is outside a tree of size {tree_size}")
    fn, sn, r = index, tree_size - 1, leaf
    # node_hash inlined and each hash's check formatted only on failure: this loop is
    # a third of a certificate's offline check after the two signatures (bench/verify.py).
    for step, p in enumerate(proof):
        if not isinstance(p, bytes) or len(p) != HASH_SIZE:
            _check_hash(p, f"inclusion proof hash {step}")
        if sn == 0:
            raise ProofError("inclusion proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = _sha256(NODE_PREFIX + p + r).digest()
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = _sha256(NODE_PREFIX + r + p).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof is shorter than the tree is deep")
    if r != root:
        raise ProofError(f"inclusion proof for index {index} does not lead to the root")


class InclusionVerifier:
    """Checks many inclusion proofs under one tree head, as :func:`verify_inclusion`
    would, sharing the work where their paths meet.

    :func:`verify_inclusion`'s loop goes on from a state — where it is in the tree
    ``(fn, sn)``, the hash so far, and the proof hashes not yet used — by that state
    alone. Every state of a proof that led to the root is kept; a later proof that
    reaches a kept state with the same hash and the same remaining hashes would repeat
    that walk to the same root, so it passes there. Neighbouring entries meet after a
    step or two: an audit's proofs cost about two hashes each instead of one per level.
    Any proof that does not meet a kept state is walked to the end; any that fails is
    handed to :func:`verify_inclusion`, so the error is the same word for word.
    """

    def __init__(self, tree_size: int, root: bytes) -> None:
        _check_hash(root, "root hash")
        self.tree_size = tree_size
        self.root = root
        # (fn, sn) -> (hash there, the proof that got there, how much of it was used)
        self._walked: dict[tuple[int, int], tuple[bytes, list[bytes], int]] = {}

    def verify(self, leaf: bytes, index: int, proof: Sequence[bytes]) -> None:
        if not isinstance(proof, list):
            proof = list(proof)  # kept proofs are compared as lists
        if not self._meets(leaf, index, proof):
            verify_inclusion(leaf, index, self.tree_size, proof, self.root)

    def _meets(self, leaf: bytes, index: int, proof: list[bytes]) -> bool:
        """True if the proof leads to the root; False: let verify_inclusion judge it."""
        if not isinstance(leaf, bytes) or len(leaf) != HASH_SIZE:
            return False
        if not 0 <= index < self.tree_size:
            return False
        walked = self._walked
        fn, sn, r = index, self.tree_size - 1, leaf
        states: list[tuple[tuple[int, int], bytes, int]] = []
        for used, p in enumerate(proof, 1):
            if not isinstance(p, bytes) or len(p) != HASH_SIZE or sn == 0:
                return False
            if fn & 1 or fn == sn:
                r = _sha256(NODE_PREFIX + p + r).digest()
                if not fn & 1:
                    while not fn & 1 and fn != 0:
                        fn >>= 1
                        sn >>= 1
            else:
                r = _sha256(NODE_PREFIX + r + p).digest()
            fn >>= 1
            sn >>= 1
            kept = walked.get((fn, sn))
            if kept is not None and kept[0] == r and proof[used:] == kept[1][kept[2] :]:
                break
            states.append(((fn, sn), r, used))
        else:
            if sn != 0 or r != self.root:
                return False
        for place, value, at in states:
            walked[place] = (value, proof, at)
        return True


def verify_consistency(
    first_size: int,
    second_size: int,
    proof: Sequence[bytes],
    first_root: bytes,
    second_root: bytes,
) -> None:
    """Check that the tree ``second_root`` is an append-only extension of ``first_root``.

    Raises :class:`InconsistencyError` carrying both heads and the proof.
    """

    def fail(reason: str) -> InconsistencyError:
        return InconsistencyError(
            f"trees of size {first_size} and {second_size} are not consistent: {reason}",
            first_size=first_size,
            first_root=first_root,
            second_size=second_size,
            second_root=second_root,
            proof=proof,
        )

    _check_hash(first_root, "first root")
    _check_hash(second_root, "second root")
    if not 0 <= first_size <= second_size:
        raise fail("the first tree is larger than the second")
    if first_size == 0 or first_size == second_size:
        if proof:
            raise fail("the proof must be empty")
        if first_size == 0 and first_root != EMPTY_ROOT:
            raise fail("the empty tree has a different root")
        if first_size == second_size and first_root != second_root:
            raise fail("equal sizes with different roots")
        return
    for step, c in enumerate(proof):
        _check_hash(c, f"consistency proof hash {step}")
    if not proof:
        raise fail("the proof is empty")
    path = list(proof)
    if first_size & (first_size - 1) == 0:
        path.insert(0, first_root)
    fn, sn = first_size - 1, second_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise fail("the proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise fail("the proof is too short")
    if fr != first_root:
        raise fail("the proof does not lead to the first root")
    if sr != second_root:
        raise fail("the proof does not lead to the second root")


# --- proof planning over stored node hashes --------------------------------


def nodes_of_range(start: int, end: int) -> list[Node]:
    """Complete aligned subtrees whose right-fold is the RFC 9162 hash of ``[start, end)``.

    Valid for the ranges that occur in RFC 9162 trees: ``start`` is aligned to a
    power of two at least as large as the highest bit of ``end - start``.
    """
    nodes: list[Node] = []
    while start < end:
        level = (end - start).bit_length() - 1
        nodes.append((level, start >> level))
        start += 1 << level
    return nodes


def fold_nodes(hashes: Sequence[bytes]) -> Hash:
    """Right-fold node hashes into the hash of the range they cover."""
    acc = hashes[-1]
    for h in reversed(hashes[:-1]):
        acc = node_hash(h, acc)
    return Hash(acc)


def inclusion_plan(index: int, tree_size: int) -> list[Range]:
    """Leaf ranges of RFC 9162 PATH(index, D[tree_size]), from the leaf's sibling up."""
    if not 0 <= index < tree_size:
        raise ProofError(f"index {index} is outside a tree of size {tree_size}")
    ranges: list[Range] = []
    start, end = 0, tree_size
    while end - start > 1:
        k = _largest_power_of_two_below(end - start)
        if index < start + k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start += k
    ranges.reverse()
    return ranges


def consistency_plan(first_size: int, second_size: int) -> list[Range]:
    """Leaf ranges of RFC 9162 PROOF(first_size, D[second_size])."""
    if not 0 <= first_size <= second_size:
        raise ProofError(f"no consistency proof from size {first_size} to {second_size}")
    if first_size in (0, second_size):
        return []
    ranges: list[Range] = []
    m, start, end, whole = first_size, 0, second_size, True
    while True:
        n = end - start
        if m == n:
            if not whole:
                ranges.append((start, end))
            break
        k = _largest_power_of_two_below(n)
        if m <= k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            m -= k
            start += k
            whole = False
    ranges.reverse()
    return ranges


def plan_nodes(ranges: Iterable[Range]) -> list[Node]:
    """Every stored node a plan reads, deduplicated, in first-use order."""
    return list(dict.fromkeys(node for r in ranges for node in nodes_of_range(*r)))


def resolve_plan(ranges: Sequence[Range], node_hashes: Mapping[Node, bytes]) -> list[Hash]:
    """Turn a plan and its fetched node hashes into proof hashes."""
    return [fold_nodes([node_hashes[n] for n in nodes_of_range(*r)]) for r in ranges]


def tree_root(tree_size: int, read_nodes: Callable[[Sequence[Node]], Mapping[Node, bytes]]) -> Hash:
    """Root of a tree of ``tree_size`` from its stored node hashes."""
    if tree_size == 0:
        return Hash(EMPTY_ROOT)
    nodes = nodes_of_range(0, tree_size)
    found = read_nodes(nodes)
    return fold_nodes([found[n] for n in nodes])


class RightEdge:
    """The right edge of a growing tree: one (level, hash) per complete subtree.

    The writer extends it to store new node hashes, and fsck extends it to
    recompute them — one definition, so the two cannot disagree.
    """

    def __init__(self, size: int = 0, edge_hashes: Sequence[bytes] = ()) -> None:
        nodes = nodes_of_range(0, size)
        if len(nodes) != len(edge_hashes):
            raise ProofError(f"a tree of size {size} has {len(nodes)} right-edge nodes")
        self.size = size
        self._stack: list[tuple[int, bytes]] = [
            (level, h) for (level, _), h in zip(nodes, edge_hashes, strict=True)
        ]

    def append(self, leaf: bytes, new_nodes: dict[Node, bytes]) -> None:
        """Add the next leaf hash, recording every node it completes in ``new_nodes``."""
        index = self.size
        new_nodes[(0, index)] = leaf
        level, node = 0, leaf
        stack = self._stack
        while stack and stack[-1][0] == level:
            node = node_hash(stack.pop()[1], node)
            level += 1
            new_nodes[(level, index >> level)] = node
        stack.append((level, node))
        self.size += 1

    def root(self) -> Hash:
        if not self._stack:
            return Hash(EMPTY_ROOT)
        return fold_nodes([h for _, h in self._stack])


def inclusion_proofs(
    indexes: Sequence[int], tree_size: int, node_hashes: Mapping[Node, bytes]
) -> list[list[Hash]]:
    """:func:`inclusion_plan` resolved for each of ``indexes`` from ``node_hashes``,
    which must hold every node the plans name (see :func:`inclusion_nodes`).

    A writer that has just appended holds those nodes in memory (the old right
    edge and the nodes the append completed), so it proves its new entries
    without reading anything back. A missing node raises :class:`ProofError`.
    """
    proofs: list[list[Hash]] = []
    for index in indexes:
        plan = inclusion_plan(index, tree_size)
        try:
            proofs.append(resolve_plan(plan, node_hashes))
        except KeyError as exc:
            raise ProofError(f"no hash of node {exc.args[0]} for entry {index}") from None
    return proofs


def inclusion_nodes(indexes: Iterable[int], tree_size: int) -> list[Node]:
    """Every node the inclusion proofs of ``indexes`` in a tree of ``tree_size``
    read, deduplicated, in first-use order."""
    return list(
        dict.fromkeys(
            node for index in indexes for node in plan_nodes(inclusion_plan(index, tree_size))
        )
    )
