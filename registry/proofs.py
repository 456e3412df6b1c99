"""Inclusion and consistency proofs built from stored node hashes in O(log n) reads."""

from __future__ import annotations

from collections.abc import Sequence

from registry.errors import NotFoundError
from registry.storage.protocol import LogStorage
from verifier import merkle
from verifier.merkle import Hash, Node, Range


class ProofBuilder:
    RANGE_CACHE_LIMIT = 1 << 16
    """Leaf ranges whose hash is kept (about 150 bytes each); beyond it the lot
    is dropped, as the storage's node cache is."""

    def __init__(self, storage: LogStorage) -> None:
        self.storage = storage
        self._ranges: dict[Range, Hash] = {}
        """The hash of a leaf range ``[start, end)`` a proof named: the log only
        grows, so it never changes. A page proves its history under the latest
        tree, and every proof in that tree shares its right edge's ranges."""

    def inclusion(self, index: int, tree_size: int) -> list[Hash]:
        """RFC 9162 inclusion proof of entry ``index`` in the tree of ``tree_size``."""
        if not 0 <= index < tree_size:
            raise NotFoundError(f"entry {index} is not in a tree of size {tree_size}")
        plan = merkle.inclusion_plan(index, tree_size)
        return merkle.resolve_plan(plan, self.storage.read_nodes(merkle.plan_nodes(plan)))

    def inclusions(self, indexes: Sequence[int], tree_size: int) -> list[list[Hash]]:
        """:meth:`inclusion` of each of ``indexes``, from one read of the nodes
        they need together (a certificate page proves its whole history)."""
        for index in indexes:
            if not 0 <= index < tree_size:
                raise NotFoundError(f"entry {index} is not in a tree of size {tree_size}")
        plans = [merkle.inclusion_plan(index, tree_size) for index in indexes]
        kept = self._ranges
        known: dict[Range, Hash] = {}
        todo: dict[Range, list[Node]] = {}
        for plan in plans:
            for r in plan:
                cached = kept.get(r)
                if cached is not None:
                    known[r] = cached
                elif r not in todo:
                    todo[r] = merkle.nodes_of_range(*r)
        if todo:
            hashes = self.storage.read_nodes(
                list(dict.fromkeys(n for nodes in todo.values() for n in nodes))
            )
            if len(kept) > self.RANGE_CACHE_LIMIT:
                kept.clear()
            for r, nodes in todo.items():
                known[r] = kept[r] = merkle.fold_nodes([hashes[n] for n in nodes])
        return [[known[r] for r in plan] for plan in plans]

    def consistency(self, first_size: int, second_size: int) -> list[Hash]:
        """RFC 9162 consistency proof from ``first_size`` to ``second_size``."""
        if not 0 <= first_size <= second_size:
            raise NotFoundError(f"no consistency proof from size {first_size} to {second_size}")
        plan = merkle.consistency_plan(first_size, second_size)
        return merkle.resolve_plan(plan, self.storage.read_nodes(merkle.plan_nodes(plan)))
