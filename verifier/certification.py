"""Certification certificates (ISO/IEC 17021-1, 17065, 17024) as IAF CertSearch JSON.

The document is JSON validated against the published schema
``verifier/schemas/certification-certificate.schema.json`` (served by the API
too). Every field is public — it is what a certification body publishes — so
the statement carries them; its digest covers the exact bytes submitted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from functools import cache
from importlib import resources
from typing import Any

import jsonschema

from verifier import jcs
from verifier.dcc import MAX_DOCUMENT_SIZE
from verifier.errors import MalformedError, TooLargeError

SCHEMA_NAME = "certification-certificate.schema.json"

MAX_RECORD_SIZE = 1024 * 1024
"""A record sent beside a PDF certificate: its public fields must fit a 64 KiB
statement anyway; this leaves room for the rest and for escaping."""

# IAF CertSearch status words, one to one with the log's replayed statuses.
IAF_STATUS = {
    "active": "Active",
    "suspended": "Suspended",
    "withdrawn": "Withdrawn",
    "expired": "Expired",
    "superseded": "Superseded",
    "invalid": "Invalid",
}


class CertificationSchemaError(MalformedError):
    code = "schema_invalid"


@cache
def schema() -> dict[str, Any]:
    text = resources.files("verifier.schemas").joinpath(SCHEMA_NAME).read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


@cache
def _validator() -> Any:
    return jsonschema.Draft202012Validator(
        schema(), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


@dataclass(frozen=True)
class CertificationCertificate:
    fields: dict[str, Any]

    @property
    def number(self) -> str:
        return str(self.fields["certificate_number"])

    @property
    def scheme(self) -> str:
        return str(self.fields["scheme"])

    @property
    def issue_date(self) -> date:
        return date.fromisoformat(self.fields["issue_date"])

    @property
    def expiry_date(self) -> date:
        return date.fromisoformat(self.fields["expiry_date"])


def read_certification(data: bytes) -> CertificationCertificate:
    """Parse and validate a certification certificate document."""
    if len(data) > MAX_DOCUMENT_SIZE:
        raise TooLargeError(f"document is {len(data)} bytes; the limit is {MAX_DOCUMENT_SIZE}")
    value = jcs.parse_json(data)
    errors = sorted(_validator().iter_errors(value), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.absolute_path) or "(document)"
        raise CertificationSchemaError(
            f"certificate does not match the schema at {where}: {first.message}"
        )
    cert = CertificationCertificate(value)
    try:
        dates = [
            date.fromisoformat(value[k])
            for k in ("original_issue_date", "issue_date", "expiry_date")
        ]
    except ValueError as exc:
        raise CertificationSchemaError(f"certificate date is not a real date: {exc}") from None
    if not dates[0] <= dates[1] <= dates[2]:
        raise CertificationSchemaError(
            "dates must satisfy original_issue_date <= issue_date <= expiry_date"
        )
    return cert
