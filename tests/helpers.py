"""Small builders shared by the registry tests: keys, statements, envelopes and a
trust chain (log key → accreditation body → accredited issuer)."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime
from typing import Any

from registry.ledger import Ledger
from verifier import dsse, jcs, statement
from verifier.entry import format_time
from verifier.keys import SigningKey

# One signing time per test run, so the same statement built twice is the same
# envelope (the log answers a resubmission with the existing index).
SIGNED_AT = format_time(datetime.now(UTC))
BODY_ID = "CNAS"


def key_from(label: str) -> SigningKey:
    """A deterministic test key (tests pass randomness in, as everything does)."""
    return SigningKey.from_seed(hashlib.sha256(label.encode()).digest())


BODY_KEY = key_from("accreditation-body")


def b64key(key: SigningKey) -> str:
    return base64.b64encode(key.public_key.raw).decode()


def issue_statement(n: int, issuer: str = "LAB-1", **extra: Any) -> dict[str, Any]:
    return {
        "type": "certificate.issue",
        "certificate_id": f"{issuer}/DCC-{n:06d}",
        "issuer_id": issuer,
        "kind": "dcc",
        "document_sha256": hashlib.sha256(f"document {issuer} {n}".encode()).hexdigest(),
        "issued": "2026-11-24",
        "signed_at": SIGNED_AT,
        **extra,
    }


def body_add(body_key: SigningKey = BODY_KEY, body_id: str = BODY_ID) -> dict[str, Any]:
    return {
        "type": "trust.body.add",
        "body_id": body_id,
        "name": "China National Accreditation Service",
        "country": "CN",
        "public_key": b64key(body_key),
        "signed_at": SIGNED_AT,
    }


def grant(
    issuer: str,
    keys: list[SigningKey],
    *,
    body_id: str = BODY_ID,
    number: str | None = None,
    kind: str = "calibration_laboratory",
    covers: tuple[str, ...] = ("dcc",),
    valid_from: str = "2020-01-01",
    valid_until: str = "2099-12-31",
) -> dict[str, Any]:
    return {
        "type": "accreditation.grant",
        "body_id": body_id,
        "issuer_id": issuer,
        "issuer_name": f"{issuer} Calibration Laboratory",
        "issuer_kind": kind,
        "public_keys": [b64key(k) for k in keys],
        "accreditation_number": number or f"{body_id}-{issuer}",
        "standard": "ISO/IEC 17025:2017",
        "scope": "Temperature and humidity calibration",
        "covers": list(covers),
        "valid_from": valid_from,
        "valid_until": valid_until,
        "signed_at": SIGNED_AT,
    }


def envelope_bytes(fields: dict[str, Any], key: SigningKey) -> bytes:
    return jcs.canonical_bytes(dsse.sign(statement.encode(fields), key).to_json())


def accredit(ledger: Ledger, issuer: str, keys: list[SigningKey]) -> None:
    """Register the test body (once) and accredit ``issuer`` with ``keys``."""
    state = ledger.trust_state()
    if BODY_ID not in state.bodies:
        ledger.sequencer.submit(envelope_bytes(body_add(), ledger.load_log_key().key))
    ledger.sequencer.submit(envelope_bytes(grant(issuer, keys), BODY_KEY))
