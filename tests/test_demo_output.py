"""The demo's output is a story people can follow, and what it prints is true.

The demo runs once (``qiledger demo``); the tests read what it printed: the ten
numbered steps in order, every artifact with its label and every ``OK:`` line
saying what a check proved; then each printed checkpoint, proof and receipt is
checked again here with ``verifier`` alone, against the verifier key the demo
printed (and the printed prefixes against the saved files), and the closing
``qiverify`` and ``qiledger`` commands are run as printed.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from registry.cli.main import main as qiledger
from verifier import checkpoint, mark, merkle
from verifier import proof as tlog_proof
from verifier.cli import main as qiverify
from verifier.encoding import b64decode, b64encode
from verifier.errors import InconsistencyError, ProofError, SignatureError
from verifier.note import NoteVerifier

STEPS = [
    "== 1. the operator creates a ledger",
    "== 2. the operator trusts an accreditation body; it accredits a lab and a CB",
    "== 3. the lab registers a DCC, the CB an ISO 9001 certificate",
    "== 4. what the trust chain refuses",
    "== 5. the lab amends its DCC; the CB suspends and reinstates its certificate",
    "== 6. an auditor checks the DCC's entry 3 offline, trusting only the log key",
    "== 7. a monitor checks the log only grew: checkpoint A -> checkpoint B",
    "== 8. anyone replays the log: certificate statuses, documents byte for byte",
    "== 9. the HTTP API: a lab's system registers a DCC, anyone reads its status",
    "== 10. fsck: re-check every stored byte, replay every signature and trust rule",
]

# Each artifact's label and each check's meaning, in the order printed (regexes,
# each matching a whole line).
STORY = [
    r"  data directory: +\S+ \(SQLite, WAL, synchronous=FULL\)",
    r"  log verifier key: +demo\.qiledger\.local/log\+[0-9a-f]{8}\+\S+",
    r" +the one value an auditor needs from the operator \(saved as evidence/log\.vkey\)",
    r"  trust\.body\.add CNAS-DEMO +logged at index 0",
    r"  \(each: a statement signed by its author, checked by the trust rules, logged for good\)",
    r"  DCC DEMO-LAB/DCC-2026-0001 +logged at index 3",
    r"  DCC SHA-256: +[0-9a-f]{16}…",
    r" +entry 3 names the document by this digest: these exact bytes",
    r"  checkpoint A: +tree size 5, root hash \S{12}… \(saved as evidence/checkpoint-5\)",
    r"  OK: checkpoint A is signed by the log verifier key: the log commits to these 5 entries",
    r"  forged signature +REFUSED \(signature_invalid\)",
    r"      why: signature by key [0-9a-f]{16}… does not verify",
    r"  DCC signed by an unaccredited key +REFUSED \(key_not_issuer\)",
    r"  lab issuing an ISO 9001 certificate +REFUSED \(document_mismatch\)",
    r"  lab accrediting itself +REFUSED \(self_accreditation\)",
    r"  accreditation\.suspend DEMO-LAB +logged at index 5",
    r"  amended DCC while suspended +REFUSED \(accreditation_suspended\)",
    r"  accreditation\.restore DEMO-LAB +logged at index 6",
    r"  OK: the log grew by the 2 accepted statements only \(5 -> 7 entries\): "
    r"the 5 refusals left no trace",
    r"  DCC DEMO-LAB/DCC-2026-0001-A1 +logged at index 7",
    r"  the same amended DCC again +already logged at index 7",
    r"  the reinstate with a 2nd signature +REFUSED \(signature_count\)",
    r"  the reinstate in other JSON +already logged at index 9",
    r"  \(a statement is logged once: sent again, in any envelope, it gets its index\)",
    r"  checkpoint B: +tree size 10, root hash \S{12}… \(saved as evidence/checkpoint-10\)",
    r"  OK: checkpoint B is signed by the log verifier key: the log commits to these 10 entries",
    r"  entry 3: +\d+ bytes, leaf hash \S{12}… \(saved as evidence/entry-3\.bin\)",
    r"  inclusion proof: +\d+ hashes( \S{8}…)+",
    r" +with checkpoint B: evidence/entry-3\.tlog-proof",
    r"  OK: entry 3's inclusion proof verifies against checkpoint B \(tree size 10\): "
    r"the DCC is in the log everyone sees",
    r"  consistency proof: +\d+ hashes( \S{8}…)+",
    r" +saved as evidence/consistency-5-10\.proof",
    r"  OK: tree size 10 \(B\) extends tree size 5 \(A\): "
    r"no entry of A was changed, removed or reordered",
    r"  DEMO-LAB/DCC-2026-0001 +Superseded \(superseded by DEMO-LAB/DCC-2026-0001-A1\)",
    r"  DEMO-LAB/DCC-2026-0001-A1 +Active",
    r"  DEMO-CB/DEMO-QMS-2026-0042 +Active \(corrective action verified\)",
    r"  \(each status is computed from the logged statements alone\)",
    r"  OK: the stored DCC \(\d+ bytes\) has the logged SHA-256 [0-9a-f]{16}…: "
    r"it is byte for byte the lab's file",
    r"  API: +serving on http://127\.0\.0\.1:\d+",
    r"  API token: +created for DEMO-LAB's LIMS \(the registry stores its hash\)",
    r"  POST /api/v1/certificates -> 201: DEMO-LAB/DCC-2026-0002 at index 10, tree size 11",
    r"  receipt: leaf hash: +\S{12}…",
    r"  receipt: proof: +\d+ hashes( \S{8}…)+",
    r"  receipt: checkpoint: +tree size 11, root hash \S{12}…",
    r"  OK: the receipt's proof of entry 10 verifies against its signed checkpoint "
    r"\(size 11\): proof of registration",
    r"  receipt: QR mark URL: HTTP://127\.0\.0\.1:\d+/M/[A-Z2-7]+… \(\d+ characters\)",
    r"  OK: the QR mark is signed by the log and names DEMO-LAB/DCC-2026-0002: "
    r"a scanned label is genuine",
    r"  GET /api/v1/certificates/DEMO-LAB/DCC-2026-0002 -> 200: Active, issuer DEMO-LAB \(demo\)",
    r"  POST /api/v1/statements without a token -> 401 token_missing",
    r"  \(the lab keeps the receipt as its proof of registration: evidence/receipt-10\.json\)",
    r"  OK: 11 entries, 19 tree nodes, 12 checkpoints and 4 documents re-checked: "
    r"the ledger is intact",
    r"The demo ledger stays in \S+\. Check its evidence yourself, trusting only the log key:",
    r"  cd \S+",
    r"  \S*qiverify checkpoint checkpoint-10 --log-key log\.vkey",
    r"  \S*qiverify inclusion entry-3\.tlog-proof entry-3\.bin --log-key log\.vkey",
    r"  \S*qiverify consistency --old checkpoint-5 --new checkpoint-10 "
    r"--proof consistency-5-10\.proof --log-key log\.vkey",
    r"and look a certificate up:",
    r"  \S*qiledger --demo --data-dir \S+ --log-key \S+ certificate DEMO-LAB/DCC-2026-0001",
]


@dataclass(frozen=True)
class Demo:
    lines: list[str]
    data_dir: Path

    @property
    def evidence(self) -> Path:
        return self.data_dir / "evidence"

    def line(self, pattern: str) -> re.Match[str]:
        """The one printed line matching ``pattern`` in full."""
        matches = [m for m in (re.fullmatch(pattern, line) for line in self.lines) if m]
        assert len(matches) == 1, (pattern, len(matches))
        return matches[0]

    def file(self, name: str) -> bytes:
        return (self.evidence / name).read_bytes()

    def log_key(self) -> NoteVerifier:
        """The verifier key exactly as printed (not as read from the ledger)."""
        return NoteVerifier.parse(self.line(r"  log verifier key: +(\S+)").group(1))


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    data_dir = tmp_path_factory.mktemp("demo") / "ledger"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert qiledger(["demo", "--data-dir", str(data_dir)]) == 0
    return Demo(out.getvalue().splitlines(), data_dir)


def _in_order(lines: list[str], patterns: list[str]) -> None:
    position = 0
    for pattern in patterns:
        found = next(
            (i for i in range(position, len(lines)) if re.fullmatch(pattern, lines[i])), None
        )
        assert found is not None, f"not printed after line {position}: {pattern}"
        position = found + 1


def test_steps_are_numbered_in_order(demo: Demo) -> None:
    steps = [line for line in demo.lines if line.startswith("== ")]
    assert steps == STEPS


def test_every_label_and_meaning_is_printed_in_order(demo: Demo) -> None:
    _in_order(demo.lines, STORY)


def test_the_order_check_can_fail() -> None:
    with pytest.raises(AssertionError, match="not printed"):
        _in_order(["  OK: b", "  OK: a"], [r"  OK: a", r"  OK: b"])


def test_every_check_line_says_what_it_proved(demo: Demo) -> None:
    checks = [line for line in demo.lines if line.lstrip().startswith("OK")]
    assert len(checks) == 9
    for line in checks:
        assert re.fullmatch(r"  OK: \S.+: \S.+", line), line  # what passed: what it means


def test_no_walls_of_base64(demo: Demo) -> None:
    """Only the verifier key is printed as a long base64 value: a reader copies it."""
    long = [line for line in demo.lines if re.search(r"[A-Za-z0-9+/]{40,}", line)]
    assert long == [demo.line(r"  log verifier key: +\S+").group(0)]
    # Lines stay short, except for the paths of this machine the commands name.
    here = str(demo.data_dir.resolve())
    assert max(len(line.replace(here, "DIR")) for line in demo.lines if " --" not in line) <= 125


def test_printed_checkpoints_verify_and_match_the_saved_ones(demo: Demo) -> None:
    key = demo.log_key()
    assert demo.file("log.vkey").decode().strip() == str(key)
    for name, size in (("A", 5), ("B", 10)):
        printed = demo.line(
            rf"  checkpoint {name}: +tree size (\d+), root hash (\S{{12}})… "
            rf"\(saved as evidence/(checkpoint-\d+)\)"
        )
        signed = checkpoint.verify(demo.file(printed.group(3)), key)
        assert signed.checkpoint.size == int(printed.group(1)) == size
        assert b64encode(signed.checkpoint.root).startswith(printed.group(2))
        assert signed.checkpoint.origin == "demo.qiledger.local/log"


def test_printed_inclusion_proof_verifies(demo: Demo) -> None:
    key = demo.log_key()
    data = demo.file("entry-3.bin")
    proof_bytes = demo.file("entry-3.tlog-proof")
    signed = tlog_proof.verify(proof_bytes, data, key)
    assert signed.note == demo.file("checkpoint-10")  # "with checkpoint B"
    proof = tlog_proof.TlogProof.from_bytes(proof_bytes)
    assert proof.index == 3
    printed = demo.line(r"  inclusion proof: +(\d+) hashes((?: \S{8}…)+)")
    _prefixes_match(printed, proof.hashes)
    entry = demo.line(r"  entry 3: +(\d+) bytes, leaf hash (\S{12})… .*")
    assert int(entry.group(1)) == len(data)
    assert b64encode(merkle.leaf_hash(data)).startswith(entry.group(2))
    with pytest.raises(ProofError):
        tlog_proof.verify(proof_bytes, data + b" ", key)


def test_printed_consistency_proof_verifies(demo: Demo) -> None:
    key = demo.log_key()
    old = checkpoint.verify(demo.file("checkpoint-5"), key).checkpoint
    new = checkpoint.verify(demo.file("checkpoint-10"), key).checkpoint
    hashes = tlog_proof.parse_consistency(demo.file("consistency-5-10.proof"))
    merkle.verify_consistency(old.size, new.size, hashes, old.root, new.root)
    _prefixes_match(demo.line(r"  consistency proof: +(\d+) hashes((?: \S{8}…)+)"), hashes)
    with pytest.raises(InconsistencyError):
        merkle.verify_consistency(old.size, new.size, hashes, new.root, new.root)


def test_printed_receipt_verifies(demo: Demo) -> None:
    key = demo.log_key()
    receipt = json.loads(demo.file("receipt-10.json"))
    signed = checkpoint.verify(receipt["checkpoint"].encode(), key).checkpoint
    leaf = b64decode(receipt["leaf_hash"], "leaf hash")
    proof = [b64decode(h, "proof hash") for h in receipt["inclusion_proof"]]
    merkle.verify_inclusion(leaf, receipt["index"], signed.size, proof, signed.root)
    assert (receipt["index"], signed.size) == (10, 11)
    assert b64encode(leaf).startswith(demo.line(r"  receipt: leaf hash: +(\S{12})…").group(1))
    _prefixes_match(demo.line(r"  receipt: proof: +(\d+) hashes((?: \S{8}…)+)"), proof)
    root = demo.line(r"  receipt: checkpoint: +tree size 11, root hash (\S{12})…").group(1)
    assert b64encode(signed.root).startswith(root)
    printed_url = demo.line(r"  receipt: QR mark URL: (\S+)… \((\d+) characters\)")
    assert receipt["mark_url"].startswith(printed_url.group(1))
    assert len(receipt["mark_url"]) == int(printed_url.group(2))
    assert mark.token_from_url(receipt["mark_url"]) == receipt["mark"]
    claims = mark.verify(receipt["mark"], key)
    assert claims.certificate_id == "DEMO-LAB/DCC-2026-0002"


def test_a_tampered_checkpoint_fails_with_the_printed_key(demo: Demo) -> None:
    """What the OK lines rest on can fail: one changed byte is refused."""
    note = bytearray(demo.file("checkpoint-10"))
    note[len("demo.qiledger.local/log\n")] ^= 1  # the tree size line
    with pytest.raises(SignatureError):
        checkpoint.verify(bytes(note), demo.log_key())


def test_closing_commands_run_as_printed(
    demo: Demo, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cd = demo.line(r"  cd (\S+)").group(1)
    assert Path(shlex.split(cd)[0]) == demo.evidence.resolve()
    monkeypatch.chdir(shlex.split(cd)[0])
    expected = [
        "OK: checkpoint of demo.qiledger.local/log, size 10",
        "OK: entry 3 is included in demo.qiledger.local/log at size 10",
        "OK: demo.qiledger.local/log at size 10 extends size 5",
    ]
    commands = [line for line in demo.lines if re.fullmatch(r"  \S*qiverify .+", line)]
    assert len(commands) == len(expected)
    for command, output in zip(commands, expected, strict=True):
        assert qiverify(shlex.split(command)[1:]) == 0, command
        assert capsys.readouterr().out.startswith(output)
    lookup = demo.line(r"  \S*qiledger --demo .+").group(0)
    assert qiledger(shlex.split(lookup)[1:]) == 0
    assert "DEMO-LAB/DCC-2026-0001: Superseded" in capsys.readouterr().out


def _prefixes_match(printed: re.Match[str], hashes: Sequence[bytes]) -> None:
    """A printed "N hashes p1… p2…" names exactly these hashes, in order."""
    prefixes = [p.rstrip("…") for p in printed.group(2).split()]
    assert int(printed.group(1)) == len(hashes) == len(prefixes)
    for prefix, h in zip(prefixes, hashes, strict=True):
        assert b64encode(h).startswith(prefix)
