"""The ledger: one object that opens a data directory or database and offers
everything the CLI (and the HTTP API) does with the log."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from registry import traceability
from registry.config import Settings
from registry.errors import ConfigError, DocumentRequiredError, NotFoundError, StorageError
from registry.keys import keyfile
from registry.keys.demo_keys import DEMO_KEY_IDS
from registry.keys.log_signer import LogSigner
from registry.listing import CertificateListing, ListedPage
from registry.policy import ReindexReport, TrustChainPolicy
from registry.proofs import ProofBuilder
from registry.sequencer import Accepted, Checked, Outcome, Refused, Sequencer, utc_now
from registry.storage.certificate_index import CertificateIndex
from registry.storage.database import Database
from registry.storage.protocol import (
    LogStorage,
    StoredCheckpoint,
    StoredDocument,
    StoredEntry,
    Transaction,
)
from registry.storage.sql_log import SqlStorage
from registry.storage.tokens import TokenStore
from verifier import checkpoint, cosignature, dsse, jcs, mark, merkle, statement, trust
from verifier.entry import format_time
from verifier.entry import parse_time as entry_time
from verifier.errors import MalformedError, QILedgerError, UnknownKeyError
from verifier.keys import PublicKey, SigningKey
from verifier.merkle import Hash
from verifier.note import NoteVerifier
from verifier.proof import TlogProof
from verifier.statement import DOCUMENT_TYPES
from verifier.trust import TrustState

if TYPE_CHECKING:
    from registry.documents.intake import DocumentReader

log = logging.getLogger("qiledger.ledger")


@dataclass(frozen=True)
class LogIdentity:
    origin: str
    public_key: PublicKey

    @functools.cached_property
    def verifier(self) -> NoteVerifier:
        """Made once (its key ID is a hash): every scan page checks a mark with it."""
        return NoteVerifier.for_key(self.origin, self.public_key)


@dataclass(frozen=True)
class CertificateSubmission:
    """A certificate statement checked against its document, ready to append."""

    envelope: bytes
    statement: statement.Statement
    document: StoredDocument
    signed: dsse.VerifiedEnvelope | None = None
    """The envelope as its signer check verified it, if that came first."""

    @property
    def queued(self) -> bytes | Checked:
        """What the sequencer is handed: the parsed, verified envelope if there is
        one (it need not parse it again), else the bytes."""
        if self.signed is None:
            return self.envelope
        return Checked(self.signed, self.statement)


class Ledger:
    """The registry's log. The HTTP API and the CLI go through its methods; its
    parts (``storage``, ``sequencer``, ``policy``) are for the registry core and
    tests."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        identity: LogIdentity,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.settings = settings
        self.db = db
        self.identity = identity
        self.clock = clock
        self.storage: LogStorage = SqlStorage(db)
        self.certificate_index = CertificateIndex(db)
        self.policy = TrustChainPolicy(
            self.storage, self.certificate_index, identity.public_key, clock
        )
        self.proofs = ProofBuilder(self.storage)
        self._sequencer: Sequencer | None = None
        self._documents: DocumentReader | None = None
        self._tokens: TokenStore | None = None
        self.after_append: Callable[[], None] | None = None
        """Called after each batch :meth:`submit_many` appended (the witness gatherer's wake-up)."""

    # --- lifecycle -------------------------------------------------------------

    @classmethod
    def init(
        cls,
        settings: Settings,
        *,
        origin: str | None,
        passphrase: bytes | None,
        clock: Callable[[], datetime] = utc_now,
        random_bytes: Callable[[int], bytes] = os.urandom,
        existing_key: SigningKey | None = None,
    ) -> Ledger:
        """Create the data dir, schema and log key, and sign the empty checkpoint.

        ``existing_key`` uses a key already on disk at ``settings.log_key_file``
        (the demo's) instead of generating and writing a new one.
        """
        try:
            settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot create data dir {settings.data_dir}: {exc.strerror}"
            ) from None
        db = Database(settings.url)
        if db.has_schema() and SqlStorage(db).log_identity() is not None:
            raise ConfigError(f"a ledger already exists in {db.safe_url}")
        key = existing_key or SigningKey.generate(random_bytes(32))
        _refuse_demo_key(settings, key.public_key)
        name = origin or f"qiledger.local/{key.public_key.key_id[:8]}"
        signer = LogSigner(name, key)  # validates the origin as a note key name
        if existing_key is None:
            key_path = settings.log_key_file
            keyfile.write_private_key(key_path, key, passphrase)
            keyfile.write_public_key(key_path.with_name(key_path.stem + ".pub.pem"), key.public_key)
        db.create_schema()
        now = format_time(clock())
        empty = Hash(merkle.EMPTY_ROOT)
        SqlStorage(db).create_log(
            name, key.public_key.raw, StoredCheckpoint(0, empty, signer.sign(0, empty), now)
        )
        with db.write() as tx:
            CertificateIndex(db).create(tx)
        return cls(settings, db, LogIdentity(name, key.public_key), clock)

    @classmethod
    def open(cls, settings: Settings, clock: Callable[[], datetime] = utc_now) -> Ledger:
        if settings.database_url is None and not (settings.data_dir / "ledger.db").exists():
            raise ConfigError(
                f"no ledger in {settings.data_dir}; run 'qiledger init' "
                "(or pass --data-dir / set QILEDGER_DATA_DIR)"
            )
        db = Database(settings.url)
        identity = _read_identity(SqlStorage(db)) if db.has_schema() else None
        if identity is None:
            raise ConfigError(f"no ledger in {db.safe_url}; run 'qiledger init'")
        if "statement_hash" not in db.column_names("entries"):
            raise ConfigError(
                f"the ledger in {db.safe_url} was created before statements were identified "
                "by their payload (it keys entries by envelope); it cannot be opened by this "
                "version"
            )
        _refuse_demo_key(settings, identity.public_key)
        ledger = cls(settings, db, identity, clock)
        if not ledger.certificate_index.exists():
            # A ledger from before the certificate tables: derive them once.
            log.warning("deriving the certificate tables of %s from its log", db.safe_url)
            ledger.reindex()
        elif not ledger.certificate_index.is_current():
            log.warning("rebuilding the certificate tables of %s (older layout)", db.safe_url)
            ledger.reindex()
        return ledger

    def close(self) -> None:
        if self._sequencer is not None:
            self._sequencer.close()
        self.db.dispose()

    # --- writing ---------------------------------------------------------------

    def load_log_key(self, path: Path | None = None) -> LogSigner:
        key = keyfile.read_private_key(
            path or self.settings.log_key_file,
            keyfile.log_key_passphrase(self.settings),
            demo=self.settings.demo,
        )
        if key.public_key != self.identity.public_key:
            raise ConfigError("the log key file does not belong to this log")
        return LogSigner(self.identity.origin, key)

    @property
    def sequencer(self) -> Sequencer:
        if self._sequencer is None:
            self._sequencer = Sequencer(self.storage, self.load_log_key(), self.policy, self.clock)
        return self._sequencer

    def start_writing(self, *, verify_worker: bool | None = None) -> None:
        """Load the log key now (a server fails at start, not at its first write);
        ``verify_worker``: whether large batches check signatures in a helper
        process (None: when there is a spare core)."""
        sequencer = self.sequencer  # loads the key
        if verify_worker is not None:
            sequencer.verify_worker = verify_worker

    def submit_many(
        self,
        envelopes: Sequence[bytes | Checked],
        documents: Mapping[int, StoredDocument] | None = None,
    ) -> list[Outcome]:
        """Append a batch as it comes (see :meth:`Sequencer.submit_many`): one outcome
        per envelope; ``documents`` maps positions to the documents they are about."""
        outcomes = self.sequencer.submit_many(envelopes, documents)
        if self.after_append is not None:
            self.after_append()
        return outcomes

    def sign_mark(self, claims: mark.MarkClaims) -> str:
        """A QR mark token (v2, COSE_Sign1) for ``claims``, signed by the log key."""
        return mark.sign(claims, self.sequencer.signer.key, self.identity.verifier)

    @property
    def tokens(self) -> TokenStore:
        """The API tokens kept in this ledger's database."""
        if self._tokens is None:
            self._tokens = TokenStore(self.db)
        return self._tokens

    @property
    def database_url(self) -> str:
        """Where the ledger is stored, without any password (for display)."""
        return self.db.safe_url

    def submit_statement(self, built: statement.StatementBuilder, key: SigningKey) -> Accepted:
        """Sign a statement with ``key`` (``signed_at``: now) and append it."""
        envelope = dsse.sign(built.encode(self.clock()), key)
        return self.sequencer.submit(jcs.canonical_bytes(envelope.to_json()))

    @property
    def documents(self) -> DocumentReader:
        if self._documents is None:
            # Imported on first use: intake brings the XML, XML signature and JSON
            # Schema libraries, which only reading a document needs.
            from registry.documents.intake import DocumentReader

            self._documents = DocumentReader(self.settings)
        return self._documents

    def submit_envelopes(self, envelopes: Sequence[bytes]) -> list[Outcome]:
        """Append signed statements that come without a document (one batch).

        Certificate issue/amend statements are refused here: the registry must see
        the document they are about (:meth:`submit_certificate`).
        """
        outcomes: list[Outcome | None] = [None] * len(envelopes)
        plain: list[int] = []
        for position, raw in enumerate(envelopes):
            try:
                plain_statement(raw)
            except DocumentRequiredError as exc:
                outcomes[position] = Refused(exc)
                continue
            except QILedgerError:
                pass  # other faults: the sequencer reports them precisely
            plain.append(position)
        for position, outcome in zip(
            plain, self.sequencer.submit_many([envelopes[p] for p in plain]), strict=True
        ):
            outcomes[position] = outcome
        return [o for o in outcomes if o is not None]

    def check_certificate(
        self, envelope: bytes, document: bytes, record: bytes | None = None
    ) -> CertificateSubmission:
        """Check a certificate submission as far as it can be before sequencing: its
        signer first (:meth:`check_certificate_signer`), then that the statement is
        exactly what its document calls for (:meth:`check_document`)."""
        unverified, stmt = certificate_statement(envelope)
        signed = self.check_certificate_signer(self.trust_state(), unverified, stmt)
        return self.check_document(envelope, stmt, document, record, signed)

    def check_certificate_signer(
        self, state: TrustState, unverified: dsse.UnverifiedEnvelope, stmt: statement.Statement
    ) -> dsse.VerifiedEnvelope:
        """The envelope carries one signature, by a key of the issuer the statement
        names and usable now. Checked before the document is read: parsing and
        validating a document costs far more than a signature, so only an issuer's
        own key can make the registry spend that."""
        try:
            signed = trust.signer_of(state, unverified)
        except UnknownKeyError:
            raise state.unknown_signer(stmt, {s.keyid for s in unverified.signatures}) from None
        state.check_issuer_signer(stmt["issuer_id"], signed.signed_by, self.clock())
        return signed

    def check_document(
        self,
        envelope: bytes,
        stmt: statement.Statement,
        document: bytes,
        record: bytes | None = None,
        signed: dsse.VerifiedEnvelope | None = None,
    ) -> CertificateSubmission:
        """Check that a certificate statement is exactly what its document calls for
        (parsing, schema and signature of the document; no log state needed).
        ``record``: the JSON record of a PDF certification certificate; ``signed``:
        the envelope as :meth:`check_certificate_signer` verified it."""
        checked = self.documents.check(stmt, document, self.clock(), record)
        stored = StoredDocument(stmt["document_sha256"], checked.media_type, document)
        return CertificateSubmission(envelope, stmt, stored, signed)

    def registered_certificate(self, submission: CertificateSubmission) -> Accepted | None:
        """The entry that already registered this certificate with this document.

        The same document registered again (re-signed or not) is answered with
        that entry, as for any resubmission — but only if a key of the issuer,
        usable now, signed this envelope: the sequencer never sees it, and the
        answer (a receipt, over HTTP a log-signed mark) must not go to just anyone.
        A different document under the same id is left to the trust rules (which
        refuse it).
        """
        stmt = submission.statement
        # One statement reads the certificate (every submission asks); no catch-up,
        # no lock (the keys may be moments old: the sequencer decides anything not
        # answered here).
        with self.reading_certificate(certificate_id=stmt["certificate_id"]) as state:
            existing = state.certificate(stmt["certificate_id"])
            if existing is None or existing.document_sha256 != stmt["document_sha256"]:
                return None
            unverified = (
                dsse.parse(submission.envelope)
                if submission.signed is None
                else submission.signed.envelope
            )
            self.check_certificate_signer(state, unverified, stmt)
        first = self.entry(existing.events[0].index)
        size = self.latest_checkpoint().size
        return Accepted(first.index, first.leaf_hash, first.logged_at, True, size)

    def submit_certificate(
        self, envelope: bytes, document: bytes, record: bytes | None = None
    ) -> Accepted:
        """Append a certificate statement with its document. The document is stored
        by digest in the same transaction as the entry, or not at all."""
        submission = self.check_certificate(envelope, document, record)
        registered = self.registered_certificate(submission)
        if registered is not None:
            return registered
        (outcome,) = self.sequencer.submit_many([submission.queued], {0: submission.document})
        return self.settle_certificate(submission, outcome)

    def settle_certificate(self, submission: CertificateSubmission, outcome: Outcome) -> Accepted:
        """The answer to a certificate submission the sequencer has decided.

        Two uploads of the same document can both pass the "already registered?"
        check before either is logged; the loser is refused as ``certificate_exists``.
        Its caller is answered as if it had come second: with the winner's entry
        (when the same document won, and the loser's signer may hear of it).
        """
        if isinstance(outcome, Refused):
            if outcome.error.code == "certificate_exists":
                registered = self.registered_certificate(submission)
                if registered is not None:
                    return registered
            raise outcome.error
        return outcome

    def issue_certificate(
        self, document: bytes, issuer_id: str, key: SigningKey, record: bytes | None = None
    ) -> Accepted:
        """Build, sign and submit the statement a document calls for."""
        derived = self.documents.statement(document, issuer_id, self.clock(), record)
        fields = {"signed_at": format_time(self.clock()), **derived.fields}
        envelope = jcs.canonical_bytes(dsse.sign(statement.encode(fields), key).to_json())
        return self.submit_certificate(envelope, document, record)

    def trust_state(self) -> TrustState:
        """The trust state caught up with the log's current size (its certificates
        are read from the certificate tables, each read a short transaction)."""
        return self.policy.sync()

    @contextmanager
    def reading(self) -> Iterator[TrustState]:
        """The trust state with its certificates read inside one read transaction
        (a consistent view: a certificate, its successor and its events together).
        Does not catch up bodies, issuers and keys (see :meth:`trust_state`); safe
        to use from any thread."""
        with self._reading_in() as (_, view):
            yield view

    @contextmanager
    def _reading_in(self) -> Iterator[tuple[Transaction, TrustState]]:
        with self.storage.read() as tx:
            view = self.policy.state.reading(self.certificate_index.reader(tx))
            view.size = self.certificate_index.derived_size(tx)
            yield tx, view

    @contextmanager
    def reading_certificate(
        self,
        *,
        certificate_id: str | None = None,
        document_sha256: str | None = None,
        linked: set[str] | None = None,
    ) -> Iterator[TrustState]:
        """What :meth:`reading` gives, for the certificate with this id or those
        about this document (hex SHA-256) only: read with their events and the
        tables' size in one statement (the hot public reads). A superseded
        certificate's status also needs its successor from the same snapshot, so
        for one of those this reads as :meth:`reading` does. ``linked`` gets the
        ids of those that link to other certificates (learnt from the same
        statement), whose traceability a reader may then walk."""
        if certificate_id is not None:
            size, found, has_links = self.certificate_index.read_now_linked(
                "certificate_id", certificate_id
            )
        elif document_sha256 is not None:
            size, found, has_links = self.certificate_index.read_now_linked(
                "document_sha256", document_sha256
            )
        else:
            raise TypeError("reading_certificate needs certificate_id or document_sha256")
        if linked is not None:
            linked.update(has_links)
        if any(c.superseded_by is not None for c in found):
            with self.reading() as view:
                yield view
            return
        store = trust.MemoryCertificates()
        for cert in found:
            store.add(cert)
        view = self.policy.state.reading(store)
        view.size = size
        yield view

    def list_certificates(
        self, listing: CertificateListing, *, after_index: int, limit: int
    ) -> ListedPage:
        """A page of the certificates ``listing`` selects, registered after log
        index ``after_index``, in log order, read in one snapshot; see
        :mod:`registry.listing`. Like :meth:`reading`, does not catch up bodies,
        issuers and keys (statuses depend on keys: call :meth:`trust_state` first,
        or let the service do it)."""
        with self._reading_in() as (tx, state):
            return listing.page(
                state,
                lambda narrowed, after, count: self.certificate_index.certificates_page(
                    tx, narrowed, after_index=after, limit=count
                ),
                after_index=after_index,
                limit=limit,
                now=self.clock(),
            )

    def traceability_risk(self, certificate_id: str) -> dict[str, Any]:
        """Whether the certificate's traceability is at risk and through which
        certificates (the two fields of :meth:`traceability`'s answer)."""
        trace = self.traceability(certificate_id)
        return {k: trace[k] for k in ("traceability_at_risk", "at_risk_because")}

    def traceability(self, certificate_id: str) -> dict[str, Any]:
        """What the certificate is traced to (:mod:`registry.traceability`), read
        in one snapshot. Like :meth:`reading`, does not catch up bodies, issuers
        and keys."""
        with self._reading_in() as (tx, state):
            return traceability.trace_view(
                self.certificate_index, tx, state, certificate_id, self.clock()
            )

    def dependents(
        self, certificate_id: str, *, offset: int, limit: int, max_depth: int
    ) -> dict[str, Any]:
        """A page of the certificates tracing to this one (:mod:`registry.traceability`)."""
        with self._reading_in() as (tx, state):
            return traceability.dependents_view(
                self.certificate_index,
                tx,
                state,
                certificate_id,
                self.clock(),
                offset=offset,
                limit=limit,
                max_depth=max_depth,
                last_logged_at=self.storage.tail(tx).last_logged_at,
            )

    def standard(self, reference: str, *, after_index: int, limit: int) -> dict[str, Any]:
        """A page of the certificates naming a standard (:mod:`registry.traceability`)."""
        with self._reading_in() as (tx, state):
            return traceability.standard_view(
                self.certificate_index,
                tx,
                state,
                reference,
                self.clock(),
                after_index=after_index,
                limit=limit,
            )

    def reindex(self) -> ReindexReport:
        """Rebuild the certificate tables from the log alone, holding the writer lock."""
        outdated = self.certificate_index.exists() and not self.certificate_index.is_current()
        with self.db.write() as tx:
            if outdated:
                self.certificate_index.drop(tx)
            self.certificate_index.create(tx)
            rebuilt = self.policy.rebuild(tx)
        return rebuilt

    @property
    def unsynced_trust_state(self) -> TrustState:
        """The trust state as last replayed, without catching up with the log
        (other processes may have appended since)."""
        return self.policy.state

    # --- reading ---------------------------------------------------------------

    def latest_checkpoint(self) -> StoredCheckpoint:
        return self.storage.latest_checkpoint()

    def cosigned_checkpoint(self, stored: StoredCheckpoint | None = None) -> bytes:
        """The latest signed checkpoint (or ``stored``) with the witness
        cosignatures kept for its size appended as more signature lines (still a
        valid note for the log key)."""
        stored = self.latest_checkpoint() if stored is None else stored
        lines = [line for _, line in self.storage.cosignature_lines(stored.size)]
        return cosignature.add_lines(stored.note, lines) if lines else stored.note

    def witnessed_checkpoint(
        self, covering: int, witness_keys: Collection[str]
    ) -> tuple[StoredCheckpoint, bytes]:
        """The checkpoint a page proves a history under, and its note with the
        cosignatures kept for it: of the latest and the last one each of these
        witnesses cosigned, those covering entry ``covering - 1``, the one most
        of these witnesses cosigned (the newest of equals). So a page shows a
        cosigned tree while the witnesses have yet to cosign the newest one; a
        history newer than every cosigned tree is proved under the latest."""
        latest = self.latest_checkpoint()
        wanted = set(witness_keys)
        sizes = {latest.size}
        if wanted:
            sizes |= {
                size
                for key, size in self.storage.cosigned_sizes().items()
                if key in wanted and covering <= size < latest.size
            }
        best: tuple[int, int, list[str]] = (-1, -1, [])
        for size in sorted(sizes, reverse=True):
            lines = [line for key, line in self.storage.cosignature_lines(size) if key in wanted]
            if len(lines) > best[0]:
                best = (len(lines), size, lines)
        _, size, lines = best
        stored = latest if size == latest.size else self.checkpoint_at(size)
        return stored, cosignature.add_lines(stored.note, lines) if lines else stored.note

    def verified_checkpoint(self, size: int | None = None) -> checkpoint.SignedCheckpoint:
        stored = self.latest_checkpoint() if size is None else self.checkpoint_at(size)
        return checkpoint.verify(stored.note, self.identity.verifier)

    def checkpoint_at(self, size: int) -> StoredCheckpoint:
        """The signed checkpoint at ``size``; NotFoundError names the nearest ones."""
        try:
            return self.storage.checkpoint(size)
        except NotFoundError:
            near = self.storage.checkpoint_sizes_near(size)
            hint = f" (nearest signed sizes: {', '.join(map(str, near))})" if near else ""
            raise NotFoundError(f"no signed checkpoint at tree size {size}{hint}") from None

    def accepted_proof(self, accepted: Accepted) -> TlogProof:
        """The tlog-proof of an accepted entry under the checkpoint it was answered
        with: from its batch's nodes in memory if that batch appended it, else read
        (:meth:`inclusion_proof`)."""
        batch = accepted.proofs
        if batch is None or batch.size != accepted.checkpoint_size:
            return self.inclusion_proof(accepted.index, accepted.checkpoint_size)
        return TlogProof(accepted.index, tuple(batch.inclusion(accepted.index)), batch.note)

    def inclusion_proof(self, index: int, size: int | None = None) -> TlogProof:
        """A C2SP tlog-proof for entry ``index`` under the checkpoint of ``size``."""
        stored = self.latest_checkpoint() if size is None else self.checkpoint_at(size)
        if index < 0 or index >= stored.size:
            raise NotFoundError(f"entry {index} is not in the tree of size {stored.size}")
        hashes = self.proofs.inclusion(index, stored.size)
        return TlogProof(index, tuple(hashes), stored.note)

    def consistency_proof(self, first: int, second: int) -> list[Hash]:
        """Consistency proof between two signed checkpoint sizes."""
        if first > second:
            raise NotFoundError(f"--from {first} is larger than --to {second}")
        self.checkpoint_at(first)
        self.checkpoint_at(second)
        return self.proofs.consistency(first, second)

    def entry(self, index: int) -> StoredEntry:
        return self.storage.entry(index)

    def history_proofs(
        self, indexes: Sequence[int], under: StoredCheckpoint | None = None
    ) -> tuple[StoredCheckpoint, list[tuple[StoredEntry, list[Hash]]]]:
        """The latest checkpoint (or ``under``) and, for each of ``indexes`` (a
        certificate's history), its entry and inclusion proof under it: a few
        statements for the lot. Read after the certificate, the latest checkpoint
        covers every entry it names."""
        if under is None:
            stored, entries = self.storage.latest_checkpoint_with_entries(indexes)
        else:
            stored, entries = under, self.storage.entries_at(indexes)
        proofs = self.proofs.inclusions(indexes, stored.size)
        missing = [i for i in indexes if i not in entries]
        if missing:
            raise NotFoundError(f"no entry at index {missing[0]}")
        return stored, [(entries[i], p) for i, p in zip(indexes, proofs, strict=True)]

    def document(self, digest: str) -> StoredDocument:
        """The stored document with this lowercase hex SHA-256."""
        return self.storage.document(digest)

    # --- audit exports (registry.export reads the log through these) ------------

    def trust_entries(self, size: int) -> Iterator[tuple[int, bytes]]:
        """(index, leaf data) of every non-certificate entry below ``size``, in order."""
        with self.storage.read() as tx:
            for index, data in self.certificate_index.trust_entries_from(tx, 0):
                if index >= size:
                    return
                yield index, data

    def entries_at(self, indexes: Sequence[int]) -> dict[int, StoredEntry]:
        """The stored entries at ``indexes``; NotFoundError if one is missing."""
        found = self.storage.entries_at(indexes)
        missing = [i for i in indexes if i not in found]
        if missing:
            raise NotFoundError(f"no entry at index {missing[0]}")
        return found

    def inclusion_proofs(self, indexes: Sequence[int], size: int) -> list[list[Hash]]:
        """Inclusion proofs of ``indexes`` in the tree of ``size``, from one read of nodes
        that bypasses the node cache (an export reads every node once: through the
        cache it would evict what the public reads keep there)."""
        wanted = merkle.inclusion_nodes(indexes, size)
        nodes = self.storage.read_nodes_uncached(wanted)
        if len(nodes) != len(set(wanted)):
            raise StorageError(f"tree nodes missing from storage under size {size}")
        return merkle.inclusion_proofs(indexes, size, nodes)

    def issuer_entry_indices(self, issuer_id: str, after: int, size: int, limit: int) -> list[int]:
        """A page of the indices of ``issuer_id``'s certificate entries below ``size``."""
        return self.storage.issuer_entry_indices(issuer_id, after, size, limit)

    def certificate_entry_indices(self, certificate_id: str, size: int) -> list[int]:
        """Indices below ``size`` of the entries a certificate's history needs: its own,
        the amendment superseding it, and those of the certificates it amends."""
        return [i for i in self.storage.certificate_entry_indices(certificate_id) if i < size]

    def range_context_indices(self, start: int, end: int) -> list[int]:
        """Indices below ``start`` of the earlier entries about the certificates with an
        entry in [``start``, ``end``) (and those they amend)."""
        return self.storage.range_context_indices(start, end)

    def certificates_by_id(self, certificate_ids: Sequence[str]) -> dict[str, trust.Certificate]:
        """The certificates with these ids (as the tables hold them now), in few reads."""
        with self.storage.read() as tx:
            reader = self.certificate_index.reader(tx)
            reader.prefetch(certificate_ids, ())
            found = {i: reader.get(i) for i in certificate_ids}
        return {i: c for i, c in found.items() if c is not None}

    def first_index_logged(self, moment: datetime, size: int, *, after: bool) -> int:
        """The first index below ``size`` logged at or after ``moment`` (``after``: strictly
        after), else ``size``; ``logged_at`` never goes backwards along the log."""
        low, high = 0, size
        while low < high:
            middle = (low + high) // 2
            logged = entry_time(self.storage.entry(middle).logged_at)
            if logged > moment or (logged == moment and not after):
                high = middle
            else:
                low = middle + 1
        return low

    def checkpoint_around(self, size: int, *, at_or_after: bool) -> StoredCheckpoint:
        """The signed checkpoint of ``size`` if there is one, else the nearest one below
        (or, ``at_or_after``, above) it."""
        try:
            return self.storage.checkpoint(size)
        except NotFoundError:
            below, above = None, None
            for near in self.storage.checkpoint_sizes_near(size):
                if near < size:
                    below = near
                else:
                    above = near
            chosen = above if at_or_after else below
            if chosen is None:
                raise NotFoundError(f"no signed checkpoint around tree size {size}") from None
            return self.storage.checkpoint(chosen)

    # C2SP tiles read these (a Ledger is a registry.tiles.TileSource).

    def node_range(self, level: int, start: int, end: int) -> list[bytes]:
        return self.storage.node_range(level, start, end)

    def entry_data_range(self, start: int, end: int) -> list[bytes]:
        return self.storage.entry_data_range(start, end)


def certificate_statement(
    envelope: bytes,
) -> tuple[dsse.UnverifiedEnvelope, statement.Statement]:
    """An envelope that goes with a document, and its statement (issue/amend)."""
    unverified = dsse.parse(envelope)
    stmt = statement.parse(unverified.payload)
    if stmt.type not in DOCUMENT_TYPES:
        raise MalformedError(f"a document goes with certificate.issue/amend, not {stmt.type}")
    return unverified, stmt


def plain_statement(envelope: bytes) -> statement.Statement:
    """The statement of an envelope that needs no document; certificate
    issue/amend statements are refused (``document_required``)."""
    stmt = statement.parse(dsse.parse(envelope).payload)
    if stmt.type in DOCUMENT_TYPES:
        raise DocumentRequiredError(
            f"{stmt.type} needs its document: register it with 'qiledger issue FILE' "
            "or POST /api/v1/certificates"
        )
    return stmt


def _refuse_demo_key(settings: Settings, key: PublicKey) -> None:
    if key.key_id in DEMO_KEY_IDS and not settings.demo:
        raise ConfigError(
            "this log uses the public demo log key from keys.example/; it runs only with --demo"
        )


def _read_identity(storage: SqlStorage) -> LogIdentity | None:
    stored = storage.log_identity()
    if stored is None:
        return None
    origin, public_key = stored
    return LogIdentity(origin, PublicKey.from_raw(public_key))
