from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from registry.errors import NotFoundError
from registry.ledger import Ledger
from registry.sequencer import Accepted, Checked, Refused
from registry.storage.protocol import LogStorage
from registry.storage.sql_log import SqlStorage
from tests.helpers import (
    documents_for,
    envelope_bytes,
    issue_statement,
    key_from,
    submit_with_documents,
)
from verifier import checkpoint, dsse, merkle, statement
from verifier import proof as tlog_proof
from verifier.keys import SigningKey


def test_append_then_prove(ledger: Ledger, lab_key: SigningKey) -> None:
    base = ledger.latest_checkpoint().size  # the trust chain's entries
    outcomes = submit_with_documents(
        ledger.sequencer, [envelope_bytes(issue_statement(n), lab_key) for n in range(5)]
    )
    assert [o.index for o in outcomes if isinstance(o, Accepted)] == [base + n for n in range(5)]
    cp = ledger.verified_checkpoint().checkpoint
    assert cp.size == base + 5
    for index in range(base + 5):
        data = ledger.entry(index).data
        signed = tlog_proof.verify(
            ledger.inclusion_proof(index).to_bytes(), data, ledger.identity.verifier
        )
        assert signed.checkpoint == cp
    empty = checkpoint.verify(ledger.checkpoint_at(0).note, ledger.identity.verifier)
    merkle.verify_consistency(
        0, cp.size, ledger.consistency_proof(0, cp.size), empty.checkpoint.root, cp.root
    )


def test_history_proofs_equal_one_proof_at_a_time(ledger: Ledger, lab_key: SigningKey) -> None:
    """Ledger.history_proofs (one read of the nodes of every proof, one of the
    entries) gives what inclusion_proof and entry give one index at a time, for
    every single index and every ordered pair at each of several tree sizes."""
    for n in range(6):
        submit_with_documents(ledger.sequencer, [envelope_bytes(issue_statement(n), lab_key)])
        latest = ledger.latest_checkpoint()
        indexes = range(latest.size)
        for wanted in [[i] for i in indexes] + [[i, j] for i in indexes for j in indexes]:
            stored, proven = ledger.history_proofs(wanted)
            assert stored == latest
            assert [(e, h) for e, h in proven] == [
                (ledger.entry(i), list(ledger.inclusion_proof(i, latest.size).hashes))
                for i in wanted
            ]
        with pytest.raises(NotFoundError):
            ledger.history_proofs([0, latest.size])
    assert ledger.storage.entries_at([1, 10_000]) == {1: ledger.entry(1)}
    size = ledger.latest_checkpoint().size
    many = [*range(1200), *range(size)]  # three statements' worth, some twice, most absent
    assert ledger.storage.entries_at(many) == {i: ledger.entry(i) for i in range(size)}
    assert ledger.storage.entries_at([]) == {}


def test_batch_proofs_equal_stored_proofs(ledger: Ledger, lab_key: SigningKey) -> None:
    """A batch hands back its entries' proofs from the nodes it held: for batches
    of 1 to 9 new entries (plus an in-batch duplicate) each equals the proof read
    from the stored nodes and verifies against the checkpoint it carries; an
    entry of an earlier batch, answered as a duplicate, has its proof read."""
    n = 0
    for batch in range(1, 10):
        envelopes = [envelope_bytes(issue_statement(n + i), lab_key) for i in range(batch)]
        n += batch
        outcomes = submit_with_documents(ledger.sequencer, [*envelopes, envelopes[-1]])
        size = ledger.latest_checkpoint().size
        assert outcomes[-1].index == outcomes[-2].index
        assert outcomes[-1].duplicate
        for outcome in outcomes:
            assert isinstance(outcome, Accepted)
            assert outcome.proofs is not None
            assert outcome.checkpoint_size == size
            proof = ledger.accepted_proof(outcome)
            assert proof == ledger.inclusion_proof(outcome.index, size)
            signed = tlog_proof.verify(
                proof.to_bytes(), ledger.entry(outcome.index).data, ledger.identity.verifier
            )
            assert signed.checkpoint.size == size
    (again,) = submit_with_documents(ledger.sequencer, [envelopes[0]])
    assert isinstance(again, Accepted)
    assert again.duplicate
    assert again.proofs is None
    assert ledger.accepted_proof(again) == ledger.inclusion_proof(
        again.index, again.checkpoint_size
    )


def _checked(envelope: bytes, key: SigningKey) -> Checked:
    unverified = dsse.parse(envelope)
    verified = dsse.verify(unverified, {key.public_key.key_id: key.public_key})
    return Checked(verified, statement.parse(unverified.payload))


def test_checked_envelopes_are_sequenced_as_their_bytes(
    ledger: Ledger, lab_key: SigningKey
) -> None:
    """An envelope parsed and verified before it was queued is logged, in its place
    in the batch, with the entry its bytes would make; one whose key the policy
    does not name is refused, and one verified by another key than the policy's
    for its key ID has its signature checked again."""
    base = ledger.latest_checkpoint().size
    raw = [envelope_bytes(issue_statement(n), lab_key) for n in range(4)]
    outsider = key_from("not-accredited")
    unknown = envelope_bytes(issue_statement(9), outsider)
    forged = dsse.parse(raw[3])
    forged = dsse.UnverifiedEnvelope(
        forged.payload_type,
        forged.payload,
        (dsse.Signature(forged.signatures[0].keyid, bytes(64)),),
    )
    batch = [
        raw[0],
        _checked(raw[1], lab_key),
        raw[2],
        _checked(unknown, outsider),
        Checked(
            dsse.VerifiedEnvelope(forged, outsider.public_key), statement.parse(forged.payload)
        ),
    ]
    outcomes = ledger.sequencer.submit_many(batch, documents_for([*raw[:3], unknown, raw[3]]))
    assert [o.index for o in outcomes[:3] if isinstance(o, Accepted)] == [base, base + 1, base + 2]
    assert isinstance(outcomes[3], Refused)
    assert isinstance(outcomes[4], Refused)
    assert outcomes[4].error.code == "signature_invalid"
    for n in range(3):
        assert raw[n] in ledger.entry(base + n).data


@pytest.mark.postgres
def test_a_one_statement_read_outlives_a_connection_the_server_dropped(
    postgres_url: str, tmp_path: Path
) -> None:
    """read_rows runs on autocommit connections without a ping: when the server
    drops the one it would use, the read is made again on a fresh connection, and
    it runs in no transaction (a SELECT is one round trip)."""
    import psycopg

    from registry.config import Settings

    ledger = Ledger.init(
        Settings(data_dir=tmp_path / "data", database_url=postgres_url),
        origin="test.example/log",
        passphrase=None,
    )
    try:
        db = ledger.db
        ((pid, status),) = db.read_rows(
            "SELECT pg_backend_pid(), "
            "(SELECT state FROM pg_stat_activity WHERE pid = pg_backend_pid())",
            (),
        )
        assert status == "active"  # not "idle in transaction" afterwards either:
        admin = postgres_url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(admin, autocommit=True) as conn:
            (state,) = conn.execute(
                "SELECT state FROM pg_stat_activity WHERE pid = %s", (pid,)
            ).fetchone()  # type: ignore[misc]
            assert state == "idle"
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        # LIFO: the dropped connection is the one handed out next.
        assert ledger.latest_checkpoint().size == 0
        ((again,),) = db.read_rows("SELECT pg_backend_pid()", ())
        assert again != pid
    finally:
        ledger.close()


REGISTRY = Path(__file__).resolve().parents[1] / "registry"
LEDGER_PARTS = {"storage", "sequencer", "db", "policy", "proofs"}


def _attribute_uses(paths: list[Path]) -> list[tuple[Path, int, str, str]]:
    """(file, line, receiver's last name, attribute) of every ``x.attr`` access."""
    uses = []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute):
                receiver = node.value
                name = (
                    receiver.id
                    if isinstance(receiver, ast.Name)
                    else receiver.attr
                    if isinstance(receiver, ast.Attribute)
                    else ""
                )
                uses.append((path, node.lineno, name, node.attr))
    return uses


def test_log_storage_lists_what_its_callers_use() -> None:
    """Every LogStorage method is called through a ``storage`` somewhere outside
    storage/ (no dead methods in the interface), and SqlStorage has each one."""
    methods = {name for name in vars(LogStorage) if not name.startswith("_")}
    callers = [p for p in REGISTRY.rglob("*.py") if "storage" not in p.parts]
    used = {attr for _, _, name, attr in _attribute_uses(callers) if name == "storage"}
    assert methods - used == set()
    for name in methods:
        assert inspect.isfunction(getattr(SqlStorage, name, None)), name


@pytest.mark.parametrize("package", ["api", "cli", "demo"])
def test_routes_commands_and_demo_go_through_ledger(package: str) -> None:
    """Routes, the service, CLI commands and the demo call Ledger's methods, never
    its parts."""
    files = sorted((REGISTRY / package).rglob("*.py"))
    assert files
    reaches = [
        f"{path.relative_to(REGISTRY)}:{line} ledger.{attr}"
        for path, line, name, attr in _attribute_uses(files)
        if name == "ledger" and attr in LEDGER_PARTS
    ]
    assert reaches == []
