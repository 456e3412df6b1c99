"""How stored Merkle node coordinates map to one integer database key.

``node_id = level << 48 | index``: one B-tree key per node, and the nodes of a
C2SP tile (consecutive indices at one level) are one contiguous key range.
"""

from __future__ import annotations

from verifier.merkle import Node

INDEX_BITS = 48
MAX_LEVEL = 63 - INDEX_BITS
_INDEX_MASK = (1 << INDEX_BITS) - 1


def node_id(node: Node) -> int:
    level, index = node
    return level << INDEX_BITS | index


def node_of(node_id_value: int) -> Node:
    return node_id_value >> INDEX_BITS, node_id_value & _INDEX_MASK
