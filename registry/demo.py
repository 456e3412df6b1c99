"""``qiledger demo``: the end-to-end story on the embedded SQLite default.

Creates a ledger, lets a demo laboratory key write, appends signed statements in
two batches, shows how duplicates and forgeries are answered, then checks an
inclusion proof and a consistency proof with nothing but ``verifier`` and the
log's verifier-key string — as an outside auditor would — and runs fsck.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from registry import keyfile
from registry.config import Settings
from registry.fsck import fsck
from registry.ledger import Ledger
from registry.sequencer import Accepted, Refused
from verifier import checkpoint, dsse, jcs, merkle, statement
from verifier import proof as tlog_proof
from verifier.encoding import b64encode
from verifier.keys import SigningKey
from verifier.note import NoteVerifier

LAB = "DEMO-LAB"


def _certificate_issue(number: int) -> dict[str, object]:
    # Only identifiers, dates and the digest enter the public log (DESIGN.md).
    document = f"demo calibration certificate {number}".encode()
    return {
        "type": "certificate.issue",
        "certificate_id": f"{LAB}/DCC-2026-{number:04d}",
        "issuer": LAB,
        "kind": "dcc",
        "document_sha256": hashlib.sha256(document).hexdigest(),
        "issued": "2026-11-24",
    }


def _envelope(fields: dict[str, object], key: SigningKey) -> bytes:
    return jcs.canonical_bytes(dsse.sign(statement.encode(fields), key).to_json())


def _say(step: str) -> None:
    print(f"\n== {step}")


def run_demo(data_dir: Path | None) -> int:
    data_dir = data_dir or Path(tempfile.mkdtemp(prefix="qiledger-demo-"))
    settings = Settings(data_dir=data_dir)
    _say(f"1. create a ledger in {data_dir} (SQLite, WAL, synchronous=FULL)")
    # The demo keeps its keys unencrypted in its own fresh directory only.
    ledger = Ledger.init(settings, origin="demo.qiledger.local/log", passphrase=None)
    verifier_key = str(ledger.identity.verifier)
    print(f"log verifier key: {verifier_key}")

    _say("2. allow a demo laboratory's signing key")
    lab_key = SigningKey.generate(os.urandom(32))
    keyfile.write_private_key(data_dir / "demo-lab.key", lab_key, None)
    ledger.policy.allow(lab_key.public_key, "Demo calibration laboratory", datetime.now(UTC))
    print(f"lab key id: {lab_key.public_key.key_id}")

    sequencer = ledger.sequencer
    _say("3. append three signed certificate statements as one batch")
    first = sequencer.submit_many([_envelope(_certificate_issue(n), lab_key) for n in (1, 2, 3)])
    for outcome in first:
        assert isinstance(outcome, Accepted)
        print(f"index {outcome.index}  leaf {outcome.leaf_hash.hex()[:16]}…  {outcome.logged_at}")
    old = ledger.verified_checkpoint()
    print(old.note.decode(), end="")

    _say("4. append two more; resubmit #1; try a forgery and an unknown key")
    forged = bytearray(_envelope(_certificate_issue(6), lab_key))
    forged[forged.index(b'"sig":"') + 8] ^= 1  # flip one bit of the signature
    stranger = SigningKey.generate(os.urandom(32))
    batch = [
        _envelope(_certificate_issue(4), lab_key),
        _envelope(_certificate_issue(5), lab_key),
        _envelope(_certificate_issue(1), lab_key),
        bytes(forged),
        _envelope(_certificate_issue(7), stranger),
    ]
    for label, outcome in zip(
        ["#4", "#5", "#1 again", "forged #6", "stranger #7"],
        sequencer.submit_many(batch),
        strict=True,
    ):
        if isinstance(outcome, Refused):
            print(f"{label:12} refused ({outcome.error.code}): {outcome.error.message}")
        else:
            verb = "already logged at" if outcome.duplicate else "appended at"
            print(f"{label:12} {verb} index {outcome.index}")
    new = ledger.verified_checkpoint()
    print(new.note.decode(), end="")

    _say("5. an auditor checks entry 1 offline: tlog-proof + verifier key only")
    proof_bytes = ledger.inclusion_proof(1).to_bytes()
    leaf_data = ledger.storage.entry(1).data
    trusted = NoteVerifier.parse(verifier_key)
    signed = tlog_proof.verify(proof_bytes, leaf_data, trusted)
    print(proof_bytes.decode().split("\n\n")[0])
    print(f"OK: entry 1 is included in the signed tree of size {signed.checkpoint.size}")

    _say("6. a monitor checks the log only grew: consistency proof old -> new")
    old_cp = checkpoint.verify(old.note, trusted).checkpoint
    new_cp = checkpoint.verify(new.note, trusted).checkpoint
    hashes = ledger.consistency_proof(old_cp.size, new_cp.size)
    merkle.verify_consistency(old_cp.size, new_cp.size, hashes, old_cp.root, new_cp.root)
    for h in hashes:
        print(b64encode(h))
    print(f"OK: the tree of size {new_cp.size} extends the tree of size {old_cp.size}")

    _say("7. fsck: re-check every stored byte")
    report = fsck(ledger)
    print(
        f"OK: {report.entries} entries, {report.nodes} tree nodes, "
        f"{report.checkpoints} checkpoints verified"
    )
    print(f"\nThe demo ledger stays in {data_dir}; try: qiledger --data-dir {data_dir} entry 0")
    ledger.close()
    return 0
