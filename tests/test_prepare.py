"""Lab integration: ``POST /api/v1/statements/prepare`` answers the exact statement
the registry requires for a document, which a lab signs (nothing else) and
uploads; ``qiledger statement`` prints the same statement. Bad and hostile
requests are refused with the upload path's problem codes, never a 500."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from registry.api.app import create_app
from registry.api.limits import CERTIFICATE_REQUEST_LIMIT
from registry.api.service import ServiceOptions
from registry.cli.main import main
from registry.config import Settings
from registry.demo import DEMO_DOCUMENTS
from registry.ledger import Ledger
from registry.storage.tokens import TokenStore
from tests.conftest import make_ledger
from tests.helpers import BODY_KEY, certification_fields, demo_dcc, envelope_bytes, grant, key_from
from verifier import dsse, entry, jcs, statement
from verifier.encoding import b64decode
from verifier.keys import SigningKey

PREPARE = "/api/v1/statements/prepare"
CERTIFICATES = "/api/v1/certificates"
PROBLEM_JSON = "application/problem+json"

LAB, LAB2, CB = key_from("lab-1"), key_from("lab-2"), key_from("demo-cb")
DEMO_DCC = demo_dcc()
AMENDED_DCC = demo_dcc("demo-dcc-amended.xml")
CERTIFICATION = (DEMO_DOCUMENTS / "demo-certification.json").read_bytes()
PDF = b"%PDF-1.7\n1 0 obj <</Type /Catalog>> endobj\ntrailer <</Root 1 0 R>>\n%%EOF\n"


@dataclass
class Lab:
    client: TestClient
    ledger: Ledger
    tokens: dict[tuple[str, str], str]

    def token(self, role: str, subject: str = "") -> str:
        if (role, subject) not in self.tokens:
            self.tokens[role, subject] = TokenStore(self.ledger.db).create(role, subject)[0]
        return self.tokens[role, subject]

    def prepare(
        self,
        document: bytes | None,
        token: str | None,
        record: bytes | None = None,
        **form: str,
    ) -> httpx.Response:
        files = {}
        if document is not None:
            files["document"] = ("document", document, "application/octet-stream")
        if record is not None:
            files["record"] = ("record.json", record, "application/json")
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        response: httpx.Response = self.client.post(
            PREPARE, files=files, data=form, headers=headers
        )
        return response

    def upload(
        self, document: bytes, envelope: bytes, token: str, record: bytes | None = None
    ) -> httpx.Response:
        files = {
            "document": ("document", document, "application/octet-stream"),
            "envelope": ("envelope.json", envelope, "application/json"),
        }
        if record is not None:
            files["record"] = ("record.json", record, "application/json")
        response: httpx.Response = self.client.post(
            CERTIFICATES, files=files, headers={"Authorization": f"Bearer {token}"}
        )
        return response

    def log_size(self) -> int:
        return self.ledger.latest_checkpoint().size


def no_server_error(response: httpx.Response) -> None:
    assert response.status_code < 500, f"{response.request.url}: {response.read()!r}"


@pytest.fixture
def lab(sqlite_settings: Settings) -> Iterator[Lab]:
    """A registry where body CNAS accredits LAB-1, LAB-2 (DCCs) and DEMO-CB
    (management systems)."""
    ledger = make_ledger(sqlite_settings, LAB)
    for fields in (
        grant("LAB-2", [LAB2]),
        grant("DEMO-CB", [CB], kind="certification_body", covers=("management_system",)),
    ):
        ledger.sequencer.submit(envelope_bytes(fields, BODY_KEY))
    try:
        with TestClient(create_app(ledger, ServiceOptions(rate_per_second=0))) as client:
            client.event_hooks["response"].append(no_server_error)
            yield Lab(client, ledger, {})
    finally:
        ledger.close()


def expect_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert (response.status_code, response.headers["content-type"]) == (
        status,
        PROBLEM_JSON,
    ), response.text
    body: dict[str, Any] = response.json()
    assert (body["status"], body["code"], body["type"]) == (
        status,
        code,
        f"urn:qiledger:error:{code}",
    )
    assert body["detail"]
    return body


def sign_prepared(prepared: dict[str, Any], key: SigningKey) -> bytes:
    """What a lab's system does with the answer: sign the payload bytes as they
    are (DSSE) and nothing else."""
    payload = b64decode(prepared["payload"], "payload")
    return jcs.canonical_bytes(dsse.sign(payload, key).to_json())


# --- prepare, sign, upload ----------------------------------------------------------


def check_prepared(prepared: dict[str, Any], before: datetime, after: datetime) -> None:
    """The answer is self-consistent: payload = canonical statement, PAE over it,
    its digest, the 7-day window from signed_at."""
    payload = b64decode(prepared["payload"], "payload")
    parsed = statement.parse(payload)
    assert parsed.fields == prepared["statement"]
    assert jcs.canonical_bytes(prepared["statement"]) == payload
    assert prepared["payloadType"] == dsse.STATEMENT_PAYLOAD_TYPE
    assert b64decode(prepared["pae"], "pae") == dsse.pae(dsse.STATEMENT_PAYLOAD_TYPE, payload)
    assert prepared["statement_sha256"] == hashlib.sha256(payload).hexdigest()
    assert prepared["type"] == parsed.type
    assert prepared["certificate_id"] == parsed["certificate_id"]
    assert prepared["supersedes"] == parsed.get("supersedes")
    signed_at = entry.parse_time(prepared["signed_at"])
    assert prepared["signed_at"] == parsed["signed_at"]
    assert before - timedelta(milliseconds=1) <= signed_at <= after
    assert entry.parse_time(prepared["expires_at"]) == signed_at + timedelta(days=7)
    envelope = prepared["envelope"]
    assert (envelope["payloadType"], envelope["payload"]) == (
        prepared["payloadType"],
        prepared["payload"],
    )
    assert any("7 days" in line for line in prepared["instructions"])


@pytest.mark.parametrize(
    ("document", "record", "issuer", "key", "kind"),
    [
        (DEMO_DCC, None, "LAB-1", LAB, "dcc"),
        (CERTIFICATION, None, "DEMO-CB", CB, "management_system"),
        (PDF, CERTIFICATION, "DEMO-CB", CB, "management_system"),
    ],
    ids=["dcc", "certification-json", "pdf-with-record"],
)
def test_prepare_sign_upload(
    lab: Lab, document: bytes, record: bytes | None, issuer: str, key: SigningKey, kind: str
) -> None:
    token = lab.token("issuer", issuer)
    size = lab.log_size()
    before = datetime.now(UTC)
    response = lab.prepare(document, token, record)
    after = datetime.now(UTC)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    prepared = response.json()
    check_prepared(prepared, before, after)
    assert prepared["statement"]["kind"] == kind
    assert prepared["document_sha256"] == hashlib.sha256(document).hexdigest()
    assert lab.log_size() == size, "prepare must not log anything"

    receipt = lab.upload(document, sign_prepared(prepared, key), token, record)
    assert receipt.status_code == 201, receipt.text
    assert receipt.json()["certificate_id"] == prepared["certificate_id"]
    logged = entry.parse(lab.ledger.entry(receipt.json()["index"]).data)
    assert logged.envelope.payload == b64decode(prepared["payload"], "payload")


def test_an_amendment_is_prepared_as_certificate_amend(lab: Lab) -> None:
    token = lab.token("issuer", "LAB-1")
    original = lab.prepare(DEMO_DCC, token).json()
    assert lab.upload(DEMO_DCC, sign_prepared(original, LAB), token).status_code == 201
    amended = lab.prepare(AMENDED_DCC, token).json()
    assert (amended["type"], amended["supersedes"]) == (
        "certificate.amend",
        original["certificate_id"],
    )
    receipt = lab.upload(AMENDED_DCC, sign_prepared(amended, LAB), token)
    assert receipt.status_code == 201, receipt.text
    status = lab.client.get(f"{CERTIFICATES}/{original['certificate_id']}").json()
    assert (status["status"], status["superseded_by"]) == (
        "Superseded",
        amended["certificate_id"],
    )


def test_a_prepared_statement_changed_by_the_client_is_refused(lab: Lab) -> None:
    """The client adds only its signature: a statement it altered is not what
    the document calls for."""
    token = lab.token("issuer", "LAB-1")
    prepared = lab.prepare(DEMO_DCC, token).json()
    altered = {**prepared["statement"], "issued": "2020-01-01"}
    envelope = jcs.canonical_bytes(dsse.sign(statement.encode(altered), LAB).to_json())
    expect_problem(lab.upload(DEMO_DCC, envelope, token), 422, "document_mismatch")


def test_an_operator_names_the_issuer(lab: Lab) -> None:
    operator = lab.token("operator")
    expect_problem(lab.prepare(DEMO_DCC, operator), 422, "request_invalid")
    prepared = lab.prepare(DEMO_DCC, operator, issuer_id="LAB-1").json()
    assert prepared["statement"]["issuer_id"] == "LAB-1"
    expect_problem(lab.prepare(DEMO_DCC, operator, issuer_id="not an id!"), 400, "malformed")


# --- who may prepare ----------------------------------------------------------------


def test_an_issuer_token_of_another_issuer_is_forbidden(lab: Lab) -> None:
    other = lab.token("issuer", "LAB-2")
    expect_problem(lab.prepare(DEMO_DCC, other, issuer_id="LAB-1"), 403, "token_forbidden")
    # Without issuer_id it prepares for its own issuer, and the log then refuses
    # another laboratory's DCC exactly as an upload of it is refused.
    prepared = lab.prepare(DEMO_DCC, other).json()
    assert prepared["statement"]["issuer_id"] == "LAB-2"
    expect_problem(
        lab.upload(DEMO_DCC, sign_prepared(prepared, LAB2), other), 422, "laboratory_mismatch"
    )


@pytest.mark.parametrize(
    ("token", "status", "code"),
    [
        (None, 401, "token_missing"),
        ("qil_not-a-real-token", 401, "token_invalid"),
        (("body", "CNAS"), 403, "token_forbidden"),
        (("auditor", ""), 403, "token_forbidden"),
    ],
    ids=["no-token", "bad-token", "body-token", "auditor-token"],
)
def test_tokens_that_may_not_prepare(
    lab: Lab, token: tuple[str, str] | str | None, status: int, code: str
) -> None:
    bearer = lab.token(*token) if isinstance(token, tuple) else token
    expect_problem(lab.prepare(DEMO_DCC, bearer), status, code)


# --- bad documents: the upload path's codes -----------------------------------------


def certification_json(**changes: Any) -> bytes:
    return json.dumps(certification_fields(**changes)).encode()


BAD_DOCUMENTS: dict[str, tuple[bytes, bytes | None, str, int, str]] = {
    "neither XML nor JSON nor PDF": (b"hello", None, "LAB-1", 400, "malformed"),
    "not UTF-8": (b"\xff\xfe\x00\xd8garbage\x80\x81", None, "LAB-1", 400, "malformed"),
    "JSON that is not UTF-8": (b'{"certificate_number": "\xff\xfe"}', None, "DEMO-CB", 400, ""),
    "XML that is not a DCC": (b"<?xml version='1.0'?><x/>", None, "LAB-1", 400, ""),
    "entity expansion": (
        b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaa">]><d>&a;</d>',
        None,
        "LAB-1",
        400,
        "",
    ),
    "truncated DCC": (DEMO_DCC[: len(DEMO_DCC) // 2], None, "LAB-1", 400, ""),
    "certificate of another certification body": (
        certification_json(),  # names CB-1
        None,
        "DEMO-CB",
        422,
        "document_mismatch",
    ),
    "certificate not Active": (
        certification_json(certification_body={"id": "DEMO-CB", "name": "x"}, status="Suspended"),
        None,
        "DEMO-CB",
        422,
        "document_mismatch",
    ),
    "certification JSON against its schema": (
        b'{"certificate_number": 7}',
        None,
        "DEMO-CB",
        422,
        "schema_invalid",
    ),
    "PDF without its record": (PDF, None, "DEMO-CB", 422, "record_invalid"),
    "DCC with a record": (DEMO_DCC, CERTIFICATION, "LAB-1", 422, "record_invalid"),
    "document over 20 MiB": (b"<x>" + b" " * (20 * 1024 * 1024) + b"</x>", None, "LAB-1", 413, ""),
}


@pytest.mark.parametrize(
    ("document", "record", "issuer", "status", "code"),
    list(BAD_DOCUMENTS.values()),
    ids=list(BAD_DOCUMENTS),
)
def test_bad_documents_get_the_upload_paths_problem(
    lab: Lab, document: bytes, record: bytes | None, issuer: str, status: int, code: str
) -> None:
    token = lab.token("issuer", issuer)
    refused = lab.prepare(document, token, record)
    assert refused.headers["content-type"] == PROBLEM_JSON, refused.text
    problem = refused.json()
    if code:
        assert (refused.status_code, problem["code"]) == (status, code), problem
    else:
        assert refused.status_code == status, problem
    # The upload path, with an envelope its signer check lets through to the
    # document, answers the same.
    key, good = (CB, CERTIFICATION) if issuer == "DEMO-CB" else (LAB, DEMO_DCC)
    fields = lab.ledger.documents.statement(good, issuer, datetime.now(UTC)).fields
    stamped = {"signed_at": entry.format_time(datetime.now(UTC)), **fields}
    envelope = jcs.canonical_bytes(dsse.sign(statement.encode(stamped), key).to_json())
    uploaded = lab.upload(document, envelope, token, record)
    assert (uploaded.status_code, uploaded.json()["code"]) == (refused.status_code, problem["code"])


# --- hostile requests ---------------------------------------------------------------


def test_hostile_requests_are_problems(lab: Lab) -> None:
    token = lab.token("issuer", "LAB-1")
    auth = {"Authorization": f"Bearer {token}"}
    post = lab.client.post
    expect_problem(lab.prepare(None, token), 422, "request_invalid")  # no document
    expect_problem(lab.prepare(b"", token), 400, "malformed")  # an empty one
    expect_problem(post(PREPARE, json={"document": "x"}, headers=auth), 422, "request_invalid")
    expect_problem(
        post(PREPARE, content=DEMO_DCC, headers={**auth, "Content-Type": "application/xml"}),
        422,
        "request_invalid",
    )
    broken = {**auth, "Content-Type": "multipart/form-data; boundary=xyz"}
    response = post(PREPARE, content=b"--xyz\r\nno headers here", headers=broken)
    assert response.status_code in (400, 422)
    assert response.headers["content-type"] == PROBLEM_JSON
    declared = {**broken, "Content-Length": str(CERTIFICATE_REQUEST_LIMIT + 1)}
    expect_problem(post(PREPARE, content=b"x", headers=declared), 413, "request_too_large")
    expect_problem(lab.client.get(PREPARE, headers=auth), 405, "method_not_allowed")
    expect_problem(lab.prepare(DEMO_DCC, token, issuer_id="x" * 65), 422, "request_invalid")


def test_a_large_dcc_is_prepared_like_an_upload(lab: Lab) -> None:
    """Prepare takes what an upload takes: a 2 MiB document is no request_too_large."""
    large = DEMO_DCC + b"<!--" + b" " * (2 * 1024 * 1024) + b"-->\n"
    response = lab.prepare(large, lab.token("issuer", "LAB-1"))
    assert response.status_code == 200, response.text
    assert response.json()["document_sha256"] == hashlib.sha256(large).hexdigest()


# --- qiledger statement ---------------------------------------------------------------


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_prints_the_statement_prepare_answers(
    lab: Lab, tmp_path: Path, capfdbinary: pytest.CaptureFixture[bytes]
) -> None:
    path = tmp_path / "dcc.xml"
    path.write_bytes(DEMO_DCC)
    data_dir = str(lab.ledger.settings.data_dir)
    assert main(["--data-dir", data_dir, "statement", str(path), "--issuer", "LAB-1"]) == 0
    out = capfdbinary.readouterr().out
    assert out.endswith(b"\n")
    printed = statement.parse(out[:-1])  # canonical: parse refuses anything else
    prepared = lab.prepare(DEMO_DCC, lab.token("issuer", "LAB-1")).json()
    without_time = {k: v for k, v in prepared["statement"].items() if k != "signed_at"}
    assert {k: v for k, v in printed.fields.items() if k != "signed_at"} == without_time

    argv = ["--json", "--data-dir", data_dir, "statement", str(path), "--issuer", "LAB-1"]
    assert main(argv) == 0
    answer = json.loads(capfdbinary.readouterr().out)
    check_prepared(answer, printed.signed_at - timedelta(days=1), datetime.now(UTC))
    assert answer["media_type"] == "application/vnd.ptb.dcc+xml"
    # What it prints is signed as is and accepted.
    token = lab.token("issuer", "LAB-1")
    envelope = sign_prepared(answer, LAB)
    assert lab.upload(DEMO_DCC, envelope, token).status_code == 201


def test_cli_statement_for_a_pdf_and_refusals(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pdf, record = tmp_path / "cert.pdf", tmp_path / "cert.json"
    pdf.write_bytes(PDF)
    record.write_bytes(CERTIFICATION)
    data_dir = str(tmp_path / "nothing-here")  # no ledger is needed
    code, out, _ = run_cli(
        capsys, "--json", "--data-dir", data_dir, "statement", str(pdf), "--issuer", "DEMO-CB",
        "--record", str(record),
    )  # fmt: skip
    assert code == 0
    assert json.loads(out)["document_sha256"] == hashlib.sha256(PDF).hexdigest()
    code, _, err = run_cli(
        capsys, "--json", "--data-dir", data_dir, "statement", str(pdf), "--issuer", "DEMO-CB"
    )
    assert (code, json.loads(err)["code"]) == (1, "record_invalid")
    code, _, err = run_cli(capsys, "statement", str(tmp_path / "missing.xml"), "--issuer", "LAB-1")
    assert code == 1
    assert err.startswith("qiledger: error: cannot read")


# --- README: the statement reference cannot drift -------------------------------------

README = Path(__file__).resolve().parents[1] / "README.md"


def statement_reference() -> dict[str, tuple[dict[str, bool], list[str]]]:
    """README's "Statement reference": per ``### `type` `` heading, its table's
    fields (name -> required) and its JSON examples."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Statement reference\n", 1)[1].split("\n## ", 1)[0]
    found: dict[str, tuple[dict[str, bool], list[str]]] = {}
    for block in re.split(r"\n### ", section)[1:]:
        heading, body = block.split("\n", 1)
        name = re.fullmatch(r"`([a-z.]+)`", heading.strip())
        if name is None:
            continue  # a section of prose, not a statement type
        rows = re.findall(r"^\| `(\w+)` \|.*\| (yes|no) \|[^|]*\|$", body, re.MULTILINE)
        examples = re.findall(r"```json\n(.*?)\n```", body, re.DOTALL)
        found[name.group(1)] = ({f: r == "yes" for f, r in rows}, examples)
    return found


def test_the_readme_statement_reference_matches_the_parser() -> None:
    reference = statement_reference()
    assert reference.keys() == statement.BUILDERS.keys() == statement.STATEMENT_TYPES
    for kind, (table, examples) in reference.items():
        expected = {"type": True, "signed_at": True}
        expected |= {f: required for f, (required, _) in statement.FIELDS[kind].items()}
        assert table == expected, kind
        assert len(examples) == 1, kind
        parsed = statement.parse(jcs.canonical_bytes(json.loads(examples[0])))
        assert parsed.type == kind
