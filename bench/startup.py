"""Start-up benchmark: how long a process needs to hold a large log's trust state,
replaying from entry 0 versus starting from a stored trust snapshot.

Every ``qiledger`` command that checks statements (issue, status, certificate,
issuers, serve) holds :class:`verifier.trust.TrustState` for the whole log.
What it does (see bench/README.md for figures):

1. builds (once; cached under ``--workdir``) a ledger of ``--n`` entries through
   the real sequencer, as ``bench/proofs.py`` does (each run appends ``--tail``);
2. deletes stored snapshots, opens the ledger and times the first
   ``policy.sync()`` — the full replay every start paid before snapshots;
3. times ``policy.save_snapshot()`` (encode, compress, insert) and prints the
   snapshot's size;
4. opens the ledger again and times the first ``policy.sync()``: it loads the
   snapshot (checked against the signed root and its digest) and replays nothing;
5. appends ``--tail`` entries and times a start from the snapshot plus that tail;
6. checks that every start reached the same state as the full replay.

Prints full replay / snapshot start as a ratio measured in the same run. Not a
test: it asserts nothing about speed.

    .venv/bin/python bench/startup.py                      # 1,000,000 entries
    .venv/bin/python bench/startup.py --n 100000 --workdir /tmp/qb
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from ingest import presign, print_machine, submit_all
from proofs import SIGNERS, build_ledger
from sqlalchemy import delete

from registry.config import Settings
from registry.ledger import Ledger
from registry.storage import snapshots as trust_snapshot
from registry.storage import tables
from verifier import trust

NEVER = 1 << 62


def timed_start(data_dir: Path) -> tuple[float, trust.TrustState, Ledger]:
    """Open the ledger and time its first catch-up (never storing a snapshot)."""
    gc.collect()
    started = time.perf_counter()
    ledger = Ledger.open(Settings(data_dir=data_dir))
    ledger.policy.snapshot_after = NEVER
    state = ledger.policy.sync()
    return time.perf_counter() - started, state, ledger


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="QI Ledger start-up: full replay vs snapshot.")
    parser.add_argument("--n", type=int, default=1_000_000, help="log size (entries)")
    parser.add_argument("--tail", type=int, default=10_000, help="entries appended after it")
    parser.add_argument("--workdir", default="/tmp/qiledger-bench", help="cache for the built log")
    parser.add_argument("--build-batch", type=int, default=10_000)
    args = parser.parse_args(argv)
    print_machine()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)

    print(f"\n== build / open the log (n = {args.n:,}) in {workdir}")
    data_dir = workdir / f"startup-{args.n}"
    if (data_dir / "ledger.db").exists():
        # An earlier run appended its tail: the log is --n entries plus some.
        print(f"  cached ledger in {data_dir}")
    else:
        build_ledger(data_dir, args.n, args.build_batch).close()

    print("\n== start without a snapshot (full replay)")
    scratch = Ledger.open(Settings(data_dir=data_dir))
    scratch.policy.snapshots.ensure_table()
    with scratch.db.write() as conn:
        conn.execute(delete(tables.TRUST_SNAPSHOTS))
    scratch.close()
    full_s, full_state, ledger = timed_start(data_dir)
    size = full_state.size
    print(f"  {size:,} entries: {full_s:.2f} s ({full_s / size * 1e6:.1f} us/entry)")
    reference = trust_snapshot.encode(full_state)

    print("\n== store a snapshot")
    started = time.perf_counter()
    stored = ledger.policy.save_snapshot()
    save_s = time.perf_counter() - started
    with ledger.db.read() as conn:
        (snapshot,) = ledger.policy.snapshots.all(conn)
    print(
        f"  at size {stored:,}: {save_s:.2f} s; {len(reference) / 1e6:.1f} MB JSON, "
        f"{len(snapshot.data) / 1e6:.1f} MB stored"
    )
    ledger.close()
    del full_state
    gc.collect()

    print("\n== start from the snapshot")
    snap_s, state, ledger = timed_start(data_dir)
    same = trust_snapshot.encode(state) == reference
    print(f"  {snap_s:.2f} s (same state as the full replay: {same})")
    ledger.policy.snapshot_after = NEVER

    print(f"\n== start from the snapshot + {args.tail:,} newer entries")
    if args.tail:
        envelopes = presign(size - 1 - SIGNERS, args.tail, SIGNERS)
        submit_all(ledger.sequencer, envelopes, 1000)
    tail_state_reference = trust_snapshot.encode(ledger.policy.sync())
    ledger.close()
    del state
    tail_s, state, ledger = timed_start(data_dir)
    same_tail = trust_snapshot.encode(state) == tail_state_reference
    print(f"  {tail_s:.2f} s (same state as the running process: {same_tail})")
    ledger.close()

    print("\n== summary")
    print(
        f"  full replay {full_s:.2f} s; from snapshot {snap_s:.2f} s; ratio {full_s / snap_s:.1f}x"
    )
    print(f"  from snapshot + {args.tail:,} entries: {tail_s:.2f} s")
    return 0 if same and same_tail else 1


if __name__ == "__main__":
    sys.exit(main())
