from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from registry.errors import NotFoundError
from registry.ledger import Ledger
from registry.sequencer import Accepted
from registry.storage.protocol import LogStorage
from registry.storage.sql_log import SqlStorage
from tests.helpers import envelope_bytes, issue_statement, submit_with_documents
from verifier import checkpoint, merkle
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
