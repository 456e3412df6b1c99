"""Signed statements: the payload of every logged DSSE envelope.

A statement is a JSON object, in RFC 8785 canonical form, with a ``type`` from
DESIGN.md. The per-type fields (accreditations, keys, certificates) are checked
by their own modules as they land; here is the common shape every entry has.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from verifier import jcs
from verifier.errors import MalformedError

STATEMENT_TYPES = frozenset(
    {
        "accreditation.grant",
        "accreditation.suspend",
        "accreditation.restore",
        "accreditation.withdraw",
        "issuer.key.add",
        "issuer.key.revoke",
        "certificate.issue",
        "certificate.amend",
        "certificate.suspend",
        "certificate.reinstate",
        "certificate.withdraw",
    }
)


@dataclass(frozen=True)
class Statement:
    """A parsed statement. Parsing says nothing about who signed it."""

    type: str
    fields: dict[str, Any]


def parse(payload: bytes) -> Statement:
    """Parse a statement payload: canonical JSON object with a known ``type``."""
    value = jcs.parse_canonical(payload)
    if not isinstance(value, dict):
        raise MalformedError("statement must be a JSON object")
    kind = value.get("type")
    if not isinstance(kind, str):
        raise MalformedError("statement lacks a string 'type'")
    if kind not in STATEMENT_TYPES:
        raise MalformedError(f"unknown statement type {kind!r}")
    return Statement(kind, value)


def encode(fields: dict[str, Any]) -> bytes:
    """Canonical payload bytes for a statement (checked as :func:`parse` would)."""
    payload = jcs.canonical_bytes(fields)
    parse(payload)
    return payload
