"""Audit bundle benchmark: export and offline audit of a large log.

What it does:

1. builds (once; cached under ``--workdir``) a ledger of ``--n`` entries through
   the real sequencer, as ``bench/proofs.py`` does (the trust chain of
   ``bench/ingest.py``, then pre-signed ``certificate.issue`` envelopes);
2. exports the whole log (``qiledger export``'s code path, to a file) and an
   index range of a tenth of it, each in a fresh process, and prints entries/s,
   the process's peak RSS (the same at both sizes: memory is flat in the bundle
   size) and bundle bytes per entry;
3. audits the whole bundle with :func:`verifier.bundle.audit` (signatures on a
   worker process, as ``qiverify audit`` does) and once more with every check in
   one process, and prints entries/s.

Not a test: it prints figures and asserts nothing about speed.

    .venv/bin/python bench/audit.py                         # 100,000 entries
    .venv/bin/python bench/audit.py --n 20000 --workdir /tmp/qiledger-bench-audit-20k
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from ingest import print_machine
from proofs import build_ledger

from registry import export
from registry.config import Settings
from registry.ledger import Ledger
from verifier import bundle
from verifier.bundle import Selection


def _child_export(data_dir: Path, out: Path, to_index: int | None) -> None:
    """Run one export in this (fresh) process; print seconds and peak RSS as JSON."""
    ledger = Ledger.open(Settings(data_dir=data_dir))
    selection = (
        Selection("log")
        if to_index is None
        else Selection("index", from_index=0, to_index=to_index)
    )
    opened_kb = _reset_peak_rss()  # opening may replay or rebuild: not the export's cost
    started = time.perf_counter()
    planned = export.plan(ledger, selection)
    result = export.export_to_file(ledger, planned, out)
    seconds = time.perf_counter() - started
    ledger.close()
    peak_kb = _peak_rss_kb()
    lines = result.entries + result.trust
    print(
        json.dumps(
            {"seconds": seconds, "lines": lines, "peak_rss_kb": peak_kb, "opened_rss_kb": opened_kb}
        )
    )


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> int:
    """The RSS now; resets the kernel's peak (VmHWM) to it where Linux allows."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    return _status_kb("VmRSS") or 0


def _peak_rss_kb() -> int:
    return _status_kb("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _export_in_child(data_dir: Path, out: Path, to_index: int | None) -> dict[str, float]:
    command = [sys.executable, __file__, "--child-export", str(data_dir), str(out)]
    if to_index is not None:
        command += ["--to-index", str(to_index)]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000, help="log size (default 100,000)")
    parser.add_argument("--workdir", default="/tmp/qiledger-bench-audit", help="build cache")
    parser.add_argument("--build-batch", type=int, default=1000, help="entries per append")
    parser.add_argument(
        "--child-export", nargs=2, metavar=("DATA_DIR", "OUT"), help=argparse.SUPPRESS
    )
    parser.add_argument("--to-index", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_export:
        _child_export(Path(args.child_export[0]), Path(args.child_export[1]), args.to_index)
        return

    print_machine()
    workdir = Path(args.workdir)
    data_dir = workdir / "ledger"
    print(f"1. the log ({args.n:,} entries)")
    ledger = build_ledger(data_dir, args.n, args.build_batch)
    key = ledger.identity.verifier
    ledger.close()

    print("2. export (each in a fresh process; peak RSS of that process)")
    small_to = max(args.n // 10 - 1, 0)
    full = workdir / "whole.zip"
    rows = []
    for label, out, to_index in (
        (f"index 0..{small_to:,}", workdir / "tenth.zip", small_to),
        ("whole log", full, None),
    ):
        figures = _export_in_child(data_dir, out, to_index)
        size = out.stat().st_size
        rows.append((label, figures, size))
        print(
            f"  {label:>18}: {figures['lines']:>9,.0f} entries in {figures['seconds']:6.1f} s = "
            f"{figures['lines'] / figures['seconds']:8,.0f} entries/s; peak RSS "
            f"{figures['peak_rss_kb'] / 1024:6.1f} MiB (after opening the ledger: "
            f"{figures['opened_rss_kb'] / 1024:.1f}); {size / 1e6:7.1f} MB = "
            f"{size / figures['lines']:5.0f} bytes/entry"
        )
    (_, small, _), (_, large, _) = rows
    print(
        f"  peak RSS ratio whole/tenth: {large['peak_rss_kb'] / small['peak_rss_kb']:.2f} "
        f"for {large['lines'] / small['lines']:.1f}x the entries"
    )

    print("3. audit of the whole bundle (qiverify audit)")
    for label, workers in (("signatures on a worker", None), ("all in one process", 0)):
        started = time.perf_counter()
        result = bundle.audit(full, key, workers=workers)
        seconds = time.perf_counter() - started
        print(
            f"  {label:>24}: {result.lines:,} entries in {seconds:6.1f} s = "
            f"{result.lines / seconds:8,.0f} entries/s "
            f"({result.signatures:,} signatures, complete={result.complete})"
        )


if __name__ == "__main__":
    main()
