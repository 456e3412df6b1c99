"""The signature-check worker: same verdicts as checking in-process, and a dead
worker never lets a bad signature through or loses a good entry."""

from __future__ import annotations

import base64
import json
import os
import signal
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from registry.config import Settings
from registry.ledger import Ledger
from registry.sequencer import WORKER_MIN_BATCH, Accepted, Outcome, Refused
from registry.verify_pool import check_batch, encode_batch
from tests.conftest import make_ledger
from tests.helpers import envelope_bytes, issue_statement, key_from, submit_with_documents
from verifier import dsse
from verifier.keys import SigningKey

LAB = key_from("lab-1")


def _forge(envelope: bytes) -> bytes:
    """The same envelope with one bit of its (decoded) signature flipped."""
    value = json.loads(envelope)
    sig = bytearray(base64.b64decode(value["signatures"][0]["sig"]))
    sig[7] ^= 0x10
    value["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    return json.dumps(value).encode()


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.binary(max_size=300), st.booleans()), min_size=1, max_size=20))
def test_batch_encoding_round_trip(items: list[tuple[bytes, bool]]) -> None:
    key = key_from("k")
    pending = []
    for message, good in items:
        sig = key.sign(message)
        if not good:
            sig = bytes([sig[0] ^ 1]) + sig[1:]
        pending.append(dsse.PendingSignature(key.public_key, sig, message))
    assert list(check_batch(encode_batch(pending), {})) == [int(good) for _, good in items]


def _batch(n: int, bad: set[int], strangers: set[int]) -> list[bytes]:
    envelopes = []
    for i in range(n):
        key: SigningKey = key_from("stranger") if i in strangers else LAB
        env = envelope_bytes(issue_statement(i), key)
        envelopes.append(_forge(env) if i in bad else env)
    return envelopes


def _summary(outcomes: list[Outcome]) -> list[tuple[str, object]]:
    return [
        ("ok", o.index) if isinstance(o, Accepted) else ("refused", (o.error.code, o.error.message))
        for o in outcomes
        if isinstance(o, Accepted | Refused)
    ]


def test_worker_and_local_checks_agree(tmp_path: Path) -> None:
    n = 3 * WORKER_MIN_BATCH
    # Forgeries land in chunks the worker checks and in chunks checked locally.
    batch = _batch(n, bad={0, 63, 64, 130, 200, 400, n - 1}, strangers={5, 300})
    results = []
    for worker in (True, False):
        ledger = make_ledger(Settings(data_dir=tmp_path / str(worker)), LAB)
        ledger.sequencer.verify_worker = worker
        results.append(_summary(submit_with_documents(ledger.sequencer, batch)))
        if worker:
            assert ledger.sequencer._worker_process is not None
        ledger.close()
    assert results[0] == results[1]
    refused = [r for r in results[0] if r[0] == "refused"]
    assert len(refused) == 9
    assert all("does not verify" in str(r[1]) or "is not a key" in str(r[1]) for r in refused)


def test_a_dead_worker_falls_back_to_local_checks(tmp_path: Path) -> None:
    ledger: Ledger = make_ledger(Settings(data_dir=tmp_path / "d"), LAB)
    sequencer = ledger.sequencer
    sequencer.verify_worker = True
    n = WORKER_MIN_BATCH * 2
    first = submit_with_documents(sequencer, _batch(n, bad=set(), strangers=set()))
    assert all(isinstance(o, Accepted) for o in first)
    worker = sequencer._worker_process
    assert worker is not None
    os.kill(worker._process.pid, signal.SIGKILL)  # type: ignore[arg-type]
    worker._process.join()
    batch = [envelope_bytes(issue_statement(n + i), LAB) for i in range(n)]
    batch[70] = _forge(batch[70])
    second = submit_with_documents(sequencer, batch)
    assert isinstance(second[70], Refused)
    assert sum(isinstance(o, Accepted) for o in second) == n - 1
    assert sequencer.verify_worker is False
    from registry.fsck import fsck

    assert fsck(ledger).entries == ledger.latest_checkpoint().size
    ledger.close()


ORPHAN_SCRIPT = r"""
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from registry.config import Settings
from tests.conftest import make_ledger
from tests.helpers import envelope_bytes, issue_statement, key_from, submit_with_documents
key = key_from("lab-1")
ledger = make_ledger(Settings(data_dir=Path(sys.argv[1])), key)
ledger.sequencer.verify_worker = True
envelopes = [envelope_bytes(issue_statement(n), key) for n in range(600)]
submit_with_documents(ledger.sequencer, envelopes)
print(ledger.sequencer._worker_process._process.pid, flush=True)
time.sleep(120)
"""


def test_worker_exits_when_its_parent_is_killed(tmp_path: Path) -> None:
    """Regression: a forked worker held the write end of its own inbox, so a parent
    killed with SIGKILL left it waiting forever."""
    import subprocess
    import sys
    import time

    root = str(Path(__file__).resolve().parents[1])
    parent = subprocess.Popen(
        [sys.executable, "-c", ORPHAN_SCRIPT, str(tmp_path / "d"), root],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert parent.stdout is not None
    worker_pid = int(parent.stdout.readline())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(worker_pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(worker_pid, signal.SIGKILL)
    raise AssertionError("the verify worker outlived its killed parent")
