"""``qiledger demo``: the end-to-end story on the embedded SQLite default.

With the public demo keys of ``keys.example/``: the operator makes an
accreditation body a trust anchor, the body accredits a calibration laboratory,
the laboratory logs signed certificate statements, the log refuses what the
trust chain does not allow, and an outside auditor checks inclusion and
consistency with nothing but ``verifier`` and the log's verifier-key string.
"""

from __future__ import annotations

import base64
import hashlib
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from registry import keyfile
from registry.config import Settings
from registry.demo_keys import DEMO_KEYS_DIR
from registry.errors import ConfigError
from registry.fsck import fsck
from registry.ledger import Ledger
from registry.sequencer import Refused
from verifier import checkpoint, dsse, jcs, merkle, statement
from verifier import proof as tlog_proof
from verifier.encoding import b64encode
from verifier.entry import format_time
from verifier.keys import SigningKey
from verifier.note import NoteVerifier
from verifier.trust import certificate_status

LAB, BODY = "DEMO-LAB", "CNAS-DEMO"


def _key(name: str) -> SigningKey:
    path = DEMO_KEYS_DIR / f"{name}.key"
    if not path.exists():
        raise ConfigError(f"the demo needs the repository's keys.example/ folder ({path})")
    return keyfile.read_private_key(path, None, demo=True)


def _say(step: str) -> None:
    print(f"\n== {step}")


def run_demo(data_dir: Path | None) -> int:
    data_dir = data_dir or Path(tempfile.mkdtemp(prefix="qiledger-demo-"))
    settings = Settings(data_dir=data_dir, log_key_path=DEMO_KEYS_DIR / "log.key", demo=True)
    log_key, body_key, lab_key = _key("log"), _key("accreditation-body"), _key("calibration-lab")

    _say(f"1. create a ledger in {data_dir} (SQLite, WAL, synchronous=FULL)")
    ledger = Ledger.init(
        settings, origin="demo.qiledger.local/log", passphrase=None, existing_key=log_key
    )
    verifier_key = str(ledger.identity.verifier)
    print(f"log verifier key: {verifier_key}")
    now = format_time(ledger.clock())

    def signed(fields: dict[str, Any], key: SigningKey) -> bytes:
        payload = statement.encode({"signed_at": now, **fields})
        return jcs.canonical_bytes(dsse.sign(payload, key).to_json())

    def certificate(number: int, kind: str = "dcc") -> dict[str, Any]:
        # Only identifiers, dates and the digest enter the public log (DESIGN.md).
        document = f"demo calibration certificate {number}".encode()
        return {
            "type": "certificate.issue",
            "issuer_id": LAB,
            "certificate_id": f"{LAB}/DCC-2026-{number:04d}",
            "kind": kind,
            "document_sha256": hashlib.sha256(document).hexdigest(),
            "issued": now[:10],
        }

    def submit(label: str, envelopes: list[bytes]) -> None:
        for n, outcome in enumerate(ledger.sequencer.submit_many(envelopes)):
            name = f"{label}#{n + 1}" if len(envelopes) > 1 else label
            if isinstance(outcome, Refused):
                print(f"  {name:34} REFUSED ({outcome.error.code}): {outcome.error.message}")
            else:
                verb = "already logged at" if outcome.duplicate else "logged at"
                print(f"  {name:34} {verb} index {outcome.index}")

    _say("2. the operator trusts an accreditation body; the body accredits a lab")
    body_pub = base64.b64encode(body_key.public_key.raw).decode()
    lab_pub = base64.b64encode(lab_key.public_key.raw).decode()
    submit(
        "trust.body.add CNAS-DEMO",
        [
            signed(
                {
                    "type": "trust.body.add",
                    "body_id": BODY,
                    "name": "Demo Accreditation Service",
                    "country": "CN",
                    "public_key": body_pub,
                },
                log_key,
            )
        ],
    )
    submit(
        "accreditation.grant DEMO-LAB",
        [
            signed(
                {
                    "type": "accreditation.grant",
                    "body_id": BODY,
                    "issuer_id": LAB,
                    "issuer_name": "Demo Calibration Laboratory",
                    "issuer_kind": "calibration_laboratory",
                    "public_keys": [lab_pub],
                    "accreditation_number": "CNAS-DEMO-L0001",
                    "standard": "ISO/IEC 17025:2017",
                    "scope": "Temperature: -40 °C to 150 °C",
                    "covers": ["dcc"],
                    "valid_from": "2026-01-01",
                    "valid_until": "2030-12-31",
                },
                body_key,
            )
        ],
    )

    _say("3. the lab logs three certificate statements as one batch")
    submit("certificate.issue", [signed(certificate(n), lab_key) for n in (1, 2, 3)])
    old = ledger.verified_checkpoint()
    print(old.note.decode(), end="")

    _say("4. more statements, a resubmission, and what the trust chain refuses")
    genuine = dsse.sign(statement.encode({"signed_at": now, **certificate(6)}), lab_key)
    (sig,) = genuine.signatures
    tampered = dsse.Signature(sig.keyid, bytes([sig.sig[0] ^ 1]) + sig.sig[1:])  # one bit
    forged = jcs.canonical_bytes(replace(genuine, signatures=(tampered,)).to_json())
    stranger = SigningKey.generate(hashlib.sha256(b"not accredited").digest())
    submit("certificate.issue #4", [signed(certificate(4), lab_key)])
    submit("certificate.issue #1 again", [signed(certificate(1), lab_key)])
    submit("forged signature", [forged])
    submit("unaccredited key", [signed(certificate(7), stranger)])
    submit(
        "lab self-accreditation",
        [
            signed(
                {
                    "type": "accreditation.grant",
                    "body_id": BODY,
                    "issuer_id": LAB,
                    "issuer_name": "Demo Calibration Laboratory",
                    "issuer_kind": "calibration_laboratory",
                    "public_keys": [lab_pub],
                    "accreditation_number": "SELF-1",
                    "standard": "ISO/IEC 17025:2017",
                    "scope": "everything",
                    "covers": ["dcc"],
                    "valid_from": "2026-01-01",
                    "valid_until": "2099-12-31",
                },
                lab_key,
            )
        ],
    )
    suspend = {"body_id": BODY, "issuer_id": LAB, "accreditation_number": "CNAS-DEMO-L0001"}
    submit(
        "accreditation.suspend",
        [
            signed(
                {"type": "accreditation.suspend", **suspend, "reason": "surveillance audit"},
                body_key,
            )
        ],
    )
    submit("certificate.issue while suspended", [signed(certificate(8), lab_key)])
    submit(
        "accreditation.restore",
        [signed({"type": "accreditation.restore", **suspend, "reason": "audit passed"}, body_key)],
    )
    submit("certificate.issue #5", [signed(certificate(5), lab_key)])
    new = ledger.verified_checkpoint()
    print(new.note.decode(), end="")

    _say("5. an auditor checks entry 3 offline: tlog-proof + verifier key only")
    proof_bytes = ledger.inclusion_proof(3).to_bytes()
    leaf_data = ledger.storage.entry(3).data
    trusted = NoteVerifier.parse(verifier_key)
    checked = tlog_proof.verify(proof_bytes, leaf_data, trusted)
    print(proof_bytes.decode().split("\n\n")[0])
    print(f"OK: entry 3 is included in the signed tree of size {checked.checkpoint.size}")

    _say("6. a monitor checks the log only grew: consistency proof old -> new")
    old_cp = checkpoint.verify(old.note, trusted).checkpoint
    new_cp = checkpoint.verify(new.note, trusted).checkpoint
    hashes = ledger.consistency_proof(old_cp.size, new_cp.size)
    merkle.verify_consistency(old_cp.size, new_cp.size, hashes, old_cp.root, new_cp.root)
    for h in hashes:
        print(b64encode(h))
    print(f"OK: the tree of size {new_cp.size} extends the tree of size {old_cp.size}")

    _say("7. replay the whole log through the trust rules; status of a certificate")
    state = ledger.trust_state()
    status = certificate_status(state, f"{LAB}/DCC-2026-0001", ledger.clock())
    print(f"{status.certificate_id}: {status.status} (issued at index {status.events[0].index})")

    _say("8. fsck: re-check every stored byte and replay every signature and rule")
    report = fsck(ledger)
    print(
        f"OK: {report.entries} entries, {report.nodes} tree nodes, "
        f"{report.checkpoints} checkpoints verified"
    )
    print(
        f"\nThe demo ledger stays in {data_dir}; try:\n"
        f"  qiledger --demo --data-dir {data_dir} --log-key {settings.log_key_file} issuer {LAB}"
    )
    ledger.close()
    return 0
