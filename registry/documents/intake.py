"""Certificate documents → certificate statements, and the check that ties them.

:meth:`DocumentReader.statement` derives the statement a document calls for
(the issuer signs it); :meth:`DocumentReader.check` derives it again from the
submitted bytes and requires the signed statement to say exactly that — so the
public log holds only what the registry itself extracted (identifiers, dates,
the issuer, the digest), never a client's extra fields.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any

from registry.config import Settings
from registry.errors import ConfigError, SchemaUnavailableError
from verifier import certification, dcc, dcc_signature, links
from verifier.dcc import MAX_DOCUMENT_SIZE
from verifier.errors import DocumentTooLargeError, MalformedError
from verifier.statement import (
    CertificateAmend,
    CertificateDocument,
    CertificateIssue,
    Statement,
)

DCC_MEDIA_TYPE = "application/vnd.ptb.dcc+xml"
CERTIFICATION_MEDIA_TYPE = "application/vnd.qiledger.certification+json"
PDF_MEDIA_TYPE = "application/pdf"


class DocumentMismatch(MalformedError):
    code = "document_mismatch"


class RecordError(MalformedError):
    """A PDF certificate without its record, or a record where none belongs."""

    code = "record_invalid"


@dataclass(frozen=True)
class DocumentStatement:
    """The statement fields a document calls for (without ``signed_at``)."""

    fields: dict[str, Any]
    media_type: str


def media_type_of(data: bytes) -> str:
    """What a document is, from its first bytes (a DCC in any encoding XML
    allows: UTF-8 with or without byte-order mark, UTF-16, a declared one)."""
    if data.startswith(b"%PDF-"):
        return PDF_MEDIA_TYPE
    if dcc.looks_like_xml(data):
        return DCC_MEDIA_TYPE
    if data[:64].lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{"):
        return CERTIFICATION_MEDIA_TYPE
    raise MalformedError(
        "the document is neither a DCC (XML) nor a certification certificate "
        "(JSON, or PDF with its JSON record)"
    )


class DocumentReader:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def schemas(self) -> dcc.DccSchemas | None:
        folder = self.settings.dcc_schemas
        if folder is None:
            return None
        try:
            return dcc.DccSchemas(folder)
        except MalformedError as exc:
            raise ConfigError(f"QILEDGER_DCC_SCHEMAS: {exc.message}") from None

    @cached_property
    def trust_anchors(self) -> list[Any]:
        folder = self.settings.dcc_trust_store
        if folder is None:
            return []
        try:
            return dcc_signature.load_trust_store(folder)
        except MalformedError as exc:
            raise ConfigError(f"QILEDGER_DCC_TRUST_STORE: {exc.message}") from None

    def statement(
        self, data: bytes, issuer_id: str, now: datetime, record: bytes | None = None
    ) -> DocumentStatement:
        """The certificate statement ``data`` calls for, for ``issuer_id``.

        A certification certificate issued as a PDF comes with its ``record``: the
        same certificate as JSON (IAF CertSearch fields, the published schema).
        The PDF is not parsed; the statement's fields come from the record, and
        its digest covers the exact PDF bytes, which are what is stored.
        """
        for what, part, limit in (
            ("document", data, MAX_DOCUMENT_SIZE),
            ("record", record or b"", certification.MAX_RECORD_SIZE),
        ):
            if len(part) > limit:
                raise DocumentTooLargeError(f"{what} is {len(part)} bytes; the limit is {limit}")
        media_type = media_type_of(data)
        if (media_type == PDF_MEDIA_TYPE) != (record is not None):
            raise RecordError(
                "a PDF certificate needs its record (the certificate as JSON, "
                "--record / the multipart part 'record')"
                if record is None
                else "only a PDF certificate comes with a separate record; "
                "a DCC or JSON certificate is its own record"
            )
        digest = hashlib.sha256(data).hexdigest()
        if media_type == DCC_MEDIA_TYPE:
            fields = self._dcc_statement(data, issuer_id, digest, now)
        else:
            fields = self._certification_statement(record or data, issuer_id, digest)
        return DocumentStatement(fields, media_type)

    def check(
        self, stmt: Statement, data: bytes, now: datetime, record: bytes | None = None
    ) -> DocumentStatement:
        """Require the signed statement to be exactly what its document calls for."""
        expected = self.statement(data, stmt["issuer_id"], now, record)
        signed = {k: v for k, v in stmt.fields.items() if k != "signed_at"}
        if signed != expected.fields:
            differing = sorted(
                k
                for k in signed.keys() | expected.fields.keys()
                if signed.get(k) != expected.fields.get(k)
            )
            raise DocumentMismatch(
                "the statement does not match its document in: " + ", ".join(differing)
            )
        return expected

    def _dcc_statement(
        self, data: bytes, issuer_id: str, digest: str, now: datetime
    ) -> dict[str, Any]:
        schemas = self.schemas
        if schemas is None and self.settings.require_schema:
            raise SchemaUnavailableError(
                "schema validation is required (QILEDGER_REQUIRE_SCHEMA) but no DCC schema "
                "folder is configured (QILEDGER_DCC_SCHEMAS)"
            )
        core, root = dcc.read_dcc_tree(data, schemas)
        linked = links.read_links(root)
        public: dict[str, Any] = {
            "begin_performance_date": core.begin_performance_date.isoformat(),
            "end_performance_date": core.end_performance_date.isoformat(),
            "laboratory": core.laboratory_name[:200],
        }
        if core.laboratory_code:
            public["laboratory_code"] = core.laboratory_code
        if core.previous_report:
            public["previous_report"] = core.previous_report[:128]
        if core.has_signature:
            public["document_signature"] = self._dcc_signature(data, now)
        if core.replaces:
            public["change"] = core.change or "amended"
        document: dict[str, Any] = {
            "issuer_id": issuer_id,
            "certificate_id": f"{issuer_id}/{core.unique_identifier}",
            "kind": "dcc",
            "document_sha256": digest,
            "issued": core.issue_date or core.end_performance_date,
            "schema_version": core.schema_version,
            "schema_validated": core.schema_validated,
            "fields": public,
            # What the DCC is traced to (ids and digests) and the norms it names.
            "links": linked.links_json(),
            "standards": linked.standards_json(),
        }
        built: CertificateDocument
        if core.replaces:
            built = CertificateAmend(**document, supersedes=f"{issuer_id}/{core.replaces}")
        else:
            built = CertificateIssue(**document)
        return built.to_json()

    def _dcc_signature(self, data: bytes, now: datetime) -> dict[str, Any]:
        """Check an embedded XMLDSig/XAdES signature, always (value and digests
        under the certificate it embeds; with a trust store also its chain, else
        ``signer_trusted`` is false); what the log records about it."""
        checked = dcc_signature.verify_document_signature(data, self.trust_anchors, now=now)
        result: dict[str, Any] = {
            "present": True,
            "checked": True,
            "kind": checked.kind,
            "signer_sha256": checked.signer_fingerprint_sha256,
            "signer_trusted": checked.signer_trusted,
        }
        if checked.signing_time is not None:
            result["signing_time"] = checked.signing_time.isoformat()
        return result

    def _certification_statement(self, data: bytes, issuer_id: str, digest: str) -> dict[str, Any]:
        cert = certification.read_certification(data)
        body = cert.fields["certification_body"]["id"]
        if body != issuer_id:
            raise DocumentMismatch(
                f"the certificate names certification body {body}, not issuer {issuer_id}"
            )
        if cert.fields["status"] != "Active":
            raise DocumentMismatch(
                f"a certificate is registered as Active, not {cert.fields['status']}; "
                "later status changes are separate signed statements"
            )
        public = {
            k: cert.fields[k]
            for k in (
                "certified_entity",
                "scope",
                "standard",
                "original_issue_date",
                "accreditation_body",
            )
        }
        return CertificateIssue(
            issuer_id=issuer_id,
            certificate_id=f"{issuer_id}/{cert.number}",
            kind=cert.scheme,
            document_sha256=digest,
            issued=cert.issue_date,
            valid_until=cert.expiry_date,
            fields=public,
            standards=(links.normalise_standard(cert.fields["standard"]),),
        ).to_json()
