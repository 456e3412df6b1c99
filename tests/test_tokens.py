"""API tokens: only hashes stored, roles, revocation (within the cache time)."""

from __future__ import annotations

import pytest

from registry.errors import NotFoundError
from registry.ledger import Ledger
from registry.storage.tokens import AuthenticationError, TokenStore
from verifier.errors import MalformedError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_tokens_are_stored_hashed_and_authenticate(ledger: Ledger) -> None:
    store = TokenStore(ledger.db)
    token, holder = store.create("issuer", "LAB-1", "lims")
    assert store.authenticate(token) == holder
    assert (holder.role, holder.subject, holder.label) == ("issuer", "LAB-1", "lims")
    with ledger.db.read() as conn:
        rows = conn.exec_driver_sql("SELECT * FROM api_tokens").all()
    assert len(rows) == 1
    # The secret is base64url and may itself contain "_": cut the fixed prefix.
    secret = token.removeprefix(f"qil_{holder.token_id}_")
    assert len(secret) == 43
    assert secret.encode() not in b"".join(
        str(v).encode() if not isinstance(v, bytes) else v for v in rows[0]
    )


@pytest.mark.parametrize(
    "token",
    ["", "Bearer x", "qil_0123456789abcdef_short", "qil_0123456789ABCDEF_" + "a" * 43],
)
def test_malformed_tokens_are_refused(ledger: Ledger, token: str) -> None:
    with pytest.raises(AuthenticationError, match="not a QI Ledger API token"):
        TokenStore(ledger.db).authenticate(token)


def test_unknown_token_and_wrong_secret_are_refused(ledger: Ledger) -> None:
    store = TokenStore(ledger.db)
    token, _ = store.create("auditor")
    wrong = token[:-1] + ("A" if token[-1] != "A" else "B")
    with pytest.raises(AuthenticationError, match="unknown API token"):
        store.authenticate(wrong)
    with pytest.raises(AuthenticationError, match="unknown API token"):
        store.authenticate("qil_0000000000000000_" + "a" * 43)


def test_revocation_takes_effect_within_the_cache_time(ledger: Ledger) -> None:
    clock = Clock()
    server = TokenStore(ledger.db, clock)  # a server process's store
    token, holder = server.create("issuer", "LAB-1")
    assert server.authenticate(token) == holder
    TokenStore(ledger.db).revoke(holder.token_id)  # the operator, elsewhere
    assert server.authenticate(token) == holder  # still cached
    clock.now += TokenStore.CACHE_SECONDS + 0.1
    with pytest.raises(AuthenticationError, match="revoked"):
        server.authenticate(token)
    with pytest.raises(NotFoundError):
        server.revoke(holder.token_id)  # already revoked


@pytest.mark.parametrize(
    ("role", "subject"),
    [("issuer", ""), ("body", ""), ("auditor", "LAB-1"), ("operator", "X"), ("admin", "")],
)
def test_roles_and_subjects_must_fit(ledger: Ledger, role: str, subject: str) -> None:
    with pytest.raises(MalformedError):
        TokenStore(ledger.db).create(role, subject)


def test_list_shows_no_secrets(ledger: Ledger) -> None:
    store = TokenStore(ledger.db)
    token, holder = store.create("body", "CNAS")
    store.revoke(holder.token_id)
    (info,) = store.list()
    assert info.holder == holder
    assert info.revoked_at is not None
    assert token not in repr(info)
