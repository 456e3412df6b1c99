"""Small builders shared by the registry tests (statements, envelopes, keys)."""

from __future__ import annotations

import hashlib
from typing import Any

from verifier import dsse, jcs, statement
from verifier.keys import SigningKey


def key_from(label: str) -> SigningKey:
    """A deterministic test key (tests pass randomness in, as everything does)."""
    return SigningKey.from_seed(hashlib.sha256(label.encode()).digest())


def issue_statement(n: int, issuer: str = "LAB-1") -> dict[str, Any]:
    return {
        "type": "certificate.issue",
        "certificate_id": f"{issuer}/DCC-{n:06d}",
        "issuer": issuer,
        "kind": "dcc",
        "document_sha256": hashlib.sha256(f"document {issuer} {n}".encode()).hexdigest(),
        "issued": "2026-11-24",
    }


def envelope_bytes(fields: dict[str, Any], key: SigningKey) -> bytes:
    return jcs.canonical_bytes(dsse.sign(statement.encode(fields), key).to_json())
