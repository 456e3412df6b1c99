"""The demo: a whole trust chain and a certificate's life on a throwaway registry."""

from pathlib import Path

#: The demo's own documents (a DCC, its amendment, a certification certificate).
DEMO_DOCUMENTS = Path(__file__).resolve().parent / "documents"
