"""Scale-out on PostgreSQL: three ``qiledger serve`` processes share one log.

Submissions go to all three at once; the database lock serializes sequencing,
so the result must be one linear log: every 201 is in it at the index it was
answered with, every answered checkpoint verifies and is consistent with the
final one (whichever server signed it), and fsck passes.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from registry.config import Settings
from registry.fsck import fsck
from registry.ledger import Ledger
from registry.storage.tokens import TokenStore
from tests.conftest import make_ledger
from tests.helpers import demo_dcc, envelope_bytes, free_port, key_from, wait_healthy
from verifier import checkpoint, merkle
from verifier.entry import format_time

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

DEMO_DCC = demo_dcc()
SERVERS = 3
SUBMISSIONS = 60


@pytest.fixture
def servers(postgres_url: str, tmp_path: Path) -> Iterator[tuple[Settings, str, list[str]]]:
    settings = Settings(data_dir=tmp_path / "data", database_url=postgres_url)
    ledger = make_ledger(settings, key_from("lab-1"))
    token, _ = TokenStore(ledger.db).create("issuer", "LAB-1")
    ledger.close()
    env = {**os.environ, "QILEDGER_RATE_LIMIT": "0"}
    processes: list[subprocess.Popen[bytes]] = []
    urls: list[str] = []
    try:
        for _ in range(SERVERS):
            port = free_port()
            command = [sys.executable, "-m", "registry", "--data-dir", str(settings.data_dir)]
            command += ["--database-url", postgres_url, "serve", "--port", str(port)]
            command += ["--workers", "1", "--log-level", "warning"]
            processes.append(subprocess.Popen(command, env=env))
            urls.append(f"http://127.0.0.1:{port}")
        for url, process in zip(urls, processes, strict=True):
            wait_healthy(url, process)
        yield settings, token, urls
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def _document(n: int) -> bytes:
    return DEMO_DCC.replace(b"DCC-2026-0001", f"DCC-SCALE-{n:04d}".encode())


def test_three_servers_one_consistent_log(servers: tuple[Settings, str, list[str]]) -> None:
    settings, token, urls = servers
    ledger = Ledger.open(settings)
    lab = key_from("lab-1")
    jobs = []
    for n in range(SUBMISSIONS):
        document = _document(n)
        fields = ledger.documents.statement(document, "LAB-1", ledger.clock()).fields
        envelope = envelope_bytes({"signed_at": format_time(ledger.clock()), **fields}, lab)
        jobs.append((urls[n % SERVERS], document, envelope))

    def submit(job: tuple[str, bytes, bytes]) -> tuple[bytes, httpx.Response]:
        url, document, envelope = job
        response = httpx.post(
            f"{url}/api/v1/certificates",
            files={"document": ("dcc.xml", document), "envelope": ("env.json", envelope)},
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        )
        return envelope, response

    with ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(submit, jobs))

    for _, response in results:
        assert response.status_code == 201, response.text
    indices = sorted(r.json()["index"] for _, r in results)
    assert indices == list(range(2, 2 + SUBMISSIONS))  # after the body and the grant

    final = httpx.get(f"{urls[0]}/api/v1/log").json()
    assert final["size"] == 2 + SUBMISSIONS
    verifier_key = ledger.identity.verifier
    final_cp = checkpoint.verify(final["checkpoint"].encode(), verifier_key).checkpoint
    for n, (envelope, response) in enumerate(results):
        body = response.json()
        # The answered entry is the submitted envelope, at the answered index.
        stored = ledger.storage.entry(body["index"])
        assert json.loads(stored.data)["envelope"] == json.loads(envelope)
        answered = checkpoint.verify(body["checkpoint"].encode(), verifier_key).checkpoint
        proof = [base64.b64decode(h) for h in body["inclusion_proof"]]
        merkle.verify_inclusion(
            merkle.leaf_hash(stored.data), body["index"], answered.size, proof, answered.root
        )
        # ... and that checkpoint is a prefix of the final log, asked of any server.
        consistency = httpx.get(
            f"{urls[n % SERVERS]}/api/v1/log/proof/consistency",
            params={"first": answered.size, "second": final_cp.size},
        ).json()
        merkle.verify_consistency(
            answered.size,
            final_cp.size,
            [base64.b64decode(h) for h in consistency["hashes"]],
            answered.root,
            final_cp.root,
        )
    report = fsck(ledger)
    assert report.entries == 2 + SUBMISSIONS
    ledger.close()
