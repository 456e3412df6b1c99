"""Small builders shared by the registry tests: keys, statements, envelopes and a
trust chain (log key → accreditation body → accredited issuer)."""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from registry.demo import DEMO_DOCUMENTS
from registry.ledger import Ledger
from registry.sequencer import DOCUMENT_TYPES, Accepted, Outcome, Refused, Sequencer
from registry.storage.sql_log import StoredDocument
from verifier import dcc, dsse, jcs, statement
from verifier.entry import format_time, parse_time
from verifier.errors import QILedgerError
from verifier.keys import SigningKey

# One signing time per test run, so the same statement built twice is the same
# envelope (the log answers a resubmission with the existing index).
SIGNED_AT = format_time(datetime.now(UTC))
SIGNED_AT_TIME = parse_time(SIGNED_AT)
BODY_ID = "CNAS"


# --- the shared reference data, read in place and only when a test needs it ----------

SHARED_DIR = Path(
    os.environ.get("QILEDGER_SHARED_DIR") or Path(__file__).resolve().parents[2] / "shared"
)
"""PTB's DCC schemas and example DCCs (``dcc/``) and the known-answer vectors
(``vectors/``): the ``shared/`` folder beside the repository, or QILEDGER_SHARED_DIR.
Tests marked ``shared`` are skipped with a visible reason when it is missing,
except in CI (CI=true) or with QILEDGER_REQUIRE_SHARED=1, where that fails them."""
REQUIRE_SHARED = os.environ.get("CI") == "true" or os.environ.get("QILEDGER_REQUIRE_SHARED") == "1"
DCC_SCHEMAS = SHARED_DIR / "dcc" / "schemas" / "dcc"
"""The folder holding ``v3.1.1 … v3.3.0/dcc.xsd`` (what QILEDGER_DCC_SCHEMAS names)."""
DCC_EXAMPLES = SHARED_DIR / "dcc" / "examples"
LUTAML = DCC_EXAMPLES / "lutaml-dcc"
SIEMENS = DCC_EXAMPLES / "siemens-pydcc"
TLOG_VECTORS = SHARED_DIR / "vectors" / "tlog-vectors.json"


def shared_missing() -> str | None:
    """Why the tests needing the shared folder cannot run, or None if they can."""
    if SHARED_DIR.is_dir():
        return None
    return (
        f"needs the shared folder {SHARED_DIR} (PTB DCC schemas and examples, "
        "known-answer vectors), which does not exist; set QILEDGER_SHARED_DIR"
    )


def require_shared() -> None:
    """Skip the running test if the shared folder is missing (fail it if required)."""
    reason = shared_missing()
    if reason is None:
        return
    if REQUIRE_SHARED:
        pytest.fail(f"CI requires the shared folder (QILEDGER_REQUIRE_SHARED): {reason}")
    pytest.skip(reason)


@functools.cache
def shared_bytes(path: Path) -> bytes:
    """A file of the shared folder, read once (skipping the test if it is missing)."""
    require_shared()
    return path.read_bytes()


@functools.cache
def dcc_schemas() -> dcc.DccSchemas:
    """PTB's DCC schemas, compiled once per test process (skipping if missing)."""
    require_shared()
    return dcc.DccSchemas(DCC_SCHEMAS)


@functools.cache
def tlog_vectors() -> dict[str, Any]:
    """The known-answer vectors (shared/vectors/tlog-vectors.json), parsed once."""
    loaded: dict[str, Any] = json.loads(shared_bytes(TLOG_VECTORS).decode("utf-8"))
    return loaded


def shared_params(values: Callable[[], Iterable[Any]]) -> list[Any]:
    """Parameters drawn from the shared folder at collection, if it is there; if not,
    one placeholder marked ``shared``, so the test is reported as skipped (or failed,
    when required) with the reason instead of vanishing or breaking collection."""
    if shared_missing() is None:
        return list(values())
    return [pytest.param(None, id="shared-missing", marks=pytest.mark.shared)]


DEMO_LABORATORY_CODE = b"CNAS-DEMO-L0001"
"""The demo DCCs' calibrationLaboratoryCode: the demo laboratory's accreditation."""


def demo_dcc(name: str = "demo-dcc.xml", issuer: str = "LAB-1") -> bytes:
    """A demo DCC as ``issuer``'s own: its laboratory code made the issuer's id
    (a DCC naming another laboratory is refused as ``laboratory_mismatch``)."""
    data = (DEMO_DOCUMENTS / name).read_bytes()
    code = b"<dcc:calibrationLaboratoryCode>%s</dcc:calibrationLaboratoryCode>"
    assert code % DEMO_LABORATORY_CODE in data
    return data.replace(code % DEMO_LABORATORY_CODE, code % issuer.encode())


def key_from(label: str) -> SigningKey:
    """A deterministic test key (tests pass randomness in, as everything does)."""
    return SigningKey.from_seed(hashlib.sha256(label.encode()).digest())


BODY_KEY = key_from("accreditation-body")


def b64key(key: SigningKey) -> str:
    return base64.b64encode(key.public_key.raw).decode()


TEST_DOCUMENTS: dict[str, bytes] = {}
"""Every document :func:`issue_statement` made, by SHA-256 (a certificate entry is
logged only with its document)."""


def register_document(document: bytes) -> str:
    """Remember a test document for :func:`documents_for`; its hex SHA-256."""
    digest = hashlib.sha256(document).hexdigest()
    TEST_DOCUMENTS[digest] = document
    return digest


def issue_document(n: int, issuer: str = "LAB-1") -> bytes:
    document = f"document {issuer} {n}".encode()
    register_document(document)
    return document


def issue_statement(n: int, issuer: str = "LAB-1", **extra: Any) -> dict[str, Any]:
    """Certificate ``n`` of ``issuer`` (``extra``: fields changed or added, also
    malformed ones, so this stays a dict)."""
    built = statement.CertificateIssue(
        issuer_id=issuer,
        certificate_id=f"{issuer}/DCC-{n:06d}",
        kind="dcc",
        document_sha256=hashlib.sha256(issue_document(n, issuer)).hexdigest(),
        issued=date(2026, 11, 24),
    )
    return {**built.to_json(SIGNED_AT_TIME), **extra}


def body_add(body_key: SigningKey = BODY_KEY, body_id: str = BODY_ID) -> dict[str, Any]:
    return statement.BodyAdd(
        body_id=body_id,
        name="China National Accreditation Service",
        country="CN",
        public_key=body_key.public_key,
    ).to_json(SIGNED_AT_TIME)


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
    return statement.AccreditationGrant(
        body_id=body_id,
        issuer_id=issuer,
        issuer_name=f"{issuer} Calibration Laboratory",
        issuer_kind=kind,
        public_keys=tuple(k.public_key for k in keys),
        accreditation_number=number or f"{body_id}-{issuer}",
        standard="ISO/IEC 17025:2017",
        scope="Temperature and humidity calibration",
        covers=covers,
        valid_from=date.fromisoformat(valid_from),
        valid_until=date.fromisoformat(valid_until),
    ).to_json(SIGNED_AT_TIME)


def envelope_bytes(fields: dict[str, Any], key: SigningKey) -> bytes:
    return jcs.canonical_bytes(dsse.sign(statement.encode(fields), key).to_json())


def documents_for(envelopes: Sequence[bytes]) -> dict[int, StoredDocument]:
    """The test document of each certificate statement among ``envelopes`` (those
    :func:`issue_statement` made); malformed envelopes are left to the sequencer."""
    documents: dict[int, StoredDocument] = {}
    for position, raw in enumerate(envelopes):
        try:
            stmt = statement.parse(dsse.parse(raw).payload)
        except QILedgerError:
            continue
        digest = stmt.get("document_sha256")
        if stmt.type in DOCUMENT_TYPES and digest not in TEST_DOCUMENTS:
            # made in another process: issue_statement's documents follow from the id
            issuer, _, number = stmt["certificate_id"].partition("/DCC-")
            if number.isdigit():
                issue_document(int(number), issuer)
        if stmt.type in DOCUMENT_TYPES and digest in TEST_DOCUMENTS:
            documents[position] = StoredDocument(
                digest, "application/octet-stream", TEST_DOCUMENTS[digest]
            )
    return documents


def submit_with_documents(sequencer: Sequencer, envelopes: Sequence[bytes]) -> list[Outcome]:
    """``sequencer.submit_many`` with the test document of every certificate statement."""
    return sequencer.submit_many(envelopes, documents_for(envelopes))


def submit_one(sequencer: Sequencer, envelope: bytes) -> Accepted:
    """``sequencer.submit`` with the test document of a certificate statement."""
    (outcome,) = submit_with_documents(sequencer, [envelope])
    if isinstance(outcome, Refused):
        raise outcome.error
    return outcome


def accredit(ledger: Ledger, issuer: str, keys: list[SigningKey]) -> None:
    """Register the test body (once) and accredit ``issuer`` with ``keys``."""
    state = ledger.trust_state()
    if BODY_ID not in state.bodies:
        ledger.sequencer.submit(envelope_bytes(body_add(), ledger.load_log_key().key))
    ledger.sequencer.submit(envelope_bytes(grant(issuer, keys), BODY_KEY))


def certification_fields(number: str = "QMS-1", **changes: Any) -> dict[str, Any]:
    """A valid certification certificate (IAF CertSearch JSON) of CB-1."""
    doc: dict[str, Any] = {
        "certificate_number": number,
        "certified_entity": {
            "name": "Example Valves Co., Ltd.",
            "country": "CN",
            "sites": [{"address": "1 Example Road, Ningbo", "country": "CN"}],
        },
        "scope": "Design and manufacture of industrial valves",
        "standard": "ISO 9001:2015",
        "scheme": "management_system",
        "certification_body": {"id": "CB-1", "name": "Example Certification Center"},
        "accreditation_body": {"id": "CNAS", "accreditation_number": "CNAS C001-M"},
        "original_issue_date": "2020-01-01",
        "issue_date": "2026-01-01",
        "expiry_date": "2028-12-31",
        "status": "Active",
    }
    doc.update(changes)
    return doc


# --- served registries ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(
    url: str,
    process: subprocess.Popen[bytes],
    timeout: float = 60,
    log_file: Path | None = None,
) -> None:
    """Wait until ``qiledger serve`` at ``url`` answers /healthz; fail if it exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            logged = f": {log_file.read_text()}" if log_file is not None else ""
            raise AssertionError(f"server exited with {process.returncode}{logged}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not become healthy")


# --- a server that lies: responses rewritten in flight ---------------------------------

Rewrite = Callable[[str, bytes], bytes]
"""(request path, whole response body) -> the body to send instead."""


class RewriteResponses:
    """Passes every request to ``app``; hands the whole body of each response to
    ``rewrite(path, body)`` and sends what it returns (Content-Length fixed up).
    ``app`` may be switched too: one address showing another log."""

    def __init__(self, app: ASGIApp, rewrite: Rewrite | None = None) -> None:
        self.app = app
        self.rewrite = rewrite

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        rewrite = self.rewrite
        if scope["type"] != "http" or rewrite is None:
            await self.app(scope, receive, send)
            return
        start: Message = {}
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
                return
            if message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if message.get("more_body", False):
                    return
                body = rewrite(scope["path"], b"".join(chunks))
                headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
                headers.append((b"content-length", str(len(body)).encode()))
                await send({**start, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
            await send(message)

        await self.app(scope, receive, capture)
