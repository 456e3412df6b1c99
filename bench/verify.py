"""Verification benchmark: full offline checks of a certificate per second, and the
``/m/{token}`` page a phone opens after a scan, served by ``qiledger serve``.

Targets (issue 12; 2 cores): >= 5,000 full offline checks/s on one core; the
``/m/{token}`` page at >= 0.5 of ``GET /healthz``'s closed-loop req/s, and its
p99 <= 20 ms at 500 pages/s arriving open loop on 127.0.0.1.

What it does (see bench/README.md):

1. creates a ledger in a temporary directory as ``bench/ingest.py`` does
   (``Ledger.init``: SQLite, WAL; a trust chain accrediting ``--signers``
   laboratories) and appends ``--certificates`` ``certificate.issue`` envelopes,
   each with its small document, through ``Sequencer.submit_many`` (untimed);
2. takes, per certificate, what a verifier holds offline: its mark token as the
   registry derives it (``registry.marks.claims_for`` on the trust state, then
   ``Ledger.sign_mark``: what ``RegistryService.certificate_mark`` answers), the
   C2SP tlog-proof of its creating entry under the latest checkpoint
   (``Ledger.inclusion_proof(index).to_bytes()``) and that entry's leaf data;
3. times, in this process on one thread, the full offline check of each in turn
   (``verifier.mark.verify`` of the token with the log's note verifier, then
   ``verifier.proof.verify`` of the tlog-proof and leaf, which is what
   ``qiverify inclusion`` runs: checkpoint signature, then inclusion; and the
   proof's index must be the mark's), beside raw Ed25519 verifies
   (``verifier.keys.PublicKey.verify``) of mark-sized messages (the tokens' text).
   A full check holds two Ed25519 verifies (mark, checkpoint), so its ratio to
   raw verifies is at most about 0.5;
4. starts ``python -m registry serve --workers 1`` on the ledger (rate limit off)
   and measures with ``bench/http.py``'s raw asyncio client (imported, not
   copied): closed loop, ``GET /healthz`` then ``GET /m/{token}`` with tokens
   picked at random over every certificate (no single cached page); open loop,
   both at ``--rate``/s (latency counted from the scheduled arrival), then the
   page at half the rate it reached closed loop (a diagnosis: its latency when the
   server is not queueing).

The client shares the cores with the server; each run prints the CPU of both.
Not a test: it prints figures next to their targets and asserts nothing about
speed. It exits non-zero only if a check fails or the server does not start.

    .venv/bin/python bench/verify.py            # about a minute on 2 cores
    .venv/bin/python bench/verify.py --quick    # about 15 s (smoke run)
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
# bench/http.py must not shadow the standard library's http: bench/ goes last.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH] + [str(BENCH)]
sys.path.insert(0, str(REPO))

from ingest import load_bench_http  # noqa: E402

bench_http = load_bench_http()

from ingest import (  # noqa: E402
    create_ledger,
    presign,
    print_machine,
    scratch_dir,
    submit_all,
    wait_idle,
)

from registry import marks  # noqa: E402
from registry.ledger import Ledger  # noqa: E402
from registry.listing import CertificateListing  # noqa: E402
from verifier import checkpoint, mark, merkle  # noqa: E402
from verifier import proof as tlog_proof  # noqa: E402
from verifier.errors import QILedgerError  # noqa: E402
from verifier.note import NoteVerifier  # noqa: E402

TARGET_CHECKS = 5_000
TARGET_PAGE_RATIO = 0.5
TARGET_RATE = 500
TARGET_P99_MS = 20.0


def met(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


# --- the ledger and what a verifier holds --------------------------------------------


@dataclass(frozen=True)
class Evidence:
    """What an offline verifier of one certificate holds."""

    certificate_id: str
    token: str
    proof: bytes
    leaf: bytes


def build(data_dir: Path, args: argparse.Namespace) -> tuple[NoteVerifier, list[Evidence]]:
    """A ledger of ``args.certificates`` certificates and each one's evidence (untimed)."""
    t0 = time.perf_counter()
    ledger = create_ledger(data_dir, args.signers)
    base = ledger.storage.tail_size()
    envelopes = presign(base, args.certificates, args.signers)
    submit_all(ledger.sequencer, envelopes, 1000)
    built = time.perf_counter() - t0
    evidence = collect(ledger)
    size = ledger.latest_checkpoint().size
    log = ledger.identity.verifier
    ledger.close()
    print(
        f"\n== setup: ledger in {data_dir} (SQLite), {args.signers} accredited laboratories, "
        f"{len(evidence):,} certificates with documents, log size {size:,}: built in "
        f"{built:.1f} s, marks and tlog-proofs taken in {time.perf_counter() - t0 - built:.1f} s "
        "(untimed)"
    )
    sample = evidence[len(evidence) // 2]
    print(
        f"  e.g. {sample.certificate_id}: mark token {len(sample.token)} characters, "
        f"tlog-proof {len(sample.proof):,} bytes, leaf data {len(sample.leaf):,} bytes"
    )
    return log, evidence


def collect(ledger: Ledger) -> list[Evidence]:
    """Each certificate's mark (as the registry derives it), the tlog-proof of its
    creating entry under the latest checkpoint, and that entry's leaf data."""
    state = ledger.trust_state()
    out = []
    every = ledger.list_certificates(CertificateListing(), after_index=-1, limit=10**9)
    for certificate in every.certificates:
        claims = marks.claims_for(state, certificate["certificate_id"])
        proof = ledger.inclusion_proof(claims.index).to_bytes()
        leaf = ledger.entry(claims.index).data
        token = ledger.sign_mark(claims)
        out.append(Evidence(certificate["certificate_id"], token, proof, leaf))
    return out


# --- offline checks on one core --------------------------------------------------------


def full_check(ev: Evidence, log: NoteVerifier) -> None:
    """The offline check of a certificate: its mark, then its entry's tlog-proof
    (checkpoint signature and inclusion, as ``qiverify inclusion``); the proof must
    be of the entry the mark names."""
    claims = mark.verify(ev.token, log)
    proof = tlog_proof.TlogProof.from_bytes(ev.proof)
    if proof.index != claims.index:
        raise QILedgerError("the tlog-proof is not of the entry the mark names")
    proof.verify(ev.leaf, log)


def rate(work: Callable[[int], None], n: int, seconds: float, repeat: int) -> tuple[float, float]:
    """Best calls/s of ``work(i)`` (i cycling over ``n`` items) over ``repeat`` runs of
    about ``seconds``, and the CPU share of wall time in the best run."""
    for i in range(min(n, 50)):  # warm-up
        work(i)
    best, share = 0.0, 0.0
    for _ in range(repeat):
        count, i = 0, 0
        cpu0, start = time.process_time(), time.perf_counter()
        deadline = start + seconds
        while True:
            for _ in range(50):
                work(i)
                i = i + 1 if i + 1 < n else 0
            count += 50
            now = time.perf_counter()
            if now >= deadline:
                break
        per_second = count / (now - start)
        if per_second > best:
            best, share = per_second, (time.process_time() - cpu0) / (now - start)
    return best, share


def offline(log: NoteVerifier, evidence: Sequence[Evidence], args: argparse.Namespace) -> float:
    print(
        f"\n== offline checks, this process, one thread: best of {args.repeat} x "
        f"{args.seconds:g} s, cycling over {len(evidence):,} certificates"
    )
    for ev in evidence:  # every one passes (untimed)
        full_check(ev, log)
    bad = evidence[0]
    forged = Evidence(bad.certificate_id, bad.token, bad.proof, bad.leaf + b"x")
    try:
        full_check(forged, log)
        sys.exit("bench: a tlog-proof of altered leaf data verified")
    except QILedgerError:
        pass
    print(f"  all {len(evidence):,} pass; an altered leaf is refused")

    # Reference: raw Ed25519 verifies of mark-sized messages (each certificate's token
    # text), signed by a fixed benchmark key: which key signs does not change the cost.
    from ingest import signer_key

    key = signer_key(0)
    public = key.public_key
    messages = [ev.token.encode() for ev in evidence]
    signatures = [key.sign(m) for m in messages]

    def raw(i: int) -> None:
        public.verify(signatures[i], messages[i])

    def parts(fn: Callable[[Evidence], object]) -> Callable[[int], None]:
        return lambda i: fn(evidence[i]) and None

    def note_of(e: Evidence) -> bytes:
        return tlog_proof.TlogProof.from_bytes(e.proof).checkpoint_note

    rows: list[tuple[str, Callable[[int], None]]] = [
        ("raw Ed25519 verify (verifier.keys.PublicKey.verify)", raw),
        (
            "full check: mark + checkpoint signature + inclusion",
            lambda i: full_check(evidence[i], log),
        ),
        ("  mark.verify", parts(lambda e: mark.verify(e.token, log))),
        (
            "  proof.verify (checkpoint + inclusion; qiverify inclusion)",
            parts(lambda e: tlog_proof.verify(e.proof, e.leaf, log)),
        ),
        (
            "    TlogProof.from_bytes + checkpoint.verify",
            parts(lambda e: checkpoint.verify(note_of(e), log)),
        ),
        ("    TlogProof.from_bytes", parts(lambda e: tlog_proof.TlogProof.from_bytes(e.proof))),
    ]
    proofs = [tlog_proof.TlogProof.from_bytes(e.proof) for e in evidence]
    cps = [checkpoint.verify(p.checkpoint_note, log).checkpoint for p in proofs]
    hashes = [merkle.leaf_hash(e.leaf) for e in evidence]

    def inclusion(i: int) -> None:
        p, cp = proofs[i], cps[i]
        merkle.verify_inclusion(hashes[i], p.index, cp.size, p.hashes, cp.root)

    rows.append((f"    merkle.verify_inclusion ({len(proofs[0].hashes)} hashes)", inclusion))
    wait_idle(args.wait_idle)
    figures = {}
    print(f"  {'':62} {'per s':>10} {'us':>8}  {'CPU/wall':>8} {'per CPU-s':>10}")
    for name, work in rows:
        per_second, share = rate(work, len(evidence), args.seconds, args.repeat)
        figures[name] = per_second
        print(
            f"  {name:62} {per_second:>10,.0f} {1e6 / per_second:8.1f}  {share:>8.0%} "
            f"{per_second / max(share, 1e-9):>10,.0f}"
        )
    raw_rate = figures[rows[0][0]]
    full = figures[rows[1][0]]
    print(
        f"  full checks / raw verifies: {full / raw_rate:.2f} "
        "(a full check holds two Ed25519 verifies: at most about 0.5)"
    )
    return full


# --- the page over HTTP ---------------------------------------------------------------


async def serve(
    data_dir: Path, evidence: Sequence[Evidence], args: argparse.Namespace, out: dict[str, Any]
) -> None:
    """Runs the server and the load; the runs go into ``out`` by name."""
    h = bench_http
    port = h.free_port()
    server = h.Server(
        h.serve_argv(data_dir, None, port, 1), h.SERVER_ENV, port, data_dir / "server.log"
    )
    try:
        server.wait_ready()
        health = [h.make_request("GET", "/healthz")]
        pages = [h.make_request("GET", f"/m/{ev.token}") for ev in evidence]
        routes = {"GET /healthz": health, "GET /m/{token}": pages}
        print(
            f"\n== qiledger serve --workers 1 (pid {server.process.pid}, port {port}, "
            f"QILEDGER_RATE_LIMIT=0); client: this process, bench/http.py's raw asyncio "
            f"client; {len(pages):,} tokens picked at random"
        )
        client = h.RawClient(port, args.concurrency)
        t0 = time.perf_counter()
        status, body = await client.send(pages[0])  # the first page replays the log
        print(
            f"  first page after start: {(time.perf_counter() - t0) * 1e3:,.0f} ms "
            f"(status {status}, {len(body):,} bytes; trust-state catch-up)"
        )
        if status != 200:
            sys.exit(f"bench: /m/{{token}} answered {status}: {body[:300]!r}")
        await client.aclose()

        print(f"\n== closed loop: {args.concurrency} clients, {args.http_seconds:g} s per route")
        for name, reqs in routes.items():
            wait_idle(args.wait_idle)
            client = h.RawClient(port, args.concurrency)
            await h.warm(client, reqs[0], args.concurrency, 0.5)
            run = await h.closed_loop(
                client, h.cycle(reqs), h.Run(name), server, args.concurrency, args.http_seconds
            )
            await client.aclose()
            h.report(run)
            out[f"closed {name}"] = run

        print(f"\n== open loop: {args.rate:g} req/s for {args.open_seconds:g} s per route")
        for name, reqs in routes.items():
            wait_idle(args.wait_idle)
            client = h.RawClient(port, args.max_connections)
            await h.warm(client, reqs[0], 4, 0.3)
            run = await h.open_loop(
                client, h.cycle(reqs, seed=1), h.Run(name), server, args.rate, args.open_seconds
            )
            await client.aclose()
            h.report(run)
            out[f"open {name}"] = run

        # Diagnosis, not a target: the page's latency when its arrival rate is within
        # what the server answered closed loop (the run above may be queueing).
        closed = out["closed GET /m/{token}"]
        within = round(0.5 * closed.count / closed.wall) if closed.wall else 0
        if within and within < args.rate:
            print(
                f"\n== open loop at half the closed-loop page rate: {within:,}/s for "
                f"{args.open_seconds:g} s (diagnosis: latency without a queue)"
            )
            wait_idle(args.wait_idle)
            client = h.RawClient(port, args.max_connections)
            run = await h.open_loop(
                client,
                h.cycle(pages, seed=2),
                h.Run("GET /m/{token}"),
                server,
                within,
                args.open_seconds,
            )
            await client.aclose()
            h.report(run)
            out["within GET /m/{token}"] = run
    finally:
        server.stop()


# --- main -----------------------------------------------------------------------------


def verdicts(full: float, runs: dict[str, Any], args: argparse.Namespace) -> None:
    h = bench_http
    print("\n== result (targets from issue 12, for 2 cores; the HTTP client shares them)")
    print(
        f"  full offline checks: {full:,.0f}/s on one core   target >= {TARGET_CHECKS:,}: "
        f"{met(full >= TARGET_CHECKS)}"
    )
    health, page = runs.get("closed GET /healthz"), runs.get("closed GET /m/{token}")
    if health and page and health.wall and page.wall:
        hr, pr = health.count / health.wall, page.count / page.wall
        ok = not set(page.statuses) - {"200"}
        print(
            f"  /m/{{token}} {pr:,.0f} req/s vs /healthz {hr:,.0f} req/s (closed loop): "
            f"ratio {pr / hr:.2f}   target >= {TARGET_PAGE_RATIO}: "
            f"{met(pr / hr >= TARGET_PAGE_RATIO and ok)}" + ("" if ok else " (not all 200)")
        )
    within = runs.get("within GET /m/{token}")
    if within is not None and within.latencies:
        ms = [x * 1e3 for x in within.latencies]
        print(
            f"  (diagnosis) GET /m/{{token}} at {within.offered:,.0f}/s, half its closed-loop "
            f"rate: p50 {statistics.median(ms):.1f} ms, p99 {bench_http.pct(ms, 0.99):.1f} ms"
        )
    for name in ("GET /m/{token}", "GET /healthz"):
        run = runs.get(f"open {name}")
        if run is None or not run.latencies:
            continue
        ms = [x * 1e3 for x in run.latencies]
        p99 = h.pct(ms, 0.99)
        line = (
            f"  {name} at {run.offered:,.0f}/s open loop: "
            f"p50 {statistics.median(ms):.1f} ms, p99 {p99:.1f} ms"
        )
        if name == "GET /m/{token}":
            ok = p99 <= TARGET_P99_MS and not set(run.statuses) - {"200"}
            ok = ok and args.rate >= TARGET_RATE
            line += f"   target p99 <= {TARGET_P99_MS:g} ms at {TARGET_RATE}/s: {met(ok)}"
            if args.rate < TARGET_RATE:
                line += f" (offered {args.rate:g}/s, below the target's rate)"
            achieved = run.count / run.wall if run.wall else 0.0
            if achieved < 0.95 * run.offered:
                line += (
                    f"\n    (the server fell behind: {achieved:,.0f}/s answered of "
                    f"{run.offered:,.0f}/s offered, so the p99 is mostly queueing; "
                    "--rate sets the offered rate)"
                )
        print(line)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="QI Ledger verification benchmark: full offline certificate checks/s "
        "and the /m/{token} page over HTTP."
    )
    parser.add_argument(
        "--quick", action="store_true", help="a ~15 s smoke run (fewer certificates, shorter runs)"
    )
    parser.add_argument(
        "--certificates", type=int, help="certificates in the ledger (default 3,000; --quick 300)"
    )
    parser.add_argument("--signers", type=int, default=8, help="accredited laboratories (keys)")
    parser.add_argument(
        "--seconds", type=float, help="seconds per offline rate run (default 1; --quick 0.4)"
    )
    parser.add_argument(
        "--repeat", type=int, help="offline runs per figure, best kept (default 3; --quick 1)"
    )
    parser.add_argument(
        "--http-seconds", type=float, help="closed-loop seconds per route (default 5; --quick 1.5)"
    )
    parser.add_argument(
        "--open-seconds", type=float, help="open-loop seconds per route (default 4; --quick 1.5)"
    )
    parser.add_argument(
        "--rate", type=float, default=TARGET_RATE, help="open-loop arrivals per second"
    )
    parser.add_argument("--concurrency", type=int, default=32, help="closed-loop clients")
    parser.add_argument("--max-connections", type=int, default=256, help="open-loop client cap")
    parser.add_argument("--no-http", action="store_true", help="skip the server part")
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=3,
        help="before each timed part, wait up to this many seconds for other processes "
        "to go quiet (0: don't wait; default 3, --quick 0)",
    )
    parser.add_argument("--tmp", help="parent of the temporary data dir")
    parser.add_argument("--keep", action="store_true", help="keep the data dir")
    args = parser.parse_args(argv)
    quick = args.quick
    for name, normal, fast in (
        ("certificates", 3000, 300),
        ("seconds", 1.0, 0.4),
        ("repeat", 3, 1),
        ("http_seconds", 5.0, 1.5),
        ("open_seconds", 4.0, 1.5),
    ):
        if getattr(args, name) is None:
            setattr(args, name, fast if quick else normal)
    if quick and "--wait-idle" not in (argv if argv is not None else sys.argv[1:]):
        args.wait_idle = 0
    random.seed(0)
    print_machine()
    with scratch_dir(args.tmp, args.keep, "qiledger-verify-") as data_dir:
        log, evidence = build(data_dir, args)
        full = offline(log, evidence, args)
        runs: dict[str, Any] = {}
        if not args.no_http:
            bench_http.run_async(serve(data_dir, evidence, args, runs))  # uvloop if installed
        verdicts(full, runs, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
