"""Ingest benchmark: durable appends per second through the sequencer, against Ed25519.

What it does (see bench/README.md for figures):

1. creates a ledger in a temporary directory exactly as ``qiledger init`` does
   (:meth:`Ledger.init`: SQLite, WAL, ``synchronous=FULL``), and sets up the trust
   chain the log enforces — the log key adds an accreditation body, the body
   accredits ``--signers`` laboratories, one Ed25519 key each;
2. pre-signs ``--n`` ``certificate.issue`` envelopes (round-robin over the
   signers) before any timing;
3. times ``ledger.sequencer.submit_many(batch)`` over all of them, ``--batch``
   envelopes per call: each call parses, verifies, admits, chains, hashes,
   inserts, signs one checkpoint and commits (durable when it returns);
4. times raw PyNaCl ``VerifyKey.verify`` over the same PAE messages on one core
   and prints ingest/verify;
5. runs ``registry.fsck.fsck`` over the result (timed separately).

``--profile`` adds a run of ``--profile-n`` entries with timers wrapped around
each stage of the sequencer, to show where the time goes. ``--sweep`` measures
several batch sizes on fresh ledgers.

Not a test: it prints figures and asserts nothing about speed. It exits
non-zero only if an envelope is refused or fsck finds damage.

    .venv/bin/python bench/ingest.py                 # 100,000 entries, batch 1000
    .venv/bin/python bench/ingest.py --profile --sweep
"""

from __future__ import annotations

import argparse
import base64
import gc
import hashlib
import importlib.util
import multiprocessing
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import nacl
import nacl.signing

import registry
from registry.config import Settings
from registry.fsck import fsck
from registry.ledger import Ledger
from registry.sequencer import Accepted, Refused, Sequencer
from registry.storage.protocol import StoredDocument
from verifier import dsse, entry, jcs, merkle, statement
from verifier.entry import format_time
from verifier.keys import SigningKey

ORIGIN = "bench.qiledger.local/log"
BODY_ID = "BENCH-AB"
TARGET_RATE = 10_000
TARGET_RATIO = 0.4
REPO = Path(__file__).resolve().parent.parent


# --- machine -------------------------------------------------------------------------


def load_bench_http() -> Any:
    """bench/http.py as the module ``bench_http``: imported as ``http`` it would
    shadow the standard library (httpx and uvicorn import ``http``)."""
    path = Path(__file__).resolve().parent / "http.py"
    spec = importlib.util.spec_from_file_location("bench_http", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_http"] = module
    spec.loader.exec_module(module)
    return module


def machine_lines() -> list[str]:
    """CPU model, cores, Python, SQLite, PyNaCl and the code revision measured."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        rev = subprocess.run(
            ["git", "-C", str(REPO), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        rev = ""
    return [
        f"cpu: {model}",
        f"nproc: {os.cpu_count()} (usable by this process: {len(os.sched_getaffinity(0))})",
        f"python: {platform.python_implementation()} {platform.python_version()}"
        f" on {platform.system()} {platform.release()}",
        f"sqlite: {sqlite3.sqlite_version}; pynacl: {nacl.__version__}",
        f"code: git {rev or 'unknown'} (registry imported from {Path(registry.__file__).parent})",
        "load average (1/5/15 min) at start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()),
    ]


def cpu_ticks() -> tuple[float, float]:
    """Whole-machine (busy, total) CPU seconds so far, from /proc/stat."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0, 0.0
    idle = fields[3] + fields[4]  # idle + iowait
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(fields) - idle) / tick, sum(fields) / tick


@contextmanager
def machine_busy() -> Iterator[list[float]]:
    """Yields a list that receives the machine's busy CPU seconds during the block."""
    out: list[float] = []
    busy0, _ = cpu_ticks()
    try:
        yield out
    finally:
        out.append(cpu_ticks()[0] - busy0)


def wait_idle(limit: float, threshold: float = 0.15) -> None:
    """Wait (up to ``limit`` s) until other processes use < ``threshold`` of the CPUs.

    The machine may be shared (tests running next to the benchmark); figures
    taken under load are not comparable.
    """
    if limit <= 0:
        return
    deadline = time.monotonic() + limit
    quiet = 0
    while time.monotonic() < deadline:
        busy0, total0 = cpu_ticks()
        time.sleep(1.0)
        busy1, total1 = cpu_ticks()
        load = (busy1 - busy0) / max(total1 - total0, 1e-9)
        quiet = quiet + 1 if load < threshold else 0
        if quiet >= 3:
            return
    print(f"  (warning: the machine stayed busy for {limit:.0f} s; figures may be low)")


def print_machine() -> None:
    print("== machine")
    for line in machine_lines():
        print(f"  {line}")


# --- a ledger with a trust chain -------------------------------------------------------


def signer_key(i: int) -> SigningKey:
    return SigningKey.from_seed(hashlib.sha256(f"qiledger-bench-lab-{i}".encode()).digest())


BODY_KEY = SigningKey.from_seed(hashlib.sha256(b"qiledger-bench-body").digest())


def issuer_id(i: int) -> str:
    return f"BENCH-LAB-{i}"


def b64key(key: SigningKey) -> str:
    return base64.b64encode(key.public_key.raw).decode()


def signed_envelope(fields: dict[str, Any], key: SigningKey) -> bytes:
    return jcs.canonical_bytes(dsse.sign(statement.encode(fields), key).to_json())


def signed_statement(
    built: statement.StatementBuilder, signed_at: datetime, key: SigningKey
) -> bytes:
    return jcs.canonical_bytes(dsse.sign(built.encode(signed_at), key).to_json())


def create_ledger(data_dir: Path, signers: int, database_url: str | None = None) -> Ledger:
    """A new ledger (as ``qiledger init``) whose trust chain accredits ``signers`` labs;
    on SQLite in ``data_dir``, or in the (empty) database ``database_url`` names."""
    settings = Settings(data_dir=data_dir, database_url=database_url)
    ledger = Ledger.init(settings, origin=ORIGIN, passphrase=None)
    now = ledger.clock()
    log_key = ledger.load_log_key().key
    body = statement.BodyAdd(
        body_id=BODY_ID,
        name="Benchmark Accreditation Body",
        country="CN",
        public_key=BODY_KEY.public_key,
    )
    setup = [signed_statement(body, now, log_key)]
    for i in range(signers):
        grant = statement.AccreditationGrant(
            body_id=BODY_ID,
            issuer_id=issuer_id(i),
            issuer_name=f"Benchmark Calibration Laboratory {i}",
            issuer_kind="calibration_laboratory",
            public_keys=(signer_key(i).public_key,),
            accreditation_number=f"{BODY_ID}-L{i:04d}",
            standard="ISO/IEC 17025:2017",
            scope="Temperature, pressure and mass calibration",
            covers=("dcc",),
            valid_from=date(2020, 1, 1),
            valid_until=date(2099, 12, 31),
        )
        setup.append(signed_statement(grant, now, BODY_KEY))
    for envelope in setup:  # one at a time: each grant needs the body added first
        ledger.sequencer.submit(envelope)
    return ledger


def certificate_envelope(number: int, signers: int, signed_at: datetime) -> bytes:
    """A ``certificate.issue`` envelope by signer ``number % signers``."""
    i = number % signers
    issuer = issuer_id(i)
    built = statement.CertificateIssue(
        issuer_id=issuer,
        certificate_id=f"{issuer}/DCC-2026-{number:09d}",
        kind="dcc",
        document_sha256=hashlib.sha256(bench_document(number)).hexdigest(),
        issued=signed_at.astimezone(UTC).date(),
        valid_until=date(2031, 12, 31),
    )
    return signed_statement(built, signed_at, signer_key(i))


def bench_document(number: int) -> bytes:
    """The (small) document certificate ``number`` is about: every certificate
    entry is logged with its document, stored in the same transaction."""
    return f"bench document {number}".encode()


def documents_of(envelopes: Sequence[bytes]) -> list[StoredDocument]:
    """The document of each envelope :func:`certificate_envelope` made (untimed)."""
    documents = []
    for raw in envelopes:
        cert_id = statement.parse(dsse.parse(raw).payload)["certificate_id"]
        number = int(cert_id.rsplit("-", 1)[1])
        data = bench_document(number)
        documents.append(
            StoredDocument(hashlib.sha256(data).hexdigest(), "application/octet-stream", data)
        )
    return documents


def _sign_range(args: tuple[int, int, int, datetime]) -> list[bytes]:
    start, stop, signers, signed_at = args
    return [certificate_envelope(n, signers, signed_at) for n in range(start, stop)]


def presign(start: int, count: int, signers: int, processes: int | None = None) -> list[bytes]:
    """``count`` envelopes numbered from ``start``, signed on all cores."""
    signed_at = datetime.now(UTC)
    processes = processes or os.cpu_count() or 1
    step = 5000
    jobs = [
        (s, min(s + step, start + count), signers, signed_at)
        for s in range(start, start + count, step)
    ]
    if processes == 1 or count < 2 * step:
        return [e for job in jobs for e in _sign_range(job)]
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        return [e for chunk in pool.imap(_sign_range, jobs) for e in chunk]


def _worker_cpu_seconds(sequencer: Sequencer) -> float:
    """CPU seconds used so far by the sequencer's signature worker process, if any."""
    worker = getattr(sequencer, "_worker_process", None)
    process = getattr(worker, "_process", None)
    pid = getattr(process, "pid", None)
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class CpuUse:
    """CPU seconds of the sequencer's process and of its verify worker during a run."""

    sequencer: float = 0.0
    worker: float = 0.0
    machine: float = 0.0
    """All busy CPU seconds on the machine, ours included."""

    def foreign(self) -> float:
        """CPU seconds other processes used meanwhile (contention; ~0 on a quiet machine)."""
        return max(self.machine - self.sequencer - self.worker, 0.0)


def submit_all(
    sequencer: Sequencer, envelopes: Sequence[bytes], batch: int, cpu: CpuUse | None = None
) -> tuple[float, list[float]]:
    """Submit in batches; returns wall seconds and each batch's seconds.

    Exits if any envelope is refused or was already logged (that would not be an
    append, and the figures would be wrong). Each certificate goes with its
    document, as the registry requires (read before the clock starts).
    """
    documents = documents_of(envelopes)
    batch_times: list[float] = []
    cpu0, worker0 = time.process_time(), _worker_cpu_seconds(sequencer)
    busy0, _ = cpu_ticks()
    started = time.perf_counter()
    for offset in range(0, len(envelopes), batch):
        t0 = time.perf_counter()
        outcomes = sequencer.submit_many(
            envelopes[offset : offset + batch],
            dict(enumerate(documents[offset : offset + batch])),
        )
        batch_times.append(time.perf_counter() - t0)
        for outcome in outcomes:
            if isinstance(outcome, Refused) or (
                isinstance(outcome, Accepted) and outcome.duplicate
            ):
                sys.exit(f"bench: envelope not appended at offset {offset}: {outcome}")
    wall = time.perf_counter() - started
    if cpu is not None:
        cpu.sequencer += time.process_time() - cpu0
        cpu.worker += _worker_cpu_seconds(sequencer) - worker0
        cpu.machine += cpu_ticks()[0] - busy0
    return wall, batch_times


# --- raw Ed25519 ----------------------------------------------------------------------


@dataclass(frozen=True)
class RawSignature:
    key: nacl.signing.VerifyKey
    message: bytes
    signature: bytes


def raw_signatures(envelopes: Sequence[bytes], signers: int) -> list[RawSignature]:
    """PyNaCl verify keys, PAE messages and signatures of the envelopes (untimed)."""
    keys = {
        (pub := signer_key(i).public_key).key_id: nacl.signing.VerifyKey(pub.raw)
        for i in range(signers)
    }
    out = []
    for raw in envelopes:
        env = dsse.parse(raw)
        (sig,) = env.signatures
        out.append(RawSignature(keys[sig.keyid], dsse.pae(env.payload_type, env.payload), sig.sig))
    return out


def verify_rate(signatures: Sequence[RawSignature]) -> float:
    """Signatures per second on this thread (one core): PyNaCl, nothing else."""
    started = time.perf_counter()
    for s in signatures:
        s.key.verify(s.message, s.signature)
    return len(signatures) / (time.perf_counter() - started)


# --- breakdown ------------------------------------------------------------------------


class StageTimers:
    """Wall time spent inside named functions, by wrapping them in place.

    Only for the ``--profile`` run (it patches module and instance attributes of
    this process; nothing on disk changes). Stages are chosen not to nest, so
    their times add up. Pauses of Python's cyclic garbage collector are taken
    out of whichever stage they fell in and shown on their own; "other" is the
    rest of the wall time, less the timers' own (calibrated) overhead.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.gc = [0.0, 0.0, 0.0]  # GC seconds in all, start of the current pause, full GCs
        self._undo: list[Callable[[], None]] = []
        gc_state = self.gc

        def on_gc(phase: str, info: dict[str, Any]) -> None:
            if phase == "start":
                gc_state[1] = time.perf_counter()
            else:
                gc_state[0] += time.perf_counter() - gc_state[1]
                gc_state[2] += info["generation"] == 2

        gc.callbacks.append(on_gc)
        self._undo.append(lambda: gc.callbacks.remove(on_gc))

    def timed(self, fn: Callable[..., Any], stage: str) -> Callable[..., Any]:
        seconds, calls, gc_state = self.seconds, self.calls, self.gc
        seconds.setdefault(stage, 0.0)
        calls.setdefault(stage, 0)
        clock = time.perf_counter

        def timed(*args: Any, **kwargs: Any) -> Any:
            g0 = gc_state[0]
            t0 = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                seconds[stage] += clock() - t0 - (gc_state[0] - g0)
                calls[stage] += 1

        return timed

    def wrap(self, owner: Any, name: str, stage: str) -> None:
        """Replace ``owner.name`` (a module function, an instance's method or a
        class's function) by a timed version; :meth:`undo` puts it back."""
        # On a class, take the plain function so that method binding still works.
        original = vars(owner)[name] if isinstance(owner, type) else getattr(owner, name)
        own = isinstance(owner, type) or name in vars(owner)
        setattr(owner, name, self.timed(original, stage))
        if own:
            self._undo.append(lambda: setattr(owner, name, original))
        else:  # a bound method looked up on the class: drop the instance attribute
            self._undo.append(lambda: delattr(owner, name))

    def wrap_commit(self, ledger: Ledger) -> None:
        """Time the end of each write transaction: COMMIT, i.e. the WAL fsync."""
        db = ledger.db
        original = db.write

        def commit(ctx: Any) -> None:
            ctx.__exit__(None, None, None)

        timed_commit = self.timed(commit, "DB commit (WAL fsync)")

        @contextmanager
        def write() -> Iterator[Any]:
            ctx = original()
            conn = ctx.__enter__()
            try:
                yield conn
            except BaseException:
                if not ctx.__exit__(*sys.exc_info()):
                    raise
            else:
                timed_commit(ctx)

        db.write = write  # type: ignore[method-assign]
        self._undo.append(lambda: delattr(db, "write"))

    def undo(self) -> None:
        for step in reversed(self._undo):
            step()
        self._undo.clear()


def timer_overhead_per_call() -> float:
    """Seconds a StageTimers wrapper adds to one call (measured on a no-op)."""

    def noop() -> None:
        return None

    probe = StageTimers()
    wrapped = probe.timed(noop, "probe")
    best = float("inf")
    rounds = 100_000
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(rounds):
            noop()
        bare = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(rounds):
            wrapped()
        best = min(best, (time.perf_counter() - t0 - bare) / rounds)
    probe.undo()
    return max(best, 0.0)


def install_timers(ledger: Ledger) -> StageTimers:
    seq = ledger.sequencer
    t = StageTimers()
    # before the lock (sequencer._verify_all)
    t.wrap(dsse, "parse", "parse envelope JSON + base64 (dsse.parse)")
    t.wrap(jcs, "parse_canonical", "statement: parse + JCS canonical check")
    t.wrap(statement, "validate", "statement: field validation")
    t.wrap(ledger.policy, "candidate_keys", "policy key lookup")
    t.wrap(dsse, "pending_signatures", "PAE + pending signatures")
    t.wrap(seq, "_send_to_worker", "send signatures to worker (encode + pipe)")
    t.wrap(seq, "_verdicts", "wait for / read worker verdicts")
    t.wrap(dsse.PendingSignature, "check", "Ed25519 verify on the sequencer thread")
    t.wrap(dsse.UnverifiedEnvelope, "canonical_bytes", "JCS canonical envelope (spliced)")
    # under the lock (sequencer._sequence_locked)
    t.wrap(ledger.storage, "tail", "read tail + dedup lookup + right edge")
    t.wrap(ledger.storage, "logged_statements", "read tail + dedup lookup + right edge")
    t.wrap(ledger.storage, "read_nodes", "read tail + dedup lookup + right edge")
    t.wrap(ledger.policy, "begin_batch", "read tail + dedup lookup + right edge")
    t.wrap(ledger.policy, "admit", "trust policy admit")
    t.wrap(ledger.policy, "record", "trust policy record")
    t.wrap(ledger.policy, "end_batch", "certificate tables: insert rows and events")
    t.wrap(entry, "encode_spliced", "leaf data encoding (encode_spliced)")
    t.wrap(merkle, "leaf_hash", "Merkle hashing (leaf + nodes + root)")
    t.wrap(merkle, "node_hash", "Merkle hashing (leaf + nodes + root)")
    t.wrap(seq.signer, "sign", "checkpoint signing")
    t.wrap(ledger.storage, "append", "DB insert (executemany entries, nodes, checkpoint)")
    t.wrap_commit(ledger)
    return t


def print_breakdown(timers: StageTimers, wall: float, n: int) -> None:
    def row(label: str, seconds: float) -> None:
        print(f"  {label:60} {seconds:7.3f} {seconds / n * 1e6:9.1f} {seconds / wall:7.1%}")

    print(f"  {'stage':60} {'s':>7} {'us/entry':>9} {'% wall':>7}")
    for stage, seconds in sorted(timers.seconds.items(), key=lambda kv: -kv[1]):
        row(stage, seconds)
    gc_seconds, full = timers.gc[0], int(timers.gc[2])
    row(f"Python cyclic GC pauses ({full} full collections)", gc_seconds)
    overhead = timer_overhead_per_call() * sum(timers.calls.values())
    row("timer overhead (calibrated; not part of ingest)", overhead)
    other = wall - sum(timers.seconds.values()) - gc_seconds - overhead
    row("other (sequencer loops, envelope SHA-256, records)", other)
    row("wall (sequencer thread)", wall)


def isolated_costs(envelopes: Sequence[bytes], ledger: Ledger) -> list[tuple[str, float]]:
    """Single-thread cost per entry of each pure step, timed alone (no DB)."""
    keys = ledger.policy.candidate_keys({signer_key(i).public_key.key_id for i in range(64)})
    out: list[tuple[str, float]] = []

    def clock(label: str, fn: Callable[[], object]) -> None:
        t0 = time.perf_counter()
        fn()
        out.append((label, (time.perf_counter() - t0) / len(envelopes) * 1e6))

    parsed: list[dsse.UnverifiedEnvelope] = []
    clock("dsse.parse", lambda: parsed.extend(dsse.parse(e) for e in envelopes))
    clock("statement.parse", lambda: [statement.parse(p.payload) for p in parsed])
    pending: list[dsse.PendingSignature] = []
    clock(
        "dsse.pending_signatures (PAE)",
        lambda: pending.extend(s for p in parsed for s in dsse.pending_signatures(p, keys)),
    )
    clock("Ed25519 verify (PublicKey.verify)", lambda: [s.check() for s in pending])
    canon: list[bytes] = []
    clock("canonical_bytes()", lambda: canon.extend(p.canonical_bytes() for p in parsed))
    clock("envelope SHA-256", lambda: [hashlib.sha256(c).digest() for c in canon])
    prev = bytes(32)
    logged_at = format_time(datetime.now(UTC))
    datas: list[bytes] = []
    clock(
        "entry.encode_spliced",
        lambda: datas.extend(entry.encode_spliced(prev, logged_at, c) for c in canon),
    )
    clock(
        "leaf hash + 1 node hash",
        lambda: [merkle.node_hash(merkle.leaf_hash(d), prev) for d in datas],
    )
    return out


# --- runs -----------------------------------------------------------------------------


@contextmanager
def scratch_dir(parent: str | None, keep: bool, prefix: str = "qiledger-ingest-") -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield path
    finally:
        if keep:
            print(f"  (kept {path})")
        else:
            shutil.rmtree(path, ignore_errors=True)


def copy_ledger(source: Path, data_dir: Path) -> Ledger:
    """A copy of an existing bench ledger (e.g. bench/proofs.py's), caught up and ready.

    The sequencer replays the whole log into its trust state before its first
    batch; that start-up cost is timed here, apart from the appends.
    """
    t0 = time.perf_counter()
    shutil.copytree(source, data_dir, dirs_exist_ok=True)
    for path in data_dir.iterdir():  # flush the copy now, not in the first timed COMMIT
        with path.open("rb+") as f:
            os.fsync(f.fileno())
    ledger = Ledger.open(Settings(data_dir=data_dir))
    size = ledger.storage.tail_size()
    print(f"  copied {size:,}-entry ledger from {source} in {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    ledger.policy.sync()
    print(
        f"  start-up catch-up (trust state replay of {size:,} entries, as the first "
        f"submit in a new process does): {time.perf_counter() - t0:.1f} s"
    )
    return ledger


def rate_summary(n: int, wall: float, batch_times: list[float], batch: int) -> None:
    rate = n / wall
    half = len(batch_times) // 2
    print(f"  entries: {n:,} in {len(batch_times):,} batches of {batch:,}")
    print(f"  wall: {wall:.2f} s  ->  {rate:,.0f} entries/s ({wall / n * 1e6:.1f} us/entry)")
    if len(batch_times) >= 4:
        first = sum(batch_times[:half])
        second = sum(batch_times[half:])
        per = sorted(batch_times)
        print(
            f"  first half: {half * batch / first:,.0f} entries/s; second half: "
            f"{(len(batch_times) - half) * batch / second:,.0f} entries/s"
        )
        print(
            f"  batch latency: p50 {statistics.median(per) * 1e3:.1f} ms, "
            f"p99 {per[min(len(per) - 1, int(len(per) * 0.99))] * 1e3:.1f} ms, "
            f"max {per[-1] * 1e3:.1f} ms"
        )


def run_main(args: argparse.Namespace) -> int:
    print(f"\n== ingest: {args.n:,} envelopes, batch {args.batch:,}, {args.signers} signer keys")
    with scratch_dir(args.tmp, args.keep) as data_dir:
        if args.onto:
            ledger = copy_ledger(Path(args.onto), data_dir)
        else:
            ledger = create_ledger(data_dir, args.signers)
        base = ledger.storage.tail_size()
        t0 = time.perf_counter()
        envelopes = presign(base, args.n, args.signers)
        print(
            f"  pre-signed in {time.perf_counter() - t0:.1f} s (untimed); "
            f"envelope size {len(envelopes[0])} bytes; ledger in {data_dir}"
        )
        sequencer = ledger.sequencer  # loads the log key, as the CLI does, before timing
        wait_idle(args.wait_idle)
        cpu = CpuUse()
        wall, batch_times = submit_all(sequencer, envelopes, args.batch, cpu)
        rate = args.n / wall
        rate_summary(args.n, wall, batch_times, args.batch)
        print(
            f"  CPU: sequencer process {cpu.sequencer:.2f} s "
            f"({cpu.sequencer / args.n * 1e6:.1f} us/entry), verify worker {cpu.worker:.2f} s "
            f"({cpu.worker / args.n * 1e6:.1f} us/entry); sequencer busy "
            f"{cpu.sequencer / wall:.0%} of wall"
        )
        print(
            f"  other processes meanwhile: {cpu.foreign():.2f} CPU-s "
            f"({cpu.foreign() / wall:.0%} of one core; ~0 on a quiet machine)"
        )
        db_file = data_dir / "ledger.db"
        wal = data_dir / "ledger.db-wal"
        size = db_file.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
        print(f"  database: {size / 1e6:.0f} MB ({size / (args.n + base):.0f} bytes/entry)")

        print("\n== raw Ed25519 verify (PyNaCl VerifyKey.verify, same PAE messages, one core)")
        sample = raw_signatures(envelopes[: args.verify_n], args.signers)
        wait_idle(args.wait_idle)
        vrate = max(verify_rate(sample) for _ in range(args.verify_repeat))
        print(f"  {len(sample):,} signatures: {vrate:,.0f} verifies/s ({1e6 / vrate:.1f} us each)")
        ratio = rate / vrate
        print("\n== result")
        print(
            f"  ingest {rate:,.0f} entries/s   target >= {TARGET_RATE:,}: "
            f"{'MET' if rate >= TARGET_RATE else 'MISSED'}"
        )
        print(
            f"  ingest/verify ratio {ratio:.2f}   target >= {TARGET_RATIO}: "
            f"{'MET' if ratio >= TARGET_RATIO else 'MISSED'}"
        )

        if not args.no_fsck:
            print("\n== fsck (registry.fsck.fsck: re-reads, re-hashes, re-verifies everything)")
            wait_idle(args.wait_idle)
            t0 = time.perf_counter()
            report = fsck(ledger)
            took = time.perf_counter() - t0
            print(
                f"  OK: {report.entries:,} entries, {report.nodes:,} nodes, "
                f"{report.checkpoints:,} checkpoints in {took:.1f} s "
                f"({report.entries / took:,.0f} entries/s)"
            )
        ledger.close()
    return 0


def run_profile(args: argparse.Namespace) -> None:
    n = args.profile_n
    print(f"\n== breakdown: {n:,} envelopes, batch {args.batch:,}, stage timers (sequencer thread)")
    with scratch_dir(args.tmp, False) as data_dir:
        if args.onto:
            ledger = copy_ledger(Path(args.onto), data_dir)
        else:
            ledger = create_ledger(data_dir, args.signers)
        envelopes = presign(1_000_000_000, n, args.signers)
        sequencer = ledger.sequencer
        timers = install_timers(ledger)
        wait_idle(args.wait_idle)
        try:
            wall, _ = submit_all(sequencer, envelopes, args.batch)
        finally:
            timers.undo()
        print(f"  {n / wall:,.0f} entries/s with timers (timer overhead included)")
        print_breakdown(timers, wall, n)
        print("\n  isolated single-thread cost of the pure steps (us/entry, no DB, no worker):")
        for label, us in isolated_costs(envelopes[:20_000], ledger):
            print(f"    {label:40} {us:7.1f}")
        ledger.close()


def run_sweep(args: argparse.Namespace) -> None:
    sizes = [int(s) for s in args.sweep_sizes.split(",")]
    n = args.sweep_n
    print(f"\n== batch-size sweep: {n:,} envelopes per size, fresh ledger each")
    envelopes = presign(2_000_000_000, n, args.signers)
    for size in sizes:
        with scratch_dir(args.tmp, False) as data_dir:
            ledger = create_ledger(data_dir, args.signers)
            sequencer = ledger.sequencer
            wait_idle(args.wait_idle)
            cpu = CpuUse()
            wall, times = submit_all(sequencer, envelopes, size, cpu)
            per = sorted(times)
            print(
                f"  batch {size:6,}: {n / wall:8,.0f} entries/s   batch latency p50 "
                f"{statistics.median(per) * 1e3:7.1f} ms   (other processes: "
                f"{cpu.foreign() / wall:.0%} of a core)"
            )
            ledger.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="QI Ledger ingest benchmark (durable SQLite appends vs raw Ed25519 verify).",
    )
    parser.add_argument("--n", type=int, default=100_000, help="envelopes to append")
    parser.add_argument("--batch", type=int, default=1000, help="envelopes per submit_many")
    parser.add_argument("--signers", type=int, default=8, help="accredited signer keys")
    parser.add_argument(
        "--verify-n", type=int, default=50_000, help="signatures timed for the raw verify rate"
    )
    parser.add_argument("--verify-repeat", type=int, default=3, help="best of this many runs")
    parser.add_argument("--no-fsck", action="store_true", help="skip fsck after the run")
    parser.add_argument("--profile", action="store_true", help="also print a stage breakdown")
    parser.add_argument("--profile-n", type=int, default=20_000, help="entries for --profile")
    parser.add_argument("--sweep", action="store_true", help="also measure several batch sizes")
    parser.add_argument("--sweep-sizes", default="100,250,500,1000,2000,5000,10000")
    parser.add_argument("--sweep-n", type=int, default=50_000, help="entries per sweep size")
    parser.add_argument("--only", choices=["main", "profile", "sweep"], help="run only this part")
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=120,
        help="before each timed part, wait up to this many seconds for other processes "
        "to go quiet (0: don't wait)",
    )
    parser.add_argument(
        "--onto",
        metavar="DATA_DIR",
        help="append onto a copy of this bench ledger (e.g. /tmp/qiledger-bench/ledger-1000000 "
        "from bench/proofs.py, built with the default --signers) instead of a new one",
    )
    parser.add_argument("--tmp", help="parent of the temporary data dirs (default: system temp)")
    parser.add_argument("--keep", action="store_true", help="keep the main run's data dir")
    args = parser.parse_args(argv)
    print_machine()
    if args.only in (None, "main"):
        run_main(args)
    if args.profile or args.only == "profile":
        run_profile(args)
    if args.sweep or args.only == "sweep":
        run_sweep(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
