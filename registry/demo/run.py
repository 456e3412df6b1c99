"""``qiledger demo``: the end-to-end story on the embedded SQLite default.

With the public demo keys of ``keys.example/`` and the invented documents of
``registry/demo/documents/``: the operator makes an accreditation body a trust
anchor, the body accredits a calibration laboratory and a certification body,
they register a DCC and a certification certificate with their documents, the
log refuses what the trust chain does not allow, the lab amends its DCC, and an
outside auditor checks inclusion and consistency with nothing but ``verifier``
and the log's verifier-key string.

The output is a numbered story: each artifact with its label (a short prefix
where nobody needs the full value, in full where a reader would copy it), and an
``OK:`` line saying what each check proved. The checkpoints, proofs and the HTTP
receipt are saved under ``<data dir>/evidence/``, and the closing lines give the
``qiverify`` commands that re-check them trusting only the log's key.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import replace
from datetime import date
from pathlib import Path

from registry.config import Settings
from registry.demo import DEMO_DOCUMENTS, story
from registry.demo.http_step import run_http_step
from registry.errors import ConfigError
from registry.fsck import fsck
from registry.keys import keyfile
from registry.keys.demo_keys import DEMO_KEYS_DIR
from registry.ledger import Ledger
from registry.sequencer import Accepted, Outcome, Refused
from verifier import checkpoint, dsse, jcs, merkle, statement
from verifier import proof as tlog_proof
from verifier.encoding import b64encode
from verifier.errors import QILedgerError
from verifier.keys import SigningKey
from verifier.note import NoteVerifier
from verifier.trust import IAF_STATUS, certificate_status

LAB, CB, BODY = "DEMO-LAB", "DEMO-CB", "CNAS-DEMO"
# Key IDs and digests in refusal messages are cut to 16 hex digits: the error code
# and the named link are what a reader follows, not 64 digits.
_HEX_ID = re.compile(r"\b([0-9a-f]{16})[0-9a-f]{48}\b")


def _key(name: str) -> SigningKey:
    path = DEMO_KEYS_DIR / f"{name}.key"
    if not path.exists():
        raise ConfigError(f"the demo needs the repository's keys.example/ folder ({path})")
    return keyfile.read_private_key(path, None, demo=True)


def _show(label: str, outcome: Outcome) -> Outcome:
    if isinstance(outcome, Refused):
        message = _HEX_ID.sub(r"\1…", outcome.error.message)
        print(f"  {label:36} REFUSED ({outcome.error.code})\n      why: {message}")
    else:
        verb = "already logged at" if outcome.duplicate else "logged at"
        print(f"  {label:36} {verb} index {outcome.index}")
    return outcome


def _attempt(label: str, action: Callable[[], Accepted]) -> Outcome:
    try:
        return _show(label, action())
    except QILedgerError as exc:
        return _show(label, Refused(exc))


def _save(evidence: Path, name: str, data: bytes) -> str:
    """Keep an artifact for the reader to re-check; returns the name printed for it."""
    (evidence / name).write_bytes(data)
    return f"evidence/{name}"


def _checkpoint(
    name: str, note: bytes, trusted: NoteVerifier, evidence: Path
) -> checkpoint.SignedCheckpoint:
    """Check a signed checkpoint with the printed verifier key, show and save it."""
    signed = checkpoint.verify(note, trusted)
    cp = signed.checkpoint
    saved = _save(evidence, f"checkpoint-{cp.size}", note)
    story.artifact(
        name, f"tree size {cp.size}, root hash {story.short(cp.root)} (saved as {saved})"
    )
    story.ok(
        f"{name} is signed by the log verifier key: the log commits to these {cp.size} entries"
    )
    return signed


def _command(name: str) -> str:
    """How to run ``qiledger`` or ``qiverify`` from the shell the demo was started in:
    by its path when it is not on PATH (the quick start runs it from .venv without
    activating)."""
    here = Path(sys.executable).with_name(name)
    on_path = shutil.which(name)
    if here.exists() and (on_path is None or Path(on_path).resolve() != here.resolve()):
        return shlex.quote(str(here))
    return name


def run_demo(data_dir: Path | None) -> int:
    data_dir = data_dir or Path(tempfile.mkdtemp(prefix="qiledger-demo-"))
    settings = replace(
        Settings.from_env(str(data_dir)), log_key_path=DEMO_KEYS_DIR / "log.key", demo=True
    )
    log_key, body_key = _key("log"), _key("accreditation-body")
    lab_key, cb_key = _key("calibration-lab"), _key("certification-body")

    print(
        "QI Ledger demo: an accreditation body, a laboratory and a certification body use a\n"
        "public log; an auditor checks it. Each step shows what was logged or refused,\n"
        "each artifact has a label, and each OK: line says what a check proved."
    )
    story.step("1. the operator creates a ledger")
    ledger = Ledger.init(
        settings, origin="demo.qiledger.local/log", passphrase=None, existing_key=log_key
    )
    story.artifact("data directory", f"{data_dir} (SQLite, WAL, synchronous=FULL)")
    evidence = data_dir / "evidence"
    evidence.mkdir(exist_ok=True)
    verifier_key = str(ledger.identity.verifier)
    trusted = NoteVerifier.parse(verifier_key)
    story.artifact(
        "log verifier key",
        verifier_key,
        "the one value an auditor needs from the operator "
        f"(saved as {_save(evidence, 'log.vkey', (verifier_key + chr(10)).encode())})",
    )
    if settings.dcc_schemas is None:
        story.note("QILEDGER_DCC_SCHEMAS is not set: DCCs are logged with schema_validated: false")
    now = ledger.clock()

    def signed(built: statement.StatementBuilder, key: SigningKey) -> bytes:
        return jcs.canonical_bytes(dsse.sign(built.encode(now), key).to_json())

    def submit(label: str, built: statement.StatementBuilder, key: SigningKey) -> Outcome:
        (outcome,) = ledger.submit_envelopes([signed(built, key)])
        return _show(label, outcome)

    def issue(label: str, name: str, issuer: str, key: SigningKey) -> Outcome:
        data = (DEMO_DOCUMENTS / name).read_bytes()
        return _attempt(label, lambda: ledger.issue_certificate(data, issuer, key))

    def grant(
        issuer: str,
        kind: str,
        key: SigningKey,
        covers: str,
        number: str,
        standard: str,
        signer: SigningKey,
    ) -> statement.AccreditationGrant:
        return statement.AccreditationGrant(
            body_id=BODY,
            issuer_id=issuer,
            issuer_name=f"{issuer} (demo)",
            issuer_kind=kind,
            public_keys=(key.public_key,),
            accreditation_number=number,
            standard=standard,
            scope="demo scope",
            covers=(covers,),
            valid_from=date(2026, 1, 1),
            valid_until=date(2030, 12, 31),
        )

    story.step("2. the operator trusts an accreditation body; it accredits a lab and a CB")
    submit(
        "trust.body.add CNAS-DEMO",
        statement.BodyAdd(
            body_id=BODY,
            name="Demo Accreditation Service",
            country="CN",
            public_key=body_key.public_key,
        ),
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
    story.note(
        "each: a statement signed by its author, checked by the trust rules, logged for good"
    )

    story.step("3. the lab registers a DCC, the CB an ISO 9001 certificate")
    dcc = issue("DCC DEMO-LAB/DCC-2026-0001", "demo-dcc.xml", LAB, lab_key)
    if isinstance(dcc, Refused):
        raise dcc.error
    issue("ISO 9001 DEMO-CB/DEMO-QMS-2026-0042", "demo-certification.json", CB, cb_key)
    original = (DEMO_DOCUMENTS / "demo-dcc.xml").read_bytes()
    digest = hashlib.sha256(original).hexdigest()
    story.artifact(
        "DCC SHA-256",
        story.short(digest, 16),
        f"entry {dcc.index} names the document by this digest: these exact bytes",
    )
    old = _checkpoint("checkpoint A", ledger.verified_checkpoint().note, trusted, evidence)

    story.step("4. what the trust chain refuses")
    step4: list[Outcome] = []
    genuine = dsse.sign(
        statement.CertificateSuspend(
            issuer_id=LAB, certificate_id=f"{LAB}/DCC-2026-0001", reason="demo"
        ).encode(now),
        lab_key,
    )
    (sig,) = genuine.signatures
    tampered = dsse.Signature(sig.keyid, bytes([sig.sig[0] ^ 1]) + sig.sig[1:])  # one bit
    forged = jcs.canonical_bytes(replace(genuine, signatures=(tampered,)).to_json())
    step4.append(_show("forged signature", ledger.submit_envelopes([forged])[0]))
    stranger = SigningKey.generate(hashlib.sha256(b"not accredited").digest())
    step4.append(issue("DCC signed by an unaccredited key", "demo-dcc-amended.xml", LAB, stranger))
    step4.append(
        issue("lab issuing an ISO 9001 certificate", "demo-certification.json", LAB, lab_key)
    )
    lab_self = submit(
        "lab accrediting itself",
        grant(
            LAB, "calibration_laboratory", lab_key, "dcc", "SELF-1", "ISO/IEC 17025:2017", lab_key
        ),
        lab_key,
    )
    step4.append(lab_self)
    acc = {"body_id": BODY, "issuer_id": LAB, "accreditation_number": "CNAS-DEMO-L0001"}
    suspend = submit(
        "accreditation.suspend DEMO-LAB",
        statement.AccreditationSuspend(**acc, reason="surveillance audit"),
        body_key,
    )
    step4.append(suspend)
    step4.append(issue("amended DCC while suspended", "demo-dcc-amended.xml", LAB, lab_key))
    step4.append(
        submit(
            "accreditation.restore DEMO-LAB",
            statement.AccreditationRestore(**acc, reason="audit passed"),
            body_key,
        )
    )
    refused = sum(isinstance(o, Refused) for o in step4)
    logged = sum(isinstance(o, Accepted) and not o.duplicate for o in step4)
    size = ledger.verified_checkpoint().checkpoint.size
    story.check(
        size == old.checkpoint.size + logged,
        f"the log grew by the {logged} accepted statements only ({old.checkpoint.size} -> "
        f"{size} entries): the {refused} refusals left no trace",
    )

    story.step("5. the lab amends its DCC; the CB suspends and reinstates its certificate")
    issue("DCC DEMO-LAB/DCC-2026-0001-A1", "demo-dcc-amended.xml", LAB, lab_key)
    issue("the same amended DCC again", "demo-dcc-amended.xml", LAB, lab_key)
    qms = {"issuer_id": CB, "certificate_id": f"{CB}/DEMO-QMS-2026-0042"}
    submit(
        "certificate.suspend QMS",
        statement.CertificateSuspend(**qms, reason="major nonconformity"),
        cb_key,
    )
    reinstate = signed(
        statement.CertificateReinstate(**qms, reason="corrective action verified"), cb_key
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
    story.note("a statement is logged once: sent again, in any envelope, it gets its index")
    new = _checkpoint("checkpoint B", ledger.verified_checkpoint().note, trusted, evidence)

    story.step(
        f"6. an auditor checks the DCC's entry {dcc.index} offline, trusting only the log key"
    )
    proof = ledger.inclusion_proof(dcc.index)
    leaf_data = ledger.entry(dcc.index).data
    entry_file = _save(evidence, f"entry-{dcc.index}.bin", leaf_data)
    proof_file = _save(evidence, f"entry-{dcc.index}.tlog-proof", proof.to_bytes())
    story.artifact(
        f"entry {dcc.index}",
        f"{len(leaf_data)} bytes, leaf hash {story.short(merkle.leaf_hash(leaf_data))} "
        f"(saved as {entry_file})",
    )
    story.artifact(
        "inclusion proof", story.hashes(proof.hashes), f"with checkpoint B: {proof_file}"
    )
    checked = tlog_proof.verify(proof.to_bytes(), leaf_data, trusted).checkpoint
    story.ok(
        f"entry {dcc.index}'s inclusion proof verifies against checkpoint B (tree size "
        f"{checked.size}): the DCC is in the log everyone sees"
    )

    story.step("7. a monitor checks the log only grew: checkpoint A -> checkpoint B")
    old_cp, new_cp = old.checkpoint, new.checkpoint
    hashes = ledger.consistency_proof(old_cp.size, new_cp.size)
    consistency_file = _save(
        evidence,
        f"consistency-{old_cp.size}-{new_cp.size}.proof",
        tlog_proof.format_consistency(hashes),
    )
    story.artifact("consistency proof", story.hashes(hashes), f"saved as {consistency_file}")
    merkle.verify_consistency(old_cp.size, new_cp.size, hashes, old_cp.root, new_cp.root)
    story.ok(
        f"tree size {new_cp.size} (B) extends tree size {old_cp.size} (A): no entry of A "
        "was changed, removed or reordered"
    )

    story.step("8. anyone replays the log: certificate statuses, documents byte for byte")
    state = ledger.trust_state()
    for cert_id in (f"{LAB}/DCC-2026-0001", f"{LAB}/DCC-2026-0001-A1", f"{CB}/DEMO-QMS-2026-0042"):
        status = certificate_status(state, cert_id, ledger.clock())
        detail = f" ({status.reason})" if status.reason else ""
        print(f"  {cert_id:32} {IAF_STATUS[status.status]}{detail}")
    story.note("each status is computed from the logged statements alone")
    stored = ledger.document(digest)
    story.check(
        stored.data == original and hashlib.sha256(stored.data).hexdigest() == digest,
        f"the stored DCC ({len(stored.data)} bytes) has the logged SHA-256 "
        f"{story.short(digest, 16)}: it is byte for byte the lab's file",
    )

    story.step("9. the HTTP API: a lab's system registers a DCC, anyone reads its status")
    second_dcc = original.replace(b"DCC-2026-0001", b"DCC-2026-0002")
    receipt = run_http_step(ledger, LAB, lab_key, second_dcc)
    saved = _save(
        evidence, f"receipt-{receipt['index']}.json", json.dumps(receipt, indent=2).encode()
    )
    story.note(f"the lab keeps the receipt as its proof of registration: {saved}")

    story.step("10. fsck: re-check every stored byte, replay every signature and trust rule")
    report = fsck(ledger)
    story.ok(
        f"{report.entries} entries, {report.nodes} tree nodes, {report.checkpoints} "
        f"checkpoints and {report.documents} documents re-checked: the ledger is intact"
    )
    folder = shlex.quote(str(evidence.resolve()))
    qiverify = _command("qiverify")
    print(
        f"\nThe demo ledger stays in {data_dir}. Check its evidence yourself, trusting only "
        f"the log key:\n"
        f"  cd {folder}\n"
        f"  {qiverify} checkpoint checkpoint-{new_cp.size} --log-key log.vkey\n"
        f"  {qiverify} inclusion {Path(proof_file).name} {Path(entry_file).name} "
        "--log-key log.vkey\n"
        f"  {qiverify} consistency --old checkpoint-{old_cp.size} --new "
        f"checkpoint-{new_cp.size} --proof {Path(consistency_file).name} --log-key log.vkey\n"
        f"and look a certificate up:\n"
        f"  {_command('qiledger')} --demo --data-dir {shlex.quote(str(data_dir.resolve()))} "
        f"--log-key {settings.log_key_file} certificate {LAB}/DCC-2026-0001"
    )
    ledger.close()
    return 0
