"""Write API for signed statements that need no document (certificate status
changes, accreditation and issuer-key events, trust anchors), and the lab
integration route: the exact statement a document calls for, ready to sign."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from registry.api import models, problems
from registry.api.auth import Service, require
from registry.api.limits import CERTIFICATE_REQUEST_LIMIT
from registry.api.limits import request_limit as default_request_limit
from registry.api.outcomes import settled
from registry.api.service import ForbiddenError, RegistryService
from registry.errors import RequestInvalidError
from registry.storage.tokens import TokenHolder

router = APIRouter(prefix="/api/v1/statements", tags=["write"])

PREPARE_PATH = "/api/v1/statements/prepare"

_ENVELOPE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "A DSSE envelope (JSON) whose payload is a QI Ledger statement.",
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
}


def request_limit(path: str) -> int:
    """Body limits by path: prepare takes the same parts as a certificate upload
    (a document up to 20 MiB, a record), so it gets the upload's limit."""
    if path.rstrip("/") == PREPARE_PATH:
        return CERTIFICATE_REQUEST_LIMIT
    return default_request_limit(path)


@router.post(
    "",
    status_code=201,
    summary="Append a signed statement (status change, accreditation, key event)",
    openapi_extra=_ENVELOPE_BODY,
    response_model=models.Receipt,
    responses={
        200: {"model": models.Receipt, "description": "already logged: its entry"},
        **problems.responses(409),
    },
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


@router.post(
    "/prepare",
    summary="The exact statement the registry requires for a document, ready to sign",
    description=(
        "Multipart form as `POST /api/v1/certificates` takes it, without the envelope: "
        "`document` (exact bytes: DCC XML, certification JSON, or a PDF) and, with a PDF "
        "only, `record` (its certification JSON). `issuer_id` defaults to the token's "
        "issuer (an operator token must name one). The registry reads the document as the "
        "upload does (same limits, schema and signature checks, same problem codes) and "
        "answers the statement it derives — `certificate.issue`, or `certificate.amend` "
        "when the DCC amends an earlier certificate — with `signed_at` set now. The client "
        "signs the DSSE PAE of `payloadType` and `payload` with the issuer's key and "
        "uploads the envelope with the same document within 7 days of `signed_at`. "
        "Nothing is logged or stored."
    ),
    response_model=models.PreparedStatement,
    responses=problems.responses(),
)
async def prepare_statement(
    service: Service,
    holder: Annotated[TokenHolder, Depends(require("issuer", "operator"))],
    document: Annotated[bytes, File(description="the certificate document, exact bytes")],
    record: Annotated[
        bytes | None, File(description="with a PDF document only: its certification JSON")
    ] = None,
    issuer_id: Annotated[
        str | None,
        Form(min_length=1, max_length=64, description="default: the issuer of the token"),
    ] = None,
) -> JSONResponse:
    issuer = _issuer_for(holder, issuer_id)
    body = await run_in_threadpool(_prepare, service, document, issuer, record)
    return JSONResponse(body)


def _issuer_for(holder: TokenHolder, issuer_id: str | None) -> str:
    """The issuer a prepared statement speaks for: an issuer token only for its own."""
    if holder.role == "operator":
        if issuer_id is None:
            raise RequestInvalidError("an operator token must name the issuer: issuer_id")
        return issuer_id
    if issuer_id is not None and issuer_id != holder.subject:
        raise ForbiddenError(f"this token acts for issuer {holder.subject}, not {issuer_id}")
    return holder.subject


def _prepare(
    service: RegistryService, document: bytes, issuer_id: str, record: bytes | None
) -> dict[str, Any]:
    ledger = service.ledger
    now = ledger.clock()
    derived = ledger.documents.statement(document, issuer_id, now, record)
    return models.prepared_statement(derived.fields, derived.media_type, now)
