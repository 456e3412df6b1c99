"""Engines, schema and the sequencer lock for SQLite and PostgreSQL.

Rules every caller can rely on:

- a write transaction (:meth:`Database.write`) holds the log's single writer
  lock until it commits: ``BEGIN IMMEDIATE`` on SQLite, a transaction-scoped
  advisory lock on PostgreSQL — so sequencers in many processes never fork;
- a write is durable when :meth:`Database.write` returns (SQLite WAL with
  ``synchronous=FULL``; PostgreSQL's default synchronous commit);
- log tables refuse UPDATE and DELETE (and TRUNCATE) by trigger.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
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


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event emit BEGIN itself (pysqlite's own
    # transaction handling cannot take the write lock up front).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA synchronous = FULL")
    cursor.close()


def _sqlite_engine(url: str, begin_sql: str, pool_size: int = 5) -> Engine:
    engine = create_engine(
        url, connect_args={"check_same_thread": False}, pool_size=pool_size, max_overflow=10
    )
    event.listen(engine, "connect", _sqlite_pragmas)

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
        try:
            if self.is_sqlite:
                # Readers: as many pooled connections as the HTTP service has
                # threads, so none is opened (with its PRAGMAs) per request.
                self.read_engine = _sqlite_engine(url, "BEGIN", pool_size=READ_POOL_SIZE)
                self.write_engine = _sqlite_engine(url, "BEGIN IMMEDIATE")
            else:
                self.read_engine = self.write_engine = create_engine(
                    url, pool_pre_ping=True, pool_size=10, max_overflow=20
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
        try:
            conn = self.read_engine.raw_connection()
        except OperationalError as exc:
            raise StorageError(f"database read failed: {exc.orig}") from None
        try:
            cursor = conn.cursor()
            try:
                cursor.execute(sql, tuple(params))
                return list(cursor.fetchall())
            finally:
                cursor.close()
        except self._driver_error as exc:
            raise StorageError(f"database read failed: {exc}") from None
        finally:
            conn.close()  # back to the pool, which rolls back what a driver began

    @property
    def _driver_error(self) -> type[Exception]:
        error: type[Exception] = self.read_engine.dialect.loaded_dbapi.Error
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
        self.read_engine.dispose()
        self.write_engine.dispose()
