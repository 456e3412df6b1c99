"""Write API for signed statements that need no document: certificate status
changes, accreditation and issuer-key events, trust anchors (operator)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from registry.api.auth import Service, require
from registry.api.outcomes import settled
from registry.storage.tokens import TokenHolder

router = APIRouter(prefix="/api/v1/statements", tags=["write"])

_ENVELOPE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "A DSSE envelope (JSON) whose payload is a QI Ledger statement.",
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
}


@router.post(
    "",
    status_code=201,
    summary="Append a signed statement (status change, accreditation, key event)",
    openapi_extra=_ENVELOPE_BODY,
)
async def post_statement(
    request: Request,
    service: Service,
    holder: Annotated[TokenHolder, Depends(require("issuer", "body", "operator"))],
) -> JSONResponse:
    envelope = await request.body()
    future = await run_in_threadpool(service.enqueue_statement, holder, envelope)
    accepted = await settled(future)
    receipt = await run_in_threadpool(service.receipt, accepted)
    return JSONResponse(receipt, status_code=200 if accepted.duplicate else 201)
