"""Certificates: DCCs and certification certificates registered with their
documents, their lifecycle, and every bad document refused with nothing stored."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from registry.config import Settings
from registry.documents.intake import DocumentReader
from registry.ledger import Ledger
from registry.sequencer import Accepted, Refused
from tests.conftest import TEST_ORIGIN
from tests.helpers import (
    BODY_KEY,
    DCC_EXAMPLES,
    DCC_SCHEMAS,
    LUTAML,
    body_add,
    certification_fields,
    envelope_bytes,
    grant,
    key_from,
)
from verifier import entry, statement, trust
from verifier.errors import QILedgerError, TrustError
from verifier.keys import SigningKey

LAB, CB = key_from("lab-1"), key_from("cb-1")


certification = certification_fields


def as_bytes(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, indent=2, ensure_ascii=False).encode()


@pytest.fixture
def ledger(settings: Settings) -> Iterator[Ledger]:
    ledger = Ledger.init(
        replace(settings, dcc_schemas=DCC_SCHEMAS), origin=TEST_ORIGIN, passphrase=None
    )
    log_key = ledger.load_log_key().key
    ledger.sequencer.submit(envelope_bytes(body_add(), log_key))
    ledger.sequencer.submit(envelope_bytes(grant("LAB-1", [LAB]), BODY_KEY))
    ledger.sequencer.submit(
        envelope_bytes(
            grant("CB-1", [CB], kind="certification_body", covers=("management_system",)), BODY_KEY
        )
    )
    yield ledger
    ledger.close()


def state_of(ledger: Ledger) -> tuple[int, int]:
    with ledger.db.read() as conn:
        docs = conn.exec_driver_sql("SELECT count(*) FROM documents").scalar()
    return ledger.latest_checkpoint().size, int(docs or 0)


def refused(
    ledger: Ledger, document: bytes, key: SigningKey = LAB, issuer: str = "LAB-1"
) -> QILedgerError:
    before = state_of(ledger)
    with pytest.raises(QILedgerError) as caught:
        ledger.issue_certificate(document, issuer, key)
    assert state_of(ledger) == before, "a refused document changed the log or the store"
    return caught.value


@pytest.mark.shared
@pytest.mark.parametrize(
    "name",
    [
        "lutaml-dcc/valid.xml",
        "siemens-pydcc/dcc_gp_humidity_v1.0.xml",
        "siemens-pydcc/dcc_gp_temperature_typical_v12.xml",
    ],
)
def test_valid_unsigned_examples_are_registered(ledger: Ledger, name: str) -> None:
    data = (DCC_EXAMPLES / name).read_bytes()
    accepted = ledger.issue_certificate(data, "LAB-1", LAB)
    logged = entry.parse(ledger.storage.entry(accepted.index).data)
    stmt = json.loads(logged.envelope.payload)
    assert stmt["kind"] == "dcc"
    assert stmt["schema_validated"] is True
    assert stmt["certificate_id"].startswith("LAB-1/")
    # Nothing about the customer, the items or the results reaches the log.
    for private in (b"customer", b"Kunde", b"measurementResult", b"item"):
        assert private not in json.dumps(stmt).encode()
    assert ledger.storage.document(stmt["document_sha256"]).data == data


@pytest.mark.shared
def test_invalid_schema_example_is_refused(ledger: Ledger) -> None:
    error = refused(ledger, (LUTAML / "invalid_schema.xml").read_bytes())
    assert error.code == "schema_invalid"
    assert "3.3.0 schema" in error.message


@pytest.mark.shared
def test_without_schemas_dccs_are_marked_unvalidated_or_refused(tmp_path: Path) -> None:
    plain = Settings(data_dir=tmp_path / "d")
    data = (LUTAML / "invalid_schema.xml").read_bytes()
    fields = (
        DocumentReader(plain)
        .statement((LUTAML / "valid.xml").read_bytes(), "LAB-1", datetime.now(UTC))
        .fields
    )
    assert fields["schema_validated"] is False
    # invalid_schema.xml still parses strictly without schemas (its uniqueIdentifier is empty).
    with pytest.raises(QILedgerError, match="uniqueIdentifier"):
        DocumentReader(plain).statement(data, "LAB-1", datetime.now(UTC))
    strict = replace(plain, require_schema=True)
    with pytest.raises(QILedgerError) as caught:
        DocumentReader(strict).statement(
            (LUTAML / "valid.xml").read_bytes(), "LAB-1", datetime.now(UTC)
        )
    assert caught.value.code == "schema_unavailable"


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>
<dcc:digitalCalibrationCertificate xmlns:dcc="https://ptb.de/dcc">&lol3;</dcc:digitalCalibrationCertificate>"""
XXE = b"""<?xml version="1.0"?><!DOCTYPE d [<!ENTITY x SYSTEM "file:///etc/passwd">]>
<dcc:digitalCalibrationCertificate xmlns:dcc="https://ptb.de/dcc" schemaVersion="3.3.0">&x;
</dcc:digitalCalibrationCertificate>"""


# The ledger holds the shared DCC schemas and loads them before it reads any XML.
@pytest.mark.parametrize(
    ("document", "code", "words"),
    [
        pytest.param(BILLION_LAUGHS, "malformed", "DOCTYPE", marks=pytest.mark.shared),
        pytest.param(XXE, "malformed", "DOCTYPE", marks=pytest.mark.shared),
        pytest.param(
            b'<?xml version="1.0"?><!DOCTYPE x SYSTEM "http://example.invalid/x.dtd"><x/>',
            "malformed",
            "DOCTYPE",
            marks=pytest.mark.shared,
        ),
        (b"\x00\x01binary", "malformed", "neither a DCC"),
        pytest.param(
            b"<dcc:digitalCalibrationCertificate xmlns:dcc='https://ptb.de/dcc'",
            "malformed",
            "not well-formed",
            marks=pytest.mark.shared,
        ),
        pytest.param(
            b"<other xmlns='urn:x' schemaVersion='3.3.0'/>",
            "malformed",
            "not a DCC",
            marks=pytest.mark.shared,
        ),
        pytest.param(
            b"<dcc:digitalCalibrationCertificate xmlns:dcc='https://ptb.de/dcc' "
            b"schemaVersion='9.9.9'/>",
            "malformed",
            "unsupported DCC schemaVersion",
            marks=pytest.mark.shared,
        ),
        (b"{not json", "malformed", "invalid JSON"),
        (as_bytes(certification(scope="")), "schema_invalid", "scope"),
        (as_bytes(certification(extra="x")), "schema_invalid", "Additional properties"),
        (as_bytes(certification(expiry_date="2019-01-01")), "schema_invalid", "expiry_date"),
        (as_bytes(certification(issue_date="2026-02-30")), "schema_invalid", "issue_date"),
        (as_bytes(certification(status="Suspended")), "document_mismatch", "Active"),
        (
            as_bytes(certification(certification_body={"id": "CB-9", "name": "Other"})),
            "document_mismatch",
            "names certification body CB-9",
        ),
    ],
)
def test_hostile_documents_are_refused(
    ledger: Ledger, document: bytes, code: str, words: str
) -> None:
    error = refused(ledger, document, CB, "CB-1")
    assert error.code == code
    assert words in error.message


def test_document_over_the_size_limit(ledger: Ledger) -> None:
    huge = b"<x>" + b" " * (20 * 1024 * 1024) + b"</x>"
    error = refused(ledger, huge)
    assert error.code == "document_too_large"


def test_certification_certificate_lifecycle(ledger: Ledger) -> None:
    data = as_bytes(certification())
    accepted = ledger.issue_certificate(data, "CB-1", CB)
    state = ledger.trust_state()
    cert = state.certificate("CB-1/QMS-1")
    assert (cert.kind, str(cert.valid_until)) == ("management_system", "2028-12-31")
    now = datetime.now(UTC)
    assert trust.certificate_status(state, "CB-1/QMS-1", now).status == "active"
    later = datetime(2029, 1, 1, tzinfo=UTC)
    assert trust.certificate_status(state, "CB-1/QMS-1", later).status == "expired"
    for action, expected in [
        ("suspend", "suspended"),
        ("reinstate", "active"),
        ("suspend", "suspended"),
        ("withdraw", "withdrawn"),
    ]:
        ledger.submit_statement(
            statement.CERTIFICATE_CHANGES[action](
                issuer_id="CB-1",
                certificate_id="CB-1/QMS-1",
                reason=action,
            ),
            CB,
        )
        status = trust.certificate_status(
            ledger.trust_state(), "CB-1/QMS-1", datetime.now(UTC) + timedelta(seconds=1)
        )
        assert status.status == expected
    with pytest.raises(QILedgerError, match="cannot suspend a withdrawn certificate"):
        ledger.submit_statement(
            statement.CertificateSuspend(
                issuer_id="CB-1",
                certificate_id="CB-1/QMS-1",
                reason="again",
            ),
            CB,
        )
    assert ledger.storage.document(cert.document_sha256).data == data
    assert accepted.index == 3


# A certification certificate as its issuer prints it. The registry never parses
# a PDF (only its first bytes say what it is); the fields come from its record.
PDF = (
    b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n"
    b"1 0 obj <</Type /Catalog /Pages 2 0 R>> endobj\n"
    b"2 0 obj <</Type /Pages /Kids [] /Count 0>> endobj\n"
    b"trailer <</Root 1 0 R>>\n%%EOF\n"
)


def test_a_pdf_certificate_is_registered_from_its_record(ledger: Ledger) -> None:
    record = as_bytes(certification())
    accepted = ledger.issue_certificate(PDF, "CB-1", CB, record=record)
    logged = entry.parse(ledger.storage.entry(accepted.index).data)
    fields = json.loads(logged.envelope.payload)
    assert fields["document_sha256"] == hashlib.sha256(PDF).hexdigest()
    assert fields["certificate_id"] == "CB-1/QMS-1"
    assert fields["fields"]["standard"] == "ISO 9001:2015"
    stored = ledger.storage.document(fields["document_sha256"])
    assert (stored.data, stored.media_type) == (PDF, "application/pdf")
    logged_at = entry.parse_time(logged.logged_at)
    status = trust.certificate_status(ledger.trust_state(), "CB-1/QMS-1", logged_at)
    assert status.status == "active"
    again = ledger.issue_certificate(PDF, "CB-1", CB, record=record)
    assert (again.index, again.duplicate) == (accepted.index, True)
    # The same record as JSON is another document: its id is taken.
    assert refused(ledger, record, CB, "CB-1").code == "certificate_exists"


@pytest.mark.parametrize(
    ("document", "record", "code"),
    [
        (PDF, None, "record_invalid"),
        (as_bytes(certification()), as_bytes(certification()), "record_invalid"),
        pytest.param(
            LUTAML / "valid.xml",
            as_bytes(certification()),
            "record_invalid",
            marks=pytest.mark.shared,
        ),
        (PDF, b"%PDF-1.7 not a record", "malformed"),
        (PDF, as_bytes(certification(status="Suspended")), "document_mismatch"),
        (PDF, as_bytes(certification(scheme="unknown")), "schema_invalid"),
        (
            PDF,
            as_bytes(certification(certification_body={"id": "CB-2", "name": "Other"})),
            "document_mismatch",
        ),
        (PDF, b" " * (1024 * 1024) + as_bytes(certification()), "document_too_large"),
        (b"%PDF" + b"-" * 30_000_000, as_bytes(certification()), "document_too_large"),
    ],
    ids=[
        "pdf-without-record",
        "json-with-record",
        "dcc-with-record",
        "record-not-json",
        "record-not-active",
        "record-off-schema",
        "record-of-another-body",
        "record-too-large",
        "pdf-too-large",
    ],
)
def test_pdf_and_record_refusals(
    ledger: Ledger, document: bytes | Path, record: bytes | None, code: str
) -> None:
    if isinstance(document, Path):  # a shared example, read only when it runs
        document = document.read_bytes()
    before = state_of(ledger)
    with pytest.raises(QILedgerError) as caught:
        ledger.issue_certificate(document, "CB-1", CB, record=record)
    assert caught.value.code == code, caught.value.message
    assert state_of(ledger) == before


def test_a_pdf_statement_must_match_both_pdf_and_record(ledger: Ledger) -> None:
    record = as_bytes(certification())
    fields = ledger.documents.statement(PDF, "CB-1", datetime.now(UTC), record).fields
    envelope = envelope_bytes({"signed_at": entry.format_time(datetime.now(UTC)), **fields}, CB)
    before = state_of(ledger)
    for document, other_record, differing in (
        (PDF + b"%%EOF\n", record, "document_sha256"),
        (PDF, as_bytes(certification(scope="Something else")), "fields"),
    ):
        with pytest.raises(QILedgerError) as caught:
            ledger.submit_certificate(envelope, document, other_record)
        assert caught.value.code == "document_mismatch"
        assert differing in caught.value.message
    assert state_of(ledger) == before
    assert ledger.submit_certificate(envelope, PDF, record).duplicate is False


def test_reusing_a_certificate_id_for_another_document(ledger: Ledger) -> None:
    ledger.issue_certificate(as_bytes(certification()), "CB-1", CB)
    error = refused(ledger, as_bytes(certification(scope="Something else")), CB, "CB-1")
    assert error.code == "certificate_exists"
    assert "needs certificate.amend" in error.message


@pytest.mark.parametrize(
    ("key", "code"),
    [(key_from("stranger"), "key_not_issuer"), (LAB, "key_of_other_issuer")],
)
def test_re_registration_is_answered_only_to_the_issuers_key(
    ledger: Ledger, key: SigningKey, code: str
) -> None:
    data = as_bytes(certification())
    first = ledger.issue_certificate(data, "CB-1", CB)
    again = ledger.issue_certificate(data, "CB-1", CB)  # re-signed by the issuer: same entry
    assert (again.index, again.duplicate) == (first.index, True)
    before = state_of(ledger)
    with pytest.raises(QILedgerError) as caught:
        ledger.issue_certificate(data, "CB-1", key)
    assert caught.value.code == code
    assert state_of(ledger) == before


def test_a_lost_race_for_the_same_document_is_answered_with_the_winners_entry(
    ledger: Ledger,
) -> None:
    """Two uploads of one document, both checked before either is logged: the
    sequencer refuses the second as ``certificate_exists``; its caller is answered
    with the first's entry, as if it had come second (what a retrying client or a
    second server process expects)."""
    data = as_bytes(certification())
    moment = datetime.now(UTC)
    fields = ledger.documents.statement(data, "CB-1", moment).fields

    def signed_at(at: datetime) -> bytes:
        return envelope_bytes({"signed_at": entry.format_time(at), **fields}, CB)

    winner, loser = signed_at(moment), signed_at(moment - timedelta(seconds=1))
    late = ledger.check_certificate(loser, data)
    assert ledger.registered_certificate(late) is None  # not yet: the race is open
    won = ledger.submit_certificate(winner, data)
    (outcome,) = ledger.sequencer.submit_many([loser], {0: late.document})
    assert isinstance(outcome, Refused)
    assert outcome.error.code == "certificate_exists"
    before = state_of(ledger)
    answer = ledger.settle_certificate(late, outcome)
    assert (answer.index, answer.leaf_hash, answer.duplicate) == (won.index, won.leaf_hash, True)
    assert state_of(ledger) == before

    # Another document under the id, or another refusal, is still the refusal.
    other = as_bytes(certification(scope="Something else"))
    other_fields = ledger.documents.statement(other, "CB-1", moment).fields
    stranger = envelope_bytes({"signed_at": entry.format_time(moment), **other_fields}, CB)
    stranger_submission = ledger.check_certificate(stranger, other)
    (refusal,) = ledger.sequencer.submit_many([stranger], {0: stranger_submission.document})
    assert isinstance(refusal, Refused)
    with pytest.raises(QILedgerError) as caught:
        ledger.settle_certificate(stranger_submission, refusal)
    assert caught.value is refusal.error


@pytest.mark.shared
def test_status_change_for_a_certificate_the_issuer_does_not_own(ledger: Ledger) -> None:
    ledger.issue_certificate((LUTAML / "valid.xml").read_bytes(), "LAB-1", LAB)
    before = state_of(ledger)
    with pytest.raises(QILedgerError) as caught:
        ledger.submit_statement(
            statement.CertificateSuspend(
                issuer_id="LAB-1",
                certificate_id="LAB-1/1234",
                reason="x",
            ),
            CB,
        )
    assert caught.value.code == "key_of_other_issuer"
    with pytest.raises(QILedgerError) as caught:
        ledger.submit_statement(
            statement.CertificateSuspend(
                issuer_id="CB-1",
                certificate_id="CB-1/1234",
                reason="x",
            ),
            CB,
        )
    assert caught.value.code == "certificate_unknown"
    assert state_of(ledger) == before


def test_statement_must_match_its_document(ledger: Ledger) -> None:
    data = as_bytes(certification())
    derived = ledger.documents.statement(data, "CB-1", datetime.now(UTC)).fields
    sneaky = {
        **derived,
        "signed_at": "2026-11-24T00:00:00Z",
        "fields": {**derived["fields"], "customer_secret": "x"},
    }
    with pytest.raises(QILedgerError) as caught:
        ledger.submit_certificate(envelope_bytes(sneaky, CB), data)
    assert caught.value.code == "document_mismatch"
    other = as_bytes(certification(scope="Another scope"))
    with pytest.raises(QILedgerError) as caught:
        ledger.submit_certificate(
            envelope_bytes({**derived, "signed_at": "2026-11-24T00:00:00Z"}, CB), other
        )
    assert caught.value.code == "document_mismatch"
    assert state_of(ledger) == (3, 0)


def test_certificate_statements_need_their_document(ledger: Ledger) -> None:
    derived = ledger.documents.statement(
        as_bytes(certification()), "CB-1", datetime.now(UTC)
    ).fields
    env = envelope_bytes({**derived, "signed_at": "2026-11-24T00:00:00Z"}, CB)
    (outcome,) = ledger.submit_envelopes([env])
    assert outcome.error.code == "document_required"


# Each op names a certificate by number: "issue" registers the next number (the
# target is ignored); a status change may name one not (yet) issued.
OPS = st.lists(
    st.tuples(
        st.sampled_from(["issue", "suspend", "reinstate", "withdraw"]),
        st.integers(min_value=1, max_value=4),
    ),
    max_size=12,
)

# The lifecycle as specified, written out independently of verifier.trust: the
# statuses a status change may start from, and the status it leads to.
MODEL_TRANSITIONS = {
    "suspend": ({"active"}, "suspended"),
    "reinstate": ({"suspended"}, "active"),
    "withdraw": ({"active", "suspended"}, "withdrawn"),
}


def model_outcome(model: dict[str, str], op: str, cert_id: str) -> str | None:
    """The error code the op must be refused with, or None if it must be logged;
    updates ``model`` (certificate id -> status) for a logged op."""
    if op == "issue":
        model[cert_id] = "active"
        return None
    if cert_id not in model:
        return "certificate_unknown"
    sources, target = MODEL_TRANSITIONS[op]
    if model[cert_id] not in sources:
        return "transition_invalid"
    model[cert_id] = target
    return None


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=OPS)
def test_replayed_status_depends_only_on_the_log(
    tmp_path_factory: Any, ops: list[tuple[str, int]]
) -> None:
    """Every op is logged or refused exactly as the lifecycle model says, a refused op
    leaves no trace, the final statuses are the model's, and a fresh replay of the raw
    entries gives the live statuses at every moment."""
    settings_ = Settings(data_dir=tmp_path_factory.mktemp("prop"), dcc_schemas=DCC_SCHEMAS)
    ledger = Ledger.init(settings_, origin=TEST_ORIGIN, passphrase=None)
    ledger.sequencer.submit(envelope_bytes(body_add(), ledger.load_log_key().key))
    ledger.sequencer.submit(
        envelope_bytes(
            grant("CB-1", [CB], kind="certification_body", covers=("management_system",)), BODY_KEY
        )
    )
    try:
        _check_lifecycle(ledger, ops)
    finally:
        ledger.close()


def _apply(ledger: Ledger, op: str, number: int, step: int) -> Accepted:
    if op == "issue":
        # Valid far beyond the moments checked, so no status is "expired".
        document = as_bytes(certification(f"Q-{number}", expiry_date="2099-12-31"))
        return ledger.issue_certificate(document, "CB-1", CB)
    return ledger.submit_statement(
        statement.CERTIFICATE_CHANGES[op](
            issuer_id="CB-1",
            certificate_id=f"CB-1/Q-{number}",
            reason=f"{op} at step {step}",  # no two statements alike
        ),
        CB,
    )


def _check_lifecycle(ledger: Ledger, ops: list[tuple[str, int]]) -> None:
    model: dict[str, str] = {}
    issued = 0
    for step, (op, number) in enumerate(ops):
        if op == "issue":
            issued += 1
            number = issued
        cert_id = f"CB-1/Q-{number}"
        expected_error = model_outcome(model, op, cert_id)
        size_before = ledger.storage.tail_size()
        try:
            outcome: Accepted | TrustError = _apply(ledger, op, number, step)
        except TrustError as exc:
            outcome = exc
        if isinstance(outcome, TrustError):
            assert outcome.code == expected_error, f"step {step}: {op} {cert_id}: {outcome}"
            assert ledger.storage.tail_size() == size_before  # refused: nothing logged
        else:
            assert expected_error is None, f"step {step}: {op} {cert_id} was logged"
            assert not outcome.duplicate
            assert outcome.index == size_before
            assert ledger.storage.tail_size() == size_before + 1
    now = datetime.now(UTC)
    live = ledger.trust_state()
    entries = [(e.index, e.data) for e in ledger.storage.iter_entries()]
    replayed = trust.replay(ledger.identity.public_key, entries)
    assert set(replayed.certificates) == set(model)
    for cert_id, status in model.items():
        assert trust.certificate_status(live, cert_id, now).status == status
    moments = [datetime.now(UTC) + timedelta(days=d) for d in (0, 365 * 5)]
    moments += [datetime.fromisoformat(e.logged_at) for e in ledger.storage.iter_entries()]
    for cert_id in replayed.certificates:
        for at in moments:
            assert trust.certificate_status(replayed, cert_id, at) == trust.certificate_status(
                live, cert_id, at
            )
