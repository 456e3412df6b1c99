"""Registry settings. Each is documented next to its field; the CLI fills them from
flags, then environment variables, then these defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from registry.errors import ConfigError

DEFAULT_DATA_DIR = Path("qiledger-data")


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    """Holds the SQLite database (default engine) and the log key. Env QILEDGER_DATA_DIR."""

    database_url: str | None = None
    """SQLAlchemy URL, e.g. ``postgresql+psycopg://user@host/db``; None = SQLite in
    ``data_dir``. Env QILEDGER_DATABASE_URL."""

    log_key_path: Path | None = None
    """PKCS#8 PEM of the log's Ed25519 key; default ``data_dir/log.key``.
    Env QILEDGER_LOG_KEY."""

    demo: bool = False
    """Allow the public demo keys of ``keys.example/``; never in production."""

    dcc_schemas: Path | None = None
    """Folder of PTB DCC schemas laid out as ``v<version>/dcc.xsd``. Without it DCCs
    are parsed strictly but logged with ``schema_validated: false``.
    Env QILEDGER_DCC_SCHEMAS."""

    require_schema: bool = False
    """Refuse DCCs that cannot be schema-validated. Env QILEDGER_REQUIRE_SCHEMA=1."""

    dcc_trust_store: Path | None = None
    """Folder of CA certificates (PEM/DER) trusted for DCC XMLDSig/XAdES signatures.
    Env QILEDGER_DCC_TRUST_STORE."""

    @classmethod
    def from_env(
        cls,
        data_dir: str | None = None,
        database_url: str | None = None,
        log_key: str | None = None,
        demo: bool = False,
    ) -> Settings:
        env = os.environ
        chosen_dir = Path(data_dir or env.get("QILEDGER_DATA_DIR") or DEFAULT_DATA_DIR)
        url = database_url or env.get("QILEDGER_DATABASE_URL") or None
        if url is not None and not url.startswith(("sqlite", "postgresql")):
            raise ConfigError(f"unsupported database URL scheme in {url.split(':', 1)[0]!r}")
        key = log_key or env.get("QILEDGER_LOG_KEY")
        schemas = env.get("QILEDGER_DCC_SCHEMAS")
        trust_store = env.get("QILEDGER_DCC_TRUST_STORE")
        return cls(
            chosen_dir,
            url,
            Path(key) if key else None,
            demo,
            dcc_schemas=Path(schemas) if schemas else None,
            require_schema=env.get("QILEDGER_REQUIRE_SCHEMA", "") in {"1", "true", "yes"},
            dcc_trust_store=Path(trust_store) if trust_store else None,
        )

    @property
    def url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'ledger.db').resolve()}"

    @property
    def log_key_file(self) -> Path:
        return self.log_key_path or self.data_dir / "log.key"
