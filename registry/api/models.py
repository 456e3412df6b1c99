"""Response models: what each JSON route sends, for the OpenAPI document.

The routes still build their answers as plain dicts (from ``registry.reports``
and the service) and return them as ``JSONResponse``: these models describe
those bytes, they do not produce them, so an answer clients rely on cannot
change by being re-serialized. ``tests/test_openapi.py`` (schemathesis) checks
that every answer conforms to its model.

Fields a later version may add are allowed (no ``additionalProperties: false``):
a client must ignore what it does not know.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from verifier import dsse, statement
from verifier.encoding import b64encode
from verifier.entry import format_time
from verifier.trust import MAX_STATEMENT_AGE

B64 = "base64 (RFC 4648, with padding)"
KEYID_PLACEHOLDER = "<lowercase hex SHA-256 of the signing key's raw public key>"
SIG_PLACEHOLDER = "<base64 Ed25519 signature over the pae bytes>"


class Problem(BaseModel):
    """An RFC 9457 problem: every error the API answers, as ``application/problem+json``."""

    type: str = Field(description="urn:qiledger:error:<code>")
    title: str = Field(description="the HTTP status phrase")
    status: int = Field(description="the HTTP status code")
    detail: str = Field(description="what went wrong, for a person")
    code: str = Field(description="a stable machine-readable code (e.g. document_mismatch)")


class Health(BaseModel):
    status: str = Field(description='"ok"')


# --- receipts -------------------------------------------------------------------------


class Receipt(BaseModel):
    """A durable entry and its inclusion proof under the checkpoint that logged it."""

    index: int = Field(description="the entry's index in the log")
    leaf_hash: str = Field(description=f"RFC 9162 leaf hash, {B64}")
    logged_at: str = Field(description="the log's time, RFC 3339 UTC with milliseconds")
    duplicate: bool = Field(description="true: the statement was logged before (this is its entry)")
    tree_size: int = Field(description="size of the signed checkpoint the proof is against")
    checkpoint: str = Field(description="that checkpoint, a C2SP signed note")
    inclusion_proof: list[str] = Field(description=f"RFC 9162 inclusion proof hashes, {B64}")
    tlog_proof: str = Field(description="the same proof as a C2SP tlog-proof@v1 file")


class CertificateReceipt(Receipt):
    certificate_id: str
    mark: str = Field(description="the QR accreditation mark's token")
    mark_url: str = Field(description="the URL the printed QR code holds")


# --- certificates ---------------------------------------------------------------------


class Laboratory(BaseModel):
    name: str | None
    code: str | None


class CertificateEvent(BaseModel):
    index: int = Field(description="log index of the statement")
    type: str = Field(description="statement type, e.g. certificate.issue")
    logged_at: str
    key_id: str = Field(description="hex SHA-256 of the signing key")
    reason: str


class AccreditationSummary(BaseModel):
    body_id: str
    number: str
    standard: str
    status: str
    valid_until: str


class IssuerSummary(BaseModel):
    issuer_id: str
    name: str
    kind: str
    accreditations: list[AccreditationSummary]


class CertificateView(BaseModel):
    certificate_id: str
    status: str = Field(description="Active, Suspended, Withdrawn, Expired or Superseded")
    reason: str = Field(description="why it has that status (empty if Active)")
    issuer_id: str
    kind: str = Field(description="dcc, management_system, product or person")
    document_sha256: str = Field(description="lowercase hex SHA-256 of the document")
    issued: str | None = Field(description="the issue date its statement gives (YYYY-MM-DD)")
    valid_until: str | None
    superseded_by: str | None
    laboratory: Laboratory | None = Field(description="a DCC's laboratory as it names itself")
    history: list[CertificateEvent]
    issuer: IssuerSummary | None = Field(
        default=None, description="the accredited issuer (absent if unknown)"
    )
    checked_at: str = Field(description="the time the status was computed for")


class CertificateStatus(CertificateView):
    tree_size: int = Field(description="the log size the answer reflects")
    traceability_at_risk: bool = Field(
        description="a certificate it is traced to, at any depth, is suspended, withdrawn "
        "or invalid (see /api/v1/traceability/{id})"
    )
    at_risk_because: list[str] = Field(description="those certificates (empty if not at risk)")


class CertificatePage(BaseModel):
    tree_size: int
    issuer_id: str | None = Field(description="the issuer filter, if any")
    certificates: list[CertificateView] = Field(description="in log order")
    next: str | None = Field(description="the cursor of the next page (absent at the end)")


class CertificateList(BaseModel):
    """A listing page, or (with ``digest``) the certificates about one document."""

    tree_size: int
    certificates: list[CertificateView] = Field(description="in log order")
    next: str | None = Field(description="the cursor of the next page (absent at the end)")
    issuer_id: str | None = Field(default=None, description="the issuer filter, if any")
    digest: str | None = Field(default=None, description="the document looked up, if any")


# --- issuers --------------------------------------------------------------------------


class AccreditationEvent(BaseModel):
    logged_at: str
    status: str
    reason: str


class Accreditation(BaseModel):
    body_id: str
    number: str
    standard: str
    scope: str
    covers: list[str]
    valid_from: str
    valid_until: str
    status: str
    body_trusted: bool = Field(description="false once the operator removed the body")
    history: list[AccreditationEvent]


class IssuerKey(BaseModel):
    key_id: str
    added_at: str
    revoked_at: str | None
    compromised_at: str | None
    reason: str | None


class Issuer(BaseModel):
    issuer_id: str
    name: str
    kind: str
    accreditations: list[Accreditation]
    keys: list[IssuerKey]


class IssuerDetail(Issuer):
    tree_size: int


class IssuerList(BaseModel):
    tree_size: int
    issuers: list[Issuer]


# --- log ------------------------------------------------------------------------------


class LogInfo(BaseModel):
    origin: str = Field(description="the log's name (C2SP checkpoint origin)")
    size: int
    root: str = Field(description=f"Merkle root, {B64}")
    verifier_key: str = Field(description="C2SP note verifier key <name>+<hex8>+<base64>")
    public_key_pem: str
    checkpoint: str


class LogEntry(BaseModel):
    index: int
    tree_size: int
    leaf_hash: str
    leaf_data: str = Field(description=f"the exact leaf data hashed, {B64}")
    entry: dict[str, Any] = Field(description="the leaf data as JSON: v, prev, logged_at, envelope")
    inclusion_proof: list[str]
    checkpoint: str


class InclusionProof(BaseModel):
    index: int
    tree_size: int
    leaf_hash: str
    hashes: list[str]
    checkpoint: str
    tlog_proof: str


class ConsistencyProof(BaseModel):
    first: int
    second: int
    hashes: list[str]
    first_checkpoint: str
    second_checkpoint: str


# --- lab integration ------------------------------------------------------------------


class EnvelopeSignature(BaseModel):
    keyid: str
    sig: str


class EnvelopeTemplate(BaseModel):
    payloadType: str  # DSSE spells it so
    payload: str
    signatures: list[EnvelopeSignature]


class PreparedStatement(BaseModel):
    """The exact statement the registry requires for a document, ready to sign."""

    statement: dict[str, Any] = Field(description="the statement's JSON fields")
    type: str = Field(description="certificate.issue, or certificate.amend for an amendment")
    certificate_id: str
    supersedes: str | None = Field(description="the certificate an amendment replaces")
    document_sha256: str
    media_type: str = Field(description="what the registry read the document as")
    payloadType: str = Field(description="the DSSE payloadType")
    payload: str = Field(description=f"the canonical (RFC 8785) statement bytes, {B64}")
    pae: str = Field(description=f"the DSSE PAE bytes the issuer's Ed25519 key signs, {B64}")
    statement_sha256: str = Field(description="hex SHA-256 of the payload: its identity")
    signed_at: str = Field(description="set by the registry when it prepared the statement")
    expires_at: str = Field(description="after this the log refuses the statement as too old")
    envelope: EnvelopeTemplate = Field(description="the envelope to send, signature left out")
    instructions: list[str]


def prepared_statement(
    fields: Mapping[str, Any], media_type: str, signed_at: datetime
) -> dict[str, Any]:
    """The answer of ``POST /api/v1/statements/prepare`` (and ``qiledger statement
    --json``): the statement ``fields`` a document calls for (from
    ``DocumentReader.statement``), stamped ``signed_at``, as the exact payload to
    sign. The registry derives the same fields again at upload and requires
    equality, so a client adds nothing but its signature."""
    stamped = {"type": fields["type"], "signed_at": format_time(signed_at), **fields}
    payload = statement.encode(stamped)
    expires_at = signed_at + MAX_STATEMENT_AGE
    return {
        "statement": stamped,
        "type": stamped["type"],
        "certificate_id": stamped["certificate_id"],
        "supersedes": stamped.get("supersedes"),
        "document_sha256": stamped["document_sha256"],
        "media_type": media_type,
        "payloadType": dsse.STATEMENT_PAYLOAD_TYPE,
        "payload": b64encode(payload),
        "pae": b64encode(dsse.pae(dsse.STATEMENT_PAYLOAD_TYPE, payload)),
        "statement_sha256": hashlib.sha256(payload).hexdigest(),
        "signed_at": stamped["signed_at"],
        "expires_at": format_time(expires_at),
        "envelope": {
            "payloadType": dsse.STATEMENT_PAYLOAD_TYPE,
            "payload": b64encode(payload),
            "signatures": [{"keyid": KEYID_PLACEHOLDER, "sig": SIG_PLACEHOLDER}],
        },
        "instructions": [
            "Do not change the payload: its bytes are what the registry requires "
            "(it derives the statement from the document again and compares).",
            "Sign the pae bytes (DSSE v1 PAE of payloadType and payload) with the "
            "issuer's accredited Ed25519 key.",
            "Put the signature (base64) into envelope.signatures[0].sig and the key's "
            "id (lowercase hex SHA-256 of its raw 32-byte public key) into keyid.",
            "POST /api/v1/certificates, multipart: document (the same exact bytes), "
            "envelope (that JSON), and record for a PDF.",
            f"Submit before expires_at: the log refuses a statement signed more than "
            f"{MAX_STATEMENT_AGE.days} days before it is logged (prepare again after).",
        ],
    }


# --- traceability ---------------------------------------------------------------------


class TracedLink(BaseModel):
    from_: str = Field(alias="from", description="the certificate holding the link")
    to: str = Field(description="the certificate id as the linking document gives it")
    role: str = Field(description="equipment (an instrument's calibration) or previous_report")
    depth: int = Field(description="1: the certificate's own links; 2: theirs; ...")
    registered: bool = Field(description="whether this log holds the certificate linked to")
    status: str = Field(description="its status now, or 'External, unverified'")
    procedure: str = Field(description="the digest procedure (SHA-256 when checkable)")
    digest: str
    digest_check: str = Field(description="match, mismatch, unchecked or external")


class Traceability(BaseModel):
    tree_size: int
    certificate_id: str
    status: str
    traceability_at_risk: bool = Field(
        description="a certificate it depends on (transitively) is suspended, withdrawn "
        "or invalid; derived when read"
    )
    at_risk_because: list[str]
    links: list[TracedLink] = Field(description="every link met, level by level")
    ends: list[str] = Field(description="registered certificates where the chain ends")
    cycles: list[list[str]] = Field(description="certificates that trace to one another")
    truncated: bool
    checked_at: str


class DependentView(BaseModel):
    certificate_id: str
    depth: int = Field(description="1: links to the certificate itself; 2: to one of those...")
    via: str = Field(description="the certificate it links to")
    digest_check: str
    status: str


class Dependents(BaseModel):
    tree_size: int
    certificate_id: str
    status: str
    max_depth: int
    dependents: list[DependentView] = Field(description="level by level")
    next: str | None = Field(description="the cursor of the next page (absent at the end)")
    checked_at: str


class StandardCertificate(BaseModel):
    certificate_id: str
    as_written: str = Field(description="the standard's reference as the certificate gives it")
    issuer_id: str
    kind: str
    status: str


class StandardPage(BaseModel):
    tree_size: int
    standard: str
    counts_by_recorded_status: dict[str, int] = Field(
        description="certificates naming it, by the status their events give (no expiry)"
    )
    certificates: list[StandardCertificate] = Field(description="in log order")
    next: str | None
    checked_at: str
