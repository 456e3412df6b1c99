"""Monitor benchmark: ``qiverify monitor`` catch-up entries/s over HTTP from a registry
on 127.0.0.1.

What it does:

1. builds (once; cached under ``--workdir``) a ledger of ``--n`` entries through
   the real sequencer, as ``bench/proofs.py`` does (its ``build_ledger``: the trust
   chain of ``bench/ingest.py``, then pre-signed ``certificate.issue`` envelopes),
   and copies it to a scratch folder (the incremental step appends to the copy);
2. serves the copy with ``qiledger serve --workers 1`` (another process, as a
   monitor would meet it) and times, in this process:
   * **catch-up from empty**: the checkpoint, every tile and entry bundle over
     HTTP, and every check of :mod:`verifier.monitor` (tiles, consistency, leaf
     hashes, ``prev`` links, signatures, trust rules) — entries/s, requests and
     bytes fetched;
   * saving the state file (size, seconds) and loading it again (the replay of
     the trust entries a restart does);
   * a poll that finds nothing new; then ``--append`` more entries appended to
     the copy and the incremental step over them;
   * the whole command, ``qiverify monitor --once`` from an empty state;
3. as a reference in the same run: the same leaf data replayed in memory with
   :func:`verifier.trust.replay` (no HTTP, no tiles) — the ratio is what fetching
   and checking the tiles cost on top of the replay.

Not a test: it prints figures and asserts nothing about speed.

    .venv/bin/python bench/monitor.py                      # 20,000 entries
    .venv/bin/python bench/monitor.py --n 5000 --workdir /tmp/qm
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

# bench/ goes last: its http.py must not shadow the standard library's http
# (urllib.request, the monitor's HTTP client, imports http.client).
BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH] + [str(BENCH)]
sys.path.insert(0, str(BENCH.parent))

from ingest import (  # noqa: E402
    copy_ledger,
    load_bench_http,
    presign,
    print_machine,
    scratch_dir,
    submit_all,
    wait_idle,
)
from proofs import SIGNERS, build_ledger  # noqa: E402

from registry.ledger import Ledger  # noqa: E402
from verifier import monitor, trust  # noqa: E402
from verifier.cli import main as qiverify  # noqa: E402
from verifier.note import NoteVerifier  # noqa: E402
from verifier.online import Registry  # noqa: E402

HOST = "127.0.0.1"


class CountingFetch:
    """The monitor's HTTP fetch, counting requests and bytes."""

    def __init__(self, registry: Registry) -> None:
        self.inner = monitor.http_fetch(registry)
        self.requests = 0
        self.bytes = 0

    def __call__(self, path: str) -> bytes:
        data = self.inner(path)
        self.requests += 1
        self.bytes += len(data)
        return data


def no_proof(first: int, second: int) -> list[bytes]:
    raise SystemExit("bench: the registry went backwards")


def timed_step(
    state: monitor.MonitorState, registry: Registry, key: NoteVerifier
) -> tuple[monitor.Step, float, CountingFetch]:
    fetch = CountingFetch(registry)
    t0 = time.perf_counter()
    new = monitor.verify_checkpoint(fetch("checkpoint"), key)
    step = monitor.check(state, new, fetch, no_proof)
    return step, time.perf_counter() - t0, fetch


def report_step(label: str, step: monitor.Step, seconds: float, fetch: CountingFetch) -> None:
    entries = step.new_size - step.old_size
    rate = f"{entries / seconds:8,.0f} entries/s" if entries else "      (no new entries)"
    print(
        f"  {label:<34} {step.old_size:>7,} -> {step.new_size:>7,}: {seconds:7.2f} s {rate}; "
        f"{fetch.requests:,} requests, {fetch.bytes / 1e6:.1f} MB"
    )


def in_memory_replay(ledger: Ledger, key: NoteVerifier, size: int) -> float:
    """Seconds to replay the first ``size`` entries with verifier.trust.replay."""
    entries = list(enumerate(ledger.storage.entry_data_range(0, size)))
    t0 = time.perf_counter()
    trust.replay(key.public_key, entries)
    return time.perf_counter() - t0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=20_000, help="entries in the log (%(default)s)")
    parser.add_argument("--append", type=int, default=1_000, help="entries of the incremental step")
    parser.add_argument("--workdir", default="/tmp/qiledger-bench-monitor")
    parser.add_argument("--build-batch", type=int, default=1_000)
    parser.add_argument("--scratch", help="parent of the scratch copy (default: system temp)")
    args = parser.parse_args(argv)

    print_machine()
    print(f"\n== log of {args.n:,} entries (cached in {args.workdir})")
    cached = Path(args.workdir) / "ledger"
    build_ledger(cached, args.n, args.build_batch).close()
    bench_http = load_bench_http()

    with scratch_dir(args.scratch, keep=False, prefix="qiledger-monitor-") as scratch:
        ledger = copy_ledger(cached, scratch / "data")
        key = ledger.identity.verifier
        port = bench_http.free_port()
        server = bench_http.Server(
            bench_http.serve_argv(scratch / "data", None, port, 1), {}, port, scratch / "serve.log"
        )
        server.wait_ready()
        try:
            registry = Registry(f"http://{HOST}:{port}")
            state_file = scratch / "state.json"
            wait_idle(60)
            print("\n== qiverify monitor over HTTP (verifier.monitor in this process)")
            state = monitor.MonitorState.empty(key)
            step, seconds, fetch = timed_step(state, registry, key)
            report_step("catch-up from empty", step, seconds, fetch)
            catch_up_rate = (step.new_size - step.old_size) / seconds

            t0 = time.perf_counter()
            monitor.save_state(state_file, state)
            saved = time.perf_counter() - t0
            size = state_file.stat().st_size
            t0 = time.perf_counter()
            state = monitor.load_state(state_file, key)
            loaded = time.perf_counter() - t0
            print(
                f"  state file: {size / 1e6:.2f} MB ({size / step.new_size:.0f} bytes/entry), "
                f"saved (fsync'd) in {saved * 1e3:.0f} ms, loaded in {loaded * 1e3:.0f} ms "
                f"({len(state.trust_entries)} trust entries replayed)"
            )
            step, seconds, fetch = timed_step(state, registry, key)
            report_step("poll, nothing new", step, seconds, fetch)

            envelopes = presign(args.n, args.append, SIGNERS)
            submit_all(ledger.sequencer, envelopes, args.build_batch)
            step, seconds, fetch = timed_step(state, registry, key)
            report_step(f"incremental, {args.append:,} appended", step, seconds, fetch)

            print("\n== the whole command: qiverify monitor --once --json, empty state")
            fresh = scratch / "fresh.json"
            argv_cli = ["monitor", "--registry", registry.base_url, "--log-key", str(key)]
            argv_cli += ["--state", str(fresh), "--once", "--json"]
            out = io.StringIO()
            t0 = time.perf_counter()
            with contextlib.redirect_stdout(out):
                code = qiverify(argv_cli)
            seconds = time.perf_counter() - t0
            total = json.loads(out.getvalue().splitlines()[0])["size"]
            print(
                f"  exit {code}, {total:,} entries in {seconds:.2f} s: "
                f"{total / seconds:,.0f} entries/s (state saved)"
            )

            print("\n== reference: verifier.trust.replay of the same leaf data, in memory")
            replay_seconds = in_memory_replay(ledger, key, args.n)
            replay_rate = args.n / replay_seconds
            print(
                f"  {args.n:,} entries in {replay_seconds:.2f} s: {replay_rate:,.0f} entries/s; "
                f"monitor catch-up / replay = {catch_up_rate / replay_rate:.2f}"
            )
        finally:
            server.stop()
            ledger.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
