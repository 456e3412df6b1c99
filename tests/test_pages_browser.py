"""The verification pages in a real headless Chromium: verdicts for every status
and for forged marks, the file check (hash in the browser, lookup by digest), and
the check in the browser — passing on an honest registry, failing when what the
server sends is tampered with (an inclusion proof, a consistency proof) or when the
registry shows this browser a forked history signed with the same log key.

The tampering is done by a test-only ASGI wrapper around the real app: a test
double of what a dishonest server sends, never of the checking code.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from registry.api.app import create_app
from tests.browser import ServedApp, chromium, require_browser
from tests.helpers import RewriteResponses
from tests.test_pages import (
    LAB,
    LOG_KEY,
    SUPERSEDED,
    SUSPENDED,
    VALID,
    VERDICT_EN,
    WITHDRAWN,
    PageRegistry,
    build_registry,
    numbered_dcc,
)
from verifier.encoding import b64encode

pytestmark = pytest.mark.usefixtures("browser_available")

DONE = ("verified", "failed", "unsupported")


@pytest.fixture(scope="module")
def browser_available() -> None:
    require_browser()


class Switch:
    """Serves one of several apps at one address (one browser origin, one
    localStorage): the test flips ``target`` to show the browser another log."""

    def __init__(self, target: ASGIApp) -> None:
        self.target = target

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.target(scope, receive, send)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PageRegistry]:
    # A log key with '+' inside its base64 (a regression the browser check had).
    built = build_registry(tmp_path_factory.mktemp("browser") / "data", log_key=LOG_KEY)
    yield built
    built.ledger.close()


@pytest.fixture(scope="module")
def served(registry: PageRegistry) -> Iterator[tuple[ServedApp, RewriteResponses]]:
    app = create_app(registry.ledger)
    wrapper = RewriteResponses(app)
    with ServedApp(wrapper) as server:
        yield server, wrapper
    app.state.service.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as driver:
        yield driver


def open_page(driver: Any, url: str) -> dict[str, Any]:
    """Load ``url``, wait for the browser check to finish; what the page shows."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    verdict = driver.find_element(By.ID, "verdict")
    result: dict[str, Any] = {
        "verdict": verdict.get_attribute("data-verdict"),
        "verdict_text": driver.find_element(By.ID, "verdict-text").text,
    }
    boxes = driver.find_elements(By.ID, "browser-check")
    if boxes:
        # A hang guard only: an honest page finishes in well under a second.
        WebDriverWait(driver, 60).until(lambda d: boxes[0].get_attribute("data-state") in DONE)
        result["state"] = boxes[0].get_attribute("data-state")
        result["status"] = driver.find_element(By.ID, "browser-status").text
        result["checks"] = {
            li.get_attribute("data-check"): li.get_attribute("data-result")
            for li in driver.find_elements(By.CSS_SELECTOR, "#browser-checks li")
        }
        result["why"] = [
            e.text for e in driver.find_elements(By.CSS_SELECTOR, "#browser-checks .why")
        ]
    return result


def failed_checks(page: dict[str, Any]) -> list[str]:
    return [name for name, result in page["checks"].items() if result == "failed"]


# --- verdicts and the check passing ------------------------------------------------


@pytest.mark.parametrize(
    ("certificate_id", "verdict"),
    [
        (VALID, "active"),
        (SUPERSEDED, "superseded"),
        (SUSPENDED, "suspended"),
        (WITHDRAWN, "withdrawn"),
    ],
)
def test_a_scanned_mark_shows_its_verdict_verified_in_the_browser(
    browser: Any,
    served: tuple[ServedApp, RewriteResponses],
    registry: PageRegistry,
    certificate_id: str,
    verdict: str,
) -> None:
    server, _ = served
    for url in (
        f"{server.url}/M/{registry.marks[certificate_id]}",
        f"{server.url}/c/{certificate_id}",
    ):
        page = open_page(browser, url)
        assert page["verdict"] == verdict
        assert page["verdict_text"] == VERDICT_EN[verdict]
        assert page["state"] == "verified", (page["checks"], page["why"])
        assert page["status"] == "Verified in your browser"
        history = registry.ledger.trust_state().certificate(certificate_id).events
        for event in history:
            assert page["checks"][f"inclusion-{event.index}"] == "ok"
            assert page["checks"][f"entry-{event.index}"] == "ok"
        assert set(page["checks"].values()) == {"ok"}
        assert {"key", "signature", "consistency"} <= set(page["checks"])
        # A phone's width: one column, nothing to scroll sideways.
        assert browser.execute_script(
            "return document.documentElement.scrollWidth <= window.innerWidth"
        )


def test_with_javascript_off_the_verdict_is_there(
    served: tuple[ServedApp, RewriteResponses], registry: PageRegistry
) -> None:
    from selenium.webdriver.common.by import By

    server, _ = served
    # As any HTTP client fetches it ...
    for certificate_id, verdict in ((VALID, "active"), (WITHDRAWN, "withdrawn")):
        html = httpx.get(f"{server.url}/M/{registry.marks[certificate_id]}").text
        assert f'data-verdict="{verdict}"' in html
        assert f'<h1 id="verdict-text">{VERDICT_EN[verdict]}</h1>' in html
    # ... and as a browser with scripts off shows it.
    with chromium(javascript=False) as driver:
        driver.get(f"{server.url}/M/{registry.marks[SUSPENDED]}")
        assert driver.find_element(By.ID, "verdict-text").text == "Authentic, but suspended"
        box = driver.find_element(By.ID, "browser-check")
        assert box.get_attribute("data-state") == "none"  # no script ran
        assert "With JavaScript on" in driver.find_element(By.ID, "browser-status").text
        driver.get(f"{server.url}/verify")
        assert "This check needs JavaScript" in driver.find_element(By.ID, "nojs").text
        assert not driver.find_element(By.ID, "drop-zone").is_displayed()


def test_a_forged_mark_is_not_authentic_in_the_browser(
    browser: Any, served: tuple[ServedApp, RewriteResponses], registry: PageRegistry
) -> None:
    server, _ = served
    token = registry.marks[VALID]
    for forged in (token[:-8], token[:40] + ("A" if token[40] != "A" else "B") + token[41:]):
        page = open_page(browser, f"{server.url}/M/{forged}")
        assert page["verdict"] == "invalid"
        assert page["verdict_text"] == "Not authentic"
        assert "state" not in page  # nothing to re-check: no certificate is shown


def test_the_page_in_chinese_and_the_switch(
    browser: Any, served: tuple[ServedApp, RewriteResponses], registry: PageRegistry
) -> None:
    from selenium.webdriver.common.by import By

    server, _ = served
    page = open_page(browser, f"{server.url}/c/{SUSPENDED}?lang=zh")
    assert page["verdict_text"] == "真实，但已暂停"
    assert page["status"] == "已在您的浏览器中核验"
    # The switch leads back to English, and the choice sticks (a cookie).
    browser.find_element(By.ID, "lang-switch").click()
    assert browser.find_element(By.ID, "verdict-text").text == "Authentic, but suspended"
    assert open_page(browser, f"{server.url}/c/{VALID}")["verdict_text"] == "Authentic and valid"


# --- the file check ---------------------------------------------------------------


def test_a_dropped_file_is_hashed_in_the_browser_and_looked_up(
    browser: Any,
    served: tuple[ServedApp, RewriteResponses],
    registry: PageRegistry,
    tmp_path: Path,
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    server, _ = served
    document = tmp_path / "certificate.xml"
    document.write_bytes(numbered_dcc("DCC-2026-0003"))  # the withdrawn one
    browser.get(f"{server.url}/verify")
    assert browser.find_element(By.ID, "drop-zone").is_displayed()
    browser.find_element(By.ID, "file").send_keys(str(document))
    WebDriverWait(browser, 60).until(lambda d: "/c/" in d.current_url)
    assert browser.current_url == f"{server.url}/c/{WITHDRAWN}"
    page = open_page(browser, browser.current_url)
    assert page["verdict"] == "withdrawn"
    assert page["state"] == "verified"

    unknown = tmp_path / "unknown.xml"
    unknown.write_bytes(b"<not registered/>")
    browser.get(f"{server.url}/verify")
    browser.find_element(By.ID, "file").send_keys(str(unknown))
    WebDriverWait(browser, 60).until(lambda d: d.find_elements(By.ID, "lookup-verdict"))
    answer = browser.find_element(By.ID, "lookup-verdict")
    assert answer.get_attribute("data-verdict") == "unregistered"
    assert "Not registered" in answer.text
    digest = hashlib.sha256(b"<not registered/>").hexdigest()
    assert browser.find_element(By.ID, "digest").text == f"SHA-256 {digest}"


# --- the check failing ------------------------------------------------------------


def test_a_tampered_inclusion_proof_fails_in_the_browser(
    browser: Any, served: tuple[ServedApp, RewriteResponses], registry: PageRegistry
) -> None:
    server, wrapper = served
    cert = registry.ledger.trust_state().certificate(SUSPENDED)
    target = cert.events[-1].index
    proof = registry.ledger.inclusion_proof(target).hashes
    assert proof, "a tree of this size gives every entry a non-empty proof"
    honest = b64encode(proof[0]).encode()
    tampered = b64encode(bytes(32)).encode()

    def rewrite(path: str, body: bytes) -> bytes:
        if path.startswith("/c/"):
            assert honest in body
            return body.replace(honest, tampered)
        return body

    wrapper.rewrite = rewrite
    try:
        page = open_page(browser, f"{server.url}/c/{SUSPENDED}")
    finally:
        wrapper.rewrite = None
    # The server's verdict still shows, but the browser says it could not confirm it.
    assert page["verdict"] == "suspended"
    assert page["state"] == "failed"
    assert page["status"] == "Browser check FAILED — do not trust this page"
    assert failed_checks(page) == [f"inclusion-{target}"]
    assert any("does not lead to the root" in why for why in page["why"])


def test_altered_leaf_data_fails_in_the_browser(
    browser: Any, served: tuple[ServedApp, RewriteResponses], registry: PageRegistry
) -> None:
    """An entry from elsewhere in the log (with its own, valid proof) passed off as
    this certificate's: the proof holds, the entry check catches it."""
    server, wrapper = served
    state = registry.ledger.trust_state()
    mine = state.certificate(VALID).events[0].index
    other = state.certificate(WITHDRAWN).events[0].index
    entries: dict[str, Any] = {}

    def rewrite(path: str, body: bytes) -> bytes:
        if not path.startswith("/c/"):
            return body
        start = body.index(b'id="qil-data">') + len(b'id="qil-data">')
        end = body.index(b"</script>", start)
        data = json.loads(body[start:end])
        proof = registry.ledger.inclusion_proof(other)
        data["entries"] = [
            {
                "index": other,
                "type": "certificate.issue",
                "leaf_data": b64encode(registry.ledger.entry(other).data),
                "proof": [b64encode(h) for h in proof.hashes],
            }
        ]
        data["checkpoint"] = proof.checkpoint_note.decode()
        entries.update(data)
        block = json.dumps(data).replace("<", "\\u003c").encode()
        return body[:start] + block + body[end:]

    wrapper.rewrite = rewrite
    try:
        page = open_page(browser, f"{server.url}/c/{VALID}")
    finally:
        wrapper.rewrite = None
    assert entries["entries"][0]["index"] != mine
    assert page["state"] == "failed"
    assert page["checks"][f"inclusion-{other}"] == "ok"
    assert failed_checks(page) == [f"entry-{other}"]
    assert any(f"not {VALID}" in why for why in page["why"])


def test_a_log_that_grew_is_checked_for_consistency_and_a_bad_proof_fails(
    tmp_path: Path,
) -> None:
    registry = build_registry(tmp_path / "data")
    app = create_app(registry.ledger)
    service = app.state.service
    wrapper = RewriteResponses(app)
    try:
        with ServedApp(wrapper) as server, chromium() as driver:
            first = open_page(driver, f"{server.url}/c/{VALID}")
            assert first["state"] == "verified"
            assert "First check of this log" in driver.page_source
            size_seen = registry.ledger.latest_checkpoint().size

            # The log grows (another certificate), under the service's own lock.
            with service.state_lock:
                registry.ledger.issue_certificate(numbered_dcc("DCC-2026-0100"), "LAB-1", LAB)
            assert registry.ledger.latest_checkpoint().size > size_seen
            grown = open_page(driver, f"{server.url}/c/{VALID}")
            assert grown["state"] == "verified", grown
            assert grown["checks"]["consistency"] == "ok"

            # It grows again, and this time the consistency proof is tampered with.
            with service.state_lock:
                registry.ledger.issue_certificate(numbered_dcc("DCC-2026-0101"), "LAB-1", LAB)

            def rewrite(path: str, body: bytes) -> bytes:
                if path != "/api/v1/log/proof/consistency":
                    return body
                answer = json.loads(body)
                assert answer["hashes"]
                answer["hashes"][0] = b64encode(bytes(32))
                return json.dumps(answer).encode()

            wrapper.rewrite = rewrite
            bad = open_page(driver, f"{server.url}/c/{VALID}")
            assert bad["verdict"] == "active"  # the server's word, shown as such
            assert bad["state"] == "failed"
            assert failed_checks(bad) == ["consistency"]
    finally:
        service.close()
        registry.ledger.close()


def test_a_forked_log_is_caught_by_its_visitor(tmp_path: Path) -> None:
    """Two histories signed with the same log key, shown to the same browser: each
    verifies on its own, but the second is no extension of the first one seen."""
    honest = build_registry(tmp_path / "honest" / "data")
    # The same log (origin and key) with another history: one more certificate
    # registered before the others.
    forked = build_registry(
        tmp_path / "fork" / "data", extra=1, log_key=honest.ledger.load_log_key().key
    )
    assert forked.ledger.identity.verifier == honest.ledger.identity.verifier
    assert forked.ledger.latest_checkpoint().size > honest.ledger.latest_checkpoint().size
    honest_app, fork_app = create_app(honest.ledger), create_app(forked.ledger)
    switch = Switch(honest_app)
    try:
        with ServedApp(switch) as server, chromium() as driver:
            seen = open_page(driver, f"{server.url}/c/{VALID}")
            assert seen["state"] == "verified", seen
            switch.target = fork_app
            page = open_page(driver, f"{server.url}/c/{VALID}")
            assert page["verdict"] == "active"
            assert page["state"] == "failed"
            assert failed_checks(page) == ["consistency"]
            for event in forked.ledger.trust_state().certificate(VALID).events:
                assert page["checks"][f"inclusion-{event.index}"] == "ok"  # valid on its own
            assert any("differs from the one seen" in why for why in page["why"])

        # A fresh browser has seen nothing: the fork alone looks fine to it. The
        # check protects a visitor against a change of history, not a first lie.
        with ServedApp(fork_app) as server, chromium() as driver:
            assert open_page(driver, f"{server.url}/c/{VALID}")["state"] == "verified"
    finally:
        honest_app.state.service.close()
        fork_app.state.service.close()
        honest.ledger.close()
        forked.ledger.close()


# --- a browser without Ed25519 ------------------------------------------------------


def test_a_browser_without_ed25519_says_so_and_keeps_the_server_verdict(
    served: tuple[ServedApp, RewriteResponses], registry: PageRegistry
) -> None:
    server, _ = served
    with chromium() as driver:
        # Make this browser one whose Web Crypto has no Ed25519 (as older ones).
        driver.execute_cdp_cmd(
            "Page.addScriptToEvaluateOnNewDocument",
            {
                "source": """
                  const realImport = crypto.subtle.importKey.bind(crypto.subtle);
                  crypto.subtle.importKey = (format, key, alg, ...rest) =>
                    (alg && (alg === "Ed25519" || alg.name === "Ed25519"))
                      ? Promise.reject(new DOMException("Unrecognized name", "NotSupportedError"))
                      : realImport(format, key, alg, ...rest);
                """
            },
        )
        page = open_page(driver, f"{server.url}/M/{registry.marks[SUSPENDED]}")
    assert page["verdict"] == "suspended"
    assert page["state"] == "unsupported"
    assert "cannot check Ed25519" in page["status"]
    assert page["checks"] == {}
