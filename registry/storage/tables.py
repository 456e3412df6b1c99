"""Database tables (SQLAlchemy Core: no model classes, so opening a ledger does not
import an ORM). Log tables are append-only: database triggers (see
:mod:`registry.storage.database`) refuse UPDATE and DELETE on both engines."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Integer, LargeBinary, MetaData, String, Table

# SQLite only makes an INTEGER PRIMARY KEY the rowid (the fast B-tree key).
_Int64 = BigInteger().with_variant(Integer(), "sqlite")

METADATA = MetaData()

LOG_META = Table(
    "log_meta",
    METADATA,
    Column("id", Integer, primary_key=True, default=1),
    Column("origin", String, nullable=False),
    Column("public_key", LargeBinary, nullable=False),
    Column("created_at", String, nullable=False),
    Column("schema_version", Integer, nullable=False, default=1),
)
"""The log's identity, written once by ``qiledger init``."""

ENTRIES = Table(
    "entries",
    METADATA,
    Column("idx", _Int64, primary_key=True, autoincrement=False),
    Column("leaf_hash", LargeBinary, nullable=False),
    Column("statement_hash", LargeBinary, nullable=False, unique=True),
    Column("logged_at", String, nullable=False),
    Column("data", LargeBinary, nullable=False),
)
"""One log entry; ``data`` is the leaf data exactly as hashed."""

TREE_NODES = Table(
    "tree_nodes",
    METADATA,
    Column("node_id", _Int64, primary_key=True, autoincrement=False),
    Column("hash", LargeBinary, nullable=False),
)
"""Hash of a complete subtree: ``node_id = level << 48 | index`` (see node_keys.py)."""

CHECKPOINTS = Table(
    "checkpoints",
    METADATA,
    Column("size", _Int64, primary_key=True, autoincrement=False),
    Column("root", LargeBinary, nullable=False),
    Column("note", LargeBinary, nullable=False),
    Column("created_at", String, nullable=False),
)
"""A signed checkpoint, one per sequenced batch."""

DOCUMENTS = Table(
    "documents",
    METADATA,
    Column("digest", String, primary_key=True),
    Column("size", _Int64, nullable=False),
    Column("media_type", String, nullable=False),
    Column("data", LargeBinary, nullable=False),
    Column("stored_at", String, nullable=False),
)
"""A certificate document stored by its SHA-256 (served only to issuer and auditors)."""

API_TOKENS = Table(
    "api_tokens",
    METADATA,
    Column("token_id", String, primary_key=True),
    Column("secret_sha256", LargeBinary, nullable=False),
    Column("role", String, nullable=False),
    # the issuer or body id the token acts for ('' for auditor and operator)
    Column("subject", String, nullable=False),
    Column("label", String, nullable=False),
    Column("created_at", String, nullable=False),
    Column("revoked_at", String, nullable=True),
)
"""An API token: only the SHA-256 of its secret is stored. Not part of the log
(revoking sets ``revoked_at``), so not append-only."""

CHECKPOINT_COSIGNATURES = Table(
    "checkpoint_cosignatures",
    METADATA,
    Column("size", _Int64, primary_key=True, autoincrement=False),
    Column("witness_key", String, primary_key=True),
    Column("line", String, nullable=False),
    Column("gathered_at", String, nullable=False),
)
"""A witness's C2SP cosignature line on the checkpoint of ``size`` (``witness_key``:
its verifier key string). Gathered after the log, not part of it: only inserted,
the first line per witness and size kept (each one is checked before it is stored,
and every reader checks it again)."""

APPEND_ONLY_TABLES = ("log_meta", "entries", "tree_nodes", "checkpoints", "documents")

ALL_TABLES = (
    LOG_META,
    ENTRIES,
    TREE_NODES,
    CHECKPOINTS,
    DOCUMENTS,
    API_TOKENS,
    CHECKPOINT_COSIGNATURES,
)
