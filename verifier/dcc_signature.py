"""XMLDSig / XAdES signatures embedded in DCCs, checked offline.

A signature is always checked, trust store or not: its value and every
reference digest, with the signer certificate it embeds
(``ds:KeyInfo/ds:X509Data``), which must be valid at the time below. That
proves the document is what that certificate's holder signed. With trust
anchors, ``signxml`` checks the certificate chain up to them as well, and the
result says ``signer_trusted``.

``signxml`` does not read the revocation data that XAdES-LT embeds, so a signer
certificate revoked *before* the signing time would pass; this module reads
``xades:RevocationValues`` itself: every embedded CRL whose signature verifies
under the signer's issuing CA is consulted, and so is every OCSP response whose
signature verifies under its responder certificate. Without trust anchors the
issuing CA is only the one the document embeds: a document whose own revocation
data says its signer was revoked is refused all the same.

Times: a XAdES signature is evaluated at its ``xades:SigningTime`` (a DCC stays
valid after its signer certificate expires, provided it was valid and not
revoked when it signed); a plain XMLDSig carries no signing time and is
evaluated at ``now``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature as CryptoInvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509 import ocsp
from signxml.exceptions import InvalidSignature, SignXMLException
from signxml.verifier import SignatureConfiguration, XMLVerifier
from signxml.xades.xades import XAdESVerifier

from verifier.dcc import clip, parse_xml
from verifier.errors import MalformedError, VerificationError

DS = "http://www.w3.org/2000/09/xmldsig#"
XADES = "http://uri.etsi.org/01903/v1.3.2#"
_NS = {"ds": DS, "xades": XADES}
MAX_EMBEDDED_CERTIFICATES = 16
"""Certificates in ``ds:KeyInfo/ds:X509Data`` (a signer and its chain)."""


class DocumentSignatureError(VerificationError):
    """A DCC's embedded signature is missing, broken, untrusted or revoked."""

    code = "document_signature_invalid"


@dataclass(frozen=True)
class DocumentSignature:
    kind: str
    """``xmldsig`` or ``xades``."""
    signer_subject: str
    signer_serial: int
    signer_fingerprint_sha256: str
    signing_time: datetime | None
    checked_at: datetime
    revocation_checked: bool
    signer_trusted: bool
    """The signer certificate's chain was checked up to a configured trust anchor
    (without anchors only the signature itself, under the embedded certificate)."""


def has_signature(data: bytes) -> bool:
    return parse_xml(data, "DCC").getroot().find("ds:Signature", _NS) is not None


def load_trust_store(folder: Path) -> list[x509.Certificate]:
    """Every certificate in ``folder`` (*.pem, *.crt, *.cer; PEM or DER)."""
    anchors: list[x509.Certificate] = []
    try:
        files = sorted(p for p in folder.iterdir() if p.suffix in {".pem", ".crt", ".cer"})
    except OSError as exc:
        raise MalformedError(f"cannot read trust store {folder}: {exc.strerror}") from None
    for path in files:
        data = path.read_bytes()
        try:
            if b"-----BEGIN CERTIFICATE-----" in data:
                anchors += x509.load_pem_x509_certificates(data)
            else:
                anchors.append(x509.load_der_x509_certificate(data))
        except ValueError:
            raise MalformedError(f"{path} is not an X.509 certificate") from None
    if not anchors:
        raise MalformedError(f"trust store {folder} holds no certificates")
    return anchors


@cache
def _bundle_file(pem: bytes) -> str:
    # signxml reads CA certificates from a file path; one file per distinct bundle.
    handle = tempfile.NamedTemporaryFile(prefix="qiledger-ca-", suffix=".pem", delete=False)  # noqa: SIM115
    with handle:
        handle.write(pem)
    return handle.name


def _certs_in(element: Any, path: str) -> list[x509.Certificate]:
    certs = []
    for node in element.iterfind(path, _NS):
        try:
            certs.append(
                x509.load_der_x509_certificate(base64.b64decode("".join(node.text.split())))
            )
        except (ValueError, binascii.Error, AttributeError):
            raise DocumentSignatureError("the signature embeds an unreadable certificate") from None
    return certs


def _der_values(element: Any, path: str) -> list[bytes]:
    try:
        return [
            base64.b64decode("".join((n.text or "").split())) for n in element.iterfind(path, _NS)
        ]
    except (ValueError, binascii.Error):
        raise DocumentSignatureError("the signature embeds unreadable revocation data") from None


def _signed_by(
    issuer: x509.Certificate, signature: bytes, data: bytes, algorithm: hashes.HashAlgorithm | None
) -> bool:
    key = issuer.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey) and algorithm is not None:
            key.verify(signature, data, padding.PKCS1v15(), algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey) and algorithm is not None:
            key.verify(signature, data, ec.ECDSA(algorithm))
        else:
            return False
    except CryptoInvalidSignature:
        return False
    return True


def _crl_signed_by(crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> bool:
    key = issuer.public_key()
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        return False
    return crl.is_signature_valid(key)


def _check_revocation(
    signature: Any, signer: x509.Certificate, at: datetime, anchors: Sequence[x509.Certificate]
) -> bool:
    """Refuse a signer revoked at or before ``at``; True if revocation data was usable."""
    known = list(anchors) + _certs_in(
        signature, ".//xades:CertificateValues/xades:EncapsulatedX509Certificate"
    )
    known += _certs_in(signature, ".//ds:X509Certificate")
    issuers = [c for c in known if c.subject == signer.issuer]
    consulted = False
    for der in _der_values(signature, ".//xades:RevocationValues//xades:EncapsulatedCRLValue"):
        try:
            crl = x509.load_der_x509_crl(der)
        except ValueError:
            raise DocumentSignatureError("the signature embeds an unreadable CRL") from None
        if crl.issuer != signer.issuer or not any(_crl_signed_by(crl, i) for i in issuers):
            continue  # another CA's CRL, or one we cannot authenticate
        consulted = True
        revoked = crl.get_revoked_certificate_by_serial_number(signer.serial_number)
        if revoked is not None and revoked.revocation_date_utc <= at:
            raise DocumentSignatureError(
                f"the signer certificate (serial {signer.serial_number}) was revoked at "
                f"{revoked.revocation_date_utc.isoformat()}, before the signing time "
                f"{at.isoformat()}"
            )
    for der in _der_values(signature, ".//xades:RevocationValues//xades:EncapsulatedOCSPValue"):
        try:
            response = ocsp.load_der_ocsp_response(der)
        except ValueError:
            raise DocumentSignatureError(
                "the signature embeds an unreadable OCSP response"
            ) from None
        if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
            continue
        if response.serial_number != signer.serial_number:
            continue
        responders = list(response.certificates) + known
        if not any(
            _signed_by(
                r,
                response.signature,
                response.tbs_response_bytes,
                response.signature_hash_algorithm,
            )
            for r in responders
            if r.subject == response.responder_name or response.responder_name is None
        ):
            continue
        consulted = True
        if (
            response.certificate_status == ocsp.OCSPCertStatus.REVOKED
            and response.revocation_time_utc is not None
            and response.revocation_time_utc <= at
        ):
            raise DocumentSignatureError(
                f"the signer certificate (serial {signer.serial_number}) was revoked at "
                f"{response.revocation_time_utc.isoformat()} (OCSP), before the signing time "
                f"{at.isoformat()}"
            )
    return consulted


def _spki(key: Any) -> bytes:
    """SubjectPublicKeyInfo DER of a key object, or of signxml's PEM/DER key bytes."""
    try:
        if isinstance(key, bytes):
            key = (
                serialization.load_pem_public_key(key)
                if key.lstrip().startswith(b"-----")
                else serialization.load_der_public_key(key)
            )
        der: bytes = key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    except (AttributeError, ValueError, TypeError):
        return b""
    return der


def _signer_candidates(certs: list[x509.Certificate]) -> list[x509.Certificate]:
    """The embedded certificates that can be the signer's: those that issued no
    other embedded certificate (the end of the chain), else every one."""
    leaves = [
        c
        for c in certs
        if not any(o is not c and o.issuer == c.subject and o.subject != o.issuer for o in certs)
    ]
    return leaves or certs


def _refusal(exc: Exception) -> DocumentSignatureError:
    """A signxml failure in our words (signxml's own may quote the document: clipped)."""
    if isinstance(exc, SignXMLException):
        return DocumentSignatureError(f"the DCC's signature does not verify: {clip(str(exc))}")
    return DocumentSignatureError(f"the DCC's signature cannot be checked: {clip(str(exc))}")


def verify_document_signature(
    data: bytes, trust_anchors: Sequence[x509.Certificate], *, now: datetime
) -> DocumentSignature:
    """Check the signature embedded in a DCC: always its value and reference
    digests with the signer certificate it embeds; with ``trust_anchors`` (may be
    empty) also that certificate's chain up to one of them."""
    tree = parse_xml(data, "DCC")
    signature = tree.getroot().find("ds:Signature", _NS)
    if signature is None:
        raise DocumentSignatureError("the DCC carries no XML signature")
    xades = signature.find(".//xades:QualifyingProperties", _NS) is not None
    signing_time: datetime | None = None
    if xades:
        text = signature.findtext(".//xades:SigningTime", namespaces=_NS)
        try:
            signing_time = datetime.fromisoformat((text or "").strip())
        except ValueError:
            raise DocumentSignatureError(
                "the XAdES signature has no readable SigningTime"
            ) from None
        if signing_time.tzinfo is None:
            raise DocumentSignatureError("the XAdES SigningTime has no time zone")
        if signing_time > now:
            raise DocumentSignatureError("the XAdES SigningTime lies in the future")
    at = signing_time or now
    embedded = _certs_in(signature, "ds:KeyInfo/ds:X509Data/ds:X509Certificate")
    if not embedded:
        raise DocumentSignatureError(
            "the signature embeds no signer certificate (ds:KeyInfo/ds:X509Data)"
        )
    if len(embedded) > MAX_EMBEDDED_CERTIFICATES:
        raise DocumentSignatureError(
            f"the signature embeds {len(embedded)} certificates; "
            f"the limit is {MAX_EMBEDDED_CERTIFICATES}"
        )
    config = SignatureConfiguration(expect_references=2 if xades else 1, verification_time=at)
    verifier = XAdESVerifier() if xades else XMLVerifier()
    signer: x509.Certificate | None = None
    if trust_anchors:
        pem = b"".join(a.public_bytes(serialization.Encoding.PEM) for a in trust_anchors)
        try:
            result = verifier.verify(data, ca_pem_file=_bundle_file(pem), expect_config=config)
        except (SignXMLException, ValueError, TypeError) as exc:
            raise _refusal(exc) from None
        first = result[0] if isinstance(result, list) else result
        signer = next(
            (c for c in embedded if _spki(c.public_key()) == _spki(first.signature_key)), None
        )
        if signer is None:
            raise DocumentSignatureError("cannot tell which embedded certificate signed the DCC")
    else:
        candidates = _signer_candidates(embedded)
        for candidate in candidates:
            try:
                verifier.verify(data, x509_cert=candidate, expect_config=config)
            except (SignXMLException, ValueError, TypeError) as exc:
                # Exactly InvalidSignature: the signature value does not verify under
                # this key, try the next one (a bad digest or certificate is a subclass).
                if type(exc) is InvalidSignature and candidate is not candidates[-1]:
                    continue
                raise _refusal(exc) from None
            signer = candidate
            break
        if signer is None:  # the loop above breaks or raises
            raise DocumentSignatureError("the DCC's signature does not verify")
    revocation_checked = _check_revocation(signature, signer, at, trust_anchors) if xades else False
    return DocumentSignature(
        kind="xades" if xades else "xmldsig",
        signer_subject=signer.subject.rfc4514_string(),
        signer_serial=signer.serial_number,
        signer_fingerprint_sha256=hashlib.sha256(
            signer.public_bytes(serialization.Encoding.DER)
        ).hexdigest(),
        signing_time=signing_time,
        checked_at=at,
        revocation_checked=revocation_checked,
        signer_trusted=bool(trust_anchors),
    )
