"""``qiverify monitor`` against real registries served over HTTP (the FastAPI app in a
uvicorn thread over real ledgers, SQLite and PostgreSQL) and real signed statements.

Dishonest registries are test doubles of what is *served*, never of the checking
code: a second real ledger with the same log key and origin but other entries (a
fork), an ASGI wrapper altering bytes in flight, and a static tile server holding
a log this file writes itself (C2SP tiles are static files; a real log key signs
its checkpoints), for entries no registry would admit: a broken ``prev`` link, an
entry signed by a stranger in a lab's name, a replayed statement.
"""

from __future__ import annotations

import functools
import hashlib
import json
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from registry.api.app import create_app
from registry.config import Settings
from registry.ledger import Ledger
from registry.sequencer import Accepted
from tests.browser import ServedApp
from tests.conftest import TEST_ORIGIN
from tests.helpers import (
    BODY_KEY,
    SIGNED_AT_TIME,
    Rewrite,
    RewriteResponses,
    body_add,
    envelope_bytes,
    free_port,
    grant,
    issue_statement,
    key_from,
    submit_with_documents,
)
from verifier import checkpoint, dsse, entry, merkle, monitor, note, statement, tiles, trust
from verifier import proof as tlog_proof
from verifier.cli import main as qiverify
from verifier.errors import InconsistencyError, MalformedError, TrustError
from verifier.keys import SigningKey

REPO = Path(__file__).resolve().parents[1]
LAB = key_from("lab-1")
LAB2 = key_from("lab-2")
STRANGER = key_from("not-a-key-of-lab-1")
LOG_SEED = hashlib.sha256(b"test_monitor log key").digest()
OK, ALARM, UNCHECKED, INTERRUPTED = 0, 2, 3, 130

# --- real registries, served -----------------------------------------------------------


@dataclass
class Served:
    ledger: Ledger
    url: str
    tamper: RewriteResponses

    @property
    def vkey(self) -> str:
        return str(self.ledger.identity.verifier)


def new_ledger(settings: Settings, seed: bytes = LOG_SEED) -> Ledger:
    """A ledger with this file's log key (so a fork can share it), LAB-1 accredited
    (entries 0 and 1)."""
    ledger = Ledger.init(
        settings, origin=TEST_ORIGIN, passphrase=None, random_bytes=lambda n: seed[:n]
    )
    ledger.sequencer.submit(envelope_bytes(body_add(), ledger.load_log_key().key))
    ledger.sequencer.submit(envelope_bytes(grant("LAB-1", [LAB]), BODY_KEY))
    return ledger


@contextmanager
def serve(ledger: Ledger) -> Iterator[Served]:
    app = create_app(ledger)
    tamper = RewriteResponses(app)
    try:
        with ServedApp(tamper) as server:
            yield Served(ledger, server.url, tamper)
    finally:
        app.state.service.close()


def submit(ledger: Ledger, envelopes: Sequence[bytes]) -> list[int]:
    outcomes = submit_with_documents(ledger.sequencer, envelopes)
    indices = []
    for outcome in outcomes:
        assert isinstance(outcome, Accepted), outcome
        assert not outcome.duplicate
        indices.append(outcome.index)
    return indices


def issue(
    ledger: Ledger, numbers: range, issuer: str = "LAB-1", key: SigningKey = LAB
) -> list[int]:
    return submit(ledger, [envelope_bytes(issue_statement(n, issuer), key) for n in numbers])


def signed(built: statement.StatementBuilder, key: SigningKey) -> bytes:
    return envelope_bytes(built.to_json(SIGNED_AT_TIME), key)


# --- running the monitor ------------------------------------------------------------------


def json_stream(text: str) -> list[dict[str, Any]]:
    """The JSON objects of ``--json`` output: one a line, then the verdict object."""
    decoder, pos, found = json.JSONDecoder(), 0, []
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos == len(text):
            return found
        value, pos = decoder.raw_decode(text, pos)
        found.append(value)


@dataclass
class Run:
    code: int
    events: list[dict[str, Any]]
    err: str

    @property
    def verdict(self) -> dict[str, Any]:
        return self.events[-1]

    def statements(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == "statement"]

    def steps(self) -> list[tuple[int, int]]:
        return [(e["old_size"], e["size"]) for e in self.events if e.get("event") == "checkpoint"]

    def evidence(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(Path(self.verdict["evidence"]).read_text())
        return loaded


def run_monitor(
    capsys: pytest.CaptureFixture[str], url: str, vkey: str, state: Path, *extra: str
) -> Run:
    argv = ["monitor", "--registry", url, "--log-key", vkey, "--state", str(state)]
    code = qiverify([*argv, "--once", "--json", *extra])
    captured = capsys.readouterr()
    events = json_stream(captured.out)
    assert events[-1]["exit_code"] == code
    assert "Traceback" not in captured.err
    return Run(code, events, captured.err)


def saved_size(state: Path) -> int:
    text = json.loads(state.read_text())["checkpoint"]
    return checkpoint.Checkpoint.from_text(note.parse(text.encode()).text).size


# --- catching up ----------------------------------------------------------------------------


def test_catches_up_from_empty_then_incrementally(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger = new_ledger(settings)
    try:
        issue(ledger, range(3))
        with serve(ledger) as served:
            state = tmp_path / "monitor" / "state.json"
            run = run_monitor(capsys, served.url, served.vkey, state)
            assert run.code == OK, run.verdict
            assert run.steps() == [(0, 5)]
            assert saved_size(state) == 5
            # Across tile boundaries: a full level-0 tile and a partial one, then a
            # second full one, from a state that ended inside a partial tile.
            issue(ledger, range(3, 303))
            assert run_monitor(capsys, served.url, served.vkey, state).steps() == [(5, 305)]
            issue(ledger, range(303, 563))
            run = run_monitor(capsys, served.url, served.vkey, state)
            assert run.code == OK
            assert run.steps() == [(305, 565)]
            assert run.verdict["tree_size"] == 565 == ledger.latest_checkpoint().size
            run = run_monitor(capsys, served.url, served.vkey, state)
            assert run.code == OK
            assert run.steps() == [(565, 565)]
            assert not list(state.parent.glob("evidence-*"))
        saved = json.loads(state.read_text())
        assert saved["checkpoint"] == ledger.latest_checkpoint().note.decode()
        assert [index for index, _ in saved["trust_entries"]] == [0, 1]
        assert len(saved["certificates"]) == 563
        assert len(saved["recent"]) == 565  # all logged within the duplicate window
    finally:
        ledger.close()


def test_text_output_and_the_state_reused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger = new_ledger(Settings(data_dir=tmp_path / "data"))
    try:
        with serve(ledger) as served:
            argv = ["monitor", "--registry", served.url, "--log-key", served.vkey]
            argv += ["--state", str(tmp_path / "s.json"), "--once", "--watch", "LAB-1"]
            assert qiverify(argv) == OK
            out = capsys.readouterr().out.splitlines()
            assert out == [
                f"WATCH 1 {ledger.entry(1).logged_at} accreditation.grant issuer=LAB-1 "
                f"body=CNAS accreditation=CNAS-LAB-1 signed-by={BODY_KEY.public_key.key_id}",
                f"OK {TEST_ORIGIN}: size 0 -> 2, 2 new entries verified (tiles, consistency, "
                "prev links, signatures, trust rules)",
            ]
            (index,) = issue(ledger, range(1))
            assert qiverify(argv) == OK
            out = capsys.readouterr().out.splitlines()
            assert len(out) == 2
            assert out[0].startswith(f"WATCH {index} ")
            assert "certificate.issue issuer=LAB-1 certificate=LAB-1/DCC-000000" in out[0]
            assert out[1].startswith(f"OK {TEST_ORIGIN}: size 2 -> 3")
            suspend = statement.CertificateSuspend(
                issuer_id="LAB-1", certificate_id="LAB-1/DCC-000000", reason="audit  pending"
            )
            submit(ledger, [signed(suspend, LAB)])
            assert qiverify(argv) == OK
            out = capsys.readouterr().out.splitlines()
            assert len(out) == 2
            assert out[0].endswith(
                "certificate.suspend issuer=LAB-1 certificate=LAB-1/DCC-000000 "
                f'reason="audit  pending" signed-by={LAB.public_key.key_id}'
            )
    finally:
        ledger.close()


# --- watching an issuer ---------------------------------------------------------------------


def test_watch_prints_exactly_the_new_statements_about_the_watched_issuer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger = new_ledger(Settings(data_dir=tmp_path / "data"))
    try:
        about_lab2 = submit(ledger, [envelope_bytes(grant("LAB-2", [LAB2]), BODY_KEY)])
        about_lab1 = [1, *issue(ledger, range(2))]  # its grant, its certificates
        about_lab2 += issue(ledger, range(2), "LAB-2", LAB2)
        added = statement.IssuerKeyAdd(issuer_id="LAB-2", public_key=key_from("lab-2 b").public_key)
        about_lab2 += submit(ledger, [signed(added, LAB2)])
        about_lab1 += issue(ledger, range(2, 4))
        with serve(ledger) as served:
            state = tmp_path / "s.json"
            run = run_monitor(capsys, served.url, served.vkey, state, "--watch", "LAB-2")
            assert run.code == OK
            assert [s["index"] for s in run.statements()] == about_lab2
            assert [s["type"] for s in run.statements()] == [
                "accreditation.grant",
                "certificate.issue",
                "certificate.issue",
                "issuer.key.add",
            ]
            assert all(s["about"][0] == "LAB-2" for s in run.statements())
            assert run.statements()[1]["statement"]["certificate_id"] == "LAB-2/DCC-000000"
            assert run.statements()[1]["signed_by"] == LAB2.public_key.key_id

            # Only what is new is printed the next time, and only about LAB-2.
            about_lab1 += issue(ledger, range(4, 6))
            suspend = statement.CertificateSuspend(
                issuer_id="LAB-2", certificate_id="LAB-2/DCC-000001", reason="audit"
            )
            new = submit(ledger, [signed(suspend, LAB2)])
            new += issue(ledger, range(2, 3), "LAB-2", LAB2)
            run = run_monitor(capsys, served.url, served.vkey, state, "--watch", "LAB-2")
            assert [s["index"] for s in run.statements()] == new
            assert [s["type"] for s in run.statements()] == [
                "certificate.suspend",
                "certificate.issue",
            ]
            # Two parties at once; the body is a party too.
            run = run_monitor(
                capsys, served.url, served.vkey, tmp_path / "t.json", "--watch", "LAB-1", "CNAS"
            )
            by_cnas = [0, 1, about_lab2[0]]  # the body's own entry and its two grants
            assert [s["index"] for s in run.statements()] == sorted({*by_cnas, *about_lab1})
            run = run_monitor(capsys, served.url, served.vkey, tmp_path / "u.json")
            assert run.code == OK
            assert run.statements() == []
    finally:
        ledger.close()


# --- forks ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fork_entries", [3, 7], ids=["same-size", "longer"])
def test_a_second_ledger_with_the_same_key_and_origin_is_a_fork(
    fork_entries: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    honest = new_ledger(Settings(data_dir=tmp_path / "honest"))
    forked = new_ledger(Settings(data_dir=tmp_path / "fork"))
    fork_app = create_app(forked)
    try:
        assert forked.identity.verifier == honest.identity.verifier
        issue(honest, range(3))
        issue(forked, range(100, 100 + fork_entries))
        with serve(honest) as served:
            state = tmp_path / "state" / "s.json"
            assert run_monitor(capsys, served.url, served.vkey, state).code == OK
            before = state.read_bytes()
            served.tamper.app = fork_app
            run = run_monitor(capsys, served.url, served.vkey, state)
        assert run.code == ALARM
        assert "fork" in run.verdict["error"]
        assert run.verdict["evidence"] in run.verdict["error"]
        assert state.read_bytes() == before
        evidence = run.evidence()
        assert Path(run.verdict["evidence"]).parent == state.parent
        assert evidence["kind"] == "fork"
        assert evidence["log_key"] == served.vkey
        key = honest.identity.verifier
        old = checkpoint.verify(evidence["verified_checkpoint"].encode(), key).checkpoint
        new = checkpoint.verify(evidence["new_checkpoint"].encode(), key).checkpoint
        assert (old.size, new.size) == (5, 2 + fork_entries)
        assert old.root == honest.latest_checkpoint().root
        assert new.root == forked.latest_checkpoint().root
        if fork_entries > 3:
            # Anyone can check it: the proof from the fork's tiles leads to its root,
            # and no proof can lead to both.
            hashes = [merkle.Hash(bytes(b64(h))) for h in evidence["consistency_proof"]["hashes"]]
            with pytest.raises(InconsistencyError, match="first root"):
                merkle.verify_consistency(old.size, new.size, hashes, old.root, new.root)
        # A monitor that saw nothing before has no history to hold the fork against.
        with serve(forked) as fork_served:
            fresh = tmp_path / "fresh.json"
            assert run_monitor(capsys, fork_served.url, served.vkey, fresh).code == OK
    finally:
        fork_app.state.service.close()
        honest.close()
        forked.close()


def b64(text: str) -> bytes:
    from verifier.encoding import b64decode

    return b64decode(text, "test")


# --- a registry altering what it serves ----------------------------------------------------


@pytest.fixture(scope="module")
def tampered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """300 entries: tiles 0/000 (full) and 0/001.p/44, 1/000.p/1, bundles likewise."""
    ledger = new_ledger(Settings(data_dir=tmp_path_factory.mktemp("tampered") / "data"))
    issue(ledger, range(98))  # a checkpoint signed at size 100, for one going back
    issue(ledger, range(98, 298))
    try:
        with serve(ledger) as served:
            yield served
    finally:
        ledger.close()


@pytest.fixture
def honest_view(tampered: Served) -> Iterator[Served]:
    tampered.tamper.rewrite = None
    yield tampered
    tampered.tamper.rewrite = None


def flip(at: int) -> Callable[[bytes], bytes]:
    return lambda body: body[:at] + bytes([body[at] ^ 1]) + body[at + 1 :]


def on_path(path: str, change: Callable[[bytes], bytes]) -> Rewrite:
    def rewrite(got: str, body: bytes) -> bytes:
        if got != path:
            return body
        changed = change(body)
        assert changed != body, f"the test's rewrite of {path} changed nothing"
        return changed

    return rewrite


def in_entry(number: int, old: bytes, new: bytes) -> Callable[[bytes], bytes]:
    """Replace ``old`` in the ``number``-th entry of a bundle (its plain JSON part)."""

    def change(body: bytes) -> bytes:
        at = -1
        for _ in range(number + 1):
            at = body.index(b'"logged_at":', at + 1)
        end = body.index(old, at)
        return body[:end] + new + body[end + len(old) :]

    return change


TAMPERINGS: dict[str, tuple[Rewrite, str]] = {
    "full-leaf-tile": (on_path("/tile/0/000", flip(100 * 32 + 5)), "tile_mismatch"),
    "partial-leaf-tile": (on_path("/tile/0/001.p/44", flip(7)), "tile_mismatch"),
    "level-1-tile": (on_path("/tile/1/000.p/1", flip(31)), "tile_mismatch"),
    "entry-in-bundle": (
        on_path("/tile/entries/000", in_entry(7, b'"v":1}', b'"v":2}')),
        "entry_mismatch",
    ),
    "entry-in-partial-bundle": (
        on_path("/tile/entries/001.p/44", in_entry(43, b"Z", b"z")),
        "entry_mismatch",
    ),
}


@pytest.mark.parametrize("name", list(TAMPERINGS))
def test_a_server_rewriting_one_tile_byte_or_entry_is_caught(
    name: str, honest_view: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rewrite, kind = TAMPERINGS[name]
    honest_view.tamper.rewrite = rewrite
    state = tmp_path / "s.json"
    run = run_monitor(capsys, honest_view.url, honest_view.vkey, state)
    assert run.code == ALARM, run.verdict
    evidence = run.evidence()
    assert evidence["kind"] == kind
    assert not state.exists()  # nothing verified: nothing saved
    if kind == "entry_mismatch":
        data = b64(evidence["leaf_data"])
        assert merkle.leaf_hash(data).hex() == evidence["leaf_hash_of_data"]
        assert evidence["leaf_hash_in_tile"] != evidence["leaf_hash_of_data"]
    # The same registry, honest again, verifies.
    honest_view.tamper.rewrite = None
    assert run_monitor(capsys, honest_view.url, honest_view.vkey, state).code == OK


def test_an_entry_rewritten_with_its_leaf_hash_is_caught_by_the_tile_above(
    honest_view: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Entry 7 and its hash in the full tile 0/000 rewritten to agree: only the fold
    of that tile to its parent hash in tile 1/000.p/1 can tell."""
    original = honest_view.ledger.entry(7).data
    rewritten = original.replace(b'"v":1}', b'"v":2}')
    forged_hash = merkle.leaf_hash(rewritten)

    def rewrite(path: str, body: bytes) -> bytes:
        if path == "/tile/0/000":
            return body[: 7 * 32] + forged_hash + body[8 * 32 :]
        if path == "/tile/entries/000":
            assert body.count(original) == 1
            return body.replace(original, rewritten)
        return body

    honest_view.tamper.rewrite = rewrite
    run = run_monitor(capsys, honest_view.url, honest_view.vkey, tmp_path / "s.json")
    assert run.code == ALARM
    evidence = run.evidence()
    assert evidence["kind"] == "tile_mismatch"
    assert (evidence["tile"], evidence["parent_tile"]) == ("tile/0/000", "tile/1/000.p/1")
    assert b64(evidence["tile_hashes"][7]) == forged_hash


def _resigned(served: Served, size: int, root: bytes) -> bytes:
    cp = checkpoint.Checkpoint(TEST_ORIGIN, size, merkle.Hash(root))
    return checkpoint.sign(cp, served.ledger.load_log_key().key)


CHECKPOINT_ANSWERS: dict[str, tuple[Callable[[Served, bytes], bytes], int, str]] = {
    "older-and-consistent": (
        lambda s, body: s.ledger.checkpoint_at(100).note,
        UNCHECKED,
        "older than size 300",
    ),
    "older-with-another-root": (
        lambda s, body: _resigned(s, 100, hashlib.sha256(b"x").digest()),
        ALARM,
        "went back to size 100",
    ),
    "same-size-another-root": (
        lambda s, body: _resigned(s, 300, hashlib.sha256(b"y").digest()),
        ALARM,
        "two different signed trees of size 300",
    ),
    "bad-signature": (
        lambda s, body: body[:-10] + (b"A" if body[-10:-9] != b"A" else b"B") + body[-9:],
        ALARM,
        "not signed by the log key",
    ),
    "another-key": (
        lambda s, body: checkpoint.sign(
            checkpoint.Checkpoint.from_text(note.parse(body).text), key_from("other log")
        ),
        ALARM,
        "not signed by the log key",
    ),
    "garbage": (lambda s, body: b"<html>502 bad gateway</html>", UNCHECKED, "malformed"),
    "empty": (lambda s, body: b"", UNCHECKED, "malformed"),
}


@pytest.mark.parametrize("name", list(CHECKPOINT_ANSWERS))
def test_checkpoint_answers_get_their_exit_code_and_leave_the_state(
    name: str, honest_view: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "s.json"
    assert run_monitor(capsys, honest_view.url, honest_view.vkey, state).code == OK
    before = state.read_bytes()
    answer, code, words = CHECKPOINT_ANSWERS[name]
    honest_view.tamper.rewrite = on_path("/checkpoint", lambda body: answer(honest_view, body))
    run = run_monitor(capsys, honest_view.url, honest_view.vkey, state)
    assert run.code == code, run.verdict
    assert words in run.verdict["error"]
    assert state.read_bytes() == before
    if code == ALARM:
        assert run.evidence()["detail"] in run.verdict["error"]
    else:
        assert "evidence" not in run.verdict


def test_garbage_tiles_and_a_registry_that_is_down_are_unchecked(
    honest_view: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "s.json"
    honest_view.tamper.rewrite = on_path("/tile/0/000", lambda body: body[:-1])
    run = run_monitor(capsys, honest_view.url, honest_view.vkey, state)
    assert run.code == UNCHECKED
    assert "tile of width 256" in run.verdict["error"]
    honest_view.tamper.rewrite = on_path("/tile/entries/000", lambda body: body + b"\x00")
    run = run_monitor(capsys, honest_view.url, honest_view.vkey, state)
    assert run.code == UNCHECKED
    assert "entry bundle" in run.verdict["error"]
    assert not state.exists()
    honest_view.tamper.rewrite = None
    assert run_monitor(capsys, honest_view.url, honest_view.vkey, state).code == OK
    before = state.read_bytes()
    down = f"http://127.0.0.1:{free_port()}"
    run = run_monitor(capsys, down, honest_view.vkey, state)
    assert run.code == UNCHECKED
    assert "cannot reach" in run.verdict["error"]
    run = run_monitor(capsys, honest_view.url + "/no/such/prefix", honest_view.vkey, state)
    assert run.code == UNCHECKED
    assert state.read_bytes() == before


# --- the state file ------------------------------------------------------------------------


def _altered_state(change: Callable[[dict[str, Any]], Any]) -> Callable[[bytes], bytes]:
    def alter(data: bytes) -> bytes:
        value = json.loads(data)
        change(value)
        return json.dumps(value).encode()

    return alter


def _flip_trust_entry(value: dict[str, Any]) -> None:
    index, data = value["trust_entries"][1]
    raw = bytearray(b64(data))
    at = raw.index(b'"sig":"') + len(b'"sig":"')
    raw[at] = ord("A") if raw[at] != ord("A") else ord("B")  # the body's signature breaks
    from verifier.encoding import b64encode

    value["trust_entries"][1] = [index, b64encode(bytes(raw))]


STATE_DAMAGE: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "not-json": (lambda data: b"\x00\x01 not json", "is not JSON"),
    "truncated": (lambda data: data[: len(data) // 2], "is not JSON"),
    "another-format": (lambda data: b'{"v": 1, "logs": {}}', "not a qiverify monitor state"),
    "a-trust-entry-altered": (_altered_state(_flip_trust_entry), "trust entry 1"),
    "a-certificate-row-broken": (
        _altered_state(lambda v: v["certificates"][0].pop()),
        "corrupt",
    ),
    "a-key-reference-out-of-range": (
        _altered_state(lambda v: v["certificates"][0][5][0].__setitem__(3, 99)),
        "corrupt",
    ),
    "links-missing": (_altered_state(lambda v: v.pop("links")), "corrupt"),
    "a-link-not-a-pair": (
        _altered_state(lambda v: v.__setitem__("links", [["LAB-1/X", [["equipment"]]]])),
        "corrupt",
    ),
    "a-link-not-text": (
        _altered_state(lambda v: v.__setitem__("links", [["LAB-1/X", [["equipment", 5]]]])),
        "corrupt",
    ),
    "a-certificate-without-links": (
        _altered_state(lambda v: v.__setitem__("links", [["LAB-1/X", []]])),
        "corrupt",
    ),
    "an-at-risk-reason-not-text": (
        _altered_state(lambda v: v.__setitem__("at_risk", [["LAB-1/X", [1]]])),
        "corrupt",
    ),
    "a-watched-party-not-text": (
        _altered_state(lambda v: v.__setitem__("risk_watch", [None])),
        "corrupt",
    ),
    "a-checkpoint-not-of-this-log": (
        _altered_state(
            lambda v: v.__setitem__(
                "checkpoint",
                checkpoint.sign(
                    checkpoint.Checkpoint(TEST_ORIGIN, 5, merkle.Hash(bytes(32))),
                    key_from("other"),
                ).decode(),
            )
        ),
        "its checkpoint",
    ),
}


@pytest.mark.parametrize("name", list(STATE_DAMAGE))
def test_a_corrupt_state_file_is_a_clear_error(
    name: str, honest_view: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "s.json"
    assert run_monitor(capsys, honest_view.url, honest_view.vkey, state).code == OK
    damage, words = STATE_DAMAGE[name]
    state.write_bytes(damage(state.read_bytes()))
    before = state.read_bytes()
    run = run_monitor(capsys, honest_view.url, honest_view.vkey, state)
    assert run.code == UNCHECKED
    assert run.verdict["error"].startswith(f"the state file {state}")
    assert words in run.verdict["error"]
    assert state.read_bytes() == before


def test_a_state_file_of_another_log_is_refused(
    honest_view: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = new_ledger(Settings(data_dir=tmp_path / "other"), seed=bytes(range(32)))
    try:
        with serve(other) as served_other:
            state = tmp_path / "s.json"
            assert run_monitor(capsys, served_other.url, served_other.vkey, state).code == OK
            before = state.read_bytes()
            run = run_monitor(capsys, honest_view.url, honest_view.vkey, state)
    finally:
        other.close()
    assert run.code == UNCHECKED
    assert "it is the state of another log" in run.verdict["error"]
    assert state.read_bytes() == before


# --- logs no registry would write: a static tile server ----------------------------------------


class StaticLog:
    """A log built here, entry by entry, published as C2SP tile files with a
    checkpoint signed by a real log key: what a static file server would hold."""

    def __init__(self, key: SigningKey) -> None:
        self.key = key
        self.leaves: list[bytes] = []
        self.clock = SIGNED_AT_TIME + timedelta(seconds=1)

    @property
    def verifier(self) -> note.NoteVerifier:
        return note.NoteVerifier.for_key(TEST_ORIGIN, self.key.public_key)

    def append(self, fields: dict[str, Any], signer: SigningKey, prev: bytes | None = None) -> int:
        envelope = dsse.sign(statement.encode(fields), signer).to_json()
        if prev is None:
            prev = merkle.leaf_hash(self.leaves[-1]) if self.leaves else entry.GENESIS_PREV
        self.clock += timedelta(milliseconds=1)
        self.leaves.append(entry.encode(prev, entry.format_time(self.clock), envelope))
        return len(self.leaves) - 1

    def trust_chain(self) -> StaticLog:
        self.append(body_add(), self.key)
        self.append(grant("LAB-1", [LAB]), BODY_KEY)
        return self

    def files(self, size: int | None = None) -> dict[str, bytes]:
        leaves = self.leaves[:size]
        files = tile_files([merkle.leaf_hash(d) for d in leaves])
        for start in range(0, len(leaves), tiles.TILE_WIDTH):
            chunk = leaves[start : start + tiles.TILE_WIDTH]
            bundle = tiles.Bundle(start // tiles.TILE_WIDTH, len(chunk))
            files[bundle.path] = tiles.encode_entry_bundle(chunk)
        root = merkle.root_from_leaf_hashes([merkle.leaf_hash(d) for d in leaves])
        files["checkpoint"] = checkpoint.sign(
            checkpoint.Checkpoint(TEST_ORIGIN, len(leaves), root), self.key
        )
        return files


def tile_files(hashes: list[merkle.Hash]) -> dict[str, bytes]:
    """Every hash tile of a tree with these leaf hashes, built bottom-up here."""
    files, level, width = {}, 0, tiles.TILE_WIDTH
    while hashes:
        for start in range(0, len(hashes), width):
            chunk = hashes[start : start + width]
            files[tiles.Tile(level, start // width, len(chunk)).path] = b"".join(chunk)
        hashes = [
            merkle.root_from_leaf_hashes(hashes[s : s + width])
            for s in range(0, len(hashes) - width + 1, width)
        ]
        level += 1
    return files


@contextmanager
def static_server(files: dict[str, bytes]) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = files.get(self.path.lstrip("/"))
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


LOG_KEY = SigningKey.from_seed(LOG_SEED)


def test_the_static_log_of_these_tests_is_a_valid_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = StaticLog(LOG_KEY).trust_chain()
    for n in range(3):
        log.append(issue_statement(n), LAB)
    with static_server(log.files()) as url:
        run = run_monitor(capsys, url, str(log.verifier), tmp_path / "s.json")
    assert run.code == OK
    assert run.steps() == [(0, 5)]


def _broken_prev(log: StaticLog) -> int:
    return log.append(issue_statement(9), LAB, prev=hashlib.sha256(b"elsewhere").digest())


def _stranger_in_the_labs_name(log: StaticLog) -> int:
    return log.append(issue_statement(9), STRANGER)


def _replayed_statement(log: StaticLog) -> int:
    change = {"issuer_id": "LAB-1", "certificate_id": "LAB-1/DCC-000000", "reason": "audit"}
    suspend = statement.CertificateSuspend(**change).to_json(SIGNED_AT_TIME)
    log.append(suspend, LAB)
    log.append(statement.CertificateReinstate(**change).to_json(SIGNED_AT_TIME), LAB)
    return log.append(suspend, LAB)  # allowed by the transitions, but logged already


BAD_ENTRIES: dict[str, tuple[Callable[[StaticLog], int], str, str]] = {
    "broken-prev": (_broken_prev, "prev_broken", "is not the leaf hash"),
    "stranger-signs-for-lab": (_stranger_in_the_labs_name, "entry_invalid", "(unknown_key)"),
    "replayed-statement": (_replayed_statement, "entry_invalid", "statement_duplicate"),
}


@pytest.mark.parametrize("name", list(BAD_ENTRIES))
def test_an_entry_the_log_should_not_hold_is_caught(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_bad, kind, words = BAD_ENTRIES[name]
    log = StaticLog(LOG_KEY).trust_chain()
    for n in range(3):
        log.append(issue_statement(n), LAB)
    state = tmp_path / "s.json"
    with static_server(log.files()) as url:
        assert run_monitor(capsys, url, str(log.verifier), state).code == OK
    before = state.read_bytes()
    bad = make_bad(log)
    folder = tmp_path / "evidence" / "here"
    for n in range(3, 5):
        log.append(issue_statement(n), LAB)
    with static_server(log.files()) as url:
        run = run_monitor(
            capsys, url, str(log.verifier), state, "--watch", "LAB-1", "--evidence", str(folder)
        )
    assert run.code == ALARM, run.verdict
    assert Path(run.verdict["evidence"]).parent == folder
    assert words in run.verdict["error"]
    assert state.read_bytes() == before
    evidence = run.evidence()
    assert evidence["kind"] == kind
    assert evidence["index"] == bad
    leaf = b64(evidence["leaf_data"])
    assert leaf == log.leaves[bad]
    # The evidence proves the registry logged it: a tlog-proof under its signed checkpoint.
    tlog_proof.verify(evidence["tlog_proof"].encode(), leaf, log.verifier)
    watched = run.statements()
    assert watched[-1]["index"] == bad
    assert watched[-1]["invalid"] == kind
    assert [s["index"] for s in watched[:-1]] == list(range(5, bad))  # the valid ones first


# --- properties over many sizes, in memory ----------------------------------------------------


@functools.cache
def long_log() -> StaticLog:
    log = StaticLog(LOG_KEY).trust_chain()
    for n in range(598):
        log.append(issue_statement(n), LAB)
    return log


def _no_proof(first: int, second: int) -> list[bytes]:
    raise AssertionError("only a checkpoint going back asks for a proof")


def _advance(state: monitor.MonitorState, files: dict[str, bytes]) -> monitor.Step:
    new = monitor.verify_checkpoint(files["checkpoint"], state.log_key)
    return monitor.check(state, new, files.__getitem__, _no_proof)


sizes = st.integers(min_value=0, max_value=600)


@hypothesis_settings(max_examples=25)
@given(first=sizes, second=sizes)
def test_any_two_sizes_verify_and_the_saved_state_continues(first: int, second: int) -> None:
    first, second = sorted((first, second))
    log = long_log()
    state = monitor.MonitorState.empty(log.verifier)
    assert _advance(state, log.files(first)).new_size == first
    saved = json.loads(json.dumps(state.to_json()))
    reloaded = monitor.MonitorState.from_json(saved, log.verifier)
    assert reloaded.to_json() == saved
    for continuing in (state, reloaded):
        assert _advance(continuing, log.files(second)) == monitor.Step(
            first,
            second,
            merkle.root_from_leaf_hashes([merkle.leaf_hash(d) for d in log.leaves[:second]]),
        )
    assert state.to_json() == reloaded.to_json()


@hypothesis_settings(max_examples=25)
@given(first=sizes, second=sizes, choice=st.data())
def test_any_flipped_bit_of_what_a_step_reads_is_caught(
    first: int, second: int, choice: st.DataObject
) -> None:
    first, second = sorted((first, second))
    log = long_log()
    state = monitor.MonitorState.empty(log.verifier)
    _advance(state, log.files(first))
    saved = state.to_json()
    honest = log.files(second)
    read: list[str] = []
    new = monitor.verify_checkpoint(honest["checkpoint"], log.verifier)
    monitor.check(state, new, lambda p: read.append(p) or honest[p], _no_proof)
    path = choice.draw(st.sampled_from(["checkpoint", *read]), label="path")
    at = choice.draw(st.integers(0, len(honest[path]) - 1), label="byte")
    bit = choice.draw(st.integers(0, 7), label="bit")
    altered = dict(honest)
    altered[path] = (
        honest[path][:at] + bytes([honest[path][at] ^ (1 << bit)]) + honest[path][at + 1 :]
    )
    again = monitor.MonitorState.from_json(saved, log.verifier)
    with pytest.raises((monitor.Alarm, MalformedError)):
        _advance(again, altered)


LAB_B = key_from("lab-1 second key")
OPERATIONS = ("amend", "suspend", "reinstate", "withdraw", "compromise", "issue")


def _operation(log: StaticLog, n: int, op: str, c: int, second_key: bool) -> None:
    """Certificate operations of LAB-1 (two keys); a statement's fields depend only on
    the operation and certificate, so a repeated one is the same statement."""
    cert, key = f"LAB-1/C{c}", LAB_B if second_key else LAB
    built: statement.StatementBuilder
    if op in ("issue", "amend"):
        number = f"{c}" if op == "issue" else f"{c}-A{n}"
        document = {"document_sha256": hashlib.sha256(number.encode()).hexdigest()}
        common = {"issuer_id": "LAB-1", "kind": "dcc", "issued": date(2026, 11, 24), **document}
        built = (
            statement.CertificateIssue(certificate_id=cert, **common)
            if op == "issue"
            else statement.CertificateAmend(
                certificate_id=f"{cert}-A{n}", supersedes=cert, **common
            )
        )
    elif op == "compromise":  # LAB reports LAB_B stolen since the first operation
        since = SIGNED_AT_TIME + timedelta(seconds=1, milliseconds=3)
        built = statement.IssuerKeyRevoke(
            issuer_id="LAB-1", key_id=LAB_B.public_key.key_id, reason="stolen", compromised_at=since
        )
        key = LAB
    else:
        change = {
            "suspend": statement.CertificateSuspend,
            "reinstate": statement.CertificateReinstate,
        }
        kind = change.get(op, statement.CertificateWithdraw)
        built = kind(issuer_id="LAB-1", certificate_id=cert, reason=f"r{c}")
    log.append(built.to_json(SIGNED_AT_TIME), key)


@hypothesis_settings(max_examples=100)
# The cases a compact state could get wrong, always run: a certificate issued with a
# key reported compromised since before it (void), a suspension by that key
# (ignored), a statement logged again after the state was saved (a duplicate).
@example(ops=[("compromise", 0, False), ("suspend", 1, False)], cut=4)
@example(ops=[("suspend", 0, True), ("compromise", 0, False), ("reinstate", 0, False)], cut=5)
@example(ops=[("suspend", 0, False), ("reinstate", 0, False), ("suspend", 0, True)], cut=5)
@given(
    ops=st.lists(
        st.tuples(st.sampled_from(OPERATIONS), st.integers(0, 1), st.booleans()),
        min_size=1,
        max_size=14,
    ),
    cut=st.integers(0, 18),
)
def test_the_monitor_refuses_exactly_what_the_trust_rules_refuse(
    ops: list[tuple[str, int, bool]], cut: int
) -> None:
    """Against verifier.trust replayed in full (every certificate field, its own
    duplicate window): the monitor's compact state, saved and reloaded at ``cut``,
    refuses the same first entry, or none."""
    log = StaticLog(LOG_KEY)
    log.append(body_add(), LOG_KEY)
    log.append(grant("LAB-1", [LAB, LAB_B]), BODY_KEY)
    for n, (op, c, second_key) in enumerate([("issue", 0, False), ("issue", 1, True), *ops]):
        _operation(log, n, op, c, second_key)
    reference, first_bad = trust.TrustState(LOG_KEY.public_key), None
    for index, data in enumerate(log.leaves):
        try:
            trust.replay_one(reference, index, data, trust_append_checks=False)
        except TrustError:
            first_bad = index
            break
    cut = min(cut, len(log.leaves))

    def monitored() -> monitor.MonitorState:
        state = monitor.MonitorState.empty(log.verifier)
        _advance(state, log.files(cut))
        saved = json.loads(json.dumps(state.to_json()))
        state = monitor.MonitorState.from_json(saved, log.verifier)
        _advance(state, log.files())
        return state

    if first_bad is None:
        assert monitored().size == len(log.leaves)
        return
    with pytest.raises(monitor.Alarm) as caught:
        monitored()
    assert caught.value.kind == "entry_invalid"
    assert caught.value.evidence["index"] == first_bad


def test_full_tiles_above_level_0_must_fold_to_their_parent() -> None:
    """A tree too large to fill with signed entries here: 65,836 leaf hashes and no
    entry bundles, so a step that passes every tile check stops at the first bundle.
    It has a full level-1 tile, summarised by one hash of the level-2 tile."""
    size = 256 * 256 + 300
    hashes = [merkle.Hash(hashlib.sha256(i.to_bytes(4, "big")).digest()) for i in range(size)]
    files = tile_files(hashes)
    assert "tile/1/000" in files
    assert "tile/2/000.p/1" in files
    root = merkle.root_from_leaf_hashes(hashes)
    note_bytes = checkpoint.sign(checkpoint.Checkpoint(TEST_ORIGIN, size, root), LOG_KEY)
    verifier_key = note.NoteVerifier.for_key(TEST_ORIGIN, LOG_KEY.public_key)
    new = checkpoint.verify(note_bytes, verifier_key)
    with pytest.raises(KeyError, match="tile/entries/000"):  # every tile check passed
        monitor.advance(monitor.MonitorState.empty(verifier_key), new, files.__getitem__)
    for position in (0, 255 * 32 + 31):
        files["tile/1/000"] = flip(position)(tiles_bytes := files["tile/1/000"])
        assert tiles.TiledTree(size, files.__getitem__).root() == root  # never reads it ...
        with pytest.raises(monitor.Alarm, match="tile/1/000 does not hash to its parent"):
            monitor.advance(monitor.MonitorState.empty(verifier_key), new, files.__getitem__)
        files["tile/1/000"] = tiles_bytes


# --- polling -----------------------------------------------------------------------------------


def test_polling_until_interrupted_saves_the_state_and_exits_130(tmp_path: Path) -> None:
    ledger = new_ledger(Settings(data_dir=tmp_path / "data"))
    state = tmp_path / "s.json"
    try:
        with serve(ledger) as served:
            argv = [sys.executable, "-m", "verifier", "monitor", "--registry", served.url]
            argv += ["--log-key", served.vkey, "--state", str(state), "--interval", "0.2"]
            argv += ["--json", "--watch", "LAB-1"]
            process = subprocess.Popen(
                argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
            lines: queue.Queue[str] = queue.Queue()
            reader = threading.Thread(
                target=lambda: [lines.put(line) for line in process.stdout or ()], daemon=True
            )
            reader.start()
            try:
                events = _until(lines, lambda e: e.get("size") == 2)
                assert [e["event"] for e in events] == ["statement", "checkpoint"]
                (index,) = issue(ledger, range(1))
                events = _until(lines, lambda e: e.get("size") == 3)
                assert [(e["event"], e.get("index")) for e in events] == [
                    ("statement", index),
                    ("checkpoint", None),
                ]
                process.send_signal(signal.SIGINT)
                assert process.wait(timeout=60) == INTERRUPTED
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()
        assert saved_size(state) == 3
        assert "Traceback" not in (process.stderr.read() if process.stderr else "")
    finally:
        ledger.close()


def _until(lines: queue.Queue[str], done: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    events = []
    while True:
        event = json.loads(lines.get(timeout=60))
        events.append(event)
        if event.get("event") == "checkpoint" and done(event):
            return events
