"""The query parameters and answer of the public certificate listings
(``GET /api/v1/certificates`` and ``GET /api/v1/issuers/{id}/certificates``)."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import Query

from registry.errors import RequestInvalidError
from registry.listing import STATUSES, CertificateListing, ListedPage
from verifier.statement import CERTIFICATE_KINDS

_STATUS_PATTERN = "(?i)^(" + "|".join(sorted(STATUSES)) + ")$"
_KIND_PATTERN = "^(" + "|".join(sorted(CERTIFICATE_KINDS)) + ")$"

Limit = Annotated[int, Query(ge=1, le=500, description="certificates per page")]
Cursor = Annotated[
    str | None, Query(pattern=r"^[0-9]{1,18}$", description="'next' of the previous page")
]
Status = Annotated[
    str | None,
    Query(pattern=_STATUS_PATTERN, description="status as read now (IAF words, any case)"),
]
Kind = Annotated[str | None, Query(pattern=_KIND_PATTERN, description="certificate kind")]
IssuedFrom = Annotated[date | None, Query(description="issued on or after this date (YYYY-MM-DD)")]
IssuedTo = Annotated[date | None, Query(description="issued on or before this date (YYYY-MM-DD)")]


def listing(
    *,
    issuer_id: str | None,
    status: str | None,
    kind: str | None,
    issued_from: date | None,
    issued_to: date | None,
) -> CertificateListing:
    if issued_from is not None and issued_to is not None and issued_from > issued_to:
        raise RequestInvalidError(f"issued_from {issued_from} is after issued_to {issued_to}")
    return CertificateListing(
        issuer_id=issuer_id,
        status=None if status is None else STATUSES[status.lower()],
        kind=kind,
        issued_from=issued_from,
        issued_to=issued_to,
    )


def after_index(cursor: str | None) -> int:
    return -1 if cursor is None else int(cursor)


def page_body(page: ListedPage, issuer_id: str | None) -> dict[str, Any]:
    return {
        "tree_size": page.tree_size,
        "issuer_id": issuer_id,
        "certificates": page.certificates,
        # The cursor is the log index of the last certificate the page looked at.
        "next": None if page.next_after is None else str(page.next_after),
    }
