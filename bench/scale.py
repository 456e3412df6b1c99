"""Scale benchmark: one log grown to national size, measured at each size on the way.

Targets (issue 13; 2 cores): a ``qiledger serve`` worker's resident memory after
start-up flat in the log size (within 50 MB of the figure at the first size,
1,000,000 by default); its first answered status read <= 2 s after the process
starts; status reads and digest look-ups p99 <= 20 ms arriving at 3,000/s (open
loop), next to ``GET /healthz`` at the same rate in the same run; the listing
page p99; ingest >= 0.4 x raw Ed25519 verifies/s on one core.

What it does (see bench/README.md):

1. creates one ledger under ``--workdir`` (SQLite as ``qiledger init`` does, or
   an empty PostgreSQL database with ``--database-url``) with the trust chain of
   ``bench/ingest.py`` (its ``create_ledger``: a body accrediting 8 laboratories);
2. grows it through the real sequencer, ``ledger.sequencer.submit_many`` in
   batches of ``--build-batch`` (``bench/ingest.py``'s ``submit_all``; each
   certificate with its small document, in the same transaction), to each size of
   ``--sizes`` in turn. The ``certificate.issue`` envelopes are pre-signed
   (untimed, ``bench/ingest.py``'s ``presign``) into chunk files of 100,000 under
   ``--workdir/presigned`` once and read back a chunk at a time, so memory stays
   bounded; ``--presign-only`` just fills that cache. The ledger and the figures
   measured so far stay in ``--workdir``: a re-run resumes where it stopped;
3. at each size, starts ``python -m registry serve --workers 1`` (rate limit off;
   ``bench/http.py``'s server helpers) and measures, with ``bench/http.py``'s raw
   asyncio client and open-loop load generator (imported, not copied):

   * the time from starting the process to the first ``200`` of
     ``GET /api/v1/certificates/{id}`` (polled every 10 ms; interpreter start,
     imports, opening the ledger and any replay all count), and the worker's
     resident memory (VmRSS from ``/proc/<pid>/status``) then;
   * ``GET /healthz``, the status read ``GET /api/v1/certificates/{id}`` and the
     digest look-up ``GET /api/v1/certificates?digest=sha256:...``, each arriving at
     ``--rate``/s for ``--duration`` s, ids and digests drawn at random over the
     whole log (latency from the scheduled arrival: queueing counts);
   * the listing ``GET /api/v1/issuers/{issuer}/certificates?limit=100``: the first
     pages of every issuer, and pages deep in one issuer's list (reached by
     following its ``next`` cursor, untimed), each arriving at ``--list-rate``/s
     ("n/a" while the route answers 404);
   * the resident memory again after that load;

4. stops the server and appends ``--ingest`` more pre-signed envelopes timed, in
   batches of ``--batch``, against raw PyNaCl verifies/s on one core of the same
   envelopes (``bench/ingest.py``'s ``raw_signatures`` / ``verify_rate``): the
   log then holds ``size + ingest`` entries and grows on from there;
5. prints a markdown table of every size measured so far and plots memory and
   start-up time against log size (matplotlib, PNG; every backend measured in
   ``--workdir`` on one plot).

The client runs on the same 2 cores as the server; each run prints the CPU of
both. Not a test: it prints figures beside their targets and asserts nothing
about speed. It exits non-zero only if an append is refused or the server does not
answer.

    .venv/bin/python bench/scale.py --sizes 20000,50000 --workdir /tmp/scale-try
    nohup .venv/bin/python bench/scale.py > /tmp/scale-sqlite.log 2>&1 &
    .venv/bin/python bench/scale.py --sizes 1000000,3000000 \\
        --database-url postgresql+psycopg://postgres@127.0.0.1:5432/scale
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
# bench/http.py must not shadow the standard library's http: bench/ goes last.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH] + [str(BENCH)]
sys.path.insert(0, str(REPO))

from ingest import load_bench_http  # noqa: E402

bench_http = load_bench_http()

from ingest import (  # noqa: E402
    CpuUse,
    bench_document,
    create_ledger,
    issuer_id,
    presign,
    print_machine,
    raw_signatures,
    submit_all,
    verify_rate,
    wait_idle,
)

from registry.config import Settings  # noqa: E402
from registry.ledger import Ledger  # noqa: E402

SIGNERS = 8
SETUP_ENTRIES = 1 + SIGNERS
"""The body and the grants ``create_ledger`` logs; certificate numbers start after them."""
CHUNK = 100_000
"""Pre-signed envelopes per cache file."""
TARGET_MEMORY_DRIFT_MB = 50.0
TARGET_FIRST_READ_S = 2.0
TARGET_RATE = 3000
TARGET_P99_MS = 20.0
TARGET_RATIO = 0.4
LIST_LIMIT = 100


def met(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


def certificate_id(number: int) -> str:
    """The id ``bench/ingest.py``'s ``certificate_envelope`` gives certificate ``number``."""
    return f"{issuer_id(number % SIGNERS)}/DCC-2026-{number:09d}"


def document_digest(number: int) -> str:
    return "sha256:" + hashlib.sha256(bench_document(number)).hexdigest()


# --- pre-signed envelopes, cached in chunk files ---------------------------------------


class PresignedCache:
    """Certificate envelopes numbered from 0, ``CHUNK`` per file (one canonical JSON
    envelope a line), signed once on all cores and reused by every run and backend."""

    def __init__(self, directory: Path, processes: int | None) -> None:
        self.directory = directory
        self.processes = processes
        directory.mkdir(parents=True, exist_ok=True)

    def _path(self, first: int) -> Path:
        return self.directory / f"signers{SIGNERS}-{first:010d}.jsonl"

    def _chunk(self, first: int) -> list[bytes]:
        path = self._path(first)
        if not path.exists():
            t0 = time.perf_counter()
            envelopes = presign(first, CHUNK, SIGNERS, self.processes)
            partial = path.with_suffix(".partial")
            partial.write_bytes(b"\n".join(envelopes))
            partial.replace(path)  # a chunk is there whole or not at all
            print(
                f"  pre-signed {first:,} .. {first + CHUNK - 1:,} in "
                f"{time.perf_counter() - t0:.1f} s (untimed) -> {path}",
                flush=True,
            )
            return envelopes
        return path.read_bytes().split(b"\n")

    def envelopes(self, start: int, count: int) -> list[bytes]:
        """Envelopes ``start .. start + count - 1``."""
        out: list[bytes] = []
        first = start - start % CHUNK
        while len(out) < count:
            chunk = self._chunk(first)
            skip = start - first if not out else 0
            out += chunk[skip : skip + count - len(out)]
            first += CHUNK
        return out

    def fill(self, upto: int) -> None:
        """Sign every chunk holding a number below ``upto`` that is not cached yet."""
        for first in range(0, upto, CHUNK):
            if not self._path(first).exists():
                self._chunk(first)


# --- the ledger and its growth ----------------------------------------------------------


def open_or_create(data_dir: Path, database_url: str | None) -> Ledger:
    settings = Settings(data_dir=data_dir, database_url=database_url)
    if settings.log_key_file.exists():
        ledger = Ledger.open(settings)
        print(f"  cached ledger: {ledger.storage.tail_size():,} entries ({ledger.database_url})")
        return ledger
    ledger = create_ledger(data_dir, SIGNERS, database_url)
    print(f"  new ledger: {ledger.storage.tail_size()} setup entries ({ledger.database_url})")
    return ledger


def grow(ledger: Ledger, cache: PresignedCache, target: int, batch: int) -> None:
    """Append cached envelopes through the sequencer until the log holds ``target``."""
    size = ledger.storage.tail_size()
    if size >= target:
        return
    print(f"\n== growing the log {size:,} -> {target:,} (submit_many, batches of {batch:,})")
    sequencer = ledger.sequencer
    started, appending, begun = time.perf_counter(), 0.0, size
    while size < target:
        count = min(CHUNK - (size - SETUP_ENTRIES) % CHUNK, target - size)
        envelopes = cache.envelopes(size - SETUP_ENTRIES, count)
        wall, _ = submit_all(sequencer, envelopes, batch)
        appending += wall
        size += count
        done = size - begun
        left = (target - size) * (time.perf_counter() - started) / done
        print(
            f"  {size:>11,} entries: {count / wall:6,.0f} entries/s in this chunk; "
            f"{time.perf_counter() - started:5.0f} s so far, ~{left:4.0f} s to go",
            flush=True,
        )
    print(
        f"  grown by {size - begun:,} in {time.perf_counter() - started:.0f} s "
        f"({(size - begun) / appending:,.0f} entries/s appending)"
    )


# --- one server, measured ---------------------------------------------------------------


def resident_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MB, from /proc/<pid>/status."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


@dataclass
class Figures:
    """What one size measured (saved to the results file, one object per size)."""

    size: int
    first_read_s: float = 0.0
    rss_start_mb: float = 0.0
    rss_after_mb: float = 0.0
    peak_mb: float = 0.0
    p99_ms: dict[str, float | None] = field(default_factory=dict)
    p50_ms: dict[str, float | None] = field(default_factory=dict)
    answered: dict[str, float] = field(default_factory=dict)
    """Requests/s answered in each run (the offered rate when the server kept up)."""
    not_ok: dict[str, int] = field(default_factory=dict)
    ingest_rate: float = 0.0
    verify_rate: float = 0.0
    load: str = ""
    when: str = ""


async def first_status_read(server: Any, started: float, cid: str, timeout: float) -> float:
    """Seconds from ``started`` to the first 200 of the status read of ``cid``."""
    h = bench_http
    req = h.make_request("GET", f"/api/v1/certificates/{quote(cid, safe='/')}")
    deadline = started + timeout
    first_other: tuple[int, bytes] | None = None
    while time.perf_counter() < deadline:
        if server.process.poll() is not None:
            sys.exit(f"bench: the server exited; see {server.log}")
        client = h.RawClient(server.port, 1)
        try:
            status, body = await client.send(req)
        except (OSError, asyncio.IncompleteReadError):
            await asyncio.sleep(0.01)
            continue
        finally:
            await client.aclose()
        if status == 200:
            if first_other is not None:
                print(f"  (answered {first_other[0]} before: {first_other[1][:200]!r})")
            return time.perf_counter() - started
        first_other = first_other or (status, body)
        await asyncio.sleep(0.01)
    server.stop()
    sys.exit(f"bench: no 200 for {cid} within {timeout:.0f} s ({first_other}); see {server.log}")


async def deep_cursors(port: int, issuer: str, depth: int, keep: int) -> list[str]:
    """``next`` cursors of the pages around ``depth`` certificates into ``issuer``'s list,
    reached by following the cursor page by page (untimed)."""
    h = bench_http
    client = h.RawClient(port, 1)
    cursors: list[str] = []
    cursor: str | None = None
    seen = 0
    base = f"/api/v1/issuers/{issuer}/certificates?limit={LIST_LIMIT}"
    t0 = time.perf_counter()
    while seen < depth + keep * LIST_LIMIT:
        path = base + (f"&cursor={quote(cursor)}" if cursor else "")
        status, body = await client.send(h.make_request("GET", path))
        if status != 200:
            print(f"  (listing answered {status} at {seen:,}: {body[:200]!r})")
            break
        page = json.loads(body)
        cursor = page.get("next")
        seen += len(page.get("certificates", []))
        if not cursor:
            break
        if seen >= depth:
            cursors.append(cursor)
    await client.aclose()
    print(
        f"  followed {issuer}'s list to {seen:,} certificates in "
        f"{time.perf_counter() - t0:.1f} s: {len(cursors)} cursors deep in it (untimed)"
    )
    return cursors


async def measure_server(
    data_dir: Path, database_url: str | None, figures: Figures, args: argparse.Namespace
) -> None:
    h = bench_http
    size = figures.size
    rng = random.Random(size)
    numbers = [rng.randrange(size - SETUP_ENTRIES) for _ in range(int(args.rate * args.duration))]
    port = h.free_port()
    argv = h.serve_argv(data_dir, database_url, port, 1)
    wait_idle(args.wait_idle)
    started = time.perf_counter()
    server = h.Server(argv, h.SERVER_ENV, port, data_dir / f"server-{size}.log")
    try:
        figures.first_read_s = await first_status_read(
            server, started, certificate_id(numbers[0]), args.start_timeout
        )
        pid = server.process.pid  # --workers 1: uvicorn serves in this very process
        server.pids = h.process_tree(pid)
        figures.rss_start_mb, _ = resident_mb(pid)
        print(
            f"\n== qiledger serve --workers 1 on {size:,} entries (pid {pid}, port {port}): "
            f"first status read answered {figures.first_read_s:.2f} s after the process "
            f"started; resident {figures.rss_start_mb:,.0f} MB"
        )
        routes: dict[str, list[Any]] = {
            "healthz": [h.make_request("GET", "/healthz")],
            "status": [
                h.make_request("GET", f"/api/v1/certificates/{quote(certificate_id(n), safe='/')}")
                for n in numbers
            ],
            "digest": [
                h.make_request("GET", f"/api/v1/certificates?digest={document_digest(n)}")
                for n in numbers
            ],
        }
        for name, reqs in routes.items():
            await open_run(server, name, reqs, args.rate, figures, args)
        await measure_listing(server, figures, args)
        figures.rss_after_mb, figures.peak_mb = resident_mb(pid)
        print(
            f"  resident after the load: {figures.rss_after_mb:,.0f} MB "
            f"(peak {figures.peak_mb:,.0f} MB)"
        )
    finally:
        server.stop()


async def open_run(
    server: Any,
    name: str,
    reqs: list[Any],
    rate: float,
    figures: Figures,
    args: argparse.Namespace,
) -> None:
    h = bench_http
    wait_idle(args.wait_idle)
    client = h.RawClient(server.port, args.max_connections)
    await h.warm(client, reqs[-1], 4, 0.3)
    run = await h.open_loop(
        client, h.cycle(reqs, seed=len(reqs)), h.Run(name), server, rate, args.duration
    )
    await client.aclose()
    print(f"\n  -- {name}: {reqs[0].method} {urlsplit(reqs[0].path).path}")
    h.report(run)
    ms = [x * 1e3 for x in run.latencies]
    figures.p99_ms[name] = h.pct(ms, 0.99) if ms else None
    figures.p50_ms[name] = statistics.median(ms) if ms else None
    figures.answered[name] = run.count / run.wall if run.wall else 0.0
    figures.not_ok[name] = run.count - run.statuses["200"]


async def measure_listing(server: Any, figures: Figures, args: argparse.Namespace) -> None:
    h = bench_http
    firsts = [
        h.make_request("GET", f"/api/v1/issuers/{issuer_id(i)}/certificates?limit={LIST_LIMIT}")
        for i in range(SIGNERS)
    ]
    probe = h.RawClient(server.port, 1)
    status, body = await probe.send(firsts[0])
    await probe.aclose()
    if status != 200:
        print(f"\n  -- listing: GET {firsts[0].path} answered {status}: n/a ({body[:120]!r})")
        figures.p99_ms["list first"] = figures.p99_ms["list deep"] = None
        return
    await open_run(server, "list first", firsts, args.list_rate, figures, args)
    per_issuer = (figures.size - SETUP_ENTRIES) // SIGNERS
    cursors = await deep_cursors(server.port, issuer_id(0), per_issuer // 2, 50)
    if not cursors:
        figures.p99_ms["list deep"] = None
        return
    deep = [
        h.make_request(
            "GET",
            f"/api/v1/issuers/{issuer_id(0)}/certificates?limit={LIST_LIMIT}&cursor={quote(c)}",
        )
        for c in cursors
    ]
    await open_run(server, "list deep", deep, args.list_rate, figures, args)


# --- ingest at this size ----------------------------------------------------------------


def measure_ingest(
    ledger: Ledger, cache: PresignedCache, figures: Figures, args: argparse.Namespace
) -> None:
    size = ledger.storage.tail_size()
    envelopes = cache.envelopes(size - SETUP_ENTRIES, args.ingest)
    print(
        f"\n== ingest on {size:,} entries: {args.ingest:,} pre-signed envelopes, "
        f"batches of {args.batch:,} (submit_many)"
    )
    sequencer = ledger.sequencer  # the log key loaded before the clock starts
    wait_idle(args.wait_idle)
    cpu = CpuUse()
    wall, batch_times = submit_all(sequencer, envelopes, args.batch, cpu)
    figures.ingest_rate = len(envelopes) / wall
    per = sorted(batch_times)
    print(
        f"  {figures.ingest_rate:,.0f} entries/s (batch p50 {statistics.median(per) * 1e3:.0f} "
        f"ms, max {per[-1] * 1e3:.0f} ms); other processes meanwhile "
        f"{cpu.foreign() / wall:.0%} of a core"
    )
    sample = raw_signatures(envelopes[: args.verify_n], SIGNERS)
    wait_idle(args.wait_idle)
    figures.verify_rate = max(verify_rate(sample) for _ in range(3))
    print(
        f"  raw Ed25519 (PyNaCl, one core, same envelopes): {figures.verify_rate:,.0f} "
        f"verifies/s; ingest / verify {figures.ingest_rate / figures.verify_rate:.2f}"
    )


# --- results -----------------------------------------------------------------------------


def results_path(workdir: Path, backend: str) -> Path:
    return workdir / f"results-{backend}.json"


def load_results(path: Path) -> dict[int, Figures]:
    if not path.exists():
        return {}
    return {int(k): Figures(**v) for k, v in json.loads(path.read_text()).items()}


def save_results(path: Path, results: dict[int, Figures]) -> None:
    plain = {str(k): v.__dict__ for k, v in sorted(results.items())}
    path.write_text(json.dumps(plain, indent=1))


def fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def table(backend: str, results: dict[int, Figures]) -> str:
    rows = [
        f"| {backend}: log entries | worker RSS after start-up (MB) | Δ vs first size | "
        "RSS after reads (MB) | first status read (s) | status p99 (ms) | digest p99 (ms) | "
        "healthz p99 (ms) | list first p99 (ms) | list deep p99 (ms) | ingest (entries/s) | "
        "raw verify (/s) | ingest / verify |",
        "|" + "---|" * 13,
    ]
    base = results[min(results)].rss_start_mb if results else 0.0
    for size, f in sorted(results.items()):
        ratio = f.ingest_rate / f.verify_rate if f.verify_rate else None
        rows.append(
            f"| {size:,} | {f.rss_start_mb:,.0f} | {f.rss_start_mb - base:+.0f} | "
            f"{f.rss_after_mb:,.0f} | {f.first_read_s:.2f} | {fmt(f.p99_ms.get('status'))} | "
            f"{fmt(f.p99_ms.get('digest'))} | {fmt(f.p99_ms.get('healthz'))} | "
            f"{fmt(f.p99_ms.get('list first'))} | {fmt(f.p99_ms.get('list deep'))} | "
            f"{fmt(f.ingest_rate or None, 0)} | {fmt(f.verify_rate or None, 0)} | "
            f"{fmt(ratio, 2)} |"
        )
    return "\n".join(rows)


def verdicts(results: dict[int, Figures], args: argparse.Namespace) -> None:
    base = results[min(results)]
    print(f"\n== targets (issue 13; 2 cores, the client shares them) against {min(results):,}")
    for size, f in sorted(results.items()):
        drift = f.rss_start_mb - base.rss_start_mb
        kept_up = all(
            f.answered.get(r, 0.0) >= 0.97 * args.rate and not f.not_ok.get(r)
            for r in ("status", "digest")
        )
        p99s = [f.p99_ms.get(r) for r in ("status", "digest")]
        fast = all(p is not None and p <= TARGET_P99_MS for p in p99s) and kept_up
        ratio = f.ingest_rate / f.verify_rate if f.verify_rate else 0.0
        print(
            f"  {size:>11,}: memory {drift:+.0f} MB (<= {TARGET_MEMORY_DRIFT_MB:g}: "
            f"{met(abs(drift) <= TARGET_MEMORY_DRIFT_MB)}); first read {f.first_read_s:.2f} s "
            f"(<= {TARGET_FIRST_READ_S:g}: {met(f.first_read_s <= TARGET_FIRST_READ_S)}); "
            f"status/digest p99 {fmt(p99s[0])}/{fmt(p99s[1])} ms (<= {TARGET_P99_MS:g} at "
            f"{TARGET_RATE:,}/s: {met(fast and args.rate >= TARGET_RATE)}); ingest/verify "
            f"{ratio:.2f} (>= {TARGET_RATIO}: {met(ratio >= TARGET_RATIO)})"
        )


def plot(workdir: Path, out: Path) -> None:
    """Memory and start-up against log size, every backend measured in ``workdir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    fig, (mem, start) = plt.subplots(1, 2, figsize=(11, 4.2))
    ticks: set[int] = set()
    for path in sorted(workdir.glob("results-*.json")):
        backend = path.stem.removeprefix("results-")
        results = load_results(path)
        if not results:
            continue
        sizes = sorted(results)
        ticks.update(sizes)
        limit = results[sizes[0]].rss_start_mb + TARGET_MEMORY_DRIFT_MB
        mem.axhline(limit, color="red", linestyle=":", linewidth=1)
        mem.annotate(
            f"{backend} target: first size + {TARGET_MEMORY_DRIFT_MB:g} MB",
            (sizes[0], limit),
            textcoords="offset points",
            xytext=(0, 4),
            fontsize="x-small",
            color="red",
        )
        mem.plot(sizes, [results[s].rss_start_mb for s in sizes], "o-", label=f"{backend}: start")
        mem.plot(
            sizes, [results[s].rss_after_mb for s in sizes], "s--", label=f"{backend}: after reads"
        )
        start.plot(sizes, [results[s].first_read_s for s in sizes], "o-", label=backend)
    start.axhline(TARGET_FIRST_READ_S, color="red", linestyle=":", label="target")
    for ax, title, unit in (
        (mem, "qiledger serve worker resident memory", "VmRSS (MB)"),
        (start, "process start to first status read", "seconds"),
    ):
        ax.set_xscale("log")
        ax.set_xticks(sorted(ticks))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{x:,.0f}"))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda _x, _pos: ""))
        ax.set_xlabel("log size (entries)")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    print(f"  plot: {out}")


# --- main --------------------------------------------------------------------------------


def backend_name(database_url: str | None) -> str:
    if not database_url:
        return "sqlite"
    return "postgresql-" + (urlsplit(database_url).path.strip("/") or "postgres")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="QI Ledger scale benchmark: one log grown to each size, a served "
        "worker's memory, start-up and read latencies, and ingest, at each."
    )
    parser.add_argument("--sizes", default="1000000,3000000,10000000", help="log sizes")
    parser.add_argument(
        "--workdir", default="/tmp/qiledger-scale", help="ledger, pre-signed cache, results"
    )
    parser.add_argument("--database-url", help="an EMPTY PostgreSQL database (default: SQLite)")
    parser.add_argument("--build-batch", type=int, default=10_000, help="submit_many batch, build")
    parser.add_argument("--batch", type=int, default=1000, help="submit_many batch, timed ingest")
    parser.add_argument("--ingest", type=int, default=20_000, help="entries appended timed")
    parser.add_argument("--verify-n", type=int, default=20_000, help="raw verifies timed")
    parser.add_argument("--rate", type=float, default=TARGET_RATE, help="open-loop reads/s")
    parser.add_argument("--list-rate", type=float, default=100, help="open-loop listing pages/s")
    parser.add_argument("--duration", type=float, default=10, help="seconds per open-loop run")
    parser.add_argument("--max-connections", type=int, default=512, help="open-loop client cap")
    parser.add_argument(
        "--start-timeout", type=float, default=900, help="give up on the first read after (s)"
    )
    parser.add_argument(
        "--presign-processes", type=int, help="processes signing the cache (default: all cores)"
    )
    parser.add_argument(
        "--presign-only", action="store_true", help="fill the pre-signed cache up to the sizes"
    )
    parser.add_argument("--plot", help="PNG to write (default: WORKDIR/scale.png)")
    parser.add_argument("--wait-idle", type=float, default=60, help="see bench/ingest.py")
    args = parser.parse_args(argv)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    cache = PresignedCache(workdir / "presigned", args.presign_processes)
    print_machine()
    if args.presign_only:
        cache.fill(sizes[-1] + args.ingest)
        return 0
    backend = backend_name(args.database_url)
    data_dir = workdir / backend
    path = results_path(workdir, backend)
    results = load_results(path)
    print(f"\n== ledger in {data_dir}; figures so far in {path}")
    ledger = open_or_create(data_dir, args.database_url)
    for size in sizes:
        current = ledger.storage.tail_size()
        if current > size:
            note = "measured earlier" if size in results else "not measured: the log is past it"
            print(f"\n== {size:,}: {note} (the log holds {current:,})")
            continue
        grow(ledger, cache, size, args.build_batch)
        figures = Figures(size)
        figures.when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        figures.load = "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())
        print(f"\n######## {size:,} entries ({backend}; load average {figures.load})")
        bench_http.run_async(measure_server(data_dir, args.database_url, figures, args))
        measure_ingest(ledger, cache, figures, args)
        results[size] = figures
        save_results(path, results)
        print(f"\n{table(backend, results)}")
    ledger.close()
    if results:
        verdicts(results, args)
        print(f"\n{table(backend, results)}\n")
        plot(workdir, Path(args.plot) if args.plot else workdir / "scale.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
