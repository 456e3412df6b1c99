"""Public read API of accredited issuers (their accreditations and keys)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import JSONResponse

from registry.api import models, problems
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
