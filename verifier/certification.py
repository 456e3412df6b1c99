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
import jsonschema_rs

from verifier import jcs
from verifier.dcc import clip
from verifier.errors import DocumentTooLargeError, MalformedError

SCHEMA_NAME = "certification-certificate.schema.json"

MAX_RECORD_SIZE = 256 * 1024
"""Largest certification certificate as JSON, in bytes: a document itself or the
record sent beside a PDF certificate. A real one is a few KB; its public fields
must fit a 16 KiB statement field anyway (200 sites at most)."""
_EXCERPT_CHARS = 100

# IAF CertSearch status words, one to one with the log's replayed statuses.
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


@cache
def _compiled_validator() -> Any:
    # ~100x quicker than the reference validator on a valid record, but not
    # quite the same rules: its regular expressions follow ECMA-262, where "$"
    # does not match before a final newline. It is trusted only to accept
    # (tests/test_certification_validator.py: it never accepts what the
    # reference refuses); whatever it refuses, or cannot take, the reference
    # validator decides and words.
    return jsonschema_rs.Draft202012Validator(schema(), validate_formats=True)


def first_schema_error(value: Any) -> jsonschema.ValidationError | None:
    """The reference validator's first schema error in ``value``, None if valid."""
    try:
        if _compiled_validator().is_valid(value):
            return None
    except (ValueError, TypeError, OverflowError):
        pass  # e.g. a lone surrogate, which Rust strings cannot hold
    return next(iter(_validator().iter_errors(value)), None)


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


def _excerpt(value: Any) -> str:
    """A short description of a JSON value for an error message: never the
    whole of an array, object or long string (it may be most of the document)."""
    if isinstance(value, list):
        return f"an array of {len(value)} items"
    if isinstance(value, dict):
        return f"an object of {len(value)} members"
    if isinstance(value, str):  # escapes lengthen a repr: clipped again
        return clip(repr(clip(value, _EXCERPT_CHARS)), _EXCERPT_CHARS + 20)
    return clip(repr(value), _EXCERPT_CHARS)


def _names(names: list[str]) -> str:
    shown = ", ".join(clip(repr(clip(n, 40)), 50) for n in names[:3])
    return shown + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def schema_error_message(error: jsonschema.ValidationError) -> str:
    """What failed, built from the failing path and keyword (jsonschema's own
    messages quote the whole failing value)."""
    where = "/".join(clip(str(p), 40) for p in error.absolute_path) or "(document)"
    keyword, expected, instance = error.validator, error.validator_value, error.instance
    if keyword == "additionalProperties" and isinstance(instance, dict):
        allowed = error.schema.get("properties", {})
        what = "Additional properties are not allowed: " + _names(
            [k for k in instance if k not in allowed]
        )
    elif keyword == "required" and isinstance(instance, dict):
        what = "lacks the required " + _names([k for k in expected if k not in instance])
    elif keyword in ("maxItems", "minItems", "maxLength", "minLength", "maxProperties"):
        size = len(instance) if isinstance(instance, list | dict | str) else "?"
        what = f"has length {size}; {keyword} is {expected}"
    elif keyword == "format":
        what = f"{_excerpt(instance)} is not a valid {clip(str(expected), 40)}"
    else:
        what = (
            f"{_excerpt(instance)} fails {keyword} "
            f"{clip(json.dumps(expected, ensure_ascii=False), _EXCERPT_CHARS)}"
        )
    return f"certificate does not match the schema at {where}: {what}"


def read_certification(data: bytes) -> CertificationCertificate:
    """Parse and validate a certification certificate document (its first
    schema error is reported; validation stops there)."""
    if len(data) > MAX_RECORD_SIZE:
        raise DocumentTooLargeError(
            f"a certification certificate (JSON) is {len(data)} bytes; "
            f"the limit is {MAX_RECORD_SIZE}"
        )
    value = jcs.parse_json(data)
    first = first_schema_error(value)
    if first is not None:
        raise CertificationSchemaError(schema_error_message(first))
    cert = CertificationCertificate(value)
    try:
        dates = [
            date.fromisoformat(value[k])
            for k in ("original_issue_date", "issue_date", "expiry_date")
        ]
    except ValueError as exc:
        raise CertificationSchemaError(
            f"certificate date is not a real date: {clip(str(exc))}"
        ) from None
    if not dates[0] <= dates[1] <= dates[2]:
        raise CertificationSchemaError(
            "dates must satisfy original_issue_date <= issue_date <= expiry_date"
        )
    return cert
