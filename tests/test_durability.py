"""The durability settings a write relies on, read back from the database itself.

registry/storage/database.py promises that a write is durable when ``Database.write``
returns: SQLite in WAL mode with ``synchronous=FULL`` on every connection the
registry opens (``synchronous`` is per connection, so each engine's connections
are checked, not just the file), and PostgreSQL committing synchronously with
``fsync`` on. These tests ask the database what it is actually doing, through the
registry's own engines.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Connection

from registry.config import Settings
from registry.ledger import Ledger
from tests.conftest import make_ledger
from tests.helpers import key_from

SQLITE_SYNCHRONOUS_FULL = 2  # PRAGMA synchronous: 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA
# Every synchronous_commit level but "off" waits for the commit's WAL record to be
# flushed to the server's disk before the commit returns.
POSTGRES_DURABLE_COMMIT = {"on", "local", "remote_write", "remote_apply"}


@pytest.fixture
def sqlite_ledger(sqlite_settings: Settings) -> Iterator[Ledger]:
    ledger = make_ledger(sqlite_settings, key_from("lab-1"))  # entries appended: writes ran
    yield ledger
    ledger.close()


def _sqlite_settings_of(conn: Any) -> tuple[str, int]:
    journal = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
    synchronous = conn.exec_driver_sql("PRAGMA synchronous").scalar()
    assert isinstance(journal, str)
    assert isinstance(synchronous, int)
    return journal.lower(), synchronous


def _driver_connection(conn: Any) -> object:
    """The DB-API connection under a read: the driver's own on a SQLite file
    (``SqliteRead``), else SQLAlchemy's pooled one."""
    driver = getattr(conn, "driver_connection", None)
    return driver if driver is not None else conn.connection.dbapi_connection


def test_sqlite_write_connections_are_wal_and_synchronous_full(sqlite_ledger: Ledger) -> None:
    assert sqlite_ledger.storage.tail_size() > 0
    with sqlite_ledger.db.write() as conn:
        assert _sqlite_settings_of(conn) == ("wal", SQLITE_SYNCHRONOUS_FULL)


def test_sqlite_every_pooled_read_connection_is_wal_and_synchronous_full(
    sqlite_ledger: Ledger,
) -> None:
    # Several read connections held at once are distinct pooled DB-API connections;
    # each must have run the PRAGMAs when it was opened.
    with ExitStack() as stack:
        conns = [stack.enter_context(sqlite_ledger.db.read()) for _ in range(4)]
        assert len({id(_driver_connection(c)) for c in conns}) == 4
        for conn in conns:
            assert _sqlite_settings_of(conn) == ("wal", SQLITE_SYNCHRONOUS_FULL)


def test_sqlite_settings_hold_for_connections_opened_after_a_restart(
    sqlite_settings: Settings,
) -> None:
    make_ledger(sqlite_settings).close()
    ledger = Ledger.open(sqlite_settings)
    try:
        with ledger.db.read() as conn:
            assert _sqlite_settings_of(conn) == ("wal", SQLITE_SYNCHRONOUS_FULL)
        with ledger.db.write() as conn:
            assert _sqlite_settings_of(conn) == ("wal", SQLITE_SYNCHRONOUS_FULL)
    finally:
        ledger.close()


def _show(conn: Connection, name: str) -> str:
    value = conn.exec_driver_sql(f"SHOW {name}").scalar()
    assert isinstance(value, str)
    return value


@pytest.mark.postgres
def test_postgres_commits_wait_for_fsync(postgres_url: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", database_url=postgres_url)
    ledger = make_ledger(settings, key_from("lab-1"))
    try:
        for opened in (ledger.db.read, ledger.db.write):
            with opened() as conn:
                assert _show(conn, "synchronous_commit") in POSTGRES_DURABLE_COMMIT
                assert _show(conn, "fsync") == "on"
                assert _show(conn, "full_page_writes") == "on"
    finally:
        ledger.close()
