"""Traceability benchmark: a calibration hierarchy of N certificates, 6 tiers deep
(national roots at the top, working instruments at the bottom, each tier four
times the one above, every certificate linking to two of the tier above with
their SHA-256), appended through the real sequencer with signed statements; then

1. ``Ledger.dependents`` of a top-tier certificate: the first page (100) — what
   "which certificates are affected if this one is withdrawn?" answers first —
   and, for a tenth of the runs (at least 3), the whole set, in pages of
   ``MAX_DEPENDENTS_PAGE`` to the end;
2. ``Ledger.traceability`` of a bottom-tier certificate (the walk to the roots);

each as p50 / p99 over random picks, in-process. Not a test: it prints figures
and asserts nothing about speed.

    .venv/bin/python bench/trace.py                 # 2,000 certificates
    .venv/bin/python bench/trace.py --n 100000 --keep ./trace-data
    .venv/bin/python bench/trace.py --n 1000000 --keep ./trace-data   # reuses a kept log
"""

from __future__ import annotations

import argparse
import hashlib
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH] + [str(BENCH)]
sys.path.insert(0, str(REPO))

from ingest import create_ledger, issuer_id, print_machine, signed_statement, signer_key  # noqa: E402

from registry.config import Settings  # noqa: E402
from registry.ledger import Ledger  # noqa: E402
from registry.sequencer import Accepted  # noqa: E402
from registry.storage.protocol import StoredDocument  # noqa: E402
from registry.traceability import MAX_DEPENDENTS_PAGE  # noqa: E402
from verifier import statement  # noqa: E402
from verifier.links import EQUIPMENT, DocumentLinks, Link  # noqa: E402

TIERS = 6
SIGNERS = 8
FAN_IN = 2  # links of each certificate to the tier above
BATCH = 1000


def tier_sizes(n: int) -> list[int]:
    """Six tiers, each four times the one above, summing to ``n``."""
    weights = [4**k for k in range(TIERS)]
    sizes = [max(2, n * w // sum(weights)) for w in weights]
    sizes[-1] += n - sum(sizes)
    return sizes


def cert_id(tier: int, number: int) -> str:
    return f"{issuer_id(number % SIGNERS)}/T{tier}-{number:08d}"


def document(tier: int, number: int) -> bytes:
    return f"trace bench {tier} {number}".encode()


def build(ledger: Ledger, n: int, seed: int) -> list[list[str]]:
    rng = random.Random(seed)
    sizes = tier_sizes(n)
    tiers: list[list[str]] = []
    now = datetime.now(UTC)
    started = time.perf_counter()
    made = 0
    for tier, size in enumerate(sizes):
        ids = [cert_id(tier, k) for k in range(size)]
        for offset in range(0, size, BATCH):
            envelopes, documents = [], {}
            for k in range(offset, min(offset + BATCH, size)):
                data = document(tier, k)
                up = rng.sample(range(len(tiers[-1])), min(FAN_IN, len(tiers[-1]))) if tier else []
                refs = DocumentLinks(
                    tuple(
                        Link(
                            EQUIPMENT,
                            tiers[-1][u],
                            "SHA-256",
                            hashlib.sha256(document(tier - 1, u)).hexdigest(),
                        )
                        for u in up
                    ),
                    ("GUM",),
                )
                built = statement.CertificateIssue(
                    issuer_id=issuer_id(k % SIGNERS),
                    certificate_id=ids[k],
                    kind="dcc",
                    document_sha256=hashlib.sha256(data).hexdigest(),
                    issued=date(2026, 5, 1),
                    links=refs.links_json(),
                    standards=refs.standards_json(),
                )
                documents[len(envelopes)] = StoredDocument(
                    hashlib.sha256(data).hexdigest(), "application/octet-stream", data
                )
                envelopes.append(signed_statement(built, now, signer_key(k % SIGNERS)))
            for outcome in ledger.sequencer.submit_many(envelopes, documents):
                if not isinstance(outcome, Accepted):
                    sys.exit(f"bench: refused: {outcome}")
            made += len(envelopes)
            if made // 50_000 != (made - len(envelopes)) // 50_000:
                print(
                    f"  {made:>9,} certificates, {time.perf_counter() - started:.0f} s", flush=True
                )
        tiers.append(ids)
    print(
        f"  built {made:,} certificates in tiers {sizes} in {time.perf_counter() - started:.1f} s"
    )
    return tiers


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p50 = statistics.median(ordered)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"p50 {p50 * 1e3:8.2f} ms   p99 {p99 * 1e3:8.2f} ms   ({len(ordered)} runs)"


def measure(ledger: Ledger, tiers: list[list[str]], runs: int, seed: int) -> None:
    rng = random.Random(seed + 1)
    ledger.trust_state()
    top, leaves = tiers[0], tiers[-1]
    first, everything, traced = [], [], []
    counts: list[int] = []
    for _ in range(runs):
        pick = rng.choice(top)
        t0 = time.perf_counter()
        ledger.dependents(pick, offset=0, limit=100, max_depth=TIERS)
        first.append(time.perf_counter() - t0)
        leaf = rng.choice(leaves)
        t0 = time.perf_counter()
        answer = ledger.traceability(leaf)
        traced.append(time.perf_counter() - t0)
        assert answer["ends"], "a leaf traces to the roots"
    # The whole set: pages of MAX_DEPENDENTS_PAGE to the end (a top-tier set of
    # this graph fits in one).
    for pick in rng.sample(top, min(max(3, runs // 10), len(top))):
        t0 = time.perf_counter()
        offset, total = 0, 0
        while True:
            page = ledger.dependents(
                pick, offset=offset, limit=MAX_DEPENDENTS_PAGE, max_depth=TIERS
            )
            total += len(page["dependents"])
            if page["next"] is None:
                break
            offset = int(page["next"])
        everything.append(time.perf_counter() - t0)
        counts.append(total)
    print(f"\n  dependents of a top-tier certificate, first page of 100: {percentiles(first)}")
    print(
        f"  dependents, the whole set (pages of {MAX_DEPENDENTS_PAGE:,}; "
        f"{min(counts):,}-{max(counts):,} certificates): {percentiles(everything)}"
    )
    print(f"  traceability of a bottom-tier certificate:             {percentiles(traced)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="certificates (up to 1,000,000)")
    parser.add_argument("--runs", type=int, default=200, help="timed picks of each read")
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--keep", type=Path, help="data directory to build in and reuse")
    parser.add_argument("--database-url", help="PostgreSQL instead of SQLite")
    args = parser.parse_args()
    if not 12 <= args.n <= 1_000_000:
        parser.error("--n must be from 12 to 1,000,000")
    print_machine()
    with tempfile.TemporaryDirectory(prefix="qiledger-trace-") as tmp:
        data_dir = args.keep or Path(tmp) / "data"
        settings = Settings(data_dir=data_dir, database_url=args.database_url)
        if settings.log_key_file.exists():
            ledger = Ledger.open(settings)
            print(f"  reusing {ledger.storage.tail_size():,} entries in {data_dir}")
            tiers = [
                [cert_id(t, k) for k in range(size)] for t, size in enumerate(tier_sizes(args.n))
            ]
        else:
            ledger = create_ledger(data_dir, SIGNERS, args.database_url)
            tiers = build(ledger, args.n, args.seed)
        if not ledger.db.is_sqlite:
            # What autovacuum does after a bulk load (where it is off, nothing would):
            # without statistics PostgreSQL plans the IN-list reads badly (a first
            # page took 180 ms instead of 5-15), and without the visibility map an
            # index-only scan still visits every row's heap page. VACUUM runs
            # outside a transaction.
            with ledger.db.write_engine.connect() as conn:
                conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql(
                    "VACUUM (ANALYZE)"
                )
        try:
            measure(ledger, tiers, args.runs, args.seed)
        finally:
            ledger.close()


if __name__ == "__main__":
    main()
