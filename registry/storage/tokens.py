"""API tokens: who may call the write and auditor routes.

A token reads ``qil_<token id>_<secret>``. Only the SHA-256 of the secret is
stored, so a copy of the database does not hand out working tokens. A token is
never enough to write: the envelope must also be signed by a key the trust
chain accepts for the statement (a stolen token alone cannot write).

Roles: ``issuer`` (acts for one issuer id: its certificates and key events),
``body`` (acts for one accreditation body: its accreditation statements and key
events it signs), ``operator`` (any statement, e.g. trust anchors), ``auditor``
(documents and exports; cannot write).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from registry.errors import NotFoundError
from registry.storage.database import Database
from verifier.encoding import b64url_encode
from verifier.entry import format_time
from verifier.errors import MalformedError, QILedgerError

ROLES = ("issuer", "body", "operator", "auditor")
_TOKEN = re.compile(r"qil_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")


class AuthenticationError(QILedgerError):
    """No token, a malformed one, or one this registry did not issue (or revoked)."""

    code = "token_invalid"


@dataclass(frozen=True)
class TokenHolder:
    """Who a valid token speaks for."""

    token_id: str
    role: str
    subject: str
    label: str


@dataclass(frozen=True)
class TokenInfo:
    holder: TokenHolder
    created_at: str
    revoked_at: str | None


_COLUMNS = "token_id, secret_sha256, role, subject, label, created_at, revoked_at"


@dataclass(frozen=True)
class _Row:
    token_id: str
    secret_sha256: bytes
    role: str
    subject: str
    label: str
    created_at: str
    revoked_at: str | None


class TokenStore:
    CACHE_SECONDS = 5.0
    """How long a checked token is trusted without asking the database again:
    revoking a token takes effect within this time in every server process."""

    def __init__(self, db: Database, clock: Callable[[], float] = time.monotonic) -> None:
        self.db = db
        self._clock = clock
        self._checked: dict[str, tuple[bytes, TokenHolder, float]] = {}

    def ensure_table(self) -> None:
        """Ledgers created before tokens existed get the table on first use."""
        from registry.storage import tables

        tables.API_TOKENS.create(self.db.write_engine, checkfirst=True)

    def create(
        self,
        role: str,
        subject: str = "",
        label: str = "",
        random_bytes: Callable[[int], bytes] = os.urandom,
        now: datetime | None = None,
    ) -> tuple[str, TokenHolder]:
        """A new token; the secret is returned once and never stored."""
        if role not in ROLES:
            raise MalformedError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
        if (role in ("issuer", "body")) != bool(subject):
            raise MalformedError(
                "an issuer or body token names its issuer or body id; other roles name none"
            )
        from sqlalchemy import insert

        from registry.storage import tables

        token_id = random_bytes(8).hex()
        secret = b64url_encode(random_bytes(32))
        self.ensure_table()
        with self.db.write() as conn:
            conn.execute(
                insert(tables.API_TOKENS),
                {
                    "token_id": token_id,
                    "secret_sha256": hashlib.sha256(secret.encode("ascii")).digest(),
                    "role": role,
                    "subject": subject,
                    "label": label,
                    "created_at": format_time(now or datetime.now(UTC)),
                    "revoked_at": None,
                },
            )
        return f"qil_{token_id}_{secret}", TokenHolder(token_id, role, subject, label)

    def authenticate(self, token: str) -> TokenHolder:
        """The holder of a valid, unrevoked token; :class:`AuthenticationError` otherwise."""
        match = _TOKEN.fullmatch(token)
        if match is None:
            raise AuthenticationError("the bearer token is not a QI Ledger API token")
        token_id, secret = match.groups()
        digest = hashlib.sha256(secret.encode("ascii")).digest()
        cached = self._checked.get(token_id)
        if (
            cached is not None
            and cached[2] > self._clock()
            and hmac.compare_digest(cached[0], digest)
        ):
            return cached[1]
        rows = self.db.read_rows(
            f"SELECT {_COLUMNS} FROM api_tokens WHERE token_id = {self.db.placeholder}",
            (token_id,),
        )
        row = _Row(*rows[0]) if rows else None
        if row is None or not hmac.compare_digest(bytes(row.secret_sha256), digest):
            raise AuthenticationError("unknown API token")
        if row.revoked_at is not None:
            raise AuthenticationError(f"API token {token_id} was revoked at {row.revoked_at}")
        holder = TokenHolder(row.token_id, row.role, row.subject, row.label)
        self._checked[token_id] = (digest, holder, self._clock() + self.CACHE_SECONDS)
        return holder

    def list(self) -> list[TokenInfo]:
        self.ensure_table()
        rows = [
            _Row(*r)
            for r in self.db.read_rows(
                f"SELECT {_COLUMNS} FROM api_tokens ORDER BY created_at, token_id", ()
            )
        ]
        return [
            TokenInfo(
                TokenHolder(r.token_id, r.role, r.subject, r.label), r.created_at, r.revoked_at
            )
            for r in rows
        ]

    def revoke(self, token_id: str, now: datetime | None = None) -> None:
        from sqlalchemy import update

        from registry.storage import tables

        self.ensure_table()
        with self.db.write() as conn:
            done = conn.execute(
                update(tables.API_TOKENS)
                .where(tables.API_TOKENS.c.token_id == token_id)
                .where(tables.API_TOKENS.c.revoked_at.is_(None))
                .values(revoked_at=format_time(now or datetime.now(UTC)))
            ).rowcount
        # This process stops trusting it at once; others within CACHE_SECONDS.
        self._checked.pop(token_id, None)
        if not done:
            raise NotFoundError(f"no active API token {token_id}")
