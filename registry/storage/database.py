"""Engines, schema and the sequencer lock for SQLite and PostgreSQL.

Rules every caller can rely on:

- a write transaction (:meth:`Database.write`) holds the log's single writer
  lock until it commits: ``BEGIN IMMEDIATE`` on SQLite, a transaction-scoped
  advisory lock on PostgreSQL — so sequencers in many processes never fork;
- a write is durable when :meth:`Database.write` returns (SQLite WAL with
  ``synchronous=FULL``; PostgreSQL's default synchronous commit); on SQLite
  the WAL is copied into the database file by a thread of its own, after the
  commit, not by the commit (see :class:`_Checkpointer`);
- log tables refuse UPDATE and DELETE (and TRUNCATE) by trigger.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import Connection
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from registry.errors import StorageError
from registry.storage import tables

# Arbitrary constant naming "the QI Ledger sequencer" among advisory locks.
SEQUENCER_LOCK_KEY = 0x51494C4544474552 & 0x7FFFFFFFFFFFFFFF
SQLITE_BUSY_TIMEOUT_MS = 120_000
READ_POOL_SIZE = 40  # FastAPI's (AnyIO's) default thread pool
# The writer's page cache, in KiB. A batch dirties about one leaf page per
# entry in each random-key index (statement hash, document digest twice), and
# looks each up before inserting it: with SQLite's default 2 MiB the pages it
# read are evicted before it writes them, and dirty pages spill to the WAL
# mid-transaction. 64 MiB holds a batch's pages and every index's upper levels;
# bounded, since one writer connection is kept (see WRITE_POOL_SIZE).
WRITER_CACHE_KIB = 64 * 1024
WRITE_POOL_SIZE = 1  # writes are serialised by the lock; extra connections are closed
# Checkpoints run on a thread of their own (:class:`_Checkpointer`); a commit
# checkpoints inline only if the WAL grew past this many pages (64 MiB)
# meanwhile, so the WAL stays bounded even if that thread falls behind.
WAL_FALLBACK_CHECKPOINT_PAGES = 16384
CHECKPOINT_INTERVAL_S = 0.05  # at most this often: coalesces small commits


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event emit BEGIN itself (pysqlite's own
    # transaction handling cannot take the write lock up front).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA synchronous = FULL")
    cursor.close()


def _sqlite_writer_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA cache_size = -{WRITER_CACHE_KIB}")
    cursor.execute("PRAGMA temp_store = MEMORY")
    cursor.execute(f"PRAGMA wal_autocheckpoint = {WAL_FALLBACK_CHECKPOINT_PAGES}")
    # When the WAL restarts, give back what a burst grew it by on disk.
    cursor.execute(f"PRAGMA journal_size_limit = {WAL_FALLBACK_CHECKPOINT_PAGES * 4096}")
    cursor.close()


class _Checkpointer:
    """Copies the WAL into the database file on a thread of its own.

    A commit is durable once its WAL frames are fsynced (``synchronous=FULL``);
    the checkpoint after it writes the same pages to random places in the
    database file and fsyncs that too, which at a million entries costs more
    than the rest of the batch. Here it overlaps the next batch instead of
    delaying this one's return. PASSIVE never blocks readers or the writer;
    what it does not finish, the next one (or a commit past the fallback) does.
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def wake(self) -> None:
        with self._lock:
            if self._stop:
                return
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="qiledger-checkpoint", daemon=True
                )
                self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        try:
            conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error:
            return  # commits keep checkpointing inline past the fallback
        try:
            _sqlite_pragmas(conn, None)
            while True:
                self._wake.wait()
                if self._stop:
                    return
                self._wake.clear()
                # Busy or gone: the next wake (or the fallback) retries.
                with suppress(sqlite3.Error):
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                if self._stop:
                    return
                time.sleep(CHECKPOINT_INTERVAL_S)
        finally:
            conn.close()

    def stop(self) -> None:
        with self._lock:
            self._stop = True
            thread = self._thread
        self._wake.set()
        if thread is not None:
            thread.join()


def _sqlite_engine(url: str, begin_sql: str, pool_size: int = 5, *, writer: bool = False) -> Engine:
    # LIFO: the connection used last is the next one handed out, so a few stay in
    # use with warm page caches instead of a round over every pooled connection
    # (a random status read on 1,000,000 entries: 57 -> 40 us).
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False},
        pool_size=pool_size,
        max_overflow=10,
        pool_use_lifo=True,
    )
    event.listen(engine, "connect", _sqlite_pragmas)
    if writer:
        event.listen(engine, "connect", _sqlite_writer_pragmas)

    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql(begin_sql)

    event.listen(engine, "begin", _begin)
    return engine


_SQLITE_UNIQUE_KEYS = {
    "log_meta": ("id",),
    "entries": ("idx", "statement_hash"),
    "tree_nodes": ("node_id",),
    "checkpoints": ("size",),
    "documents": ("digest",),
}


class Database:
    """The registry's database: SQLite file (default) or PostgreSQL by URL."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self._checkpointer: _Checkpointer | None = None
        try:
            if self.is_sqlite:
                # Readers: as many pooled connections as the HTTP service has
                # threads, so none is opened (with its PRAGMAs) per request.
                self.read_engine = _sqlite_engine(url, "BEGIN", pool_size=READ_POOL_SIZE)
                self.write_engine = _sqlite_engine(
                    url, "BEGIN IMMEDIATE", pool_size=WRITE_POOL_SIZE, writer=True
                )
                path = self.write_engine.url.database
                if path and path != ":memory:" and "mode=memory" not in url:
                    self._checkpointer = _Checkpointer(path)
                self.rows_engine = self.read_engine  # autocommit at the driver already
            else:
                self.read_engine = self.write_engine = create_engine(
                    url, pool_pre_ping=True, pool_size=10, max_overflow=20, pool_use_lifo=True
                )
                # read_rows: autocommit, so a SELECT is one round trip (no BEGIN, no
                # ROLLBACK when the connection goes back, no ping before it: a
                # connection the server dropped is replaced and the read retried).
                self.rows_engine = create_engine(
                    url,
                    isolation_level="AUTOCOMMIT",
                    pool_reset_on_return=None,
                    pool_size=10,
                    max_overflow=20,
                    pool_use_lifo=True,
                )
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise StorageError(f"cannot use database {self.safe_url}: {exc}") from None

    @property
    def safe_url(self) -> str:
        """The URL without its password, for messages."""
        head, sep, tail = self.url.rpartition("@")
        if not sep or ":" not in head.split("//", 1)[-1]:
            return self.url
        scheme, _, creds = head.partition("//")
        return f"{scheme}//{creds.split(':', 1)[0]}:***@{tail}"

    @property
    def placeholder(self) -> str:
        """The DB-API parameter marker for raw SQL on this engine."""
        return "?" if self.is_sqlite else "%s"

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A transaction holding the sequencer lock; commits on normal exit."""
        try:
            with self.write_engine.begin() as conn:
                if not self.is_sqlite:
                    conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%s)", (SEQUENCER_LOCK_KEY,))
                yield conn
        except OperationalError as exc:
            raise StorageError(f"database write failed: {exc.orig}") from None
        if self._checkpointer is not None:
            self._checkpointer.wake()  # after the commit: durable already

    @contextmanager
    def read(self) -> Iterator[Connection]:
        try:
            with self.read_engine.connect() as conn:
                yield conn
        except OperationalError as exc:
            raise StorageError(f"database read failed: {exc.orig}") from None

    def read_rows(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """The rows of one SELECT run on a pooled driver connection, outside any
        explicit transaction: one statement sees one consistent snapshot on both
        engines, so the hottest reads need no BEGIN and none of SQLAlchemy's
        per-statement work (about 10x cheaper than :meth:`read` for one lookup)."""
        # On PostgreSQL a connection the server dropped (a restart) gets one more
        # try on a fresh connection.
        return self._rows_on_one_connection(sql, tuple(params), retry=not self.is_sqlite)

    def _rows_on_one_connection(
        self, sql: str, params: tuple[Any, ...], *, retry: bool
    ) -> list[tuple[Any, ...]]:
        try:
            conn = self.rows_engine.raw_connection()
        except OperationalError as exc:
            raise StorageError(f"database read failed: {exc.orig}") from None
        try:
            cursor = conn.cursor()
            try:
                cursor.execute(sql, params)
                return list(cursor.fetchall())
            finally:
                cursor.close()
        except self._driver_operational_error as exc:
            conn.invalidate()  # never hand this connection out again
            if not retry:
                raise StorageError(f"database read failed: {exc}") from None
        except self._driver_error as exc:
            raise StorageError(f"database read failed: {exc}") from None
        finally:
            conn.close()  # back to the pool (a no-op after invalidate)
        return self._rows_on_one_connection(sql, params, retry=False)

    @property
    def _driver_operational_error(self) -> type[Exception]:
        error: type[Exception] = self.rows_engine.dialect.loaded_dbapi.OperationalError
        return error

    @property
    def _driver_error(self) -> type[Exception]:
        error: type[Exception] = self.rows_engine.dialect.loaded_dbapi.Error
        return error

    def has_schema(self) -> bool:
        return self.has_table("log_meta")

    def has_table(self, name: str) -> bool:
        try:
            return inspect(self.read_engine).has_table(name)
        except OperationalError as exc:
            raise StorageError(f"cannot open database {self.safe_url}: {exc.orig}") from None

    def column_names(self, table: str) -> set[str]:
        try:
            return {c["name"] for c in inspect(self.read_engine).get_columns(table)}
        except OperationalError as exc:
            raise StorageError(f"cannot open database {self.safe_url}: {exc.orig}") from None

    def create_schema(self) -> None:
        """Create tables and append-only triggers (idempotent)."""
        try:
            tables.METADATA.create_all(self.write_engine, tables=list(tables.ALL_TABLES))
            with self.write_engine.begin() as conn:
                for statement in self._trigger_sql():
                    conn.exec_driver_sql(statement)
        except OperationalError as exc:
            raise StorageError(f"cannot create schema in {self.safe_url}: {exc.orig}") from None

    def _trigger_sql(self) -> list[str]:
        if self.is_sqlite:
            statements = [
                f"CREATE TRIGGER IF NOT EXISTS {table}_no_{verb} BEFORE {verb.upper()} "
                f"ON {table} BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
                for table in tables.APPEND_ONLY_TABLES
                for verb in ("update", "delete")
            ]
            # INSERT OR REPLACE deletes the old row without firing DELETE triggers
            # (unless recursive_triggers is on), so refuse any insert that would
            # collide with an existing key, from any connection.
            for table, keys in _SQLITE_UNIQUE_KEYS.items():
                collision = " OR ".join(f"{k} = NEW.{k}" for k in keys)
                statements.append(
                    f"CREATE TRIGGER IF NOT EXISTS {table}_no_replace BEFORE INSERT ON {table} "
                    f"WHEN EXISTS (SELECT 1 FROM {table} WHERE {collision}) "
                    f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
                )
            return statements
        statements = [
            "CREATE OR REPLACE FUNCTION qiledger_append_only() RETURNS trigger "
            "LANGUAGE plpgsql AS $$ BEGIN "
            "RAISE EXCEPTION '%% is append-only', TG_TABLE_NAME; END $$"
        ]
        for table in tables.APPEND_ONLY_TABLES:
            statements.append(
                f"CREATE OR REPLACE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE "
                f"ON {table} FOR EACH ROW EXECUTE FUNCTION qiledger_append_only()"
            )
            statements.append(
                f"CREATE OR REPLACE TRIGGER {table}_no_truncate BEFORE TRUNCATE "
                f"ON {table} FOR EACH STATEMENT EXECUTE FUNCTION qiledger_append_only()"
            )
        return statements

    def dispose(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
        self.read_engine.dispose()
        self.write_engine.dispose()
        self.rows_engine.dispose()
