"""QI Ledger registry: the writer side (sequencer, storage, trust management, API)."""

__version__ = "0.1.0"
