"""Hostile documents: what one costs the document check, and ``/healthz`` meanwhile.

Targets (issue 10; 2 cores): each hostile document <= 2 s of CPU and <= 200 MB of
extra peak resident memory in the server; ``GET /healthz`` p99 <= 100 ms while
three hostile submissions are in flight.

The documents (built in memory before any timing):

* certification JSON whose ``certified_entity.sites`` holds 333,000 (1 MB) and
  666,000 (2 MB) empty objects;
* the 18.8 MB DCC with 400,000 undeclared attributes spread over four elements;
* the same size with 400,000 undeclared elements instead;
* further variants: 100,000 schema errors within the structural limits (one
  undeclared attribute on each of 100,000 elements), one start tag with
  769,000 attributes (libxml2 caps a tag at 10 MB), one with 400,000
  namespace declarations, a 9 MB identifier;
* for reference, valid documents: a shared example DCC, a 12 MB valid DCC (the
  example's measurement result repeated), the demo certification JSON.

What it does (see bench/README.md):

1. in this process, ``DocumentReader.statement`` (the document path of every
   submission: size, parse, structural limits, schema validation, extraction,
   embedded signature) on each document, with the PTB schemas compiled
   beforehand as in a running registry: CPU seconds and the peak resident
   memory above the resident memory before it (the peak is reset through
   ``/proc/self/clear_refs`` before each document);
2. a ledger as ``bench/http.py`` makes one (its helpers, imported), with a
   certification body and a calibration laboratory accredited and one
   ``issuer`` token each, and ``qiledger serve --workers 1`` (schemas
   configured, rate limit off) as a subprocess; each document submitted once as
   ``POST /api/v1/certificates`` (multipart document + DSSE envelope signed by
   the accredited issuer's key, over that document's digest, so the request
   passes the token, signature and authority checks and reaches the document):
   the server process's CPU seconds and peak resident memory above its
   resident memory before the request (peak reset per request);
3. ``GET /healthz`` arriving at ``--rate``/s (open loop: latency from the
   scheduled arrival) for ``--duration`` s, first alone, then with three
   hostile submissions of one kind in flight all the time (each client sends
   the next as soon as its previous one is answered), for each main kind.

Not a test: it prints figures and the targets and asserts nothing. It exits
non-zero only if the shared folder is missing or the server does not start.

    .venv/bin/python bench/hostile.py
    .venv/bin/python bench/hostile.py --duration 5 --skip-inprocess

The PTB schemas and the example DCC are read from the ``shared/`` folder beside
the repository, or the folder QILEDGER_SHARED_DIR names (as the tests find it).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import json
import multiprocessing
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH] + [str(BENCH)]
sys.path.insert(0, str(REPO))

from ingest import load_bench_http  # noqa: E402

bench_http = load_bench_http()
from ingest import (  # noqa: E402
    BODY_ID,
    BODY_KEY,
    b64key,
    print_machine,
    scratch_dir,
    signed_envelope,
    signer_key,
    wait_idle,
)

from registry.config import Settings  # noqa: E402
from registry.demo import DEMO_DOCUMENTS  # noqa: E402
from registry.documents.intake import DocumentReader  # noqa: E402
from registry.storage.tokens import TokenStore  # noqa: E402
from tests.helpers import SHARED_DIR  # noqa: E402
from verifier.entry import format_time  # noqa: E402
from verifier.errors import QILedgerError  # noqa: E402

TARGET_CPU_S = 2.0
TARGET_EXTRA_MB = 200.0
TARGET_HEALTHZ_P99_MS = 100.0
SCHEMAS = SHARED_DIR / "dcc" / "schemas" / "dcc"
VALID_PATH = SHARED_DIR / "dcc" / "examples" / "lutaml-dcc" / "valid.xml"
DEMO_JSON = DEMO_DOCUMENTS / "demo-certification.json"
CB = "BENCH-CB-0"
LAB = "BENCH-LAB-0"
LAB_KEY = 100  # ingest.signer_key index of the laboratory's key


# --- the documents --------------------------------------------------------------------


def _valid() -> bytes:
    """The shared example DCC the documents are built from (main checks it exists)."""
    return VALID_PATH.read_bytes()


@dataclass(frozen=True)
class Document:
    name: str
    data: bytes
    issuer: str
    kind: str
    hostile: bool = True


def _certification(sites: int) -> bytes:
    doc = json.loads(DEMO_JSON.read_text("utf-8"))
    doc["certification_body"]["id"] = CB
    doc["certified_entity"]["sites"] = [{}] * sites
    return json.dumps(doc, separators=(",", ":")).encode()


def _demo() -> bytes:
    doc = json.loads(DEMO_JSON.read_text("utf-8"))
    doc["certification_body"]["id"] = CB
    return json.dumps(doc, indent=2, ensure_ascii=False).encode()


def _attributes_over(tags: list[bytes], total: int, size: int) -> bytes:
    """``total`` undeclared attributes spread over ``tags``, padded so the
    document is about ``size`` bytes."""
    per = total // len(tags)
    valid = _valid()
    pad = max(0, round((size - len(valid)) / total) - len(b' a0000000=""'))
    data = valid
    for t, tag in enumerate(tags):
        attrs = b"".join(b' a%d%06d="%s"' % (t, i, b"v" * pad) for i in range(per))
        data = data.replace(tag, tag + attrs, 1)
    return data


def _elements(total: int, size: int) -> bytes:
    valid = _valid()
    name_length = max(1, round((size - len(valid)) / total) - 3)
    element = b"<" + b"u" * name_length + b"/>"
    return valid.replace(b"</dcc:coreData>", element * total + b"</dcc:coreData>", 1)


def _large_valid(size: int) -> bytes:
    valid = _valid()
    start = valid.index(b"<dcc:measurementResult>")
    end = valid.index(b"</dcc:measurementResult>") + len(b"</dcc:measurementResult>")
    unit = valid[start:end]
    data = valid[:start] + unit * max(1, (size - len(valid)) // len(unit)) + valid[end:]
    return data.replace(b">1234<", b">1234-LARGE<", 1)  # another certificate


def documents() -> list[Document]:
    valid = _valid()
    lab = valid.index(b"<dcc:content", valid.index(b"<dcc:calibrationLaboratory"))
    four = [
        b"<dcc:administrativeData",
        b"<dcc:coreData",
        b"<dcc:measurementResults",
        b"<dcc:calibrationLaboratory",
    ]
    return [
        Document("certification JSON, 333,000 sites (1 MB)", _certification(333_000), CB, "json"),
        Document("certification JSON, 666,000 sites (2 MB)", _certification(666_000), CB, "json"),
        Document(
            "DCC 18.8 MB, 400,000 undeclared attributes on 4 elements",
            _attributes_over(four, 400_000, 18_800_000),
            LAB,
            "dcc",
        ),
        Document(
            "DCC 18.8 MB, 400,000 undeclared elements",
            _elements(400_000, 18_800_000),
            LAB,
            "dcc",
        ),
        Document(
            "DCC, 100,000 schema errors within the limits",
            valid[:lab] + b'<dcc:content undeclared="1">x</dcc:content>' * 100_000 + valid[lab:],
            LAB,
            "dcc",
        ),
        Document(
            "DCC, one start tag with 769,000 attributes (9 MB)",
            valid.replace(
                b"<dcc:coreData",
                b"<dcc:coreData" + b"".join(b' a%07d=""' % i for i in range(769_000)),
                1,
            ),
            LAB,
            "dcc",
        ),
        Document(
            "DCC, one element declaring 400,000 namespaces (8 MB)",
            valid.replace(
                b"<dcc:coreData",
                b"<dcc:coreData" + b"".join(b' xmlns:p%07d="u:"' % i for i in range(400_000)),
                1,
            ),
            LAB,
            "dcc",
        ),
        Document(
            "DCC, a 9 MB uniqueIdentifier",
            valid.replace(b">1234<", b">%s<" % (b"9" * 9_000_000), 1),
            LAB,
            "dcc",
        ),
        Document("valid DCC (lutaml valid.xml, 21 KB)", valid, LAB, "dcc", hostile=False),
        Document(
            "valid DCC, 12 MB (measurement result repeated)",
            _large_valid(12_000_000),
            LAB,
            "dcc",
            hostile=False,
        ),
        Document("valid certification JSON (the demo's)", _demo(), CB, "json", hostile=False),
    ]


MAIN_KINDS = [0, 1, 2, 3]
"""The issue's documents: /healthz is measured with three of each in flight."""


# --- memory and CPU of a process ------------------------------------------------------


def _status_kb(pid: int | str, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def reset_peak(pid: int | str) -> bool:
    """Reset the process's peak resident memory (VmHWM) to its current RSS."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


@dataclass
class Cost:
    cpu: float
    extra_mb: float
    outcome: str


def print_costs(title: str, rows: list[tuple[Document, Cost]]) -> None:
    print(f"\n== {title}")
    print(f"  {'document':58} {'size':>8} {'CPU s':>7} {'+MB':>7}  outcome")
    for doc, cost in rows:
        flag = ""
        if doc.hostile and (cost.cpu > TARGET_CPU_S or cost.extra_mb > TARGET_EXTRA_MB):
            flag = "  <-- over target"
        print(
            f"  {doc.name:58} {len(doc.data) / 1e6:6.1f}MB {cost.cpu:7.3f} "
            f"{cost.extra_mb:7.1f}  {cost.outcome}{flag}"
        )
    hostile = [c for d, c in rows if d.hostile]
    if hostile:
        print(
            f"  hostile documents: max {max(c.cpu for c in hostile):.3f} s CPU "
            f"(target <= {TARGET_CPU_S} s), max {max(c.extra_mb for c in hostile):.1f} MB "
            f"extra peak resident (target <= {TARGET_EXTRA_MB:.0f} MB)"
        )


# --- 1. the document path in this process --------------------------------------------


def _measure_in_child(reader: DocumentReader, doc: Document, out: Any) -> None:
    now = datetime.now(UTC)
    reader.statement(_valid(), LAB, now)  # warm
    gc.collect()
    reset_peak("self")
    rss0 = _status_kb("self", "VmRSS")
    cpu0 = time.process_time()
    try:
        reader.statement(doc.data, doc.issuer, now)
        outcome = "accepted"
    except QILedgerError as exc:
        outcome = f"{exc.code}: {exc.message[:70]}"
    cpu = time.process_time() - cpu0
    out.send(Cost(cpu, (_status_kb("self", "VmHWM") - rss0) / 1024, outcome))
    out.close()


def in_process(docs: list[Document], tmp: Path) -> None:
    """Each document in a process forked for it (a clean heap: its extra memory
    is not hidden by what an earlier document left to the allocator)."""
    settings = Settings(data_dir=tmp / "inprocess", dcc_schemas=SCHEMAS)
    reader = DocumentReader(settings)
    assert reader.schemas is not None
    for version in ("3.1.1", "3.1.2", "3.2.0", "3.2.1", "3.3.0"):
        reader.schemas.schema(version)  # compiled once, as a running registry has them
    context = multiprocessing.get_context("fork")
    rows = []
    for doc in docs:
        receive, send = context.Pipe(duplex=False)
        child = context.Process(target=_measure_in_child, args=(reader, doc, send))
        child.start()
        send.close()
        rows.append((doc, receive.recv()))
        child.join()
    print_costs(
        "1. DocumentReader.statement in a process forked per document "
        "(PTB schemas compiled beforehand, as in a running registry)",
        rows,
    )


# --- 2. and 3. over HTTP --------------------------------------------------------------


def create_ledger(data_dir: Path) -> tuple[list[str], Settings]:
    """bench/http.py's ledger (one certification body) plus a calibration lab."""
    settings = Settings(data_dir=data_dir)
    ledger = bench_http.create_ledger(settings, 1)
    ledger.sequencer.submit(
        signed_envelope(
            {
                "type": "accreditation.grant",
                "signed_at": format_time(ledger.clock()),
                "body_id": BODY_ID,
                "issuer_id": LAB,
                "issuer_name": "Benchmark Calibration Laboratory",
                "issuer_kind": "calibration_laboratory",
                "public_keys": [b64key(signer_key(LAB_KEY))],
                "accreditation_number": f"{BODY_ID}-L0001",
                "standard": "ISO/IEC 17025:2017",
                "scope": "Temperature",
                "covers": ["dcc"],
                "valid_from": "2020-01-01",
                "valid_until": "2099-12-31",
            },
            BODY_KEY,
        )
    )
    store = TokenStore(ledger.db)
    tokens = [store.create("issuer", CB)[0], store.create("issuer", LAB)[0]]
    ledger.close()
    return tokens, settings


def signed_submission(doc: Document, number: int) -> Any:
    """A certificate.issue over ``doc``'s digest, signed by its accredited issuer:
    for a valid document the statement it calls for, for a hostile one (which has
    none) a well-formed statement naming it."""
    key = signer_key(0 if doc.issuer == CB else LAB_KEY)
    now = datetime.now(UTC)
    if doc.hostile:
        derived = {
            "type": "certificate.issue",
            "issuer_id": doc.issuer,
            "certificate_id": f"{doc.issuer}/HOSTILE-{number:06d}",
            "kind": "management_system" if doc.kind == "json" else "dcc",
            "document_sha256": hashlib.sha256(doc.data).hexdigest(),
            "issued": "2026-01-01",
        }
    else:
        derived = _READER.statement(doc.data, doc.issuer, now).fields
    fields = {"signed_at": format_time(now), **derived}
    return bench_http.Submission(
        0, fields["certificate_id"], doc.data, signed_envelope(fields, key)
    )


_READER = DocumentReader(Settings(data_dir=Path("/nonexistent"), dcc_schemas=SCHEMAS))


def request_for(doc: Document, number: int, tokens: list[str]) -> Any:
    token = tokens[0] if doc.issuer == CB else tokens[1]
    return bench_http.certificate_post(token, signed_submission(doc, number))


def _code(status: int, body: bytes) -> str:
    try:
        answer = json.loads(body)
    except ValueError:
        return str(status)
    code = answer.get("code") if isinstance(answer, dict) else None
    detail = str(answer.get("detail", ""))[:70] if isinstance(answer, dict) else ""
    return f"{status} {code}: {detail}" if code else str(status)


def start_server(data_dir: Path, tmp: Path) -> Any:
    port = bench_http.free_port()
    env = {**bench_http.SERVER_ENV, "QILEDGER_DCC_SCHEMAS": str(SCHEMAS)}
    server = bench_http.Server(
        bench_http.serve_argv(data_dir, None, port, 1), env, port, tmp / f"server-{port}.log"
    )
    server.wait_ready()
    return server


async def per_request(data_dir: Path, tmp: Path, docs: list[Document], tokens: list[str]) -> None:
    """Each document sent to a server started for it (after one small valid DCC
    to warm it up), so what one document costs is not hidden by memory an
    earlier one left to the allocator."""
    rows = []
    warm = request_for(docs[-3], 0, tokens)  # the small valid DCC
    for n, doc in enumerate(docs, start=1):
        request = request_for(doc, n, tokens)
        server = start_server(data_dir, tmp)
        try:
            pid = server.pids[-1]  # --workers 1: the uvicorn process itself
            client = bench_http.RawClient(server.port, 1)
            await client.send(warm)
            await asyncio.sleep(0.2)
            reset_peak(pid)
            rss0 = _status_kb(pid, "VmRSS")
            cpu0 = bench_http.cpu_seconds([pid])
            status, body = await client.send(request)
            cpu = bench_http.cpu_seconds([pid]) - cpu0
            extra = (_status_kb(pid, "VmHWM") - rss0) / 1024
            rows.append((doc, Cost(cpu, extra, _code(status, body))))
            await client.aclose()
        finally:
            server.stop()
    print_costs(
        "2. POST /api/v1/certificates to qiledger serve --workers 1 (a server started per "
        "document): server process CPU and peak resident memory above its resident "
        "memory before the request",
        rows,
    )


async def healthz_run(server: Any, rate: float, duration: float) -> Any:
    client = bench_http.RawClient(server.port, 64)
    healthz = bench_http.make_request("GET", "/healthz")
    run = bench_http.Run("GET /healthz")
    await bench_http.open_loop(client, lambda: healthz, run, server, rate, duration)
    await client.aclose()
    return run


async def healthz_with_hostile(
    server: Any, doc: Document, tokens: list[str], rate: float, duration: float, first: int
) -> tuple[Any, int, list[str]]:
    """/healthz at ``rate`` while three clients keep one hostile submission each in flight."""
    stop = asyncio.Event()
    answers: list[str] = []
    numbers = iter(range(first, first + 1_000_000))
    requests = [request_for(doc, next(numbers), tokens) for _ in range(3)]

    async def submitter(request: Any) -> None:
        client = bench_http.RawClient(server.port, 1)
        while not stop.is_set():
            status, body = await client.send(request)
            answers.append(_code(status, body)[:40])
        await client.aclose()

    tasks = [asyncio.create_task(submitter(r)) for r in requests]
    await asyncio.sleep(1.0)  # all three in flight before the first /healthz
    run = await healthz_run(server, rate, duration)
    stop.set()
    await asyncio.gather(*tasks)
    return run, len(answers), sorted(set(answers))


def latency_line(run: Any) -> str:
    ms = [x * 1e3 for x in run.latencies]
    if not ms:
        return "no answers"
    p99 = bench_http.pct(ms, 0.99)
    verdict = "meets" if p99 <= TARGET_HEALTHZ_P99_MS else "MISSES"
    bad = {k: v for k, v in run.statuses.items() if k != "200"}
    return (
        f"{len(ms)} answers, p50 {statistics.median(ms):.1f} ms, p99 {p99:.1f} ms, "
        f"max {max(ms):.1f} ms ({verdict} p99 <= {TARGET_HEALTHZ_P99_MS:.0f} ms)"
        + (f"; not 200: {bad}" if bad else "")
    )


async def over_http(docs: list[Document], tmp: Path, args: argparse.Namespace) -> None:
    data_dir = tmp / "ledger"
    tokens, _ = create_ledger(data_dir)
    wait_idle(args.wait_idle)
    await per_request(data_dir, tmp, docs, tokens)
    server = start_server(data_dir, tmp)
    try:
        print(
            f"\n== 3. GET /healthz arriving at {args.rate:.0f}/s for {args.duration:.0f} s "
            "(open loop: latency from the scheduled arrival)"
        )
        wait_idle(args.wait_idle)
        print(f"  alone: {latency_line(await healthz_run(server, args.rate, args.duration))}")
        first = 1000
        for index in MAIN_KINDS:
            doc = docs[index]
            wait_idle(args.wait_idle)
            cpu0 = server.cpu()
            run, answered, outcomes = await healthz_with_hostile(
                server, doc, tokens, args.rate, args.duration, first
            )
            first += 1000
            print(f"  with 3 x '{doc.name}' in flight: {latency_line(run)}")
            print(
                f"    {answered} hostile submissions answered meanwhile "
                f"({', '.join(outcomes)}); server CPU {server.cpu() - cpu0:.1f} s"
            )
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=100, help="/healthz requests/s")
    parser.add_argument("--duration", type=float, default=10, help="seconds per /healthz run")
    parser.add_argument("--skip-inprocess", action="store_true")
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--wait-idle", type=float, default=60)
    parser.add_argument("--tmp", help="parent of the temporary data dir")
    parser.add_argument("--keep", action="store_true", help="keep the data dir")
    args = parser.parse_args(argv)
    missing = next((path for path in (SCHEMAS, VALID_PATH) if not path.exists()), None)
    if missing is not None:
        sys.exit(
            f"bench/hostile.py: {missing} does not exist; it reads PTB's DCC schemas and "
            f"an example DCC from the shared folder {SHARED_DIR} (set QILEDGER_SHARED_DIR)"
        )
    print_machine()
    t0 = time.perf_counter()
    docs = documents()
    print(f"\n{len(docs)} documents built in {time.perf_counter() - t0:.1f} s (untimed)")
    print(
        f"targets: each hostile document <= {TARGET_CPU_S} s CPU and <= "
        f"{TARGET_EXTRA_MB:.0f} MB extra peak resident memory; /healthz p99 <= "
        f"{TARGET_HEALTHZ_P99_MS:.0f} ms with three hostile submissions in flight"
    )
    if not reset_peak("self"):
        print(
            "  (cannot reset peak RSS through /proc/<pid>/clear_refs: +MB figures are peaks so far)"
        )
    with scratch_dir(args.tmp, args.keep, "qiledger-hostile-") as tmp:
        if not args.skip_inprocess:
            wait_idle(args.wait_idle)
            in_process(docs, tmp)
        if not args.skip_http:
            bench_http.run_async(over_http(docs, tmp, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
