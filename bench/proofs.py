"""Proof benchmark: inclusion and consistency proof generation on a large log, vs pymerkle.

What it does (see bench/README.md for figures):

1. builds (once; cached under ``--workdir``) a ledger of ``--n`` entries through
   the real sequencer: the same trust chain as ``bench/ingest.py``, then
   pre-signed ``certificate.issue`` envelopes appended with
   ``ledger.sequencer.submit_many`` in batches of ``--build-batch`` (one signed
   checkpoint per batch);
2. builds (once; cached) a pymerkle 7 ``SqliteTree`` holding the very same leaf
   data, and checks that both trees have the same root (RFC 9162 hashing on both);
3. times ``ledger.proofs.inclusion(index, n)`` for random indices and
   ``ledger.proofs.consistency(m, n)`` for random ``m``: *cold* (a fresh
   ``SqlStorage`` per proof, so the node cache is empty) and *warm* (the same
   requests again, after one untimed pass has cached their nodes); also
   *steady* (new random requests after many earlier ones, like a long-running
   server);
4. times pymerkle's ``prove_inclusion`` / ``prove_consistency`` the same way
   (cold = ``cache_clear()`` before each proof) and prints pymerkle / ours;
5. after the timing, verifies every proof the timed calls returned — cold, warm
   and steady, inclusion and consistency — with ``verifier.merkle`` against the
   signed checkpoint (consistency against pymerkle's independently computed old
   root), and checks that each inclusion proof's hashes equal pymerkle's path.

SQLite's and the OS's page caches stay warm in every mode (both libraries
alike); "cold" means the library's own cache only.

Not a test: it prints figures and asserts nothing about speed.

    .venv/bin/python bench/proofs.py                  # 1,000,000 entries
    .venv/bin/python bench/proofs.py --n 100000 --workdir /tmp/qb
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ingest import (
    CpuUse,
    create_ledger,
    presign,
    print_machine,
    submit_all,
    wait_idle,
)
from pymerkle import SqliteTree
from pymerkle import __version__ as pymerkle_version

from registry.config import Settings
from registry.ledger import Ledger
from registry.proofs import ProofBuilder
from registry.storage.sql_log import SqlStorage
from verifier import merkle
from verifier.errors import QILedgerError

TARGET_P50_MS = 0.2
TARGET_SPEEDUP = 4.0
SIGNERS = 8
PRESIGN_CHUNK = 100_000


# --- building the logs -------------------------------------------------------------------


def build_ledger(data_dir: Path, n: int, batch: int) -> Ledger:
    """Open the cached ledger, appending through the sequencer until it has ``n`` entries."""
    if (data_dir / "ledger.db").exists():
        ledger = Ledger.open(Settings(data_dir=data_dir))
        print(f"  cached ledger in {data_dir}: {ledger.storage.tail_size():,} entries")
    else:
        ledger = create_ledger(data_dir, SIGNERS)
        print(f"  new ledger in {data_dir} (setup: {ledger.storage.tail_size()} entries)")
    size = ledger.storage.tail_size()
    if size > n:
        sys.exit(
            f"bench: {data_dir} holds {size:,} entries, more than --n {n:,}; use another --workdir"
        )
    if size == n:
        return ledger
    setup = 1 + SIGNERS  # body + grants; certificate numbers continue after them
    sequencer = ledger.sequencer
    started = time.perf_counter()
    signing = 0.0
    cpu = CpuUse()
    appended_from = size
    while size < n:
        count = min(PRESIGN_CHUNK, n - size)
        t0 = time.perf_counter()
        envelopes = presign(size - setup, count, SIGNERS)
        signing += time.perf_counter() - t0
        wall, _ = submit_all(sequencer, envelopes, batch, cpu)
        size += count
        print(
            f"  appended {size - count:>9,} .. {size - 1:>9,}: {count / wall:7,.0f} entries/s "
            f"(sign {time.perf_counter() - t0 - wall:.1f} s untimed)"
        )
    total = time.perf_counter() - started
    appended = size - appended_from
    print(
        f"  built {appended:,} entries in {total:.0f} s ({total - signing:.0f} s appending, "
        f"{appended / (total - signing):,.0f} entries/s through submit_many; "
        f"{signing:.0f} s pre-signing)"
    )
    return ledger


def build_pymerkle(path: Path, ledger: Ledger, n: int) -> SqliteTree:
    """A pymerkle SqliteTree with our leaf data, in index order (cached)."""
    tree = SqliteTree(str(path))
    size = tree.get_size()
    if size == n:
        print(f"  cached pymerkle tree in {path}: {size:,} leaves")
        return tree
    if size != 0:
        sys.exit(f"bench: {path} holds {size:,} leaves, expected 0 or {n:,}; delete it")
    t0 = time.perf_counter()
    tree.append_entries(stored.data for stored in ledger.storage.iter_entries(0, 10_000))
    took = time.perf_counter() - t0
    print(f"  built pymerkle tree in {path}: {tree.get_size():,} leaves in {took:.0f} s")
    return tree


# --- timing --------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    rank = max(1, -(-len(sorted_values) * q // 100))  # ceil
    return sorted_values[int(rank) - 1]


@dataclass(frozen=True)
class Timing:
    label: str
    samples: int
    p50: float  # seconds
    p99: float

    def line(self) -> str:
        return (
            f"  {self.label:44} n={self.samples:>5}  p50 {self.p50 * 1e3:9.3f} ms"
            f"  p99 {self.p99 * 1e3:9.3f} ms"
        )


def time_calls(
    label: str,
    calls: Sequence[Callable[[], object]],
    before: Callable[[], object] | None = None,
    keep: list[object] | None = None,
) -> Timing:
    """Time each call alone; ``before`` (untimed) runs ahead of each one. With
    ``keep``, each call's result is appended to it (outside the timed region)."""
    clock = time.perf_counter
    took: list[float] = []
    gc.collect()
    for call in calls:
        if before is not None:
            before()
        t0 = clock()
        result = call()
        took.append(clock() - t0)
        if keep is not None:
            keep.append(result)
    took.sort()
    timing = Timing(label, len(took), statistics.median(took), percentile(took, 99))
    print(timing.line())
    return timing


@dataclass(frozen=True)
class Made:
    """The proofs one timed measurement returned, with the request of each."""

    kind: str  # "inclusion" (request = leaf index) or "consistency" (request = old size)
    mode: str
    requests: list[int]
    proofs: list[object]


def fresh_builder(ledger: Ledger) -> ProofBuilder:
    return ProofBuilder(SqlStorage(ledger.db))


# --- the benchmark -------------------------------------------------------------------------


def measure_ours(
    ledger: Ledger, n: int, indices: list[int], firsts: list[int], steady: int, rng: random.Random
) -> tuple[dict[str, Timing], list[Made]]:
    out: dict[str, Timing] = {}
    made: list[Made] = []

    def kept(kind: str, mode: str, requests: list[int]) -> list[object]:
        made.append(Made(kind, mode, requests, []))
        return made[-1].proofs

    print(f"\n== ours: registry.proofs.ProofBuilder on SqlStorage (tree size {n:,})")
    # Cold: a fresh SqlStorage (empty node cache) per proof, built outside the timing.
    builders: list[ProofBuilder] = []

    def new_builder() -> None:
        builders.append(fresh_builder(ledger))

    out["inclusion cold"] = time_calls(
        "inclusion, cold (fresh SqlStorage each)",
        [lambda i=i: builders[-1].inclusion(i, n) for i in indices],
        new_builder,
        kept("inclusion", "cold", indices),
    )
    out["consistency cold"] = time_calls(
        "consistency, cold (fresh SqlStorage each)",
        [lambda m=m: builders[-1].consistency(m, n) for m in firsts],
        new_builder,
        kept("consistency", "cold", firsts),
    )
    builders.clear()
    # Warm: ledger.proofs itself; one untimed pass caches every node the requests need.
    proofs = ledger.proofs
    for i in indices:
        proofs.inclusion(i, n)
    out["inclusion warm"] = time_calls(
        "inclusion, warm (same requests again)",
        [lambda i=i: proofs.inclusion(i, n) for i in indices],
        keep=kept("inclusion", "warm", indices),
    )
    for m in firsts:
        proofs.consistency(m, n)
    out["consistency warm"] = time_calls(
        "consistency, warm (same requests again)",
        [lambda m=m: proofs.consistency(m, n) for m in firsts],
        keep=kept("consistency", "warm", firsts),
    )
    # Steady state: a server that has answered `steady` random requests, asked new ones.
    for _ in range(steady):
        proofs.inclusion(rng.randrange(n), n)
    fresh = [rng.randrange(n) for _ in indices]
    out["inclusion steady"] = time_calls(
        f"inclusion, steady (new, after {steady:,} others)",
        [lambda i=i: proofs.inclusion(i, n) for i in fresh],
        keep=kept("inclusion", "steady", fresh),
    )
    return out, made


def measure_pymerkle(
    tree: SqliteTree, n: int, indices: list[int], firsts: list[int], cold_samples: int
) -> dict[str, Timing]:
    out: dict[str, Timing] = {}
    print(f"\n== pymerkle {pymerkle_version}: SqliteTree (tree size {n:,}; indices count from 1)")
    out["inclusion cold"] = time_calls(
        "inclusion, cold (cache_clear() each)",
        [lambda i=i: tree.prove_inclusion(i + 1, n) for i in indices[:cold_samples]],
        tree.cache_clear,
    )
    out["consistency cold"] = time_calls(
        "consistency, cold (cache_clear() each)",
        [lambda m=m: tree.prove_consistency(m, n) for m in firsts[:cold_samples]],
        tree.cache_clear,
    )
    tree.cache_clear()
    for i in indices:
        tree.prove_inclusion(i + 1, n)
    out["inclusion warm"] = time_calls(
        "inclusion, warm (same requests again)",
        [lambda i=i: tree.prove_inclusion(i + 1, n) for i in indices],
    )
    for m in firsts:
        tree.prove_consistency(m, n)
    out["consistency warm"] = time_calls(
        "consistency, warm (same requests again)",
        [lambda m=m: tree.prove_consistency(m, n) for m in firsts],
    )
    return out


def check_proofs(ledger: Ledger, tree: SqliteTree, n: int, made: list[Made]) -> None:
    """Verify every proof the timed calls returned (untimed): against the signed
    checkpoint's root, consistency from pymerkle's independently computed old root;
    and every inclusion proof equal to pymerkle's path."""
    counts = ", ".join(f"{len(m.proofs)} {m.kind} {m.mode}" for m in made)
    print(f"\n== verification of every timed proof ({counts})")
    signed = ledger.verified_checkpoint(n).checkpoint  # the log key's signature checks
    t0 = time.perf_counter()
    their_root = tree.get_root(n)
    took = time.perf_counter() - t0
    print(f"  pymerkle root of {n:,} leaves computed independently in {took:.1f} s")
    if their_root != signed.root:
        sys.exit("bench: pymerkle's root differs from the signed checkpoint's root")
    print(f"  signed checkpoint root == pymerkle root: {signed.root.hex()[:16]}...")
    leaves: dict[int, merkle.Hash] = {}
    paths: dict[int, list[bytes]] = {}
    old_roots: dict[int, bytes] = {}
    t0 = time.perf_counter()
    for batch in made:
        if len(batch.proofs) != len(batch.requests):
            sys.exit(f"bench: {batch.kind} {batch.mode} kept {len(batch.proofs)} proofs")
        for request, proof in zip(batch.requests, batch.proofs, strict=True):
            assert isinstance(proof, list)
            if batch.kind == "inclusion":
                if request not in leaves:
                    leaves[request] = merkle.leaf_hash(ledger.storage.entry(request).data)
                    theirs = tree.prove_inclusion(request + 1, n)
                    if theirs.path[0] != leaves[request]:
                        sys.exit(f"bench: pymerkle's leaf {request} is not ours")
                    paths[request] = list(theirs.path[1:])
                try:
                    merkle.verify_inclusion(leaves[request], request, n, proof, signed.root)
                except QILedgerError as exc:
                    sys.exit(f"bench: {batch.mode} inclusion proof for {request}: {exc}")
                if proof != paths[request]:
                    sys.exit(f"bench: {batch.mode} inclusion proof for {request} != pymerkle's")
            else:
                if request not in old_roots:
                    old_roots[request] = tree.get_root(request)
                try:
                    merkle.verify_consistency(request, n, proof, old_roots[request], signed.root)
                except QILedgerError as exc:
                    sys.exit(f"bench: {batch.mode} consistency proof from {request}: {exc}")
    took = time.perf_counter() - t0
    for batch in made:
        what = "equals pymerkle's path" if batch.kind == "inclusion" else "pymerkle's old root"
        print(
            f"  {batch.kind} {batch.mode}: all {len(batch.proofs):,} verify "
            f"(verifier.merkle, signed root; {what})"
        )
    print(
        f"  ({len(leaves):,} distinct leaves, {len(old_roots):,} distinct old sizes; {took:.1f} s)"
    )


def report(ours: dict[str, Timing], theirs: dict[str, Timing]) -> None:
    print("\n== pymerkle time / our time (higher = ours faster)")
    for key in ("inclusion cold", "inclusion warm", "consistency cold", "consistency warm"):
        a, b = ours[key], theirs[key]
        print(f"  {key:18}  p50 {b.p50 / a.p50:8.1f}x   p99 {b.p99 / a.p99:8.1f}x")
    print("\n== targets")
    for key in ("inclusion warm", "inclusion cold"):
        p50 = ours[key].p50 * 1e3
        speedup = theirs[key].p50 / ours[key].p50
        print(
            f"  {key}: p50 {p50:.3f} ms (target <= {TARGET_P50_MS} ms: "
            f"{'MET' if p50 <= TARGET_P50_MS else 'MISSED'}); {speedup:.1f}x pymerkle "
            f"(target >= {TARGET_SPEEDUP:.0f}x: {'MET' if speedup >= TARGET_SPEEDUP else 'MISSED'})"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="QI Ledger proof benchmark: inclusion/consistency proof latency vs pymerkle.",
    )
    parser.add_argument("--n", type=int, default=1_000_000, help="log size (entries)")
    parser.add_argument(
        "--workdir", default="/tmp/qiledger-bench", help="cache for the built logs (reused)"
    )
    parser.add_argument(
        "--build-batch", type=int, default=10_000, help="submit_many batch when building"
    )
    parser.add_argument("--samples", type=int, default=2000, help="random requests per measurement")
    parser.add_argument(
        "--pymerkle-cold-samples",
        type=int,
        default=20,
        help="pymerkle cold proofs (each ~1 s at 1M)",
    )
    parser.add_argument("--steady", type=int, default=20_000, help="earlier requests for 'steady'")
    parser.add_argument("--seed", type=int, default=9162)
    parser.add_argument("--wait-idle", type=float, default=120, help="see bench/ingest.py")
    args = parser.parse_args(argv)
    print_machine()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)

    print(f"\n== build / open the logs (n = {args.n:,}) in {workdir}")
    ledger = build_ledger(workdir / f"ledger-{args.n}", args.n, args.build_batch)
    tree = build_pymerkle(workdir / f"pymerkle-{args.n}.db", ledger, args.n)
    data_dir = ledger.settings.data_dir
    ledger.close()
    del ledger
    gc.collect()
    ledger = Ledger.open(Settings(data_dir=data_dir))  # no in-memory trust state

    rng = random.Random(args.seed)
    n = args.n
    indices = [rng.randrange(n) for _ in range(args.samples)]
    firsts = [rng.randrange(1, n) for _ in range(args.samples)]
    wait_idle(args.wait_idle)
    ours, made = measure_ours(ledger, n, indices, firsts, args.steady, rng)
    wait_idle(args.wait_idle)
    theirs = measure_pymerkle(tree, n, indices, firsts, args.pymerkle_cold_samples)
    check_proofs(ledger, tree, n, made)
    report(ours, theirs)
    tree.close()
    ledger.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
