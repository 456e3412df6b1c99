from __future__ import annotations

from registry.ledger import Ledger
from registry.sequencer import Accepted
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
        data = ledger.storage.entry(index).data
        signed = tlog_proof.verify(
            ledger.inclusion_proof(index).to_bytes(), data, ledger.identity.verifier
        )
        assert signed.checkpoint == cp
    empty = checkpoint.verify(ledger.storage.checkpoint(0).note, ledger.identity.verifier)
    merkle.verify_consistency(
        0, cp.size, ledger.consistency_proof(0, cp.size), empty.checkpoint.root, cp.root
    )
