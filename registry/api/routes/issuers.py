"""Public read API of accredited issuers (their accreditations and keys)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import JSONResponse

from registry.api import listings, models, problems
from registry.api.auth import Service
from registry.errors import NotFoundError
from registry.reports import issuer_report

router = APIRouter(prefix="/api/v1/issuers", tags=["issuers"])


@router.get(
    "",
    summary="Every issuer the log knows, with accreditations and keys",
    response_model=models.IssuerList,
)
def list_issuers(service: Service) -> JSONResponse:
    with service.trust_state() as state:
        return JSONResponse(
            {
                "tree_size": state.size,
                "issuers": [issuer_report(state, i) for i in state.issuers.values()],
            }
        )


@router.get(
    "/{issuer_id}",
    summary="One issuer's accreditation history and keys",
    response_model=models.IssuerDetail,
    responses=problems.responses(404),
)
def get_issuer(
    service: Service, issuer_id: Annotated[str, Path(min_length=1, max_length=200)]
) -> JSONResponse:
    with service.trust_state() as state:
        issuer = state.issuers.get(issuer_id)
        if issuer is None:
            raise NotFoundError(f"no issuer {issuer_id} in this log")
        return JSONResponse({"tree_size": state.size, **issuer_report(state, issuer)})


@router.get(
    "/{issuer_id}/certificates",
    summary="One issuer's certificates in log order, a page at a time",
    response_model=models.CertificatePage,
    responses=problems.responses(404),
)
def list_issuer_certificates(
    service: Service,
    issuer_id: Annotated[str, Path(min_length=1, max_length=200)],
    limit: listings.Limit = 100,
    cursor: listings.Cursor = None,
    status: listings.Status = None,
    kind: listings.Kind = None,
    issued_from: listings.IssuedFrom = None,
    issued_to: listings.IssuedTo = None,
) -> JSONResponse:
    selected = listings.listing(
        issuer_id=issuer_id,
        status=status,
        kind=kind,
        issued_from=issued_from,
        issued_to=issued_to,
    )
    page = service.list_certificates(
        selected, after_index=listings.after_index(cursor), limit=limit
    )
    if issuer_id not in service.ledger.unsynced_trust_state.issuers:  # caught up by the page
        raise NotFoundError(f"no issuer {issuer_id} in this log")
    return JSONResponse(listings.page_body(page, issuer_id))
