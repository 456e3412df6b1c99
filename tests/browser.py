"""A real headless Chromium for the page tests (Selenium driving Debian's
``chromium`` and ``chromium-driver``), and an ASGI app served on 127.0.0.1 in a
thread so a test can wrap the registry's app in a test double of what the server
sends.

Without Chromium the browser tests skip with a visible reason, except in CI
(CI=true) or with QILEDGER_REQUIRE_BROWSER=1, where they fail.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.types import ASGIApp

from tests.helpers import free_port

REQUIRE_BROWSER = (
    os.environ.get("CI") == "true" or os.environ.get("QILEDGER_REQUIRE_BROWSER") == "1"
)
CHROMIUM = os.environ.get("QILEDGER_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("QILEDGER_CHROMEDRIVER", "/usr/bin/chromedriver")


def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or None if they can."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)) and not shutil.which(path):
            return f"needs {path} (apt-get install -y chromium chromium-driver): {package} missing"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "needs the selenium package (pip install -e '.[test]')"
    return None


def require_browser() -> None:
    reason = browser_missing()
    if reason is None:
        return
    if REQUIRE_BROWSER:
        pytest.fail(f"CI requires a headless browser: {reason}")
    pytest.skip(reason)


@contextmanager
def chromium(*, javascript: bool = True) -> Iterator[Any]:
    """A fresh headless Chromium (its own profile, so its own localStorage);
    ``javascript=False`` turns scripts off, as a visitor may."""
    require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=412,915",  # a phone's viewport
        "--lang=en-US",
    ):
        options.add_argument(argument)
    if not javascript:
        options.add_experimental_option(
            "prefs", {"profile.managed_default_content_settings.javascript": 2}
        )
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


class ServedApp:
    """``app`` served by uvicorn on a free 127.0.0.1 port in a daemon thread
    (127.0.0.1 is a secure context, so Web Crypto is there as on HTTPS)."""

    def __init__(self, app: ASGIApp) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ServedApp:
        self.thread.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if not self.thread.is_alive():
                raise AssertionError("the test server exited at start-up")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"{self.url} did not start")

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
