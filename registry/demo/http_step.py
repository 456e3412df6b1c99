"""The demo's HTTP step: the registry's API served on a local port, used the way a
laboratory's system would — with nothing but the standard library's HTTP client.

A lab with an API token registers a DCC (multipart: document + signed
envelope) and gets back its entry, the signed checkpoint, the inclusion proof
and its QR mark; anyone reads the status; a request without a token is refused
with a problem+json body. The receipt is returned for the demo to keep.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import uvicorn

from registry.api.app import create_app
from registry.api.service import ServiceOptions
from registry.demo import story
from registry.ledger import Ledger
from verifier import checkpoint, dsse, jcs, mark, merkle, statement
from verifier.encoding import b64decode
from verifier.entry import format_time
from verifier.errors import MalformedError
from verifier.keys import SigningKey


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _multipart(parts: dict[str, bytes]) -> tuple[bytes, str]:
    boundary = "qiledger-demo-boundary-7f3a"
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
        f'filename="{name}"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode()
        + data
        + b"\r\n"
        for name, data in parts.items()
    )
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _call(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError(f"the demo only calls its own local server, not {url}")
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def run_http_step(ledger: Ledger, lab: str, lab_key: SigningKey, document: bytes) -> dict[str, Any]:
    """Serve the API, register ``document`` as ``lab`` over HTTP; the receipt back."""
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    app = create_app(ledger, ServiceOptions(public_url=base))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.02)
        token, _ = ledger.tokens.create("issuer", lab, "demo LIMS")
        story.artifact("API", f"serving on {base}")
        story.artifact("API token", f"created for {lab}'s LIMS (the registry stores its hash)")

        fields = ledger.documents.statement(document, lab, ledger.clock()).fields
        fields = {"signed_at": format_time(ledger.clock()), **fields}
        envelope = jcs.canonical_bytes(dsse.sign(statement.encode(fields), lab_key).to_json())
        body, content_type = _multipart({"document": document, "envelope": envelope})
        status, receipt = _call(
            "POST",
            f"{base}/api/v1/certificates",
            body,
            {"Authorization": f"Bearer {token}", "Content-Type": content_type},
        )
        print(
            f"  POST /api/v1/certificates -> {status}: {receipt['certificate_id']} at index "
            f"{receipt['index']}, tree size {receipt['tree_size']}"
        )
        signed = checkpoint.verify(receipt["checkpoint"].encode(), ledger.identity.verifier)
        cp = signed.checkpoint
        leaf = b64decode(receipt["leaf_hash"], "leaf hash")
        proof = [b64decode(h, "proof hash") for h in receipt["inclusion_proof"]]
        story.artifact("receipt: leaf hash", story.short(leaf))
        story.artifact("receipt: proof", story.hashes(proof))
        story.artifact(
            "receipt: checkpoint", f"tree size {cp.size}, root hash {story.short(cp.root)}"
        )
        merkle.verify_inclusion(leaf, receipt["index"], cp.size, proof, cp.root)
        story.ok(
            f"the receipt's proof of entry {receipt['index']} verifies against its signed "
            f"checkpoint (size {cp.size}): proof of registration"
        )
        # What a phone scans is the URL: its token must be the receipt's, signed by this log.
        scanned = mark.token_from_url(receipt["mark_url"])
        if scanned != receipt["mark"]:
            raise MalformedError("the receipt's mark URL does not hold its mark")
        claims = mark.verify(scanned, ledger.identity.verifier)
        story.artifact(
            "receipt: QR mark URL",
            f"{receipt['mark_url'][:40]}… ({len(receipt['mark_url'])} characters)",
        )
        story.ok(
            f"the QR mark is signed by the log and names {claims.certificate_id}: "
            "a scanned label is genuine"
        )

        status, view = _call("GET", f"{base}/api/v1/certificates/{receipt['certificate_id']}")
        print(
            f"  GET /api/v1/certificates/{receipt['certificate_id']} -> {status}: "
            f"{view['status']}, issuer {view['issuer']['name']}"
        )
        status, problem = _call(
            "POST", f"{base}/api/v1/statements", b"{}", {"Content-Type": "application/json"}
        )
        print(f"  POST /api/v1/statements without a token -> {status} {problem['code']}")
        return dict(receipt)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        app.state.service.close()
