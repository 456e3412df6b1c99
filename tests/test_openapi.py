"""The OpenAPI document says what the API really sends: a response model for
every 2xx JSON answer, the real media type of every other one, and
``application/problem+json`` (RFC 9457) for every error status. Real answers of
every documented route are validated against it (schemathesis), certificate ids
holding '/' included; ``tests/test_api_fuzz.py`` does the same for generated
requests. ``/docs`` loads only assets the registry serves itself."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pytest
import schemathesis
from fastapi.testclient import TestClient

from registry.api.app import create_app
from registry.api.routes import certificates, issuers, log, schemas, statements, tiles
from registry.api.service import ServiceOptions
from registry.config import Settings
from registry.demo import DEMO_DOCUMENTS
from registry.storage.tokens import TokenStore
from tests.conftest import make_ledger
from tests.helpers import BODY_KEY, demo_dcc, envelope_bytes, grant, key_from
from verifier import dsse, jcs
from verifier.encoding import b64decode

LAB, CB = key_from("lab-1"), key_from("demo-cb")
DCC_ID = "LAB-1/DCC-2026-0001"  # holds '/': the whole rest of the path
PROBLEM_JSON = "application/problem+json"
PROBLEM_REF = "#/components/schemas/Problem"
OWN_ROUTERS = (log, certificates, statements, issuers, schemas, tiles)
"""The routers this document is checked for (pages and marks document themselves)."""


@dataclass
class Served:
    client: TestClient
    spec: dict[str, Any]
    schema: Any  # schemathesis' loaded schema
    issuer_token: str
    auditor_token: str


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("openapi") / "data")
    ledger = make_ledger(settings, LAB)
    ledger.sequencer.submit(
        envelope_bytes(
            grant("DEMO-CB", [CB], kind="certification_body", covers=("management_system",)),
            BODY_KEY,
        )
    )
    ledger.issue_certificate(demo_dcc(), "LAB-1", LAB)
    ledger.issue_certificate(demo_dcc("demo-dcc-amended.xml"), "LAB-1", LAB)
    ledger.issue_certificate(
        (DEMO_DOCUMENTS / "demo-certification.json").read_bytes(), "DEMO-CB", CB
    )
    store = TokenStore(ledger.db)
    issuer_token, _ = store.create("issuer", "LAB-1")
    auditor_token, _ = store.create("auditor", "")
    app = create_app(ledger, ServiceOptions(rate_per_second=0))
    try:
        with TestClient(app) as client:
            spec = client.get("/openapi.json").json()
            loaded = schemathesis.openapi.from_asgi("/openapi.json", app)
            yield Served(client, spec, loaded, issuer_token, auditor_token)
    finally:
        ledger.close()


def own_operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    own = {"/healthz"} | {
        re.sub(r"\{(\w+):path\}", r"{\1}", route.path)
        for module in OWN_ROUTERS
        for route in module.router.routes
    }
    assert own <= spec["paths"].keys(), own - spec["paths"].keys()
    for path in sorted(own):
        for method, operation in spec["paths"][path].items():
            yield method, path, operation


# --- the document -------------------------------------------------------------------

NON_JSON_TYPES = {
    "text/plain; charset=utf-8",  # checkpoints
    "application/octet-stream",  # tiles
    "application/schema+json",
    "application/vnd.ptb.dcc+xml",  # documents, as stored
    "application/vnd.qiledger.certification+json",
    "application/pdf",
}


def test_every_2xx_has_a_model_or_its_real_media_type(served: Served) -> None:
    components = served.spec["components"]["schemas"]
    for method, path, operation in own_operations(served.spec):
        successes = {s: r for s, r in operation["responses"].items() if s.startswith("2")}
        assert successes, f"{method} {path} documents no success"
        for status, response in successes.items():
            content = response.get("content")
            assert content, f"{method} {path} {status} has no content"
            for media_type, body in content.items():
                where = f"{method} {path} {status} {media_type}"
                if media_type == "application/json":
                    ref = body["schema"].get("$ref", "")
                    assert ref.startswith("#/components/schemas/"), where
                    model = components[ref.rsplit("/", 1)[1]]
                    assert model["type"] == "object", where
                    assert model["required"], where
                else:
                    assert media_type in NON_JSON_TYPES, where
                    assert body["schema"]["type"] in ("string", "object"), where


def test_every_error_is_problem_json(served: Served) -> None:
    problem = served.spec["components"]["schemas"]["Problem"]
    assert set(problem["required"]) == {"type", "title", "status", "detail", "code"}
    assert "HTTPValidationError" not in served.spec["components"]["schemas"]
    for method, path, operation in own_operations(served.spec):
        answers = operation["responses"]
        errors = {int(s) for s in answers if int(s) >= 400}
        assert {500, 503} <= errors, f"{method} {path}"
        if operation.get("security"):
            assert {401, 403, 429} <= errors, f"{method} {path}"
        if "requestBody" in operation:
            assert {400, 413, 422} <= errors, f"{method} {path}"
        if "{" in path:
            assert 404 in errors, f"{method} {path}"
        for status in errors:
            assert answers[str(status)]["content"] == {
                PROBLEM_JSON: {"schema": {"$ref": PROBLEM_REF}}
            }, f"{method} {path} {status}"


# --- real answers against it ----------------------------------------------------------


def validate(served: Served, path: str, method: str, response: httpx.Response) -> None:
    """The answer conforms to the operation's documented status, media type and schema."""
    operation = served.schema[path][method.upper()]
    documented = operation.definition.raw["responses"][str(response.status_code)]
    media_type = response.headers["content-type"]
    assert media_type in documented["content"], (path, media_type, list(documented["content"]))
    operation.validate_response(response)


READS = [
    ("/healthz", "/healthz", False),
    ("/api/v1/log", "/api/v1/log", False),
    ("/api/v1/log/checkpoint", "/api/v1/log/checkpoint", False),
    ("/api/v1/log/entries/{index}", "/api/v1/log/entries/3?tree_size=5", False),
    ("/api/v1/log/proof/inclusion", "/api/v1/log/proof/inclusion?index=2", False),
    ("/api/v1/log/proof/consistency", "/api/v1/log/proof/consistency?first=3&second=5", False),
    ("/api/v1/certificates/{certificate_id}", f"/api/v1/certificates/{DCC_ID}", False),
    ("/api/v1/certificates/{certificate_id}", f"/api/v1/certificates/{DCC_ID}-A1", False),
    (
        "/api/v1/certificates/{certificate_id}",
        "/api/v1/certificates/" + quote(DCC_ID, safe=""),  # '/' as %2F
        False,
    ),
    ("/api/v1/certificates", None, False),  # by digest, filled in below
    ("/api/v1/documents/{certificate_id}", f"/api/v1/documents/{DCC_ID}", True),
    ("/api/v1/issuers", "/api/v1/issuers", False),
    ("/api/v1/issuers/{issuer_id}", "/api/v1/issuers/LAB-1", False),
    (
        "/api/v1/schemas/certification-certificate.schema.json",
        "/api/v1/schemas/certification-certificate.schema.json",
        False,
    ),
    ("/checkpoint", "/checkpoint", False),
    ("/tile/{path}", "/tile/0/000.p/5", False),
    ("/tile/entries/{path}", "/tile/entries/000.p/5", False),
]


@pytest.mark.parametrize(("path", "url", "auth"), READS, ids=[r[1] or r[0] for r in READS])
def test_real_reads_conform(served: Served, path: str, url: str | None, auth: bool) -> None:
    if url is None:
        view = served.client.get(f"/api/v1/certificates/{DCC_ID}").json()
        url = f"/api/v1/certificates?digest=sha256:{view['document_sha256']}"
    headers = {"Authorization": f"Bearer {served.auditor_token}"} if auth else {}
    response = served.client.get(url, headers=headers)
    assert response.status_code == 200, response.text
    validate(served, path, "get", response)


def test_a_certificate_id_with_slashes_in_its_number(served: Served) -> None:
    """A number may hold '/' too: the id is the whole rest of the path, also
    when a generated client encodes the parameter (schemathesis does)."""
    case = served.schema["/api/v1/certificates/{certificate_id}"]["GET"].Case(
        path_parameters={"certificate_id": DCC_ID}
    )
    response = case.call()
    assert response.status_code == 200
    assert response.json()["certificate_id"] == DCC_ID
    missing = served.client.get("/api/v1/certificates/LAB-1/a/b/c")
    assert (missing.status_code, missing.headers["content-type"]) == (404, PROBLEM_JSON)
    validate(served, "/api/v1/certificates/{certificate_id}", "get", missing)


def test_real_writes_and_refusals_conform(served: Served) -> None:
    auth = {"Authorization": f"Bearer {served.issuer_token}"}
    post = served.client.post
    prepared = post(
        "/api/v1/statements/prepare",
        files={"document": ("dcc.xml", demo_dcc(), "application/xml")},
        headers=auth,
    )
    assert prepared.status_code == 200, prepared.text
    validate(served, "/api/v1/statements/prepare", "post", prepared)
    # the same certificate again: 200 with its entry (a receipt all the same)
    envelope = jcs.canonical_bytes(
        dsse.sign(b64decode(prepared.json()["payload"], "payload"), LAB).to_json()
    )
    again = post(
        "/api/v1/certificates",
        files={
            "document": ("dcc.xml", demo_dcc(), "application/xml"),
            "envelope": ("e.json", envelope, "application/json"),
        },
        headers=auth,
    )
    assert again.status_code == 200, again.text
    validate(served, "/api/v1/certificates", "post", again)
    for response, path, method in (
        (post("/api/v1/statements", content=b"{}", headers=auth), "/api/v1/statements", "post"),
        (post("/api/v1/statements"), "/api/v1/statements", "post"),
        (post("/api/v1/statements/prepare", headers=auth), "/api/v1/statements/prepare", "post"),
        (served.client.get("/api/v1/log/entries/99"), "/api/v1/log/entries/{index}", "get"),
        (served.client.get("/tile/9/x"), "/tile/{path}", "get"),
        (served.client.get("/api/v1/issuers/NOBODY"), "/api/v1/issuers/{issuer_id}", "get"),
    ):
        assert response.status_code >= 400
        assert response.headers["content-type"] == PROBLEM_JSON
        validate(served, path, method, response)


# --- /docs offline -----------------------------------------------------------------------


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value:
                self.urls.append(value)


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_load_only_local_assets(served: Served, page: str) -> None:
    response = served.client.get(page)
    assert response.status_code == 200
    html = response.text
    links = _Links()
    links.feed(html)
    # the scripts name the OpenAPI document too (url: '/openapi.json', spec-url)
    urls = links.urls + re.findall(r"""(?:url|spec-url)\s*[:=]\s*['"]([^'"]+)['"]""", html)
    assert len(urls) >= 3, urls
    assert not re.search(r"(https?:)?//[\w.-]+\.\w", html), "an absolute URL in the page"
    for url in urls:
        parts = urlsplit(url)
        assert (parts.scheme, parts.netloc) == ("", ""), f"{page} loads {url} from elsewhere"
        assert served.client.get(url).status_code == 200, url
    assert "/openapi.json" in urls
