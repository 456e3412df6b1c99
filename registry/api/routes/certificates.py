"""Certificates: register one with its document (issuer), read its status and
history (public), look one up by document digest (public), fetch its document
(its issuer or an auditor).

A certificate id is ``<issuer id>/<number>`` and a number may hold '/', so an id
is the whole rest of its route's path: no route may add a suffix after one (an id
ending in that suffix would reach the wrong route). The document therefore has
its own prefix, ``/api/v1/documents/{id}``, not ``/api/v1/certificates/{id}/document``."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from registry.api import listings, models, problems
from registry.api.auth import Service, require, service_for
from registry.api.outcomes import decided
from registry.api.service import ForbiddenError, RegistryService
from registry.documents.intake import CERTIFICATION_MEDIA_TYPE, DCC_MEDIA_TYPE, PDF_MEDIA_TYPE
from registry.errors import RequestInvalidError
from registry.reports import certificate_report, checked_at, issuer_summary
from registry.sequencer import Accepted
from registry.storage.tokens import TokenHolder
from verifier import statement
from verifier.encoding import b64encode
from verifier.trust import TrustState

router = APIRouter(prefix="/api/v1", tags=["certificates"])

# What a stored document is served as (registry.documents.intake.media_type_of).
DOCUMENT_TYPES = (DCC_MEDIA_TYPE, CERTIFICATION_MEDIA_TYPE, PDF_MEDIA_TYPE)
BINARY = {"type": "string", "format": "binary"}

CertificateId = Annotated[str, Path(min_length=3, max_length=300, pattern=r"^[^/]+/.+$")]


@router.post(
    "/certificates",
    status_code=201,
    summary="Register a certificate: its document and the issuer-signed statement",
    description=(
        "Multipart form: `document` (the exact bytes: DCC XML, certification JSON, or a "
        "certification certificate as PDF), `record` (only with a PDF: the same "
        "certificate as certification JSON, from which the statement's fields come) and "
        "`envelope` (DSSE JSON of a certificate.issue or certificate.amend statement over "
        "the document's SHA-256). Answers once the entry is durable and covered by a "
        "signed checkpoint; 200 with the existing entry when this document is already "
        "registered under this id."
    ),
    response_model=models.CertificateReceipt,
    responses={
        200: {"model": models.CertificateReceipt, "description": "already registered"},
        **problems.responses(409),
    },
)
async def post_certificate(
    request: Request,
    service: Service,
    holder: Annotated[TokenHolder, Depends(require("issuer", "operator"))],
    document: Annotated[bytes, File(description="the certificate document, exact bytes")],
    envelope: Annotated[bytes, File(description="the DSSE envelope (JSON)")],
    record: Annotated[
        bytes | None, File(description="with a PDF document only: its certification JSON")
    ] = None,
) -> JSONResponse:
    # One thread hop checks and queues (document parsing, database reads); the
    # receipt of an entry its batch appended needs no database (the batch hands
    # its proof back), so it is made here; anything else takes a second hop.
    submission, future = await run_in_threadpool(
        service.submit_certificate, holder, envelope, document, record
    )
    outcome = await decided(future)
    base_url = f"{request.url.scheme}://{request.url.netloc}"
    stmt = submission.statement
    if isinstance(outcome, Accepted) and service.proves_in_memory(outcome):
        body = _certificate_receipt(service, stmt, outcome, base_url)
        return JSONResponse(body, status_code=200 if outcome.duplicate else 201)

    def settle() -> tuple[Accepted, dict[str, Any]]:
        accepted = service.settle_certificate(submission, outcome)
        return accepted, _certificate_receipt(service, stmt, accepted, base_url)

    accepted, body = await run_in_threadpool(settle)
    return JSONResponse(body, status_code=200 if accepted.duplicate else 201)


def _certificate_receipt(
    service: RegistryService, stmt: statement.Statement, accepted: Accepted, base_url: str
) -> dict[str, Any]:
    """The answer to a registration; ``base_url`` (the request's scheme://host[:port])
    is where the mark points unless a public URL is configured."""
    # The entry created the certificate, so this is the mark the registry re-signs
    # for it later (GET /api/v1/marks/...): same claims, same bytes.
    token = service.mark_token(
        stmt["certificate_id"], stmt["document_sha256"], accepted.index, accepted.logged_at
    )
    return {
        "certificate_id": stmt["certificate_id"],
        **service.receipt(accepted),
        "mark": token,
        "mark_url": service.mark_url(token, base_url),
    }


@router.get(
    "/certificates",
    summary="List certificates in log order (filters, a page at a time), or look them up "
    "by the SHA-256 of their document (digest=)",
    response_model=models.CertificateList,
    responses=problems.responses(422),
)
async def list_certificates(
    request: Request,
    digest: Annotated[
        str | None,
        Query(
            pattern=r"^sha256:[0-9a-f]{64}$",
            description="sha256:<64 lowercase hex>: the certificates about this document "
            "(no other parameter)",
        ),
    ] = None,
    issuer: Annotated[
        str | None, Query(min_length=1, max_length=64, description="issuer id")
    ] = None,
    status: listings.Status = None,
    kind: listings.Kind = None,
    issued_from: listings.IssuedFrom = None,
    issued_to: listings.IssuedTo = None,
    limit: listings.Limit = 100,
    cursor: listings.Cursor = None,
) -> JSONResponse:
    service = service_for(request)
    if digest is not None:
        if request.query_params.keys() - {"digest"}:
            raise RequestInvalidError("digest= looks one document up; it takes no other parameter")
        return _find_by_digest(service, digest)
    selected = listings.listing(
        issuer_id=issuer, status=status, kind=kind, issued_from=issued_from, issued_to=issued_to
    )
    page = await run_in_threadpool(
        service.list_certificates, selected, after_index=listings.after_index(cursor), limit=limit
    )
    return JSONResponse(listings.page_body(page, issuer))


def _find_by_digest(service: RegistryService, digest: str) -> JSONResponse:
    now = service.ledger.clock()
    document_sha256 = digest.removeprefix("sha256:")

    def view(state: TrustState) -> dict[str, Any]:
        found = state.certificates_with_document(document_sha256)
        return {
            "tree_size": state.size,
            "digest": digest,
            "certificates": [_public_view(state, c.certificate_id, now) for c in found],
            "next": None,
        }

    # One indexed statement, like the status read: answered on the event loop.
    return JSONResponse(service.read_certificate(view, document_sha256=document_sha256))


@router.get(
    "/certificates/{certificate_id:path}",
    summary="A certificate's status, issuer and history",
    response_model=models.CertificateStatus,
    responses=problems.responses(404),
)
async def get_certificate(request: Request, certificate_id: CertificateId) -> JSONResponse:
    service = service_for(request)
    now = service.ledger.clock()

    def view(state: TrustState) -> dict[str, Any]:
        return {"tree_size": state.size, **_public_view(state, certificate_id, now)}

    # The hot public read: one indexed statement, cheaper than a hop to a worker
    # thread, so answered on the event loop (it waits for no batch).
    linked: set[str] = set()
    body = service.read_certificate(view, certificate_id=certificate_id, linked=linked)
    if certificate_id in linked:
        # It is traced to other certificates: walk them (derived when read).
        body.update(await run_in_threadpool(service.traceability_risk, certificate_id))
    else:
        body.update({"traceability_at_risk": False, "at_risk_because": []})
    return JSONResponse(body)


@router.get(
    "/documents/{certificate_id:path}",
    summary="The certificate's document, exact bytes (its issuer or an auditor)",
    response_class=Response,
    responses={
        200: {
            "description": "the document as registered",
            "content": {t: {"schema": BINARY} for t in DOCUMENT_TYPES},
        },
        **problems.responses(404),
    },
)
def get_document(
    service: Service,
    certificate_id: CertificateId,
    holder: Annotated[TokenHolder, Depends(require("issuer", "auditor"))],
) -> Response:
    issuer_id = certificate_id.split("/", 1)[0]
    if holder.role == "issuer" and holder.subject != issuer_id:
        raise ForbiddenError(f"this token acts for issuer {holder.subject}, not {issuer_id}")
    stored = service.document(certificate_id)
    digest = hashlib.sha256(stored.data).digest()
    return Response(
        stored.data,
        media_type=stored.media_type,
        headers={
            "Repr-Digest": f"sha-256=:{b64encode(digest)}:",
            "Cache-Control": "private, no-store",
        },
    )


def _public_view(state: TrustState, certificate_id: str, now: datetime) -> dict[str, Any]:
    report = certificate_report(state, certificate_id, now)
    issuer = state.issuers.get(report["issuer_id"])
    if issuer is not None:
        report["issuer"] = issuer_summary(issuer)
    report["checked_at"] = checked_at(now)
    return report
