"""Public read API of the log: identity, checkpoint, entries and proofs.

Every proof names the signed checkpoint it is pinned to (``tree_size`` and the
note itself), so a client never mixes sizes.
"""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from registry.api import models, problems
from registry.api.auth import Service
from registry.errors import RequestInvalidError
from verifier.encoding import b64encode

router = APIRouter(prefix="/api/v1/log", tags=["log"])

MAX_INDEX = 1 << 48
Index = Annotated[int, Query(ge=0, lt=MAX_INDEX)]
OptionalSize = Annotated[int | None, Query(ge=0, le=MAX_INDEX, description="a signed tree size")]


@router.get(
    "",
    summary="The log's identity and latest signed checkpoint",
    response_model=models.LogInfo,
)
def log_info(service: Service) -> JSONResponse:
    ledger = service.ledger
    latest = ledger.latest_checkpoint()
    return JSONResponse(
        {
            "origin": ledger.identity.origin,
            "size": latest.size,
            "root": b64encode(latest.root),
            "verifier_key": str(ledger.identity.verifier),
            "public_key_pem": ledger.identity.public_key.to_pem().decode("ascii"),
            "checkpoint": latest.note.decode("utf-8"),
        }
    )


@router.get(
    "/checkpoint",
    summary="The latest signed checkpoint (C2SP signed note)",
    # Response, not PlainTextResponse: the latter would also document a bare text/plain
    response_class=Response,
    responses={
        200: {
            "description": "a C2SP tlog-checkpoint signed note",
            "content": {"text/plain; charset=utf-8": {"schema": {"type": "string"}}},
        }
    },
)
def log_checkpoint(service: Service) -> PlainTextResponse:
    # With the witnesses' cosignatures, as /checkpoint (still a note the log key verifies).
    note = service.ledger.cosigned_checkpoint()
    return PlainTextResponse(note, headers={"Cache-Control": "no-cache"})


@router.get(
    "/entries/{index}",
    summary="An entry's leaf data with its inclusion proof",
    response_model=models.LogEntry,
    responses=problems.responses(404),
)
def log_entry(
    service: Service,
    index: Annotated[int, Path(ge=0, lt=MAX_INDEX)],
    tree_size: OptionalSize = None,
) -> JSONResponse:
    ledger = service.ledger
    proof = ledger.inclusion_proof(index, tree_size)
    stored = ledger.entry(index)
    return JSONResponse(
        {
            "index": index,
            "tree_size": _size_of(proof.checkpoint_note),
            "leaf_hash": b64encode(stored.leaf_hash),
            "leaf_data": b64encode(stored.data),
            "entry": json.loads(stored.data),
            "inclusion_proof": [b64encode(h) for h in proof.hashes],
            "checkpoint": proof.checkpoint_note.decode("utf-8"),
        }
    )


@router.get(
    "/proof/inclusion",
    summary="Inclusion proof of an entry at a signed tree size",
    response_model=models.InclusionProof,
    responses=problems.responses(404),
)
def inclusion_proof(service: Service, index: Index, tree_size: OptionalSize = None) -> JSONResponse:
    proof = service.ledger.inclusion_proof(index, tree_size)
    return JSONResponse(
        {
            "index": index,
            "tree_size": _size_of(proof.checkpoint_note),
            "leaf_hash": b64encode(service.ledger.entry(index).leaf_hash),
            "hashes": [b64encode(h) for h in proof.hashes],
            "checkpoint": proof.checkpoint_note.decode("utf-8"),
            "tlog_proof": proof.to_bytes().decode("utf-8"),
        }
    )


@router.get(
    "/proof/consistency",
    summary="Consistency proof between two signed tree sizes",
    response_model=models.ConsistencyProof,
    responses=problems.responses(404),
)
def consistency_proof(
    service: Service,
    first: Annotated[int, Query(ge=0, le=MAX_INDEX)],
    second: Annotated[int, Query(ge=0, le=MAX_INDEX)],
) -> JSONResponse:
    if first > second:
        raise RequestInvalidError(
            f"first ({first}) is larger than second ({second}): a consistency proof "
            "goes from an older tree to a newer one"
        )
    ledger = service.ledger
    hashes = ledger.consistency_proof(first, second)
    return JSONResponse(
        {
            "first": first,
            "second": second,
            "hashes": [b64encode(h) for h in hashes],
            "first_checkpoint": ledger.checkpoint_at(first).note.decode("utf-8"),
            "second_checkpoint": ledger.checkpoint_at(second).note.decode("utf-8"),
        }
    )


def _size_of(note: bytes) -> int:
    return int(note.split(b"\n", 2)[1])
