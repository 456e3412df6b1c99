"""C2SP tlog-tiles: ``/checkpoint``, ``/tile/<L>/<N>[.p/<W>]``, ``/tile/entries/<N>[.p/<W>]``.

The same bytes ``qiledger tiles --out DIR`` writes as files. Read-only: the
routes read storage and never touch the sequencer or the trust state.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from registry import tiles as registry_tiles
from registry.api import problems
from registry.api.auth import Service
from registry.errors import NotFoundError
from verifier import tiles
from verifier.errors import MalformedError

router = APIRouter(tags=["tiles"])

CHECKPOINT_MEDIA_TYPE = "text/plain; charset=utf-8"
TILE_MEDIA_TYPE = "application/octet-stream"
# A tile path fixes its bytes (a partial tile's width is in its path), so every
# tile is immutable; only the checkpoint changes.
IMMUTABLE = "public, max-age=31536000, immutable"


def _parse(path: str) -> tiles.Tile | tiles.Bundle:
    try:
        return tiles.parse_path(path)
    except MalformedError as exc:
        # A path that is not a tile is simply not there, as for a file server.
        raise NotFoundError(exc.message) from None


def _tile_response(data: bytes) -> Response:
    return Response(data, media_type=TILE_MEDIA_TYPE, headers={"Cache-Control": IMMUTABLE})


def _binary(description: str) -> dict[int | str, dict[str, Any]]:
    return {
        200: {
            "description": description,
            "content": {TILE_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
        },
        **problems.responses(404),
    }


@router.get(
    "/checkpoint",
    summary="The latest signed checkpoint (C2SP signed note)",
    response_class=Response,
    responses={
        200: {
            "description": "a C2SP tlog-checkpoint signed note",
            "content": {CHECKPOINT_MEDIA_TYPE: {"schema": {"type": "string"}}},
        }
    },
)
def get_checkpoint(service: Service) -> Response:
    note = service.ledger.cosigned_checkpoint()  # with the witnesses' cosignatures
    return Response(note, media_type=CHECKPOINT_MEDIA_TYPE, headers={"Cache-Control": "no-cache"})


@router.get(
    "/tile/entries/{path:path}",
    summary="An entry bundle",
    response_class=Response,
    responses=_binary("a C2SP tlog-tiles entry bundle"),
)
def get_entry_bundle(path: str, service: Service) -> Response:
    bundle = _parse(f"tile/entries/{path}")
    if not isinstance(bundle, tiles.Bundle):  # cannot happen: the prefix makes it one
        raise NotFoundError(f"no entry bundle at tile/entries/{path}")
    return _tile_response(registry_tiles.entry_bundle(service.ledger, bundle.index, bundle.width))


@router.get(
    "/tile/{path:path}",
    summary="A Merkle hash tile",
    response_class=Response,
    responses=_binary("a C2SP tlog-tiles hash tile (32-byte hashes)"),
)
def get_hash_tile(path: str, service: Service) -> Response:
    tile = _parse(f"tile/{path}")
    if not isinstance(tile, tiles.Tile):  # "entries/..." is routed above
        raise NotFoundError(f"no hash tile at tile/{path}")
    return _tile_response(
        registry_tiles.hash_tile(service.ledger, tile.level, tile.index, tile.width)
    )
