"""The public verification pages with JavaScript off: what the server itself says
for a QR mark (/m/, /M/), a certificate id (/c/) and the file check (/verify), in
English and Chinese; every hostile token or id gets a page with a verdict (never a
500); and the JSON the page gives its in-browser check verifies with ``verifier``.

The browser side (the same pages in a real Chromium) is tests/test_pages_browser.py.
"""

from __future__ import annotations

import hashlib
import json
import re
import string
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from registry.api import i18n
from registry.api.app import create_app
from registry.config import Settings
from registry.keys import keyfile
from registry.ledger import Ledger
from tests.helpers import (
    BODY_KEY,
    SIGNED_AT_TIME,
    accredit,
    certification_fields,
    demo_dcc,
    envelope_bytes,
    grant,
    key_from,
)
from verifier import checkpoint, entry, mark, merkle, statement
from verifier.encoding import b64decode
from verifier.keys import SigningKey
from verifier.note import NoteVerifier

ORIGIN = "pages.qiledger.local/log"
LAB = key_from("lab-1")
CB = key_from("cb-1")
VALID = "LAB-1/DCC-2026-0001-A1"
SUPERSEDED = "LAB-1/DCC-2026-0001"
SUSPENDED = "LAB-1/DCC-2026-0002"
WITHDRAWN = "LAB-1/DCC-2026-0003"
EXPIRING = "CB-1/QMS-OLD"

VERDICT_EN = {
    "active": "Authentic and valid",
    "suspended": "Authentic, but suspended",
    "withdrawn": "Authentic, but withdrawn",
    "superseded": "Authentic, but superseded",
    "expired": "Authentic, but expired",
    "invalid": "Not authentic",
    "not_found": "Not found",
}


def log_key_with_plus() -> SigningKey:
    """A log key whose verifier key string has '+' inside its base64 as well as
    between its parts (regression: the browser split the string at every '+')."""
    for n in range(1000):
        key = key_from(f"pages log key {n}")
        vkey = str(NoteVerifier.for_key(ORIGIN, key.public_key))
        if "+" in vkey.split("+", 2)[2]:
            return key
    raise AssertionError("no such key among 1000 seeds")


LOG_KEY = log_key_with_plus()


def numbered_dcc(number: str) -> bytes:
    return demo_dcc().replace(b"DCC-2026-0001", number.encode())


class Clock:
    """The registry's clock, moved by the test (the expired case)."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


@dataclass
class PageRegistry:
    """A registry holding one certificate of each status, and a mark for each."""

    ledger: Ledger
    clock: Clock
    marks: dict[str, str]

    def mark_for(self, certificate_id: str, **changes: Any) -> str:
        state = self.ledger.trust_state()
        cert = state.certificate(certificate_id)
        fields: dict[str, Any] = {
            "certificate_id": certificate_id,
            "document_sha256": bytes.fromhex(cert.document_sha256),
            "index": cert.events[0].index,
            "issued_at": int(self.clock().timestamp()),
        }
        return self.ledger.sign_mark(mark.MarkClaims(**{**fields, **changes}))

    def change(self, kind: type[statement.CertificateChange], certificate_id: str) -> None:
        fields = kind(
            issuer_id=certificate_id.split("/", 1)[0],
            certificate_id=certificate_id,
            reason=f"{kind.TYPE} by the page tests",
        ).to_json(SIGNED_AT_TIME)
        self.ledger.sequencer.submit(envelope_bytes(fields, LAB))


def build_registry(
    data_dir: Path, extra: int = 0, log_key: SigningKey | None = None
) -> PageRegistry:
    """Entries: the trust chain, ``extra`` unrelated certificates (a fork test's other
    history), then valid, superseded, suspended, withdrawn and expiring certificates.
    ``log_key``: the log key already in the data dir (a fork of another log)."""
    clock = Clock()
    settings = Settings(data_dir=data_dir)
    if log_key is not None and not settings.log_key_file.exists():
        settings.log_key_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        keyfile.write_private_key(settings.log_key_file, log_key, None)
    ledger = Ledger.init(
        settings,
        origin=ORIGIN,
        passphrase=None,
        clock=clock,
        existing_key=log_key,
    )
    accredit(ledger, "LAB-1", [LAB])
    ledger.sequencer.submit(
        envelope_bytes(
            grant("CB-1", [CB], kind="certification_body", covers=("management_system",)),
            BODY_KEY,
        )
    )
    for n in range(extra):
        ledger.issue_certificate(numbered_dcc(f"DCC-2026-9{n:03d}"), "LAB-1", LAB)
    registry = PageRegistry(ledger, clock, {})
    ledger.issue_certificate(demo_dcc(), "LAB-1", LAB)
    ledger.issue_certificate(demo_dcc("demo-dcc-amended.xml"), "LAB-1", LAB)
    ledger.issue_certificate(numbered_dcc("DCC-2026-0002"), "LAB-1", LAB)
    ledger.issue_certificate(numbered_dcc("DCC-2026-0003"), "LAB-1", LAB)
    registry.change(statement.CertificateSuspend, SUSPENDED)
    registry.change(statement.CertificateWithdraw, WITHDRAWN)
    old = certification_fields(
        "QMS-OLD", issue_date="2026-01-01", expiry_date=f"{clock.now.year + 1}-01-01"
    )
    ledger.issue_certificate(json.dumps(old).encode(), "CB-1", CB)
    for certificate_id in (VALID, SUPERSEDED, SUSPENDED, WITHDRAWN, EXPIRING):
        registry.marks[certificate_id] = registry.mark_for(certificate_id)
    return registry


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PageRegistry]:
    built = build_registry(tmp_path_factory.mktemp("pages") / "data", log_key=LOG_KEY)
    yield built
    built.ledger.close()


@pytest.fixture(scope="module")
def client(registry: PageRegistry) -> Iterator[TestClient]:
    app = create_app(registry.ledger)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def verdict_of(response: httpx.Response) -> str:
    found = re.search(r'id="verdict" data-verdict="([a-z_]+)"', response.text)
    assert found is not None, response.text[:500]
    return found.group(1)


def embedded(response: httpx.Response, block: str = "qil-data") -> dict[str, Any]:
    found = re.search(
        rf'<script type="application/json" id="{block}">(.*?)</script>', response.text, re.S
    )
    assert found is not None
    value: dict[str, Any] = json.loads(found.group(1))
    return value


# --- verdicts, readable with JavaScript off ------------------------------------------


@pytest.mark.parametrize(
    ("certificate_id", "verdict"),
    [
        (VALID, "active"),
        (SUPERSEDED, "superseded"),
        (SUSPENDED, "suspended"),
        (WITHDRAWN, "withdrawn"),
    ],
)
@pytest.mark.parametrize("route", ["c", "M", "m", "m-lower"])
def test_verdicts_are_in_the_html(
    client: TestClient, registry: PageRegistry, certificate_id: str, verdict: str, route: str
) -> None:
    token = registry.marks[certificate_id]
    path = {
        "c": f"/c/{certificate_id}",
        "M": f"/M/{token}",
        "m": f"/m/{token}",
        "m-lower": f"/m/{token.lower()}",
    }[route]
    response = client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert verdict_of(response) == verdict
    assert f'<h1 id="verdict-text">{VERDICT_EN[verdict]}</h1>' in response.text
    # The verdict comes first; the details after it.
    assert response.text.index('id="verdict"') < response.text.index('id="certificate-id"')
    assert f'<dd id="certificate-id">{certificate_id}</dd>' in response.text


def test_the_page_names_issuer_laboratory_accreditation_dates_and_history(
    client: TestClient, registry: PageRegistry
) -> None:
    text = client.get(f"/c/{SUSPENDED}").text
    assert "LAB-1 Calibration Laboratory" in text
    assert "Demo Metrology Laboratory" in text  # the laboratory the DCC names
    assert "CNAS-LAB-1" in text
    assert "ISO/IEC 17025:2017" in text
    assert "granted" in text
    assert "Digital calibration certificate (DCC)" in text
    cert = registry.ledger.trust_state().certificate(SUSPENDED)
    for event in cert.events:
        assert f'data-index="{event.index}"' in text
        assert f"#{event.index}" in text
    assert "Suspended" in text
    assert "certificate.suspend by the page tests" in text
    issued = json.loads(
        entry.parse(registry.ledger.entry(cert.events[0].index).data).envelope.payload
    )
    assert f'<dd id="issued">{issued["issued"]}</dd>' in text
    superseded = client.get(f"/c/{SUPERSEDED}").text
    assert f'href="/c/{VALID}"' in superseded  # the successor, one tap away


def test_an_expired_certificate(client: TestClient, registry: PageRegistry) -> None:
    assert verdict_of(client.get(f"/c/{EXPIRING}")) == "active"
    before = registry.clock.now
    registry.clock.now = before.replace(year=before.year + 2)
    try:
        response = client.get(f"/M/{registry.marks[EXPIRING]}")
        assert verdict_of(response) == "expired"
        assert "Authentic, but expired" in response.text
        assert "Management-system certification" in response.text
    finally:
        registry.clock.now = before


def test_the_page_has_what_a_phone_needs(client: TestClient, registry: PageRegistry) -> None:
    response = client.get(f"/c/{VALID}")
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in response.text
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["referrer-policy"] == "no-referrer"
    css = client.get("/static/pages.css")
    assert css.status_code == 200
    assert css.headers["content-type"].startswith("text/css")
    for script in ("verify.js", "lookup.js"):
        js = client.get(f"/static/{script}")
        assert js.status_code == 200
        assert "javascript" in js.headers["content-type"]
    # With JavaScript off the page says what the check in the browser would add.
    assert "With JavaScript on, this page re-checks" in response.text


def test_head_answers_like_get(client: TestClient, registry: PageRegistry) -> None:
    got = client.get(f"/c/{VALID}")
    head = client.head(f"/c/{VALID}")
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == got.headers["content-length"]


# --- marks that are not what they claim -------------------------------------------


def test_forged_truncated_and_foreign_marks_are_not_authentic(
    client: TestClient, registry: PageRegistry
) -> None:
    token = registry.marks[VALID]
    other_key = key_from("another log")
    foreign = mark.sign(
        mark.verify(token, registry.ledger.identity.verifier),
        other_key,
        NoteVerifier.for_key("other.example/log", other_key.public_key),
    )
    same_name_other_key = mark.sign(
        mark.verify(token, registry.ledger.identity.verifier),
        other_key,
        NoteVerifier.for_key(ORIGIN, other_key.public_key),
    )
    cases = {
        "foreign log": foreign,
        "another key under this log's name": same_name_other_key,
        "oversized": token * 40,
        "empty-ish": "A",
        "not base32": "0189",
        "slash": f"{token[:20]}/{token[20:]}",
        "percent": "%00%ff%2F",
        "non-ascii": "证书",
        "padding": token + "====",
    }
    for what, bad in cases.items():
        response = client.get(f"/m/{bad}")
        assert response.status_code == 404, what
        assert verdict_of(response) == "invalid", what
        assert "This QR mark was not issued by this registry" in response.text, what


def test_every_truncation_and_every_altered_character_is_not_authentic(
    client: TestClient, registry: PageRegistry
) -> None:
    token = registry.marks[VALID]
    for length in range(len(token)):
        response = client.get(f"/M/{token[:length]}")
        assert response.status_code in (404, 405), length  # /M/ alone is no mark at all
        if response.status_code == 404 and length:
            assert verdict_of(response) == "invalid", length
    alphabet = string.ascii_uppercase + "234567"
    for position in range(len(token)):
        swapped = alphabet[(alphabet.index(token[position]) + 1) % len(alphabet)]
        altered = token[:position] + swapped + token[position + 1 :]
        response = client.get(f"/M/{altered}")
        assert verdict_of(response) == "invalid", position


@given(st.text(alphabet=string.ascii_letters + "234567", min_size=1, max_size=400))
def test_random_base32_in_any_case_is_not_authentic(client: TestClient, garbage: str) -> None:
    response = client.get(f"/m/{garbage}")
    assert response.status_code == 404
    assert verdict_of(response) == "invalid"


@given(st.text(min_size=1, max_size=300))
def test_any_text_as_a_token_gets_a_page(client: TestClient, garbage: str) -> None:
    response = client.get("/m/" + quote(garbage, safe=""))
    assert response.status_code in (404, 405), response.text[:300]
    assert response.status_code != 500


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"document_sha256": hashlib.sha256(b"another document").digest()}, "another document"),
        ({"index": 0}, "the mark names log entry 0"),
        ({"certificate_id": "LAB-1/NEVER-ISSUED"}, "has no certificate with the id"),
    ],
)
def test_a_signed_mark_that_disagrees_with_the_registry_is_not_authentic(
    client: TestClient, registry: PageRegistry, changes: dict[str, Any], why: str
) -> None:
    claims = mark.verify(registry.marks[VALID], registry.ledger.identity.verifier)
    token = registry.ledger.sign_mark(mark.MarkClaims(**{**claims.__dict__, **changes}))
    response = client.get(f"/M/{token}")
    assert verdict_of(response) == "invalid"
    assert "does not match the registry" in response.text
    assert why in response.text
    assert 'id="qil-data"' not in response.text  # nothing to verify "in the browser"


# --- /c/ and /verify ------------------------------------------------------------------


@pytest.mark.parametrize(
    "certificate_id",
    ["LAB-1/NOPE", "NOPE", "a/" + "x" * 2000, "<script>alert(1)</script>/x", "LAB-1/%00", "%2F"],
)
def test_an_unknown_certificate_is_not_found(client: TestClient, certificate_id: str) -> None:
    response = client.get(f"/c/{certificate_id}")
    assert response.status_code == 404
    assert verdict_of(response) == "not_found"
    assert "This registry has no certificate with that id." in response.text
    assert "<script>alert" not in response.text  # shown escaped, never as markup


def test_verify_page_without_javascript_offers_the_command(client: TestClient) -> None:
    text = client.get("/verify").text
    noscript = text[text.index("<noscript>") : text.index("</noscript>")]
    assert "This check needs JavaScript" in noscript
    assert "qiverify document FILE --registry http://testserver --log-key" in noscript
    assert 'id="drop-zone" hidden' in text  # shown only once the script runs


# --- languages -----------------------------------------------------------------------


def test_chinese_from_accept_language(client: TestClient) -> None:
    response = client.get(f"/c/{VALID}", headers={"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8"})
    assert '<html lang="zh-CN">' in response.text
    assert "真实有效" in response.text
    assert "获认可的签发机构" in response.text
    assert 'href="/c/LAB-1/DCC-2026-0001-A1?lang=en"' in response.text  # the switch back
    english = client.get(f"/c/{VALID}", headers={"Accept-Language": "en-GB"})
    assert "Authentic and valid" in english.text
    assert 'href="/c/LAB-1/DCC-2026-0001-A1?lang=zh"' in english.text


def test_the_switch_is_remembered(registry: PageRegistry) -> None:
    with TestClient(create_app(registry.ledger)) as fresh:
        chosen = fresh.get(f"/c/{WITHDRAWN}?lang=zh")
        assert "真实，但已撤销" in chosen.text
        assert chosen.cookies.get("lang") == "zh"
        # Later pages, even with an English browser, stay in the chosen language.
        later = fresh.get(f"/M/{registry.marks[VALID]}", headers={"Accept-Language": "en"})
        assert "真实有效" in later.text
        assert "Authentic" in fresh.get(f"/c/{VALID}?lang=en").text
        assert "Authentic" in fresh.get(f"/c/{VALID}").text


@pytest.mark.parametrize(
    ("header", "lang"),
    [
        ("zh", "zh"),
        ("zh-TW", "zh"),
        ("en;q=0.5, zh;q=0.8", "zh"),
        ("zh;q=0.1, en", "en"),
        ("fr, de", "en"),
        ("", "en"),
        ("zh;q=abc, en;q=2", "en"),
        (";;;,,,=q", "en"),
        ("*", "en"),
    ],
)
def test_accept_language(header: str, lang: str) -> None:
    assert i18n.from_accept_language(header) == lang


@pytest.mark.parametrize("lang", ["xx", "", "z" * 5000, "zh-CN", "%00", "EN"])
def test_an_unknown_lang_parameter_is_ignored(client: TestClient, lang: str) -> None:
    response = client.get(f"/c/{VALID}", params={"lang": lang}, headers={"Accept-Language": "zh"})
    assert response.status_code == 200
    assert "真实有效" in response.text
    assert "lang" not in response.cookies


def test_every_message_has_both_languages() -> None:
    for key, texts in i18n.MESSAGES.items():
        assert set(texts) == set(i18n.LANGUAGES), key


# --- what the in-browser check is given verifies --------------------------------------


def test_the_embedded_proofs_verify_with_the_verifier(
    client: TestClient, registry: PageRegistry
) -> None:
    """The JSON the browser checks is right: the checkpoint verifies with the log's
    key, every history entry's proof leads to its root (so a failure in the browser
    means the data was changed, not that the page was wrong)."""
    data = embedded(client.get(f"/c/{SUSPENDED}"))
    log = NoteVerifier.parse(data["verifier_key"])
    assert log == registry.ledger.identity.verifier
    signed = checkpoint.verify(data["checkpoint"].encode(), log).checkpoint
    assert data["origin"] == signed.origin == ORIGIN
    types = []
    for item in data["entries"]:
        leaf_data = b64decode(item["leaf_data"], "leaf")
        proof = [b64decode(h, "proof") for h in item["proof"]]
        merkle.verify_inclusion(
            merkle.leaf_hash(leaf_data), item["index"], signed.size, proof, signed.root
        )
        stmt = json.loads(entry.parse(leaf_data).envelope.payload)
        assert stmt["certificate_id"] == data["certificate_id"] == SUSPENDED
        types.append(stmt["type"])
    assert types == ["certificate.issue", "certificate.suspend"]
    # The JSON block cannot end its script element early: no '<' in it at all.
    raw = client.get(f"/c/{SUSPENDED}").text.split('id="qil-data">', 1)[1].split("</script>")[0]
    assert "<" not in raw


def test_pages_reach_the_ledger_only_through_its_methods() -> None:
    source = (Path(__file__).parents[1] / "registry/api/routes/pages.py").read_text()
    assert ".storage" not in source
    assert "sql" not in source.lower()


def test_a_mark_that_verified_is_remembered_and_a_forged_one_never_is(
    client: TestClient, registry: PageRegistry
) -> None:
    from registry.api.routes import pages

    pages._verified_mark.cache_clear()
    token = registry.marks[VALID]
    for _ in range(3):
        assert verdict_of(client.get(f"/M/{token}")) == "active"
    info = pages._verified_mark.cache_info()
    assert (info.misses, info.hits) == (1, 2)  # its signature was checked once
    alphabet = string.ascii_uppercase + "234567"
    forged = token[:-3] + alphabet[(alphabet.index(token[-3]) + 1) % 32] + token[-2:]
    for _ in range(2):
        assert verdict_of(client.get(f"/M/{forged}")) == "invalid"
    info = pages._verified_mark.cache_info()
    assert (info.misses, info.currsize) == (3, 1)  # checked each time, kept never
