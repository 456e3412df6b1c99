"""The log as C2SP tlog-tiles: tile and entry-bundle bytes from storage, and the
whole static read API written to a directory any web server or CDN can serve.

Example::

    qiledger --data-dir ./data tiles --out /srv/log   # then serve /srv/log as files

A hash tile is one key-range read of ``tree_nodes`` (the nodes of a tile are
consecutive ids, see :mod:`registry.storage.node_keys`); an entry bundle is one range
read of ``entries``. Only what the latest signed checkpoint covers is served.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Protocol

from registry.errors import IntegrityError, NotFoundError
from registry.ledger import Ledger
from registry.storage.protocol import StoredCheckpoint
from verifier import checkpoint, tiles
from verifier.errors import QILedgerError
from verifier.tiles import Bundle, Tile


class TileSource(Protocol):
    """What tiles are read from: a :class:`registry.ledger.Ledger`, or any
    :class:`registry.storage.protocol.LogStorage`."""

    def latest_checkpoint(self) -> StoredCheckpoint: ...
    def node_range(self, level: int, start: int, end: int) -> list[bytes]: ...
    def entry_data_range(self, start: int, end: int) -> list[bytes]: ...


def _require_in_tree(what: Tile | Bundle, count: int, size: int) -> None:
    """Refuse a tile whose hashes or entries are not all in the signed tree.

    A full tile is servable once the tree has reached it. A partial tile is a
    prefix of the tile being filled; a prefix of a tile that has since filled up
    is served too (same bytes as then), so a client whose checkpoint is a little
    older than ours still gets the partial tile its checkpoint calls for.
    """
    if what.start + what.width > count:
        raise NotFoundError(f"{what.path} is not in the tree of size {size}")


def _hash_tile_bytes(source: TileSource, tile: Tile) -> bytes:
    return tiles.encode_hash_tile(
        source.node_range(tile.tree_level, tile.start, tile.start + tile.width)
    )


def _entry_bundle_bytes(source: TileSource, bundle: Bundle) -> bytes:
    return tiles.encode_entry_bundle(
        source.entry_data_range(bundle.start, bundle.start + bundle.width)
    )


def hash_tile(source: TileSource, level: int, index: int, width: int) -> bytes:
    """Bytes of hash tile ``level``/``index`` of ``width`` hashes (256 = full), if the
    latest signed checkpoint covers it; otherwise NotFoundError."""
    try:
        tile = Tile(level, index, width)
    except QILedgerError as exc:
        raise NotFoundError(f"no such tile: {exc.message}") from None
    size = source.latest_checkpoint().size
    _require_in_tree(tile, tiles.hashes_at(size, level), size)
    return _hash_tile_bytes(source, tile)


def entry_bundle(source: TileSource, index: int, width: int) -> bytes:
    """Bytes of entry bundle ``index`` of ``width`` entries (256 = full), if the
    latest signed checkpoint covers it; otherwise NotFoundError."""
    try:
        bundle = Bundle(index, width)
    except QILedgerError as exc:
        raise NotFoundError(f"no such entry bundle: {exc.message}") from None
    size = source.latest_checkpoint().size
    _require_in_tree(bundle, size, size)
    return _entry_bundle_bytes(source, bundle)


# --- the static read API as files ------------------------------------------------------


@dataclass(frozen=True)
class StaticTreeReport:
    size: int
    """Tree size of the checkpoint written."""
    written: int
    """Tiles and entry bundles written (new or partial ones not there before)."""
    skipped: int
    """Tiles and entry bundles already present with the same bytes."""


def _write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so a reader sees the old or the new file, whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, 0o644)  # public files, for a static web server
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _fsync_dir(path: Path) -> None:
    """Make the names in a directory (renames, new subdirectories) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _publish(out_dir: Path, path: str, data: bytes) -> bool:
    """Write one tile file unless it is there already; True if written.

    A tile's path fixes its bytes, so a file with other bytes means the
    directory holds another log (or was damaged): refuse rather than hide it.
    """
    target = out_dir / path
    if target.is_file():
        if target.read_bytes() == data:
            return False
        raise IntegrityError(
            f"{target} holds other bytes than this log's {path}; "
            "is the directory another log's? Refusing to overwrite it",
            where=path,
        )
    _write_atomic(target, data)
    return True


def write_static_tree(ledger: Ledger, out_dir: Path) -> StaticTreeReport:
    """Write ``checkpoint`` and every tile and entry bundle of the latest signed tree
    under ``out_dir``, laid out as the tlog-tiles URL paths.

    Incremental: files already present with the right bytes are left alone.
    Every file is replaced atomically and made durable; the checkpoint goes
    last, after the tiles were re-read and found to lead to its root — so a
    reader never sees a checkpoint whose tiles are missing, even after a crash.
    """
    stored = ledger.latest_checkpoint()
    signed = checkpoint.verify(stored.note, ledger.identity.verifier)
    size = signed.checkpoint.size
    files: list[tuple[str, Callable[[], bytes]]] = [
        *((t.path, partial(_hash_tile_bytes, ledger, t)) for t in tiles.tiles_for_size(size)),
        *((b.path, partial(_entry_bundle_bytes, ledger, b)) for b in tiles.bundles_for_size(size)),
    ]
    written = 0
    touched: set[Path] = set()
    for path, read in files:
        if _publish(out_dir, path, read()):
            written += 1
            touched.update(p for p in (out_dir / path).parents if p.is_relative_to(out_dir))
    tiles.TiledTree(size, lambda path: (out_dir / path).read_bytes()).check_root(
        signed.checkpoint.root
    )
    # Tiles durable (their names too) before the checkpoint that needs them.
    for directory in sorted(touched, key=lambda d: len(d.parts), reverse=True):
        _fsync_dir(directory)
    # With the witnesses' cosignatures, as /checkpoint serves it.
    _write_atomic(out_dir / tiles.CHECKPOINT_PATH, ledger.cosigned_checkpoint(stored))
    _fsync_dir(out_dir)
    return StaticTreeReport(size, written, len(files) - written)
