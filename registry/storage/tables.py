"""Database tables (SQLModel). Log tables are append-only: database triggers
(see :mod:`registry.storage.database`) refuse UPDATE and DELETE on both engines."""

from __future__ import annotations

from sqlalchemy import BigInteger, Integer, LargeBinary, Table
from sqlmodel import Field, SQLModel

# SQLite only makes an INTEGER PRIMARY KEY the rowid (the fast B-tree key).
_Int64 = BigInteger().with_variant(Integer(), "sqlite")


class LogMeta(SQLModel, table=True):
    """The log's identity, written once by ``qiledger init``."""

    __tablename__ = "log_meta"
    id: int = Field(default=1, primary_key=True)
    origin: str
    public_key: bytes = Field(sa_type=LargeBinary)
    created_at: str
    schema_version: int = 1


class EntryRow(SQLModel, table=True):
    """One log entry; ``data`` is the leaf data exactly as hashed."""

    __tablename__ = "entries"
    idx: int = Field(primary_key=True, sa_type=_Int64, sa_column_kwargs={"autoincrement": False})
    leaf_hash: bytes = Field(sa_type=LargeBinary)
    statement_hash: bytes = Field(sa_type=LargeBinary, unique=True)
    logged_at: str
    data: bytes = Field(sa_type=LargeBinary)


class NodeRow(SQLModel, table=True):
    """Hash of a complete subtree: ``node_id = level << 48 | index`` (see tree_nodes.py)."""

    __tablename__ = "tree_nodes"
    node_id: int = Field(
        primary_key=True, sa_type=_Int64, sa_column_kwargs={"autoincrement": False}
    )
    hash: bytes = Field(sa_type=LargeBinary)


class CheckpointRow(SQLModel, table=True):
    """A signed checkpoint, one per sequenced batch."""

    __tablename__ = "checkpoints"
    size: int = Field(primary_key=True, sa_type=_Int64, sa_column_kwargs={"autoincrement": False})
    root: bytes = Field(sa_type=LargeBinary)
    note: bytes = Field(sa_type=LargeBinary)
    created_at: str


class DocumentRow(SQLModel, table=True):
    """A certificate document stored by its SHA-256 (served only to issuer and auditors)."""

    __tablename__ = "documents"
    digest: str = Field(primary_key=True)
    size: int = Field(sa_type=_Int64)
    media_type: str
    data: bytes = Field(sa_type=LargeBinary)
    stored_at: str


class ApiTokenRow(SQLModel, table=True):
    """An API token: only the SHA-256 of its secret is stored. Not part of the log
    (revoking sets ``revoked_at``), so not append-only."""

    __tablename__ = "api_tokens"
    token_id: str = Field(primary_key=True)
    secret_sha256: bytes = Field(sa_type=LargeBinary)
    role: str
    subject: str
    """The issuer or body id the token acts for ('' for auditor and operator)."""
    label: str
    created_at: str
    revoked_at: str | None = None


class TrustSnapshotRow(SQLModel, table=True):
    """The trust state replayed up to a checkpointed size (see trust_snapshot.py).
    A cache: not part of the log, checked by fsck, safe to delete."""

    __tablename__ = "trust_snapshots"
    size: int = Field(primary_key=True, sa_type=_Int64, sa_column_kwargs={"autoincrement": False})
    root: bytes = Field(sa_type=LargeBinary)
    digest: bytes = Field(sa_type=LargeBinary)
    data: bytes = Field(sa_type=LargeBinary)
    created_at: str


APPEND_ONLY_TABLES = ("log_meta", "entries", "tree_nodes", "checkpoints", "documents")


def _table(model: type[SQLModel]) -> Table:
    return model.__table__  # type: ignore[attr-defined, no-any-return]


LOG_META = _table(LogMeta)
ENTRIES = _table(EntryRow)
TREE_NODES = _table(NodeRow)
CHECKPOINTS = _table(CheckpointRow)
DOCUMENTS = _table(DocumentRow)
API_TOKENS = _table(ApiTokenRow)
TRUST_SNAPSHOTS = _table(TrustSnapshotRow)
ALL_TABLES = (LOG_META, ENTRIES, TREE_NODES, CHECKPOINTS, DOCUMENTS, API_TOKENS, TRUST_SNAPSHOTS)
