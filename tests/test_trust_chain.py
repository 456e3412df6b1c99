"""The trust chain (issue "Trust chain"): every broken link is refused with a
specific reason and changes nothing; replaying the log gives each certificate's
verdict at each moment."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from registry.config import Settings
from registry.ledger import Ledger
from registry.sequencer import Accepted, Refused
from tests.conftest import TEST_ORIGIN
from tests.helpers import (
    BODY_KEY,
    b64key,
    body_add,
    envelope_bytes,
    grant,
    key_from,
    register_document,
    submit_with_documents,
)
from verifier import jcs, statement, trust
from verifier.entry import format_time
from verifier.errors import TrustError
from verifier.keys import SigningKey

T0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)


class Clock:
    """The ledger's clock, moved by the test (clock and randomness are parameters)."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@dataclass
class World:
    ledger: Ledger
    clock: Clock
    log_key: SigningKey

    def submit(
        self, fields: dict[str, Any], key: SigningKey, signed_at: datetime | None = None
    ) -> Accepted | Refused:
        stamped = {"signed_at": format_time(signed_at or self.clock.now), **fields}
        (outcome,) = submit_with_documents(self.ledger.sequencer, [envelope_bytes(stamped, key)])
        return outcome

    def ok(self, fields: dict[str, Any], key: SigningKey) -> int:
        outcome = self.submit(fields, key)
        assert isinstance(outcome, Accepted), outcome
        return outcome.index


def cert(issuer: str, n: int, kind: str = "dcc", document: bytes | None = None) -> dict[str, Any]:
    return statement.CertificateIssue(
        issuer_id=issuer,
        certificate_id=f"{issuer}/C-{n}",
        kind=kind,
        document_sha256=register_document(document or f"{issuer} C-{n} {kind}".encode()),
        issued=date(2026, 6, 1),
    ).to_json()


def acc_event(action: str, issuer: str, reason: str = "audit") -> dict[str, Any]:
    return {
        "type": f"accreditation.{action}",
        "body_id": "CNAS",
        "issuer_id": issuer,
        "accreditation_number": f"CNAS-{issuer}",
        "reason": reason,
    }


def unsigned(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if k != "signed_at"}


K = {
    name: key_from(name)
    for name in [
        "lab1",
        "lab1-new",
        "lab2",
        "lab3",
        "lab4",
        "lab5",
        "lab7",
        "evil-body",
        "removed-body",
    ]
}


def make_world(settings: Settings) -> World:
    clock = Clock(T0)
    ledger = Ledger.init(settings, origin=TEST_ORIGIN, passphrase=None, clock=clock)
    world = World(ledger, clock, ledger.load_log_key().key)
    world.ok(unsigned(body_add()), world.log_key)
    world.ok(unsigned(body_add(K["removed-body"], "OLD")), world.log_key)
    world.ok(unsigned(grant("LAB-0", [key_from("lab0")], body_id="OLD")), K["removed-body"])
    world.ok(
        {"type": "trust.body.remove", "body_id": "OLD", "reason": "lost recognition"}, world.log_key
    )
    for issuer, key in [
        ("LAB-1", "lab1"),
        ("LAB-2", "lab2"),
        ("LAB-3", "lab3"),
        ("LAB-4", "lab4"),
        ("LAB-7", "lab7"),
    ]:
        world.ok(unsigned(grant(issuer, [K[key]])), BODY_KEY)
    world.ok(unsigned(grant("LAB-5", [K["lab5"]], valid_until="2026-05-31")), BODY_KEY)
    world.ok(acc_event("suspend", "LAB-3"), BODY_KEY)
    world.ok(acc_event("withdraw", "LAB-4"), BODY_KEY)
    # LAB-1 rotates: new key added by the old one, old key revoked (no compromise).
    world.ok(
        statement.IssuerKeyAdd(issuer_id="LAB-1", public_key=K["lab1-new"].public_key).to_json(),
        K["lab1"],
    )
    world.ok(
        statement.IssuerKeyRevoke(
            issuer_id="LAB-1", key_id=K["lab1"].public_key.key_id, reason="rotation"
        ).to_json(),
        K["lab1-new"],
    )
    # LAB-7's key was stolen as soon as its body registered it.
    world.ok(
        statement.IssuerKeyRevoke(
            issuer_id="LAB-7",
            key_id=K["lab7"].public_key.key_id,
            reason="laptop stolen",
            compromised_at=T0,
        ).to_json(),
        BODY_KEY,
    )
    world.clock.advance(minutes=1)
    return world


@pytest.fixture
def world(settings: Settings) -> Iterator[World]:
    w = make_world(settings)
    yield w
    w.ledger.close()


GRANT_X = unsigned(grant("LAB-X", [key_from("labx")]))
Case = tuple[Callable[[World], tuple[dict[str, Any], SigningKey, datetime | None]], str, str]
MATRIX: dict[str, Case] = {
    "unknown issuer (known key)": (
        lambda w: (cert("LAB-X", 1), K["lab2"], None),
        "issuer_unknown",
        "LAB-X has no accred",
    ),
    "unknown issuer (unknown key)": (
        lambda w: (cert("LAB-X", 1), key_from("labx"), None),
        "issuer_unknown",
        "LAB-X",
    ),
    "unknown key for a known issuer": (
        lambda w: (cert("LAB-2", 1), key_from("nobody"), None),
        "key_not_issuer",
        "is not a key of LAB-2",
    ),
    "key of another issuer": (
        lambda w: (cert("LAB-1", 1), K["lab2"], None),
        "key_of_other_issuer",
        "belongs to issuer LAB-2",
    ),
    "revoked key": (lambda w: (cert("LAB-1", 1), K["lab1"], None), "key_revoked", "was revoked at"),
    "key used after its compromise time": (
        lambda w: (cert("LAB-7", 1), K["lab7"], None),
        "key_compromised",
        "compromised since",
    ),
    "suspended accreditation": (
        lambda w: (cert("LAB-3", 1), K["lab3"], None),
        "accreditation_suspended",
        "suspended",
    ),
    "withdrawn accreditation": (
        lambda w: (cert("LAB-4", 1), K["lab4"], None),
        "accreditation_withdrawn",
        "withdrawn",
    ),
    "expired accreditation": (
        lambda w: (cert("LAB-5", 1), K["lab5"], None),
        "accreditation_expired",
        "expired on 2026-05-31",
    ),
    "accreditation from an untrusted body": (
        lambda w: ({**GRANT_X, "body_id": "EVIL"}, K["evil-body"], None),
        "body_untrusted",
        "not a trusted accreditation body",
    ),
    "accreditation from a removed body": (
        lambda w: ({**GRANT_X, "body_id": "OLD"}, K["removed-body"], None),
        "body_untrusted",
        "removed from the trust anchors",
    ),
    "certificate under a removed body's accreditation": (
        lambda w: (cert("LAB-0", 1), key_from("lab0"), None),
        "body_untrusted",
        "no longer trusted",
    ),
    "scope does not cover the kind": (
        lambda w: (cert("LAB-2", 1, kind="management_system"), K["lab2"], None),
        "scope_not_covered",
        "does not cover management_system",
    ),
    "accreditation signed by the issuer itself": (
        lambda w: (unsigned(grant("LAB-2", [K["lab2"]], number="SELF")), K["lab2"], None),
        "self_accreditation",
        "signed by a key of issuer LAB-2",
    ),
    "accreditation signed by another body for CNAS": (
        lambda w: (GRANT_X, K["removed-body"], None),
        "wrong_body",
        "speaks for body CNAS",
    ),
    "trust anchor added without the log key": (
        lambda w: (unsigned(body_add(key_from("b2"), "B2")), BODY_KEY, None),
        "not_operator",
        "log's key",
    ),
    "replay of an old envelope": (
        lambda w: (cert("LAB-2", 2), K["lab2"], w.clock.now - timedelta(days=8)),
        "statement_stale",
        "cannot be replayed",
    ),
    "statement claiming a future time": (
        lambda w: (cert("LAB-2", 3), K["lab2"], w.clock.now + timedelta(minutes=6)),
        "statement_future",
        "later than the log's time",
    ),
    "key added by another issuer's key": (
        lambda w: (
            {"type": "issuer.key.add", "issuer_id": "LAB-1", "public_key": b64key(key_from("x"))},
            K["lab2"],
            None,
        ),
        "key_of_other_issuer",
        "belongs to issuer LAB-2",
    ),
    "restore of an accreditation that is not suspended": (
        lambda w: (acc_event("restore", "LAB-2"), BODY_KEY, None),
        "transition_invalid",
        "granted",
    ),
    "re-using a certificate id for another document": (
        lambda w: (cert("LAB-2", 9, document=b"another document"), K["lab2"], None),
        "certificate_exists",
        "needs certificate.amend",
    ),
    "status change of another issuer's certificate": (
        lambda w: (
            {
                "type": "certificate.withdraw",
                "issuer_id": "LAB-1",
                "certificate_id": "LAB-2/C-9",
                "reason": "x",
            },
            K["lab1-new"],
            None,
        ),
        "certificate_id_mismatch",
        "must start with",
    ),
}


def _log_state(ledger: Ledger) -> tuple[int, bytes]:
    cp = ledger.latest_checkpoint()
    return cp.size, cp.note


@pytest.mark.parametrize("case", sorted(MATRIX))
def test_broken_link_is_refused_with_its_reason(world: World, case: str) -> None:
    world.ok(cert("LAB-2", 9), K["lab2"])
    before = _log_state(world.ledger)
    make, code, words = MATRIX[case]
    fields, key, signed_at = make(world)
    if code == "certificate_id_mismatch":
        # A statement naming another issuer's certificate is malformed before any key is
        # looked at: certificate ids carry their issuer.
        with pytest.raises(Exception, match=words):
            world.submit(fields, key, signed_at)
    else:
        outcome = world.submit(fields, key, signed_at)
        assert isinstance(outcome, Refused), outcome
        assert (outcome.error.code, case) == (code, case)
        assert words in outcome.error.message
    assert _log_state(world.ledger) == before


def test_status_change_by_a_key_of_the_wrong_issuer(world: World) -> None:
    world.ok(cert("LAB-2", 9), K["lab2"])
    outcome = world.submit(
        {
            "type": "certificate.withdraw",
            "issuer_id": "LAB-2",
            "certificate_id": "LAB-2/C-9",
            "reason": "x",
        },
        K["lab1-new"],
    )
    assert isinstance(outcome, Refused)
    assert outcome.error.code == "key_of_other_issuer"


def test_identical_resubmission_is_not_a_new_entry(world: World) -> None:
    first = world.submit(cert("LAB-2", 4), K["lab2"])
    assert isinstance(first, Accepted)
    before = _log_state(world.ledger)
    world.clock.advance(days=1)
    again = world.submit(cert("LAB-2", 4), K["lab2"], signed_at=T0 + timedelta(minutes=1))
    assert isinstance(again, Accepted)
    assert (again.index, again.duplicate) == (first.index, True)
    assert _log_state(world.ledger) == before


def test_log_replays_to_the_same_state(world: World) -> None:
    ledger = world.ledger
    data = [(e.index, e.data) for e in ledger.storage.iter_entries()]
    replayed = trust.replay(ledger.identity.public_key, data)
    live = ledger.trust_state()
    assert replayed.size == live.size == len(data)
    assert replayed.issuers.keys() == live.issuers.keys()
    for issuer_id, issuer in live.issuers.items():
        assert replayed.issuers[issuer_id].keys.keys() == issuer.keys.keys()
        assert [a.status for a in replayed.issuers[issuer_id].accreditations.values()] == [
            a.status for a in issuer.accreditations.values()
        ]


def test_trusting_append_checks_changes_no_verdict(world: World) -> None:
    """The registry's own catch-up skips signature and canonical-form checks made
    at append; it must reach exactly the state of a full replay, and still refuse
    what breaks a field or a trust rule."""
    ledger = world.ledger
    data = [(e.index, e.data) for e in ledger.storage.iter_entries()]
    full = trust.replay(ledger.identity.public_key, data)
    trusting = trust.replay(ledger.identity.public_key, data, trust_append_checks=True)
    assert (trusting.size, trusting.bodies, trusting.issuers) == (
        full.size,
        full.bodies,
        full.issuers,
    )
    assert list(trusting.certificates.items()) == list(full.certificates.items())

    last_index, last = data[-1]
    value = json.loads(last)
    # Same JSON, other bytes: only the full replay refuses the form.
    spaced = json.dumps(value, indent=1).encode()
    with pytest.raises(TrustError, match="canonical"):
        trust.replay(ledger.identity.public_key, [*data[:-1], (last_index, spaced)])
    assert trust.replay(
        ledger.identity.public_key, [*data[:-1], (last_index, spaced)], trust_append_checks=True
    ).size == len(data)
    # A field error and a trust-rule error are refused either way.
    missing = jcs.canonical_bytes({k: v for k, v in value.items() if k != "prev"})
    replayed_twice = [*data, (len(data), last)]
    for bad, message in ((missing, "exactly v, prev"), (None, "")):
        entries = [*data[:-1], (last_index, bad)] if bad is not None else replayed_twice
        for trusting_flag in (False, True):
            with pytest.raises(TrustError) as caught:
                trust.replay(ledger.identity.public_key, entries, trust_append_checks=trusting_flag)
            assert message in caught.value.message
            assert caught.value.message.startswith(f"entry {entries[-1][0]}:")


def test_history_verdicts_at_each_point_in_time(settings: Settings) -> None:
    clock = Clock(T0)
    ledger = Ledger.init(settings, origin=TEST_ORIGIN, passphrase=None, clock=clock)
    w = World(ledger, clock, ledger.load_log_key().key)
    a, b = key_from("hist-a"), key_from("hist-b")
    w.ok(unsigned(body_add()), w.log_key)
    t: dict[str, datetime] = {}

    def at(label: str) -> None:
        t[label] = clock.advance(minutes=10)

    at("grant")
    w.ok(unsigned(grant("LAB-H", [a])), BODY_KEY)
    at("issue C1")
    w.ok(cert("LAB-H", 1), a)
    at("suspend")
    w.ok(acc_event("suspend", "LAB-H"), BODY_KEY)
    at("issue C2 refused")
    refused = w.submit(cert("LAB-H", 2), a)
    assert isinstance(refused, Refused)
    assert refused.error.code == "accreditation_suspended"
    at("restore")
    w.ok(acc_event("restore", "LAB-H"), BODY_KEY)
    at("rotate")
    w.ok({"type": "issuer.key.add", "issuer_id": "LAB-H", "public_key": b64key(b)}, a)
    at("issue C3 with new key")
    w.ok(cert("LAB-H", 3), b)
    at("issue C4 with old key")  # the old key is already in a thief's hands
    w.ok(cert("LAB-H", 4), a)
    at("revoke old key, compromised")
    compromised_at = t["issue C3 with new key"] + timedelta(minutes=5)
    w.ok(
        {
            "type": "issuer.key.revoke",
            "issuer_id": "LAB-H",
            "key_id": a.public_key.key_id,
            "reason": "stolen",
            "compromised_at": format_time(compromised_at),
        },
        b,
    )
    at("issue C5 with old key refused")
    refused = w.submit(cert("LAB-H", 5), a)
    assert isinstance(refused, Refused)
    assert refused.error.code == "key_compromised"
    at("withdraw C3")
    w.ok(
        {
            "type": "certificate.withdraw",
            "issuer_id": "LAB-H",
            "certificate_id": "LAB-H/C-3",
            "reason": "customer request",
        },
        b,
    )
    at("end")

    # An outsider replays the raw log (leaf data only) and asks at each moment.
    data = [(e.index, e.data) for e in ledger.storage.iter_entries()]
    state = trust.replay(ledger.identity.public_key, data)
    expected = {
        # moment: (C1, C2, C3, C4)
        "grant": ("invalid", "invalid", "invalid", "invalid"),
        "issue C1": ("active", "invalid", "invalid", "invalid"),
        "issue C2 refused": ("active", "invalid", "invalid", "invalid"),
        "issue C3 with new key": ("active", "invalid", "active", "invalid"),
        "issue C4 with old key": ("active", "invalid", "active", "active"),
        "revoke old key, compromised": ("active", "invalid", "active", "invalid"),
        "withdraw C3": ("active", "invalid", "withdrawn", "invalid"),
        "end": ("active", "invalid", "withdrawn", "invalid"),
    }
    for moment, verdicts in expected.items():
        got = tuple(
            trust.certificate_status(state, f"LAB-H/C-{n}", t[moment]).status for n in (1, 2, 3, 4)
        )
        assert got == verdicts, moment
    c4 = trust.certificate_status(state, "LAB-H/C-4", t["end"])
    assert "compromised since" in c4.reason
    ledger.close()
