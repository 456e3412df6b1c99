"""Registry settings, the one place the environment is read (key passphrases
excepted: ``registry.keys.keyfile`` reads those only when a key file needs one).

Each setting is documented next to its field; the CLI fills them from flags,
then environment variables, then these defaults. ``qiledger serve`` hands its
settings to the server's worker processes as environment variables
(:meth:`Settings.worker_env`), which read them back here."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from registry.errors import ConfigError

DEFAULT_DATA_DIR = Path("qiledger-data")
_N = TypeVar("_N", int, float)


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

    log_key_passphrase_file: Path | None = None
    """File holding the log key's passphrase (read without its trailing newline);
    tried before the passphrase variables. Env QILEDGER_LOG_KEY_PASSPHRASE_FILE."""

    passphrase_prompt: bool = False
    """May ask for a key's passphrase on the terminal: the CLI may, a server worker
    never does. Not read from the environment."""

    @classmethod
    def from_env(
        cls,
        data_dir: str | None = None,
        database_url: str | None = None,
        log_key: str | None = None,
        demo: bool | None = None,
        *,
        log_key_passphrase_file: str | None = None,
        passphrase_prompt: bool = False,
    ) -> Settings:
        """Arguments (the CLI's flags) win over the environment; ``demo=None``
        reads QILEDGER_DEMO=1 (how ``qiledger serve`` tells its workers)."""
        env = os.environ
        chosen_dir = Path(data_dir or env.get("QILEDGER_DATA_DIR") or DEFAULT_DATA_DIR)
        url = database_url or env.get("QILEDGER_DATABASE_URL") or None
        if url is not None and not url.startswith(("sqlite", "postgresql")):
            raise ConfigError(f"unsupported database URL scheme in {url.split(':', 1)[0]!r}")
        key = log_key or env.get("QILEDGER_LOG_KEY")
        schemas = env.get("QILEDGER_DCC_SCHEMAS")
        trust_store = env.get("QILEDGER_DCC_TRUST_STORE")
        passphrase_file = log_key_passphrase_file or env.get("QILEDGER_LOG_KEY_PASSPHRASE_FILE")
        return cls(
            chosen_dir,
            url,
            Path(key) if key else None,
            env.get("QILEDGER_DEMO") == "1" if demo is None else demo,
            dcc_schemas=Path(schemas) if schemas else None,
            require_schema=env.get("QILEDGER_REQUIRE_SCHEMA", "") in {"1", "true", "yes"},
            dcc_trust_store=Path(trust_store) if trust_store else None,
            log_key_passphrase_file=Path(passphrase_file) if passphrase_file else None,
            passphrase_prompt=passphrase_prompt,
        )

    def worker_env(self) -> dict[str, str | None]:
        """The variables that make :meth:`from_env` in a server worker give these
        settings where flags may have chosen them (None: unset the variable)."""
        passphrase_file = self.log_key_passphrase_file
        return {
            "QILEDGER_DATA_DIR": str(self.data_dir),
            "QILEDGER_DATABASE_URL": self.database_url,
            "QILEDGER_LOG_KEY": str(self.log_key_file),
            "QILEDGER_DEMO": "1" if self.demo else None,
            "QILEDGER_LOG_KEY_PASSPHRASE_FILE": str(passphrase_file) if passphrase_file else None,
        }

    @property
    def url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'ledger.db').resolve()}"

    @property
    def log_key_file(self) -> Path:
        return self.log_key_path or self.data_dir / "log.key"


@dataclass(frozen=True)
class ServerSettings:
    """Settings of the HTTP service only (``qiledger serve`` and its workers);
    None leaves the service's own default."""

    public_url: str | None = None
    """Base URL of the public verifier, for QR mark URLs; http(s).
    Flag --public-url; env QILEDGER_PUBLIC_URL."""

    rate_per_second: float | None = None
    """Requests per second allowed per API token. Env QILEDGER_RATE_LIMIT."""

    rate_burst: int | None = None
    """Requests an API token may make at once before the rate applies.
    Env QILEDGER_RATE_BURST."""

    witnesses: tuple[str, ...] = ()
    """C2SP tlog-witnesses asked to cosign each checkpoint, each ``URL=VKEY`` (its
    submission URL prefix and cosignature verifier key; parsed by
    :class:`registry.witnessing.WitnessEndpoint`). Flag --witness (repeatable);
    env QILEDGER_WITNESSES, separated by spaces or commas."""

    @classmethod
    def from_env(
        cls, public_url: str | None = None, witnesses: Sequence[str] | None = None
    ) -> ServerSettings:
        env = os.environ
        url = public_url or env.get("QILEDGER_PUBLIC_URL") or None
        if url is not None and not url.startswith(("http://", "https://")):
            raise ConfigError(f"QILEDGER_PUBLIC_URL must be an http(s) URL, not {url!r}")
        if not witnesses:
            witnesses = env.get("QILEDGER_WITNESSES", "").replace(",", " ").split()
        return cls(
            public_url=url,
            rate_per_second=_number("QILEDGER_RATE_LIMIT", float),
            rate_burst=_number("QILEDGER_RATE_BURST", int),
            witnesses=tuple(witnesses),
        )

    def worker_env(self) -> dict[str, str | None]:
        """The variables a flag may have chosen (the rates come from the environment
        the workers inherit)."""
        return {
            "QILEDGER_PUBLIC_URL": self.public_url,
            "QILEDGER_WITNESSES": " ".join(self.witnesses) or None,
        }


def _number(name: str, kind: type[_N]) -> _N | None:
    text = os.environ.get(name)
    if not text:
        return None
    try:
        value = kind(text)
    except ValueError:
        value = kind(-1)
    if value < 0:
        what = "whole number" if kind is int else "number"
        raise ConfigError(f"{name} must be a {what} >= 0, not {text!r}")
    return value
