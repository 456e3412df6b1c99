"""Edges of the HTTP service, seen from a client of a real ``qiledger serve``:
a client that hangs up mid-body, HEAD on every read, and certificate numbers
that end in what a suffix route would take for itself."""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.routing import Route

from registry.api.app import ROUTERS, create_app
from registry.config import Settings
from registry.ledger import Ledger
from registry.storage.tokens import TokenStore
from tests.conftest import make_ledger
from tests.helpers import demo_dcc, free_port, key_from, wait_healthy
from verifier import dsse, jcs, statement
from verifier.entry import format_time

DEMO_DCC = demo_dcc()
DEMO_NUMBER = b"DCC-2026-0001"
LAB = key_from("lab-1")
# Certificate numbers are the issuer's own and may hold '/': these end in the
# suffix the document route used to be reached by.
NUMBERS = ("DCC-2026-0001", "DCC-2026-0001/document", "DCC-2026-0001/document/document")
DISCONNECT_LINE = "client disconnected before the request body was complete"


def dcc(number: str) -> bytes:
    """The demo DCC as LAB-1's own, under certificate number ``number``."""
    return DEMO_DCC.replace(DEMO_NUMBER, number.encode())


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- a real server ---------------------------------------------------------------


@dataclass
class Server:
    url: str
    port: int
    process: subprocess.Popen[bytes]
    log_file: Path

    @classmethod
    def start(cls, settings: Settings, log_file: Path) -> Server:
        port = free_port()
        command = [sys.executable, "-m", "registry", "--data-dir", str(settings.data_dir)]
        command += ["serve", "--port", str(port), "--workers", "1"]
        with log_file.open("wb") as log:  # the child keeps its own descriptor
            process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ)
            )
        server = cls(f"http://127.0.0.1:{port}", port, process, log_file)
        wait_healthy(server.url, process, log_file=log_file)
        return server

    def stop(self) -> str:
        """Shut down gracefully (uvicorn finishes every request it is handling
        first) and return everything the server logged."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.log_file.read_text()


def _new_registry(data_dir: Path) -> tuple[Settings, dict[str, str]]:
    """A ledger where LAB-1 is accredited, and tokens for it."""
    settings = Settings(data_dir=data_dir)
    ledger = make_ledger(settings, LAB)
    store = TokenStore(ledger.db)
    tokens = {
        "lab": store.create("issuer", "LAB-1")[0],
        "other_lab": store.create("issuer", "LAB-2")[0],
        "auditor": store.create("auditor", "")[0],
    }
    ledger.close()
    return settings, tokens


def _envelope(document: bytes, settings: Settings) -> bytes:
    """The issuer's signed statement over ``document``, as its system makes it."""
    ledger = Ledger.open(settings)
    try:
        at = ledger.clock()
        fields = ledger.documents.statement(document, "LAB-1", at).fields
    finally:
        ledger.close()
    stamped = {"signed_at": format_time(at), **fields}
    return jcs.canonical_bytes(dsse.sign(statement.encode(stamped), LAB).to_json())


@dataclass
class Served:
    server: Server
    tokens: dict[str, str]
    documents: dict[str, bytes]  # certificate id -> its document

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One server for the read tests, holding a certificate under each of NUMBERS,
    registered through the API as an issuer's system would."""
    root = tmp_path_factory.mktemp("served")
    settings, tokens = _new_registry(root / "data")
    server = Server.start(settings, root / "server.log")
    try:
        documents = {}
        for number in NUMBERS:
            document = dcc(number)
            response = httpx.post(
                f"{server.url}/api/v1/certificates",
                files={
                    "document": ("dcc.xml", document),
                    "envelope": ("envelope.json", _envelope(document, settings)),
                },
                headers=bearer(tokens["lab"]),
                timeout=60,
            )
            assert response.status_code == 201, response.text
            documents[response.json()["certificate_id"]] = document
        assert sorted(documents) == sorted(f"LAB-1/{n}" for n in NUMBERS)
        yield Served(server, tokens, documents)
    finally:
        server.stop()


# --- a client that hangs up mid-body ------------------------------------------------


def _multipart_start(boundary: str) -> bytes:
    return (
        f'--{boundary}\r\nContent-Disposition: form-data; name="document"; '
        'filename="dcc.xml"\r\nContent-Type: application/octet-stream\r\n\r\n'
    ).encode() + DEMO_DCC[:500]


def _hang_up_mid_body(port: int, path: str, content_type: str, token: str, part: bytes) -> None:
    """Declare a longer body than is sent, send part of it, and close.

    ``Expect: 100-continue`` makes the server say when the application starts
    reading the body, so the client hangs up exactly mid-body."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(part) + 20_000}\r\n"
        "Expect: 100-continue\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(head)
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(4096)
            assert chunk, f"server closed the connection: {answer!r}"
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 100 "), answer
        sock.sendall(part)


BOUNDARY = "qiledger-edge-boundary"
HANG_UPS = {
    "certificate": (
        "/api/v1/certificates",
        f"multipart/form-data; boundary={BOUNDARY}",
        _multipart_start(BOUNDARY),
    ),
    "statement": ("/api/v1/statements", "application/json", b'{"payload": "'),
}


@pytest.mark.parametrize("route", sorted(HANG_UPS))
def test_a_client_hanging_up_mid_body_is_one_info_line(tmp_path: Path, route: str) -> None:
    settings, tokens = _new_registry(tmp_path / "data")
    server = Server.start(settings, tmp_path / "server.log")
    try:
        path, content_type, part = HANG_UPS[route]
        _hang_up_mid_body(server.port, path, content_type, tokens["lab"], part)
        # The server still serves everyone else.
        assert httpx.get(f"{server.url}/api/v1/log", timeout=30).status_code == 200
    finally:
        logged = server.stop()
    lines = logged.splitlines()
    assert "Traceback" not in logged, logged
    assert not [line for line in lines if line.startswith(("ERROR", "CRITICAL"))], logged
    disconnects = [line for line in lines if DISCONNECT_LINE in line]
    assert len(disconnects) == 1, logged
    assert disconnects[0].startswith("INFO:"), logged
    assert path in disconnects[0]


# --- HEAD answers like GET ----------------------------------------------------------


def _every_get_url(served: Served) -> dict[str, tuple[str, dict[str, str]]]:
    """Each public GET route of the OpenAPI schema (and the schema and docs pages)
    with real values from the served log: route -> (URL, request headers)."""
    size = httpx.get(f"{served.url}/api/v1/log").json()["size"]
    demo_id = f"LAB-1/{NUMBERS[0]}"
    digest = hashlib.sha256(served.documents[demo_id]).hexdigest()
    filled = {
        "/api/v1/certificates": f"/api/v1/certificates?digest=sha256:{digest}",
        "/api/v1/certificates/{certificate_id}": f"/api/v1/certificates/{demo_id}",
        "/api/v1/documents/{certificate_id}": f"/api/v1/documents/{demo_id}",
        "/api/v1/traceability/{certificate_id}": f"/api/v1/traceability/{demo_id}",
        "/api/v1/dependents/{certificate_id}": f"/api/v1/dependents/{demo_id}",
        "/api/v1/standards": "/api/v1/standards?ref=ISO/IEC%2017025:2017",
        "/api/v1/export": f"/api/v1/export?certificate={demo_id}",
        "/api/v1/issuers": "/api/v1/issuers",
        "/api/v1/issuers/{issuer_id}": "/api/v1/issuers/LAB-1",
        "/api/v1/issuers/{issuer_id}/certificates": "/api/v1/issuers/LAB-1/certificates",
        "/api/v1/log": "/api/v1/log",
        "/api/v1/log/checkpoint": "/api/v1/log/checkpoint",
        "/api/v1/log/entries/{index}": "/api/v1/log/entries/1",
        "/api/v1/log/proof/consistency": f"/api/v1/log/proof/consistency?first=1&second={size}",
        "/api/v1/log/proof/inclusion": "/api/v1/log/proof/inclusion?index=1",
        "/api/v1/marks/{image_format}/{certificate_id}": f"/api/v1/marks/png/{demo_id}",
        "/api/v1/schemas/certification-certificate.schema.json": (
            "/api/v1/schemas/certification-certificate.schema.json"
        ),
        "/checkpoint": "/checkpoint",
        "/healthz": "/healthz",
        "/tile/entries/{path}": f"/tile/entries/000.p/{size}",
        "/tile/{path}": f"/tile/0/000.p/{size}",
        "/openapi.json": "/openapi.json",
        "/docs": "/docs",
    }
    schema = httpx.get(f"{served.url}/openapi.json").json()
    get_routes = {path for path, ops in schema["paths"].items() if "get" in ops}
    # A GET route added later must be added here, or this test fails.
    assert get_routes | {"/openapi.json", "/docs"} == set(filled)
    auditor = bearer(served.tokens["auditor"])
    return {
        route: (url, auditor if route.startswith(("/api/v1/documents/", "/api/v1/export")) else {})
        for route, url in filled.items()
    }


def _comparable(headers: httpx.Headers) -> dict[str, str]:
    return {name: value for name, value in headers.items() if name != "date"}


def _same_as_get(served: Served, url: str, headers: dict[str, str]) -> httpx.Response:
    got = httpx.get(f"{served.url}{url}", headers=headers, timeout=30)
    head = httpx.head(f"{served.url}{url}", headers=headers, timeout=30)
    assert head.status_code == got.status_code, (url, head.status_code, got.status_code)
    assert head.content == b"", url
    if got.headers.get("transfer-encoding") == "chunked":
        # A streamed answer (an audit export) has no length to name before it is
        # made; HEAD sends the same headers without the chunked framing.
        assert "content-length" not in head.headers, url
        assert _comparable(head.headers) == {
            k: v for k, v in _comparable(got.headers).items() if k != "transfer-encoding"
        }, url
        return got
    assert _comparable(head.headers) == _comparable(got.headers), url
    # HEAD names the length GET's body has, and sends none of it.
    assert head.headers["content-length"] == str(len(got.content)), url
    return got


def test_every_get_route_answers_head_as_get(served: Served) -> None:
    for route, (url, headers) in _every_get_url(served).items():
        got = _same_as_get(served, url, headers)
        assert got.status_code == 200, (route, got.text)
        # A browser on another origin may read either (the preflight says so).
        page = {**headers, "Origin": "https://verifier.example.org"}
        head = httpx.head(f"{served.url}{url}", headers=page, timeout=30)
        assert head.headers["access-control-allow-origin"] == "*", route


@pytest.mark.parametrize(
    ("url", "token", "status"),
    [
        ("/api/v1/certificates/LAB-1/NOPE", None, 404),
        ("/api/v1/log/entries/one", None, 422),
        ("/api/v1/documents/LAB-1/DCC-2026-0001", None, 401),
        ("/api/v1/documents/LAB-1/DCC-2026-0001", "other_lab", 403),
        ("/api/v1/statements", None, 405),  # a write route: HEAD is not a read there
        ("/nothing-here", None, 404),
    ],
)
def test_a_refused_head_is_refused_as_get(
    served: Served, url: str, token: str | None, status: int
) -> None:
    headers = bearer(served.tokens[token]) if token else {}
    got = _same_as_get(served, url, headers)
    assert got.status_code == status
    assert got.headers["content-type"] == "application/problem+json"


# --- certificate numbers ending in a route's suffix ---------------------------------


@pytest.mark.parametrize("number", NUMBERS)
def test_any_certificate_number_has_its_status_and_its_document(
    served: Served, number: str
) -> None:
    certificate_id = f"LAB-1/{number}"
    view = httpx.get(f"{served.url}/api/v1/certificates/{certificate_id}")
    assert view.status_code == 200, view.text
    assert (view.json()["certificate_id"], view.json()["status"]) == (certificate_id, "Active")
    for reader in ("lab", "auditor"):
        document = httpx.get(
            f"{served.url}/api/v1/documents/{certificate_id}",
            headers=bearer(served.tokens[reader]),
        )
        assert document.status_code == 200, document.text
        assert document.content == served.documents[certificate_id]
        assert document.headers["content-type"] == "application/vnd.ptb.dcc+xml"


@pytest.mark.parametrize(
    ("number", "reader", "status", "code"),
    [
        (NUMBERS[1], None, 401, "token_missing"),
        (NUMBERS[1], "other_lab", 403, "token_forbidden"),
        (NUMBERS[2], "other_lab", 403, "token_forbidden"),
        ("NOPE", "auditor", 404, "not_found"),
        ("NOPE/document", "auditor", 404, "not_found"),
    ],
)
def test_documents_stay_private_to_their_issuer_and_auditors(
    served: Served, number: str, reader: str | None, status: int, code: str
) -> None:
    headers = bearer(served.tokens[reader]) if reader else {}
    response = httpx.get(f"{served.url}/api/v1/documents/LAB-1/{number}", headers=headers)
    assert (response.status_code, response.headers["content-type"]) == (
        status,
        "application/problem+json",
    ), response.text
    problem: dict[str, Any] = json.loads(response.content)
    assert (problem["code"], problem["status"]) == (code, status)
    if status == 404:  # the route looked the whole id up, '/document' included
        assert f"LAB-1/{number}" in problem["detail"], problem


def test_no_route_can_shadow_a_path_parameter(tmp_path: Path) -> None:
    """A ``{name:path}`` parameter matches any rest of the path, '/' included: a
    route that puts anything after one takes requests meant for another route."""
    ledger = make_ledger(Settings(data_dir=tmp_path / "data"))
    app = create_app(ledger)
    try:
        routes = [*app.routes, *(route for router in ROUTERS for route in router.routes)]
    finally:
        app.state.service.close()
        ledger.close()
    paths = [route.path for route in routes if isinstance(route, Route)]
    assert "/openapi.json" in paths
    for path in paths:
        match = re.search(r"\{[^}]*:path\}", path)
        assert match is None or match.end() == len(path), f"{path} can shadow another route"
    assert "/api/v1/certificates/{certificate_id:path}" in paths
    assert "/api/v1/documents/{certificate_id:path}" in paths
