"""Every hostile submission gets a specific error and leaves the log unchanged."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

import pytest

from registry.ledger import Ledger
from registry.sequencer import Accepted, Refused
from tests.helpers import (
    envelope_bytes,
    issue_statement,
    key_from,
    submit_one,
    submit_with_documents,
)
from verifier import dsse, jcs, statement
from verifier.keys import SigningKey


def _log_state(ledger: Ledger) -> tuple[int, bytes, int]:
    cp = ledger.latest_checkpoint()
    with ledger.db.read() as conn:
        rows = conn.exec_driver_sql(
            "SELECT (SELECT count(*) FROM entries) + (SELECT count(*) FROM tree_nodes)"
            " + (SELECT count(*) FROM checkpoints)"
        ).scalar()
    return cp.size, cp.note, int(rows or 0)


def _envelope_json(fields: dict[str, object], key: SigningKey) -> dict[str, object]:
    return dsse.sign(statement.encode(fields), key).to_json()


def _with(env: dict[str, object], **changes: object) -> bytes:
    return json.dumps({**env, **changes}).encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _payload_envelope(payload: bytes, key: SigningKey) -> bytes:
    return jcs.canonical_bytes(dsse.sign(payload, key).to_json())


def _largest_envelope_below_limit() -> bytes:
    """An envelope of at most 64 KiB whose log entry would not fit a tile bundle."""
    pad = 48_000
    while True:
        env = _payload_envelope(
            jcs.canonical_bytes({"pad": "x" * pad, "type": "certificate.issue"}), LAB
        )
        if len(env) > 65_536 - 4:
            return env
        pad += 3


LAB = key_from("lab-1")
STRANGER = key_from("stranger")
GOOD = _envelope_json(issue_statement(1), LAB)


def _flip_signature(env: dict[str, object]) -> bytes:
    sig = bytearray(base64.b64decode(env["signatures"][0]["sig"]))  # type: ignore[index]
    sig[5] ^= 0x40
    return _with(env, signatures=[{"keyid": LAB.public_key.key_id, "sig": _b64(bytes(sig))}])


CASES: dict[str, tuple[Callable[[], bytes], str, str]] = {
    "truncated JSON": (lambda: b'{"payloadType":', "malformed", "invalid JSON"),
    "not JSON at all": (lambda: b"\x00\xff binary", "malformed", "not UTF-8"),
    "JSON array": (lambda: b"[]", "malformed", "must be a JSON object"),
    "duplicate envelope key": (
        lambda: b'{"payload":"e30=","payload":"e30=","payloadType":"x","signatures":[]}',
        "malformed",
        "duplicate JSON object key",
    ),
    "NaN constant": (lambda: b'{"payload":NaN}', "malformed", "NaN"),
    "oversized envelope": (
        lambda: b" " * (64 * 1024) + json.dumps(GOOD).encode(),
        "too_large",
        "limit is 65536",
    ),
    "missing signatures": (lambda: _with(GOOD, signatures=[]), "signature_invalid", "no signature"),
    "missing field": (
        lambda: json.dumps(
            {"payload": GOOD["payload"], "payloadType": GOOD["payloadType"]}
        ).encode(),
        "malformed",
        "lacks signatures",
    ),
    "extra field": (lambda: _with(GOOD, note="hi"), "malformed", "unknown fields note"),
    "wrong signature": (lambda: _flip_signature(GOOD), "signature_invalid", "does not verify"),
    "signature by an unknown key": (
        lambda: json.dumps(_envelope_json(issue_statement(1), STRANGER)).encode(),
        "key_not_issuer",
        "is not a key of LAB-1",
    ),
    "signature for another payload": (
        lambda: _with(GOOD, payload=_envelope_json(issue_statement(2), LAB)["payload"]),
        "signature_invalid",
        "does not verify",
    ),
    "keyid not hex": (
        lambda: _with(GOOD, signatures=[{"keyid": "LAB", "sig": _b64(bytes(64))}]),
        "malformed",
        "keyid",
    ),
    "payload not base64": (lambda: _with(GOOD, payload="!!!"), "malformed", "base64"),
    "url-safe base64 payload": (
        lambda: _with(GOOD, payload=str(GOOD["payload"]).replace("+", "-").replace("/", "_") + "-"),
        "malformed",
        "base64",
    ),
    "wrong payloadType": (
        lambda: _with(GOOD, payloadType="application/json"),
        "malformed",
        "payloadType",
    ),
    "non-canonical payload (whitespace)": (
        lambda: _payload_envelope(b'{"type": "certificate.issue"}', LAB),
        "non_canonical",
        "canonical",
    ),
    "non-canonical payload (key order)": (
        lambda: _payload_envelope(b'{"type":"certificate.issue","a":1}', LAB),
        "non_canonical",
        "canonical",
    ),
    "payload not an object": (
        lambda: _payload_envelope(b'"certificate.issue"', LAB),
        "malformed",
        "JSON object",
    ),
    "unknown statement type": (
        lambda: _payload_envelope(b'{"type":"certificate.forge"}', LAB),
        "malformed",
        "unknown statement type",
    ),
    "envelope just under 64 KiB padding its statement": (
        lambda: _largest_envelope_below_limit(),
        "malformed",
        "unknown fields: pad",
    ),
    "public fields over 16 KiB": (
        lambda: _payload_envelope(
            jcs.canonical_bytes(issue_statement(3, fields={"x": "y" * 17_000})), LAB
        ),
        "malformed",
        "at most 16 KiB",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_envelope_is_refused_and_changes_nothing(ledger: Ledger, case: str) -> None:
    submit_one(ledger.sequencer, envelope_bytes(issue_statement(0), LAB))
    before = _log_state(ledger)
    make, code, words = CASES[case]
    (outcome,) = submit_with_documents(ledger.sequencer, [make()])
    assert isinstance(outcome, Refused), outcome
    assert outcome.error.code == code
    assert words in outcome.error.message
    assert _log_state(ledger) == before
    with pytest.raises(type(outcome.error)):
        submit_one(ledger.sequencer, make())
    assert _log_state(ledger) == before


def test_resubmission_answers_with_the_existing_index(ledger: Ledger) -> None:
    base = ledger.latest_checkpoint().size
    first = submit_with_documents(
        ledger.sequencer, [envelope_bytes(issue_statement(n), LAB) for n in range(3)]
    )
    before = _log_state(ledger)
    again = submit_one(ledger.sequencer, envelope_bytes(issue_statement(1), LAB))
    assert again.duplicate
    assert again.index == base + 1
    assert isinstance(first[1], Accepted)
    assert again.leaf_hash == first[1].leaf_hash
    # The same envelope spelled differently (pretty JSON) is still the same envelope.
    pretty = json.dumps(_envelope_json(issue_statement(2), LAB), indent=4).encode()
    assert submit_one(ledger.sequencer, pretty).index == base + 2
    assert _log_state(ledger) == before


def test_duplicates_within_one_batch_share_one_entry(ledger: Ledger) -> None:
    base = ledger.latest_checkpoint().size
    env = envelope_bytes(issue_statement(7), LAB)
    outcomes = submit_with_documents(
        ledger.sequencer, [env, envelope_bytes(issue_statement(8), LAB), env]
    )
    indices = [o.index for o in outcomes if isinstance(o, Accepted)]
    assert indices == [base, base + 1, base]
    assert ledger.latest_checkpoint().size == base + 2


def test_bad_envelopes_in_a_batch_do_not_stop_good_ones(ledger: Ledger) -> None:
    base = ledger.latest_checkpoint().size
    batch = [
        envelope_bytes(issue_statement(1), LAB),
        b"{",
        envelope_bytes(issue_statement(1), STRANGER),
        envelope_bytes(issue_statement(2), LAB),
    ]
    outcomes = submit_with_documents(ledger.sequencer, batch)
    assert [type(o).__name__ for o in outcomes] == ["Accepted", "Refused", "Refused", "Accepted"]
    assert [o.index for o in outcomes if isinstance(o, Accepted)] == [base, base + 1]
    assert ledger.latest_checkpoint().size == base + 2
