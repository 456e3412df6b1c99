"""Witness cosigning (DESIGN.md item 9): C2SP tlog-cosignature ``cosignature/v1``, a
C2SP tlog-witness (``verifier.witness`` over HTTP) against real ledgers — a growing
log, a forked one with the same key and origin, restarts — the registry gathering
cosignatures and serving them on ``/checkpoint``, and the client's witness policy
(``qiverify checkpoint|document --witness --min-witnesses``)."""

from __future__ import annotations

import hashlib
import http.client
import json
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st

from registry.api.app import create_app
from registry.config import ServerSettings, Settings
from registry.errors import ConfigError
from registry.ledger import Ledger
from registry.witnessing import CosignatureGatherer, WitnessEndpoint, parse_witnesses
from tests.conftest import TEST_ORIGIN
from tests.helpers import BODY_KEY, accredit, envelope_bytes, grant, key_from
from tests.verifier_helpers import only_our_errors
from verifier import checkpoint, cosignature, note, witness
from verifier.cli import main as qiverify
from verifier.cosignature import (
    CosignatureSigner,
    CosignatureVerifier,
    WitnessPolicyError,
    require_cosignatures,
)
from verifier.encoding import b64encode
from verifier.errors import MalformedError, QILedgerError, SignatureError, VerificationError
from verifier.merkle import Hash
from verifier.witness import Witness
from verifier.witness_server import WitnessServer

W1 = CosignatureSigner("witness.test/w1", key_from("witness 1"))
W2 = CosignatureSigner("witness.test/w2", key_from("witness 2"))
STRANGER = CosignatureSigner("witness.test/w1", key_from("not witness 1"))
T0 = 1_790_000_000


# --- cosignature/v1 ------------------------------------------------------------------

# The example of https://c2sp.org/tlog-cosignature: a checkpoint, its log signature,
# and a cosignature whose timestamp is the one of the spec's signed-message example.
SPEC_TEXT = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
SPEC_LINE = (
    "\u2014 witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dl"
    "rDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==\n"
)
SPEC_MESSAGE = (
    b"cosignature/v1\ntime 1679315147\nexample.com/behind-the-sofa\n20852163\n"
    b"CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
)


def test_the_spec_example_line_and_message() -> None:
    (line,) = cosignature.parse_lines(SPEC_LINE.encode())
    assert line.name == "witness.example.com/w1"
    assert line.key_id == bytes.fromhex("8d66cf3f")
    (timestamp,) = struct.unpack(">Q", line.signature[:8])
    assert timestamp == 1679315147
    assert len(line.signature) == 8 + 64
    assert cosignature.signed_message(SPEC_TEXT, timestamp) == SPEC_MESSAGE
    assert cosignature.format_line(line) == SPEC_LINE


def test_key_id_and_verifier_key_follow_the_spec() -> None:
    raw = W1.key.public_key.raw
    expected = hashlib.sha256(b"witness.test/w1\n\x04" + raw).digest()[:4]
    vkey = W1.verifier
    assert vkey.key_id == expected
    encoded = b64encode(b"\x04" + raw)
    assert str(vkey) == f"witness.test/w1+{expected.hex()}+{encoded}"
    assert CosignatureVerifier.parse(str(vkey)) == vkey
    # A note (0x01) key of the same name and key is another key: other ID, other type.
    assert note.NoteVerifier.for_key(W1.name, W1.key.public_key).key_id != vkey.key_id
    with pytest.raises(MalformedError):
        CosignatureVerifier.parse(str(note.NoteVerifier.for_key(W1.name, W1.key.public_key)))
    with pytest.raises(MalformedError):
        note.NoteVerifier.parse(str(vkey))


def test_private_key_text_round_trip() -> None:
    text = W1.private_text()
    assert text.startswith(f"PRIVATE+KEY+{W1.name}+{W1.verifier.key_id.hex()}+")
    again = CosignatureSigner.parse_private(text)
    assert again.name == W1.name
    assert again.key.seed() == W1.key.seed()
    wrong_id = text.replace(W1.verifier.key_id.hex(), "00000000")
    note_type = text.rsplit("+", 1)[0] + "+" + b64encode(b"\x01" + W1.key.seed())
    for bad in ("", "PRIVATE+KEY+", wrong_id, note_type, str(W1.verifier), text[:-5]):
        with pytest.raises(MalformedError):
            CosignatureSigner.parse_private(bad)


def log_note(size: int = 5, root: bytes = b"\x11" * 32) -> bytes:
    cp = checkpoint.Checkpoint(TEST_ORIGIN, size, Hash(root))
    return checkpoint.sign(cp, LOG_KEY)


LOG_KEY = key_from("witness test log")
LOG_VERIFIER = note.NoteVerifier.for_key(TEST_ORIGIN, LOG_KEY.public_key)


def cosigned(cp_note: bytes, *signers: CosignatureSigner, at: int = T0) -> bytes:
    text = note.parse(cp_note).text
    lines = [cosignature.format_line(s.cosign(text, at)) for s in signers]
    return cosignature.add_lines(cp_note, lines)


def test_sign_and_verify_round_trip() -> None:
    data = cosigned(log_note(), W1, W2)
    result = require_cosignatures(data, LOG_VERIFIER, [W1.verifier, W2.verifier], 2)
    assert result.witnesses == ((W1.name, T0), (W2.name, T0))
    assert result.signed.checkpoint.size == 5
    # Plain log-key verification still accepts the cosigned note.
    assert checkpoint.verify(data, LOG_VERIFIER).checkpoint.size == 5
    # The line verifies on its own, and says when it was made.
    parsed = note.parse(data)
    assert W1.verifier.verify(parsed.text, parsed.signatures[1]) == T0
    with pytest.raises(SignatureError):
        W1.verifier.verify(parsed.text.replace("5", "6"), parsed.signatures[1])


def test_the_policy_counts_distinct_trusted_witnesses() -> None:
    both = [W1.verifier, W2.verifier]
    once = cosigned(log_note(), W1)
    twice = cosigned(once, W1, at=T0 + 5)  # the same witness again: still one
    with pytest.raises(WitnessPolicyError, match="cosigned by 1 of the trusted witnesses"):
        require_cosignatures(twice, LOG_VERIFIER, both, 2)
    assert require_cosignatures(twice, LOG_VERIFIER, both, 1).witnesses == ((W1.name, T0 + 5),)
    # A key with the same name that is not the trusted one counts for nothing.
    with pytest.raises(WitnessPolicyError):
        require_cosignatures(cosigned(log_note(), STRANGER), LOG_VERIFIER, [W1.verifier], 1)
    # K = 0 asks only for the log's signature; K above the keys given cannot be met.
    assert require_cosignatures(log_note(), LOG_VERIFIER, both, 0).witnesses == ()
    with pytest.raises(MalformedError):
        require_cosignatures(once, LOG_VERIFIER, [W1.verifier], 2)
    # Without the log's own valid signature nothing counts.
    foreign = checkpoint.sign(checkpoint.Checkpoint(TEST_ORIGIN, 5, Hash(b"\x11" * 32)), BODY_KEY)
    with pytest.raises(VerificationError):
        require_cosignatures(cosigned(foreign, W1), LOG_VERIFIER, [W1.verifier], 1)


def test_a_cosignature_dated_in_the_future_is_refused_when_asked() -> None:
    data = cosigned(log_note(), W1, at=T0 + 3600)
    assert require_cosignatures(data, LOG_VERIFIER, [W1.verifier], 1, now=T0 + 3600)
    with pytest.raises(WitnessPolicyError, match="future"):
        require_cosignatures(data, LOG_VERIFIER, [W1.verifier], 1, now=T0)


def test_every_single_byte_change_of_a_cosigned_note_is_refused() -> None:
    data = cosigned(log_note(), W1)
    policy = [W1.verifier]
    require_cosignatures(data, LOG_VERIFIER, policy, 1)
    replacements = (0x00, 0x0A, 0x20, 0x2B, 0x2F, 0x3D, 0x41, 0x61, 0xFF)
    tried = 0
    for position in range(len(data)):
        for new in {data[position] ^ 0x01, data[position] ^ 0x80, *replacements}:
            if new == data[position]:
                continue
            changed = data[:position] + bytes([new]) + data[position + 1 :]
            with pytest.raises(QILedgerError):
                require_cosignatures(changed, LOG_VERIFIER, policy, 1)
            tried += 1
    assert tried > 8 * len(data)


@given(st.binary(max_size=400), st.integers(0, 3))
def test_hostile_notes_raise_only_our_errors(data: bytes, count: int) -> None:
    only_our_errors(require_cosignatures, data, LOG_VERIFIER, [W1.verifier, W2.verifier], count)
    only_our_errors(cosignature.parse_lines, data)
    only_our_errors(CosignatureVerifier.parse, data.decode("utf-8", "replace"))
    only_our_errors(CosignatureSigner.parse_private, data.decode("utf-8", "replace"))


# --- the witness over HTTP, against real ledgers ------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = float(T0)

    def __call__(self) -> float:
        self.now += 1
        return self.now


def start_witness(state: Path, *log_keys: note.NoteVerifier) -> WitnessServer:
    return WitnessServer(Witness(W1, log_keys, state, Clock())).start()


def post(url: str, body: bytes, method: str = "POST", path: str = "/add-checkpoint") -> Any:
    """(status, content type, body) of one request to the witness."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request(method, path, body=body)
        answer = conn.getresponse()
        return answer.status, answer.getheader("Content-Type"), answer.read()
    finally:
        conn.close()


def grow(ledger: Ledger, count: int = 1) -> None:
    """Append ``count`` entries (accreditations of new issuers), one batch each."""
    for _ in range(count):
        n = ledger.latest_checkpoint().size
        ledger.sequencer.submit(envelope_bytes(grant(f"LAB-G{n}", [key_from(f"g{n}")]), BODY_KEY))


def request(ledger: Ledger, old: int, size: int | None = None) -> bytes:
    """The add-checkpoint body for the ledger's checkpoint at ``size`` (latest) from ``old``."""
    stored = ledger.latest_checkpoint() if size is None else ledger.checkpoint_at(size)
    proof = [] if old in (0, stored.size) else ledger.consistency_proof(old, stored.size)
    return witness.format_request(old, proof, stored.note)


def check_line(ledger: Ledger, answer: bytes, size: int) -> None:
    stored = ledger.checkpoint_at(size)
    data = cosignature.add_lines(stored.note, [answer.decode()])
    assert require_cosignatures(data, ledger.identity.verifier, [W1.verifier], 1)


@pytest.fixture
def witness_url(ledger: Ledger, tmp_path: Path) -> Iterator[str]:
    server = start_witness(tmp_path / "witness.json", ledger.identity.verifier)
    yield server.url
    server.close()


def test_the_witness_cosigns_a_growing_log(
    ledger: Ledger, witness_url: str, tmp_path: Path
) -> None:
    status, _, answer = post(witness_url, request(ledger, 0))
    assert status == 200, answer
    check_line(ledger, answer, ledger.latest_checkpoint().size)
    last = ledger.latest_checkpoint().size
    for step in (1, 2, 5):
        grow(ledger, step)
        size = ledger.latest_checkpoint().size
        status, _, answer = post(witness_url, request(ledger, last))
        assert status == 200, answer
        check_line(ledger, answer, size)
        last = size
    # The same checkpoint again, from its own size: cosigned again (C2SP allows it).
    status, _, answer = post(witness_url, request(ledger, last))
    assert status == 200
    state = json.loads((tmp_path / "witness.json").read_text())
    root = b64encode(ledger.latest_checkpoint().root)
    assert state == {"v": 1, "logs": {TEST_ORIGIN: {"size": last, "root": root}}}
    assert not list(tmp_path.glob(".witness.json.part"))


def fork_of(ledger: Ledger, tmp_path: Path) -> Ledger:
    """A second ledger with the same log key and origin but other entries, grown to
    the size of ``ledger`` (so: the same size, another root)."""
    settings = Settings(data_dir=tmp_path / "fork", log_key_path=ledger.settings.log_key_file)
    fork = Ledger.init(
        settings, origin=TEST_ORIGIN, passphrase=None, existing_key=ledger.load_log_key().key
    )
    accredit(fork, "LAB-F", [key_from("fork")])
    grow(fork, ledger.latest_checkpoint().size - fork.latest_checkpoint().size)
    assert fork.latest_checkpoint().size == ledger.latest_checkpoint().size
    assert fork.latest_checkpoint().root != ledger.latest_checkpoint().root
    return fork


def test_a_forked_log_is_refused(ledger: Ledger, witness_url: str, tmp_path: Path) -> None:
    fork = fork_of(ledger, tmp_path)
    try:
        size = ledger.latest_checkpoint().size
        assert post(witness_url, request(ledger, 0))[0] == 200
        # The fork at the same size: 409, the size the witness holds.
        assert post(witness_url, request(fork, size))[:3] == (
            409,
            "text/x.tlog.size",
            b"%d\n" % size,
        )
        # The fork grown, with its own valid proof from that size: 422.
        grow(fork)
        status, _, answer = post(witness_url, request(fork, size))
        assert status == 422, answer
        # The real log is still cosigned as it grows.
        grow(ledger)
        assert post(witness_url, request(ledger, size))[0] == 200
    finally:
        fork.close()


def test_going_back_and_wrong_old_sizes_are_refused(ledger: Ledger, witness_url: str) -> None:
    first = ledger.latest_checkpoint().size
    grow(ledger, 3)
    latest = ledger.latest_checkpoint().size
    assert post(witness_url, request(ledger, 0))[0] == 200
    older = ledger.checkpoint_at(first).note
    # An older checkpoint, from the size cosigned: the old size is above it (400).
    assert post(witness_url, witness.format_request(latest, [], older))[0] == 400
    # An older checkpoint from its own size, or any wrong old size: 409 with the size.
    for body in (request(ledger, 0, first), request(ledger, first, first), request(ledger, 1)):
        status, kind, answer = post(witness_url, body)
        assert (status, kind, answer) == (409, "text/x.tlog.size", b"%d\n" % latest)


def test_a_bad_proof_is_refused(ledger: Ledger, witness_url: str) -> None:
    assert post(witness_url, request(ledger, 0))[0] == 200
    old = ledger.latest_checkpoint().size
    grow(ledger, 3)
    good = ledger.consistency_proof(old, ledger.latest_checkpoint().size)
    note_bytes = ledger.latest_checkpoint().note
    assert good
    bad_proofs = [
        [bytes([good[0][0] ^ 1]) + good[0][1:], *good[1:]],
        good[:-1],
        [*good, good[0]],
        [],
        list(reversed(good)) if len(good) > 1 else [b"\x00" * 32],
    ]
    for proof in bad_proofs:
        status, _, answer = post(witness_url, witness.format_request(old, proof, note_bytes))
        assert status == 422, (proof, answer)
    assert post(witness_url, witness.format_request(old, good, note_bytes))[0] == 200


def test_foreign_logs_are_refused(ledger: Ledger, witness_url: str) -> None:
    stored = ledger.latest_checkpoint()
    cp = checkpoint.Checkpoint.from_text(note.parse(stored.note).text)
    other_key = checkpoint.sign(cp, key_from("another log key"))  # same origin, other key
    assert post(witness_url, witness.format_request(0, [], other_key))[0] == 403
    unsigned = note.sign(cp.to_text(), "someone.else", key_from("x"))
    assert post(witness_url, witness.format_request(0, [], unsigned))[0] == 403
    other_origin = checkpoint.sign(replace(cp, origin="other.log/x"), ledger.load_log_key().key)
    assert post(witness_url, witness.format_request(0, [], other_origin))[0] == 404
    assert post(witness_url, request(ledger, 0))[0] == 200  # nothing was recorded before


def test_malformed_requests_are_refused(ledger: Ledger, witness_url: str) -> None:
    cp = ledger.latest_checkpoint().note
    hash_line = b64encode(b"\x00" * 32).encode() + b"\n"
    bodies = [
        b"",
        b"old 0\n",
        b"old 0\n" + cp,
        b"old\n\n" + cp,
        b"old  0\n\n" + cp,
        b"old 01\n\n" + cp,
        b"old -1\n\n" + cp,
        b"old 0x1\n\n" + cp,
        b"new 0\n\n" + cp,
        b"old 0\nnot base64\n\n" + cp,
        b"old 0\n" + b64encode(b"\x00" * 31).encode() + b"\n\n" + cp,
        b"old 0\n" + hash_line * 64 + b"\n" + cp,
        b"old 0\n\n" + cp.replace(b"\n\n", b"\n"),
        b"old 0\n\ngarbage\n\n\xe2\x80\x94 x AAAA\n",
        b"old 0\n\n\xff\xfe\n\n",
        b"old \xd9\xa1\n\n" + cp,  # an Arabic-Indic digit: isdigit, yet not ASCII
        b"old 99999999999999999999999\n\n" + cp,
    ]
    for body in bodies:
        status, _, answer = post(witness_url, body)
        assert status == 400, (body, answer)
    assert post(witness_url, b"x" * (witness.MAX_BODY + 1))[0] == 413
    assert post(witness_url, b"", method="GET")[0] == 405
    assert post(witness_url, request(ledger, 0), path="/other")[0] == 404
    assert post(witness_url, request(ledger, 0))[0] == 200


@given(st.binary(max_size=300))
def test_request_parsing_raises_only_our_errors(body: bytes) -> None:
    only_our_errors(witness.parse_request, body)
    only_our_errors(witness.parse_request, b"old 0\n\n" + body)


def test_the_witness_keeps_its_state_across_a_restart(ledger: Ledger, tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    server = start_witness(state, ledger.identity.verifier)
    try:
        assert post(server.url, request(ledger, 0))[0] == 200
    finally:
        server.close()
    size = ledger.latest_checkpoint().size
    fork = fork_of(ledger, tmp_path)
    try:
        server = start_witness(state, ledger.identity.verifier)
        try:
            assert post(server.url, request(ledger, 0))[2] == b"%d\n" % size  # 409, its size
            assert post(server.url, request(fork, 0))[2] == b"%d\n" % size
            assert post(server.url, request(fork, size))[0] == 409  # not the tree it signed
            grow(ledger)
            assert post(server.url, request(ledger, size))[0] == 200
        finally:
            server.close()
    finally:
        fork.close()
    # A state file that is not one is refused at start, not overwritten.
    state.write_text("{}")
    with pytest.raises(MalformedError):
        Witness(W1, [ledger.identity.verifier], state, Clock())


def test_concurrent_requests_never_roll_the_state_back(ledger: Ledger, witness_url: str) -> None:
    assert post(witness_url, request(ledger, 0))[0] == 200
    base = ledger.latest_checkpoint().size
    grow(ledger, 6)
    sizes = range(base + 1, base + 7)
    bodies = [request(ledger, base, size) for size in sizes]
    results: list[Any] = [None] * len(bodies)

    def send(i: int) -> None:
        results[i] = post(witness_url, bodies[i])

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [size for size, r in zip(sizes, results, strict=True) if r[0] == 200]
    assert len(winners) == 1
    assert all(r[:2] == (409, "text/x.tlog.size") for r in results if r[0] != 200)
    assert all(r[2] == b"%d\n" % winners[0] for r in results if r[0] != 200)


# --- the registry gathers and serves cosignatures -------------------------------------


def endpoint(url: str, signer: CosignatureSigner = W1) -> WitnessEndpoint:
    return WitnessEndpoint.parse(f"{url}={signer.verifier}")


def test_the_registry_gathers_cosignatures(ledger: Ledger, witness_url: str) -> None:
    gatherer = CosignatureGatherer(ledger, [endpoint(witness_url)])
    assert gatherer.gather() == 1
    assert gatherer.gather() == 0  # kept already: not asked again
    for _ in range(3):
        grow(ledger, 2)
        assert gatherer.gather() == 1  # with a proof from the size it cosigned
    served = ledger.cosigned_checkpoint()
    size = ledger.latest_checkpoint().size
    assert require_cosignatures(served, ledger.identity.verifier, [W1.verifier], 1)
    assert checkpoint.verify(served, ledger.identity.verifier).checkpoint.size == size
    # A gatherer that knows nothing (a new process) learns the size from storage.
    grow(ledger)
    assert CosignatureGatherer(ledger, [endpoint(witness_url)]).gather() == 1


def test_the_registry_learns_a_witness_size_from_409(ledger: Ledger, witness_url: str) -> None:
    # Another process (or a lost database row) had the witness cosign size N.
    assert post(witness_url, request(ledger, 0))[0] == 200
    grow(ledger, 3)
    gatherer = CosignatureGatherer(ledger, [endpoint(witness_url)])
    assert gatherer.gather() == 1
    cosigned_note = ledger.cosigned_checkpoint()
    assert require_cosignatures(cosigned_note, ledger.identity.verifier, [W1.verifier], 1)


def test_a_witness_that_is_down_or_lies_is_logged_not_fatal(
    ledger: Ledger, witness_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.helpers import free_port

    down = endpoint(f"http://127.0.0.1:{free_port()}", STRANGER)
    liar = endpoint(witness_url, W2)  # answers with W1's line, not W2's
    gatherer = CosignatureGatherer(ledger, [down, liar, endpoint(witness_url)])
    with caplog.at_level("WARNING", logger="qiledger.witnessing"):
        assert gatherer.gather() == 1
    assert "cannot reach" in caplog.text
    assert "no valid cosignature" in caplog.text
    assert gatherer.progress[down.key].next_try > 0
    served = ledger.cosigned_checkpoint()
    assert require_cosignatures(served, ledger.identity.verifier, [W1.verifier], 1)
    with pytest.raises(WitnessPolicyError):
        require_cosignatures(served, ledger.identity.verifier, [W2.verifier], 1)
    grow(ledger)  # submissions go on


def test_a_witness_holding_a_fork_is_reported(
    ledger: Ledger, witness_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fork = fork_of(ledger, tmp_path)
    try:
        assert post(witness_url, request(fork, 0))[0] == 200  # the witness saw the fork first
        with caplog.at_level("ERROR", logger="qiledger.witnessing"):
            assert CosignatureGatherer(ledger, [endpoint(witness_url)]).gather() == 0
        assert "different tree" in caplog.text
    finally:
        fork.close()


def test_witness_settings() -> None:
    spec = f"http://127.0.0.1:7380={W1.verifier}"
    assert parse_witnesses([spec]) == (WitnessEndpoint("http://127.0.0.1:7380", W1.verifier),)
    for bad in ("", "http://x", f"ftp://x={W1.verifier}", f"http://x={LOG_VERIFIER}"):
        with pytest.raises(ConfigError):
            parse_witnesses([bad])
    with pytest.raises(ConfigError):
        parse_witnesses([spec, "x"])


def test_a_witness_configured_twice_is_refused(ledger: Ledger) -> None:
    twice = parse_witnesses([f"http://a:1={W1.verifier}", f"http://b:2={W1.verifier}"])
    with pytest.raises(ConfigError):
        CosignatureGatherer(ledger, twice)


def test_witnesses_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = f"http://a:1={W1.verifier}", f"http://b:2={W2.verifier}"
    monkeypatch.setenv("QILEDGER_WITNESSES", f"{a}, {b}")
    server = ServerSettings.from_env()
    assert server.witnesses == (a, b)
    assert ServerSettings.from_env(witnesses=[b]).witnesses == (b,)  # the flag wins
    assert server.worker_env()["QILEDGER_WITNESSES"] == f"{a} {b}"


def test_checkpoint_route_serves_the_cosignatures(ledger: Ledger, witness_url: str) -> None:
    app = create_app(ledger, witnesses=[endpoint(witness_url)])
    with TestClient(app) as client:
        plain = client.get("/checkpoint").content
        grow(ledger)
        deadline = time.monotonic() + 60
        served = plain
        while time.monotonic() < deadline:
            served = client.get("/checkpoint").content
            if len(note.parse(served).signatures) > 1:
                break
            time.sleep(0.1)
        # The JSON API's checkpoint route serves the same cosigned note.
        assert client.get("/api/v1/log/checkpoint").content == served
    assert (
        checkpoint.verify(served, ledger.identity.verifier).checkpoint.size
        == ledger.latest_checkpoint().size
    )
    assert require_cosignatures(served, ledger.identity.verifier, [W1.verifier], 1)


def test_static_tiles_carry_the_cosignatures(
    ledger: Ledger, witness_url: str, tmp_path: Path
) -> None:
    """``qiledger tiles --out`` writes the checkpoint as /checkpoint serves it."""
    from registry.tiles import write_static_tree

    grow(ledger)
    assert CosignatureGatherer(ledger, [endpoint(witness_url)]).gather() == 1
    write_static_tree(ledger, tmp_path / "static")
    written = (tmp_path / "static" / "checkpoint").read_bytes()
    assert written == ledger.cosigned_checkpoint()
    assert len(note.parse(written).signatures) == 2
    assert require_cosignatures(written, ledger.identity.verifier, [W1.verifier], 1)


# --- the client's witness policy ------------------------------------------------------


def test_qiverify_checkpoint_witness_policy(
    ledger: Ledger, witness_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    CosignatureGatherer(ledger, [endpoint(witness_url)]).gather()
    path = tmp_path / "checkpoint"
    path.write_bytes(ledger.cosigned_checkpoint())
    vkey = str(ledger.identity.verifier)
    argv = ["checkpoint", str(path), "--log-key", vkey]
    assert qiverify([*argv, "--witness", str(W1.verifier)]) == 0
    assert qiverify([*argv, "--witness", str(W1.verifier), "--min-witnesses", "1"]) == 0
    capsys.readouterr()
    assert qiverify([*argv, "--witness", str(W2.verifier)]) == 2
    assert "witness cosignatures" in capsys.readouterr().err
    both = ["--witness", str(W1.verifier), "--witness", str(W2.verifier)]
    assert qiverify([*argv, *both]) == 2  # default K: all of them
    assert qiverify([*argv, *both, "--min-witnesses", "1"]) == 0
    assert qiverify([*argv, "--witness", str(W1.verifier), "--min-witnesses", "2"]) == 3
    assert qiverify([*argv, "--witness", "not-a-key"]) == 3
    path.write_bytes(ledger.latest_checkpoint().note)  # no cosignatures
    assert qiverify([*argv, "--witness", str(W1.verifier)]) == 2
    assert qiverify(argv) == 0


def test_qiverify_witness_keygen_and_serve(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "w.key"
    assert qiverify(["witness", "keygen", "--name", "witness.test/cli", "--out", str(key)]) == 0
    vkey = CosignatureVerifier.parse(capsys.readouterr().out.strip())
    assert vkey.name == "witness.test/cli"
    assert key.stat().st_mode & 0o777 == 0o600
    assert CosignatureSigner.parse_private(key.read_text()).verifier == vkey
    assert qiverify(["witness", "keygen", "--name", "x", "--out", str(key)]) == 3  # no overwrite
    assert qiverify(["witness", "keygen", "--name", "bad+name", "--out", str(tmp_path / "b")]) == 3
    key.chmod(0o644)
    serve = ["witness", "serve", "--key", str(key), "--log-key", str(LOG_VERIFIER)]
    assert qiverify([*serve, "--state", str(tmp_path / "s.json")]) == 3  # readable by others
    key.chmod(0o600)
    assert qiverify([*serve, "--state", str(tmp_path / "s.json"), "--listen", "nope"]) == 3


def test_a_served_registry_with_a_witness_end_to_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``qiledger serve`` with QILEDGER_WITNESSES and a real witness: a certificate
    registered over HTTP, the cosigned /checkpoint, and ``qiverify document`` with
    the witness policy."""
    from tests.test_http_edges import Server, _envelope, _new_registry, bearer, dcc

    settings, tokens = _new_registry(tmp_path / "data")
    ledger = Ledger.open(settings)
    log_vkey = ledger.identity.verifier
    ledger.close()
    witness_server = start_witness(tmp_path / "witness.json", log_vkey)
    monkeypatch.setenv("QILEDGER_WITNESSES", f"{witness_server.url}={W1.verifier}")
    server = Server.start(settings, tmp_path / "server.log")
    try:
        document = dcc("DCC-WITNESSED-1")
        response = httpx.post(
            f"{server.url}/api/v1/certificates",
            files={
                "document": ("dcc.xml", document),
                "envelope": ("envelope.json", _envelope(document, settings)),
            },
            headers=bearer(tokens["lab"]),
            timeout=60,
        )
        assert response.status_code == 201, response.text
        receipt = response.json()
        size = receipt["tree_size"]
        deadline = time.monotonic() + 60
        served = b""
        while time.monotonic() < deadline:
            served = httpx.get(f"{server.url}/checkpoint", timeout=10).content
            if (
                checkpoint.verify(served, log_vkey).checkpoint.size >= size
                and len(note.parse(served).signatures) > 1
            ):
                break
            time.sleep(0.2)
        assert require_cosignatures(served, log_vkey, [W1.verifier], 1)
        path = tmp_path / "dcc.xml"
        path.write_bytes(document)
        argv = ["document", str(path), "--registry", server.url, "--log-key", str(log_vkey)]
        argv += ["--state", str(tmp_path / "seen.json")]
        assert qiverify([*argv, "--witness", str(W1.verifier)]) == 0
        capsys.readouterr()
        assert qiverify([*argv, "--witness", str(W2.verifier), "--min-witnesses", "1"]) == 2
        assert "witness cosignatures" in capsys.readouterr().err
        online = ["--log-key", str(log_vkey), "--online", server.url]
        online += ["--state", str(tmp_path / "seen.json"), "--witness", str(W1.verifier)]
        assert qiverify(["mark", receipt["mark_url"], *online]) == 0
    finally:
        log = server.stop()
        witness_server.close()
    assert "Traceback" not in log
    assert "cosigned size" in log


def test_qiledger_serve_refuses_a_bad_witness_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from registry.cli.main import main as qiledger

    monkeypatch.delenv("QILEDGER_WITNESSES", raising=False)
    assert qiledger(["--data-dir", str(tmp_path), "serve", "--witness", "http://w"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "witness" in err
    monkeypatch.setenv("QILEDGER_WITNESSES", f"http://w={LOG_VERIFIER}")
    assert qiledger(["--data-dir", str(tmp_path), "serve"]) == 1
    assert "0x04" in capsys.readouterr().err


def test_idle_connections_cannot_exhaust_the_witness(
    ledger: Ledger, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    from verifier import witness_server

    monkeypatch.setattr(witness_server, "MAX_CONNECTIONS", 2)
    server = start_witness(tmp_path / "w.json", ledger.identity.verifier)
    host, port = server.httpd.server_address[:2]
    idle = [socket.create_connection((str(host), int(port))) for _ in range(2)]
    try:
        time.sleep(0.2)  # let the server accept both
        extra = socket.create_connection((str(host), int(port)), timeout=30)
        extra.sendall(b"POST /add-checkpoint HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
        assert extra.recv(100) == b""  # closed, not served
        extra.close()
    finally:
        for s in idle:
            s.close()
    deadline = time.monotonic() + 30
    while True:  # the slots come back once the idle connections are gone
        try:
            if post(server.url, request(ledger, 0))[0] == 200:
                break
        except (OSError, http.client.HTTPException):
            pass
        assert time.monotonic() < deadline
        time.sleep(0.05)
    server.close()
