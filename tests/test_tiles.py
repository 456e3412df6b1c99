"""The log as C2SP tlog-tiles: the HTTP routes, and ``qiledger tiles --out DIR``
served by a plain static file server and checked from the files alone with
``verifier`` (checkpoint signature, entries, inclusion and consistency proofs).

Trees cross a tile boundary (more than 256 entries) and grow between runs; both
storage engines (the ``settings`` fixture).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from registry import tiles as registry_tiles
from registry.api.app import create_app
from registry.cli.main import main as qiledger
from registry.config import Settings
from registry.errors import IntegrityError, NotFoundError
from registry.ledger import Ledger
from registry.sequencer import Accepted
from tests.helpers import envelope_bytes, free_port, issue_statement, submit_with_documents
from verifier import checkpoint, merkle
from verifier import entry as entry_mod
from verifier.entry import GENESIS_PREV
from verifier.errors import ProofError
from verifier.keys import SigningKey
from verifier.note import NoteVerifier
from verifier.tiles import TILE_WIDTH, Bundle, Tile, TiledTree, bundles_for_size, tiles_for_size

IMMUTABLE = "public, max-age=31536000, immutable"


def append_issues(ledger: Ledger, key: SigningKey, start: int, count: int) -> None:
    """Append ``count`` certificate statements in batches (one checkpoint each)."""
    numbers = range(start, start + count)
    for first in range(0, count, 100):
        batch = [envelope_bytes(issue_statement(n), key) for n in numbers[first : first + 100]]
        outcomes = submit_with_documents(ledger.sequencer, batch)
        assert all(isinstance(o, Accepted) for o in outcomes), outcomes


def all_paths(size: int) -> list[str]:
    return [t.path for t in tiles_for_size(size)] + [b.path for b in bundles_for_size(size)]


def verify_from_tiles(ledger: Ledger, fetch: Callable[[str], bytes], vkey: str) -> int:
    """Check the published log from its files alone; returns the tree size.

    The checkpoint's signature is checked with the log's verifier key string;
    the root, every entry (from the entry bundles, with its hash chain),
    every inclusion proof and a consistency proof from every earlier signed
    tree are computed from tiles, compared with the ledger's own proofs, and
    verified with ``verifier.merkle``.
    """
    verifier_key = NoteVerifier.parse(vkey)
    head = checkpoint.verify(fetch("checkpoint"), verifier_key).checkpoint
    size, root = head.size, head.root
    tree = TiledTree(size, fetch)
    tree.check_root(root)
    entries = [
        e for n in range((size + TILE_WIDTH - 1) // TILE_WIDTH) for e in tree.unverified_entries(n)
    ]
    assert len(entries) == size
    prev = GENESIS_PREV
    for index, data in enumerate(entries):
        leaf = merkle.leaf_hash(data)
        proof = tree.inclusion_proof(index)
        assert proof == ledger.proofs.inclusion(index, size)
        merkle.verify_inclusion(leaf, index, size, proof, root)
        assert entry_mod.parse(data).prev == prev
        prev = leaf
    earlier = [s for s in ledger.storage.iter_checkpoints() if s.size <= size]
    assert len(earlier) >= 4
    for stored in earlier:
        old = checkpoint.verify(stored.note, verifier_key).checkpoint
        proof = tree.consistency_proof(old.size)
        assert proof == ledger.proofs.consistency(old.size, size)
        merkle.verify_consistency(old.size, size, proof, old.root, root)
        assert tree.root(old.size) == old.root
    return size


# --- HTTP routes -------------------------------------------------------------------------


@pytest.fixture
def client(
    ledger: Ledger, settings: Settings, lab_key: SigningKey, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TestClient]:
    """The application over a second Ledger on the same database (as a server
    process opens it), with 300 certificates appended through the fixture's."""
    append_issues(ledger, lab_key, 0, 300)
    served = Ledger.open(settings)
    app = create_app(served)

    def tripwire(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a tile route wrote to the log or replayed the trust state")

    # Read-only: the tile routes never submit nor replay the trust state.
    monkeypatch.setattr(served.sequencer, "submit_many", tripwire)
    monkeypatch.setattr(served.policy, "sync", tripwire)
    with TestClient(app) as test_client:
        yield test_client


def assert_not_found(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404, (path, response.content[:100])
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert set(body) == {"type", "title", "status", "detail", "code"}
    assert body["status"] == 404
    assert body["code"] == "not_found"


def test_routes_serve_the_tree(client: TestClient, ledger: Ledger, lab_key: SigningKey) -> None:
    response = client.get("/checkpoint")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    assert response.content == ledger.latest_checkpoint().note
    size = ledger.latest_checkpoint().size
    assert size == 302

    def fetch(path: str) -> bytes:
        got = client.get("/" + path)
        assert got.status_code == 200, path
        if path != "checkpoint":
            assert got.headers["content-type"] == "application/octet-stream"
            assert got.headers["cache-control"] == IMMUTABLE
        return got.content

    for tile in tiles_for_size(size):
        nodes = [(tile.tree_level, tile.start + i) for i in range(tile.width)]
        stored = ledger.storage.read_nodes_uncached(nodes)
        assert fetch(tile.path) == b"".join(stored[n] for n in nodes)
    for bundle in bundles_for_size(size):
        data = fetch(bundle.path)
        first = ledger.storage.entry(bundle.start).data
        assert data.startswith(len(first).to_bytes(2, "big") + first)
    verify_from_tiles(ledger, fetch, str(ledger.identity.verifier))


def test_routes_refuse_what_is_not_in_the_signed_tree(
    client: TestClient, ledger: Ledger, lab_key: SigningKey
) -> None:
    # size 302: tile/0/000 is full, tile/0/001 holds 46 hashes, tile/1/000 one.
    for path in ("tile/0/001.p/46", "tile/entries/001.p/46", "tile/1/000.p/1", "tile/0/000"):
        assert client.get("/" + path).status_code == 200
    for path in (
        "tile/0/001",  # not full yet
        "tile/0/001.p/47",  # one hash beyond the tree
        "tile/entries/001.p/47",
        "tile/entries/001",
        "tile/0/002.p/1",
        "tile/1/000.p/2",
        "tile/1/000",
        "tile/2/000.p/1",
        "tile/63/000.p/1",
        "tile/0/x001/000",
    ):
        assert_not_found(client, "/" + path)
    for bad in (
        "tile/0/1",
        "tile/0/x000/000",
        "tile/00/000",
        "tile/0/000.p/256",
        "tile/0/000.p/0",
        "tile/64/000",
        "tile/entries/",
        "tile/entries/abc",
        "tile/0/000/",
        "tile/",
    ):
        assert_not_found(client, "/" + bad)
    # A partial tile of a tile that has since filled up: a prefix of the full one.
    full = client.get("/tile/0/000").content
    assert client.get("/tile/0/000.p/200").content == full[: 200 * 32]
    # Once the tree grows, the tiles come.
    append_issues(ledger, lab_key, 300, 220)  # 522 entries
    assert client.get("/tile/0/001").status_code == 200
    assert client.get("/tile/entries/002.p/10").status_code == 200
    assert client.get("/tile/1/000.p/2").status_code == 200
    assert_not_found(client, "/tile/0/002.p/11")


def test_tile_reads_refuse_beyond_the_checkpoint(ledger: Ledger) -> None:
    size = ledger.latest_checkpoint().size  # 2
    assert registry_tiles.hash_tile(ledger.storage, 0, 0, size) == b"".join(
        ledger.storage.entry(i).leaf_hash for i in range(size)
    )
    assert len(registry_tiles.entry_bundle(ledger.storage, 0, 1)) > 2
    for ask in (
        lambda: registry_tiles.hash_tile(ledger.storage, 0, 0, size + 1),
        lambda: registry_tiles.hash_tile(ledger.storage, 0, 0, TILE_WIDTH),
        lambda: registry_tiles.hash_tile(ledger.storage, 1, 0, 1),
        lambda: registry_tiles.hash_tile(ledger.storage, 0, 0, 0),
        lambda: registry_tiles.hash_tile(ledger.storage, -1, 0, 1),
        lambda: registry_tiles.entry_bundle(ledger.storage, 0, size + 1),
        lambda: registry_tiles.entry_bundle(ledger.storage, 1, 1),
        lambda: registry_tiles.entry_bundle(ledger.storage, -1, 1),
    ):
        with pytest.raises(NotFoundError):
            ask()


# --- qiledger tiles --out DIR, served as static files --------------------------------------


@pytest.fixture
def static_server(tmp_path: Path) -> Iterator[tuple[Path, Callable[[str], bytes]]]:
    """``python -m http.server`` over an empty directory, and a fetch for it."""
    out = tmp_path / "public"
    out.mkdir()
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            "--directory",
            str(out),
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def fetch(path: str) -> bytes:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/{path}", timeout=10) as response:
            return bytes(response.read())

    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.05)
        yield out, fetch
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def run_tiles(settings: Settings, out: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, int]:
    argv = ["--data-dir", str(settings.data_dir)]
    if settings.database_url:
        argv += ["--database-url", settings.database_url]
    code = qiledger([*argv, "tiles", "--out", str(out), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report: dict[str, int] = json.loads(captured.out)
    return report


def test_static_tiles_verify_from_files_alone(
    ledger: Ledger,
    settings: Settings,
    lab_key: SigningKey,
    static_server: tuple[Path, Callable[[str], bytes]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    out, fetch = static_server
    vkey = str(ledger.identity.verifier)
    append_issues(ledger, lab_key, 0, 300)  # 302 entries, checkpoints at 2, 102, 202, 302

    report = run_tiles(settings, out, capsys)
    assert report["size"] == 302
    assert report["written"] == len(all_paths(302)) == 5
    assert report["skipped"] == 0
    assert fetch("checkpoint") == ledger.latest_checkpoint().note
    assert verify_from_tiles(ledger, fetch, vkey) == 302

    # Nothing new: nothing written; the checkpoint is the same.
    again = run_tiles(settings, out, capsys)
    assert (again["written"], again["skipped"]) == (0, 5)

    # More entries: the filled tiles and new partial ones are written, the full
    # ones already there are left alone, and the checkpoint moves on.
    append_issues(ledger, lab_key, 300, 250)  # 552 entries
    grown = run_tiles(settings, out, capsys)
    assert grown["size"] == 552
    kept = [p for p in all_paths(552) if p in set(all_paths(302))]
    assert kept == ["tile/0/000", "tile/entries/000"]
    assert (grown["written"], grown["skipped"]) == (len(all_paths(552)) - 2, 2)
    assert fetch("checkpoint") == ledger.latest_checkpoint().note
    assert (out / Tile(0, 2, 40).path).is_file()
    assert (out / Bundle(1, 46).path).is_file()  # older partial tiles stay for older clients
    assert fetch(Tile(0, 1, 46).path) == fetch(Tile(0, 1).path)[: 46 * 32]
    assert verify_from_tiles(ledger, fetch, vkey) == 552
    assert not list(out.rglob(".tmp-*"))


def test_static_tiles_refuse_another_logs_directory(
    ledger: Ledger, settings: Settings, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "public"
    run_tiles(settings, out, capsys)
    bundle = out / Bundle(0, 2).path
    bundle.write_bytes(bundle.read_bytes()[:-1] + b"!")
    before = (out / "checkpoint").read_bytes()
    argv = ["--data-dir", str(settings.data_dir)]
    if settings.database_url:
        argv += ["--database-url", settings.database_url]
    assert qiledger([*argv, "tiles", "--out", str(out)]) == 1
    assert "tile/entries/000.p/2" in capsys.readouterr().err
    with pytest.raises(IntegrityError):
        registry_tiles.write_static_tree(ledger, out)
    assert (out / "checkpoint").read_bytes() == before


def test_checkpoint_is_not_published_over_tiles_that_do_not_lead_to_it(
    ledger: Ledger, lab_key: SigningKey, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    append_issues(ledger, lab_key, 0, 300)
    real = ledger.storage.node_range

    def forged(level: int, start: int, end: int) -> list[bytes]:
        hashes = real(level, start, end)
        if level == 8:  # the level-1 tile: the root reads it
            hashes[0] = bytes(32)
        return hashes

    monkeypatch.setattr(ledger.storage, "node_range", forged)
    out = tmp_path / "public"
    with pytest.raises(ProofError):
        registry_tiles.write_static_tree(ledger, out)
    assert (out / "tile/1/000.p/1").is_file()
    assert not (out / "checkpoint").exists()
