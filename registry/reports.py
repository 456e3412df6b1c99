"""Read-only views of the replayed trust state, shared by the CLI and the HTTP API
so both say the same thing about a certificate or an issuer."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from registry.errors import NotFoundError
from verifier import trust
from verifier.trust import IAF_STATUS


def checked_at(now: datetime) -> str:
    """The moment a status was computed for, as answers name it (UTC, seconds)."""
    return now.isoformat(timespec="seconds").replace("+00:00", "Z")


def certificate_report(
    state: trust.TrustState, certificate_id: str, at: datetime
) -> dict[str, Any]:
    cert = state.certificate(certificate_id)
    if cert is None:
        raise NotFoundError(f"no certificate {certificate_id} in this log")
    return certificate_view(state, cert, at)


def certificate_view(
    state: trust.TrustState, cert: trust.Certificate, at: datetime
) -> dict[str, Any]:
    """What :func:`certificate_report` says, for a certificate already read."""
    certificate_id = cert.certificate_id
    status = trust.status_of(state, cert, at)
    return {
        "certificate_id": certificate_id,
        "status": IAF_STATUS[status.status],
        "reason": status.reason,
        "issuer_id": cert.issuer_id,
        "kind": cert.kind,
        "document_sha256": cert.document_sha256,
        "issued": cert.issued.isoformat() if cert.issued else None,
        "valid_until": cert.valid_until.isoformat() if cert.valid_until else None,
        "superseded_by": cert.superseded_by,
        # A DCC's own laboratory, as the document names it (beside the issuer).
        "laboratory": (
            None
            if cert.laboratory is None
            else {"name": cert.laboratory[0] or None, "code": cert.laboratory[1] or None}
        ),
        "history": [
            {
                "index": e.index,
                "type": e.type,
                "logged_at": e.logged_at,
                "key_id": e.key_id,
                "reason": e.reason,
            }
            for e in cert.events
        ],
    }


def issuer_summary(issuer: trust.Issuer) -> dict[str, Any]:
    """What a certificate's status read and page say of its issuer: who it is and
    its accreditations' bodies, numbers, standards, status and end dates (the
    whole record, keys and history included, is :func:`issuer_report`)."""
    return {
        "issuer_id": issuer.issuer_id,
        "name": issuer.name,
        "kind": issuer.kind,
        "accreditations": [_accreditation_summary(a) for a in issuer.accreditations.values()],
    }


def _accreditation_summary(a: trust.Accreditation) -> dict[str, Any]:
    return {
        "body_id": a.body_id,
        "number": a.number,
        "standard": a.standard,
        "status": a.status,
        "valid_until": str(a.valid_until),
    }


def issuer_report(state: trust.TrustState, issuer: trust.Issuer) -> dict[str, Any]:
    return {
        **issuer_summary(issuer),
        "accreditations": [
            {
                **_accreditation_summary(a),
                "scope": a.scope,
                "covers": sorted(a.covers),
                "valid_from": str(a.valid_from),
                "body_trusted": state.bodies[a.body_id].removed_at is None,
                "history": [{"logged_at": t, "status": s, "reason": r} for t, s, r in a.events],
            }
            for a in issuer.accreditations.values()
        ],
        "keys": [
            {
                "key_id": k.key.key_id,
                "added_at": k.added_at,
                "revoked_at": k.revoked_at,
                "compromised_at": k.compromised_at.isoformat() if k.compromised_at else None,
                "reason": k.revocation_reason,
            }
            for k in issuer.keys.values()
        ],
    }
