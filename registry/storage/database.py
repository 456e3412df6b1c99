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
from functools import cached_property
from typing import TYPE_CHECKING, Any

from registry.errors import StorageError

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.engine import Connection

    from registry.storage.protocol import Transaction

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
    from sqlalchemy import create_engine, event

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


def sqlite_file(url: str) -> str | None:
    """The file path of a plain ``sqlite:///PATH`` URL (no query, not in memory),
    else None. Such a database is read through the driver itself (see
    :class:`_SqliteReaders`); any other URL only through SQLAlchemy."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or "?" in url:
        return None
    path = url[len(prefix) :]
    return path if path and path != ":memory:" else None


class _SqliteRows:
    """A cursor's rows, answered as a SQLAlchemy result answers them."""

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self.cursor = cursor  # as SQLAlchemy's result names it

    def __iter__(self) -> Iterator[Any]:
        return iter(self.cursor)

    def first(self) -> Any:
        row = self.cursor.fetchone()
        self.cursor.close()
        return row

    def all(self) -> list[Any]:
        return self.cursor.fetchall()

    def scalar(self) -> Any:
        row = self.first()
        return None if row is None else row[0]

    def scalar_one(self) -> Any:
        rows = self.cursor.fetchall()
        if len(rows) != 1:
            raise StorageError(f"expected one row, the database answered {len(rows)}")
        return rows[0][0]


class SqliteRead:
    """A read transaction on a pooled driver connection of a SQLite file."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.driver_connection = connection

    def exec_driver_sql(self, statement: str, parameters: Any = None) -> _SqliteRows:
        return _SqliteRows(self.driver_connection.execute(statement, parameters or ()))


class _SqliteReaders:
    """Read connections to a SQLite file through the driver alone, kept last-used
    first (a few stay warm). Reads need nothing of SQLAlchemy's, and a command
    that only reads then starts without importing it (about 0.2 s)."""

    def __init__(self, path: str, keep: int) -> None:
        self._path = path
        self._keep = keep
        self._idle: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    def take(self) -> sqlite3.Connection:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        try:
            _sqlite_pragmas(conn, None)
        except BaseException:
            conn.close()
            raise
        return conn

    def give_back(self, conn: sqlite3.Connection, *, healthy: bool = True) -> None:
        with self._lock:
            if healthy and not self._closed and len(self._idle) < self._keep:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class Database:
    """The registry's database: SQLite file (default) or PostgreSQL by URL.

    On a SQLite file, reads go through the driver's own connections and the
    SQLAlchemy engines (writes, schema) are made when first used."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self._checkpointer: _Checkpointer | None = None
        path = sqlite_file(url)
        self._readers = _SqliteReaders(path, READ_POOL_SIZE) if path else None
        if path:
            self._checkpointer = _Checkpointer(path)
        else:
            self._engines()  # fail now on a URL SQLAlchemy cannot use
            database = self.write_engine.url.database if self.is_sqlite else None
            if database and database != ":memory:" and "mode=memory" not in url:
                self._checkpointer = _Checkpointer(database)

    @cached_property
    def read_engine(self) -> Engine:
        return self._engines()[0]

    @cached_property
    def write_engine(self) -> Engine:
        return self._engines()[1]

    @cached_property
    def rows_engine(self) -> Engine:
        return self._engines()[2]

    def _engines(self) -> tuple[Engine, Engine, Engine]:
        """(read, write, rows) engines, made once."""
        made = self.__dict__.get("_made_engines")
        if made is not None:
            return made  # type: ignore[no-any-return]
        from sqlalchemy import create_engine
        from sqlalchemy.exc import SQLAlchemyError

        try:
            if self.is_sqlite:
                # Readers: as many pooled connections as the HTTP service has
                # threads, so none is opened (with its PRAGMAs) per request.
                read = _sqlite_engine(self.url, "BEGIN", pool_size=READ_POOL_SIZE)
                write = _sqlite_engine(
                    self.url, "BEGIN IMMEDIATE", pool_size=WRITE_POOL_SIZE, writer=True
                )
                made = (read, write, read)  # autocommit at the driver already
            else:
                # A read is one snapshot on PostgreSQL too: under its default READ
                # COMMITTED each statement would see the commits made since the
                # last (a tree size, then rows logged after it). A read-only
                # REPEATABLE READ transaction never fails to serialise.
                read = create_engine(
                    self.url,
                    isolation_level="REPEATABLE READ",
                    pool_pre_ping=True,
                    pool_size=10,
                    max_overflow=20,
                    pool_use_lifo=True,
                )
                # Writers stay READ COMMITTED: a writer's snapshot must be taken
                # after it holds the sequencer lock, statement by statement, or
                # it would miss the last holder's commit (and fork the log).
                write = create_engine(
                    self.url, pool_pre_ping=True, pool_size=10, max_overflow=20, pool_use_lifo=True
                )
                # read_rows: autocommit, so a SELECT is one round trip (no BEGIN, no
                # ROLLBACK when the connection goes back, no ping before it: a
                # connection the server dropped is replaced and the read retried).
                rows = create_engine(
                    self.url,
                    isolation_level="AUTOCOMMIT",
                    pool_reset_on_return=None,
                    pool_size=10,
                    max_overflow=20,
                    pool_use_lifo=True,
                )
                made = (read, write, rows)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise StorageError(f"cannot use database {self.safe_url}: {exc}") from None
        self.__dict__["_made_engines"] = made
        return made

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
        from sqlalchemy.exc import OperationalError

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
    def read(self) -> Iterator[Transaction]:
        """A read transaction: one consistent snapshot until the block ends."""
        if self._readers is not None:
            with self._sqlite_read() as tx:
                yield tx
            return
        from sqlalchemy.exc import OperationalError

        try:
            with self.read_engine.connect() as conn:
                yield conn
        except OperationalError as exc:
            raise StorageError(f"database read failed: {exc.orig}") from None

    def _sqlite_reader(self) -> sqlite3.Connection:
        assert self._readers is not None
        try:
            return self._readers.take()
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open database {self.safe_url}: {exc}") from None

    @contextmanager
    def _sqlite_read(self) -> Iterator[SqliteRead]:
        assert self._readers is not None
        conn = self._sqlite_reader()
        healthy = True
        try:
            conn.execute("BEGIN")
            yield SqliteRead(conn)
        except sqlite3.Error as exc:
            healthy = False
            raise StorageError(f"database read failed: {exc}") from None
        finally:
            with suppress(sqlite3.Error):
                conn.execute("ROLLBACK")  # a read: nothing to keep
            self._readers.give_back(conn, healthy=healthy)

    def read_rows(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """The rows of one SELECT run on a pooled driver connection, outside any
        explicit transaction: one statement sees one consistent snapshot on both
        engines, so the hottest reads need no BEGIN (and, on PostgreSQL, none of
        SQLAlchemy's per-statement work: about 10x cheaper than :meth:`read`)."""
        if self._readers is not None:
            return self._sqlite_rows(sql, tuple(params))
        # On PostgreSQL a connection the server dropped (a restart) gets one more
        # try on a fresh connection.
        return self._rows_on_one_connection(sql, tuple(params), retry=not self.is_sqlite)

    def _sqlite_rows(
        self, sql: str, params: tuple[Any, ...], failure: str = "database read failed"
    ) -> list[tuple[Any, ...]]:
        assert self._readers is not None
        conn = self._sqlite_reader()
        try:
            rows = conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            self._readers.give_back(conn, healthy=False)
            raise StorageError(f"{failure}: {exc}") from None
        self._readers.give_back(conn)
        return rows

    def _rows_on_one_connection(
        self, sql: str, params: tuple[Any, ...], *, retry: bool
    ) -> list[tuple[Any, ...]]:
        from sqlalchemy.exc import OperationalError

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
        if self._readers is not None:
            return bool(self._sqlite_pragma_columns(name))
        from sqlalchemy import inspect
        from sqlalchemy.exc import OperationalError

        try:
            return inspect(self.read_engine).has_table(name)
        except OperationalError as exc:
            raise StorageError(f"cannot open database {self.safe_url}: {exc.orig}") from None

    def column_names(self, table: str) -> set[str]:
        if self._readers is not None:
            return self._sqlite_pragma_columns(table)
        from sqlalchemy import inspect
        from sqlalchemy.exc import OperationalError

        try:
            return {c["name"] for c in inspect(self.read_engine).get_columns(table)}
        except OperationalError as exc:
            raise StorageError(f"cannot open database {self.safe_url}: {exc.orig}") from None

    def index_names(self, table: str) -> set[str]:
        """The names of the indexes on ``table``."""
        if self._readers is not None:
            return {str(row[1]) for row in self._sqlite_pragma("index_list", table)}
        from sqlalchemy import inspect
        from sqlalchemy.exc import OperationalError

        try:
            return {str(i["name"]) for i in inspect(self.read_engine).get_indexes(table)}
        except OperationalError as exc:
            raise StorageError(f"cannot open database {self.safe_url}: {exc.orig}") from None

    def _sqlite_pragma_columns(self, table: str) -> set[str]:
        """The columns of ``table`` (none if there is no such table), hidden ones too,
        as SQLAlchemy's inspector lists them."""
        return {str(row[1]) for row in self._sqlite_pragma("table_xinfo", table)}

    def _sqlite_pragma(self, pragma: str, table: str) -> list[Any]:
        if not table.replace("_", "").isalnum():
            raise ValueError(f"not a table name: {table!r}")
        return self._sqlite_rows(
            f'PRAGMA main.{pragma}("{table}")', (), f"cannot open database {self.safe_url}"
        )

    def create_schema(self) -> None:
        """Create tables and append-only triggers (idempotent)."""
        from sqlalchemy.exc import OperationalError

        from registry.storage import tables

        try:
            tables.METADATA.create_all(self.write_engine, tables=list(tables.ALL_TABLES))
            with self.write_engine.begin() as conn:
                for statement in self._trigger_sql():
                    conn.exec_driver_sql(statement)
        except OperationalError as exc:
            raise StorageError(f"cannot create schema in {self.safe_url}: {exc.orig}") from None

    def _trigger_sql(self) -> list[str]:
        from registry.storage import tables

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
        if self._readers is not None:
            self._readers.close()
        for engine in set(self.__dict__.get("_made_engines", ())):
            engine.dispose()
