"""Signed DCCs: every shared example gives the verdict SOURCES.md documents, with
the embedded XAdES revocation data honoured (signxml alone accepts `_revoked`)."""

from __future__ import annotations

import re
import shutil
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from registry.config import Settings
from registry.ledger import Ledger
from tests.conftest import TEST_ORIGIN
from tests.helpers import BODY_KEY, body_add, envelope_bytes, grant, key_from
from verifier import dcc_signature
from verifier.dcc_signature import DocumentSignatureError
from verifier.entry import format_time
from verifier.errors import QILedgerError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "dcc"
LUTAML = SHARED / "examples" / "lutaml-dcc"
SIEMENS = SHARED / "examples" / "siemens-pydcc"
# A fixed "now": the lutaml test certificates are valid 2026-01-06 .. 2027-01-06.
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
LUTAML_CA = dcc_signature.load_trust_store(LUTAML / "certs")
SIEMENS_CA = dcc_signature.load_trust_store(SIEMENS / "trusted_certs")

EXPECTED = {
    # file: (anchors, None if accepted else words of the refusal)
    LUTAML / "valid_signature.xml": (LUTAML_CA, None),
    LUTAML / "invalid_signature.xml": (LUTAML_CA, "Digest mismatch"),
    SIEMENS / "dcc_gp_temperature_typical_v12_v3.2.0_signed.xml": (SIEMENS_CA, None),
    SIEMENS / "dcc_gp_temperature_typical_v12_v3.2.0_signed_lt.xml": (SIEMENS_CA, None),
    SIEMENS / "dcc_gp_temperature_typical_v12_v3.2.0_signed_lt_revoked.xml": (
        SIEMENS_CA,
        "was revoked at 2023-06-15T10:58:20+00:00, before the signing time",
    ),
    SIEMENS / "dcc_gp_temperature_typical_v12_v3.2.0_signed_manipulated.xml": (
        SIEMENS_CA,
        "Digest mismatch",
    ),
}


@pytest.mark.parametrize("path", sorted(EXPECTED), ids=lambda p: p.name)
def test_each_signed_example_gives_its_verdict(path: Path) -> None:
    anchors, refusal = EXPECTED[path]
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
    anchors = SIEMENS_CA if "lutaml" in str(path) else LUTAML_CA
    with pytest.raises(DocumentSignatureError):
        dcc_signature.verify_document_signature(path.read_bytes(), anchors, now=NOW)


def test_xmldsig_is_evaluated_at_now() -> None:
    data = (LUTAML / "valid_signature.xml").read_bytes()
    later = datetime(2027, 6, 1, tzinfo=UTC)  # after the test certificate expired
    with pytest.raises(DocumentSignatureError):
        dcc_signature.verify_document_signature(data, LUTAML_CA, now=later)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not xml",
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>',
        (LUTAML / "valid.xml").read_bytes(),  # no signature at all
        (LUTAML / "valid_signature.xml").read_bytes()[:5000],  # truncated
        (LUTAML / "valid_signature.xml")
        .read_bytes()
        .replace(b"<ds:X509Certificate>", b"<ds:X509Certificate>!!"),
    ],
)
def test_hostile_signed_input_gives_our_errors(data: bytes) -> None:
    with pytest.raises(QILedgerError):
        dcc_signature.verify_document_signature(data, LUTAML_CA, now=NOW)


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    store = tmp_path / "trust"
    store.mkdir()
    shutil.copy(LUTAML / "certs" / "ca.pem", store / "lutaml-ca.pem")
    for name in ("root.crt", "sub.crt"):
        shutil.copy(SIEMENS / "trusted_certs" / name, store / f"siemens-{name}")
    settings = Settings(
        data_dir=tmp_path / "d", dcc_schemas=SHARED / "schemas" / "dcc", dcc_trust_store=store
    )
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
    cert = ledger.trust_state().certificates["LAB-1/GP_DCC_temperature_typical_1.2"]
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


def test_without_a_trust_store_a_signature_is_recorded_unchecked(tmp_path: Path) -> None:
    settings = replace(Settings(data_dir=tmp_path), dcc_schemas=SHARED / "schemas" / "dcc")
    from registry.certificates import DocumentReader

    fields = (
        DocumentReader(settings)
        .statement((LUTAML / "valid_signature.xml").read_bytes(), "LAB-1", NOW)
        .fields
    )
    assert fields["fields"]["document_signature"] == {"present": True, "checked": False}
