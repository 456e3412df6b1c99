"""One error hierarchy for everything QI Ledger checks.

Every failure a caller can see is a :class:`QILedgerError` with a stable ``code``
(the HTTP layer maps codes to problem+json later). Parsers translate their
dependencies' ``ValueError``/``binascii.Error``/``KeyError`` into these at the
boundary, so attacker input never surfaces as a stray built-in exception.
"""

from __future__ import annotations

from collections.abc import Sequence


class QILedgerError(Exception):
    """Base of every error QI Ledger raises on purpose."""

    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class MalformedError(QILedgerError):
    """Input could not be parsed: wrong syntax, type, encoding or length."""

    code = "malformed"


class NonCanonicalError(MalformedError):
    """JSON parsed, but its bytes are not the RFC 8785 canonical form."""

    code = "non_canonical"


class SignatureCountError(MalformedError):
    """A statement envelope carries other than exactly one signature."""

    code = "signature_count"


class TooLargeError(MalformedError):
    """Input exceeds a size limit."""

    code = "too_large"


class DocumentTooLargeError(TooLargeError):
    """A certificate document (or its record) exceeds its size limit."""

    code = "document_too_large"


class VerificationError(QILedgerError):
    """Input parsed, but a signature, digest or proof does not check."""

    code = "verification_failed"


class SignatureError(VerificationError):
    """A signature is missing, or does not verify."""

    code = "signature_invalid"


class UnknownKeyError(VerificationError):
    """No signature was made by a key the verifier trusts."""

    code = "unknown_key"


class ProofError(VerificationError):
    """A Merkle inclusion or consistency proof does not verify."""

    code = "proof_invalid"


class InconsistencyError(ProofError):
    """Two tree heads cannot both be honest views of one append-only log.

    Keeps the evidence: both sizes and roots and the proof that failed.
    """

    code = "inconsistent"

    def __init__(
        self,
        message: str,
        *,
        first_size: int,
        first_root: bytes,
        second_size: int,
        second_root: bytes,
        proof: Sequence[bytes],
    ) -> None:
        super().__init__(message)
        self.first_size = first_size
        self.first_root = first_root
        self.second_size = second_size
        self.second_root = second_root
        self.proof = tuple(proof)


class TrustError(VerificationError):
    """A correctly signed statement fails the trust model; ``code`` names the failed link
    (e.g. ``key_revoked``, ``accreditation_suspended``, ``scope_not_covered``)."""

    code = "trust_refused"

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
