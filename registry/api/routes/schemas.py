"""Published JSON Schemas: what a certification-certificate document must look
like, so issuers can validate before they submit."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from verifier import certification

router = APIRouter(prefix="/api/v1/schemas", tags=["schemas"])


@router.get(
    f"/{certification.SCHEMA_NAME}",
    summary="JSON Schema of certification certificates (IAF CertSearch fields)",
    response_class=Response,  # documents only the media type it really sends
    responses={
        200: {
            "description": "a JSON Schema (draft 2020-12)",
            "content": {"application/schema+json": {"schema": {"type": "object"}}},
        }
    },
)
async def certification_schema() -> JSONResponse:
    return JSONResponse(
        certification.schema(),
        media_type="application/schema+json",
        headers={"Cache-Control": "public, max-age=3600"},
    )
