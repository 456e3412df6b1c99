"""Public read API of accredited issuers (their accreditations and keys)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse

from registry.api import models, problems
from registry.api.auth import Service
from registry.errors import NotFoundError
from registry.reports import certificate_view, checked_at, issuer_report

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
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[
        str | None, Query(pattern=r"^[0-9]{1,18}$", description="'next' of the previous page")
    ] = None,
) -> JSONResponse:
    now = service.ledger.clock()
    after = -1 if cursor is None else int(cursor)
    with service.trust_state() as state:
        if issuer_id not in state.issuers:
            raise NotFoundError(f"no issuer {issuer_id} in this log")
        page = service.ledger.certificates_page(issuer_id=issuer_id, after_index=after, limit=limit)
        return JSONResponse(
            {
                "tree_size": state.size,
                "issuer_id": issuer_id,
                "certificates": [
                    {**certificate_view(state, c, now), "checked_at": checked_at(now)}
                    for c in page
                ],
                # The cursor is the log index of the page's last certificate.
                "next": str(page[-1].events[0].index) if len(page) == limit else None,
            }
        )
