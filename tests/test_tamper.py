# ruff: noqa: S608  (raw SQL here names only this module's own tables and columns)
"""Tampering below the registry: fsck must find it and name the first bad place.

On SQLite the damage is done to the database *file* (one bit flipped where a
stored value's bytes sit), which bypasses every trigger; on PostgreSQL a
superuser session disables the triggers (``session_replication_role =
replica``) and UPDATEs a row. Every tamper is checked to have changed exactly
the one stored value it aims at, so a passing fsck is a real miss, not a
missed flip. Also here: the append-only triggers themselves, on both engines.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import sqlite3
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import DBAPIError

from registry.cli import main as cli
from registry.config import Settings
from registry.errors import IntegrityError
from registry.fsck import fsck
from registry.ledger import Ledger
from registry.storage import tables
from registry.storage.database import Database
from registry.storage.node_keys import node_id
from registry.storage.protocol import StoredDocument
from tests.conftest import make_ledger
from tests.helpers import documents_for, envelope_bytes, issue_statement, key_from
from verifier import merkle

LAB = key_from("lab-1")
BATCHES, PER_BATCH = 4, 10
TRUST_ENTRIES = 2  # make_ledger's body and accreditation
SIZE = TRUST_ENTRIES + BATCHES * PER_BATCH  # 42
CHECKPOINT_SIZES = [0, 1, 2, 12, 22, 32, 42]
NODE_COUNT = 42 + 21 + 10 + 5 + 2 + 1
ENTRY = 17  # in the second batch (entries 12..21)
CHECKPOINT = 22  # not a power of two: its root is no stored node's hash
DOC_POSITION = 3  # entry 35 carries a stored document
DOCUMENT = b"<dcc:digitalCalibrationCertificate>tamper test " + b"x" * 150 + b"</dcc>"
DOC_DIGEST = hashlib.sha256(DOCUMENT).hexdigest()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("QILEDGER_DATABASE_URL", "QILEDGER_DATA_DIR", "QILEDGER_LOG_KEY"):
        monkeypatch.delenv(name, raising=False)


def build_log(settings: Settings) -> Ledger:
    """42 entries: the trust chain, then 4 batches of 10 certificate statements;
    entry 35 carries a stored document."""
    ledger = make_ledger(settings, LAB)
    for b in range(BATCHES):
        batch = []
        documents = {}
        for i in range(PER_BATCH):
            n = b * PER_BATCH + i
            if b == BATCHES - 1 and i == DOC_POSITION:
                batch.append(envelope_bytes(issue_statement(n, document_sha256=DOC_DIGEST), LAB))
                documents[i] = StoredDocument(DOC_DIGEST, "application/xml", DOCUMENT)
            else:
                batch.append(envelope_bytes(issue_statement(n), LAB))
        outcomes = ledger.sequencer.submit_many(batch, {**documents_for(batch), **documents})
        first = TRUST_ENTRIES + b * PER_BATCH
        assert [getattr(o, "index", o) for o in outcomes] == list(range(first, first + PER_BATCH))
    assert [cp.size for cp in ledger.storage.iter_checkpoints()] == CHECKPOINT_SIZES
    return ledger


# --- SQLite file surgery ----------------------------------------------------------


def sqlite_file(settings: Settings) -> Path:
    return settings.data_dir / "ledger.db"


def settle(db: Path) -> None:
    """Make the main database file hold everything, each live value exactly once:
    VACUUM rewrites the file without stale copies in free space, and a TRUNCATE
    checkpoint moves the WAL into the file and empties it."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("VACUUM")
        busy, log_frames, checkpointed = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        assert (busy, log_frames, checkpointed) == (0, 0, 0)
    finally:
        conn.close()
    wal = db.with_name(db.name + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0


def flip_in_file(db: Path, value: bytes, offset: int, bit: int = 0x01) -> None:
    """Flip one bit of the byte at ``offset`` of ``value``, found in the file."""
    raw = db.read_bytes()
    at = raw.find(value)
    assert at >= 0, "the target value is not stored contiguously in the file"
    assert raw.find(value, at + 1) == -1, "the target value is not unique in the file"
    with db.open("r+b") as f:
        f.seek(at + offset)
        f.write(bytes([raw[at + offset] ^ bit]))


def overwrite_in_file(db: Path, value: bytes, offset: int, new: bytes) -> None:
    raw = db.read_bytes()
    at = raw.find(value)
    assert at >= 0
    assert raw.find(value, at + 1) == -1
    with db.open("r+b") as f:
        f.seek(at + offset)
        f.write(new)


Cell = tuple[str, Any, str]


def dump_sqlite(db: Path) -> dict[str, dict[Any, dict[str, Any]]]:
    conn = sqlite3.connect(db)
    try:
        return {table: _rows(conn.execute(f"SELECT * FROM {table}")) for table in _tables()}
    finally:
        conn.close()


def _tables() -> tuple[str, ...]:
    return tables.APPEND_ONLY_TABLES


def _rows(cursor: Any) -> dict[Any, dict[str, Any]]:
    names = [d[0] for d in cursor.description]
    out = {}
    for row in cursor.fetchall():
        values = {
            n: bytes(v) if isinstance(v, memoryview) else v for n, v in zip(names, row, strict=True)
        }
        out[row[0]] = values
    return out


def changed_cells(before: dict[str, Any], after: dict[str, Any]) -> set[Cell]:
    changed: set[Cell] = set()
    for table, rows in before.items():
        assert after[table].keys() == rows.keys(), f"rows of {table} appeared or vanished"
        for key, values in rows.items():
            changed |= {(table, key, c) for c, v in values.items() if after[table][key][c] != v}
    return changed


def stored_entry(db: Path, index: int) -> tuple[bytes, bytes, bytes]:
    """leaf_hash, statement_hash and data of an entry, read straight from the file."""
    conn = sqlite3.connect(db)
    try:
        row = conn.execute(
            "SELECT leaf_hash, statement_hash, data FROM entries WHERE idx = ?", (index,)
        ).fetchone()
    finally:
        conn.close()
    return bytes(row[0]), bytes(row[1]), bytes(row[2])


def stored_value(db: Path, sql: str, *args: Any) -> bytes:
    conn = sqlite3.connect(db)
    try:
        return bytes(conn.execute(sql, args).fetchone()[0])
    finally:
        conn.close()


# --- fsck ------------------------------------------------------------------------------


def cli_args(settings: Settings) -> list[str]:
    args = ["--data-dir", str(settings.data_dir)]
    if settings.database_url:
        args += ["--database-url", settings.database_url]
    return args


def assert_damaged_at(
    settings: Settings, where: str, capsys: pytest.CaptureFixture[str]
) -> IntegrityError:
    ledger = Ledger.open(settings)
    try:
        with pytest.raises(IntegrityError) as info:
            fsck(ledger)
    finally:
        ledger.close()
    assert info.value.where == where, info.value.message
    capsys.readouterr()
    assert cli.main([*cli_args(settings), "fsck"]) == 3
    err = capsys.readouterr().err
    assert f"qiledger: fsck: DAMAGED at {where}: " in err
    assert len(err.strip().splitlines()) == 1
    assert cli.main([*cli_args(settings), "--json", "fsck"]) == 3
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    assert report["where"] == where
    return info.value


def assert_clean(settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    ledger = Ledger.open(settings)
    try:
        report = fsck(ledger)
    finally:
        ledger.close()
    assert (report.entries, report.nodes, report.checkpoints) == (
        SIZE,
        NODE_COUNT,
        len(CHECKPOINT_SIZES),
    )
    capsys.readouterr()
    assert cli.main([*cli_args(settings), "fsck"]) == 0
    out = capsys.readouterr().out
    assert f"fsck OK: {SIZE} entries, {NODE_COUNT} tree nodes" in out


# --- fixtures ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A closed, settled SQLite ledger, built once per module and copied per test."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("pristine") / "data")
    build_log(settings).close()
    settle(sqlite_file(settings))
    return settings.data_dir


@pytest.fixture
def log_copy(pristine: Path, tmp_path: Path) -> Settings:
    data_dir = tmp_path / "data"
    shutil.copytree(pristine, data_dir)
    return Settings(data_dir=data_dir)


# --- SQLite: one flipped bit in the file --------------------------------------------


def test_untampered_copy_passes(log_copy: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    assert_clean(log_copy, capsys)


def test_untampered_log_passes_on_each_engine(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    build_log(settings).close()
    assert_clean(settings, capsys)


def _offset_in_entry(data: bytes, spot: str) -> int:
    anchors = {
        "json-brace": (b'{"envelope":', 0),
        "json-colon": (b'"logged_at":', len(b'"logged_at"')),
        "json-quote": (b'"payloadType"', 0),
        "payload-b64": (b'"payload":"', len(b'"payload":"') + 101),
        "signature-b64": (b'"sig":"', len(b'"sig":"') + 37),
        "keyid-hex": (b'"keyid":"', len(b'"keyid":"') + 11),
        "logged_at": (b'"logged_at":"', len(b'"logged_at":"') + 21),
        "prev-hex": (b'"prev":"', len(b'"prev":"') + 5),
    }
    anchor, delta = anchors[spot]
    at = data.find(anchor)
    assert at >= 0
    return at + delta


ENTRY_SPOTS = [
    "json-brace",
    "json-colon",
    "json-quote",
    "payload-b64",
    "signature-b64",
    "keyid-hex",
    "logged_at",
    "prev-hex",
]


@pytest.mark.parametrize("spot", ENTRY_SPOTS)
def test_flipped_bit_in_leaf_data(
    log_copy: Settings, spot: str, capsys: pytest.CaptureFixture[str]
) -> None:
    db = sqlite_file(log_copy)
    _, _, data = stored_entry(db, ENTRY)
    before = dump_sqlite(db)
    flip_in_file(db, data, _offset_in_entry(data, spot))
    assert changed_cells(before, dump_sqlite(db)) == {("entries", ENTRY, "data")}
    assert_damaged_at(log_copy, f"entry {ENTRY}", capsys)


def _similar(byte: int) -> int:
    """Another character of the same kind, so the entry stays well-formed."""
    ch = chr(byte)
    if ch.isdigit():
        return ord("0") + (int(ch) + 1) % 10
    if ch in "abcdef":
        return ord("a") + ("abcdef".index(ch) + 1) % 6
    if ch.isalpha():
        return byte - 1 if ch in "zZ" else byte + 1
    if ch in "+/":  # base64's other two characters (signatures vary run to run)
        return ord("/" if ch == "+" else "+")
    return byte ^ 0x01


def test_similar_keeps_every_alphabet_well_formed() -> None:
    """The forged character must stay in its alphabet, or the test would check
    a parse error instead of the forgery (signatures differ from run to run)."""
    alphabets = [
        string.ascii_letters + string.digits + "+/",  # base64
        string.digits + "abcdef",  # hex
        string.digits,  # timestamps
    ]
    for alphabet in alphabets:
        for ch in alphabet:
            forged = chr(_similar(ord(ch)))
            assert forged != ch
            assert forged in alphabet, (ch, forged)


@pytest.mark.parametrize(
    ("spot", "message"),
    [
        ("payload-b64", "stored statement hash does not match"),
        # The statement is the same; its signature no longer verifies.
        ("signature-b64", "does not verify"),
        ("logged_at", "logged_at column differs from the data"),
        ("prev-hex", "prev does not link"),
    ],
)
def test_rewritten_leaf_data_with_matching_leaf_hash(
    log_copy: Settings, spot: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The forger also fixes the stored leaf hash (in the file): the other
    columns or the prev link still give entry 17 away."""
    db = sqlite_file(log_copy)
    leaf, statement_hash, data = stored_entry(db, ENTRY)
    offset = _offset_in_entry(data, spot)
    forged = data[:offset] + bytes([_similar(data[offset])]) + data[offset + 1 :]
    before = dump_sqlite(db)
    flip_in_file(db, data, offset, forged[offset] ^ data[offset])
    assert stored_entry(db, ENTRY)[2] == forged
    overwrite_in_file(db, leaf + statement_hash, 0, merkle.leaf_hash(forged))
    assert changed_cells(before, dump_sqlite(db)) == {
        ("entries", ENTRY, "data"),
        ("entries", ENTRY, "leaf_hash"),
    }
    error = assert_damaged_at(log_copy, f"entry {ENTRY}", capsys)
    assert message in error.message


@pytest.mark.parametrize(
    ("spot", "where", "message"),
    [
        ("payload-b64", f"entry {ENTRY}", "does not replay"),
        ("signature-b64", f"entry {ENTRY}", "does not verify"),
        # A self-consistent entry 17 shows only through the chain: 18 links to the old one.
        ("logged_at", f"entry {ENTRY + 1}", "prev does not link"),
        ("prev-hex", f"entry {ENTRY}", "prev does not link"),
    ],
)
def test_forged_entry_with_every_column_consistent(
    log_copy: Settings, spot: str, where: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A forger with SQL access (triggers dropped) rewrites entry 17 and every
    column derived from it: fsck must still catch it, by signature or chain."""
    db = sqlite_file(log_copy)
    _, _, data = stored_entry(db, ENTRY)
    offset = _offset_in_entry(data, spot)
    forged = data[:offset] + bytes([_similar(data[offset])]) + data[offset + 1 :]
    envelope = forged[len(b'{"envelope":') : forged.rindex(b',"logged_at":"')]
    payload = base64.b64decode(json.loads(envelope)["payload"])
    logged_at = forged[forged.rindex(b'"logged_at":"') + 13 :].split(b'"')[0].decode()
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("DROP TRIGGER entries_no_update")
        conn.execute(
            "UPDATE entries SET data = ?, leaf_hash = ?, statement_hash = ?, logged_at = ? "
            "WHERE idx = ?",
            (
                forged,
                merkle.leaf_hash(forged),
                hashlib.sha256(payload).digest(),
                logged_at,
                ENTRY,
            ),
        )
    finally:
        conn.close()
    assert stored_entry(db, ENTRY)[2] == forged
    if spot == "logged_at":
        # A forged time earlier than entry 16's is caught one entry sooner.
        previous = stored_entry(db, ENTRY - 1)[2]
        earlier = previous[previous.rindex(b'"logged_at":"') + 13 :].split(b'"')[0].decode()
        if logged_at < earlier:
            where, message = f"entry {ENTRY}", "logged_at goes backwards"
    error = assert_damaged_at(log_copy, where, capsys)
    assert message in error.message


def test_flipped_bit_in_stored_leaf_hash(
    log_copy: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    db = sqlite_file(log_copy)
    leaf, statement_hash, _ = stored_entry(db, ENTRY)
    before = dump_sqlite(db)
    # leaf_hash is also tree node 0/17; next to statement_hash it is the entries row.
    flip_in_file(db, leaf + statement_hash, 9, 0x80)
    assert changed_cells(before, dump_sqlite(db)) == {("entries", ENTRY, "leaf_hash")}
    error = assert_damaged_at(log_copy, f"entry {ENTRY}", capsys)
    assert "leaf hash" in error.message


def test_flipped_bit_in_level_zero_node(
    log_copy: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    db = sqlite_file(log_copy)
    leaf = stored_entry(db, ENTRY)[0]
    key = node_id((0, ENTRY))
    raw = db.read_bytes()
    assert raw.count(leaf) == 2  # the entries row and tree node 0/17
    before = dump_sqlite(db)
    # The other copy: the one not followed by the envelope hash.
    statement_hash = stored_entry(db, ENTRY)[1]
    at = next(i for i in _find_all(raw, leaf) if raw[i + 32 : i + 64] != statement_hash)
    with db.open("r+b") as f:
        f.seek(at + 31)
        f.write(bytes([raw[at + 31] ^ 0x04]))
    assert changed_cells(before, dump_sqlite(db)) == {("tree_nodes", key, "hash")}
    assert_damaged_at(log_copy, f"node 0/{ENTRY}", capsys)


def _find_all(raw: bytes, value: bytes) -> Iterator[int]:
    at = raw.find(value)
    while at >= 0:
        yield at
        at = raw.find(value, at + 1)


@pytest.mark.parametrize(("level", "index"), [(1, 5), (2, 3), (3, 2), (4, 1)])
def test_flipped_bit_in_tree_node(
    log_copy: Settings, level: int, index: int, capsys: pytest.CaptureFixture[str]
) -> None:
    db = sqlite_file(log_copy)
    key = node_id((level, index))
    value = stored_value(db, "SELECT hash FROM tree_nodes WHERE node_id = ?", key)
    before = dump_sqlite(db)
    flip_in_file(db, value, 20)
    assert changed_cells(before, dump_sqlite(db)) == {("tree_nodes", key, "hash")}
    error = assert_damaged_at(log_copy, f"node {level}/{index}", capsys)
    first = index << level
    assert f"entries {first}..{first + (1 << level) - 1}" in error.message


def _note(db: Path, size: int) -> bytes:
    return stored_value(db, "SELECT note FROM checkpoints WHERE size = ?", size)


@pytest.mark.parametrize("spot", ["signature", "key-id", "root-line", "size-line"])
def test_flipped_bit_in_checkpoint_note(
    log_copy: Settings, spot: str, capsys: pytest.CaptureFixture[str]
) -> None:
    db = sqlite_file(log_copy)
    note = _note(db, CHECKPOINT)
    sig_line = note.index("\n— ".encode()) + len("\n— ".encode())
    b64_start = note.index(b" ", sig_line) + 1
    offsets = {
        "signature": b64_start + 40,  # well inside the 64 signature bytes
        "key-id": b64_start + 1,  # the 4-byte key ID before the signature
        "root-line": note.index(b"\n", note.index(b"\n") + 1) + 10,
        "size-line": note.index(b"\n") + 1,  # first digit of "22"
    }
    before = dump_sqlite(db)
    flip_in_file(db, note, offsets[spot], 0x01 if spot != "size-line" else 0x02)
    assert changed_cells(before, dump_sqlite(db)) == {("checkpoints", CHECKPOINT, "note")}
    assert_damaged_at(log_copy, f"checkpoint {CHECKPOINT}", capsys)


def test_flipped_bit_in_checkpoint_root_column(
    log_copy: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    db = sqlite_file(log_copy)
    root = stored_value(db, "SELECT root FROM checkpoints WHERE size = ?", CHECKPOINT)
    before = dump_sqlite(db)
    flip_in_file(db, root, 0, 0x10)
    assert changed_cells(before, dump_sqlite(db)) == {("checkpoints", CHECKPOINT, "root")}
    error = assert_damaged_at(log_copy, f"checkpoint {CHECKPOINT}", capsys)
    assert "root" in error.message


def test_flipped_bit_in_log_public_key(
    log_copy: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """A swapped log identity: no checkpoint verifies any more, from the first."""
    db = sqlite_file(log_copy)
    public_key = stored_value(db, "SELECT public_key FROM log_meta WHERE id = 1")
    before = dump_sqlite(db)
    flip_in_file(db, public_key, 7)
    assert changed_cells(before, dump_sqlite(db)) == {("log_meta", 1, "public_key")}
    assert_damaged_at(log_copy, "checkpoint 0", capsys)


def test_flipped_bit_in_stored_document(
    log_copy: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """fsck re-reads "everything stored": a document no longer matching the
    SHA-256 it is stored (and logged) under is damage too."""
    db = sqlite_file(log_copy)
    before = dump_sqlite(db)
    flip_in_file(db, DOCUMENT, len(DOCUMENT) // 2)
    assert changed_cells(before, dump_sqlite(db)) == {("documents", DOC_DIGEST, "data")}
    ledger = Ledger.open(log_copy)
    try:
        with pytest.raises(IntegrityError) as info:
            fsck(ledger)
    finally:
        ledger.close()
    assert info.value.where.startswith("document")
    assert DOC_DIGEST in info.value.where + info.value.message
    capsys.readouterr()
    assert cli.main([*cli_args(log_copy), "fsck"]) == 3


# --- PostgreSQL: UPDATE with the triggers switched off ----------------------------


def _pg_conninfo(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def _flip(value: bytes, offset: int, bit: int = 0x01) -> bytes:
    out = bytearray(value)
    out[offset] ^= bit
    return bytes(out)


@pytest.mark.postgres
@pytest.mark.parametrize("target", ["entry", "leaf_hash", "node", "note", "root"])
def test_postgres_tamper_with_triggers_disabled(
    postgres_url: str, tmp_path: Path, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import psycopg

    settings = Settings(data_dir=tmp_path / "data", database_url=postgres_url)
    build_log(settings).close()
    key = node_id((2, 3))
    with psycopg.connect(_pg_conninfo(postgres_url)) as conn:
        # Without the switch, the triggers refuse the very same UPDATE.
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            conn.execute("UPDATE entries SET logged_at = logged_at WHERE idx = %s", (ENTRY,))
        conn.rollback()
        conn.execute("SET session_replication_role = replica")
        if target == "entry":
            (data,) = conn.execute("SELECT data FROM entries WHERE idx = %s", (ENTRY,)).fetchone()
            offset = _offset_in_entry(data, "signature-b64")
            sql, args = "UPDATE entries SET data = %s WHERE idx = %s", (_flip(data, offset), ENTRY)
            where = f"entry {ENTRY}"
        elif target == "leaf_hash":
            (leaf,) = conn.execute(
                "SELECT leaf_hash FROM entries WHERE idx = %s", (ENTRY,)
            ).fetchone()
            sql, args = "UPDATE entries SET leaf_hash = %s WHERE idx = %s", (_flip(leaf, 0), ENTRY)
            where = f"entry {ENTRY}"
        elif target == "node":
            (value,) = conn.execute(
                "SELECT hash FROM tree_nodes WHERE node_id = %s", (key,)
            ).fetchone()
            sql, args = "UPDATE tree_nodes SET hash = %s WHERE node_id = %s", (_flip(value, 5), key)
            where = "node 2/3"
        elif target == "note":
            (note,) = conn.execute(
                "SELECT note FROM checkpoints WHERE size = %s", (CHECKPOINT,)
            ).fetchone()
            sql = "UPDATE checkpoints SET note = %s WHERE size = %s"
            args = (_flip(note, len(note) - 20), CHECKPOINT)
            where = f"checkpoint {CHECKPOINT}"
        else:
            (root,) = conn.execute(
                "SELECT root FROM checkpoints WHERE size = %s", (CHECKPOINT,)
            ).fetchone()
            sql = "UPDATE checkpoints SET root = %s WHERE size = %s"
            args = (_flip(root, 31), CHECKPOINT)
            where = f"checkpoint {CHECKPOINT}"
        assert conn.execute(sql, args).rowcount == 1
        conn.commit()
    assert_damaged_at(settings, where, capsys)


# --- the append-only triggers ------------------------------------------------------


def dump_db(db: Database) -> dict[str, dict[Any, dict[str, Any]]]:
    with db.read() as conn:
        return {
            table: _rows(conn.exec_driver_sql(f"SELECT * FROM {table}").cursor)
            for table in _tables()
        }


ROW_OF = {
    "log_meta": "id = 1",
    "entries": f"idx = {ENTRY}",
    "tree_nodes": f"node_id = {node_id((2, 3))}",
    "checkpoints": f"size = {CHECKPOINT}",
    "documents": f"digest = '{DOC_DIGEST}'",
}
# (key column, a column to change, all columns)
COLUMNS_OF = {
    "log_meta": ("id", "origin", "id, origin, public_key, created_at, schema_version"),
    "entries": ("idx", "logged_at", "idx, leaf_hash, statement_hash, logged_at, data"),
    "tree_nodes": ("node_id", "hash", "node_id, hash"),
    "checkpoints": ("size", "created_at", "size, root, note, created_at"),
    "documents": ("digest", "media_type", "digest, size, media_type, data, stored_at"),
}


def _statements(table: str, postgres: bool) -> list[str]:
    where = ROW_OF[table]
    key, column, columns = COLUMNS_OF[table]
    statements = [
        f"UPDATE {table} SET {column} = {column} || {column} WHERE {where}",
        f"UPDATE {table} SET {column} = {column}",  # even a no-op UPDATE
        f"DELETE FROM {table} WHERE {where}",
        f"DELETE FROM {table}",
        # An upsert that rewrites an existing row is an UPDATE.
        f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {table} WHERE {where} "
        f"ON CONFLICT ({key}) DO UPDATE SET {column} = excluded.{column} || excluded.{column}",
    ]
    if postgres:
        statements += [f"TRUNCATE {table}", f"TRUNCATE {table} CASCADE"]
    return statements


def _write(db: Database, sql: str) -> None:
    with db.write() as conn:
        conn.exec_driver_sql(sql)


def test_append_only_triggers_refuse_changes(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger = build_log(settings)
    try:
        before = dump_db(ledger.db)
        assert all(before[t] for t in _tables())
        postgres = not ledger.db.is_sqlite
        for table in _tables():
            for sql in _statements(table, postgres):
                with pytest.raises(DBAPIError) as info:
                    _write(ledger.db, sql)
                assert f"{table} is append-only" in str(info.value), sql
        # Nothing changed, as seen through a fresh engine.
        fresh = Database(settings.url)
        try:
            assert dump_db(fresh) == before
        finally:
            fresh.dispose()
    finally:
        ledger.close()
    assert_clean(settings, capsys)


# Well-typed replacement values for COLUMNS_OF's column to change.
FORGED = {
    "log_meta": "'evil.example/log'",
    "entries": "'2000-01-01T00:00:00.000Z'",
    "tree_nodes": "zeroblob(32)",
    "checkpoints": "'2000-01-01T00:00:00.000Z'",
    "documents": "'text/plain'",
}


def _sqlite_refusal(db: Path, sql: str) -> str | None:
    """Run ``sql`` on a plain sqlite3 connection; the error message, if refused."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute(sql)
    except sqlite3.DatabaseError as exc:
        return str(exc)
    finally:
        conn.close()
    return None


def test_sqlite_insert_or_replace_cannot_rewrite_rows(sqlite_settings: Settings) -> None:
    """REPLACE deletes the conflicting row without firing DELETE triggers (SQLite
    fires them on REPLACE only with recursive_triggers on): the append-only
    guarantee must hold for it too, from any connection."""
    build_log(sqlite_settings).close()
    db = sqlite_file(sqlite_settings)
    before = dump_sqlite(db)
    rewritten = []
    for table in _tables():
        _, column, columns = COLUMNS_OF[table]
        select = columns.replace(column, f"{FORGED[table]} AS {column}", 1)
        sql = (
            f"INSERT OR REPLACE INTO {table} ({columns}) "
            f"SELECT {select} FROM {table} WHERE {ROW_OF[table]}"
        )
        refusal = _sqlite_refusal(db, sql)
        if refusal is not None:
            assert f"{table} is append-only" in refusal
        if dump_sqlite(db)[table] != before[table]:
            rewritten.append(table)
    assert rewritten == [], f"INSERT OR REPLACE rewrote rows of {rewritten}"
