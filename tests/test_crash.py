"""kill -9 in the middle of appending: nothing acknowledged is lost, nothing
half-written stays.

A child process appends batches in a loop and prints each batch's indices
only after ``submit_many`` returned. After a few batches it stops itself at a
chosen point of the next batch — inside the write transaction (after its k-th
SQL statement, or just before COMMIT), or just after COMMIT before the caller
is answered — prints a marker saying where, and waits there. The test reads
the marker, checks from its own connection that the sequencer's write lock is
held (or, after COMMIT, free), kills the child with SIGKILL, reopens the
ledger and checks: every acknowledged index holds the envelope it was
acknowledged for; the batch killed inside its transaction left nothing, the
one killed after COMMIT is whole; the log holds exactly the worker's envelopes
in order; the newest checkpoint covers the whole log; fsck passes; and the
next process appends at the next index. With big batches, the sequencer's
signature-checking helper process must die with it.

The stopping point is injected through SQLAlchemy engine events and a wrapper
around ``Database.write`` in the child; storage itself is the real one.
"""

from __future__ import annotations

import json
import os
import random
import selectors
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from registry.config import Settings
from registry.fsck import fsck
from registry.ledger import Ledger
from registry.storage.database import SEQUENCER_LOCK_KEY
from tests.conftest import make_ledger
from tests.helpers import SIGNED_AT, envelope_bytes, issue_statement, key_from
from verifier import entry, merkle

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
LAB = key_from("lab-1")
BATCH = 40
REPORTED_BEFORE_KILL = 3
LINE_TIMEOUT = 60.0

WORKER = r"""
import json, multiprocessing, sys, time
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import event

from registry.config import Settings
from registry.storage.database import SEQUENCER_LOCK_KEY
from registry.ledger import Ledger
from registry.sequencer import Accepted
from tests.helpers import envelope_bytes, issue_statement, key_from, submit_with_documents

data_dir, url, signed_at, start, batch_size, batches, verify_worker, pause = sys.argv[1:]
start, batch_size, batches = int(start), int(batch_size), int(batches)
ledger = Ledger.open(Settings(data_dir=Path(data_dir), database_url=url or None))
if verify_worker == "yes":
    ledger.sequencer.verify_worker = True  # check signatures of big batches on a helper
key = key_from("lab-1")

# pause = "none" or "<batch>:<point>": in batch number <batch> (0-based) stop at
# "statement-<k>" (after the write transaction's k-th SQL statement, or before its
# COMMIT if it has fewer), "insert" (after its first INSERT: rows written, not
# committed), "commit" (just before COMMIT) or "committed" (COMMIT returned, the
# caller not yet answered); print a marker and wait to be killed.
pause_batch, _, point = pause.partition(":")
pause_batch = int(pause_batch) if pause != "none" else -1
state = {"batch": -1, "conn": None, "statements": 0}


def stop(where, conn):
    print(
        json.dumps(
            {
                "paused": where,
                "batch": state["batch"],
                "in_transaction": conn is not None and conn.in_transaction(),
            }
        ),
        flush=True,
    )
    while True:
        time.sleep(60)  # the test kills us here


real_write = ledger.db.write


@contextmanager
def write():
    with real_write() as conn:
        state["conn"], state["statements"] = conn, 0
        yield conn
    state["conn"] = None
    if state["batch"] == pause_batch and point == "committed":
        stop("after commit", None)


ledger.db.write = write


def after_statement(conn, cursor, statement, parameters, context, executemany):
    if conn is state["conn"] and state["batch"] == pause_batch:
        state["statements"] += 1
        verb = statement.split()[0].upper()
        if point == f"statement-{state['statements']}" or (point == "insert" and verb == "INSERT"):
            stop(f"after statement {state['statements']}: {verb}", conn)


def before_commit(conn):
    if conn is state["conn"] and state["batch"] == pause_batch:
        if point == "commit" or point.startswith("statement-"):
            stop("before commit", conn)


event.listen(ledger.db.write_engine, "after_cursor_execute", after_statement)
event.listen(ledger.db.write_engine, "commit", before_commit)

done = 0
while batches == 0 or done < batches:
    first = start + done * batch_size
    envelopes = [
        envelope_bytes(issue_statement(n, signed_at=signed_at), key)
        for n in range(first, first + batch_size)
    ]
    state["batch"] = done
    outcomes = submit_with_documents(ledger.sequencer, envelopes)  # each with its document
    if not all(isinstance(o, Accepted) and not o.duplicate for o in outcomes):
        print(json.dumps({"error": repr(outcomes)}), flush=True)
        sys.exit(1)
    # Acknowledged: submit_many returned.
    print(
        json.dumps(
            {
                "first": first,
                "indices": [o.index for o in outcomes],
                "checkpoint": outcomes[0].checkpoint_size,
                "helpers": [p.pid for p in multiprocessing.active_children()],
            }
        ),
        flush=True,
    )
    done += 1
ledger.close()
"""


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QILEDGER_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


class Lines:
    """Complete lines from a child's stdout, with a timeout (no partial lines)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self.fd = proc.stdout.fileno()
        self.buffer = b""
        self.eof = False

    def next(self, timeout: float) -> bytes | None:
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self.fd, selectors.EVENT_READ)
            while b"\n" not in self.buffer:
                if self.eof:
                    return None
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not sel.select(remaining):
                    return None
                chunk = os.read(self.fd, 1 << 16)
                self.eof = not chunk
                self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line

    def until_eof(self, timeout: float) -> list[bytes]:
        """Every complete line up to EOF; a trailing partial line (the child was
        killed mid-write) is not a report."""
        lines = []
        while (line := self.next(timeout)) is not None:
            lines.append(line)
        assert self.eof, "the child neither wrote a line nor exited in time"
        return lines


@dataclass
class Run:
    start: int
    batch: int = BATCH
    reports: list[dict[str, Any]] = field(default_factory=list)
    committed_unacknowledged: int | None = None
    """Batches committed but never acknowledged: known exactly when the kill point
    was chosen (0 inside the transaction, 1 after COMMIT); None: 0 or 1."""
    marker: dict[str, Any] | None = None
    """Where the worker said it stood when it was killed."""


def start_worker(
    settings: Settings,
    tmp_path: Path,
    start: int,
    batches: int,
    batch: int = BATCH,
    verify_worker: bool = False,
    pause: str = "none",
) -> tuple[subprocess.Popen[bytes], Path]:
    script = tmp_path / "crash_worker.py"
    script.write_text(WORKER)
    err = tmp_path / f"worker-{start}.err"
    with err.open("wb") as err_file:
        proc = subprocess.Popen(
            [
                sys.executable,
                str(script),
                str(settings.data_dir),
                settings.database_url or "",
                SIGNED_AT,
                str(start),
                str(batch),
                str(batches),
                "yes" if verify_worker else "default",
                pause,
            ],
            stdout=subprocess.PIPE,
            stderr=err_file,
            cwd=ROOT,
            env=_env(),
        )
    return proc, err


def write_lock_is_held(settings: Settings) -> bool:
    """Whether some transaction holds the sequencer's write lock, asked from a
    connection of our own that does not wait for it."""
    if settings.database_url is None:
        conn = sqlite3.connect(settings.data_dir / "ledger.db", timeout=0, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")  # the lock Database.write takes on SQLite
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc):
                raise
            return True
        finally:
            conn.close()  # rolls back, releasing the lock if we took it
        return False
    import psycopg

    with psycopg.connect(settings.database_url.replace("+psycopg", "")) as pg:
        row = pg.execute("SELECT pg_try_advisory_xact_lock(%s)", (SEQUENCER_LOCK_KEY,)).fetchone()
        pg.rollback()
    assert row is not None
    return not row[0]


def kill_points(rng: random.Random, kills: int) -> list[str]:
    """Where each killed worker stops: each kind once, then random ones."""

    def statement() -> str:
        return f"statement-{rng.randint(1, 64)}"  # past the last one: before COMMIT

    fixed = ["insert", "commit", "committed", statement()]
    extra = [rng.choice([statement(), "insert", "commit", "committed"]) for _ in range(kills)]
    return (fixed + extra)[:kills]


def run_and_kill(settings: Settings, tmp_path: Path, start: int, point: str) -> Run:
    """Let a worker report a few batches; it then stops at ``point`` of the next
    batch and says so. Prove where it stands, then SIGKILL it there."""
    pause = f"{REPORTED_BEFORE_KILL}:{point}"
    proc, err = start_worker(settings, tmp_path, start, batches=0, pause=pause)
    in_transaction = point != "committed"
    run = Run(start, committed_unacknowledged=0 if in_transaction else 1)
    lines = Lines(proc)
    try:
        while len(run.reports) < REPORTED_BEFORE_KILL:
            line = lines.next(LINE_TIMEOUT)
            assert line is not None, f"worker stopped: {err.read_text()[-2000:]}"
            run.reports.append(json.loads(line))
        line = lines.next(LINE_TIMEOUT)
        assert line is not None, f"worker did not pause: {err.read_text()[-2000:]}"
        marker = run.marker = json.loads(line)
        assert marker["batch"] == REPORTED_BEFORE_KILL, marker
        assert marker["in_transaction"] is in_transaction, marker
        if point == "commit":
            assert marker["paused"] == "before commit", marker
        elif point == "committed":
            assert marker["paused"] == "after commit", marker
        elif point == "insert":
            assert marker["paused"].endswith(": INSERT"), marker
        # The worker is waiting at its marker: the write transaction is still
        # open (nothing of this batch committed), or it committed and ended.
        assert write_lock_is_held(settings) is in_transaction, marker
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        # It was killed where it waited: nothing after the marker, no acknowledgement.
        assert lines.until_eof(5.0) == [], marker
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL, err.read_text()[-2000:]
    assert all("error" not in r for r in run.reports), run.reports
    if settings.database_url is None:
        # The kernel dropped the dead process's file locks: the lock is free again.
        # (A PostgreSQL server ends the dead client's transaction when it notices
        # the closed connection; the next writer simply waits for that.)
        assert not write_lock_is_held(settings)
    return run


def run_to_end(settings: Settings, tmp_path: Path, start: int, batches: int) -> Run:
    proc, err = start_worker(settings, tmp_path, start, batches)
    lines = Lines(proc)
    try:
        reports = [json.loads(line) for line in lines.until_eof(LINE_TIMEOUT)]
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
    assert proc.returncode == 0, err.read_text()[-2000:]
    assert len(reports) == batches
    return Run(start, BATCH, reports)


def expected_envelope(number: int) -> bytes:
    return envelope_bytes(issue_statement(number, signed_at=SIGNED_AT), LAB)


def logged_envelope(data: bytes) -> bytes:
    head = b'{"envelope":'
    assert data.startswith(head)
    return data[len(head) : data.rindex(b',"logged_at":"')]


def check_after(settings: Settings, run: Run, size_before: int, seed: object) -> int:
    """Check the log after ``run``; returns its size."""
    ledger = Ledger.open(settings)
    try:
        size = ledger.storage.tail_size()
        context = (
            f"(seed {seed}, run from {run.start}, log {size_before}->{size}, "
            f"killed at {run.marker})"
        )

        # Reports: consecutive batches from where the log was, as acknowledged.
        expected_index = size_before
        batch = run.batch
        for number, report in enumerate(run.reports):
            assert report["first"] == run.start + number * batch, context
            indices = report["indices"]
            assert indices == list(range(expected_index, expected_index + batch)), context
            assert report["checkpoint"] == expected_index + batch, context
            expected_index += batch

        # The log grew by whole batches: the reported ones, and the one committed
        # but not yet reported when the kill came after COMMIT. A batch killed
        # inside its transaction left nothing.
        grown = size - size_before
        assert grown % batch == 0, f"a partial batch survived the crash {context}"
        if run.committed_unacknowledged is None:
            assert len(run.reports) <= grown // batch <= len(run.reports) + 1, context
        else:
            assert grown // batch == len(run.reports) + run.committed_unacknowledged, context
        for offset in range(grown):
            stored = ledger.storage.entry(size_before + offset)
            assert logged_envelope(stored.data) == expected_envelope(run.start + offset), (
                f"entry {size_before + offset} {context}"
            )

        # Every entry is covered by the newest signed checkpoint.
        latest = ledger.verified_checkpoint().checkpoint
        assert latest.size == size, context
        leaves = [e.leaf_hash for e in ledger.storage.iter_entries()]
        assert latest.root == merkle.root_from_leaf_hashes(leaves), context
        prev = entry.GENESIS_PREV
        for e in ledger.storage.iter_entries():
            assert entry.parse(e.data).prev == prev, context
            prev = e.leaf_hash
        report = fsck(ledger)
        assert report.entries == size, context
        return size
    finally:
        ledger.close()


def crash_cycles(settings: Settings, tmp_path: Path, kills: int) -> None:
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    ledger = make_ledger(settings, LAB)
    size = ledger.storage.tail_size()
    ledger.close()
    for cycle, point in enumerate(kill_points(rng, kills)):
        run = run_and_kill(settings, tmp_path, (cycle + 1) * 100_000, point)
        size = check_after(settings, run, size, f"{seed}, killed at {point}")
    # A clean restart continues right after the last committed entry.
    run = run_to_end(settings, tmp_path, (kills + 1) * 100_000, batches=3)
    assert run.reports[0]["indices"][0] == size, f"seed {seed}"
    final = check_after(settings, run, size, seed)
    assert final == size + 3 * BATCH


def test_sqlite_survives_kill_9_mid_append(sqlite_settings: Settings, tmp_path: Path) -> None:
    crash_cycles(sqlite_settings, tmp_path, kills=5)


@pytest.mark.postgres
def test_postgres_survives_kill_9_mid_append(postgres_url: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", database_url=postgres_url)
    crash_cycles(settings, tmp_path, kills=3)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    try:  # an exited process nobody reaped yet counts as gone
        return stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def test_kill_9_with_verify_worker_leaves_no_process_behind(
    sqlite_settings: Settings, tmp_path: Path
) -> None:
    """Big batches have their signatures checked by a helper process. When the
    registry process is killed, that helper must not live on (holding the
    database files and the dead process's stdout open, forever)."""
    make_ledger(sqlite_settings, LAB).close()
    size = 2
    batch = 300  # above the sequencer's WORKER_MIN_BATCH
    proc, err = start_worker(
        sqlite_settings, tmp_path, 100_000, batches=0, batch=batch, verify_worker=True
    )
    run = Run(100_000, batch)
    lines = Lines(proc)
    helpers: list[int] = []
    try:
        line = lines.next(LINE_TIMEOUT)
        assert line is not None, f"worker stopped: {err.read_text()[-2000:]}"
        run.reports.append(json.loads(line))
        helpers = run.reports[0]["helpers"]
        assert helpers, "the sequencer did not start its verify worker"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and not all(_gone(pid) for pid in helpers):
            time.sleep(0.05)
        survivors = [pid for pid in helpers if not _gone(pid)]
        assert survivors == [], f"verify worker(s) {survivors} outlived the killed registry"
        run.reports += [json.loads(line) for line in lines.until_eof(5.0)]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in helpers:  # our grandchild; never leave it running
            if not _gone(pid):
                os.kill(pid, signal.SIGKILL)
        assert proc.stdout is not None
        proc.stdout.close()
    check_after(sqlite_settings, run, size, seed=0)
