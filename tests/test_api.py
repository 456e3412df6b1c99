"""The HTTP API (``registry.api``): every route answers as documented, every
refusal carries its status and problem+json ``code`` and leaves the log, its
checkpoint and the document store exactly as they were, and concurrent
submissions share group commits whose receipts a client can verify."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import httpx
import jsonschema
import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from registry.api.app import create_app
from registry.api.limits import CERTIFICATE_REQUEST_LIMIT, OTHER_REQUEST_LIMIT
from registry.api.routes import (
    certificates,
    export,
    issuers,
    log,
    marks,
    schemas,
    statements,
    tiles,
    traceability,
)
from registry.api.service import RegistryService, ServiceOptions
from registry.config import Settings
from registry.demo import DEMO_DOCUMENTS
from registry.fsck import fsck
from registry.ledger import Ledger
from registry.sequencer import Accepted
from registry.storage.tokens import TokenStore
from tests.conftest import make_ledger
from tests.helpers import (
    BODY_KEY,
    DCC_SCHEMAS,
    LUTAML,
    SIEMENS,
    b64key,
    body_add,
    demo_dcc,
    grant,
    key_from,
    submit_with_documents,
)
from verifier import checkpoint, dsse, entry, jcs, mark, merkle, proof, statement
from verifier.encoding import b64decode, b64encode
from verifier.errors import SignatureError
from verifier.keys import SigningKey
from verifier.note import NoteVerifier

DEMO = DEMO_DOCUMENTS
DEMO_DCC = demo_dcc()
DEMO_DCC_ID = "LAB-1/DCC-2026-0001"
# The same certificate id, other bytes: a trailing comment keeps the XML valid.
DEMO_DCC_VARIANT = DEMO_DCC + b"<!-- a different document under the same id -->\n"
CUSTOMER = b"Demo Manufacturing Co., Ltd."  # in the DCC, never in public answers

CERTIFICATES = "/api/v1/certificates"
STATEMENTS = "/api/v1/statements"
PROBLEM_JSON = "application/problem+json"

LAB, LAB2, CB, THIEF = key_from("lab-1"), key_from("lab-2"), key_from("demo-cb"), key_from("thief")

ENTITY_EXPANSION = b"""<?xml version="1.0"?>
<!DOCTYPE d [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">
<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">]>
<dcc:digitalCalibrationCertificate xmlns:dcc="https://ptb.de/dcc" schemaVersion="3.3.0"
>&d;</dcc:digitalCalibrationCertificate>"""
EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE d [<!ENTITY e SYSTEM "file:///etc/hostname">]>
<dcc:digitalCalibrationCertificate xmlns:dcc="https://ptb.de/dcc" schemaVersion="3.3.0"
>&e;</dcc:digitalCalibrationCertificate>"""


# --- statements and envelopes ------------------------------------------------------


def now() -> datetime:
    return datetime.now(UTC)


def sign_payload(payload: bytes, key: SigningKey) -> bytes:
    """An envelope over any payload bytes (also ones the statement rules refuse)."""
    return jcs.canonical_bytes(dsse.sign(payload, key).to_json())


def signed_non_canonical(fields: dict[str, Any], key: SigningKey) -> bytes:
    """An envelope over ``fields`` stamped now, as valid but not canonical JSON."""
    stamped = {"signed_at": entry.format_time(now()), **fields}
    return sign_payload(json.dumps(stamped, indent=1).encode(), key)


def unsigned(fields: dict[str, Any]) -> dict[str, Any]:
    """``tests.helpers`` builders stamp one signing time per run; :func:`signed` stamps now."""
    return {k: v for k, v in fields.items() if k != "signed_at"}


def signed(fields: dict[str, Any], key: SigningKey, at: datetime | None = None) -> bytes:
    stamped = {"signed_at": entry.format_time(at or now()), **fields}
    return sign_payload(statement.encode(stamped), key)


def with_bad_signature(envelope: bytes) -> bytes:
    """A LAB-signed envelope with its signature replaced by LAB's signature of
    something else (right key id, wrong bytes)."""
    value = json.loads(envelope)
    value["signatures"][0]["sig"] = base64.b64encode(LAB.sign(b"something else")).decode()
    return jcs.canonical_bytes(value)


def status_change(action: str, certificate_id: str, issuer: str = "LAB-1") -> dict[str, Any]:
    return {
        "type": f"certificate.{action}",
        "issuer_id": issuer,
        "certificate_id": certificate_id,
        "reason": f"{action} requested by the test",
    }


def accreditation_event(action: str, issuer: str, body_id: str = "CNAS") -> dict[str, Any]:
    return {
        "type": f"accreditation.{action}",
        "body_id": body_id,
        "issuer_id": issuer,
        "accreditation_number": f"{body_id}-{issuer}",
        "reason": "surveillance audit",
    }


def key_add(issuer: str, new_key: SigningKey) -> dict[str, Any]:
    return {"type": "issuer.key.add", "issuer_id": issuer, "public_key": b64key(new_key)}


def certification(number: str) -> bytes:
    """The demo certification record under another certificate number."""
    doc = json.loads((DEMO / "demo-certification.json").read_bytes())
    doc["certificate_number"] = number
    return json.dumps(doc, indent=2).encode()


def bearer(token: str | None) -> dict[str, str]:
    return {} if token is None else {"Authorization": f"Bearer {token}"}


def upload(document: bytes | None, envelope: bytes | None, token: str | None) -> dict[str, Any]:
    """``client.post`` arguments for POST /api/v1/certificates (a part left out if None)."""
    files = {}
    if document is not None:
        files["document"] = ("document", document, "application/octet-stream")
    if envelope is not None:
        files["envelope"] = ("envelope.json", envelope, "application/json")
    return {"files": files, "headers": bearer(token)}


def b64hashes(values: list[str]) -> list[bytes]:
    return [b64decode(v, "proof hash") for v in values]


# --- the service under test --------------------------------------------------------


@dataclass(frozen=True)
class LogState:
    """What a refused request must not change."""

    size: int
    checkpoint: bytes
    documents: int


@dataclass
class Api:
    client: TestClient
    ledger: Ledger
    tokens: dict[tuple[str, str], str] = field(default_factory=dict)

    @property
    def service(self) -> RegistryService:
        app: Any = self.client.app
        service: RegistryService = app.state.service
        return service

    def token(self, role: str, subject: str = "") -> str:
        """One token per (role, subject), made on first use."""
        if (role, subject) not in self.tokens:
            self.tokens[role, subject] = TokenStore(self.ledger.db).create(role, subject)[0]
        return self.tokens[role, subject]

    def revoked_token(self, role: str, subject: str = "") -> str:
        store = TokenStore(self.ledger.db)
        token, holder = store.create(role, subject)
        store.revoke(holder.token_id)
        return token

    def envelope(
        self, document: bytes, issuer: str = "LAB-1", key: SigningKey = LAB, **changes: Any
    ) -> bytes:
        """The signed statement a document calls for (``changes`` tamper with it)."""
        fields = self.ledger.documents.statement(document, issuer, now()).fields
        return signed({**fields, **changes}, key)

    def register(
        self, document: bytes = DEMO_DCC, issuer: str = "LAB-1", key: SigningKey = LAB
    ) -> dict[str, Any]:
        response = self.client.post(
            CERTIFICATES,
            **upload(document, self.envelope(document, issuer, key), self.token("issuer", issuer)),
        )
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    def post_statement(self, envelope: bytes, token: str | None) -> httpx.Response:
        response: httpx.Response = self.client.post(
            STATEMENTS, content=envelope, headers=bearer(token)
        )
        return response

    def state(self) -> LogState:
        latest = self.ledger.latest_checkpoint()
        with self.ledger.db.read() as conn:
            documents = conn.exec_driver_sql("SELECT count(*) FROM documents").scalar()
        return LogState(latest.size, latest.note, int(documents or 0))

    def refused(self, send: Callable[[], httpx.Response], status: int, code: str) -> httpx.Response:
        """Send a request that must be refused with ``status``/``code`` and change nothing."""
        before = self.state()
        response = send()
        expect_problem(response, status, code)
        assert self.state() == before, f"refused request ({code}) changed the log or the store"
        return response

    def verify_receipt(self, receipt: dict[str, Any]) -> checkpoint.Checkpoint:
        """Check a receipt as a client would: the checkpoint's log signature, then the
        entry's inclusion under it (both as hash list and as C2SP tlog-proof)."""
        identity = self.ledger.identity
        cp = checkpoint.verify(receipt["checkpoint"].encode(), identity.verifier).checkpoint
        assert cp.size == receipt["tree_size"] > receipt["index"]
        logged = self.client.get(f"/api/v1/log/entries/{receipt['index']}").json()
        leaf_data = b64decode(logged["leaf_data"], "leaf data")
        leaf = merkle.leaf_hash(leaf_data)
        assert b64encode(leaf) == receipt["leaf_hash"] == logged["leaf_hash"]
        hashes = b64hashes(receipt["inclusion_proof"])
        merkle.verify_inclusion(leaf, receipt["index"], cp.size, hashes, cp.root)
        proof.verify(receipt["tlog_proof"].encode(), leaf_data, identity.verifier)
        return cp


def expect_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert (response.status_code, response.headers.get("content-type")) == (
        status,
        PROBLEM_JSON,
    ), response.text
    problem: dict[str, Any] = response.json()
    assert (problem["code"], problem["status"]) == (code, status), problem
    assert problem["type"] == f"urn:qiledger:error:{code}"
    assert problem["detail"]
    if status == 401:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    return problem


def no_server_error(response: httpx.Response) -> None:
    assert response.status_code < 500, f"{response.request.url}: {response.read()!r}"


@pytest.fixture
def open_api(settings: Settings, caplog: pytest.LogCaptureFixture) -> Iterator[Callable[..., Api]]:
    """Start a registry: a ledger (on each engine) where body CNAS accredits LAB-1
    and LAB-2 (DCCs) and DEMO-CB (management systems), served by ``create_app``.
    Afterwards no request may have failed inside the service, even one whose
    answer was replaced (e.g. by the body limit's 413)."""
    with ExitStack() as stack:

        def start(options: ServiceOptions | None = None, **setting_changes: Any) -> Api:
            ledger = make_ledger(replace(settings, **setting_changes), LAB)
            stack.callback(ledger.close)  # the app leaves its ledger open
            for grant_fields in (
                grant("LAB-2", [LAB2]),
                grant("DEMO-CB", [CB], kind="certification_body", covers=("management_system",)),
            ):
                ledger.sequencer.submit(signed(grant_fields, BODY_KEY))
            client = stack.enter_context(TestClient(create_app(ledger, options)))
            client.event_hooks["response"].append(no_server_error)
            return Api(client, ledger)

        with caplog.at_level(logging.ERROR, logger="qiledger.api"):
            yield start
    failures = [r.getMessage() for r in caplog.get_records("call") if r.name == "qiledger.api"]
    assert not failures, failures


@pytest.fixture
def api(open_api: Callable[..., Api]) -> Api:
    return open_api()


# --- POST /api/v1/certificates -----------------------------------------------------


def test_register_a_dcc_and_verify_the_receipt_and_mark(api: Api) -> None:
    before = api.state()
    envelope = api.envelope(DEMO_DCC)
    response = api.client.post(
        CERTIFICATES, **upload(DEMO_DCC, envelope, api.token("issuer", "LAB-1"))
    )
    assert response.status_code == 201, response.text
    receipt = response.json()
    assert receipt["certificate_id"] == DEMO_DCC_ID
    assert (receipt["index"], receipt["duplicate"]) == (before.size, False)
    cp = api.verify_receipt(receipt)
    assert cp.size == api.state().size == before.size + 1
    logged = entry.parse(api.ledger.storage.entry(receipt["index"]).data)
    assert logged.envelope.payload == dsse.parse(envelope).payload
    assert api.ledger.storage.document(hashlib.sha256(DEMO_DCC).hexdigest()).data == DEMO_DCC

    identity = api.ledger.identity
    claims = mark.verify(receipt["mark"], identity.verifier)
    assert (claims.certificate_id, claims.index) == (DEMO_DCC_ID, receipt["index"])
    assert claims.document_sha256 == hashlib.sha256(DEMO_DCC).digest()
    # No public URL configured: the mark points to the host the request was made to.
    assert receipt["mark_url"] == f"HTTP://TESTSERVER/M/{receipt['mark']}"
    with pytest.raises(SignatureError):  # only the log key vouches for a mark
        mark.verify(
            receipt["mark"], NoteVerifier(identity.origin, identity.verifier.key_id, LAB.public_key)
        )


def test_registering_the_same_document_again_answers_200_with_its_entry(api: Api) -> None:
    token = api.token("issuer", "LAB-1")
    original = api.envelope(DEMO_DCC)
    first = api.client.post(CERTIFICATES, **upload(DEMO_DCC, original, token)).json()
    after_first = api.state()
    # signed again a minute earlier: other envelope bytes for the same document
    resigned = api.envelope(DEMO_DCC, signed_at=entry.format_time(now() - timedelta(minutes=1)))
    assert resigned != original
    for envelope in (original, resigned):
        response = api.client.post(CERTIFICATES, **upload(DEMO_DCC, envelope, token))
        assert response.status_code == 200, response.text
        again = response.json()
        assert (again["index"], again["leaf_hash"], again["duplicate"]) == (
            first["index"],
            first["leaf_hash"],
            True,
        )
        api.verify_receipt(again)
        assert again["mark"] == first["mark"]  # one mark per certificate
        assert mark.verify(again["mark"], api.ledger.identity.verifier).index == first["index"]
    assert api.state() == after_first


def test_concurrent_uploads_of_one_document_both_get_its_entry(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two uploads of the same document (differently signed) that both pass the
    "already registered?" check before either is queued: one is logged (201),
    the other is answered with that entry (200), not refused."""
    token = api.token("issuer", "LAB-1")
    envelopes = [
        api.envelope(DEMO_DCC, signed_at=entry.format_time(now() - timedelta(seconds=n)))
        for n in (0, 1)
    ]
    both_checked = threading.Barrier(2, timeout=30)
    real_submit = api.service.queue.submit

    def submit_when_both_checked(*args: Any) -> Any:
        both_checked.wait()
        return real_submit(*args)

    monkeypatch.setattr(api.service.queue, "submit", submit_when_both_checked)
    before = api.state()
    with ThreadPoolExecutor(max_workers=2) as pool:
        responses = list(
            pool.map(
                lambda e: api.client.post(CERTIFICATES, **upload(DEMO_DCC, e, token)), envelopes
            )
        )
    assert sorted(r.status_code for r in responses) == [200, 201], [r.text for r in responses]
    receipts = [r.json() for r in responses]
    assert {r["index"] for r in receipts} == {before.size}
    assert sorted(r["duplicate"] for r in receipts) == [False, True]
    for receipt in receipts:
        api.verify_receipt(receipt)
    assert api.state().size == before.size + 1


def test_register_a_certification_certificate(api: Api) -> None:
    document = (DEMO / "demo-certification.json").read_bytes()
    receipt = api.register(document, "DEMO-CB", CB)
    assert receipt["certificate_id"] == "DEMO-CB/DEMO-QMS-2026-0042"
    api.verify_receipt(receipt)
    view = api.client.get(f"{CERTIFICATES}/DEMO-CB/DEMO-QMS-2026-0042").json()
    assert (view["kind"], view["status"], view["valid_until"]) == (
        "management_system",
        "Active",
        "2029-02-28",
    )
    document_view = api.client.get(
        "/api/v1/documents/DEMO-CB/DEMO-QMS-2026-0042",
        headers=bearer(api.token("auditor")),
    )
    assert document_view.headers["content-type"] == "application/vnd.qiledger.certification+json"
    assert document_view.content == document


PDF = b"%PDF-1.7\n1 0 obj <</Type /Catalog>> endobj\ntrailer <</Root 1 0 R>>\n%%EOF\n"


def test_register_a_pdf_certification_certificate_with_its_record(api: Api) -> None:
    record = certification("DEMO-QMS-PDF-1")
    fields = api.ledger.documents.statement(PDF, "DEMO-CB", now(), record).fields
    envelope = signed(fields, CB)
    token = api.token("issuer", "DEMO-CB")
    parts = upload(PDF, envelope, token)
    parts["files"]["record"] = ("record.json", record, "application/json")
    response = api.client.post(CERTIFICATES, **parts)
    assert response.status_code == 201, response.text
    receipt = response.json()
    assert receipt["certificate_id"] == "DEMO-CB/DEMO-QMS-PDF-1"
    api.verify_receipt(receipt)
    claims = mark.verify(receipt["mark"], api.ledger.identity.verifier)
    assert claims.document_sha256 == hashlib.sha256(PDF).digest()
    document = api.client.get("/api/v1/documents/DEMO-CB/DEMO-QMS-PDF-1", headers=bearer(token))
    assert (document.content, document.headers["content-type"]) == (PDF, "application/pdf")
    view = api.client.get(f"{CERTIFICATES}/DEMO-CB/DEMO-QMS-PDF-1").json()
    assert view["status"] == "Active"

    # Without its record, a PDF says nothing the registry could check.
    other = PDF.replace(b"1.7", b"1.6")
    other_envelope = signed({**fields, "document_sha256": hashlib.sha256(other).hexdigest()}, CB)
    api.refused(
        lambda: api.client.post(CERTIFICATES, **upload(other, other_envelope, token)),
        422,
        "record_invalid",
    )


def test_an_amended_dcc_supersedes_the_original(api: Api) -> None:
    original = api.register()
    amended = api.register(demo_dcc("demo-dcc-amended.xml"))
    assert amended["certificate_id"] == f"{DEMO_DCC_ID}-A1"
    assert amended["index"] == original["index"] + 1
    api.verify_receipt(amended)
    logged = entry.parse(api.ledger.storage.entry(amended["index"]).data)
    assert json.loads(logged.envelope.payload)["type"] == "certificate.amend"
    old = api.client.get(f"{CERTIFICATES}/{DEMO_DCC_ID}").json()
    assert (old["status"], old["superseded_by"]) == ("Superseded", f"{DEMO_DCC_ID}-A1")
    assert api.client.get(f"{CERTIFICATES}/{DEMO_DCC_ID}-A1").json()["status"] == "Active"


def reuse_of_a_certificate_id(api: Api) -> dict[str, Any]:
    api.register()
    variant = api.envelope(DEMO_DCC_VARIANT)
    return upload(DEMO_DCC_VARIANT, variant, api.token("issuer", "LAB-1"))


def issue_while_suspended(api: Api) -> dict[str, Any]:
    suspend = signed(accreditation_event("suspend", "LAB-2"), BODY_KEY)
    assert api.post_statement(suspend, api.token("body", "CNAS")).status_code == 201
    return upload(DEMO_DCC, api.envelope(DEMO_DCC, "LAB-2", LAB2), api.token("issuer", "LAB-2"))


# Each case: (prepare the POST arguments, status, code). ``prepare`` may register
# something first; the "nothing changed" check starts after it.
Prepare = Callable[[Api], dict[str, Any]]
CERTIFICATE_REFUSALS: dict[str, tuple[Prepare, int, str]] = {
    "no token": (lambda a: upload(DEMO_DCC, a.envelope(DEMO_DCC), None), 401, "token_missing"),
    "not a token": (
        lambda a: upload(DEMO_DCC, a.envelope(DEMO_DCC), "let-me-in"),
        401,
        "token_invalid",
    ),
    "token this registry never issued": (
        lambda a: upload(DEMO_DCC, a.envelope(DEMO_DCC), f"qil_{'0' * 16}_{'A' * 43}"),
        401,
        "token_invalid",
    ),
    "revoked token": (
        lambda a: upload(DEMO_DCC, a.envelope(DEMO_DCC), a.revoked_token("issuer", "LAB-1")),
        401,
        "token_invalid",
    ),
    "auditor token": (
        lambda a: upload(DEMO_DCC, a.envelope(DEMO_DCC), a.token("auditor")),
        403,
        "token_forbidden",
    ),
    "body token": (
        lambda a: upload(DEMO_DCC, a.envelope(DEMO_DCC), a.token("body", "CNAS")),
        403,
        "token_forbidden",
    ),
    "token of another issuer": (
        lambda a: upload(DEMO_DCC, a.envelope(DEMO_DCC), a.token("issuer", "LAB-2")),
        403,
        "token_forbidden",
    ),
    "stolen token, envelope signed by a key of no issuer": (
        lambda a: upload(DEMO_DCC, a.envelope(DEMO_DCC, key=THIEF), a.token("issuer", "LAB-1")),
        403,
        "key_not_issuer",
    ),
    "stolen token, envelope signed by another issuer's key": (
        lambda a: upload(DEMO_DCC, a.envelope(DEMO_DCC, key=LAB2), a.token("issuer", "LAB-1")),
        403,
        "key_of_other_issuer",
    ),
    "document is not the one the statement was signed for": (
        lambda a: upload(DEMO_DCC_VARIANT, a.envelope(DEMO_DCC), a.token("issuer", "LAB-1")),
        422,
        "document_mismatch",
    ),
    "statement adds a field the document does not call for": (
        lambda a: upload(
            DEMO_DCC,
            a.envelope(DEMO_DCC, valid_until="2099-01-01"),
            a.token("issuer", "LAB-1"),
        ),
        422,
        "document_mismatch",
    ),
    "signature does not verify": (
        lambda a: upload(
            DEMO_DCC, with_bad_signature(a.envelope(DEMO_DCC)), a.token("issuer", "LAB-1")
        ),
        422,
        "signature_invalid",
    ),
    "document part missing": (
        lambda a: upload(None, a.envelope(DEMO_DCC), a.token("issuer", "LAB-1")),
        422,
        "request_invalid",
    ),
    "envelope part missing": (
        lambda a: upload(DEMO_DCC, None, a.token("issuer", "LAB-1")),
        422,
        "request_invalid",
    ),
    "not a form at all": (
        lambda a: {"content": b"{}", "headers": bearer(a.token("issuer", "LAB-1"))},
        422,
        "request_invalid",
    ),
    "XML entity expansion (billion laughs)": (
        lambda a: upload(ENTITY_EXPANSION, a.envelope(DEMO_DCC), a.token("issuer", "LAB-1")),
        400,
        "malformed",
    ),
    "XML external entity": (
        lambda a: upload(EXTERNAL_ENTITY, a.envelope(DEMO_DCC), a.token("issuer", "LAB-1")),
        400,
        "malformed",
    ),
    "neither XML nor JSON": (
        lambda a: upload(b"\x00\x01%PDF-1.7", a.envelope(DEMO_DCC), a.token("issuer", "LAB-1")),
        400,
        "malformed",
    ),
    "truncated XML": (
        lambda a: upload(DEMO_DCC[:4000], a.envelope(DEMO_DCC), a.token("issuer", "LAB-1")),
        400,
        "malformed",
    ),
    "envelope over 64 KiB": (
        lambda a: upload(DEMO_DCC, b"{" + b" " * (64 * 1024) + b"}", a.token("issuer", "LAB-1")),
        413,
        "too_large",
    ),
    "envelope is not JSON": (
        lambda a: upload(DEMO_DCC, b'{"payloadType": ', a.token("issuer", "LAB-1")),
        400,
        "malformed",
    ),
    "statement payload is not canonical JSON": (
        lambda a: upload(
            DEMO_DCC,
            signed_non_canonical(
                a.ledger.documents.statement(DEMO_DCC, "LAB-1", now()).fields, LAB
            ),
            a.token("issuer", "LAB-1"),
        ),
        400,
        "non_canonical",
    ),
    "status change sent with a document": (
        lambda a: upload(
            DEMO_DCC,
            signed(status_change("suspend", DEMO_DCC_ID), LAB),
            a.token("issuer", "LAB-1"),
        ),
        400,
        "malformed",
    ),
    "certificate id already used for another document": (
        lambda a: reuse_of_a_certificate_id(a),
        409,
        "certificate_exists",
    ),
    "issuer's accreditation was suspended": (
        lambda a: issue_while_suspended(a),
        403,
        "accreditation_suspended",
    ),
}


@pytest.mark.parametrize("case", list(CERTIFICATE_REFUSALS))
def test_certificate_refusals(api: Api, case: str) -> None:
    prepare, status, code = CERTIFICATE_REFUSALS[case]
    arguments = prepare(api)
    api.refused(lambda: api.client.post(CERTIFICATES, **arguments), status, code)


@pytest.mark.parametrize(
    ("key", "status", "code"),
    [
        (THIEF, 403, "key_not_issuer"),
        (LAB2, 403, "key_of_other_issuer"),
        (None, 422, "signature_invalid"),
    ],
    ids=["key of no issuer", "key of another issuer", "bad signature"],
)
def test_a_registered_document_is_answered_only_for_its_issuers_signature(
    api: Api, key: SigningKey | None, status: int, code: str
) -> None:
    """The short cut for a re-registered document must not hand a receipt and a
    freshly signed mark to a token whose envelope no key of the issuer signed."""
    api.register()
    envelope = api.envelope(DEMO_DCC, key=key or LAB)
    if key is None:
        envelope = with_bad_signature(envelope)
    token = api.token("issuer", "LAB-1")
    refusal = api.refused(
        lambda: api.client.post(CERTIFICATES, **upload(DEMO_DCC, envelope, token)), status, code
    )
    assert "mark" not in refusal.json()


def test_a_registered_document_is_not_answered_for_a_revoked_key(api: Api) -> None:
    api.register()
    token, successor = api.token("issuer", "LAB-1"), key_from("lab-1-successor")
    revoke = {
        "type": "issuer.key.revoke",
        "issuer_id": "LAB-1",
        "key_id": LAB.public_key.key_id,
        "reason": "rotation",
    }
    for fields, key in [(key_add("LAB-1", successor), LAB), (revoke, successor)]:
        assert api.post_statement(signed(fields, key), token).status_code == 201
    envelope = api.envelope(DEMO_DCC, key=LAB)
    api.refused(
        lambda: api.client.post(CERTIFICATES, **upload(DEMO_DCC, envelope, token)),
        403,
        "key_revoked",
    )
    again = api.client.post(
        CERTIFICATES, **upload(DEMO_DCC, api.envelope(DEMO_DCC, key=successor), token)
    )
    assert again.status_code == 200, again.text


@pytest.mark.shared
def test_schema_invalid_dcc_is_refused_when_schemas_are_required(
    open_api: Callable[..., Api],
) -> None:
    api = open_api(dcc_schemas=DCC_SCHEMAS, require_schema=True)
    document = (LUTAML / "invalid_schema.xml").read_bytes()
    token = api.token("issuer", "LAB-1")
    refusal = api.refused(
        lambda: api.client.post(CERTIFICATES, **upload(document, api.envelope(DEMO_DCC), token)),
        422,
        "schema_invalid",
    )
    assert "3.3.0 schema" in refusal.json()["detail"]
    receipt = api.register((LUTAML / "valid.xml").read_bytes())  # the valid twin passes
    logged = entry.parse(api.ledger.storage.entry(receipt["index"]).data)
    assert json.loads(logged.envelope.payload)["schema_validated"] is True


@pytest.mark.shared
def test_tampered_signed_dcc_is_refused(open_api: Callable[..., Api]) -> None:
    api = open_api(dcc_schemas=DCC_SCHEMAS, dcc_trust_store=SIEMENS / "trusted_certs")
    original = (SIEMENS / "dcc_gp_temperature_typical_v12_v3.2.0_signed.xml").read_bytes()
    envelope = api.envelope(original)  # the issuer signed a statement for the original ...
    token = api.token("issuer", "LAB-1")
    for tampered in (
        (SIEMENS / "dcc_gp_temperature_typical_v12_v3.2.0_signed_manipulated.xml").read_bytes(),
        original.replace(b"<dcc:value>", b"<dcc:value>9", 1),
    ):
        assert tampered != original
        # ... and the document swapped in on the way does not carry a valid signature
        refusal = api.refused(
            partial(api.client.post, CERTIFICATES, **upload(tampered, envelope, token)),
            422,
            "document_signature_invalid",
        )
        assert "Digest mismatch" in refusal.json()["detail"]
    receipt = api.register(original)
    logged = entry.parse(api.ledger.storage.entry(receipt["index"]).data)
    signature = json.loads(logged.envelope.payload)["fields"]["document_signature"]
    assert signature["checked"] is True


BOUNDARY = "qiledger-test-boundary"


def oversized_form(limit: int) -> bytes:
    """A multipart form whose document part alone exceeds ``limit`` (a route reads
    a form only when the content type says it is one)."""
    head = (
        f"--{BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="document"; filename="document"\r\n\r\n'
    ).encode()
    return head + b"x" * (limit + 1) + f"\r\n--{BOUNDARY}--\r\n".encode()


def chunks(data: bytes, size: int = 1 << 20) -> Iterator[bytes]:
    """``data`` as a streamed (chunked) body: no length is declared."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.mark.parametrize(
    ("path", "limit"),
    [(CERTIFICATES, CERTIFICATE_REQUEST_LIMIT), (STATEMENTS, OTHER_REQUEST_LIMIT)],
    ids=["certificates", "statements"],
)
@pytest.mark.parametrize("how", ["declared", "streamed", "longer than declared"])
def test_request_over_the_body_limit(api: Api, path: str, limit: int, how: str) -> None:
    headers = {
        **bearer(api.token("issuer", "LAB-1")),
        "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
    }
    body = oversized_form(limit)
    arguments: dict[str, Any]
    if how == "declared":  # refused before a byte of the body is read
        arguments = {"content": b"{}", "headers": {**headers, "Content-Length": str(len(body))}}
    elif how == "streamed":  # cut off as soon as it passes the limit
        arguments = {"content": chunks(body), "headers": headers}
    else:  # a small declared length does not hide a larger body
        arguments = {"content": body, "headers": {**headers, "Content-Length": "9"}}
    refusal = api.refused(lambda: api.client.post(path, **arguments), 413, "request_too_large")
    assert str(limit) in refusal.json()["detail"]


def test_a_document_over_its_size_limit_in_a_request_under_the_body_limit(api: Api) -> None:
    """The body limit leaves room for a whole document: the document check answers."""
    huge = b"<x>" + b" " * (20 * 1024 * 1024) + b"</x>"
    token = api.token("issuer", "LAB-1")
    api.refused(
        lambda: api.client.post(CERTIFICATES, **upload(huge, api.envelope(DEMO_DCC), token)),
        413,
        "document_too_large",
    )


# --- POST /api/v1/statements -------------------------------------------------------


def test_certificate_lifecycle_through_the_statements_route(api: Api) -> None:
    api.register()
    token = api.token("issuer", "LAB-1")

    def status() -> str:
        view: dict[str, Any] = api.client.get(f"{CERTIFICATES}/{DEMO_DCC_ID}").json()
        return str(view["status"])

    suspend = signed(status_change("suspend", DEMO_DCC_ID), LAB)
    first = api.post_statement(suspend, token)
    assert first.status_code == 201, first.text
    api.verify_receipt(first.json())
    assert status() == "Suspended"

    after = api.state()
    again = api.post_statement(suspend, token)
    assert again.status_code == 200, again.text
    assert (again.json()["index"], again.json()["duplicate"]) == (first.json()["index"], True)
    assert api.state() == after

    for action, expected in [("reinstate", "Active"), ("withdraw", "Withdrawn")]:
        response = api.post_statement(signed(status_change(action, DEMO_DCC_ID), LAB), token)
        assert response.status_code == 201, response.text
        api.verify_receipt(response.json())
        assert status() == expected

    api.refused(
        lambda: api.post_statement(signed(status_change("suspend", DEMO_DCC_ID), LAB), token),
        409,
        "transition_invalid",
    )
    history = api.client.get(f"{CERTIFICATES}/{DEMO_DCC_ID}").json()["history"]
    assert [e["type"] for e in history] == [
        "certificate.issue",
        "certificate.suspend",
        "certificate.reinstate",
        "certificate.withdraw",
    ]


def test_a_body_token_suspends_an_accreditation_of_its_own_body(api: Api) -> None:
    response = api.post_statement(
        signed(accreditation_event("suspend", "LAB-2"), BODY_KEY), api.token("body", "CNAS")
    )
    assert response.status_code == 201, response.text
    api.verify_receipt(response.json())
    issuer = api.client.get("/api/v1/issuers/LAB-2").json()
    assert [a["status"] for a in issuer["accreditations"]] == ["suspended"]
    token = api.token("issuer", "LAB-2")
    api.refused(
        lambda: api.client.post(
            CERTIFICATES, **upload(DEMO_DCC, api.envelope(DEMO_DCC, "LAB-2", LAB2), token)
        ),
        403,
        "accreditation_suspended",
    )


def test_an_operator_token_adds_a_trust_anchor_signed_by_the_log_key(api: Api) -> None:
    log_key = api.ledger.load_log_key().key
    new_body = key_from("new-body")
    fields = {**unsigned(body_add(new_body, "DAKKS")), "country": "DE"}
    response = api.post_statement(signed(fields, log_key), api.token("operator"))
    assert response.status_code == 201, response.text
    receipt = response.json()
    api.verify_receipt(receipt)
    logged = entry.parse(api.ledger.storage.entry(receipt["index"]).data)
    assert json.loads(logged.envelope.payload)["body_id"] == "DAKKS"
    # The new body can now accredit an issuer with its own key and token.
    accreditation = unsigned(grant("LAB-9", [key_from("lab-9")], body_id="DAKKS"))
    granted = api.post_statement(signed(accreditation, new_body), api.token("body", "DAKKS"))
    assert granted.status_code == 201, granted.text
    assert api.client.get("/api/v1/issuers/LAB-9").json()["accreditations"][0]["body_id"] == (
        "DAKKS"
    )


# Each case: (make the envelope and pick the token, status, code); the demo DCC is
# registered (LAB-1) before every case.
MakeStatement = Callable[[Api], tuple[bytes, str | None]]
STATEMENT_REFUSALS: dict[str, tuple[MakeStatement, int, str]] = {
    "no token": (
        lambda a: (signed(status_change("suspend", DEMO_DCC_ID), LAB), None),
        401,
        "token_missing",
    ),
    "revoked token": (
        lambda a: (
            signed(status_change("suspend", DEMO_DCC_ID), LAB),
            a.revoked_token("issuer", "LAB-1"),
        ),
        401,
        "token_invalid",
    ),
    "auditor token": (
        lambda a: (signed(status_change("suspend", DEMO_DCC_ID), LAB), a.token("auditor")),
        403,
        "token_forbidden",
    ),
    "certificate.issue belongs with its document": (
        lambda a: (a.envelope(DEMO_DCC_VARIANT), a.token("issuer", "LAB-1")),
        422,
        "document_required",
    ),
    "certificate.amend belongs with its document": (
        lambda a: (
            a.envelope(demo_dcc("demo-dcc-amended.xml")),
            a.token("issuer", "LAB-1"),
        ),
        422,
        "document_required",
    ),
    "token of another issuer": (
        lambda a: (signed(status_change("suspend", DEMO_DCC_ID), LAB), a.token("issuer", "LAB-2")),
        403,
        "token_forbidden",
    ),
    "another issuer's certificate under one's own issuer id": (
        lambda a: (
            sign_payload(
                jcs.canonical_bytes(
                    {
                        **status_change("suspend", DEMO_DCC_ID, issuer="LAB-2"),
                        "signed_at": entry.format_time(now()),
                    }
                ),
                LAB2,
            ),
            a.token("issuer", "LAB-2"),
        ),
        400,
        "malformed",
    ),
    "stolen token, signed by another issuer's key": (
        lambda a: (signed(status_change("suspend", DEMO_DCC_ID), LAB2), a.token("issuer", "LAB-1")),
        403,
        "key_of_other_issuer",
    ),
    "stolen token, signed by a key of no issuer": (
        lambda a: (
            signed(status_change("suspend", DEMO_DCC_ID), THIEF),
            a.token("issuer", "LAB-1"),
        ),
        403,
        "key_not_issuer",
    ),
    "unknown certificate": (
        lambda a: (signed(status_change("suspend", "LAB-1/NOPE"), LAB), a.token("issuer", "LAB-1")),
        403,
        "certificate_unknown",
    ),
    "reinstate an active certificate": (
        lambda a: (
            signed(status_change("reinstate", DEMO_DCC_ID), LAB),
            a.token("issuer", "LAB-1"),
        ),
        409,
        "transition_invalid",
    ),
    "body token for a certificate": (
        lambda a: (signed(status_change("suspend", DEMO_DCC_ID), LAB), a.token("body", "CNAS")),
        403,
        "token_forbidden",
    ),
    "body token for another body's accreditation": (
        lambda a: (
            signed(accreditation_event("suspend", "LAB-2", body_id="OTHER"), BODY_KEY),
            a.token("body", "CNAS"),
        ),
        403,
        "token_forbidden",
    ),
    "body token for a trust anchor": (
        lambda a: (
            signed(unsigned(body_add(key_from("b2"), "B2")), BODY_KEY),
            a.token("body", "CNAS"),
        ),
        403,
        "token_forbidden",
    ),
    "restore an accreditation that is not suspended": (
        lambda a: (
            signed(accreditation_event("restore", "LAB-2"), BODY_KEY),
            a.token("body", "CNAS"),
        ),
        409,
        "transition_invalid",
    ),
    "trust anchor not signed by the log key": (
        lambda a: (signed(unsigned(body_add(key_from("b2"), "B2")), BODY_KEY), a.token("operator")),
        403,
        "not_operator",
    ),
    "replayed envelope signed eight days ago": (
        lambda a: (
            signed(status_change("suspend", DEMO_DCC_ID), LAB, at=now() - timedelta(days=8)),
            a.token("issuer", "LAB-1"),
        ),
        403,
        "statement_stale",
    ),
    "signed_at ten minutes in the future": (
        lambda a: (
            signed(status_change("suspend", DEMO_DCC_ID), LAB, at=now() + timedelta(minutes=10)),
            a.token("issuer", "LAB-1"),
        ),
        403,
        "statement_future",
    ),
    "signature does not verify": (
        lambda a: (
            with_bad_signature(signed(status_change("suspend", DEMO_DCC_ID), LAB)),
            a.token("issuer", "LAB-1"),
        ),
        422,
        "signature_invalid",
    ),
    "empty body": (lambda a: (b"", a.token("issuer", "LAB-1")), 400, "malformed"),
    "envelope is not JSON": (
        lambda a: (b"{not json", a.token("issuer", "LAB-1")),
        400,
        "malformed",
    ),
    "envelope lacks its signatures": (
        lambda a: (b'{"payload":"e30=","payloadType":"x"}', a.token("issuer", "LAB-1")),
        400,
        "malformed",
    ),
    "statement payload is not canonical JSON": (
        lambda a: (
            signed_non_canonical(status_change("suspend", DEMO_DCC_ID), LAB),
            a.token("issuer", "LAB-1"),
        ),
        400,
        "non_canonical",
    ),
    "unknown statement type": (
        lambda a: (
            sign_payload(
                jcs.canonical_bytes({"type": "certificate.delete", "signed_at": "x"}), LAB
            ),
            a.token("issuer", "LAB-1"),
        ),
        400,
        "malformed",
    ),
    "envelope over 64 KiB": (
        lambda a: (b"{" + b" " * (64 * 1024) + b"}", a.token("issuer", "LAB-1")),
        413,
        "too_large",
    ),
}


@pytest.mark.parametrize("case", list(STATEMENT_REFUSALS))
def test_statement_refusals(api: Api, case: str) -> None:
    api.register()
    make, status, code = STATEMENT_REFUSALS[case]
    envelope, token = make(api)
    api.refused(lambda: api.post_statement(envelope, token), status, code)


# --- GET /api/v1/log ---------------------------------------------------------------


def grow_with_an_unsigned_size(api: Api) -> int:
    """Append two entries in one batch: the size between them has no checkpoint."""
    envelopes = [signed(key_add("LAB-1", key_from(f"extra-{n}")), LAB) for n in range(2)]
    with api.service.state_lock:  # as the service's own sequencer thread does
        outcomes = submit_with_documents(api.ledger.sequencer, envelopes)
    assert all(isinstance(o, Accepted) for o in outcomes), outcomes
    return api.state().size - 1


def test_log_identity_and_checkpoint(api: Api) -> None:
    api.register()
    info = api.client.get("/api/v1/log").json()
    identity = api.ledger.identity
    assert info["origin"] == identity.origin
    assert info["verifier_key"] == str(identity.verifier)
    assert info["public_key_pem"] == identity.public_key.to_pem().decode()
    cp = checkpoint.verify(info["checkpoint"].encode(), identity.verifier).checkpoint
    assert (cp.size, b64encode(cp.root)) == (info["size"], info["root"])
    assert cp.size == api.state().size

    response = api.client.get("/api/v1/log/checkpoint")
    assert response.headers["content-type"].startswith("text/plain")
    assert response.content == api.state().checkpoint == info["checkpoint"].encode()
    assert checkpoint.verify(response.content, identity.verifier).checkpoint == cp
    assert api.client.get("/checkpoint").content == response.content  # tlog-tiles form


def test_every_entry_verifies_at_every_signed_size(api: Api) -> None:
    api.register()
    unsigned_size = grow_with_an_unsigned_size(api)
    size = api.state().size
    identity = api.ledger.identity
    signed_sizes = [s for s in range(1, size + 1) if s != unsigned_size]
    for tree_size in signed_sizes:
        for index in range(tree_size):
            logged = api.client.get(
                f"/api/v1/log/entries/{index}", params={"tree_size": tree_size}
            ).json()
            assert (logged["index"], logged["tree_size"]) == (index, tree_size)
            cp = checkpoint.verify(logged["checkpoint"].encode(), identity.verifier).checkpoint
            leaf_data = b64decode(logged["leaf_data"], "leaf data")
            assert json.loads(leaf_data) == logged["entry"]
            leaf = merkle.leaf_hash(leaf_data)
            assert b64encode(leaf) == logged["leaf_hash"]
            hashes = b64hashes(logged["inclusion_proof"])
            merkle.verify_inclusion(leaf, index, cp.size, hashes, cp.root)

            inclusion = api.client.get(
                "/api/v1/log/proof/inclusion", params={"index": index, "tree_size": tree_size}
            ).json()
            assert inclusion["hashes"] == logged["inclusion_proof"]
            assert inclusion["leaf_hash"] == logged["leaf_hash"]
            proof.verify(inclusion["tlog_proof"].encode(), leaf_data, identity.verifier)
    latest = api.client.get("/api/v1/log/entries/0").json()
    assert latest["tree_size"] == size  # without tree_size: the latest checkpoint


def test_consistency_between_signed_sizes(api: Api) -> None:
    api.register()
    unsigned_size = grow_with_an_unsigned_size(api)
    size = api.state().size
    verifier = api.ledger.identity.verifier
    signed_sizes = [s for s in range(size + 1) if s != unsigned_size]
    for first in signed_sizes:
        for second in [s for s in signed_sizes if s >= first]:
            answer = api.client.get(
                "/api/v1/log/proof/consistency", params={"first": first, "second": second}
            ).json()
            old = checkpoint.verify(answer["first_checkpoint"].encode(), verifier).checkpoint
            new = checkpoint.verify(answer["second_checkpoint"].encode(), verifier).checkpoint
            assert (old.size, new.size) == (first, second)
            merkle.verify_consistency(
                first, second, b64hashes(answer["hashes"]), old.root, new.root
            )


# --- GET refusals (and the read routes' 404s) --------------------------------------

Auth = tuple[str, str] | None
READ_REFUSALS: list[tuple[str, Auth, int, str]] = [
    ("/api/v1/log/entries/99", None, 404, "not_found"),
    ("/api/v1/log/entries/0?tree_size={unsigned}", None, 404, "not_found"),
    ("/api/v1/log/entries/0?tree_size=99", None, 404, "not_found"),
    ("/api/v1/log/entries/-1", None, 422, "request_invalid"),
    ("/api/v1/log/entries/one", None, 422, "request_invalid"),
    ("/api/v1/log/entries/0?tree_size=-1", None, 422, "request_invalid"),
    ("/api/v1/log/entries/0?tree_size=1.5", None, 422, "request_invalid"),
    ("/api/v1/log/proof/inclusion?index=99", None, 404, "not_found"),
    ("/api/v1/log/proof/inclusion?index=0&tree_size={unsigned}", None, 404, "not_found"),
    ("/api/v1/log/proof/inclusion?index=-1", None, 422, "request_invalid"),
    ("/api/v1/log/proof/inclusion?index=zero", None, 422, "request_invalid"),
    ("/api/v1/log/proof/inclusion", None, 422, "request_invalid"),
    ("/api/v1/log/proof/consistency?first=1&second={unsigned}", None, 404, "not_found"),
    ("/api/v1/log/proof/consistency?first=2&second=99", None, 404, "not_found"),
    ("/api/v1/log/proof/consistency?first=3&second=2", None, 422, "request_invalid"),
    ("/api/v1/log/proof/consistency?first=-1&second=2", None, 422, "request_invalid"),
    ("/api/v1/log/proof/consistency?first=1", None, 422, "request_invalid"),
    ("/api/v1/log/proof/consistency?first=a&second=b", None, 422, "request_invalid"),
    ("/api/v1/certificates/LAB-1/NOPE", None, 404, "not_found"),
    ("/api/v1/certificates/no-issuer-part", None, 422, "request_invalid"),
    ("/api/v1/certificates?digest=sha256:" + "A" * 64, None, 422, "request_invalid"),
    ("/api/v1/certificates?digest=sha256:abc", None, 422, "request_invalid"),
    ("/api/v1/certificates?digest=md5:" + "0" * 32, None, 422, "request_invalid"),
    # The listing (no digest=): each filter's bad values.
    ("/api/v1/certificates?status=revoked", None, 422, "request_invalid"),
    ("/api/v1/certificates?kind=car", None, 422, "request_invalid"),
    ("/api/v1/certificates?issued_from=2026-13-01", None, 422, "request_invalid"),
    (
        "/api/v1/certificates?issued_from=2027-01-01&issued_to=2026-01-01",
        None,
        422,
        "request_invalid",
    ),
    ("/api/v1/certificates?limit=0", None, 422, "request_invalid"),
    ("/api/v1/certificates?limit=501", None, 422, "request_invalid"),
    ("/api/v1/certificates?cursor=-1", None, 422, "request_invalid"),
    ("/api/v1/certificates?issuer=", None, 422, "request_invalid"),
    (
        "/api/v1/certificates?digest=sha256:" + "0" * 64 + "&issuer=LAB-1",
        None,
        422,
        "request_invalid",
    ),
    ("/api/v1/issuers/LAB-404", None, 404, "not_found"),
    (f"/api/v1/documents/{DEMO_DCC_ID}", None, 401, "token_missing"),
    (f"/api/v1/documents/{DEMO_DCC_ID}", ("issuer", "LAB-2"), 403, "token_forbidden"),
    (f"/api/v1/documents/{DEMO_DCC_ID}", ("body", "CNAS"), 403, "token_forbidden"),
    (f"/api/v1/documents/{DEMO_DCC_ID}", ("operator", ""), 403, "token_forbidden"),
    ("/api/v1/documents/LAB-1/NOPE", ("auditor", ""), 404, "not_found"),
    ("/api/v1/nothing-here", None, 404, "not_found"),
    ("/tile/not-a-tile", None, 404, "not_found"),
]


@pytest.mark.parametrize(("path", "auth", "status", "code"), READ_REFUSALS)
def test_read_refusals(api: Api, path: str, auth: Auth, status: int, code: str) -> None:
    api.register()
    unsigned_size = grow_with_an_unsigned_size(api)
    url = path.format(unsigned=unsigned_size)
    token = None if auth is None else api.token(*auth)
    api.refused(lambda: api.client.get(url, headers=bearer(token)), status, code)


def test_bad_or_revoked_token_on_a_read_route(api: Api) -> None:
    api.register()
    url = f"/api/v1/documents/{DEMO_DCC_ID}"
    for token in ("nonsense", api.revoked_token("auditor")):
        api.refused(partial(api.client.get, url, headers=bearer(token)), 401, "token_invalid")


def test_wrong_method_is_a_problem_too(api: Api) -> None:
    refusal = api.refused(lambda: api.client.post("/api/v1/log"), 405, "method_not_allowed")
    assert refusal.headers["Allow"] == "GET"


# --- GET /api/v1/certificates and /api/v1/issuers ----------------------------------


def test_certificate_view_has_status_and_history_but_never_the_document(api: Api) -> None:
    receipt = api.register()
    response = api.client.get(f"{CERTIFICATES}/{DEMO_DCC_ID}")
    assert response.status_code == 200
    view = response.json()
    assert (view["certificate_id"], view["status"], view["issuer_id"], view["kind"]) == (
        DEMO_DCC_ID,
        "Active",
        "LAB-1",
        "dcc",
    )
    assert view["document_sha256"] == hashlib.sha256(DEMO_DCC).hexdigest()
    assert [(e["index"], e["type"]) for e in view["history"]] == [
        (receipt["index"], "certificate.issue")
    ]
    assert view["issuer"]["accreditations"][0]["status"] == "granted"
    assert view["tree_size"] == api.state().size
    assert CUSTOMER not in response.content
    assert b"measurementResult" not in response.content


def test_a_status_read_during_a_batch_does_not_wait_for_it(api: Api) -> None:
    """Readers take no lock: while a batch holds the trust state (for its whole
    commit), a status read is answered from the certificate tables, which hold
    only what has committed."""
    api.register()
    api.service.state_lock.acquire()  # as the sequencer does for a batch
    try:
        answer = api.client.get(f"{CERTIFICATES}/{DEMO_DCC_ID}")
    finally:
        api.service.state_lock.release()
    assert answer.status_code == 200
    assert answer.json()["status"] == "Active"


def test_stale_reads_catch_up_once_on_the_event_loop(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Concurrent reads of a stale state catch bodies, issuers and keys up once
    (not once each), and every answer is built on the event loop."""
    service = api.service
    api.register()
    size = api.state().size
    syncs: list[int] = []
    real_sync = service.ledger.policy.sync

    def counting_sync(*args: Any) -> Any:
        if not args:  # sync() calls itself with its connection
            syncs.append(1)
        return real_sync(*args)

    monkeypatch.setattr(service.ledger.policy, "sync", counting_sync)
    loop_thread: list[bool] = []
    service._synced_at = float("-inf")  # stale

    def view(state: Any) -> int:
        loop_thread.append(threading.current_thread() is threading.main_thread())
        return int(state.size)

    async def one() -> int:  # as GET /api/v1/certificates/{id} reads
        return service.read_certificate(view, certificate_id=DEMO_DCC_ID)

    async def many() -> list[int]:
        return list(await asyncio.gather(*(one() for _ in range(20))))

    sizes = asyncio.run(many())
    assert sizes == [size] * 20
    assert len(syncs) == 1
    assert loop_thread == [True] * 20


def test_certificates_by_document_digest(api: Api) -> None:
    api.register()
    digest = hashlib.sha256(DEMO_DCC).hexdigest()
    found = api.client.get(CERTIFICATES, params={"digest": f"sha256:{digest}"}).json()
    assert found["digest"] == f"sha256:{digest}"
    assert [c["certificate_id"] for c in found["certificates"]] == [DEMO_DCC_ID]
    assert found["certificates"][0]["status"] == "Active"
    other = api.client.get(CERTIFICATES, params={"digest": "sha256:" + "0" * 64}).json()
    assert other["certificates"] == []


def test_issuers(api: Api) -> None:
    listed = api.client.get("/api/v1/issuers").json()
    assert sorted(i["issuer_id"] for i in listed["issuers"]) == ["DEMO-CB", "LAB-1", "LAB-2"]
    assert listed["tree_size"] == api.state().size
    one = api.client.get("/api/v1/issuers/LAB-1").json()
    assert [k["key_id"] for k in one["keys"]] == [LAB.public_key.key_id]
    assert [(a["body_id"], a["status"], a["body_trusted"]) for a in one["accreditations"]] == [
        ("CNAS", "granted", True)
    ]
    cb = api.client.get("/api/v1/issuers/DEMO-CB").json()
    assert (cb["kind"], cb["accreditations"][0]["covers"]) == (
        "certification_body",
        ["management_system"],
    )


@pytest.mark.parametrize("reader", [("auditor", ""), ("issuer", "LAB-1")])
def test_document_for_an_auditor_or_its_issuer(api: Api, reader: tuple[str, str]) -> None:
    api.register()
    response = api.client.get(
        f"/api/v1/documents/{DEMO_DCC_ID}", headers=bearer(api.token(*reader))
    )
    assert response.status_code == 200
    assert response.content == DEMO_DCC
    assert response.headers["content-type"] == "application/vnd.ptb.dcc+xml"
    digest = base64.b64encode(hashlib.sha256(response.content).digest()).decode()
    assert response.headers["Repr-Digest"] == f"sha-256=:{digest}:"
    assert "no-store" in response.headers["Cache-Control"]


# --- operations --------------------------------------------------------------------


def test_healthz(api: Api) -> None:
    response = api.client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


# --- cross-origin reads -----------------------------------------------------------

PAGE = {"Origin": "https://verifier.example.org"}


def test_public_reads_may_be_made_from_any_web_page(api: Api) -> None:
    api.register()
    size = api.state().size
    assert size < 256  # the tiles below are partial
    reads = {
        "/api/v1/log": 200,
        "/api/v1/log/checkpoint": 200,
        "/checkpoint": 200,
        f"/tile/0/000.p/{size}": 200,
        f"/tile/entries/000.p/{size}": 200,
        f"{CERTIFICATES}/{DEMO_DCC_ID}": 200,
        "/api/v1/log/entries/99999": 404,  # a refused read is readable too
    }
    for path, status in reads.items():
        response = api.client.get(path, headers=PAGE)
        assert response.status_code == status, path
        assert response.headers["Access-Control-Allow-Origin"] == "*", path
        assert "Access-Control-Allow-Credentials" not in response.headers
    # No Origin (a server, curl): no CORS headers at all.
    assert "Access-Control-Allow-Origin" not in api.client.get("/api/v1/log").headers


def test_a_cross_origin_read_with_a_token_is_preflighted(api: Api) -> None:
    response = api.client.options(
        f"/api/v1/documents/{DEMO_DCC_ID}",
        headers={
            **PAGE,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert response.headers["Access-Control-Allow-Methods"] == "GET, HEAD"
    assert "Authorization" in response.headers["Access-Control-Allow-Headers"]


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_cross_origin_writes_are_not_allowed(api: Api, method: str) -> None:
    """A browser asks first and gets no permission; a write sent anyway (a
    simple multipart POST needs no preflight) is answered without CORS headers,
    so the page cannot read the answer — and without a token nothing is written."""
    preflight = api.client.options(
        CERTIFICATES,
        headers={
            **PAGE,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert preflight.status_code == 204
    assert "Access-Control-Allow-Origin" not in preflight.headers
    refusal = api.refused(
        lambda: api.client.post(
            CERTIFICATES,
            **{**upload(DEMO_DCC, api.envelope(DEMO_DCC), None), "headers": PAGE},
        ),
        401,
        "token_missing",
    )
    assert "Access-Control-Allow-Origin" not in refusal.headers


def test_the_certification_schema_is_published_and_validates_documents(api: Api) -> None:
    response = api.client.get("/api/v1/schemas/certification-certificate.schema.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/schema+json"
    published = response.json()
    jsonschema.Draft202012Validator.check_schema(published)
    jsonschema.validate(json.loads((DEMO / "demo-certification.json").read_bytes()), published)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"certificate_number": 7}, published)


def test_openapi_lists_every_route(api: Api) -> None:
    schema = api.client.get("/openapi.json").json()
    paths = {path: sorted(ops) for path, ops in schema["paths"].items()}
    assert paths == {
        "/api/v1/certificates": ["get", "post"],
        "/api/v1/certificates/{certificate_id}": ["get"],
        "/api/v1/dependents/{certificate_id}": ["get"],
        "/api/v1/documents/{certificate_id}": ["get"],
        "/api/v1/export": ["get"],
        "/api/v1/issuers": ["get"],
        "/api/v1/issuers/{issuer_id}": ["get"],
        "/api/v1/issuers/{issuer_id}/certificates": ["get"],
        "/api/v1/log": ["get"],
        "/api/v1/log/checkpoint": ["get"],
        "/api/v1/log/entries/{index}": ["get"],
        "/api/v1/log/proof/consistency": ["get"],
        "/api/v1/log/proof/inclusion": ["get"],
        "/api/v1/marks/{image_format}/{certificate_id}": ["get"],
        "/api/v1/schemas/certification-certificate.schema.json": ["get"],
        "/api/v1/standards": ["get"],
        "/api/v1/statements": ["post"],
        "/api/v1/statements/prepare": ["post"],
        "/checkpoint": ["get"],
        "/healthz": ["get"],
        "/tile/entries/{path}": ["get"],
        "/tile/{path}": ["get"],
        "/api/v1/traceability/{certificate_id}": ["get"],
    }
    routed = {
        route.path.replace(":path}", "}")
        for module in (
            certificates,
            issuers,
            log,
            marks,
            schemas,
            statements,
            tiles,
            export,
            traceability,
        )
        for route in module.router.routes
        if isinstance(route, APIRoute)
    }
    assert routed | {"/healthz"} == set(paths)  # no route is left out of the schema


def test_rate_limit_per_token(open_api: Callable[..., Api]) -> None:
    # One token per 100 s: however slow the machine, no token refills mid-test.
    api = open_api(ServiceOptions(rate_per_second=0.01, rate_burst=2))
    api.register()
    url = f"/api/v1/documents/{DEMO_DCC_ID}"
    reader = api.token("auditor")
    for _ in range(2):  # the burst
        assert api.client.get(url, headers=bearer(reader)).status_code == 200
    refusal = api.refused(lambda: api.client.get(url, headers=bearer(reader)), 429, "rate_limited")
    assert int(refusal.headers["Retry-After"]) >= 1
    # A write over the limit is refused before anything is appended.
    writer = TokenStore(api.ledger.db).create("issuer", "LAB-1")[0]
    for _ in range(2):
        assert api.client.get(url, headers=bearer(writer)).status_code == 200
    suspend = signed(status_change("suspend", DEMO_DCC_ID), LAB)
    api.refused(lambda: api.post_statement(suspend, writer), 429, "rate_limited")
    # Buckets are per token: another token of the same issuer still writes, and
    # reads without a token are never limited.
    assert api.post_statement(suspend, api.token("issuer", "LAB-1")).status_code == 201
    assert api.client.get(f"{CERTIFICATES}/{DEMO_DCC_ID}").json()["status"] == "Suspended"


# --- group commit under concurrency ------------------------------------------------


def test_fifty_concurrent_registrations(api: Api) -> None:
    start = api.state().size
    token = api.token("issuer", "DEMO-CB")
    uploads = []
    for n in range(50):
        document = certification(f"DEMO-QMS-C{n:03d}")
        uploads.append(upload(document, api.envelope(document, "DEMO-CB", CB), token))
    with ThreadPoolExecutor(max_workers=50) as pool:
        responses = list(pool.map(lambda u: api.client.post(CERTIFICATES, **u), uploads))
    assert [r.status_code for r in responses] == [201] * 50, [r.text for r in responses]
    receipts = [r.json() for r in responses]
    assert sorted(r["index"] for r in receipts) == list(range(start, start + 50))
    assert len({r["certificate_id"] for r in receipts}) == 50
    for receipt in receipts:
        api.verify_receipt(receipt)
    assert api.state().size == start + 50
    assert api.state().documents == 50
    report = fsck(api.ledger)
    assert (report.entries, report.documents) == (start + 50, 50)


def test_statements_queued_during_a_commit_share_the_next_batch(api: Api) -> None:
    """Held behind a running batch (here: the trust-state lock), fifty queued
    statements are committed together: at most two checkpoints for all of them."""
    holder = api.service.tokens.authenticate(api.token("issuer", "LAB-1"))
    envelopes = [signed(key_add("LAB-1", key_from(f"rotation-{n}")), LAB) for n in range(50)]
    start = api.state().size
    with api.service.state_lock, ThreadPoolExecutor(max_workers=10) as pool:
        futures = list(pool.map(lambda e: api.service.enqueue_statement(holder, e), envelopes))
    outcomes = [f.result(timeout=60) for f in futures]
    assert all(isinstance(o, Accepted) for o in outcomes), outcomes
    accepted = [o for o in outcomes if isinstance(o, Accepted)]
    assert sorted(o.index for o in accepted) == list(range(start, start + 50))
    assert len({o.checkpoint_size for o in accepted}) <= 2
    for outcome in accepted:
        receipt = api.service.receipt(outcome)
        note = receipt["checkpoint"].encode()
        cp = checkpoint.verify(note, api.ledger.identity.verifier).checkpoint
        merkle.verify_inclusion(
            outcome.leaf_hash,
            outcome.index,
            cp.size,
            b64hashes(receipt["inclusion_proof"]),
            cp.root,
        )
    assert fsck(api.ledger).entries == start + 50
