"""Many OS processes appending to one ledger at once, on each engine.

Eight worker processes each open the ledger with ``Ledger.open`` and submit
batches of signed envelopes, all starting together. Afterwards the log must be
one linear, gap-free chain holding exactly what was acknowledged, every
checkpoint must be an ancestor of the final tree, and fsck must pass.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import selectors
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from registry.config import Settings
from registry.fsck import fsck
from registry.ledger import Ledger
from tests.conftest import make_ledger
from tests.helpers import envelope_bytes, issue_statement, key_from, submit_one
from verifier import checkpoint, entry, merkle
from verifier.keys import SigningKey

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
LAB = key_from("lab-1")
PROCESSES = 8
START_TIMEOUT = 60.0
RUN_TIMEOUT = 240.0

WORKER = r"""
import base64, json, sys
from pathlib import Path

from registry.config import Settings
from registry.ledger import Ledger
from registry.sequencer import Accepted
from tests.helpers import submit_with_documents

job = json.loads(Path(sys.argv[1]).read_text())
settings = Settings(data_dir=Path(job["data_dir"]), database_url=job["database_url"])
ledger = Ledger.open(settings)
ledger.sequencer  # reads the log key before the start signal
batches = [[base64.b64decode(e) for e in batch] for batch in job["batches"]]
print("ready", flush=True)
sys.stdin.readline()
results = []
for batch in batches:
    answers = []
    for outcome in submit_with_documents(ledger.sequencer, batch):
        if isinstance(outcome, Accepted):
            answers.append(
                {
                    "index": outcome.index,
                    "duplicate": outcome.duplicate,
                    "checkpoint": outcome.checkpoint_size,
                }
            )
        else:
            answers.append({"refused": outcome.error.message})
    results.append(answers)
ledger.close()
print(json.dumps(results), flush=True)
"""

Answer = dict[str, Any]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QILEDGER_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def run_workers(
    settings: Settings, jobs: list[list[list[bytes]]], tmp_path: Path
) -> list[list[list[Answer]]]:
    """Run one process per job (a list of batches), all released at once; the
    answers per process, per batch, per envelope."""
    script = tmp_path / "append_worker.py"
    script.write_text(WORKER)
    procs: list[subprocess.Popen[str]] = []
    errs: list[Path] = []
    try:
        for n, batches in enumerate(jobs):
            job = tmp_path / f"job{n}.json"
            job.write_text(
                json.dumps(
                    {
                        "data_dir": str(settings.data_dir),
                        "database_url": settings.database_url,
                        "batches": [
                            [base64.b64encode(e).decode() for e in batch] for batch in batches
                        ],
                    }
                )
            )
            errs.append(tmp_path / f"worker{n}.err")
            with errs[-1].open("w") as err:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, str(script), str(job)],
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        stderr=err,
                        cwd=ROOT,
                        env=_env(),
                        text=True,
                    )
                )
        for proc, err_path in zip(procs, errs, strict=True):
            line = _readline(proc, START_TIMEOUT)
            assert line == "ready\n", f"worker did not start: {err_path.read_text()[-2000:]}"
        for proc in procs:  # the start signal, as close together as we can
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = []
        deadline = time.monotonic() + RUN_TIMEOUT
        for proc, err_path in zip(procs, errs, strict=True):
            out, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            assert proc.returncode == 0, f"worker failed: {err_path.read_text()[-2000:]}"
            results.append(json.loads(out))
        return results
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _readline(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            return ""
    return proc.stdout.readline()


def _fresh_ledger(settings: Settings) -> int:
    """A ledger whose LAB-1 holds LAB; returns its size (the trust entries)."""
    ledger = make_ledger(settings, LAB)
    try:
        return ledger.storage.tail_size()
    finally:
        ledger.close()


def check_log(settings: Settings) -> list[bytes]:
    """The whole-log invariants; returns the leaf data by index."""
    ledger = Ledger.open(settings)
    try:
        size = ledger.storage.tail_size()
        stored = list(ledger.storage.iter_entries(0, 97))
        assert [e.index for e in stored] == list(range(size)), "indices with gaps or duplicates"
        assert len({e.statement_hash for e in stored}) == size, "an envelope logged twice"
        prev = entry.GENESIS_PREV
        last_time = ""
        for e in stored:
            parsed = entry.parse(e.data)
            assert e.leaf_hash == merkle.leaf_hash(e.data)
            assert parsed.prev == prev, f"entry {e.index} does not chain to {e.index - 1}"
            assert parsed.logged_at == e.logged_at >= last_time
            prev, last_time = e.leaf_hash, parsed.logged_at
        leaves = [e.leaf_hash for e in stored]

        final = ledger.verified_checkpoint().checkpoint
        assert final.size == size
        assert final.root == merkle.root_from_leaf_hashes(leaves)
        sizes = []
        for cp in ledger.storage.iter_checkpoints():
            signed = checkpoint.verify(cp.note, ledger.identity.verifier).checkpoint
            assert (signed.size, signed.root) == (cp.size, cp.root)
            assert signed.root == merkle.root_from_leaf_hashes(leaves[: cp.size])
            proof = ledger.consistency_proof(cp.size, final.size)
            merkle.verify_consistency(cp.size, final.size, proof, signed.root, final.root)
            sizes.append(cp.size)
        assert sizes == sorted(set(sizes))
        assert sizes[-1] == size

        report = fsck(ledger)
        assert (report.entries, report.root) == (size, final.root)
        return [e.data for e in stored]
    finally:
        ledger.close()


def _checkpoint_sizes(settings: Settings) -> list[int]:
    ledger = Ledger.open(settings)
    try:
        return [cp.size for cp in ledger.storage.iter_checkpoints()]
    finally:
        ledger.close()


def _logged_envelope(data: bytes) -> bytes:
    # The leaf data splices the canonical envelope in verbatim: {"envelope":<env>,...
    head = b'{"envelope":'
    assert data.startswith(head)
    end = data.rindex(b',"logged_at":"')
    return data[len(head) : end]


def test_eight_processes_append_distinct_envelopes(settings: Settings, tmp_path: Path) -> None:
    base = _fresh_ledger(settings)
    batches_per_process, per_batch = 5, 20
    jobs = [
        [
            [
                envelope_bytes(issue_statement(p * 10_000 + b * 100 + i), LAB)
                for i in range(per_batch)
            ]
            for b in range(batches_per_process)
        ]
        for p in range(PROCESSES)
    ]
    submitted = [env for job in jobs for batch in job for env in batch]
    assert len(set(submitted)) == PROCESSES * batches_per_process * per_batch

    results = run_workers(settings, jobs, tmp_path)

    leaf_data = check_log(settings)
    assert len(leaf_data) == base + len(submitted)
    indices: list[int] = []
    checkpoint_sizes: list[int] = []
    for job, answers in zip(jobs, results, strict=True):
        for batch, batch_answers in zip(job, answers, strict=True):
            assert all("index" in a for a in batch_answers), batch_answers
            got = [a["index"] for a in batch_answers]
            assert not any(a["duplicate"] for a in batch_answers)
            # One batch is one transaction: consecutive indices, one checkpoint at its end.
            assert got == list(range(got[0], got[0] + len(batch)))
            assert {a["checkpoint"] for a in batch_answers} == {got[-1] + 1}
            checkpoint_sizes.append(got[-1] + 1)
            for env, index in zip(batch, got, strict=True):
                assert _logged_envelope(leaf_data[index]) == env, f"entry {index}"
            indices += got
    assert sorted(indices) == list(range(base, base + len(submitted)))
    # Exactly the batches' checkpoints (after the empty log's and the trust chain's).
    assert _checkpoint_sizes(settings) == list(range(base + 1)) + sorted(checkpoint_sizes)


def test_concurrent_resubmission_of_the_same_envelopes(settings: Settings, tmp_path: Path) -> None:
    base = _fresh_ledger(settings)
    shared = [envelope_bytes(issue_statement(900_000 + i), LAB) for i in range(10)]
    jobs = []
    for p in range(PROCESSES):
        rng = random.Random(p)
        batches = []
        for b in range(3):
            order = shared[:]
            rng.shuffle(order)
            own = envelope_bytes(issue_statement(800_000 + p * 10 + b), LAB)
            order.insert(rng.randrange(len(order) + 1), own)
            batches.append([*order, order[0]])  # and one repeat inside the batch
        jobs.append(batches)

    results = run_workers(settings, jobs, tmp_path)

    leaf_data = check_log(settings)
    own_count = PROCESSES * 3
    assert len(leaf_data) == base + len(shared) + own_count
    index_of: dict[bytes, set[int]] = {}
    fresh: Counter[bytes] = Counter()
    for job, answers in zip(jobs, results, strict=True):
        for batch, batch_answers in zip(job, answers, strict=True):
            assert all("index" in a for a in batch_answers), batch_answers
            assert batch_answers[-1]["duplicate"] is True  # the in-batch repeat
            assert batch_answers[-1]["index"] == batch_answers[0]["index"]
            for env, answer in zip(batch, batch_answers, strict=True):
                index_of.setdefault(env, set()).add(answer["index"])
                fresh[env] += not answer["duplicate"]
                assert answer["index"] < answer["checkpoint"]
    assert len(index_of) == len(shared) + own_count
    for env, indices in index_of.items():
        assert len(indices) == 1, f"one envelope answered with indices {sorted(indices)}"
        (index,) = indices
        assert _logged_envelope(leaf_data[index]) == env
        assert fresh[env] == 1, "exactly one submission may append it"
    assert sorted(i for (i,) in index_of.values()) == list(range(base, len(leaf_data)))
    hashes = [hashlib.sha256(_logged_envelope(d)).digest() for d in leaf_data]
    assert len(set(hashes)) == len(hashes)


def test_a_read_sees_one_snapshot_while_entries_are_appended(
    ledger: Ledger, lab_key: SigningKey
) -> None:
    """Everything in one read transaction answers from one snapshot, on both
    engines: PostgreSQL's default (READ COMMITTED) would let a later statement of
    the same read see entries committed after its first (a tree size, then rows
    logged past it)."""
    count = "SELECT COUNT(*) FROM entries"
    with ledger.storage.read() as tx:
        before = tx.exec_driver_sql(count).scalar()
        for n in range(3):  # committed by the writer while the read is open
            submit_one(ledger.sequencer, envelope_bytes(issue_statement(n), lab_key))
        during = tx.exec_driver_sql(count).scalar()
    with ledger.storage.read() as tx:
        after = tx.exec_driver_sql(count).scalar()
    assert (before, during, after) == (before, before, before + 3)
