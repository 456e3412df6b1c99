"""Inclusion and consistency proofs built from stored node hashes in O(log n) reads."""

from __future__ import annotations

from collections.abc import Sequence

from registry.errors import NotFoundError
from registry.storage.protocol import LogStorage
from verifier import merkle
from verifier.merkle import Hash


class ProofBuilder:
    def __init__(self, storage: LogStorage) -> None:
        self.storage = storage

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
        nodes = self.storage.read_nodes(merkle.inclusion_nodes(indexes, tree_size))
        return merkle.inclusion_proofs(indexes, tree_size, nodes)

    def consistency(self, first_size: int, second_size: int) -> list[Hash]:
        """RFC 9162 consistency proof from ``first_size`` to ``second_size``."""
        if not 0 <= first_size <= second_size:
            raise NotFoundError(f"no consistency proof from size {first_size} to {second_size}")
        plan = merkle.consistency_plan(first_size, second_size)
        return merkle.resolve_plan(plan, self.storage.read_nodes(merkle.plan_nodes(plan)))
