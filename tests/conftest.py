"""Fixtures: a ledger on each storage engine.

SQLite always runs. PostgreSQL runs against a real server when
QILEDGER_TEST_POSTGRES_URL is set (each test gets a fresh database); otherwise
its tests are skipped with a visible reason — except in CI (CI=true) or with
QILEDGER_REQUIRE_POSTGRES=1, where a missing server fails the run.

Tests marked ``shared`` read PTB's DCC schemas and examples and the known-answer
vectors from the ``shared/`` folder beside the repository (or QILEDGER_SHARED_DIR);
without it they are skipped with a visible reason — except in CI (CI=true) or with
QILEDGER_REQUIRE_SHARED=1, where a missing folder fails them (tests.helpers).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

from registry.config import Settings
from registry.ledger import Ledger
from tests.helpers import accredit, key_from, require_shared
from verifier.keys import SigningKey

PG_URL = os.environ.get("QILEDGER_TEST_POSTGRES_URL")
REQUIRE_PG = os.environ.get("CI") == "true" or os.environ.get("QILEDGER_REQUIRE_POSTGRES") == "1"
TEST_ORIGIN = "test.qiledger.local/log"

# Speed is measured in bench/, never asserted by a test: no per-example deadline
# (hypothesis's default 200 ms turns a loaded CI machine into a flaky failure).
hypothesis_settings.register_profile("qiledger", deadline=None)
hypothesis_settings.load_profile("qiledger")


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("shared") is not None:
        require_shared()


def _admin_conninfo(url: str) -> tuple[str, str]:
    """psycopg conninfo for the server's admin DB, and the URL's scheme prefix."""
    scheme, rest = url.split("://", 1)
    base = rest.rsplit("/", 1)[0]
    return f"postgresql://{base}/postgres", f"{scheme}://{base}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """URL of a fresh, empty PostgreSQL database, dropped afterwards."""
    if not PG_URL:
        if REQUIRE_PG:
            pytest.fail("CI requires PostgreSQL: QILEDGER_TEST_POSTGRES_URL is not set")
        pytest.skip(
            "PostgreSQL tests need QILEDGER_TEST_POSTGRES_URL "
            "(e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test)"
        )
    import psycopg

    admin, prefix = _admin_conninfo(PG_URL)
    name = f"qiledger_test_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        if REQUIRE_PG:
            pytest.fail(f"PostgreSQL is required but unreachable: {exc}")
        pytest.skip(f"PostgreSQL unreachable at {admin}: {exc}")
    try:
        yield f"{prefix}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    if request.param == "sqlite":
        return Settings(data_dir=tmp_path / "data")
    url = request.getfixturevalue("postgres_url")
    return Settings(data_dir=tmp_path / "data", database_url=url)


@pytest.fixture
def sqlite_settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data")


@pytest.fixture
def lab_key() -> SigningKey:
    return key_from("lab-1")


def make_ledger(settings: Settings, *issuer_keys: SigningKey) -> Ledger:
    """A new ledger; with keys, a trusted body accredits issuer LAB-1 holding them
    (entries 0 and 1 of the log)."""
    ledger = Ledger.init(settings, origin=TEST_ORIGIN, passphrase=None)
    if issuer_keys:
        accredit(ledger, "LAB-1", list(issuer_keys))
    return ledger


@pytest.fixture
def ledger(settings: Settings, lab_key: SigningKey) -> Iterator[Ledger]:
    """A fresh ledger on each engine; ``lab_key`` is an accredited key of LAB-1."""
    ledger = make_ledger(settings, lab_key)
    yield ledger
    ledger.close()
