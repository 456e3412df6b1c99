"""HTTP benchmark: certificate registration and status reads through ``qiledger serve``.

Targets (issue; 2 cores): ``GET /api/v1/certificates/{id}`` at >= 3,000 req/s with
p99 <= 20 ms, next to ``GET /healthz`` in the same run; submit-to-201 p99 <= 250 ms
at 200 submissions/s arriving at a fixed rate (open loop), many clients at once.

What it does (see bench/README.md):

1. creates one ledger in a temporary directory (SQLite as ``qiledger init``
   does, or an empty PostgreSQL database with ``--database-url``) with the trust
   chain the log enforces: the log key adds an accreditation body, the body
   accredits ``--issuers`` certification bodies (``covers: management_system``),
   one Ed25519 key each, and one ``issuer`` API token per certification body;
2. pre-signs, before any timing, ``certificate.issue`` statements for distinct
   copies of ``registry/demo/documents/demo-certification.json`` (certificate
   number and certification body changed per copy): each statement is what
   ``ledger.documents.statement`` derives from its document, as the server
   re-derives and compares it;
3. for each ``--workers`` count, starts ``python -m registry serve`` as a
   subprocess (``QILEDGER_RATE_LIMIT=0``: the per-token limit is off, it would
   otherwise refuse the closed-loop run) and measures:

   * submissions, open loop: ``POST /api/v1/certificates`` (multipart document +
     envelope) arriving at ``--rate``/s for ``--duration`` s whatever the answers
     do; latency runs from the scheduled arrival to the 201, so a late client or
     a slow server both count (no coordinated omission);
   * submissions, closed loop: ``--submit-concurrency`` clients, each sending the
     next as soon as the previous one is answered (maximum throughput);
   * reads, closed loop with ``--concurrency`` clients: ``GET /healthz``, then
     ``GET /api/v1/certificates/{id}`` on random registered ids; throughput ratio;
   * reads, open loop at ``--read-rate``/s: the p99 at the target rate, for
     both routes.

``--profile`` adds a diagnosis (its figures are for finding causes, not for
comparing with the targets):

* each route served by one uvicorn process with every thread (event loop,
  sequencer, FastAPI's thread pool) under cProfile counting thread CPU time:
  CPU per request by package, by registry function and by function;
* the ASGI app called in this process without an HTTP server, one request at a
  time and ``--concurrency`` at once: CPU per request of ``/healthz`` and of the
  certificate read as served, of the read route's own work, and of the thread-pool
  round trip a read pays when it cannot be answered on the event loop.

The load generator runs on the same cores as the server and takes CPU from it;
each run prints the CPU seconds of the server processes, of this client and of
anything else (and the VM's steal time). The client is kept light: a raw
asyncio HTTP/1.1 keep-alive client on uvloop, requests encoded before timing,
answers read by Content-Length: ~25 us of CPU per request, against ~2,000 us
for ``httpx.AsyncClient`` with 32 requests in flight (``--calibrate`` measures
both at the start of each run; ``--client httpx`` uses httpx throughout).
httpx could not generate 3,000 req/s here at all. The raw client reconnects
after ``--requests-per-connection`` requests: several uvicorn workers share one
listening socket and whichever is awake accepts a burst of connections, so with
long-lived connections a run could leave one worker idle.

Not a test: it prints figures and asserts nothing about speed. It exits non-zero
only if the server does not start.

    .venv/bin/python bench/http.py                          # workers 1 and 2
    .venv/bin/python bench/http.py --workers 2 --profile
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import hashlib
import importlib.metadata
import importlib.util
import json
import math
import os
import pstats
import random
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, MutableMapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

# This file is named http.py. When another script in bench/ runs, bench/ comes
# first on the import path and ``import http`` finds this file: it then puts the
# standard library's package in its place (the import statement answers with what
# sys.modules holds once this file ran) and imports nothing else, since the
# importer may be half-initialised (urllib.request importing http.client).
if __name__ == "http":
    _stdlib_http = Path(os.__file__).parent / "http"
    _spec = importlib.util.spec_from_file_location(
        "http", _stdlib_http / "__init__.py", submodule_search_locations=[str(_stdlib_http)]
    )
    if _spec is None or _spec.loader is None:
        raise ImportError(f"cannot load the standard library's http from {_stdlib_http}")
    _module = importlib.util.module_from_spec(_spec)
    sys.modules["http"] = _module
    _spec.loader.exec_module(_module)
else:
    # Run as a script: bench/ must come after the standard library on the import
    # path, or ``import http`` (uvicorn, httpx) would load this file.
    _BENCH = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH] + [str(_BENCH)]

    import httpx
    from ingest import (
        BODY_ID,
        BODY_KEY,
        ORIGIN,
        cpu_ticks,
        print_machine,
        scratch_dir,
        signed_envelope,
        signed_statement,
        signer_key,
        wait_idle,
    )

    from registry.api.routes.certificates import get_certificate
    from registry.config import Settings
    from registry.demo import DEMO_DOCUMENTS
    from registry.ledger import Ledger
    from registry.storage.tokens import TokenStore
    from verifier import statement
    from verifier.entry import format_time

REPO = Path(__file__).resolve().parent.parent
TEMPLATE = DEMO_DOCUMENTS / "demo-certification.json"
HOST = "127.0.0.1"
TARGET_READ_RATE = 3000
TARGET_READ_P99_MS = 20.0
TARGET_SUBMIT_RATE = 200
TARGET_SUBMIT_P99_MS = 250.0
IDLE_REUSE_S = 3.0
"""Reopen a keep-alive connection idle this long (uvicorn closes them after 5 s)."""


# --- a ledger with a trust chain, tokens and pre-signed submissions -------------------


def issuer_id(i: int) -> str:
    return f"BENCH-CB-{i}"


def create_ledger(settings: Settings, issuers: int) -> Ledger:
    """A new ledger whose trust chain accredits ``issuers`` certification bodies."""
    ledger = Ledger.init(settings, origin=ORIGIN, passphrase=None)
    now = ledger.clock()
    body = statement.BodyAdd(
        body_id=BODY_ID,
        name="Benchmark Accreditation Body",
        country="CN",
        public_key=BODY_KEY.public_key,
    )
    ledger.sequencer.submit(signed_statement(body, now, ledger.load_log_key().key))
    for i in range(issuers):
        grant = statement.AccreditationGrant(
            body_id=BODY_ID,
            issuer_id=issuer_id(i),
            issuer_name=f"Benchmark Certification Body {i}",
            issuer_kind="certification_body",
            public_keys=(signer_key(i).public_key,),
            accreditation_number=f"{BODY_ID}-C{i:04d}",
            standard="ISO/IEC 17021-1:2015",
            scope="Quality management systems",
            covers=("management_system",),
            valid_from=date(2020, 1, 1),
            valid_until=date(2099, 12, 31),
        )
        ledger.sequencer.submit(signed_statement(grant, now, BODY_KEY))
    return ledger


@dataclass(frozen=True)
class Submission:
    issuer: int
    certificate_id: str
    document: bytes
    envelope: bytes


def certification_document(template: dict[str, Any], issuer: str, number: int) -> bytes:
    """A distinct copy of the demo certification certificate."""
    doc = json.loads(json.dumps(template))
    doc["certificate_number"] = f"BENCH-QMS-{number:08d}"
    doc["certification_body"]["id"] = issuer
    return json.dumps(doc, indent=2, ensure_ascii=False).encode()


def presign(ledger: Ledger, start: int, count: int, issuers: int) -> list[Submission]:
    """``count`` documents numbered from ``start`` and their signed statements."""
    template = json.loads(TEMPLATE.read_text("utf-8"))
    now = datetime.now(UTC)
    signed_at = format_time(now)
    keys = [signer_key(i) for i in range(issuers)]
    out = []
    for number in range(start, start + count):
        i = number % issuers
        document = certification_document(template, issuer_id(i), number)
        derived = ledger.documents.statement(document, issuer_id(i), now)
        fields = {"signed_at": signed_at, **derived.fields}
        out.append(
            Submission(i, fields["certificate_id"], document, signed_envelope(fields, keys[i]))
        )
    return out


# --- HTTP/1.1 requests and two clients ------------------------------------------------


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    wire: bytes
    """The whole request as sent by the raw client (encoded once, before timing)."""


def make_request(
    method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
) -> Request:
    headers = dict(headers or {})
    if body or method == "POST":
        headers["Content-Length"] = str(len(body))
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    wire = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    return Request(method, path, headers, body, wire)


def certificate_post(token: str, sub: Submission) -> Request:
    """``POST /api/v1/certificates`` as multipart/form-data: document + envelope."""
    boundary = hashlib.sha256(sub.envelope).hexdigest()[:32]
    parts = []
    for name, filename, media, data in (
        ("document", "document.json", "application/json", sub.document),
        ("envelope", "envelope.json", "application/json", sub.envelope),
    ):
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="{filename}"\r\nContent-Type: {media}\r\n\r\n'.encode()
            + data
            + b"\r\n"
        )
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    headers = {
        "Authorization": f"Bearer {token}",
        "Content-Type": f"multipart/form-data; boundary={boundary}",
    }
    return make_request("POST", "/api/v1/certificates", headers, body)


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.used = time.monotonic()
        self.requests = 0

    async def request(self, req: Request) -> tuple[int, bytes, bool]:
        """(status, body, keep-alive) for one request on this connection."""
        self.writer.write(req.wire)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lower = head.lower()
        at = lower.find(b"\r\ncontent-length:")
        if at < 0:
            raise ValueError(f"response without Content-Length: {head[:200]!r}")
        length = int(lower[at + 17 : lower.index(b"\r\n", at + 2)])
        body = await self.reader.readexactly(length) if length else b""
        self.used = time.monotonic()
        self.requests += 1
        return status, body, b"\r\nconnection: close" not in lower

    def close(self) -> None:
        self.writer.close()


class RawClient:
    """Keep-alive HTTP/1.1 over asyncio streams: a pool of idle connections, a new
    one opened whenever none is idle (up to ``limit`` at once). A connection is
    closed after ``requests_per_connection`` requests: with several server workers
    sharing one listening socket, whichever worker is awake accepts a burst of new
    connections, so long-lived ones could leave a worker idle for a whole run."""

    name = "raw asyncio"
    requests_per_connection = 100

    def __init__(self, port: int, limit: int) -> None:
        self.port = port
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(limit)

    async def send(self, req: Request) -> tuple[int, bytes]:
        async with self._slots:
            conn = None
            while self._idle:
                conn = self._idle.pop()
                if time.monotonic() - conn.used < IDLE_REUSE_S:
                    break
                conn.close()
                conn = None
            if conn is None:
                conn = _Connection(*await asyncio.open_connection(HOST, self.port))
            try:
                status, body, keep = await conn.request(req)
            except BaseException:
                conn.close()
                raise
            if keep and conn.requests < self.requests_per_connection:
                self._idle.append(conn)
            else:
                conn.close()
            return status, body

    async def aclose(self) -> None:
        for conn in self._idle:
            conn.close()
        self._idle.clear()


class HttpxClient:
    name = "httpx.AsyncClient"

    def __init__(self, port: int, limit: int) -> None:
        self._client = httpx.AsyncClient(
            base_url=f"http://{HOST}:{port}",
            limits=httpx.Limits(max_connections=limit, max_keepalive_connections=limit),
            timeout=120.0,
        )

    async def send(self, req: Request) -> tuple[int, bytes]:
        response = await self._client.request(
            req.method, req.path, headers=req.headers, content=req.body or None
        )
        return response.status_code, response.content

    async def aclose(self) -> None:
        await self._client.aclose()


Client = RawClient | HttpxClient
CLIENTS: dict[str, type[RawClient] | type[HttpxClient]] = {
    "raw": RawClient,
    "httpx": HttpxClient,
}


# --- the server under test -------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def process_tree(root: int) -> list[int]:
    """``root`` and its descendants (from /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(parents.get(pid, []))
    return out


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds used so far by these processes (those still alive)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


class Server:
    """A server subprocess: ``python -m registry serve`` or this script's profiled one."""

    def __init__(self, argv: list[str], env: dict[str, str], port: int, log: Path) -> None:
        self.port = port
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                argv, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT
            )
        self.pids: list[int] = [self.process.pid]

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                if httpx.get(f"http://{HOST}:{self.port}/healthz", timeout=1).status_code == 200:
                    time.sleep(0.5)  # let every worker finish starting
                    self.pids = process_tree(self.process.pid)
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        tail = self.log.read_text(errors="replace")[-3000:]
        sys.exit(f"bench: the server did not start; its output:\n{tail}")

    def cpu(self) -> float:
        return cpu_seconds(self.pids)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for pid in self.pids[1:]:  # workers left behind by a killed supervisor
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def serve_argv(data_dir: Path, database_url: str | None, port: int, workers: int) -> list[str]:
    argv = [sys.executable, "-m", "registry", "--data-dir", str(data_dir)]
    if database_url:
        argv += ["--database-url", database_url]
    return [
        *argv,
        "serve",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--workers",
        str(workers),
    ]


SERVER_ENV = {
    "QILEDGER_RATE_LIMIT": "0",
    "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
}


# --- load --------------------------------------------------------------------------------


@dataclass
class Run:
    """One timed run: per-request latencies and what came back."""

    name: str
    latencies: list[float] = field(default_factory=list)
    finished: list[float] = field(default_factory=list)
    """perf_counter() at each answer, parallel to ``latencies``."""
    statuses: Counter[str] = field(default_factory=Counter)
    samples: dict[str, str] = field(default_factory=dict)
    ok_bodies: list[bytes] = field(default_factory=list)
    lag: list[float] = field(default_factory=list)
    offered: float = 0.0
    """Open loop: the arrival rate (requests/s) the run was scheduled at."""
    started: float = 0.0
    wall: float = 0.0
    client_cpu: float = 0.0
    server_cpu: float = 0.0
    server_cpu_by_pid: dict[int, float] = field(default_factory=dict)
    machine_cpu: float = 0.0
    steal: float = 0.0
    """CPU seconds the hypervisor gave to others while this VM wanted them."""

    def record(self, status: int | str, body: bytes, latency: float | None, keep: bool) -> None:
        """One answer (``latency`` None: no answer, a connection error)."""
        if latency is not None:
            self.latencies.append(latency)
            self.finished.append(time.perf_counter())
        key = str(status)
        self.statuses[key] += 1
        if keep:
            self.ok_bodies.append(body)
        if key not in self.samples:
            self.samples[key] = body[:300].decode("utf-8", "replace")

    @property
    def count(self) -> int:
        return sum(self.statuses.values())


def steal_seconds() -> float:
    """Steal time so far (virtual machines), from /proc/stat."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


@contextmanager
def measured(run: Run, server: Server) -> Iterator[None]:
    gc.collect()
    gc.disable()  # keep the client's pauses out of the latencies
    by_pid0 = {pid: cpu_seconds([pid]) for pid in server.pids}
    cpu0, server0, (busy0, _) = time.process_time(), server.cpu(), cpu_ticks()
    steal0 = steal_seconds()
    t0 = run.started = time.perf_counter()
    try:
        yield
    finally:
        run.wall = time.perf_counter() - t0
        run.steal = steal_seconds() - steal0
        run.client_cpu = time.process_time() - cpu0
        run.server_cpu = server.cpu() - server0
        run.server_cpu_by_pid = {p: cpu_seconds([p]) - c for p, c in by_pid0.items()}
        run.machine_cpu = cpu_ticks()[0] - busy0
        gc.enable()


async def _one(client: Client, req: Request, run: Run, start: float, ok: int, keep: bool) -> None:
    try:
        status, body = await client.send(req)
    except (OSError, asyncio.IncompleteReadError, ValueError, httpx.HTTPError) as exc:
        run.record(f"error {type(exc).__name__}", str(exc).encode(), None, False)
        return
    run.record(status, body, time.perf_counter() - start, keep and status == ok)


async def closed_loop(
    client: Client,
    next_request: Callable[[], Request | None],
    run: Run,
    server: Server,
    concurrency: int,
    duration: float,
    ok: int = 200,
    keep: bool = False,
) -> Run:
    """``concurrency`` clients, each sending its next request once answered, until
    ``duration`` s pass or ``next_request`` runs out."""
    deadline = 0.0

    async def worker() -> None:
        while time.perf_counter() < deadline:
            req = next_request()
            if req is None:
                return
            await _one(client, req, run, time.perf_counter(), ok, keep)

    with measured(run, server):
        deadline = time.perf_counter() + duration
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return run


async def open_loop(
    client: Client,
    next_request: Callable[[], Request | None],
    run: Run,
    server: Server,
    rate: float,
    duration: float,
    ok: int = 200,
    keep: bool = False,
) -> Run:
    """Requests arrive every ``1/rate`` s whatever the answers do; latency counts
    from the scheduled arrival (a client falling behind shows in it, and in ``lag``)."""
    n = int(rate * duration)
    run.offered = rate
    tasks: set[asyncio.Task[None]] = set()
    with measured(run, server):
        start = time.perf_counter() + 0.01
        for i in range(n):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0.0005:
                await asyncio.sleep(delay)
            req = next_request()
            if req is None:
                break
            now = time.perf_counter()
            run.lag.append(now - due)
            # A timer may fire up to a millisecond early: count from the later of the two.
            task = asyncio.create_task(_one(client, req, run, max(due, now), ok, keep))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(tasks)
    return run


def pct(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..1) of unsorted ``values``."""
    ranked = sorted(values)
    return ranked[max(0, math.ceil(q * len(ranked)) - 1)]


def report(run: Run, ok: str = "200") -> None:
    rate = run.count / run.wall if run.wall else 0.0
    if run.offered:
        print(
            f"  {run.name}: {run.count:,} requests arriving at {run.offered:,.0f}/s, all "
            f"answered {run.wall:.2f} s after the first = {rate:,.0f} req/s"
        )
    else:
        print(f"  {run.name}: {run.count:,} requests in {run.wall:.2f} s = {rate:,.0f} req/s")
    if run.latencies:
        ms = [x * 1e3 for x in run.latencies]
        print(
            f"    latency ms: p50 {statistics.median(ms):.1f}  p90 {pct(ms, 0.9):.1f}  "
            f"p99 {pct(ms, 0.99):.1f}  max {max(ms):.1f}"
        )
    if run.offered and run.latencies:
        windows: dict[int, list[float]] = {}
        for done, latency in zip(run.finished, run.latencies, strict=True):
            windows.setdefault(int(done - run.started), []).append(latency * 1e3)
        by_second = [pct(windows[k], 0.99) for k in sorted(windows)]
        shown = " ".join(f"{x:.0f}" for x in by_second[:40])
        print(f"    p99 ms of each second (answers by completion time): {shown}")
    if run.lag:
        print(
            f"    client send lag behind schedule: p99 {pct(run.lag, 0.99) * 1e3:.1f} ms, "
            f"max {max(run.lag) * 1e3:.1f} ms"
        )
    bad = {k: v for k, v in run.statuses.items() if k != ok}
    if bad:
        print(f"    NOT {ok}: {dict(bad)}")
        for key in bad:
            print(f"      {key}: {run.samples[key]}")
    n = max(run.count, 1)
    foreign = max(run.machine_cpu - run.server_cpu - run.client_cpu, 0.0)
    print(
        f"    CPU: server {run.server_cpu:.2f} s ({run.server_cpu / n * 1e6:,.0f} us/req), "
        f"this client {run.client_cpu:.2f} s ({run.client_cpu / n * 1e6:,.0f} us/req), "
        f"other processes {foreign:.2f} s; machine busy "
        f"{run.machine_cpu / run.wall / (os.cpu_count() or 1):.0%} of "
        f"{os.cpu_count()} cores" + (f"; steal {run.steal:.2f} s" if run.steal >= 0.01 else "")
    )
    if len(run.server_cpu_by_pid) > 1:
        split = ", ".join(f"{pid}: {c:.2f} s" for pid, c in run.server_cpu_by_pid.items())
        print(f"    server CPU by process (supervisor first): {split}")


def cycle(requests: Sequence[Request], seed: int = 0) -> Callable[[], Request]:
    """Random picks from ``requests`` (never runs out)."""
    rng = random.Random(seed)
    return lambda: requests[rng.randrange(len(requests))]


def once(requests: Sequence[Request]) -> Callable[[], Request | None]:
    """Each request once, in order, then None."""
    it = iter(requests)
    return lambda: next(it, None)


# --- phases -------------------------------------------------------------------------------


@dataclass
class Config:
    workers: int
    submit_open: Run | None = None
    submit_closed: Run | None = None
    reads: dict[str, Run] = field(default_factory=dict)
    cold: list[float] = field(default_factory=list)
    """Seconds of the first reads after start, one per new connection."""
    log_size: int = 0


async def catch_up(server: Server, cfg: Config, count: int = 20) -> None:
    """The first reads after start, each on a new connection so that every worker
    gets some: a server process replays the whole log into its trust state on the
    first request that needs it (under the lock submissions also need). Timed
    apart; the runs after it see a caught-up server."""
    req = make_request("GET", "/api/v1/certificates/BENCH-CB-0/no-such-certificate")
    for _ in range(count):
        conn = _Connection(*await asyncio.open_connection(HOST, server.port))
        t0 = time.perf_counter()
        await conn.request(req)  # 404, after the catch-up
        cfg.cold.append(time.perf_counter() - t0)
        conn.close()
    ms = sorted(x * 1e3 for x in cfg.cold)
    print(
        f"\n== start-up catch-up: {count} certificate reads right after start, one per new "
        f"connection, log of {cfg.log_size:,} entries: slowest {ms[-1]:,.1f} ms, "
        f"median {statistics.median(ms):.1f} ms (the slow ones replayed the log)"
    )


async def warm(client: Client, req: Request, concurrency: int, seconds: float) -> None:
    """Untimed: open the connections and warm the server's caches."""
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            await client.send(req)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def calibrate(server: Server, args: argparse.Namespace) -> None:
    print(
        f"\n== client cost: GET /healthz closed loop, {args.concurrency} clients, "
        f"{args.calibrate:g} s each client kind"
    )
    health = make_request("GET", "/healthz")
    for kind, cls in CLIENTS.items():
        wait_idle(args.wait_idle)
        client = cls(server.port, args.concurrency)
        await warm(client, health, args.concurrency, 0.5)
        run = await closed_loop(
            client,
            cycle([health]),
            Run(f"{kind} ({cls.name})"),
            server,
            args.concurrency,
            args.calibrate,
        )
        await client.aclose()
        report(run)


async def run_submissions(
    server: Server,
    tokens: list[str],
    subs: list[Submission],
    cfg: Config,
    args: argparse.Namespace,
) -> list[str]:
    """Open loop, then closed loop; returns the ids answered 201."""
    client_cls = CLIENTS[args.client]
    open_n = int(args.rate * args.duration)
    requests = [certificate_post(tokens[s.issuer], s) for s in subs]
    print(
        f"\n== submissions, open loop: {args.rate:g}/s for {args.duration:g} s "
        f"({open_n:,} certificates, {len(requests[0].wire):,}-byte requests, "
        f"{len(tokens)} issuer tokens, {args.client} client)"
    )
    wait_idle(args.wait_idle)
    client = client_cls(server.port, args.max_connections)
    cfg.submit_open = await open_loop(
        client,
        once(requests[:open_n]),
        Run("POST /api/v1/certificates (open loop)"),
        server,
        args.rate,
        args.duration,
        ok=201,
        keep=True,
    )
    await client.aclose()
    report(cfg.submit_open, "201")
    print(
        f"    achieved arrival rate {cfg.submit_open.count / cfg.submit_open.wall:,.0f}/s; "
        f"201s {cfg.submit_open.statuses['201']:,}"
    )

    rest = requests[open_n:]
    print(
        f"\n== submissions, closed loop: {args.submit_concurrency} clients, up to "
        f"{len(rest):,} certificates or {args.closed_duration:g} s"
    )
    wait_idle(args.wait_idle)
    client = client_cls(server.port, args.submit_concurrency)
    cfg.submit_closed = await closed_loop(
        client,
        once(rest),
        Run("POST /api/v1/certificates (closed loop)"),
        server,
        args.submit_concurrency,
        args.closed_duration,
        ok=201,
        keep=True,
    )
    await client.aclose()
    report(cfg.submit_closed, "201")
    ids = []
    for run in (cfg.submit_open, cfg.submit_closed):
        for body in run.ok_bodies:
            ids.append(json.loads(body)["certificate_id"])
    return ids


async def run_reads(server: Server, ids: list[str], cfg: Config, args: argparse.Namespace) -> None:
    client_cls = CLIENTS[args.client]
    health = [make_request("GET", "/healthz")]
    certs = [make_request("GET", f"/api/v1/certificates/{cid}") for cid in ids]
    routes = {"GET /healthz": health, "GET /api/v1/certificates/{id}": certs}
    print(
        f"\n== reads, closed loop: {args.concurrency} clients, {args.read_duration:g} s "
        f"per route; {len(ids):,} certificate ids picked at random ({args.client} client)"
    )

    async def measure(mode: str, connections: int, loop: Callable[..., Awaitable[Run]]) -> None:
        for name, reqs in routes.items():
            wait_idle(args.wait_idle)
            client = client_cls(server.port, connections)
            await warm(client, reqs[0], args.concurrency, 1.0)
            run = await loop(client, cycle(reqs), Run(name))
            await client.aclose()
            cfg.reads[f"{mode} {name}"] = run
            report(run)

    await measure(
        "closed",
        args.concurrency,
        lambda c, nxt, run: closed_loop(c, nxt, run, server, args.concurrency, args.read_duration),
    )
    if args.read_rate > 0:
        print(f"\n== reads, open loop: {args.read_rate:g} req/s for {args.read_duration:g} s")
        await measure(
            "open",
            args.max_connections,
            lambda c, nxt, run: open_loop(c, nxt, run, server, args.read_rate, args.read_duration),
        )
    sample = json.loads(
        httpx.get(f"http://{HOST}:{server.port}/api/v1/certificates/{ids[0]}").content
    )
    print(
        f"  (a certificate read answers e.g. status {sample.get('status')!r}, "
        f"tree size {sample.get('tree_size')})"
    )


def p99_ms(run: Run) -> float:
    return pct(run.latencies, 0.99) * 1e3 if run.latencies else math.nan


def verdicts(configs: list[Config]) -> None:
    print("\n== result (targets from the issue, for 2 cores; here the client shares them)")
    for cfg in configs:
        print(f"  --workers {cfg.workers}:")
        if cfg.cold:
            print(
                f"    start-up: the first request needing the trust state waited "
                f"{max(cfg.cold) * 1e3:,.0f} ms (log replay, {cfg.log_size:,} entries)"
            )
        health = cfg.reads.get("closed GET /healthz")
        cert = cfg.reads.get("closed GET /api/v1/certificates/{id}")
        if health and cert:
            cr, hr = cert.count / cert.wall, health.count / health.wall
            print(
                f"    reads, closed loop: certificate {cr:,.0f} req/s (p99 {p99_ms(cert):.1f} ms), "
                f"healthz {hr:,.0f} req/s: certificate/healthz {cr / hr:.2f}   "
                f"target >= {TARGET_READ_RATE:,}/s: {'MET' if cr >= TARGET_READ_RATE else 'MISSED'}"
            )
        opened = cfg.reads.get("open GET /api/v1/certificates/{id}")
        if opened:
            rate = opened.count / opened.wall
            p99 = p99_ms(opened)
            kept_up = rate >= 0.97 * opened.offered and opened.statuses["200"] == opened.count
            met = p99 <= TARGET_READ_P99_MS and kept_up
            verdict = "MET" if met else "MISSED"
            if opened.offered < TARGET_READ_RATE:
                verdict = f"not measured at {TARGET_READ_RATE:,}/s"
            print(
                f"    reads, open loop: certificate requests arriving at {opened.offered:,.0f}/s "
                f"(answered at {rate:,.0f}/s), p99 {p99:.1f} ms   "
                f"target <= {TARGET_READ_P99_MS:g} ms: {verdict}"
            )
        sub = cfg.submit_open
        if sub is not None and sub.count:
            p99 = p99_ms(sub)
            met = p99 <= TARGET_SUBMIT_P99_MS and sub.statuses["201"] == sub.count
            verdict = "MET" if met else "MISSED"
            if sub.offered < TARGET_SUBMIT_RATE:
                verdict = f"not measured at {TARGET_SUBMIT_RATE}/s"
            print(
                f"    submissions, open loop: arriving at {sub.offered:,.0f}/s, submit-to-201 "
                f"p99 {p99:.1f} ms   target <= {TARGET_SUBMIT_P99_MS:g} ms: {verdict}"
            )
        closed = cfg.submit_closed
        if closed is not None and closed.count:
            print(
                f"    submissions, closed loop: {closed.statuses['201'] / closed.wall:,.0f} "
                f"201s/s, p99 {p99_ms(closed):.0f} ms ({len(closed.latencies):,} answers)"
            )


# --- diagnosis: the server in-process under cProfile ---------------------------------------


class ThreadProfiles:
    """cProfile in every thread: the current one now, and each thread started later
    (the sequencer thread, FastAPI's thread pool) from its first profiled event.
    Times are thread CPU time, so threads waiting for the GIL or for I/O do not count."""

    def __init__(self) -> None:
        self.profiles: list[cProfile.Profile] = []
        self._lock = threading.Lock()

    def _new(self) -> cProfile.Profile:
        profile = cProfile.Profile(time.thread_time)
        with self._lock:
            self.profiles.append(profile)
        return profile

    def start(self) -> None:
        def boot(_frame: Any, _event: str, _arg: Any) -> None:
            self._new().enable()  # replaces this hook in the new thread

        threading.setprofile(boot)
        self._main = self._new()
        self._main.enable()

    def restart_main(self) -> None:
        """Forget what the current (main) thread did so far."""
        self._main.disable()
        self.profiles.remove(self._main)
        self._main = self._new()
        self._main.enable()

    def stats(self) -> pstats.Stats:
        threading.setprofile(None)  # type: ignore[arg-type,unused-ignore]
        self._main.disable()
        merged = pstats.Stats(self.profiles[0])
        for profile in self.profiles[1:]:
            merged.add(profile)
        return merged


def profiled_server_main(data_dir: str, port: int, out: str, database_url: str) -> None:
    """(Runs in a subprocess.) The app as ``qiledger serve`` builds it, served by
    uvicorn in this thread, every thread profiled; stats dumped at shutdown."""
    import uvicorn

    from registry.api.app import create_app
    from registry.api.service import ServiceOptions

    settings = Settings(data_dir=Path(data_dir), database_url=database_url or None)
    ledger = Ledger.open(settings)
    ledger.policy.sync()  # the start-up replay of the log, before profiling
    profiles = ThreadProfiles()
    profiles.start()  # before the app starts its sequencer thread
    app = create_app(ledger, ServiceOptions(rate_per_second=0))
    profiles.restart_main()
    config = uvicorn.Config(
        app, host=HOST, port=port, log_level="warning", proxy_headers=True, server_header=False
    )
    with suppress(KeyboardInterrupt):  # uvicorn re-raises the SIGINT it stopped on
        uvicorn.Server(config).run()
    profiles.stats().dump_stats(out)


def print_profile(path: Path, requests: int, top: int) -> None:
    stats = pstats.Stats(str(path))
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(tt for (_cc, _nc, tt, _ct, _callers) in raw.values())
    by_area: Counter[str] = Counter()
    for (filename, _line, _name), (_cc, _nc, tt, _ct, _callers) in raw.items():
        by_area[_area(filename)] += tt
    print(
        f"    profiled CPU {total:.2f} s for {requests:,} requests = "
        f"{total / requests * 1e6:,.0f} us/request (profiling inflates it; read the shares)"
    )
    print("    own CPU time by package (us/request, share):")
    for area, tt in by_area.most_common(12):
        print(f"      {area:34} {tt / requests * 1e6:8.1f} {tt / total:6.1%}")
    print("    registry and verifier functions by cumulative CPU time (us/request):")
    ours = [kv for kv in raw.items() if _area(kv[0][0]) in ("registry", "verifier")]
    for (filename, line, name), (_cc, nc, _tt, ct, _callers) in sorted(
        ours, key=lambda kv: -kv[1][3]
    )[:top]:
        print(
            f"      {ct / requests * 1e6:8.1f} cum {nc / requests:6.1f} calls/req  "
            f"{_short(filename, line, name)}"
        )
    print(f"    top {top} functions by own CPU time (us/request):")
    ranked = sorted(raw.items(), key=lambda kv: -kv[1][2])[:top]
    for (filename, line, name), (_cc, nc, tt, ct, _callers) in ranked:
        where = _short(filename, line, name)
        print(
            f"      {tt / requests * 1e6:8.1f} own {ct / requests * 1e6:8.1f} cum "
            f"{nc / requests:6.1f} calls/req  {where}"
        )


def _area(filename: str) -> str:
    if filename == "~":
        return "builtins / C functions"
    parts = Path(filename).parts
    for marker in ("site-packages", "registry", "verifier"):
        if marker in parts:
            i = parts.index(marker)
            name = parts[i + 1] if marker == "site-packages" else marker
            return name.removesuffix(".py")
    if "lib" in parts:
        return "stdlib " + parts[-1].removesuffix(".py")
    return filename


def _short(filename: str, line: int, name: str) -> str:
    if filename == "~":
        return name
    parts = Path(filename).parts
    tail = "/".join(parts[-2:])
    return f"{tail}:{line}({name})"


async def run_profile(
    data_dir: Path,
    database_url: str | None,
    ids: list[str],
    posts: list[Request],
    args: argparse.Namespace,
) -> None:
    print(
        "\n== profile (diagnosis): the app in one uvicorn process, every thread (event loop "
        "and FastAPI's thread pool) under cProfile counting thread CPU time; coroutine "
        "resumptions count as calls"
    )
    routes = {
        "GET /healthz": (cycle([make_request("GET", "/healthz")]), args.concurrency),
        "GET /api/v1/certificates/{id}": (
            cycle([make_request("GET", f"/api/v1/certificates/{cid}") for cid in ids]),
            args.concurrency,
        ),
        "POST /api/v1/certificates": (once(posts), args.submit_concurrency),
    }
    for name, (next_request, concurrency) in routes.items():
        port = free_port()
        out = data_dir / f"profile-{port}.prof"
        argv = [
            sys.executable,
            __file__,
            "--profiled-server",
            str(data_dir),
            str(port),
            str(out),
            database_url or "",
        ]
        server = Server(argv, SERVER_ENV, port, data_dir / f"server-profile-{port}.log")
        server.wait_ready()
        wait_idle(args.wait_idle)
        client = RawClient(port, concurrency)
        run = await closed_loop(
            client, next_request, Run(name), server, concurrency, args.profile_duration
        )
        await client.aclose()
        server.stop()
        print(f"\n  {name}: {run.count / run.wall:,.0f} req/s under the profiler")
        if out.exists():
            # +1: wait_ready's GET /healthz
            print_profile(out, run.count + (name == "GET /healthz"), args.profile_top)
        else:
            print(f"    (no profile written; server log {server.log})")


async def asgi_costs(
    data_dir: Path, database_url: str | None, ids: list[str], args: argparse.Namespace
) -> None:
    """The app called in this process, no HTTP server: CPU per request of the routes
    as served, of the certificate route's own work and of one thread-pool round trip
    (which the certificate read, answered on the event loop, does not pay)."""
    import anyio.to_thread
    from starlette.requests import Request

    from registry.api.app import create_app
    from registry.api.service import ServiceOptions

    n, concurrency = args.asgi_n, args.concurrency
    settings = Settings(data_dir=data_dir, database_url=database_url)
    app = create_app(Ledger.open(settings), ServiceOptions(rate_per_second=0))
    service = app.state.service
    route_request = Request({"type": "http", "app": app})  # all the route reads of it
    rng = random.Random(1)

    async def call(path: str) -> None:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", HOST.encode())],
            "client": (HOST, 1),
            "server": (HOST, 80),
            "state": {},
        }

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start" and message["status"] != 200:
                raise RuntimeError(f"{path}: status {message['status']}")

        await app(scope, receive, send)

    def random_id() -> str:
        return ids[rng.randrange(len(ids))]

    async def healthz() -> None:
        await call("/healthz")

    async def certificate() -> None:
        await call(f"/api/v1/certificates/{random_id()}")

    async def route_body() -> None:
        await get_certificate(route_request, random_id())

    async def hop() -> None:
        await anyio.to_thread.run_sync(int)

    async def cpu_per_call(fn: Callable[[], Awaitable[Any]], parallel: int) -> float:
        async def worker(count: int) -> None:
            for _ in range(count):
                await fn()

        await worker(min(200, n))
        gc.collect()
        cpu0 = time.process_time()
        await asyncio.gather(*(worker(n // parallel) for _ in range(parallel)))
        return (time.process_time() - cpu0) / (n // parallel * parallel) * 1e6

    async def measure(label: str, fn: Callable[[], Awaitable[Any]]) -> None:
        # The best of three: on a shared (virtual) machine CPU time per call varies.
        alone = min([await cpu_per_call(fn, 1) for _ in range(3)])
        crowd = min([await cpu_per_call(fn, concurrency) for _ in range(3)])
        print(f"    {label:70} {alone:7.0f} {crowd:7.0f}")

    print(
        f"\n== where a read's CPU goes: the ASGI app called in this process, no HTTP server, "
        f"{n:,} requests one at a time and {concurrency} at once"
    )
    x = "x" + str(concurrency)
    print(f"    {'CPU us per request':70} {'alone':>7} {x:>7}")
    rows = [
        ("GET /healthz as served", healthz),
        ("GET /api/v1/certificates/{id} as served", certificate),
        ("  await get_certificate(request, id) called directly (the route's work)", route_body),
        ("one anyio.to_thread.run_sync(int) round trip (what a read in the pool adds)", hop),
    ]
    wait_idle(args.wait_idle)
    for label, fn in rows:
        await measure(label, fn)
    service.close()


# --- main ------------------------------------------------------------------------------------


async def run_all(args: argparse.Namespace, data_dir: Path) -> None:
    settings = Settings(data_dir=data_dir, database_url=args.database_url)
    t0 = time.perf_counter()
    ledger = create_ledger(settings, args.issuers)
    store = TokenStore(ledger.db)
    tokens = [store.create("issuer", issuer_id(i))[0] for i in range(args.issuers)]
    workers = [int(w) for w in args.workers.split(",")]
    per_config = int(args.rate * args.duration) + args.closed_n
    extra = args.profile_n if args.profile else 0
    subs = presign(ledger, 0, per_config * len(workers) + extra, args.issuers)
    ledger.close()
    print(
        f"\n== setup: ledger in {data_dir} ({args.database_url or 'SQLite'}), "
        f"{args.issuers} accredited certification bodies, {len(subs):,} pre-signed "
        f"certificate.issue statements ({len(subs[0].document):,}-byte documents) "
        f"in {time.perf_counter() - t0:.1f} s (untimed)"
    )
    print(
        "  server: python -m registry serve --log-level warning, env QILEDGER_RATE_LIMIT=0; "
        f"client: this process, one thread, uvloop={_uvloop_name()}; it shares the "
        f"{os.cpu_count()} cores with the server"
        + ("; a local database server's CPU counts as other processes" if args.database_url else "")
    )
    configs = []
    ids: list[str] = []
    for n, count in enumerate(workers):
        print(f"\n######## --workers {count}")
        port = free_port()
        server = Server(
            serve_argv(data_dir, args.database_url, port, count),
            SERVER_ENV,
            port,
            data_dir / f"server-{count}.log",
        )
        try:
            server.wait_ready()
            print(f"  server pids {server.pids} on port {port}")
            if n == 0 and args.calibrate > 0:
                await calibrate(server, args)
            cfg = Config(count, log_size=1 + args.issuers + len(ids))
            configs.append(cfg)
            await catch_up(server, cfg)
            mine = subs[n * per_config : (n + 1) * per_config]
            ids += await run_submissions(server, tokens, mine, cfg, args)
            if ids:
                await run_reads(server, ids, cfg, args)
        finally:
            server.stop()
    verdicts(configs)
    if args.profile and ids:
        posts = [certificate_post(tokens[x.issuer], x) for x in subs[len(subs) - extra :]]
        await run_profile(data_dir, args.database_url, ids, posts, args)
        await asgi_costs(data_dir, args.database_url, ids, args)


def _uvloop_name() -> str:
    try:
        return f"yes ({importlib.metadata.version('uvloop')})"
    except importlib.metadata.PackageNotFoundError:
        return "no (not installed)"


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run_async(coro: Awaitable[None]) -> None:
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(coro)  # type: ignore[arg-type]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--profiled-server"]:
        profiled_server_main(argv[1], int(argv[2]), argv[3], argv[4])
        return 0
    parser = argparse.ArgumentParser(
        description="QI Ledger HTTP benchmark (qiledger serve: submissions and status reads)."
    )
    parser.add_argument("--workers", default="1,2", help="server process counts to measure")
    parser.add_argument("--database-url", help="an EMPTY PostgreSQL database (default: SQLite)")
    parser.add_argument("--issuers", type=int, default=8, help="certification bodies / tokens")
    parser.add_argument("--rate", type=float, default=TARGET_SUBMIT_RATE, help="submissions/s")
    parser.add_argument("--duration", type=float, default=20, help="open-loop submit seconds")
    parser.add_argument("--closed-n", type=int, default=4000, help="closed-loop submissions")
    parser.add_argument("--closed-duration", type=float, default=20, help="at most, seconds")
    parser.add_argument("--submit-concurrency", type=int, default=64, help="closed-loop clients")
    parser.add_argument("--concurrency", type=int, default=32, help="closed-loop read clients")
    parser.add_argument("--read-duration", type=float, default=10, help="seconds per read run")
    parser.add_argument(
        "--read-rate", type=float, default=TARGET_READ_RATE, help="open-loop reads/s (0: skip)"
    )
    parser.add_argument("--max-connections", type=int, default=512, help="open-loop client cap")
    parser.add_argument("--client", choices=sorted(CLIENTS), default="raw")
    parser.add_argument(
        "--requests-per-connection",
        type=int,
        default=RawClient.requests_per_connection,
        help="raw client: reconnect after this many requests (spreads load over workers)",
    )
    parser.add_argument(
        "--calibrate", type=float, default=3, help="seconds per client kind (0: skip)"
    )
    parser.add_argument("--profile", action="store_true", help="also profile the server")
    parser.add_argument("--profile-duration", type=float, default=5)
    parser.add_argument("--profile-top", type=int, default=25)
    parser.add_argument("--profile-n", type=int, default=2000, help="submissions to profile")
    parser.add_argument("--asgi-n", type=int, default=3000, help="in-process requests timed")
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=120,
        help="before each timed part, wait up to this many seconds for other processes "
        "to go quiet (0: don't wait)",
    )
    parser.add_argument("--tmp", help="parent of the temporary data dir")
    parser.add_argument("--keep", action="store_true", help="keep the data dir")
    args = parser.parse_args(argv)
    RawClient.requests_per_connection = args.requests_per_connection
    print_machine()
    with scratch_dir(args.tmp, args.keep, "qiledger-http-") as data_dir:
        run_async(run_all(args, data_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
