"""C2SP tlog-tiles on the checking side alone (``verifier.tiles``): paths, byte
formats, and roots and proofs computed from tiles, against ``verifier.merkle``
and the Go known-answer vectors.

Tiles are built here in memory the plain way the spec defines them — level
``L+1`` hashes are the tree hashes of the full 256-hash groups of level ``L`` —
independently of ``tiles_for_size``.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Callable, Sequence
from functools import cache

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.helpers import tlog_vectors
from tests.verifier_helpers import leaf_data, leaf_hashes, node_map, only_our_errors
from verifier import merkle, tiles
from verifier.errors import InconsistencyError, MalformedError, ProofError, TooLargeError
from verifier.tiles import Bundle, Tile, TiledTree

SIZES = range(1, 601)
BIG_SIZES = (65535, 65536, 65537, 70000)


def build_tiles(leaves: Sequence[bytes], size: int) -> dict[str, bytes]:
    """Every tile file of the tree of the first ``size`` leaf hashes."""
    files: dict[str, bytes] = {}
    hashes = list(leaves[:size])
    level = 0
    while hashes:
        for start in range(0, len(hashes), 256):
            chunk = hashes[start : start + 256]
            files[Tile(level, start // 256, len(chunk)).path] = b"".join(chunk)
        hashes = [
            merkle.root_from_leaf_hashes(hashes[s : s + 256])
            for s in range(0, len(hashes) - 255, 256)
        ]
        level += 1
    return files


def build_bundles(size: int) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for start in range(0, size, 256):
        chunk = [leaf_data(i) for i in range(start, min(start + 256, size))]
        body = b"".join(len(d).to_bytes(2, "big") + d for d in chunk)
        files[Bundle(start // 256, len(chunk)).path] = body
    return files


@cache
def tile_files(size: int) -> dict[str, bytes]:
    return build_tiles(leaf_hashes(max(size, 1000)), size)


class Recorder:
    """A ``fetch`` over a dict of files that remembers what was asked for."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.fetched: list[str] = []

    def __call__(self, path: str) -> bytes:
        self.fetched.append(path)
        return self.files[path]  # KeyError: the client asked for a tile the tree lacks


def reference_inclusion(index: int, size: int) -> list[merkle.Hash]:
    plan = merkle.inclusion_plan(index, size)
    return merkle.resolve_plan(plan, node_map(max(size, 1000)))


def reference_consistency(first: int, second: int) -> list[merkle.Hash]:
    plan = merkle.consistency_plan(first, second)
    return merkle.resolve_plan(plan, node_map(max(second, 1000)))


# --- paths ---------------------------------------------------------------------------


def test_paths_from_the_spec() -> None:
    assert Tile(0, 1234067).path == "tile/0/x001/x234/067"
    assert Tile(2, 1234067, 8).path == "tile/2/x001/x234/067.p/8"
    assert Bundle(1234067, 8).path == "tile/entries/x001/x234/067.p/8"
    assert Tile(0, 0).path == "tile/0/000"
    assert Tile(1, 1000).path == "tile/1/x001/000"
    assert Bundle(999).path == "tile/entries/999"
    assert tiles.parse_path("tile/0/x001/x234/067") == Tile(0, 1234067)
    assert tiles.parse_path("tile/entries/x001/x234/067.p/8") == Bundle(1234067, 8)


def test_tiles_of_a_tree_of_70000_as_in_the_spec() -> None:
    """273 full level-0 tiles, a partial of 112, one full level-1 tile, a partial
    level-1 tile of 17 and a partial level-2 tile of 1."""
    found = list(tiles.tiles_for_size(70000))
    assert found == [
        *(Tile(0, n) for n in range(273)),
        Tile(0, 273, 112),
        Tile(1, 0),
        Tile(1, 1, 17),
        Tile(2, 0, 1),
    ]
    assert list(tiles.tiles_for_size(256)) == [Tile(0, 0), Tile(1, 0, 1)]
    assert list(tiles.tiles_for_size(0)) == []
    assert list(tiles.bundles_for_size(70000))[-2:] == [Bundle(272), Bundle(273, 112)]
    assert list(tiles.bundles_for_size(256)) == [Bundle(0)]


@pytest.mark.parametrize("size", [*range(1, 600, 7), 255, 256, 257, 511, 512, 513, *BIG_SIZES])
def test_tiles_for_size_is_what_the_spec_defines(size: int) -> None:
    expected = build_tiles(leaf_hashes(max(size, 1000)), size)
    assert [t.path for t in tiles.tiles_for_size(size)] == list(expected)


@given(
    st.integers(0, tiles.MAX_TILE_LEVEL),
    st.integers(0, tiles.MAX_TILE_INDEX),
    st.integers(1, tiles.TILE_WIDTH),
)
def test_path_round_trip(level: int, index: int, width: int) -> None:
    tile = Tile(level, index, width)
    bundle = Bundle(index, width)
    assert tiles.parse_path(tile.path) == tile
    assert tiles.parse_path(bundle.path) == bundle
    groups = tile.path.removeprefix(f"tile/{level}/").split(".p/")[0].split("/")
    assert all(len(g) == 4 and g[0] == "x" for g in groups[:-1])
    assert len(groups[-1]) == 3
    assert int("".join(g.removeprefix("x") for g in groups)) == index
    assert groups[0] != "x000"


@given(st.text(alphabet="tile/entrsx0123456789.p", max_size=40) | st.text(max_size=40))
def test_any_text_is_refused_or_canonical(text: str) -> None:
    parsed = only_our_errors(tiles.parse_path, text)
    if parsed is not None:
        assert isinstance(parsed, Tile | Bundle)
        assert parsed.path == text


@pytest.mark.parametrize(
    "path",
    [
        "",
        "tile",
        "tile/",
        "tile/0",
        "tile/0/",
        "/tile/0/000",
        "tile/0/000/",
        "tile/0/00",
        "tile/0/0000",
        "tile/0/1",
        "tile/0/x000/001",  # a leading all-zero group
        "tile/0/x000/000",
        "tile/0/x1/000",
        "tile/0/001/000",  # 'x' missing on a leading group
        "tile/0/x001/x002",  # 'x' on the last group
        "tile/00/000",
        "tile/01/000",
        "tile/-1/000",
        "tile/64/000",
        "tile/99/000",
        "tile/+1/000",
        "tile/0/000.p/0",
        "tile/0/000.p/00",
        "tile/0/000.p/08",
        "tile/0/000.p/256",  # that is the full tile
        "tile/0/000.p/1000",
        "tile/0/000.p/",
        "tile/0/000.p",
        "tile/0/000.P/8",
        "tile/0/000.p/8/",
        "tile/entries/000.p/-1",
        "tile/entry/000",
        "tile/entries/x000/000",
        "tile/data/000",
        "tile/8/0/000",  # the Go sumdb form with a tile height
        "tile/0/０００",  # fullwidth digits are not ASCII digits
        "tile/0/٠٠٠",
        "tile/0/000\n",
        "tile/0/000\x00",
        "tile/0/x999/x999/x999/x999/x999/x999/x999/999",  # beyond any tree
        "tile/0/" + "x001/" * 20 + "000",
    ],
)
def test_bad_paths_are_refused(path: str) -> None:
    with pytest.raises(MalformedError):
        tiles.parse_path(path)


@pytest.mark.parametrize(
    ("make", "args"),
    [
        (Tile, (-1, 0, 256)),
        (Tile, (64, 0, 256)),
        (Tile, (0, -1, 256)),
        (Tile, (0, tiles.MAX_TILE_INDEX + 1, 256)),
        (Tile, (0, 0, 0)),
        (Tile, (0, 0, 257)),
        (Tile, (True, 0, 256)),
        (Bundle, (0, 0)),
        (Bundle, (-1, 1)),
        (Bundle, (0, 1.0)),
    ],
)
def test_out_of_range_addresses_are_refused(
    make: Callable[..., object], args: tuple[object, ...]
) -> None:
    with pytest.raises(MalformedError):
        make(*args)


# --- byte formats ---------------------------------------------------------------------


def test_hash_tile_bytes() -> None:
    hashes = list(leaf_hashes(256))
    data = tiles.encode_hash_tile(hashes)
    assert len(data) == 8192
    assert tiles.parse_hash_tile(data, 256) == hashes
    assert tiles.parse_hash_tile(data[:96], 3) == hashes[:3]
    for bad, width in [(data, 255), (data[:-1], 256), (data + b"\0", 256), (b"", 1)]:
        with pytest.raises(MalformedError):
            tiles.parse_hash_tile(bad, width)
    bad_lists: list[list[bytes]] = [[], [*hashes, hashes[0]], [b"short"]]
    for hashes_in in bad_lists:
        with pytest.raises(MalformedError):
            tiles.encode_hash_tile(hashes_in)


@given(st.lists(st.binary(max_size=300), min_size=1, max_size=256))
def test_entry_bundle_round_trip(entries: list[bytes]) -> None:
    data = tiles.encode_entry_bundle(entries)
    assert tiles.parse_entry_bundle(data, len(entries)) == entries


def test_entry_bundle_bytes() -> None:
    data = tiles.encode_entry_bundle([b"ab", b"", b"c"])
    assert data == b"\x00\x02ab\x00\x00\x00\x01c"
    largest = b"x" * 0xFFFF
    assert tiles.parse_entry_bundle(tiles.encode_entry_bundle([largest]), 1) == [largest]
    with pytest.raises(TooLargeError):
        tiles.encode_entry_bundle([largest + b"x"])
    with pytest.raises(MalformedError):
        tiles.encode_entry_bundle([])
    for bad, width in [
        (data, 2),  # a third entry after the second
        (data, 4),  # one short
        (data[:-1], 3),  # ends inside an entry
        (data + b"\x00", 3),  # ends inside a length prefix
        (b"", 1),
    ]:
        with pytest.raises(MalformedError):
            tiles.parse_entry_bundle(bad, width)


# --- roots and proofs from tiles --------------------------------------------------------


def sample(size: int, rng: random.Random) -> list[int]:
    """Indices or sizes worth checking in a tree of ``size``: edges, tile
    boundaries and a few at random."""
    picks = {0, 1, size // 2, size - 2, size - 1, 255, 256, 257, 65535, 65536}
    picks.update(rng.randrange(size) for _ in range(4))
    return sorted(p for p in picks if 0 <= p < size)


@pytest.mark.parametrize("size", SIZES)
def test_proofs_from_tiles_every_size(size: int) -> None:
    rng = random.Random(size)
    leaves = leaf_hashes(1000)
    fetch = Recorder(tile_files(size))
    tree = TiledTree(size, fetch)
    root = merkle.root_from_leaf_hashes(leaves[:size])
    assert tree.check_root(root) == root
    indices = range(size) if size <= 40 else sample(size, rng)
    for index in indices:
        proof = tree.inclusion_proof(index)
        assert proof == reference_inclusion(index, size)
        merkle.verify_inclusion(leaves[index], index, size, proof, root)
        assert tree.leaf_hash(index) == leaves[index]
    for first in [m + 1 for m in sample(size, rng)]:
        proof = tree.consistency_proof(first)
        assert proof == reference_consistency(first, size)
        first_root = merkle.root_from_leaf_hashes(leaves[:first])
        assert tree.root(first) == first_root
        merkle.verify_consistency(first, size, proof, first_root, root)
    assert set(fetch.fetched) <= set(fetch.files)
    assert len(fetch.fetched) == len(set(fetch.fetched))  # each tile fetched once


@pytest.mark.parametrize("size", BIG_SIZES)
def test_proofs_from_tiles_across_level_2(size: int) -> None:
    rng = random.Random(size)
    leaves = leaf_hashes(size)
    files = build_tiles(leaves, size)
    root = merkle.root_from_leaf_hashes(leaves)
    TiledTree(size, Recorder(files)).check_root(root)
    nodes = node_map(size)
    for index in sample(size, rng):
        fetch = Recorder(files)
        proof = TiledTree(size, fetch).inclusion_proof(index)
        assert proof == merkle.resolve_plan(merkle.inclusion_plan(index, size), nodes)
        merkle.verify_inclusion(leaves[index], index, size, proof, root)
        # O(log n): at most the tile of the leaf and two tiles per level above it
        assert len(fetch.fetched) <= 5
    tree = TiledTree(size, Recorder(files))
    for first in [m + 1 for m in sample(size, rng)]:
        proof = tree.consistency_proof(first)
        assert proof == merkle.resolve_plan(merkle.consistency_plan(first, size), nodes)
        first_root = merkle.root_from_leaf_hashes(leaves[:first])
        merkle.verify_consistency(first, size, proof, first_root, root)


def _b(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


@pytest.mark.shared
def test_go_vectors_from_tiles() -> None:
    """Roots and proofs of golang.org/x/mod/sumdb/tlog, recomputed from tiles."""
    vectors = tlog_vectors()
    for size_text, root in vectors["roots"].items():
        size = int(size_text)
        assert TiledTree(size, tile_files(size).__getitem__).root() == _b(root)
    for case in vectors["inclusion"]:
        tree = TiledTree(case["Size"], tile_files(case["Size"]).__getitem__)
        assert tree.inclusion_proof(case["Index"]) == [_b(h) for h in case["Proof"]]
    for case in vectors["consistency"]:
        tree = TiledTree(case["Second"], tile_files(case["Second"]).__getitem__)
        assert tree.consistency_proof(case["First"]) == [_b(h) for h in case["Proof"]]


def test_entries_from_bundles() -> None:
    size = 600
    files = {**tile_files(size), **build_bundles(size)}
    tree = TiledTree(size, files.__getitem__)
    entries = [e for n in range(3) for e in tree.unverified_entries(n)]
    assert entries == [leaf_data(i) for i in range(size)]
    assert [merkle.leaf_hash(e) for e in entries] == [tree.leaf_hash(i) for i in range(size)]
    with pytest.raises(ProofError):
        tree.unverified_entries(3)


def test_empty_tree_needs_no_tile() -> None:
    tree = TiledTree(0, Recorder({}))
    assert tree.check_root(merkle.EMPTY_ROOT) == merkle.EMPTY_ROOT
    assert tree.consistency_proof(0) == []
    with pytest.raises(ProofError):
        tree.inclusion_proof(0)


def test_questions_outside_the_tree_are_refused() -> None:
    tree = TiledTree(300, tile_files(300).__getitem__)
    for ask in (
        lambda: tree.inclusion_proof(300),
        lambda: tree.inclusion_proof(-1),
        lambda: tree.consistency_proof(10, 301),
        lambda: tree.consistency_proof(20, 10),
        lambda: tree.node(9, 0),  # 512 leaves
        lambda: tree.node(0, 300),
        lambda: tree.root(301),
        lambda: tree.range_hash(5, 5),
    ):
        with pytest.raises(ProofError):
            ask()
    with pytest.raises(MalformedError):
        TiledTree(-1, tile_files(300).__getitem__)


def test_tampered_tiles_are_caught() -> None:
    """One flipped bit in any tile: a root read from it no longer matches, every
    proof that reads the forged hash fails to verify, and no wrong proof verifies."""
    size = 300
    files = tile_files(size)
    leaves = leaf_hashes(1000)
    root = merkle.root_from_leaf_hashes(leaves[:size])
    root_reads = Recorder(files)
    TiledTree(size, root_reads).root()
    assert root_reads.fetched == ["tile/1/000.p/1", "tile/0/001.p/44"]
    for path in files:
        data = bytearray(files[path])
        data[-1] ^= 1
        tree = TiledTree(size, {**files, path: bytes(data)}.__getitem__)
        if path in root_reads.fetched:
            with pytest.raises(ProofError):
                tree.check_root(root)
        failed = 0
        for index in range(size):
            proof = tree.inclusion_proof(index)
            leaf = tree.leaf_hash(index)
            if proof == reference_inclusion(index, size) and leaf == leaves[index]:
                merkle.verify_inclusion(leaf, index, size, proof, root)
                continue
            failed += 1
            with pytest.raises(ProofError):
                merkle.verify_inclusion(leaf, index, size, proof, root)
        assert failed > 0
        for first in range(1, size, 7):
            proof = tree.consistency_proof(first)
            first_root = merkle.root_from_leaf_hashes(leaves[:first])
            if proof == reference_consistency(first, size):
                continue
            with pytest.raises(InconsistencyError):
                merkle.verify_consistency(first, size, proof, first_root, root)
        short = {**files, path: files[path][:-1]}
        tile = tiles.parse_path(path)
        assert isinstance(tile, Tile)
        with pytest.raises(MalformedError):
            TiledTree(size, short.__getitem__).tile(tile)
