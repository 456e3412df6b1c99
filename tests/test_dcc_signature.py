"""Signed DCCs: every shared example gives the verdict SOURCES.md documents, with
the embedded XAdES revocation data honoured (signxml alone accepts `_revoked`);
without a trust store the signature is checked all the same (under the
certificate it embeds) and recorded as not trusted."""

from __future__ import annotations

import base64
import functools
import hashlib
import re
import shutil
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree
from signxml import DigestAlgorithm, SignatureMethod, XMLSigner, methods

from registry.config import Settings
from registry.ledger import Ledger
from tests.conftest import TEST_ORIGIN
from tests.helpers import (
    BODY_KEY,
    DCC_SCHEMAS,
    LUTAML,
    SIEMENS,
    body_add,
    envelope_bytes,
    grant,
    key_from,
    require_shared,
    shared_bytes,
)
from verifier import dcc_signature
from verifier.dcc_signature import DocumentSignatureError
from verifier.entry import format_time
from verifier.errors import QILedgerError

# Every test here reads the shared example DCCs (skipped without the shared folder).
pytestmark = pytest.mark.shared
# A fixed "now": the lutaml test certificates are valid 2026-01-06 .. 2027-01-06.
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


@functools.cache
def lutaml_ca() -> list[Any]:
    require_shared()
    return dcc_signature.load_trust_store(LUTAML / "certs")


@functools.cache
def siemens_ca() -> list[Any]:
    require_shared()
    return dcc_signature.load_trust_store(SIEMENS / "trusted_certs")


EXPECTED = {
    # file: (anchors, None if accepted else words of the refusal)
    LUTAML / "valid_signature.xml": (lutaml_ca, None),
    LUTAML / "invalid_signature.xml": (lutaml_ca, "Digest mismatch"),
    SIEMENS / "dcc_gp_temperature_typical_v12_v3.2.0_signed.xml": (siemens_ca, None),
    SIEMENS / "dcc_gp_temperature_typical_v12_v3.2.0_signed_lt.xml": (siemens_ca, None),
    SIEMENS / "dcc_gp_temperature_typical_v12_v3.2.0_signed_lt_revoked.xml": (
        siemens_ca,
        "was revoked at 2023-06-15T10:58:20+00:00, before the signing time",
    ),
    SIEMENS / "dcc_gp_temperature_typical_v12_v3.2.0_signed_manipulated.xml": (
        siemens_ca,
        "Digest mismatch",
    ),
}


@pytest.mark.parametrize("path", sorted(EXPECTED), ids=lambda p: p.name)
def test_each_signed_example_gives_its_verdict(path: Path) -> None:
    trust_store, refusal = EXPECTED[path]
    anchors = trust_store()
    data = path.read_bytes()
    assert dcc_signature.has_signature(data)
    if refusal is None:
        result = dcc_signature.verify_document_signature(data, anchors, now=NOW)
        assert result.kind == ("xades" if "siemens" in str(path) else "xmldsig")
        if result.kind == "xades":
            assert result.signing_time is not None
            assert result.checked_at == result.signing_time  # evaluated when it signed
        if path.name.endswith("_lt.xml"):
            assert result.revocation_checked
    else:
        with pytest.raises(DocumentSignatureError, match=re.escape(refusal)):
            dcc_signature.verify_document_signature(data, anchors, now=NOW)


@pytest.mark.parametrize("path", sorted(EXPECTED), ids=lambda p: p.name)
def test_a_foreign_trust_store_refuses_every_signature(path: Path) -> None:
    anchors = siemens_ca() if "lutaml" in str(path) else lutaml_ca()
    with pytest.raises(DocumentSignatureError):
        dcc_signature.verify_document_signature(path.read_bytes(), anchors, now=NOW)


def test_xmldsig_is_evaluated_at_now() -> None:
    data = (LUTAML / "valid_signature.xml").read_bytes()
    later = datetime(2027, 6, 1, tzinfo=UTC)  # after the test certificate expired
    with pytest.raises(DocumentSignatureError):
        dcc_signature.verify_document_signature(data, lutaml_ca(), now=later)


@pytest.mark.parametrize(
    "make",
    [
        lambda: b"",
        lambda: b"not xml",
        lambda: b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>',
        lambda: shared_bytes(LUTAML / "valid.xml"),  # no signature at all
        lambda: shared_bytes(LUTAML / "valid_signature.xml")[:5000],  # truncated
        lambda: shared_bytes(LUTAML / "valid_signature.xml").replace(
            b"<ds:X509Certificate>", b"<ds:X509Certificate>!!"
        ),
    ],
    ids=["empty", "not-xml", "doctype", "unsigned", "truncated", "bad-certificate"],
)
def test_hostile_signed_input_gives_our_errors(make: Callable[[], bytes]) -> None:
    with pytest.raises(QILedgerError):
        dcc_signature.verify_document_signature(make(), lutaml_ca(), now=NOW)


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    store = tmp_path / "trust"
    store.mkdir()
    shutil.copy(LUTAML / "certs" / "ca.pem", store / "lutaml-ca.pem")
    for name in ("root.crt", "sub.crt"):
        shutil.copy(SIEMENS / "trusted_certs" / name, store / f"siemens-{name}")
    settings = Settings(data_dir=tmp_path / "d", dcc_schemas=DCC_SCHEMAS, dcc_trust_store=store)
    ledger = Ledger.init(settings, origin=TEST_ORIGIN, passphrase=None, clock=lambda: NOW)
    # Signed at the ledger's fixed clock (the helpers sign at the real time).
    at = {"signed_at": format_time(NOW)}
    ledger.sequencer.submit(envelope_bytes({**body_add(), **at}, ledger.load_log_key().key))
    ledger.sequencer.submit(envelope_bytes({**grant("LAB-1", [key_from("lab")]), **at}, BODY_KEY))
    return ledger


def test_registry_records_good_signatures_and_refuses_bad_ones(ledger: Ledger) -> None:
    lab = key_from("lab")
    accepted = ledger.issue_certificate(
        (SIEMENS / "dcc_gp_temperature_typical_v12_v3.2.0_signed_lt.xml").read_bytes(), "LAB-1", lab
    )
    cert = ledger.trust_state().certificate("LAB-1/GP_DCC_temperature_typical_1.2")
    assert cert.events[0].index == accepted.index
    derived = ledger.documents.statement(
        (SIEMENS / "dcc_gp_temperature_typical_v12_v3.2.0_signed_lt.xml").read_bytes(), "LAB-1", NOW
    ).fields
    signature = derived["fields"]["document_signature"]
    assert signature["checked"] is True
    assert signature["kind"] == "xades"
    assert signature["signing_time"].startswith("2023-06-20T12:12:42")
    size = ledger.latest_checkpoint().size
    for bad, code in [
        ("dcc_gp_temperature_typical_v12_v3.2.0_signed_lt_revoked.xml", "revoked"),
        ("dcc_gp_temperature_typical_v12_v3.2.0_signed_manipulated.xml", "Digest mismatch"),
    ]:
        with pytest.raises(DocumentSignatureError, match=code):
            ledger.issue_certificate((SIEMENS / bad).read_bytes(), "LAB-1", lab)
    with pytest.raises(DocumentSignatureError, match="Digest mismatch"):
        ledger.issue_certificate((LUTAML / "invalid_signature.xml").read_bytes(), "LAB-1", lab)
    assert ledger.latest_checkpoint().size == size
    with ledger.db.read() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM documents").scalar() == 1
    ledger.close()


def reader(tmp_path: Path, store: Path | None = None) -> Any:
    from registry.documents.intake import DocumentReader

    settings = replace(Settings(data_dir=tmp_path / "d"), dcc_schemas=DCC_SCHEMAS)
    return DocumentReader(replace(settings, dcc_trust_store=store))


@pytest.mark.parametrize("path", sorted(EXPECTED), ids=lambda p: p.name)
def test_without_a_trust_store_a_signature_is_checked_but_untrusted(
    path: Path, tmp_path: Path
) -> None:
    """No trust store: the same verdicts (the tampered and the revoked refused),
    under the certificate the signature embeds; the log says it is not trusted."""
    refusal = EXPECTED[path][1]
    data = path.read_bytes()
    if refusal is not None:
        with pytest.raises(DocumentSignatureError, match=re.escape(refusal)):
            dcc_signature.verify_document_signature(data, [], now=NOW)
        with pytest.raises(DocumentSignatureError, match=re.escape(refusal)):
            reader(tmp_path).statement(data, "LAB-1", NOW)
        return
    result = dcc_signature.verify_document_signature(data, [], now=NOW)
    assert result.signer_trusted is False
    trusted = dcc_signature.verify_document_signature(data, EXPECTED[path][0](), now=NOW)
    assert trusted.signer_trusted is True
    assert result.signer_fingerprint_sha256 == trusted.signer_fingerprint_sha256
    recorded = reader(tmp_path).statement(data, "LAB-1", NOW).fields["fields"]
    expected = {
        "present": True,
        "checked": True,
        "kind": result.kind,
        "signer_sha256": result.signer_fingerprint_sha256,
        "signer_trusted": False,
    }
    if result.signing_time is not None:
        expected["signing_time"] = result.signing_time.isoformat()
    assert recorded["document_signature"] == expected


def test_with_a_trust_store_the_signer_is_recorded_as_trusted(ledger: Ledger) -> None:
    data = (LUTAML / "valid_signature.xml").read_bytes()
    recorded = ledger.documents.statement(data, "LAB-1", NOW).fields["fields"]
    assert recorded["document_signature"]["signer_trusted"] is True
    assert recorded["document_signature"]["kind"] == "xmldsig"
    ledger.close()


# --- a DCC signed here, with a certificate no trust store knows ---------------------


def self_signed(now: datetime, *, days: int = 30) -> tuple[Any, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test Laboratory Signer")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


def signed_here(now: datetime) -> tuple[bytes, x509.Certificate]:
    """The lutaml valid.xml (DCC 3.3.0) with an enveloped XMLDSig made now."""
    key, cert = self_signed(now)
    root = etree.fromstring(shared_bytes(LUTAML / "valid.xml"))
    signed = XMLSigner(
        method=methods.enveloped,
        signature_algorithm=SignatureMethod.ECDSA_SHA256,
        digest_algorithm=DigestAlgorithm.SHA256,
    ).sign(root, key=key, cert=[cert])
    return etree.tostring(signed, xml_declaration=True, encoding="UTF-8"), cert


def test_a_dcc_signed_with_an_unknown_certificate(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    data, cert = signed_here(now)
    fingerprint = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    # Checked without a trust store: the signature holds, the signer is not trusted.
    recorded = reader(tmp_path).statement(data, "LAB-1", now).fields["fields"]
    assert recorded["document_signature"] == {
        "present": True,
        "checked": True,
        "kind": "xmldsig",
        "signer_sha256": fingerprint,
        "signer_trusted": False,
    }
    # A trust store that does not hold its issuer refuses it.
    store = tmp_path / "store"
    store.mkdir()
    shutil.copy(LUTAML / "certs" / "ca.pem", store / "ca.pem")
    with pytest.raises(DocumentSignatureError):
        reader(tmp_path, store).statement(data, "LAB-1", now)
    # After its certificate expired, the signature is refused (XMLDSig: checked at now).
    with pytest.raises(DocumentSignatureError, match="expired"):
        dcc_signature.verify_document_signature(data, [], now=now + timedelta(days=60))


@functools.cache
def signed_once() -> bytes:
    """valid.xml signed here, once per test process."""
    return signed_here(datetime.now(UTC))[0]


def text_starts() -> list[int]:
    return [m.start(1) for m in re.finditer(rb">([0-9][^<]*)<", signed_once())]


@settings(max_examples=30)
@given(
    position=st.deferred(lambda: st.sampled_from(text_starts())),
    digit=st.sampled_from(b"0123456789"),
)
def test_any_changed_value_is_refused_without_a_trust_store(
    position: int, digit: int, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Every text starting with a digit (measured values, dates, the signature's
    base64 values): changing its first character is refused by a registry with
    no trust store, which registers the document as it was signed."""
    signed = signed_once()
    if signed[position] == digit:
        digit = ord("1") if digit != ord("1") else ord("2")
    tampered = signed[:position] + bytes([digit]) + signed[position + 1 :]
    documents = reader(tmp_path_factory.mktemp("r"))
    now = datetime.now(UTC)
    assert documents.statement(signed, "LAB-1", now).fields["fields"]["document_signature"]
    with pytest.raises(QILedgerError) as caught:
        documents.statement(tampered, "LAB-1", now)
    assert caught.value.code in ("document_signature_invalid", "schema_invalid", "malformed")


def test_a_signature_value_that_does_not_verify_is_refused() -> None:
    data = (LUTAML / "valid_signature.xml").read_bytes()
    value = re.search(rb"<ds:SignatureValue>([^<]+)</ds:SignatureValue>", data)
    assert value is not None
    raw = bytearray(base64.b64decode(value.group(1)))
    raw[10] ^= 0x01
    forged = data.replace(value.group(1), base64.b64encode(bytes(raw)))
    for anchors in ([], lutaml_ca()):
        with pytest.raises(DocumentSignatureError, match="does not verify"):
            dcc_signature.verify_document_signature(forged, anchors, now=NOW)


def test_a_signature_without_an_embedded_certificate_is_refused() -> None:
    data = (LUTAML / "valid_signature.xml").read_bytes()
    stripped = re.sub(rb"<ds:X509Data>.*?</ds:X509Data>", b"", data, flags=re.DOTALL)
    assert stripped != data
    with pytest.raises(DocumentSignatureError, match="embeds no signer certificate"):
        dcc_signature.verify_document_signature(stripped, [], now=NOW)
