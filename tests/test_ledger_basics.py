from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

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
