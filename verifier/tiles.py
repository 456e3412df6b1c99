"""C2SP tlog-tiles: tile paths, the two tile byte formats, and proofs from tiles alone.

A log published as tiles is a set of static files under one prefix::

    checkpoint                      the signed tree head (C2SP tlog-checkpoint)
    tile/<L>/<N>[.p/<W>]            W (default 256) hashes at tree level 8*L
    tile/entries/<N>[.p/<W>]        W (default 256) leaf data, uint16 length-prefixed

``<N>`` is written in 3-digit groups, all but the last prefixed with ``x``
(1234067 -> ``x001/x234/067``); ``.p/<W>`` marks the partial right-most tile
of a level. Hash ``i`` of tile ``N`` at level ``L`` is the node
``(8*L, N*256 + i)``: a complete subtree of ``256**L`` leaves.

:class:`TiledTree` computes any node hash of a tree from its tiles, and so its
root and RFC 9162 proofs; those values are only as good as the tiles until they
are checked against a verified checkpoint (:meth:`TiledTree.check_root`,
:func:`verifier.merkle.verify_inclusion`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from verifier import merkle
from verifier.checkpoint import MAX_TREE_SIZE
from verifier.errors import MalformedError, ProofError, TooLargeError
from verifier.merkle import HASH_SIZE, Hash, Node

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT
MAX_TILE_LEVEL = 63
"""The spec allows levels 0..63; a tree below 2**63 leaves has tiles up to level 7."""
MAX_TILE_INDEX = MAX_TREE_SIZE >> TILE_HEIGHT
"""Largest index any tile of any level can have (level 0 of the largest tree)."""
MAX_BUNDLE_ENTRY = 0xFFFF
"""Entry bundles prefix each entry with a big-endian uint16 length."""
CHECKPOINT_PATH = "checkpoint"

_PATH_RE = re.compile(
    r"tile/(entries|0|[1-9][0-9]?)/((?:x[0-9]{3}/)*)([0-9]{3})(?:\.p/([1-9][0-9]{0,2}))?",
    re.ASCII,
)
_MAX_PATH_LENGTH = 64  # longer than any canonical path (7 index groups)


# --- addresses and paths ----------------------------------------------------------


def _check_index_width(index: int, width: int) -> None:
    if type(index) is not int or not 0 <= index <= MAX_TILE_INDEX:
        raise MalformedError(f"tile index {index!r} is out of range")
    if type(width) is not int or not 1 <= width <= TILE_WIDTH:
        raise MalformedError(f"tile width {width!r} is not between 1 and {TILE_WIDTH}")


def _index_path(index: int, width: int) -> str:
    text = f"{index:03d}"
    head, last = text[:-3], text[-3:]
    groups = [f"x{head[max(end - 3, 0) : end]:0>3}" for end in range(len(head), 0, -3)]
    suffix = "" if width == TILE_WIDTH else f".p/{width}"
    return "/".join([*reversed(groups), last]) + suffix


@dataclass(frozen=True)
class Tile:
    """Address of a Merkle hash tile: its level, index, and width in hashes (256 = full)."""

    level: int
    index: int
    width: int = TILE_WIDTH

    def __post_init__(self) -> None:
        if type(self.level) is not int or not 0 <= self.level <= MAX_TILE_LEVEL:
            raise MalformedError(f"tile level {self.level!r} is not between 0 and 63")
        _check_index_width(self.index, self.width)

    @property
    def tree_level(self) -> int:
        """The Merkle tree level of the hashes in this tile."""
        return self.level * TILE_HEIGHT

    @property
    def start(self) -> int:
        """Index (at :attr:`tree_level`) of the tile's first hash."""
        return self.index * TILE_WIDTH

    @property
    def path(self) -> str:
        return f"tile/{self.level}/{_index_path(self.index, self.width)}"


@dataclass(frozen=True)
class Bundle:
    """Address of an entry bundle: its index and width in entries (256 = full)."""

    index: int
    width: int = TILE_WIDTH

    def __post_init__(self) -> None:
        _check_index_width(self.index, self.width)

    @property
    def start(self) -> int:
        """Log index of the bundle's first entry."""
        return self.index * TILE_WIDTH

    @property
    def path(self) -> str:
        return f"tile/entries/{_index_path(self.index, self.width)}"


def parse_path(path: str) -> Tile | Bundle:
    """Parse a tile or entry-bundle path (``tile/...``, no leading slash), strictly.

    Only the canonical spelling is accepted: no leading zeros in the level or
    width, no all-zero leading index group, ``.p/256`` refused (that is the
    full tile).
    """
    if not isinstance(path, str) or len(path) > _MAX_PATH_LENGTH:
        raise MalformedError("not a tlog-tiles path")
    match = _PATH_RE.fullmatch(path)
    if match is None:
        raise MalformedError(f"not a tlog-tiles path: {path!r}")
    level_text, head, last, width_text = match.groups()
    index = 0
    for group in [*head.split("/")[:-1], last]:
        index = index * 1000 + int(group.removeprefix("x"))
    width = TILE_WIDTH if width_text is None else int(width_text)
    if width_text is not None and width >= TILE_WIDTH:
        raise MalformedError(f"partial tile width {width} is not between 1 and {TILE_WIDTH - 1}")
    parsed: Tile | Bundle = (
        Bundle(index, width) if level_text == "entries" else Tile(int(level_text), index, width)
    )
    if parsed.path != path:
        raise MalformedError(f"non-canonical tlog-tiles path {path!r} (canonical: {parsed.path})")
    return parsed


# --- which tiles a tree has --------------------------------------------------------


def hashes_at(size: int, level: int) -> int:
    """How many hashes tile level ``level`` holds for a tree of ``size`` leaves."""
    return size >> (level * TILE_HEIGHT)


def _level_tiles(count: int) -> Iterator[tuple[int, int]]:
    for index in range(count // TILE_WIDTH):
        yield index, TILE_WIDTH
    if count % TILE_WIDTH:
        yield count // TILE_WIDTH, count % TILE_WIDTH


def tiles_for_size(size: int) -> Iterator[Tile]:
    """Every hash tile of a tree of ``size`` leaves: full ones and the partial
    right-most one of each level, level 0 first."""
    level = 0
    while (count := hashes_at(size, level)) > 0:
        for index, width in _level_tiles(count):
            yield Tile(level, index, width)
        level += 1


def bundles_for_size(size: int) -> Iterator[Bundle]:
    """Every entry bundle of a tree of ``size`` leaves (the last one may be partial)."""
    for index, width in _level_tiles(size):
        yield Bundle(index, width)


def tile_holding(size: int, level: int, position: int) -> Tile:
    """The tile of a tree of ``size`` that holds hash ``position`` of tile level ``level``."""
    count = hashes_at(size, level)
    if not 0 <= position < count:
        raise ProofError(f"a tree of size {size} has no hash {position} at tile level {level}")
    index = position // TILE_WIDTH
    return Tile(level, index, min(count - index * TILE_WIDTH, TILE_WIDTH))


# --- byte formats -------------------------------------------------------------------


def encode_hash_tile(hashes: Sequence[bytes]) -> bytes:
    if not 1 <= len(hashes) <= TILE_WIDTH:
        raise MalformedError(f"a tile holds 1 to {TILE_WIDTH} hashes, not {len(hashes)}")
    if any(len(h) != HASH_SIZE for h in hashes):
        raise MalformedError(f"a tile holds {HASH_SIZE}-byte hashes")
    return b"".join(hashes)


def parse_hash_tile(data: bytes, width: int) -> list[Hash]:
    """The ``width`` hashes of a tile's bytes (exactly ``width * 32`` of them)."""
    if not isinstance(data, bytes) or len(data) != width * HASH_SIZE:
        raise MalformedError(f"a tile of width {width} must be {width * HASH_SIZE} bytes")
    return [Hash(data[i : i + HASH_SIZE]) for i in range(0, len(data), HASH_SIZE)]


def encode_entry_bundle(entries: Sequence[bytes]) -> bytes:
    if not 1 <= len(entries) <= TILE_WIDTH:
        raise MalformedError(f"a bundle holds 1 to {TILE_WIDTH} entries, not {len(entries)}")
    out = bytearray()
    for data in entries:
        if len(data) > MAX_BUNDLE_ENTRY:
            raise TooLargeError(f"an entry of {len(data)} bytes does not fit an entry bundle")
        out += len(data).to_bytes(2, "big")
        out += data
    return bytes(out)


def parse_entry_bundle(data: bytes, width: int) -> list[bytes]:
    """The ``width`` entries of a bundle's bytes; refuses short, long or trailing data."""
    if not isinstance(data, bytes):
        raise MalformedError("an entry bundle must be bytes")
    entries: list[bytes] = []
    pos = 0
    while pos < len(data):
        if len(entries) == width:
            raise MalformedError(f"entry bundle has data after its {width} entries")
        if pos + 2 > len(data):
            raise MalformedError("entry bundle ends inside a length prefix")
        end = pos + 2 + int.from_bytes(data[pos : pos + 2], "big")
        if end > len(data):
            raise MalformedError("entry bundle ends inside an entry")
        entries.append(data[pos + 2 : end])
        pos = end
    if len(entries) != width:
        raise MalformedError(f"entry bundle has {len(entries)} entries, not {width}")
    return entries


# --- proofs from tiles ----------------------------------------------------------------


class TiledTree:
    """The tree of ``size`` leaves seen through its tiles, fetched with ``fetch(path)``.

    Any complete node ``(h, j)`` of the tree is a perfect subtree over ``2**(h % 8)``
    consecutive hashes of one tile at level ``h // 8`` (the partial right-most
    tile when it is on the right edge), so roots and proofs need tiles alone.
    Tiles are fetched once and node hashes remembered. Exceptions raised by
    ``fetch`` propagate unchanged.

    Nothing here is verified: compare :meth:`root` with a verified checkpoint
    (:meth:`check_root`), and verify proofs with :mod:`verifier.merkle`.
    """

    def __init__(self, size: int, fetch: Callable[[str], bytes]) -> None:
        if type(size) is not int or not 0 <= size <= MAX_TREE_SIZE:
            raise MalformedError(f"tree size {size!r} is out of range")
        self.size = size
        self._fetch = fetch
        self._tiles: dict[Tile, list[Hash]] = {}
        self._nodes: dict[Node, Hash] = {}

    def tile(self, tile: Tile) -> list[Hash]:
        """The hashes of one tile of this tree (fetched once)."""
        hashes = self._tiles.get(tile)
        if hashes is None:
            hashes = parse_hash_tile(self._fetch(tile.path), tile.width)
            self._tiles[tile] = hashes
        return hashes

    def node(self, level: int, index: int) -> Hash:
        """Hash of the complete subtree ``(level, index)``."""
        if level < 0 or index < 0 or (index + 1) << level > self.size:
            raise ProofError(f"node ({level}, {index}) is not complete in a tree of {self.size}")
        return self._node(level, index)

    def _node(self, level: int, index: int) -> Hash:
        found = self._nodes.get((level, index))
        if found is not None:
            return found
        if level % TILE_HEIGHT == 0:
            tile_level = level // TILE_HEIGHT
            tile = tile_holding(self.size, tile_level, index)
            value = self.tile(tile)[index - tile.start]
        else:
            value = merkle.node_hash(
                self._node(level - 1, 2 * index), self._node(level - 1, 2 * index + 1)
            )
        self._nodes[(level, index)] = value
        return value

    def range_hash(self, start: int, end: int) -> Hash:
        """RFC 9162 hash of leaves ``[start, end)``, a range a proof or root uses."""
        if not 0 <= start < end <= self.size:
            raise ProofError(f"leaves [{start}, {end}) are not in a tree of size {self.size}")
        return merkle.fold_nodes([self.node(*n) for n in merkle.nodes_of_range(start, end)])

    def root(self, size: int | None = None) -> Hash:
        """Root of this tree, or of its prefix of ``size`` leaves (an earlier tree head)."""
        size = self.size if size is None else size
        if size == 0:
            return Hash(merkle.EMPTY_ROOT)
        return self.range_hash(0, size)

    def check_root(self, expected: bytes) -> Hash:
        """The root, after checking it equals ``expected`` (a verified checkpoint's root)."""
        root = self.root()
        if root != expected:
            raise ProofError(f"the tiles of a tree of size {self.size} do not lead to its root")
        return root

    def leaf_hash(self, index: int) -> Hash:
        return self.node(0, index)

    def inclusion_proof(self, index: int) -> list[Hash]:
        """RFC 9162 inclusion proof of leaf ``index`` in this tree."""
        plan = merkle.inclusion_plan(index, self.size)
        return [self.range_hash(*r) for r in plan]

    def consistency_proof(self, first_size: int, second_size: int | None = None) -> list[Hash]:
        """RFC 9162 consistency proof from ``first_size`` to ``second_size`` (default:
        this tree's size); both at most this tree's size."""
        second = self.size if second_size is None else second_size
        if second > self.size:
            raise ProofError(f"tree size {second} is beyond this tree of size {self.size}")
        plan = merkle.consistency_plan(first_size, second)
        return [self.range_hash(*r) for r in plan]

    def unverified_entries(self, bundle_index: int) -> list[bytes]:
        """The leaf data of one entry bundle of this tree; check each with an inclusion
        proof of its leaf hash before trusting it."""
        count = hashes_at(self.size, 0)
        if not 0 <= bundle_index * TILE_WIDTH < count:
            raise ProofError(f"a tree of size {self.size} has no entry bundle {bundle_index}")
        width = min(count - bundle_index * TILE_WIDTH, TILE_WIDTH)
        return parse_entry_bundle(self._fetch(Bundle(bundle_index, width).path), width)
