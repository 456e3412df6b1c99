"""Traceability (public): what a certificate is traced to, which certificates
depend on it, and which name a standard.

A certificate id may hold '/', so it is the whole rest of a route's path (see
:mod:`registry.api.routes.certificates`): these routes put their own prefix
before the id (``/api/v1/traceability/{id}``, ``/api/v1/dependents/{id}``),
never a suffix after it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from registry.api import models, problems
from registry.api.auth import Service
from registry.api.routes.certificates import CertificateId
from registry.api.service import RegistryService
from registry.traceability import MAX_DEPENDENTS_PAGE, MAX_PAGE
from verifier.traceability import MAX_DEPTH

router = APIRouter(prefix="/api/v1", tags=["traceability"])

Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="items per page")]
Cursor = Annotated[
    str | None, Query(pattern=r"^[0-9]{1,18}$", description="'next' of the previous page")
]


def _caught_up(service: RegistryService) -> None:
    """Bodies, issuers and keys caught up as for every read (statuses depend on keys)."""
    with service.trust_state():
        pass


@router.get(
    "/traceability/{certificate_id:path}",
    summary="What a certificate is traced to: /api/v1/traceability/{id} (a prefix: an id "
    "may hold '/'); each link's status and digest check, external links, cycles, "
    "and whether traceability is at risk",
    response_model=models.Traceability,
    responses=problems.responses(404),
)
def get_traceability(service: Service, certificate_id: CertificateId) -> JSONResponse:
    _caught_up(service)
    return JSONResponse(service.ledger.traceability(certificate_id))


@router.get(
    "/dependents/{certificate_id:path}",
    summary="The certificates that trace to this one, transitively, level by level: "
    "/api/v1/dependents/{id} (a prefix: an id may hold '/'), a page at a time",
    response_model=models.Dependents,
    responses=problems.responses(404, 422),
)
def get_dependents(
    service: Service,
    certificate_id: CertificateId,
    depth: Annotated[
        int, Query(ge=1, le=MAX_DEPTH, description="how many levels to follow")
    ] = MAX_DEPTH,
    limit: Annotated[int, Query(ge=1, le=MAX_DEPENDENTS_PAGE, description="items per page")] = 100,
    cursor: Cursor = None,
) -> JSONResponse:
    _caught_up(service)
    return JSONResponse(
        service.ledger.dependents(
            certificate_id,
            offset=0 if cursor is None else int(cursor),
            limit=limit,
            max_depth=depth,
        )
    )


@router.get(
    "/standards",
    summary="The certificates naming a standard (case and spacing aside), in log order, "
    "with counts by recorded status",
    response_model=models.StandardPage,
    responses=problems.responses(422),
)
def get_standard(
    service: Service,
    ref: Annotated[str, Query(min_length=1, max_length=200, description="the standard, e.g. GUM")],
    limit: Limit = 100,
    cursor: Cursor = None,
) -> JSONResponse:
    _caught_up(service)
    return JSONResponse(
        service.ledger.standard(ref, after_index=-1 if cursor is None else int(cursor), limit=limit)
    )
