"""DCC registration throughput: parse + schema-validate + extract + sign + append.

Registers distinct copies of the shared example DCCs (their uniqueIdentifier
made unique per copy, so each is a new certificate) through
``Ledger.issue_certificate`` — the path ``qiledger issue`` takes — on SQLite,
single core (no verify worker: these are one-document batches), with the
compiled schemas cached as in a running registry.

    .venv/bin/python bench/dcc.py [--n 500] [--schemas ../shared/dcc/schemas/dcc]

The shared examples and schemas are read from the ``shared/`` folder beside the
repository, or the folder QILEDGER_SHARED_DIR names (as the tests find it).

Target: >= 50 DCCs/s for ~50 KB DCCs including schema validation.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
# bench/ goes last: its http.py must not shadow the standard library's http
# (httpx, imported by tests.helpers, imports http.client).
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != BENCH]
sys.path.append(str(BENCH))

from ingest import print_machine  # noqa: E402

from registry.config import Settings  # noqa: E402
from registry.ledger import Ledger  # noqa: E402
from tests.helpers import (  # noqa: E402
    BODY_KEY,
    SHARED_DIR,
    body_add,
    envelope_bytes,
    grant,
    key_from,
)

SHARED = SHARED_DIR / "dcc"
UNSIGNED = [
    "lutaml-dcc/valid.xml",
    "siemens-pydcc/dcc_gp_humidity_v1.0.xml",
    "siemens-pydcc/dcc_gp_temperature_typical_v12.xml",
]


def copies(n: int) -> list[bytes]:
    """n distinct DCCs: each example with its uniqueIdentifier suffixed."""
    sources = [(SHARED / "examples" / name).read_bytes() for name in UNSIGNED]
    out = []
    for i in range(n):
        src = sources[i % len(sources)]
        out.append(
            re.sub(
                rb"(<dcc:uniqueIdentifier>)([^<]+)(</dcc:uniqueIdentifier>)",
                lambda m, i=i: m.group(1) + m.group(2) + b"-" + str(i).encode() + m.group(3),
                src,
                count=1,
            )
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--schemas", type=Path, default=SHARED / "schemas" / "dcc")
    args = parser.parse_args()
    needed = [args.schemas, *(SHARED / "examples" / name for name in UNSIGNED)]
    missing = next((path for path in needed if not path.exists()), None)
    if missing is not None:
        sys.exit(
            f"bench/dcc.py: {missing} does not exist; it reads PTB's DCC schemas and "
            f"examples from the shared folder {SHARED_DIR} (set QILEDGER_SHARED_DIR)"
        )
    documents = copies(args.n)
    sizes = [len(d) for d in documents]
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), dcc_schemas=args.schemas)
        ledger = Ledger.init(settings, origin="bench/dcc", passphrase=None)
        lab = key_from("bench-lab")
        ledger.sequencer.submit(envelope_bytes(body_add(), ledger.load_log_key().key))
        ledger.sequencer.submit(envelope_bytes(grant("LAB-1", [lab]), BODY_KEY))
        ledger.issue_certificate(copies(1)[0].replace(b"-0<", b"-warm<"), "LAB-1", lab)
        latencies = []
        start = time.perf_counter()
        for document in documents:
            t = time.perf_counter()
            ledger.issue_certificate(document, "LAB-1", lab)
            latencies.append(time.perf_counter() - t)
        elapsed = time.perf_counter() - start
        stored = ledger.latest_checkpoint().size
        ledger.close()
    latencies.sort()
    print_machine()
    print(
        f"DCCs: {args.n} distinct copies of {len(UNSIGNED)} shared examples, "
        f"{statistics.mean(sizes) / 1024:.1f} KB average, schema validation on"
    )
    print(
        f"registered: {args.n / elapsed:.1f} DCCs/s "
        f"(p50 {latencies[len(latencies) // 2] * 1e3:.2f} ms, "
        f"p99 {latencies[int(len(latencies) * 0.99)] * 1e3:.2f} ms per DCC, "
        f"each durable with its own signed checkpoint)"
    )
    print(
        f"log size after the run: {stored}; digest of the last document "
        f"{hashlib.sha256(documents[-1]).hexdigest()[:16]}…"
    )


if __name__ == "__main__":
    main()
