"""What the HTTP routes do, in one object per process: the ledger, the group-commit
queue, the trust-state lock, API tokens, rate limits and mark signing.

Threads: FastAPI runs the routes' sync functions in a thread pool. The trust
state's bodies, issuers and keys (replayed from the log) are shared and
advanced only under ``state_lock``; the sequencer thread holds that lock for a
batch. Readers take no lock: they read certificates from the certificate
tables in a read transaction of their own, and bodies, issuers and keys by
dictionary lookups (changed only by the rare non-certificate statement).
Proof and tile reads go to the database and need no lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from registry import marks
from registry.api.rate_limit import RateLimiter
from registry.api.submissions import SubmissionQueue
from registry.errors import ConfigError, NotFoundError
from registry.ledger import (
    CertificateSubmission,
    Ledger,
    certificate_statement,
    plain_statement,
)
from registry.listing import CertificateListing, ListedPage
from registry.sequencer import Accepted, Checked, Outcome
from registry.storage.protocol import StoredDocument
from registry.storage.tokens import TokenHolder
from verifier import dsse, mark, statement, trust
from verifier.encoding import b64encode
from verifier.errors import QILedgerError
from verifier.trust import TrustState

T = TypeVar("T")


class ForbiddenError(QILedgerError):
    """The token is valid but does not speak for what the statement is about."""

    code = "token_forbidden"


@dataclass(frozen=True)
class ServiceOptions:
    public_url: str | None = None
    """Base URL (``scheme://host[:port]``) of the public verifier; QR marks point to
    ``<PUBLIC_URL>/M/<TOKEN>``. None: each request's own scheme, host and port."""
    rate_per_second: float = 100.0
    """Requests per second allowed per API token (token bucket)."""
    rate_burst: int = 200
    max_batch: int = 512
    read_staleness_s: float = 0.05
    """A read may answer from trust state this old before catching up with the log
    (other processes append too); the answer names the tree size it reflects."""


class RegistryService:
    def __init__(
        self,
        ledger: Ledger,
        options: ServiceOptions | None = None,
        clock: Callable[[], float] = time.monotonic,
        witness_keys: Sequence[str] = (),
    ) -> None:
        self.ledger = ledger
        self.witness_keys = tuple(witness_keys)
        """The verifier keys of the witnesses this registry asks to cosign (its
        pages name them, so a browser may pin them on /witnesses)."""
        self.options = options or ServiceOptions()
        if self.options.public_url is not None:
            # Refused now, not after a commit when a receipt needs a mark URL.
            try:
                mark.mark_url(self.options.public_url, "A")
            except QILedgerError as e:
                raise ConfigError(f"public URL: {e.message}") from None
        self.tokens = ledger.tokens
        self.tokens.ensure_table()
        self.rate_limiter = RateLimiter(
            self.options.rate_per_second, self.options.rate_burst, clock
        )
        self.state_lock = threading.Lock()
        self._clock = clock
        # Replay the log now, before the first request waits for it.
        ledger.trust_state()
        self._synced_at = clock()
        # Small batches: a forked signature worker does not pay off, and forking a
        # threaded server is best avoided.
        ledger.start_writing(verify_worker=False)
        self.queue = SubmissionQueue(self._submit_batch, self.options.max_batch)

    def close(self) -> None:
        """Answer what is queued, then stop taking submissions (the ledger stays open)."""
        self.queue.close()

    # --- writing -----------------------------------------------------------------

    def _submit_batch(
        self, envelopes: Sequence[bytes | Checked], documents: Mapping[int, StoredDocument]
    ) -> list[Outcome]:
        with self.state_lock:
            return self.ledger.submit_many(envelopes, documents)

    def check_certificate(
        self, holder: TokenHolder, envelope: bytes, document: bytes, record: bytes | None = None
    ) -> CertificateSubmission:
        """A certificate submission allowed for this token, signed by a usable key of
        its issuer, and exactly what its document calls for — checked in that
        order, so a document is read only for a caller who may submit it."""
        unverified, stmt = certificate_statement(envelope)
        authorize(holder, stmt)
        signed = self._check_signer(unverified, stmt)
        return self.ledger.check_document(envelope, stmt, document, record, signed)

    def submit_certificate(
        self, holder: TokenHolder, envelope: bytes, document: bytes, record: bytes | None = None
    ) -> tuple[CertificateSubmission, Future[Outcome]]:
        """:meth:`check_certificate`, then :meth:`enqueue_certificate`: one thread
        hop for a request's work before it waits for its batch."""
        submission = self.check_certificate(holder, envelope, document, record)
        return submission, self.enqueue_certificate(submission)

    def _check_signer(
        self, unverified: dsse.UnverifiedEnvelope, stmt: statement.Statement
    ) -> dsse.VerifiedEnvelope:
        """The signer check before a document is read, first without the state
        lock: a batch holds it for its whole commit, and waiting there would keep
        every upload from being read while the batch syncs to disk. The check only
        looks keys up (safe while the sequencer thread records a batch) and only
        gates the reading: the sequencer decides. A refusal may come from a state
        that is behind the log (another process appended), so it is made again on
        the caught-up state before it is final."""
        try:
            return self.ledger.check_certificate_signer(
                self.ledger.unsynced_trust_state, unverified, stmt
            )
        except QILedgerError:
            pass
        with self.trust_state() as state:
            return self.ledger.check_certificate_signer(state, unverified, stmt)

    def enqueue_certificate(self, submission: CertificateSubmission) -> Future[Outcome]:
        """Queue a checked submission; the future resolves once it is durable (or
        refused). Re-registering the same document resolves at once with the entry
        that registered it."""
        self._refresh()  # keys at most read_staleness_s old
        registered = self.ledger.registered_certificate(submission)  # waits for no batch
        if registered is not None:
            done: Future[Outcome] = Future()
            done.set_result(registered)
            return done
        return self.queue.submit(submission.queued, submission.document)

    def settle_certificate(self, submission: CertificateSubmission, outcome: Outcome) -> Accepted:
        """The accepted entry for a decided submission (see Ledger.settle_certificate)."""
        return self.ledger.settle_certificate(submission, outcome)

    def enqueue_statement(self, holder: TokenHolder, envelope: bytes) -> Future[Outcome]:
        stmt = plain_statement(envelope)
        authorize(holder, stmt)
        if holder.role == "body" and stmt.type.startswith("issuer."):
            with self.trust_state() as state:
                authorize_body_for_issuer(holder, stmt, state)
        return self.queue.submit(envelope, None)

    def receipt(self, accepted: Accepted) -> dict[str, Any]:
        """A durable submission's answer: its entry, and its inclusion proof under
        the signed checkpoint of the batch that logged it (read from the database
        only if that batch did not hold the proof: an earlier duplicate)."""
        proof = self.ledger.accepted_proof(accepted)
        return {
            "index": accepted.index,
            "leaf_hash": b64encode(accepted.leaf_hash),
            "logged_at": accepted.logged_at,
            "duplicate": accepted.duplicate,
            "tree_size": accepted.checkpoint_size,
            "checkpoint": proof.checkpoint_note.decode("utf-8"),
            "inclusion_proof": [b64encode(h) for h in proof.hashes],
            "tlog_proof": proof.to_bytes().decode("utf-8"),
        }

    @staticmethod
    def proves_in_memory(accepted: Accepted) -> bool:
        """Whether :meth:`receipt` needs no database read for ``accepted``."""
        return accepted.proofs is not None and accepted.proofs.size == accepted.checkpoint_size

    def mark_token(self, certificate_id: str, digest_hex: str, index: int, logged_at: str) -> str:
        """The mark of the certificate that the entry ``index`` (logged at
        ``logged_at``) created: the same token :meth:`certificate_mark` gives later."""
        return self.ledger.sign_mark(
            marks.mark_claims(certificate_id, digest_hex, index, logged_at)
        )

    def certificate_mark(self, certificate_id: str) -> str:
        """The mark token of a logged certificate (NotFoundError if there is none)."""
        with self.trust_state() as state:
            claims = marks.claims_for(state, certificate_id)
        return self.ledger.sign_mark(claims)

    def mark_url(self, token: str, request_base_url: str) -> str:
        """The mark's URL under the configured public URL, else under the base URL
        (``scheme://host[:port]``) the request itself was made to."""
        return mark.mark_url(self.options.public_url or request_base_url, token)

    # --- reading -----------------------------------------------------------------

    @contextmanager
    def trust_state(self) -> Iterator[TrustState]:
        """The trust state for one read, waiting for no batch: bodies, issuers and
        keys as caught up at most ``read_staleness_s`` ago, certificates read in
        one read transaction of the certificate tables (what has committed, also
        by other processes). ``size`` is the log size those tables reflect."""
        self._refresh()
        with self.ledger.reading() as state:
            yield state

    def list_certificates(
        self, listing: CertificateListing, *, after_index: int, limit: int
    ) -> ListedPage:
        """A listing page (one snapshot), bodies, issuers and keys caught up as for
        :meth:`trust_state`."""
        self._refresh()
        return self.ledger.list_certificates(listing, after_index=after_index, limit=limit)

    def _refresh(self) -> None:
        """Catch bodies, issuers and keys up with the log (one short query when
        nothing is new) if that was longer ago than ``read_staleness_s`` — unless a
        batch holds them: it is catching them up itself."""
        now = self._clock()
        if now - self._synced_at <= self.options.read_staleness_s:
            return
        if not self.state_lock.acquire(blocking=False):
            return
        try:
            self.ledger.trust_state()
            self._synced_at = now
        finally:
            self.state_lock.release()

    def read_certificate(
        self,
        view: Callable[[TrustState], T],
        *,
        certificate_id: str | None = None,
        document_sha256: str | None = None,
        linked: set[str] | None = None,
    ) -> T:
        """``view`` of the trust state with the certificate with this id (or those
        about this document) read in one statement: the hot public reads, which
        need no other certificate (see :meth:`Ledger.reading_certificate`;
        ``linked`` gets the ids of those that link to others)."""
        self._refresh()
        with self.ledger.reading_certificate(
            certificate_id=certificate_id, document_sha256=document_sha256, linked=linked
        ) as state:
            return view(state)

    def traceability(self, certificate_id: str) -> dict[str, Any]:
        """What a certificate that links to others is traced to (the answer of
        ``GET /api/v1/traceability/{id}``), in one read transaction."""
        self._refresh()
        return self.ledger.traceability(certificate_id)

    def traceability_risk(self, certificate_id: str) -> dict[str, Any]:
        """``traceability_at_risk`` and ``at_risk_because`` of a certificate that
        links to others (a walk up its links, in one read transaction)."""
        self._refresh()
        return self.ledger.traceability_risk(certificate_id)

    def document(self, certificate_id: str) -> StoredDocument:
        with self.trust_state() as state:
            cert = state.certificate(certificate_id)
            if cert is None:
                raise NotFoundError(f"no certificate {certificate_id} in this log")
            digest = cert.document_sha256
        return self.ledger.document(digest)


def authorize(holder: TokenHolder, stmt: statement.Statement) -> None:
    """May this token submit this statement? The signature is checked separately:
    the token says who is calling, the signature who is speaking. (A body's
    token about an issuer: see also :func:`authorize_body_for_issuer`.)"""
    if holder.role == "operator":
        return
    family = stmt.type.split(".", 1)[0]
    if holder.role == "issuer" and family in ("certificate", "issuer"):
        if stmt.get("issuer_id") == holder.subject:
            return
        raise ForbiddenError(
            f"this token acts for issuer {holder.subject}, not {stmt.get('issuer_id')}"
        )
    if holder.role == "body" and family == "accreditation":
        if stmt.get("body_id") != holder.subject:
            raise ForbiddenError(
                f"this token acts for body {holder.subject}, not {stmt.get('body_id')}"
            )
        return
    if holder.role == "body" and family == "issuer":
        return  # only about the body's own issuers: authorize_body_for_issuer
    raise ForbiddenError(f"a {holder.role} token cannot submit {stmt.type} statements")


def authorize_body_for_issuer(
    holder: TokenHolder, stmt: statement.Statement, state: TrustState
) -> None:
    """A body's token speaks only about issuers that body accredits (granted or
    suspended); the trust rules then check what the body's signature may do."""
    issuer = state.issuers.get(stmt["issuer_id"])
    if issuer is None or not any(
        acc.body_id == holder.subject and acc.status != trust.WITHDRAWN
        for acc in issuer.accreditations.values()
    ):
        raise ForbiddenError(
            f"this token acts for body {holder.subject}, which does not accredit "
            f"issuer {stmt['issuer_id']}"
        )
