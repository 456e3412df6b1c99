"""RFC 9457 problem details: one stable ``code`` per failure and its HTTP status.

Every error the registry raises derives from :class:`QILedgerError` and carries a
code; this module maps codes to statuses in one place, so the API and the CLI
name a failure the same way and no traceback reaches a client.
"""

from __future__ import annotations

import logging
import math
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from registry.api.models import Problem
from registry.errors import database_error_detail
from verifier.errors import (
    MalformedError,
    QILedgerError,
    TooLargeError,
    TrustError,
    VerificationError,
)

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger("qiledger.api")

_STATUS_BY_CODE: dict[str, int] = {
    "not_found": 404,
    "token_missing": 401,
    "token_invalid": 401,
    "token_forbidden": 403,
    "rate_limited": 429,
    "too_large": 413,
    "document_too_large": 413,
    "request_too_large": 413,
    # the request is well-formed but what it says cannot be accepted
    "schema_invalid": 422,
    "schema_unavailable": 422,
    "document_mismatch": 422,
    "record_invalid": 422,
    "document_required": 422,
    "document_signature_invalid": 422,
    "laboratory_mismatch": 422,
    "signature_invalid": 422,
    "unknown_key": 422,
    "request_invalid": 422,
    # the log already holds something this contradicts
    "certificate_exists": 409,
    "body_exists": 409,
    "key_exists": 409,
    "key_in_use": 409,
    "accreditation_exists": 409,
    "transition_invalid": 409,
    "statement_duplicate": 409,
    "document_of_other_issuer": 409,
    "config_invalid": 503,
    "storage_error": 503,
}


def status_for(error: QILedgerError) -> int:
    if error.code in _STATUS_BY_CODE:
        return _STATUS_BY_CODE[error.code]
    if isinstance(error, TooLargeError):
        return 413
    if isinstance(error, MalformedError):
        return 400
    if isinstance(error, TrustError):
        return 403  # the trust chain does not allow this signer to say this
    if isinstance(error, VerificationError):
        return 422
    return 500


def problem(
    status: int, code: str, detail: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    body = {
        "type": f"urn:qiledger:error:{code}",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": detail,
        "code": code,
        **extra,
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def problem_for(error: QILedgerError) -> JSONResponse:
    status = status_for(error)
    headers: dict[str, str] = {}
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="qiledger"'
    retry_after = getattr(error, "retry_after", None)
    if status == 429 and isinstance(retry_after, float):
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return problem(status, error.code, error.message, headers or None)


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for a route's own error statuses (those every route
    of its kind can answer are added by :func:`document_problems`)."""
    return {s: {"model": Problem, "description": HTTPStatus(s).phrase} for s in statuses}


_PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}


def _common_statuses(operation: dict[str, Any]) -> set[int]:
    """The error statuses an operation can answer because of what it is: any
    (database down, a bug), with a token, with a body, with parameters."""
    statuses = {500, 503}
    if operation.get("security"):
        statuses |= {401, 403, 429}
    if "requestBody" in operation:
        statuses |= {400, 413, 422}
    if operation.get("parameters"):
        statuses.add(422)
    return statuses


def document_problems(openapi: dict[str, Any]) -> dict[str, Any]:
    """Make the OpenAPI document say what errors really are: every error status
    of every operation answers ``application/problem+json`` with the Problem
    schema (FastAPI would say ``application/json``, and describe its own 422
    body, which this API never sends)."""
    schemas = openapi.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    for path_item in openapi.get("paths", {}).values():
        for operation in path_item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            answers = operation["responses"]
            declared = {int(s) for s in answers if s.isdigit() and int(s) >= 400}
            for status in sorted(declared | _common_statuses(operation)):
                answers[str(status)] = {
                    "description": HTTPStatus(status).phrase,
                    "content": {PROBLEM_JSON: {"schema": _PROBLEM_REF}},
                }
    return openapi


def install(app: FastAPI) -> None:
    """Register the handlers that turn every failure into problem+json, and
    document them so in the OpenAPI document."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_problems(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.exception_handler(QILedgerError)
    async def on_ledger_error(_request: Request, exc: QILedgerError) -> JSONResponse:
        response = problem_for(exc)
        if response.status_code >= 500:
            log.error("%s: %s", exc.code, exc.message)
        return response

    @app.exception_handler(RequestValidationError)
    async def on_validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        details = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}"
            for e in exc.errors()
        )
        return problem(422, "request_invalid", details or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def on_http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return problem(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(SQLAlchemyError)
    async def on_database(_request: Request, exc: SQLAlchemyError) -> JSONResponse:
        log.error("database error: %s", database_error_detail(exc))
        return problem(503, "storage_error", "the registry's database is unavailable")

    @app.exception_handler(Exception)
    async def on_unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return problem(500, "internal_error", "internal error; the operator's log has details")
