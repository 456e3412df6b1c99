"""CLI start-up benchmark: wall time of ``qiledger --help`` and of read commands,
beside ``python -c pass`` and ``python -c "import sqlalchemy"`` (the storage layer
every read command imports first) measured in the same run.

Target (issue 13): ``qiledger --help`` and every read command <= 0.3 s wall on
this machine. A read command opens the ledger (SQLAlchemy Core and the SQLite
driver), reads and prints; it must not import the web, XML, image or JSON Schema
libraries (``tests/test_cli_startup.py`` checks that without timing).

What it does:

1. builds a small ledger in a temporary directory with ``qiledger demo``
   (untimed: trust chain, certificates, status changes; it uses the public demo
   keys, so the read commands run with ``--demo``);
2. runs each command once untimed, which writes the bytecode caches of every
   module it imports, then ``--runs`` rounds; a round runs every command once, in
   turn, so load that comes and goes spreads over all of them alike;
3. prints per command the median and p90 wall time (process start to exit, as a
   shell sees it), the median CPU time (user + system: what load from other
   processes changes least), the median over the reference, and the target.

The caches are written to a directory of the run (``PYTHONPYCACHEPREFIX``), never
into the checkout, and are written even where ``PYTHONDONTWRITEBYTECODE`` is set:
an installed package starts from compiled modules, and without caches every
start compiles this project's modules again (some 0.05 s of CPU a read command here).
``--no-bytecode-cache`` runs the commands in the environment as it is instead.

    .venv/bin/python bench/cli.py             # 15 rounds
    .venv/bin/python bench/cli.py --runs 31
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH] + [str(BENCH)]
sys.path.insert(0, str(REPO))

from ingest import print_machine, wait_idle  # noqa: E402

TARGET_S = 0.3
BIN = Path(sys.executable).parent
CERTIFICATE = "DEMO-LAB/DCC-2026-0001"  # registered by the demo


@dataclass(frozen=True)
class Command:
    label: str
    argv: tuple[str, ...]
    targeted: bool  # held to TARGET_S (the references and qiverify are not)


def commands(data_dir: Path) -> list[Command]:
    qiledger = str(BIN / "qiledger")
    ledger = (qiledger, "--demo", "--data-dir", str(data_dir))
    return [
        Command("python -c pass (reference)", (sys.executable, "-c", "pass"), False),
        # What every read command pays before any code of ours: the storage layer.
        Command("import sqlalchemy", (sys.executable, "-c", "import sqlalchemy"), False),
        Command("qiverify --help", (str(BIN / "qiverify"), "--help"), False),
        Command("qiledger --help", (qiledger, "--help"), True),
        Command("qiledger checkpoint", (*ledger, "checkpoint"), True),
        Command("qiledger proof --index 3", (*ledger, "proof", "--index", "3"), True),
        Command("qiledger entry 3", (*ledger, "entry", "3"), True),
        Command(f"qiledger certificate {CERTIFICATE}", (*ledger, "certificate", CERTIFICATE), True),
        Command("qiledger issuers", (*ledger, "issuers"), True),
    ]


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_once(argv: tuple[str, ...], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds of one run (commands run one at a time, so the
    children's CPU time grows by this one's alone)."""
    cpu = children_cpu()
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, check=False, env=env)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.decode()}")
    return elapsed, children_cpu() - cpu


def command_env(tmp: Path, bytecode_cache: bool) -> dict[str, str]:
    """The commands' environment: with bytecode caches in ``tmp`` (see the docstring)."""
    env = dict(os.environ)
    if bytecode_cache:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")
    return env


def p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10, method="inclusive")[-1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--runs", type=int, default=15, help="rounds of every command")
    parser.add_argument(
        "--wait-idle", type=float, default=60.0, help="wait up to S s for an idle machine"
    )
    parser.add_argument(
        "--no-bytecode-cache",
        action="store_true",
        help="run the commands in the environment as it is (no caches of their own)",
    )
    args = parser.parse_args()
    print_machine()
    with tempfile.TemporaryDirectory(prefix="qiledger-bench-cli-") as tmp:
        env = command_env(Path(tmp), not args.no_bytecode_cache)
        caches = env.get("PYTHONPYCACHEPREFIX", "as the environment has them")
        data_dir = Path(tmp) / "ledger"
        print(f"\n== a demo ledger in {data_dir} (untimed); bytecode caches: {caches}")
        subprocess.run(
            [str(BIN / "qiledger"), "--data-dir", str(data_dir), "demo"],
            capture_output=True,
            check=True,
            env=env,
        )
        todo = commands(data_dir)
        for command in todo:
            run_once(command.argv, env)  # bytecode caches, page cache
        wait_idle(args.wait_idle)
        load_before = os.getloadavg()[0]
        wall: dict[str, list[float]] = {c.label: [] for c in todo}
        cpu: dict[str, list[float]] = {c.label: [] for c in todo}
        for _ in range(args.runs):
            for command in todo:
                elapsed, used = run_once(command.argv, env)
                wall[command.label].append(elapsed)
                cpu[command.label].append(used)
        load_after = os.getloadavg()[0]
    reference = statistics.median(wall[todo[0].label])
    print(
        f"\n== wall time, {args.runs} runs each (load average {load_before:.2f} before, "
        f"{load_after:.2f} after)"
    )
    print(f"  {'command':44} {'median':>8} {'p90':>8} {'cpu':>8} {'/ ref':>7}  target")
    for command in todo:
        median = statistics.median(wall[command.label])
        if command.targeted:
            verdict = f"<= {TARGET_S} s: " + ("met" if median <= TARGET_S else "NOT met")
        else:
            verdict = "-"
        print(
            f"  {command.label:44} {median:7.3f}s {p90(wall[command.label]):7.3f}s "
            f"{statistics.median(cpu[command.label]):7.3f}s {median / reference:6.1f}x  {verdict}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
