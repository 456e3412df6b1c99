"""The derived certificate tables' layout (:mod:`registry.storage.certificate_index`
reads and writes them with DB-API SQL): SQLAlchemy Core, imported only to create
or drop them, so a command that only reads never loads SQLAlchemy."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, MetaData, Table, Text

from registry.storage.certificate_index import COVERING_LINKS_INDEX

# SQLite only makes an INTEGER PRIMARY KEY the rowid (the fast B-tree key).
_Int64 = BigInteger().with_variant(Integer(), "sqlite")

METADATA = MetaData()

CERTIFICATES = Table(
    "certificates",
    METADATA,
    Column("first_index", _Int64, primary_key=True, autoincrement=False),
    Column("certificate_id", Text, nullable=False, unique=True),
    Column("issuer_id", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("document_sha256", Text, nullable=False),
    Column("valid_until", Text),
    Column("superseded_by", Text),
    Column("laboratory_name", Text),
    Column("laboratory_code", Text),
    Column("first_type", Text, nullable=False),
    Column("first_logged_at", Text, nullable=False),
    Column("first_key_id", Text, nullable=False),
    Column("first_reason", Text, nullable=False),
    Column("recorded_status", Text, nullable=False),
    Column("last_index", _Int64, nullable=False),
    Column("issued", Text),
    Index("certificates_by_issuer", "issuer_id", "first_index"),
    Index("certificates_by_document", "document_sha256"),
    # Listings filter by status and by issue date (in log order within them).
    Index("certificates_by_status", "recorded_status", "first_index"),
    Index("certificates_by_issued", "issued", "first_index"),
)
CERTIFICATE_EVENTS = Table(
    "certificate_events",
    METADATA,
    Column("idx", _Int64, primary_key=True, autoincrement=False),
    Column("certificate_id", Text, nullable=False),
    Column("type", Text, nullable=False),
    Column("logged_at", Text, nullable=False),
    Column("key_id", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Index("certificate_events_by_certificate", "certificate_id", "idx"),
)
TRUST_ENTRIES = Table(
    "trust_entries", METADATA, Column("idx", _Int64, primary_key=True, autoincrement=False)
)
DERIVED_STATE = Table(
    "derived_state",
    METADATA,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("size", _Int64, nullable=False),
)
CERTIFICATE_LINKS = Table(
    "certificate_links",
    METADATA,
    Column("from_index", _Int64, primary_key=True, autoincrement=False),
    Column("position", Integer, primary_key=True, autoincrement=False),
    Column("from_certificate", Text, nullable=False),
    Column("to_certificate", Text, nullable=False),
    Column("to_digest", Text, nullable=False),
    Column("procedure", Text, nullable=False),
    Column("role", Text, nullable=False),
    # What a dependents walk needs besides the link, so that it never reads a
    # certificate's row (a random read each, tens of thousands per set):
    # - the link's digest checked against its target's registered document
    #   (verifier.traceability.link_digest_check: "external" until the target is
    #   registered, then fixed, since a certificate's document never changes);
    # - the linking certificate's columns that decide its status where the
    #   recorded status does, copied from its row (the status is rewritten with
    #   the row's, in the same transaction).
    Column("digest_check", Text, nullable=False),
    Column("from_issuer", Text, nullable=False),
    Column("from_valid_until", Text),
    Column("from_status", Text, nullable=False),
    Index("certificate_links_by_from", "from_certificate", "position"),
    # Every column a dependents walk reads, in the order it reads them: the walk
    # is answered from this index alone (no row look-up, no sort).
    Index(
        COVERING_LINKS_INDEX,
        "to_certificate",
        "from_index",
        "position",
        "role",
        "from_certificate",
        "digest_check",
        "from_issuer",
        "from_status",
        "from_valid_until",
    ),
)
CERTIFICATE_STANDARDS = Table(
    "certificate_standards",
    METADATA,
    Column("standard_key", Text, primary_key=True),
    Column("first_index", _Int64, primary_key=True, autoincrement=False),
    Column("standard_ref", Text, primary_key=True),
    Column("certificate_id", Text, nullable=False),
    # The other way: a certificate's standards by its first index (fsck reads ranges).
    Index("certificate_standards_by_entry", "first_index", "standard_key", "standard_ref"),
)
TABLES = (
    CERTIFICATES,
    CERTIFICATE_EVENTS,
    TRUST_ENTRIES,
    DERIVED_STATE,
    CERTIFICATE_LINKS,
    CERTIFICATE_STANDARDS,
)
