"""The holes of issue "Close the holes", each as the attack it was: every one was
reproduced against the code before the fix and must now be refused with its own
reason, change nothing, and leave a log that replays and passes fsck."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from registry.config import Settings
from registry.errors import ConfigError, IntegrityError
from registry.fsck import fsck
from registry.ledger import Ledger
from registry.sequencer import Refused
from tests.helpers import (
    BODY_KEY,
    LUTAML,
    b64key,
    body_add,
    demo_dcc,
    envelope_bytes,
    grant,
    key_from,
    register_document,
    submit_with_documents,
)
from tests.test_api import (
    Api,
    certification,
    expect_problem,
    open_api,  # noqa: F401 - the fixture `api` needs it
    signed,
    status_change,
    unsigned,
    upload,
)
from tests.test_trust_chain import T0, Clock, World
from verifier import dsse, entry, jcs, merkle, statement, trust
from verifier.encoding import b64decode
from verifier.entry import format_time
from verifier.errors import MalformedError, TrustError
from verifier.keys import SigningKey

CB, CB2 = key_from("demo-cb"), key_from("demo-cb-second")
LAB_V, OTHER_BODY, ROGUE = key_from("victim-lab"), key_from("other-body"), key_from("rogue")


@pytest.fixture
def api(open_api: Any) -> Api:  # noqa: F811 - the fixture imported above
    served: Api = open_api()
    return served


# --- 1. the same statement in another envelope -------------------------------------


def _entry_envelope(api: Api, index: int) -> dict[str, Any]:
    logged = api.client.get(f"/api/v1/log/entries/{index}").json()
    parsed = entry.parse(b64decode(logged["leaf_data"], "leaf data"))
    return parsed.envelope.to_json()


def _status(api: Api, certificate_id: str) -> str:
    body = api.client.get(f"/api/v1/certificates/{certificate_id}").json()
    return str(body["status"])


def _rewrapped(envelope: dict[str, Any], how: str) -> bytes:
    value = json.loads(json.dumps(envelope))
    good = value["signatures"][0]
    if how == "unknown zero signature added":
        value["signatures"].append({"keyid": "0" * 64, "sig": base64.b64encode(bytes(64)).decode()})
    elif how == "valid signature copied":
        value["signatures"].append(dict(good))
    elif how == "unknown signature first":
        value["signatures"].insert(0, {"keyid": "f" * 64, "sig": good["sig"]})
    elif how == "pretty-printed":
        return json.dumps(value, indent=3).encode()
    elif how == "signed again by the issuer's other key":
        payload = b64decode(value["payload"], "payload")
        return jcs.canonical_bytes(dsse.sign(payload, CB2).to_json())
    return jcs.canonical_bytes(value)


REFUSED_WRAPS = [
    "unknown zero signature added",
    "valid signature copied",
    "unknown signature first",
]
SAME_STATEMENT_WRAPS = ["pretty-printed", "signed again by the issuer's other key"]


@pytest.mark.parametrize("token_role", ["operator", "issuer"])
@pytest.mark.parametrize("how", REFUSED_WRAPS + SAME_STATEMENT_WRAPS)
def test_a_rewrapped_reinstate_cannot_reactivate_a_suspended_certificate(
    api: Api, token_role: str, how: str
) -> None:
    """Attack 1: an earlier certificate.reinstate from the public log, re-wrapped,
    was logged again and showed a suspended certificate Active."""
    token = api.token(token_role, "DEMO-CB" if token_role == "issuer" else "")
    cb_token = api.token("issuer", "DEMO-CB")
    document = certification("Q-REWRAP")
    cert_id = "DEMO-CB/Q-REWRAP"
    envelope = api.envelope(document, "DEMO-CB", CB)
    files = {"document": ("d", document), "envelope": ("e", envelope)}
    registered = api.client.post(
        "/api/v1/certificates", files=files, headers={"Authorization": f"Bearer {cb_token}"}
    )
    assert registered.status_code == 201, registered.text
    second_key = {"type": "issuer.key.add", "issuer_id": "DEMO-CB", "public_key": b64key(CB2)}
    assert api.post_statement(signed(second_key, CB), cb_token).status_code == 201
    indices = {}
    for action in ("suspend", "reinstate", "suspend"):
        answer = api.post_statement(signed(status_change(action, cert_id, "DEMO-CB"), CB), cb_token)
        assert answer.status_code == 201, answer.text
        indices[action] = answer.json()["index"]
    assert _status(api, cert_id) == "Suspended"
    replayed = _rewrapped(_entry_envelope(api, indices["reinstate"]), how)

    if how in REFUSED_WRAPS:
        response = api.refused(lambda: api.post_statement(replayed, token), 400, "signature_count")
        assert "exactly one signature" in response.json()["detail"]
    else:
        before = api.state()
        response = api.post_statement(replayed, token)
        assert response.status_code == 200, response.text
        assert (response.json()["index"], response.json()["duplicate"]) == (
            indices["reinstate"],
            True,
        )
        assert api.state() == before
    assert _status(api, cert_id) == "Suspended"
    assert fsck(api.ledger).entries == api.state().size


def _log(ledger: Ledger) -> list[tuple[int, bytes]]:
    return [(e.index, e.data) for e in ledger.storage.iter_entries()]


def _appended(
    entries: list[tuple[int, bytes]], envelope: bytes, logged_at: str
) -> list[tuple[int, bytes]]:
    """``entries`` and one more entry carrying ``envelope``, chained after the last."""
    prev = merkle.leaf_hash(entries[-1][1])
    value = json.loads(envelope)
    return [*entries, (len(entries), entry.encode(prev, logged_at, value))]


@pytest.fixture
def world(sqlite_settings: Settings) -> Iterator[World]:
    clock = Clock(T0)
    ledger = Ledger.init(sqlite_settings, origin="test.example/log", passphrase=None, clock=clock)
    w = World(ledger, clock, ledger.load_log_key().key)
    w.ok(unsigned(body_add()), w.log_key)
    w.ok(unsigned(body_add(OTHER_BODY, "OTHER")), w.log_key)
    w.ok(unsigned(grant("LAB-V", [LAB_V])), BODY_KEY)
    w.clock.advance(minutes=1)
    w.ok(_cert("LAB-V", 1), LAB_V)
    yield w
    ledger.close()


def _cert(issuer: str, n: int, **extra: Any) -> dict[str, Any]:
    return {
        "type": "certificate.issue",
        "issuer_id": issuer,
        "certificate_id": f"{issuer}/C-{n}",
        "kind": "dcc",
        "document_sha256": register_document(f"holes {issuer} {n}".encode()),
        "issued": "2026-06-01",
        **extra,
    }


def test_a_log_with_one_statement_twice_does_not_replay(world: World) -> None:
    """Every entry of the log, logged again in another envelope a moment later, is
    refused by the replay (what fsck, auditors and monitors run), whether or not
    the replay trusts the append-time checks."""
    w = world
    w.clock.advance(minutes=1)
    w.ok(status_change("suspend", "LAB-V/C-1", "LAB-V"), LAB_V)
    entries = _log(w.ledger)
    log_key = w.ledger.identity.public_key
    later = format_time(w.clock.now + timedelta(minutes=1))
    for index, data in entries:
        parsed = entry.parse(data)
        for wrap in ("extra signature", "pretty"):
            value = parsed.envelope.to_json()
            if wrap == "extra signature":
                value["signatures"].append({"keyid": "0" * 64, "sig": "AAAA"})
                expected = "signature_count"
            else:
                expected = "statement_duplicate"
            forged = _appended(entries, json.dumps(value, indent=1).encode(), later)
            for trusting in (False, True):
                with pytest.raises(TrustError) as caught:
                    trust.replay(log_key, forged, trust_append_checks=trusting)
                assert (caught.value.code, index) == (expected, index)
                assert caught.value.message.startswith(f"entry {len(entries)}:")
                if expected == "statement_duplicate":
                    assert f"already logged at index {index}" in caught.value.message


def test_an_old_statement_is_refused_as_stale_once_its_digest_is_forgotten() -> None:
    """The duplicate check remembers only DUPLICATE_WINDOW of digests; an older
    statement is refused anyway, as stale — so no statement is ever logged twice."""
    log_key = key_from("window-log")
    state = trust.TrustState(log_key.public_key)
    t0 = T0
    add = {**unsigned(body_add()), "signed_at": format_time(t0)}
    stmt = statement.validate(add)
    state.admit(log_key.public_key, stmt, t0)
    state.apply(0, log_key.public_key, stmt, format_time(t0))
    filler = {**unsigned(body_add(key_from("filler"), "FILLER"))}
    for minutes, expected in ((1, "statement_duplicate"), (60 * 24 * 7 + 6, "statement_stale")):
        moment = t0 + timedelta(minutes=minutes)
        # Another entry at that moment prunes the window up to it.
        filler_stmt = statement.validate({**filler, "signed_at": format_time(moment)})
        state.apply(state.size, log_key.public_key, filler_stmt, format_time(moment))
        with pytest.raises(TrustError) as caught:
            state.admit(log_key.public_key, stmt, moment)
        assert caught.value.code == expected
    assert state.recently_logged(stmt.digest) is None  # forgotten, yet still refused


def test_the_sequencer_refuses_a_duplicate_even_without_its_database_lookup(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defence in depth: with the storage's statement lookup failing to find the
    earlier entry (a bug, a replica behind), the trust rules still refuse it — as
    the registration it repeats (the registry's trust state holds no window of
    recent digests: the sequencer's lookup covers the whole log, and the
    entries table's unique statement hash is the last line)."""
    w = world
    first = w.ledger.storage.entry(w.ledger.latest_checkpoint().size - 1)
    original = entry.parse(first.data).envelope.to_json()
    monkeypatch.setattr(w.ledger.storage, "logged_statements", lambda conn, hashes: {})
    (outcome,) = submit_with_documents(w.ledger.sequencer, [json.dumps(original).encode()])
    assert isinstance(outcome, Refused)
    assert outcome.error.code == "certificate_exists"


def test_an_envelope_carries_exactly_one_signature() -> None:
    envelope = dsse.sign(b"{}", CB)
    dsse.only_signature(envelope)
    for signatures in ((), (*envelope.signatures, *envelope.signatures)):
        two = dsse.UnverifiedEnvelope(envelope.payload_type, envelope.payload, signatures)
        with pytest.raises(MalformedError) as caught:
            dsse.only_signature(two)
        assert caught.value.code == "signature_count"


# --- 2. one body reaching into another body's issuer -------------------------------


def _revoke(issuer: str, key: SigningKey, compromised_at: datetime | None) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "type": "issuer.key.revoke",
        "issuer_id": issuer,
        "key_id": key.public_key.key_id,
        "reason": "stolen",
    }
    if compromised_at is not None:
        fields["compromised_at"] = format_time(compromised_at)
    return fields


def _refused(w: World, fields: dict[str, Any], key: SigningKey, code: str) -> None:
    before = w.ledger.latest_checkpoint()
    outcome = w.submit(fields, key)
    assert isinstance(outcome, Refused), outcome
    assert outcome.error.code == code, outcome.error
    assert w.ledger.latest_checkpoint() == before


def test_a_body_cannot_wipe_out_another_bodys_issuer(world: World) -> None:
    """Attack 2: body OTHER granted itself an accreditation of CNAS's LAB-V adding
    a key of its choosing, revoked the lab's own key as compromised long ago
    (voiding its certificates) and withdrew its grant."""
    w = world
    w.clock.advance(minutes=1)
    other_grant = unsigned(grant("LAB-V", [ROGUE], body_id="OTHER"))
    _refused(w, other_grant, OTHER_BODY, "grant_adds_key")
    _refused(
        w,
        {**other_grant, "public_keys": [b64key(LAB_V), b64key(ROGUE)]},
        OTHER_BODY,
        "grant_adds_key",
    )
    # A second accreditation naming only the lab's own key is legitimate.
    w.ok({**other_grant, "public_keys": [b64key(LAB_V)]}, OTHER_BODY)
    add_rogue = {"type": "issuer.key.add", "issuer_id": "LAB-V", "public_key": b64key(ROGUE)}
    _refused(w, add_rogue, OTHER_BODY, "body_cannot_add_key")
    long_ago = T0 - timedelta(days=300)
    _refused(w, _revoke("LAB-V", LAB_V, long_ago), OTHER_BODY, "key_not_registered_by_body")
    _refused(w, _revoke("LAB-V", LAB_V, None), OTHER_BODY, "key_not_registered_by_body")
    w.ok(
        {
            "type": "accreditation.withdraw",
            "body_id": "OTHER",
            "issuer_id": "LAB-V",
            "accreditation_number": "OTHER-LAB-V",
            "reason": "done",
        },
        OTHER_BODY,
    )
    state = trust.replay(w.ledger.identity.public_key, _log(w.ledger))
    assert trust.certificate_status(state, "LAB-V/C-1", w.clock.now).status == "active"
    assert state.issuers["LAB-V"].keys.keys() == {LAB_V.public_key.key_id}
    fsck(w.ledger)


def test_the_registering_body_revokes_only_back_to_its_registration(world: World) -> None:
    w = world
    w.clock.advance(minutes=1)
    registered = w.ledger.trust_state().issuers["LAB-V"].keys[LAB_V.public_key.key_id]
    at = entry.parse_time(registered.added_at)
    _refused(
        w,
        _revoke("LAB-V", LAB_V, at - timedelta(milliseconds=1)),
        BODY_KEY,
        "compromise_before_registration",
    )
    w.ok(_revoke("LAB-V", LAB_V, at), BODY_KEY)
    state = w.ledger.trust_state()
    assert trust.certificate_status(state, "LAB-V/C-1", w.clock.now).status == "invalid"


# --- 6. a revoked key found compromised later ---------------------------------------


def test_a_revoked_key_can_later_be_marked_compromised(world: World) -> None:
    """Attack 6: a lab rotated a key, then learnt it was stolen a month before; the
    compromise report was refused as "already revoked"."""
    w = world
    old, new = LAB_V, key_from("victim-lab-new")
    w.clock.advance(days=1)
    w.ok(_cert("LAB-V", 2), old)  # signed by the thief, as it turns out
    w.clock.advance(days=1)
    w.ok({"type": "issuer.key.add", "issuer_id": "LAB-V", "public_key": b64key(new)}, old)
    w.clock.advance(days=1)
    w.ok(_revoke("LAB-V", old, None), new)  # plain rotation
    rotated = w.clock.now
    w.clock.advance(days=2)
    _refused(w, _revoke("LAB-V", old, None), new, "key_revoked")
    stolen = T0 + timedelta(hours=12)  # after C-1, before C-2
    w.ok(_revoke("LAB-V", old, stolen), new)
    reported = w.clock.now
    w.clock.advance(minutes=1)
    _refused(w, _revoke("LAB-V", old, stolen + timedelta(hours=1)), new, "key_revoked")
    _refused(w, _revoke("LAB-V", old, stolen), new, "key_revoked")
    state = trust.replay(w.ledger.identity.public_key, _log(w.ledger))
    status = partial_status(state, w.clock.now)
    assert (status("LAB-V/C-1"), status("LAB-V/C-2")) == ("active", "invalid")
    # Before the report, nobody knew: C-2 was active then.
    assert partial_status(state, rotated)("LAB-V/C-2") == "active"
    assert partial_status(state, reported)("LAB-V/C-2") == "invalid"
    # Moving the compromise earlier again voids C-1 too.
    w.ok(_revoke("LAB-V", old, T0), new)
    state = trust.replay(w.ledger.identity.public_key, _log(w.ledger))
    assert partial_status(state, w.clock.now)("LAB-V/C-1") == "invalid"
    assert fsck(w.ledger).entries == state.size


def partial_status(state: trust.TrustState, at: datetime) -> Any:
    return lambda cert_id: trust.certificate_status(state, cert_id, at).status


# --- 7. no certificate entry without its document ----------------------------------


def test_the_sequencer_refuses_a_certificate_without_its_document(world: World) -> None:
    w = world
    stamped = {"signed_at": format_time(w.clock.now), **_cert("LAB-V", 3)}
    before = w.ledger.latest_checkpoint()
    (outcome,) = w.ledger.sequencer.submit_many([envelope_bytes(stamped, LAB_V)])
    assert isinstance(outcome, Refused)
    assert outcome.error.code == "document_required"
    assert w.ledger.latest_checkpoint() == before


def test_fsck_names_a_certificate_entry_whose_document_is_gone(
    world: World,
) -> None:
    import sqlite3

    w = world
    digest = w.ledger.trust_state().certificate("LAB-V/C-1").document_sha256
    index = w.ledger.trust_state().certificate("LAB-V/C-1").events[0].index
    fsck(w.ledger)
    db = w.ledger.settings.data_dir / "ledger.db"
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("DROP TRIGGER documents_no_delete")
        conn.execute("DELETE FROM documents WHERE digest = ?", (digest,))
    finally:
        conn.close()
    with pytest.raises(IntegrityError) as caught:
        fsck(w.ledger)
    assert caught.value.where == f"entry {index}"
    assert "is not stored" in str(caught.value)


# --- 3. a body's token speaks only for that body's issuers --------------------------


def test_a_body_token_is_limited_to_the_issuers_it_accredits(api: Api) -> None:
    """Attack 3: body DAkkS's token submitted an issuer.key.add for an issuer that
    only CNAS accredits."""
    ledger = api.ledger
    log_key = ledger.load_log_key().key
    ledger.sequencer.submit(signed(unsigned(body_add(OTHER_BODY, "DAkkS")), log_key))
    foreign = api.token("body", "DAkkS")
    own = api.token("body", "CNAS")
    revoke = signed(_revoke("LAB-2", key_from("lab-2"), None), OTHER_BODY)
    response = api.refused(lambda: api.post_statement(revoke, foreign), 403, "token_forbidden")
    assert "does not accredit issuer LAB-2" in response.json()["detail"]
    add = signed(
        {"type": "issuer.key.add", "issuer_id": "LAB-2", "public_key": b64key(ROGUE)}, OTHER_BODY
    )
    api.refused(lambda: api.post_statement(add, foreign), 403, "token_forbidden")
    # CNAS's own token gets past the token check; the trust rules then decide.
    by_cnas = signed(
        {"type": "issuer.key.add", "issuer_id": "LAB-2", "public_key": b64key(ROGUE)}, BODY_KEY
    )
    api.refused(lambda: api.post_statement(by_cnas, own), 403, "body_cannot_add_key")
    # ... and an issuer CNAS does not accredit is out of its token's reach too.
    response = api.post_statement(signed(_revoke("NOBODY", ROGUE, None), BODY_KEY), own)
    expect_problem(response, 403, "token_forbidden")


# --- 4. another laboratory's document -----------------------------------------------


@pytest.mark.shared
def test_a_lab_cannot_register_another_labs_document(api: Api) -> None:
    """Attack 4: LAB-2 submitted the exact bytes of LAB-1's registered DCC under its
    own id, and the public digest lookup listed it as Active under LAB-2."""
    document = (LUTAML / "valid.xml").read_bytes()
    first = api.register(document, "LAB-1", key_from("lab-1"))
    envelope = api.envelope(document, "LAB-2", key_from("lab-2"))
    response = api.refused(
        lambda: api.client.post(
            "/api/v1/certificates", **upload(document, envelope, api.token("issuer", "LAB-2"))
        ),
        409,
        "document_of_other_issuer",
    )
    assert first["certificate_id"] in response.json()["detail"]
    digest = hashlib.sha256(document).hexdigest()
    found = api.client.get("/api/v1/certificates", params={"digest": f"sha256:{digest}"}).json()
    assert [c["certificate_id"] for c in found["certificates"]] == [first["certificate_id"]]


def test_a_dcc_naming_another_laboratory_is_refused(world: World) -> None:
    """A DCC's own laboratory code must be the issuer's id or one of its
    accreditation numbers (case and spacing aside)."""
    w = world
    cases: tuple[tuple[Any, str | None], ...] = (
        ("CNAS-LAB-V", None),
        ("cnas-lab-v", None),
        ("LAB-V", None),
        (" LAB-V ", None),
        ("CNAS-LAB-W", "laboratory_mismatch"),
        ("D-K-15070-01-00", "laboratory_mismatch"),
        # A signed statement's fields are any JSON: a code that is no text is no match.
        (7, "laboratory_mismatch"),
        (["LAB-V"], "laboratory_mismatch"),
        ({"code": "LAB-V"}, "laboratory_mismatch"),
    )
    for n, (code, verdict) in enumerate(cases, start=100):
        w.clock.advance(minutes=1)
        fields = _cert("LAB-V", n, fields={"laboratory": "Victim Lab", "laboratory_code": code})
        if verdict is None:
            w.ok(fields, LAB_V)
        else:
            _refused(w, fields, LAB_V, verdict)


def test_a_ledger_keyed_by_envelope_is_refused_with_a_clear_message(world: World) -> None:
    """A database from before statement identity cannot answer duplicates right: it
    is refused on open, not used."""
    import sqlite3

    settings = world.ledger.settings
    world.ledger.close()
    conn = sqlite3.connect(settings.data_dir / "ledger.db", isolation_level=None)
    try:
        conn.execute("ALTER TABLE entries RENAME COLUMN statement_hash TO envelope_hash")
    finally:
        conn.close()
    with pytest.raises(ConfigError, match="identified by their payload"):
        Ledger.open(settings)


# --- 8/9. the signer is checked before the document is read -------------------------


@pytest.mark.shared
@pytest.mark.parametrize(
    ("signer", "code"),
    [("thief", "key_not_issuer"), ("lab-2", "key_of_other_issuer")],
)
def test_a_document_is_read_only_for_a_usable_key_of_its_issuer(
    api: Api, monkeypatch: pytest.MonkeyPatch, signer: str, code: str
) -> None:
    """Reading a document (parsing, schema validation) costs far more than a
    signature check: a token holder without a usable key of the issuer must not
    make the registry read one."""
    document = (LUTAML / "valid.xml").read_bytes()
    envelope = api.envelope(document, "LAB-1", key_from(signer))
    own_envelope = api.envelope(document, "LAB-1", key_from("lab-1"))
    reads: list[bytes] = []
    original = type(api.ledger.documents).statement

    def spy(self: Any, data: bytes, *args: Any, **kwargs: Any) -> Any:
        reads.append(data)
        return original(self, data, *args, **kwargs)

    monkeypatch.setattr(type(api.ledger.documents), "statement", spy)
    api.refused(
        lambda: api.client.post(
            "/api/v1/certificates", **upload(document, envelope, api.token("issuer", "LAB-1"))
        ),
        403,
        code,
    )
    assert reads == []
    # The issuer's own key gets its document read (and registered).
    token = api.token("issuer", "LAB-1")
    api.client.post(
        "/api/v1/certificates", **upload(document, own_envelope, token)
    ).raise_for_status()
    assert reads == [document]


def test_the_status_page_names_the_dccs_own_laboratory(api: Api) -> None:
    """Beside the accredited issuer, a DCC's status shows the laboratory the
    document itself names (issue 10, item 4)."""
    receipt = api.register(demo_dcc(), "LAB-1", key_from("lab-1"))
    view = api.client.get(f"/api/v1/certificates/{receipt['certificate_id']}").json()
    assert view["issuer_id"] == "LAB-1"
    assert view["laboratory"] == {"name": "Demo Metrology Laboratory (Hangzhou)", "code": "LAB-1"}
    certification_view = api.register(certification("Q-LAB"), "DEMO-CB", CB)
    other = api.client.get(f"/api/v1/certificates/{certification_view['certificate_id']}").json()
    assert other["laboratory"] is None
