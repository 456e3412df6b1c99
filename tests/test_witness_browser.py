"""Witness cosignatures checked in a real headless Chromium (issue 14, item 5).

A registry with two real witnesses (``verifier.witness`` over HTTP, cosigning
with their own keys after checking consistency); the browser keeps the witnesses
it requires (``/witnesses``, localStorage per log key) and a certificate page
says "verified in your browser" only when at least that many of them validly
cosigned the checkpoint the page proves its history under. Cosignatures are
gathered by the registry's own gatherer, called by the test (no background
thread: the test decides when the witnesses have cosigned).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from starlette.types import ASGIApp, Receive, Scope, Send

from registry.api.app import create_app
from registry.witnessing import CosignatureGatherer, WitnessEndpoint
from tests.browser import ServedApp, chromium, require_browser
from tests.helpers import RewriteResponses, key_from
from tests.test_pages import (
    LAB,
    LOG_KEY,
    SUSPENDED,
    VALID,
    PageRegistry,
    build_registry,
    numbered_dcc,
)
from tests.test_pages_browser import failed_checks, open_page
from verifier.cosignature import CosignatureSigner
from verifier.witness import Witness
from verifier.witness_server import WitnessServer

pytestmark = pytest.mark.usefixtures("browser_available")

W1 = CosignatureSigner("witness.test/one", key_from("browser witness 1"))
W2 = CosignatureSigner("witness.test/two", key_from("browser witness 2"))
W3 = CosignatureSigner("witness.test/three", key_from("browser witness 3"))  # asked by no one


@pytest.fixture(scope="module")
def browser_available() -> None:
    require_browser()


class WithoutLifespan:
    """The app without its lifespan, so its witness gatherer never runs on its
    own: the test gathers when it chooses."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        await self.app(scope, receive, send)


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        self.now += 1
        return self.now


@dataclass
class Witnessed:
    registry: PageRegistry
    server: ServedApp
    wrapper: RewriteResponses
    gatherers: dict[str, CosignatureGatherer]
    keys: dict[str, str]

    def gather(self, *names: str) -> None:
        """The named witnesses cosign the log's latest checkpoint."""
        ledger = self.registry.ledger
        for name in names:
            self.gatherers[name].gather()  # 0 if it had cosigned this checkpoint already
            key = self.keys[name]
            assert ledger.storage.cosigned_sizes()[key] == ledger.latest_checkpoint().size


@pytest.fixture(scope="module")
def witnessed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Witnessed]:
    base = tmp_path_factory.mktemp("witness-browser")
    registry = build_registry(base / "data", log_key=LOG_KEY)
    log_key = registry.ledger.identity.verifier
    servers = [
        WitnessServer(Witness(signer, [log_key], base / f"{n}.json", Clock())).start()
        for n, signer in enumerate((W1, W2))
    ]
    endpoints = [
        WitnessEndpoint.parse(f"{server.url}={signer.verifier}")
        for server, signer in zip(servers, (W1, W2), strict=True)
    ]
    app = create_app(registry.ledger, witnesses=endpoints)
    wrapper = RewriteResponses(WithoutLifespan(app))
    gatherers = {
        name: CosignatureGatherer(registry.ledger, [endpoint])
        for name, endpoint in zip(("w1", "w2"), endpoints, strict=True)
    }
    with ServedApp(wrapper) as server:
        keys = {name: endpoint.key for name, endpoint in zip(gatherers, endpoints, strict=True)}
        yield Witnessed(registry, server, wrapper, gatherers, keys)
    app.state.service.close()
    for witness_server in servers:
        witness_server.close()
    registry.ledger.close()


@pytest.fixture
def browser() -> Iterator[Any]:
    with chromium() as driver:
        yield driver


def require(browser: Any, witnessed: Witnessed, keys: list[CosignatureSigner], k: int) -> None:
    """Choose the witnesses on the /witnesses page, as a visitor would."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{witnessed.server.url}/witnesses?lang=en")
    form = browser.find_element(By.ID, "witness-form")
    WebDriverWait(browser, 30).until(lambda _d: form.is_displayed())
    box = browser.find_element(By.ID, "witness-keys")
    box.clear()
    box.send_keys("\n".join(str(s.verifier) for s in keys))
    count = browser.find_element(By.ID, "witness-min")
    count.clear()
    count.send_keys(str(k))
    browser.find_element(By.ID, "witness-save").click()
    result = browser.find_element(By.ID, "witness-result")
    WebDriverWait(browser, 30).until(lambda _d: result.get_attribute("data-result"))
    assert result.get_attribute("data-result") == "ok", result.text
    policy = browser.find_element(By.ID, "witness-current").get_attribute("data-policy")
    assert policy == f"{k}/{len(keys)}"


def page(browser: Any, witnessed: Witnessed, certificate_id: str = VALID) -> dict[str, Any]:
    return open_page(browser, f"{witnessed.server.url}/c/{certificate_id}?lang=en")


def test_without_required_witnesses_there_is_no_witness_check(
    browser: Any, witnessed: Witnessed
) -> None:
    shown = page(browser, witnessed)
    assert shown["state"] == "verified"
    assert "witnesses" not in shown["checks"]


def test_the_witnesses_a_browser_requires_must_have_cosigned(
    browser: Any, witnessed: Witnessed
) -> None:
    witnessed.gather("w1")
    require(browser, witnessed, [W1], 1)
    shown = page(browser, witnessed)
    assert shown["state"] == "verified", shown
    assert shown["checks"]["witnesses"] == "ok"

    # Two of two required, only one cosigned: refused, saying which one is missing.
    require(browser, witnessed, [W1, W2], 2)
    shown = page(browser, witnessed)
    assert shown["state"] == "failed"
    assert failed_checks(shown) == ["witnesses"]
    assert any("only 1 of" in why and W2.name in why for why in shown["why"])

    # Once the second witness cosigns the same checkpoint, two of two pass.
    witnessed.gather("w2")
    shown = page(browser, witnessed)
    assert shown["state"] == "verified", shown

    # A witness that cosigns nothing of this log (asked by no one) counts for nothing.
    require(browser, witnessed, [W1, W3], 2)
    assert page(browser, witnessed)["state"] == "failed"
    require(browser, witnessed, [W1, W3], 1)
    assert page(browser, witnessed)["state"] == "verified"


def test_a_tampered_or_dropped_cosignature_fails(browser: Any, witnessed: Witnessed) -> None:
    witnessed.gather("w1")
    require(browser, witnessed, [W1], 1)
    for how in ("alter", "drop"):

        def rewrite(path: str, body: bytes, how: str = how) -> bytes:
            if not path.startswith("/c/"):
                return body
            marker = f"\\u2014 {W1.name} ".encode()
            at = body.index(marker) + len(marker)
            end = body.index(b"\\n", at)
            if how == "drop":
                return body[: at - len(marker)] + body[end + 2 :]
            line = body[at:end]
            flipped = line[:20] + (b"B" if line[20:21] != b"B" else b"C") + line[21:]
            return body[:at] + flipped + body[end:]

        witnessed.wrapper.rewrite = rewrite
        try:
            shown = page(browser, witnessed)
        finally:
            witnessed.wrapper.rewrite = None
        assert shown["state"] == "failed", (how, shown)
        assert failed_checks(shown) == ["witnesses"], (how, shown)


def test_a_page_proves_under_the_newest_cosigned_checkpoint_that_covers_it(
    browser: Any, witnessed: Witnessed
) -> None:
    registry = witnessed.registry
    witnessed.gather("w1", "w2")
    cosigned_size = registry.ledger.latest_checkpoint().size
    require(browser, witnessed, [W1, W2], 2)
    # The log grows; the witnesses have not cosigned the new checkpoint yet.
    registry.ledger.issue_certificate(numbered_dcc("DCC-2026-0777"), "LAB-1", LAB)
    assert registry.ledger.latest_checkpoint().size > cosigned_size
    older = page(browser, witnessed, SUSPENDED)
    assert older["state"] == "verified", older  # proved under the cosigned tree
    fresh = page(browser, witnessed, "LAB-1/DCC-2026-0777")
    assert fresh["state"] == "failed"  # newer than every cosigned tree
    assert any("try again" in why for why in fresh["why"])
    witnessed.gather("w1", "w2")
    assert page(browser, witnessed, "LAB-1/DCC-2026-0777")["state"] == "verified"


def test_the_witnesses_page_refuses_bad_keys_and_can_require_none(
    browser: Any, witnessed: Witnessed
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{witnessed.server.url}/witnesses?lang=en")
    declared = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#declared li")]
    assert declared == [str(W1.verifier), str(W2.verifier)]
    form = browser.find_element(By.ID, "witness-form")
    WebDriverWait(browser, 30).until(lambda _d: form.is_displayed())
    result = browser.find_element(By.ID, "witness-result")
    key = str(W1.verifier)
    name, key_id, raw = key.split("+", 2)
    wrong_id = f"{name}+{'0' * 8 if key_id != '0' * 8 else '1' * 8}+{raw}"
    log_key = str(witnessed.registry.ledger.identity.verifier)  # type 0x01, not a witness key
    for bad, count, expected in (
        (wrong_id, "1", "ID does not match"),
        (log_key, "1", "not a cosignature/v1 key"),
        ("not-a-key", "1", "not name+id+key"),
        (key, "2", "from 1 to 1"),
        ("", "1", "at least one witness key"),
    ):
        box = browser.find_element(By.ID, "witness-keys")
        box.clear()
        if bad:
            box.send_keys(bad)
        count_box = browser.find_element(By.ID, "witness-min")
        count_box.clear()
        count_box.send_keys(count)
        browser.execute_script("arguments[0].removeAttribute('data-result')", result)
        browser.find_element(By.ID, "witness-save").click()
        WebDriverWait(browser, 30).until(lambda _d: result.get_attribute("data-result"))
        assert result.get_attribute("data-result") == "failed", bad
        assert expected in result.text, (bad, result.text)
    current = browser.find_element(By.ID, "witness-current")
    assert current.get_attribute("data-policy") == "none"  # nothing bad was kept
    browser.find_element(By.ID, "witness-use-declared").click()
    browser.find_element(By.ID, "witness-save").click()
    WebDriverWait(browser, 30).until(lambda _d: current.get_attribute("data-policy") == "2/2")
    browser.find_element(By.ID, "witness-clear").click()
    WebDriverWait(browser, 30).until(lambda _d: current.get_attribute("data-policy") == "none")


def test_the_witnesses_page_without_javascript(witnessed: Witnessed) -> None:
    from selenium.webdriver.common.by import By

    with chromium(javascript=False) as driver:
        driver.get(f"{witnessed.server.url}/witnesses?lang=zh")
        declared = [li.text for li in driver.find_elements(By.CSS_SELECTOR, "#declared li")]
        assert declared == [str(W1.verifier), str(W2.verifier)]
        assert "JavaScript" in driver.find_element(By.TAG_NAME, "noscript").get_attribute(
            "textContent"
        )
        assert not driver.find_element(By.ID, "witness-form").is_displayed()


def test_a_registry_without_witnesses_names_none(tmp_path: Path) -> None:
    import httpx

    registry = build_registry(tmp_path / "data", log_key=LOG_KEY)
    try:
        app = create_app(registry.ledger)
        with ServedApp(WithoutLifespan(app)) as server:
            html = httpx.get(f"{server.url}/witnesses?lang=en").text
        app.state.service.close()
        assert 'id="declared-none"' in html
        assert 'id="declared"' not in html
    finally:
        registry.ledger.close()
