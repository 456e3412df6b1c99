"""``qiledger demo``: the end-to-end story on the embedded SQLite default.

With the public demo keys of ``keys.example/`` and the invented documents of
``registry/demo/documents/``: the operator makes an accreditation body a trust
anchor, the body accredits a calibration laboratory and a certification body,
they register a DCC and a certification certificate with their documents, the
log refuses what the trust chain does not allow, the lab amends its DCC, and an
outside auditor checks inclusion and consistency with nothing but ``verifier``
and the log's verifier-key string.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shlex
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from registry.config import Settings
from registry.demo import DEMO_DOCUMENTS
from registry.demo.http_step import run_http_step
from registry.errors import ConfigError
from registry.fsck import fsck
from registry.keys import keyfile
from registry.keys.demo_keys import DEMO_KEYS_DIR
from registry.ledger import Ledger
from registry.sequencer import Accepted, Outcome, Refused
from verifier import checkpoint, dsse, jcs, merkle, statement
from verifier import proof as tlog_proof
from verifier.certification import IAF_STATUS
from verifier.encoding import b64encode
from verifier.entry import format_time
from verifier.errors import QILedgerError
from verifier.keys import SigningKey
from verifier.note import NoteVerifier
from verifier.trust import certificate_status

LAB, CB, BODY = "DEMO-LAB", "DEMO-CB", "CNAS-DEMO"


def _key(name: str) -> SigningKey:
    path = DEMO_KEYS_DIR / f"{name}.key"
    if not path.exists():
        raise ConfigError(f"the demo needs the repository's keys.example/ folder ({path})")
    return keyfile.read_private_key(path, None, demo=True)


def _say(step: str) -> None:
    print(f"\n== {step}")


def _show(label: str, outcome: Outcome) -> None:
    if isinstance(outcome, Refused):
        print(f"  {label:36} REFUSED ({outcome.error.code}): {outcome.error.message}")
    else:
        verb = "already logged at" if outcome.duplicate else "logged at"
        print(f"  {label:36} {verb} index {outcome.index}")


def _attempt(label: str, action: Callable[[], Accepted]) -> None:
    try:
        _show(label, action())
    except QILedgerError as exc:
        _show(label, Refused(exc))


def _qiledger_command() -> str:
    """How to run ``qiledger`` from the shell the demo was started in: by its path
    when it is not on PATH (the quick start runs it from .venv without activating)."""
    here = Path(sys.executable).with_name("qiledger")
    on_path = shutil.which("qiledger")
    if here.exists() and (on_path is None or Path(on_path).resolve() != here.resolve()):
        return shlex.quote(str(here))
    return "qiledger"


def run_demo(data_dir: Path | None) -> int:
    data_dir = data_dir or Path(tempfile.mkdtemp(prefix="qiledger-demo-"))
    settings = replace(
        Settings.from_env(str(data_dir)), log_key_path=DEMO_KEYS_DIR / "log.key", demo=True
    )
    log_key, body_key = _key("log"), _key("accreditation-body")
    lab_key, cb_key = _key("calibration-lab"), _key("certification-body")

    _say(f"1. create a ledger in {data_dir} (SQLite, WAL, synchronous=FULL)")
    ledger = Ledger.init(
        settings, origin="demo.qiledger.local/log", passphrase=None, existing_key=log_key
    )
    verifier_key = str(ledger.identity.verifier)
    print(f"log verifier key: {verifier_key}")
    if settings.dcc_schemas is None:
        print("(QILEDGER_DCC_SCHEMAS is not set: DCCs are logged with schema_validated: false)")
    now = format_time(ledger.clock())

    def signed(fields: dict[str, Any], key: SigningKey) -> bytes:
        payload = statement.encode({"signed_at": now, **fields})
        return jcs.canonical_bytes(dsse.sign(payload, key).to_json())

    def submit(label: str, fields: dict[str, Any], key: SigningKey) -> None:
        (outcome,) = ledger.submit_envelopes([signed(fields, key)])
        _show(label, outcome)

    def issue(label: str, name: str, issuer: str, key: SigningKey) -> None:
        data = (DEMO_DOCUMENTS / name).read_bytes()
        _attempt(label, lambda: ledger.issue_certificate(data, issuer, key))

    def grant(
        issuer: str,
        kind: str,
        key: SigningKey,
        covers: str,
        number: str,
        standard: str,
        signer: SigningKey,
    ) -> dict[str, Any]:
        return {
            "type": "accreditation.grant",
            "body_id": BODY,
            "issuer_id": issuer,
            "issuer_name": f"{issuer} (demo)",
            "issuer_kind": kind,
            "public_keys": [base64.b64encode(key.public_key.raw).decode()],
            "accreditation_number": number,
            "standard": standard,
            "scope": "demo scope",
            "covers": [covers],
            "valid_from": "2026-01-01",
            "valid_until": "2030-12-31",
        }

    _say("2. the operator trusts an accreditation body; it accredits a lab and a CB")
    submit(
        "trust.body.add CNAS-DEMO",
        {
            "type": "trust.body.add",
            "body_id": BODY,
            "name": "Demo Accreditation Service",
            "country": "CN",
            "public_key": base64.b64encode(body_key.public_key.raw).decode(),
        },
        log_key,
    )
    submit(
        "accreditation.grant DEMO-LAB",
        grant(
            LAB,
            "calibration_laboratory",
            lab_key,
            "dcc",
            "CNAS-DEMO-L0001",
            "ISO/IEC 17025:2017",
            body_key,
        ),
        body_key,
    )
    submit(
        "accreditation.grant DEMO-CB",
        grant(
            CB,
            "certification_body",
            cb_key,
            "management_system",
            "CNAS-DEMO-C0001",
            "ISO/IEC 17021-1:2015",
            body_key,
        ),
        body_key,
    )

    _say("3. the lab registers a DCC, the CB a certification certificate")
    issue("DCC DEMO-LAB/DCC-2026-0001", "demo-dcc.xml", LAB, lab_key)
    issue("ISO 9001 DEMO-CB/DEMO-QMS-2026-0042", "demo-certification.json", CB, cb_key)
    old = ledger.verified_checkpoint()
    print(old.note.decode(), end="")

    _say("4. what the trust chain refuses")
    genuine = dsse.sign(
        statement.encode(
            {
                "signed_at": now,
                "type": "certificate.suspend",
                "issuer_id": LAB,
                "certificate_id": f"{LAB}/DCC-2026-0001",
                "reason": "demo",
            }
        ),
        lab_key,
    )
    (sig,) = genuine.signatures
    tampered = dsse.Signature(sig.keyid, bytes([sig.sig[0] ^ 1]) + sig.sig[1:])  # one bit
    forged = jcs.canonical_bytes(replace(genuine, signatures=(tampered,)).to_json())
    _show("forged signature", ledger.submit_envelopes([forged])[0])
    stranger = SigningKey.generate(hashlib.sha256(b"not accredited").digest())
    issue("DCC signed by an unaccredited key", "demo-dcc-amended.xml", LAB, stranger)
    issue("lab issuing an ISO 9001 certificate", "demo-certification.json", LAB, lab_key)
    submit(
        "lab accrediting itself",
        {
            **grant(
                LAB,
                "calibration_laboratory",
                lab_key,
                "dcc",
                "SELF-1",
                "ISO/IEC 17025:2017",
                lab_key,
            )
        },
        lab_key,
    )
    acc = {"body_id": BODY, "issuer_id": LAB, "accreditation_number": "CNAS-DEMO-L0001"}
    submit(
        "accreditation.suspend DEMO-LAB",
        {"type": "accreditation.suspend", **acc, "reason": "surveillance audit"},
        body_key,
    )
    issue("amended DCC while suspended", "demo-dcc-amended.xml", LAB, lab_key)
    submit(
        "accreditation.restore DEMO-LAB",
        {"type": "accreditation.restore", **acc, "reason": "audit passed"},
        body_key,
    )

    _say("5. the lab amends its DCC; the CB suspends and reinstates its certificate")
    issue("DCC DEMO-LAB/DCC-2026-0001-A1", "demo-dcc-amended.xml", LAB, lab_key)
    issue("the same amended DCC again", "demo-dcc-amended.xml", LAB, lab_key)
    qms = {"issuer_id": CB, "certificate_id": f"{CB}/DEMO-QMS-2026-0042"}
    submit(
        "certificate.suspend QMS",
        {"type": "certificate.suspend", **qms, "reason": "major nonconformity"},
        cb_key,
    )
    reinstate = signed(
        {"type": "certificate.reinstate", **qms, "reason": "corrective action verified"}, cb_key
    )
    _show("certificate.reinstate QMS", ledger.submit_envelopes([reinstate])[0])
    # A statement is logged once, whatever envelope carries it (DESIGN.md item 8).
    rewrapped = json.loads(reinstate)
    rewrapped["signatures"].append({"keyid": "0" * 64, "sig": b64encode(bytes(64))})
    _show(
        "the reinstate with a 2nd signature",
        ledger.submit_envelopes([jcs.canonical_bytes(rewrapped)])[0],
    )
    pretty = json.dumps(json.loads(reinstate), indent=2).encode()
    _show("the reinstate in other JSON", ledger.submit_envelopes([pretty])[0])
    new = ledger.verified_checkpoint()
    print(new.note.decode(), end="")

    _say("6. an auditor checks the DCC's entry offline: tlog-proof + verifier key only")
    proof_bytes = ledger.inclusion_proof(3).to_bytes()
    leaf_data = ledger.storage.entry(3).data
    trusted = NoteVerifier.parse(verifier_key)
    checked = tlog_proof.verify(proof_bytes, leaf_data, trusted)
    print(proof_bytes.decode().split("\n\n")[0])
    print(f"OK: entry 3 is included in the signed tree of size {checked.checkpoint.size}")

    _say("7. a monitor checks the log only grew: consistency proof old -> new")
    old_cp = checkpoint.verify(old.note, trusted).checkpoint
    new_cp = checkpoint.verify(new.note, trusted).checkpoint
    hashes = ledger.consistency_proof(old_cp.size, new_cp.size)
    merkle.verify_consistency(old_cp.size, new_cp.size, hashes, old_cp.root, new_cp.root)
    for h in hashes:
        print(b64encode(h))
    print(f"OK: the tree of size {new_cp.size} extends the tree of size {old_cp.size}")

    _say("8. statuses replayed from the log; documents come back byte for byte")
    state = ledger.trust_state()
    for cert_id in (f"{LAB}/DCC-2026-0001", f"{LAB}/DCC-2026-0001-A1", f"{CB}/DEMO-QMS-2026-0042"):
        status = certificate_status(state, cert_id, ledger.clock())
        detail = f" ({status.reason})" if status.reason else ""
        print(f"  {cert_id:32} {IAF_STATUS[status.status]}{detail}")
    original = (DEMO_DOCUMENTS / "demo-dcc.xml").read_bytes()
    stored = ledger.storage.document(hashlib.sha256(original).hexdigest())
    print(f"  stored DCC document: {len(stored.data)} bytes, identical: {stored.data == original}")

    _say("9. the HTTP API: a lab's system registers a DCC, anyone reads its status")
    second_dcc = original.replace(b"DCC-2026-0001", b"DCC-2026-0002")
    run_http_step(ledger, LAB, lab_key, second_dcc)

    _say("10. fsck: re-check every stored byte and replay every signature and rule")
    report = fsck(ledger)
    print(
        f"OK: {report.entries} entries, {report.nodes} tree nodes, "
        f"{report.checkpoints} checkpoints, {report.documents} documents verified"
    )
    print(
        f"\nThe demo ledger stays in {data_dir}; try:\n"
        f"  {_qiledger_command()} --demo --data-dir {data_dir} "
        f"--log-key {settings.log_key_file} certificate {LAB}/DCC-2026-0001"
    )
    ledger.close()
    return 0
