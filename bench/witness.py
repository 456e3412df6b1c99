"""Witness benchmark: cosignatures/s of the C2SP tlog-witness (``verifier.witness``).

What it does:

1. builds a log of ``--leaves`` leaves in memory (every complete node kept, as the
   registry stores them) and signs a checkpoint every ``--step`` leaves;
2. *pure*: cosign + verify a checkpoint (``CosignatureSigner.cosign`` and
   ``CosignatureVerifier.verify``), per second on one core;
3. *in-process*: ``Witness.add_checkpoint`` over the growing log (parse, the log's
   signature, the consistency proof, the state saved with fsync + rename + fsync of
   the directory, the cosignature), per second;
4. *HTTP*: the same over ``POST /add-checkpoint`` to a ``WitnessServer`` on
   127.0.0.1, one keep-alive connection, closed loop; every answer is verified.

The state file lives in ``--workdir`` (default: a temporary directory): its fsyncs
dominate (3) and (4) on most disks. Not a test: it prints figures, asserts nothing
about speed.

    .venv/bin/python bench/witness.py
    .venv/bin/python bench/witness.py --leaves 100000 --step 16 --workdir /var/tmp
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
# bench/http.py must not shadow the standard library's http: bench/ goes last.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH] + [str(BENCH)]
sys.path.insert(0, str(BENCH.parent))

import http.client  # noqa: E402

from ingest import print_machine  # noqa: E402

from verifier import checkpoint, cosignature, merkle, note, witness  # noqa: E402
from verifier.cosignature import CosignatureSigner  # noqa: E402
from verifier.keys import SigningKey  # noqa: E402
from verifier.merkle import Hash, Node  # noqa: E402
from verifier.witness import Witness  # noqa: E402
from verifier.witness_server import WitnessServer  # noqa: E402

ORIGIN = "bench.qiledger.example/log"
LOG_KEY = SigningKey.from_seed(hashlib.sha256(b"qiledger-bench-witness-log").digest())
LOG_VERIFIER = note.NoteVerifier.for_key(ORIGIN, LOG_KEY.public_key)
SIGNER = CosignatureSigner(
    "bench.qiledger.example/witness",
    SigningKey.from_seed(hashlib.sha256(b"qiledger-bench-witness").digest()),
)


def build_nodes(leaves: int) -> dict[Node, Hash]:
    nodes: dict[Node, Hash] = {
        (0, i): merkle.leaf_hash(f"bench leaf {i}".encode()) for i in range(leaves)
    }
    level, width = 0, leaves
    while width > 1:
        for i in range(width // 2):
            nodes[(level + 1, i)] = merkle.node_hash(
                nodes[(level, 2 * i)], nodes[(level, 2 * i + 1)]
            )
        level, width = level + 1, width // 2
    return nodes


def bodies(nodes: dict[Node, Hash], sizes: list[int]) -> list[bytes]:
    """The add-checkpoint bodies of a log growing through ``sizes``."""
    out, old = [], 0
    for size in sizes:
        root = merkle.fold_nodes([nodes[n] for n in merkle.nodes_of_range(0, size)])
        cp_note = checkpoint.sign(checkpoint.Checkpoint(ORIGIN, size, root), LOG_KEY)
        proof = merkle.resolve_plan(merkle.consistency_plan(old, size), nodes)
        out.append(witness.format_request(old, proof, cp_note))
        old = size
    return out


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:10.0f}/s  ({seconds / count * 1e6:8.1f} us each, n={count})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--leaves", type=int, default=40_000)
    parser.add_argument("--step", type=int, default=16, help="leaves between checkpoints")
    parser.add_argument("--pure", type=int, default=5_000, help="cosign+verify rounds")
    parser.add_argument("--workdir", type=Path, help="where the state file goes")
    args = parser.parse_args()
    print_machine()
    nodes = build_nodes(args.leaves)
    sizes = list(range(args.step, args.leaves + 1, args.step))
    requests = bodies(nodes, sizes)
    print(f"== log: {args.leaves} leaves, {len(requests)} checkpoints (every {args.step})")

    text = note.parse(witness.parse_request(requests[-1]).note).text
    verifier = SIGNER.verifier
    start = time.perf_counter()
    for i in range(args.pure):
        signature = SIGNER.cosign(text, 1_790_000_000 + i)
        verifier.verify(text, signature)
    print(f"pure cosign + verify        {rate(args.pure, time.perf_counter() - start)}")

    with tempfile.TemporaryDirectory(dir=args.workdir) as work:
        state = Path(work) / "in-process.json"
        inproc = Witness(SIGNER, [LOG_VERIFIER], state, time.time)
        start = time.perf_counter()
        for body in requests:
            inproc.add_checkpoint(body)
        print(f"in-process add-checkpoint   {rate(len(requests), time.perf_counter() - start)}")

        server = WitnessServer(
            Witness(SIGNER, [LOG_VERIFIER], Path(work) / "http.json", time.time)
        ).start()
        try:
            host, port = server.httpd.server_address[:2]
            conn = http.client.HTTPConnection(str(host), int(port), timeout=30)
            answers = []
            start = time.perf_counter()
            for body in requests:
                conn.request("POST", "/add-checkpoint", body=body)
                answer = conn.getresponse()
                answers.append((answer.status, answer.read()))
            elapsed = time.perf_counter() - start
            conn.close()
        finally:
            server.close()
        print(f"HTTP add-checkpoint         {rate(len(requests), elapsed)}")
        for body, (status, line) in zip(requests, answers, strict=True):
            cp_note = witness.parse_request(body).note
            if status != 200:
                raise SystemExit(f"the witness answered {status}: {line!r}")
            cosignature.require_cosignatures(
                cosignature.add_lines(cp_note, [line.decode()]), LOG_VERIFIER, [verifier], 1
            )
        print(f"(all {len(answers)} HTTP cosignatures verified)")


if __name__ == "__main__":
    main()
