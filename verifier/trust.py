"""The trust model as a pure state machine over the log.

    log key ──adds──> accreditation bodies (trust.body.add / remove)
    body key ──signs──> accreditation of issuer X: keys, kinds, validity window
    issuer key ──signs──> certificate statements

:class:`TrustState` holds what the log has said so far. :meth:`TrustState.admit`
decides whether a statement signed by a key may be logged at the log's own
``logged_at`` and raises :class:`TrustError` naming the failed link;
:meth:`TrustState.apply` records an admitted statement. The registry calls both
at append time; :func:`replay` calls both over a log, so anyone replaying it
reaches the same verdict for every entry. :func:`certificate_status` answers
"what is this certificate's status at time T" from a replayed state.
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Protocol

from verifier import dsse, entry, statement
from verifier.errors import QILedgerError, TrustError
from verifier.keys import KeyId, PublicKey
from verifier.statement import Statement, parse_date, parse_instant, parse_public_key

CLOCK_SKEW = timedelta(minutes=5)
"""How far a statement's ``signed_at`` may lie ahead of the log's time."""

MAX_STATEMENT_AGE = timedelta(days=7)
"""How old a statement may be when first logged (bounds replays of old envelopes)."""

DUPLICATE_WINDOW = MAX_STATEMENT_AGE + CLOCK_SKEW
"""How long a logged statement's digest is remembered: one logged at ``t`` was
signed no later than ``t + CLOCK_SKEW``, so after ``t + DUPLICATE_WINDOW`` it is
refused as stale anyway, and the duplicate check needs only this recent window."""

GRANTED, SUSPENDED, WITHDRAWN = "granted", "suspended", "withdrawn"
ACTIVE, EXPIRED, SUPERSEDED, INVALID = "active", "expired", "superseded", "invalid"

STATUS_AFTER = {
    "certificate.suspend": SUSPENDED,
    "certificate.reinstate": ACTIVE,
    "certificate.withdraw": WITHDRAWN,
}
"""A certificate's status after each of its later events."""

IAF_STATUS = {
    ACTIVE: "Active",
    SUSPENDED: "Suspended",
    WITHDRAWN: "Withdrawn",
    EXPIRED: "Expired",
    SUPERSEDED: "Superseded",
    INVALID: "Invalid",
}
"""The words answers use for each status (IAF CertSearch's)."""


@dataclass
class Body:
    body_id: str
    name: str
    country: str
    key: PublicKey
    added_at: str
    removed_at: str | None = None


@dataclass
class IssuerKey:
    issuer_id: str
    key: PublicKey
    added_at: str
    revoked_at: str | None = None
    revocation_reason: str | None = None
    registered_by: str | None = None
    """The body whose grant registered this key; None when the issuer added it
    itself (``issuer.key.add``). A body may revoke only the keys it registered."""
    compromise_reports: list[tuple[str, datetime]] = field(default_factory=list)
    """(logged_at of the report, compromised_at) in log order: a revocation may say
    since when the key was compromised, and a later statement may move that earlier."""

    def active_at(self, moment: datetime) -> bool:
        return self.revoked_at is None or entry.parse_time(self.revoked_at) > moment

    @property
    def compromised_at(self) -> datetime | None:
        """The earliest compromise time ever reported, if any."""
        return min((c for _, c in self.compromise_reports), default=None)

    def compromised_as_known_at(self, at: datetime | None) -> datetime | None:
        """The earliest compromise time reported by ``at`` (``None``: ever)."""
        if at is None:
            return self.compromised_at
        return min(
            (c for reported, c in self.compromise_reports if entry.parse_time(reported) <= at),
            default=None,
        )


@dataclass
class Accreditation:
    body_id: str
    number: str
    issuer_id: str
    standard: str
    scope: str
    covers: frozenset[str]
    valid_from: date
    valid_until: date
    events: list[tuple[str, str, str]] = field(default_factory=list)
    """(logged_at, status, reason) in log order."""

    @property
    def status(self) -> str:
        return self.events[-1][1]


@dataclass
class Issuer:
    issuer_id: str
    name: str
    kind: str
    keys: dict[KeyId, IssuerKey] = field(default_factory=dict)
    accreditations: dict[tuple[str, str], Accreditation] = field(default_factory=dict)


@dataclass(frozen=True)
class CertificateEvent:
    index: int
    type: str
    logged_at: str
    key_id: KeyId
    reason: str = ""
    """The statement's reason (status changes); the rest stays in the log entry."""


@dataclass
class Certificate:
    certificate_id: str
    issuer_id: str
    kind: str
    document_sha256: str
    valid_until: date | None = None
    events: list[CertificateEvent] = field(default_factory=list)
    superseded_by: str | None = None
    laboratory: tuple[str, str] | None = None
    """A DCC's own calibration laboratory (name, code; either may be ""), shown
    beside the accredited issuer that registered it."""
    issued: date | None = None
    """The issue date its statement gives (what listings filter by)."""


@dataclass(frozen=True)
class CertificateStatus:
    """A certificate's status at one moment, derived from the log alone."""

    certificate_id: str
    status: str
    """active, suspended, withdrawn, expired, superseded or invalid."""
    reason: str
    events: tuple[CertificateEvent, ...]


class CertificateStore(Protocol):
    """Where a :class:`TrustState` keeps its certificates.

    Bodies, issuers and keys grow with the number of issuers and always stay in
    memory; certificates grow with everything a country ever certified, so the
    registry keeps them in indexed database tables (written in the same
    transaction as the entries) while a replay keeps them in
    :class:`MemoryCertificates`. The trust rules read and change certificates
    only through these methods, so both reach the same verdicts.
    """

    def get(self, certificate_id: str) -> Certificate | None: ...
    def with_document(self, document_sha256: str) -> list[Certificate]:
        """The certificates about the document with this hex SHA-256, in log order."""
        ...

    def add(self, certificate: Certificate) -> None:
        """Record a new certificate (its first event is in ``events``)."""
        ...

    def add_event(self, certificate: Certificate, event: CertificateEvent) -> None:
        """Record a later event of ``certificate`` (one :meth:`get` returned)."""
        ...

    def supersede(self, certificate: Certificate, successor_id: str) -> None:
        """Record that ``successor_id`` amends ``certificate``."""
        ...


class MemoryCertificates(Mapping[str, Certificate]):
    """Certificates by id in log order, in memory (a replay's store)."""

    def __init__(self) -> None:
        self._by_id: dict[str, Certificate] = {}
        self._by_digest: dict[str, list[str]] = {}

    def __getitem__(self, certificate_id: str) -> Certificate:
        return self._by_id[certificate_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_id)

    def __len__(self) -> int:
        return len(self._by_id)

    def with_document(self, document_sha256: str) -> list[Certificate]:
        return [self._by_id[i] for i in self._by_digest.get(document_sha256, ())]

    def add(self, certificate: Certificate) -> None:
        self._by_id[certificate.certificate_id] = certificate
        self._by_digest.setdefault(certificate.document_sha256, []).append(
            certificate.certificate_id
        )

    def add_event(self, certificate: Certificate, event: CertificateEvent) -> None:
        certificate.events.append(event)

    def supersede(self, certificate: Certificate, successor_id: str) -> None:
        certificate.superseded_by = successor_id


class TrustState:
    """Everything the log has established about bodies, issuers, keys and certificates.

    :attr:`bodies` and :attr:`issuers` are the read model in memory;
    :attr:`certificates` is a :class:`CertificateStore` (in memory unless one is
    given). The indexes beside them are private and kept in step by :meth:`apply`
    alone (one :class:`IssuerKey` record is reachable from its issuer and by key
    id). Read them through the query methods.

    ``remember_recent=False`` leaves the duplicate check of :meth:`admit` to the
    caller: the registry's sequencer answers every statement already in the log
    (at any age, from its database) before it asks the trust rules, so it need
    not hold a week of digests in memory.
    """

    def __init__(
        self,
        log_key: PublicKey,
        certificates: CertificateStore | None = None,
        *,
        remember_recent: bool = True,
    ) -> None:
        self.log_key = log_key
        self.size = 0
        self.bodies: dict[str, Body] = {}
        self.issuers: dict[str, Issuer] = {}
        self.certificates: CertificateStore = (
            MemoryCertificates() if certificates is None else certificates
        )
        self._remember_recent = remember_recent
        self._body_keys: dict[KeyId, str] = {}
        self._issuer_keys: dict[KeyId, IssuerKey] = {}
        self._recent: dict[bytes, int] = {}
        """Digest -> index of every statement logged within DUPLICATE_WINDOW of the
        newest entry (the same statement may be logged only once)."""
        self._recent_order: deque[tuple[datetime, bytes]] = deque()
        """(logged_at, digest) of :attr:`_recent`, oldest first."""

    def reading(self, certificates: CertificateStore) -> TrustState:
        """This state with another certificate store (e.g. one read transaction's):
        bodies, issuers and keys are shared, not copied."""
        view = object.__new__(type(self))  # copy.copy, without its generic protocol
        view.__dict__.update(self.__dict__)
        view.certificates = certificates
        return view

    def detached(self, certificates: CertificateStore) -> TrustState:
        """A deep copy of bodies, issuers, keys and their indexes over another
        certificate store: changing it leaves this state as it was (a batch
        changes its own copy until it commits)."""
        twin = copy.copy(self)
        memo: dict[int, Any] = {}  # one memo: a key reachable two ways stays one object
        for name, value in vars(self).items():
            if name != "certificates":
                setattr(twin, name, copy.deepcopy(value, memo))
        twin.certificates = certificates
        return twin

    def skip_to(self, size: int) -> None:
        """Move past entries ``self.size`` .. ``size - 1`` without replaying them:
        they are certificate statements, recorded already in this state's
        certificate store (the registry's tables, written with the entries)."""
        self.size = max(self.size, size)

    # --- queries ------------------------------------------------------------------

    def certificate(self, certificate_id: str) -> Certificate | None:
        return self.certificates.get(certificate_id)

    def has_compromise_reports(self, issuer_id: str) -> bool:
        """Whether a key of this issuer was reported compromised (events it signed
        may be void)."""
        issuer = self.issuers.get(issuer_id)
        return issuer is not None and any(k.compromise_reports for k in issuer.keys.values())

    def certificates_with_document(self, document_sha256: str) -> list[Certificate]:
        """The certificates about the document with this hex SHA-256, in log order."""
        return self.certificates.with_document(document_sha256)

    def issuer_key(self, key_id: KeyId) -> IssuerKey | None:
        """The issuer key with this id, whatever its status."""
        return self._issuer_keys.get(key_id)

    def recently_logged(self, digest: bytes) -> int | None:
        """The index of the statement with this digest if it was logged within
        :data:`DUPLICATE_WINDOW` of the newest entry (older ones are refused as
        stale, so they are no longer remembered)."""
        return self._recent.get(digest)

    # --- keys ---------------------------------------------------------------------

    def keys_for(self, key_ids: Collection[KeyId]) -> dict[KeyId, PublicKey]:
        """Every known key among ``key_ids`` (log, body or issuer), whatever its status."""
        found: dict[KeyId, PublicKey] = {}
        for key_id in key_ids:
            if key_id == self.log_key.key_id:
                found[key_id] = self.log_key
            elif key_id in self._body_keys:
                found[key_id] = self.bodies[self._body_keys[key_id]].key
            elif key_id in self._issuer_keys:
                found[key_id] = self._issuer_keys[key_id].key
        return found

    def unknown_signer(self, stmt: Statement, key_ids: Collection[KeyId]) -> TrustError:
        """The specific refusal for a statement signed by no key the log knows."""
        ids = ", ".join(sorted(key_ids))
        family = stmt.type.split(".", 1)[0]
        if family == "trust":
            return TrustError("not_operator", "trust anchors are signed with the log's key")
        if family == "accreditation":
            return TrustError(
                "body_untrusted", f"key {ids} is not a trusted accreditation body's key"
            )
        issuer_id = stmt["issuer_id"]
        if issuer_id not in self.issuers:
            return TrustError(
                "issuer_unknown", f"issuer {issuer_id} has no accreditation in this log"
            )
        return TrustError("key_not_issuer", f"key {ids} is not a key of {issuer_id}")

    def _key_in_use(self, key: PublicKey, issuer_id: str | None = None) -> None:
        kid = key.key_id
        owner = self._issuer_keys.get(kid)
        if (
            kid == self.log_key.key_id
            or kid in self._body_keys
            or (owner is not None and owner.issuer_id != issuer_id)
        ):
            raise TrustError("key_in_use", f"key {kid} already belongs to another party")

    # --- admission ------------------------------------------------------------------

    def admit(self, signer: PublicKey, stmt: Statement, logged_at: datetime) -> None:
        """Raise TrustError unless ``signer`` may log ``stmt`` at ``logged_at``."""
        signed_at = stmt.signed_at
        if signed_at > logged_at + CLOCK_SKEW:
            raise TrustError(
                "statement_future",
                f"signed_at {stmt['signed_at']} is later than the log's time "
                f"{entry.format_time(logged_at)} (allowed skew {CLOCK_SKEW})",
            )
        if signed_at < logged_at - MAX_STATEMENT_AGE:
            raise TrustError(
                "statement_stale",
                f"signed_at {stmt['signed_at']} is more than {MAX_STATEMENT_AGE.days} days "
                "old: an old envelope cannot be replayed; sign a fresh statement",
            )
        logged = self.recently_logged(stmt.digest)
        if logged is not None:
            raise TrustError(
                "statement_duplicate",
                f"this statement is already logged at index {logged}; "
                "a statement is logged once, whatever envelope carries it",
            )
        family = stmt.type.split(".", 1)[0]
        if family == "trust":
            self._admit_body_event(signer, stmt)
        elif family == "accreditation":
            self._admit_accreditation(signer, stmt)
        elif family == "issuer":
            self._admit_key_event(signer, stmt, logged_at)
        else:
            self._admit_certificate(signer, stmt, logged_at)

    def _admit_body_event(self, signer: PublicKey, stmt: Statement) -> None:
        if signer != self.log_key:
            raise TrustError(
                "not_operator", "trust anchors are added and removed only with the log's key"
            )
        body = self.bodies.get(stmt["body_id"])
        if stmt.type == "trust.body.add":
            if body is not None:
                raise TrustError("body_exists", f"body {stmt['body_id']} is already registered")
            self._key_in_use(parse_public_key(stmt["public_key"]))
        elif body is None or body.removed_at is not None:
            raise TrustError("body_unknown", f"body {stmt['body_id']} is not a trusted body")

    def _signing_body(self, signer: PublicKey, body_id: str) -> Body:
        kid = signer.key_id
        if kid in self._issuer_keys:
            raise TrustError(
                "self_accreditation",
                f"accreditation statements must be signed by an accreditation body; "
                f"this one is signed by a key of issuer {self._issuer_keys[kid].issuer_id}",
            )
        signer_body = self._body_keys.get(kid)
        if signer_body is None:
            raise TrustError("body_untrusted", f"key {kid} is not a trusted accreditation body")
        if signer_body != body_id:
            raise TrustError(
                "wrong_body", f"signed by body {signer_body} but speaks for body {body_id}"
            )
        body = self.bodies[body_id]
        if body.removed_at is not None:
            raise TrustError("body_untrusted", f"body {body_id} was removed from the trust anchors")
        return body

    def _admit_accreditation(self, signer: PublicKey, stmt: Statement) -> None:
        self._signing_body(signer, stmt["body_id"])
        key = (stmt["body_id"], stmt["accreditation_number"])
        issuer = self.issuers.get(stmt["issuer_id"])
        if stmt.type == "accreditation.grant":
            if issuer is not None and key in issuer.accreditations:
                raise TrustError(
                    "accreditation_exists",
                    f"accreditation {key[1]} of body {key[0]} already exists",
                )
            if issuer is not None and issuer.kind != stmt["issuer_kind"]:
                raise TrustError(
                    "issuer_kind_mismatch", f"issuer {issuer.issuer_id} is a {issuer.kind}"
                )
            for raw in stmt["public_keys"]:
                listed = parse_public_key(raw)
                self._key_in_use(listed, stmt["issuer_id"])
                if issuer is not None and listed.key_id not in issuer.keys:
                    # Another body's issuer: a grant may name its keys, never add
                    # one (a key of the granting body's choosing could speak for
                    # the issuer and revoke its own keys).
                    raise TrustError(
                        "grant_adds_key",
                        f"issuer {issuer.issuer_id} is already registered; a grant lists "
                        f"only its existing keys, and key {listed.key_id} is not one of them "
                        "(the issuer adds keys itself with issuer.key.add)",
                    )
            return
        accreditation = issuer.accreditations.get(key) if issuer else None
        if accreditation is None:
            raise TrustError(
                "accreditation_unknown",
                f"issuer {stmt['issuer_id']} holds no accreditation {key[1]} from {key[0]}",
            )
        allowed = {
            "accreditation.suspend": {GRANTED},
            "accreditation.restore": {SUSPENDED},
            "accreditation.withdraw": {GRANTED, SUSPENDED},
        }[stmt.type]
        if accreditation.status not in allowed:
            raise TrustError(
                "transition_invalid",
                f"cannot {stmt.type.split('.')[1]} an accreditation that is {accreditation.status}",
            )

    def _issuer(self, issuer_id: str) -> Issuer:
        issuer = self.issuers.get(issuer_id)
        if issuer is None:
            raise TrustError(
                "issuer_unknown", f"issuer {issuer_id} has no accreditation in this log"
            )
        return issuer

    def check_issuer_signer(self, issuer_id: str, signer: PublicKey, moment: datetime) -> None:
        """Raise TrustError unless ``signer`` is a usable key of ``issuer_id`` at ``moment``."""
        self._active_issuer_key(self._issuer(issuer_id), signer, moment)

    def _active_issuer_key(self, issuer: Issuer, signer: PublicKey, moment: datetime) -> IssuerKey:
        kid = signer.key_id
        record = issuer.keys.get(kid)
        if record is None:
            other = self._issuer_keys.get(kid)
            if other is not None:
                raise TrustError(
                    "key_of_other_issuer",
                    f"key {kid} belongs to issuer {other.issuer_id}, not {issuer.issuer_id}",
                )
            raise TrustError("key_not_issuer", f"key {kid} is not a key of {issuer.issuer_id}")
        if record.compromised_at is not None and record.compromised_at <= moment:
            raise TrustError(
                "key_compromised",
                f"key {kid} of {issuer.issuer_id} is compromised since "
                f"{entry.format_time(record.compromised_at)}",
            )
        if not record.active_at(moment):
            raise TrustError(
                "key_revoked", f"key {kid} of {issuer.issuer_id} was revoked at {record.revoked_at}"
            )
        return record

    def _admit_key_event(self, signer: PublicKey, stmt: Statement, moment: datetime) -> None:
        """Key events: signed by an active key of the issuer, or — revocations only —
        by a body that accredits the issuer, for a key that body registered and no
        further back than that registration."""
        issuer = self._issuer(stmt["issuer_id"])
        body_id = self._body_keys.get(signer.key_id)
        if body_id is not None:
            accredited = [
                a
                for (b, _), a in issuer.accreditations.items()
                if b == body_id and a.status == GRANTED
            ]
            if not accredited or self.bodies[body_id].removed_at is not None:
                raise TrustError(
                    "body_not_accrediting",
                    f"body {body_id} holds no active accreditation of {issuer.issuer_id}",
                )
            if stmt.type == "issuer.key.add":
                raise TrustError(
                    "body_cannot_add_key",
                    f"keys of {issuer.issuer_id} are added by the issuer itself "
                    "(issuer.key.add signed by one of its active keys), not by a body",
                )
        else:
            self._active_issuer_key(issuer, signer, moment)
        if stmt.type == "issuer.key.add":
            new_key = parse_public_key(stmt["public_key"])
            if new_key.key_id in issuer.keys:
                raise TrustError("key_exists", f"key {new_key.key_id} is already registered")
            self._key_in_use(new_key, issuer.issuer_id)
            return
        record = issuer.keys.get(stmt["key_id"])
        if record is None:
            raise TrustError(
                "key_unknown", f"key {stmt['key_id']} is not a key of {issuer.issuer_id}"
            )
        raw_compromised = stmt.get("compromised_at")
        compromised = None if raw_compromised is None else parse_instant(raw_compromised)
        if body_id is not None:
            if record.registered_by != body_id:
                raise TrustError(
                    "key_not_registered_by_body",
                    f"body {body_id} did not register key {record.key.key_id} of "
                    f"{issuer.issuer_id}; a body revokes only the keys its grant registered",
                )
            if compromised is not None and compromised < entry.parse_time(record.added_at):
                raise TrustError(
                    "compromise_before_registration",
                    f"compromised_at {raw_compromised} is before body {body_id} registered "
                    f"key {record.key.key_id} ({record.added_at})",
                )
        if compromised is not None and compromised > moment + CLOCK_SKEW:
            raise TrustError("statement_future", "compromised_at lies in the future")
        if record.revoked_at is not None:
            # A revoked key may still be found to have been stolen earlier: a later
            # statement may add a compromise time or move it earlier, never later.
            known = record.compromised_at
            if compromised is None or (known is not None and compromised >= known):
                raise TrustError(
                    "key_revoked",
                    f"key {stmt['key_id']} is already revoked"
                    + (
                        f" (compromised since {entry.format_time(known)})"
                        if known is not None
                        else ""
                    )
                    + "; a further revocation may only report an earlier compromised_at",
                )

    def _covering_accreditation(self, issuer: Issuer, kind: str, moment: datetime) -> None:
        day = moment.date()
        problems: list[tuple[int, str, str]] = []
        for acc in issuer.accreditations.values():
            body = self.bodies[acc.body_id]
            if kind not in acc.covers:
                problems.append((0, "scope_not_covered", f"{acc.number} does not cover {kind}"))
            elif body.removed_at is not None:
                problems.append((1, "body_untrusted", f"body {acc.body_id} is no longer trusted"))
            elif acc.status == WITHDRAWN:
                problems.append((2, "accreditation_withdrawn", f"{acc.number} was withdrawn"))
            elif acc.status == SUSPENDED:
                problems.append((3, "accreditation_suspended", f"{acc.number} is suspended"))
            elif day < acc.valid_from:
                problems.append(
                    (
                        4,
                        "accreditation_not_yet_valid",
                        f"{acc.number} is valid from {acc.valid_from}",
                    )
                )
            elif day > acc.valid_until:
                problems.append(
                    (4, "accreditation_expired", f"{acc.number} expired on {acc.valid_until}")
                )
            else:
                return
        if not problems:
            raise TrustError("issuer_not_accredited", f"{issuer.issuer_id} has no accreditation")
        _, code, detail = max(problems)
        raise TrustError(code, f"issuer {issuer.issuer_id} is not accredited for {kind}: {detail}")

    def _admit_certificate(self, signer: PublicKey, stmt: Statement, moment: datetime) -> None:
        issuer = self._issuer(stmt["issuer_id"])
        self._active_issuer_key(issuer, signer, moment)
        cert_id = stmt["certificate_id"]
        existing = self.certificates.get(cert_id)
        if stmt.type in ("certificate.issue", "certificate.amend"):
            if existing is not None:
                raise TrustError(
                    "certificate_exists",
                    f"certificate {cert_id} is already registered at index "
                    f"{existing.events[0].index}; a new document needs certificate.amend "
                    "with a new certificate id",
                )
            self._covering_accreditation(issuer, stmt["kind"], moment)
            self._check_document_owner(issuer, stmt)
            if stmt.type == "certificate.amend":
                old = self.certificates.get(stmt["supersedes"])
                if old is None or old.issuer_id != issuer.issuer_id:
                    raise TrustError(
                        "certificate_unknown",
                        f"{issuer.issuer_id} has no certificate {stmt['supersedes']} to amend",
                    )
                status = _replayed_status(old, self, None)
                if status in (WITHDRAWN, SUPERSEDED):
                    raise TrustError("transition_invalid", f"cannot amend a {status} certificate")
            return
        if existing is None:
            raise TrustError("certificate_unknown", f"no certificate {cert_id} in this log")
        if existing.issuer_id != issuer.issuer_id:
            raise TrustError(
                "certificate_not_owned",
                f"certificate {cert_id} belongs to issuer {existing.issuer_id}",
            )
        status = _replayed_status(existing, self, None)
        allowed = {
            "certificate.suspend": {ACTIVE},
            "certificate.reinstate": {SUSPENDED},
            "certificate.withdraw": {ACTIVE, SUSPENDED},
        }[stmt.type]
        if status not in allowed:
            verb = stmt.type.split(".")[1]
            raise TrustError("transition_invalid", f"cannot {verb} a {status} certificate")
        if stmt.type == "certificate.reinstate":
            self._covering_accreditation(issuer, existing.kind, moment)

    def _check_document_owner(self, issuer: Issuer, stmt: Statement) -> None:
        """One document belongs to one issuer, and a DCC's own laboratory code must be
        the issuer's: nobody registers another laboratory's document as their own."""
        for other in self.certificates.with_document(stmt["document_sha256"]):
            if other.issuer_id != issuer.issuer_id:
                raise TrustError(
                    "document_of_other_issuer",
                    f"this document is already registered by issuer {other.issuer_id} "
                    f"as {other.certificate_id}",
                )
        code = stmt.get("fields", {}).get("laboratory_code")  # fields: a JSON object
        if code is None:
            return
        names = {issuer.issuer_id, *(number for _, number in issuer.accreditations)}
        if not isinstance(code, str) or _identity_key(code) not in {
            _identity_key(n) for n in names
        }:
            raise TrustError(
                "laboratory_mismatch",
                f"the DCC names calibration laboratory {str(code)[:64]!r}, which is neither "
                f"issuer {issuer.issuer_id} nor one of its accreditation numbers "
                f"({', '.join(sorted(n for _, n in issuer.accreditations))})",
            )

    # --- recording ------------------------------------------------------------------

    def apply(self, index: int, signer: PublicKey, stmt: Statement, logged_at: str) -> None:
        """Record an admitted statement logged at ``index`` (no checks)."""
        self.size = index + 1
        self._remember(stmt.digest, index, entry.parse_time(logged_at))
        kind = stmt.type
        if kind == "trust.body.add":
            key = parse_public_key(stmt["public_key"])
            self.bodies[stmt["body_id"]] = Body(
                stmt["body_id"], stmt["name"], stmt["country"], key, logged_at
            )
            self._body_keys[key.key_id] = stmt["body_id"]
        elif kind == "trust.body.remove":
            self.bodies[stmt["body_id"]].removed_at = logged_at
        elif kind == "accreditation.grant":
            issuer = self.issuers.setdefault(
                stmt["issuer_id"],
                Issuer(stmt["issuer_id"], stmt["issuer_name"], stmt["issuer_kind"]),
            )
            for raw in stmt["public_keys"]:
                self._add_issuer_key(
                    issuer, parse_public_key(raw), logged_at, registered_by=stmt["body_id"]
                )
            issuer.accreditations[(stmt["body_id"], stmt["accreditation_number"])] = Accreditation(
                stmt["body_id"],
                stmt["accreditation_number"],
                issuer.issuer_id,
                stmt["standard"],
                stmt["scope"],
                frozenset(stmt["covers"]),
                parse_date(stmt["valid_from"]),
                parse_date(stmt["valid_until"]),
                [(logged_at, GRANTED, "")],
            )
        elif kind.startswith("accreditation."):
            status = {"suspend": SUSPENDED, "restore": GRANTED, "withdraw": WITHDRAWN}
            acc = self.issuers[stmt["issuer_id"]].accreditations[
                (stmt["body_id"], stmt["accreditation_number"])
            ]
            acc.events.append((logged_at, status[kind.split(".")[1]], stmt["reason"]))
        elif kind == "issuer.key.add":
            self._add_issuer_key(
                self.issuers[stmt["issuer_id"]], parse_public_key(stmt["public_key"]), logged_at
            )
        elif kind == "issuer.key.revoke":
            record = self.issuers[stmt["issuer_id"]].keys[stmt["key_id"]]
            if record.revoked_at is None:
                record.revoked_at = logged_at
                record.revocation_reason = stmt["reason"]
            if "compromised_at" in stmt.fields:
                record.compromise_reports.append((logged_at, parse_instant(stmt["compromised_at"])))
        else:
            self._apply_certificate(index, signer, stmt, logged_at)

    def _remember(self, digest: bytes, index: int, logged_at: datetime) -> None:
        if not self._remember_recent:
            return
        order, recent = self._recent_order, self._recent
        horizon = logged_at - DUPLICATE_WINDOW
        while order and order[0][0] < horizon:
            recent.pop(order.popleft()[1], None)
        recent[digest] = index
        order.append((logged_at, digest))

    def _add_issuer_key(
        self, issuer: Issuer, key: PublicKey, logged_at: str, registered_by: str | None = None
    ) -> None:
        if key.key_id not in issuer.keys:
            record = IssuerKey(issuer.issuer_id, key, logged_at, registered_by=registered_by)
            issuer.keys[key.key_id] = record
            self._issuer_keys[key.key_id] = record

    def _apply_certificate(
        self, index: int, signer: PublicKey, stmt: Statement, logged_at: str
    ) -> None:
        event = CertificateEvent(index, stmt.type, logged_at, signer.key_id, stmt.get("reason", ""))
        store = self.certificates
        if stmt.type in ("certificate.issue", "certificate.amend"):
            until = stmt.get("valid_until")
            store.add(
                Certificate(
                    stmt["certificate_id"],
                    stmt["issuer_id"],
                    stmt["kind"],
                    stmt["document_sha256"],
                    parse_date(until) if until is not None else None,
                    [event],
                    laboratory=_laboratory(stmt),
                    issued=parse_date(stmt["issued"]),
                )
            )
            if stmt.type == "certificate.amend":
                old = store.get(stmt["supersedes"])
                assert old is not None  # admit() found it
                store.supersede(old, stmt["certificate_id"])
            return
        cert = store.get(stmt["certificate_id"])
        assert cert is not None  # admit() found it
        store.add_event(cert, event)


def _laboratory(stmt: Statement) -> tuple[str, str] | None:
    fields = stmt.get("fields", {})  # a JSON object (statement.validate)
    name, code = fields.get("laboratory"), fields.get("laboratory_code")
    if not isinstance(name, str) and not isinstance(code, str):
        return None
    return (name if isinstance(name, str) else "", code if isinstance(code, str) else "")


def _identity_key(text: str) -> str:
    """How a laboratory code is compared with ids and accreditation numbers:
    case and spacing aside (``CNAS L0001`` = ``cnas  l0001``)."""
    return " ".join(text.split()).casefold()


def _compromised(state: TrustState, event: CertificateEvent, at: datetime | None) -> str | None:
    """Why ``event`` is void because its key was compromised (as known at ``at``:
    a compromise not yet reported then does not void it then)."""
    record = state.issuer_key(event.key_id)
    if record is None or not record.compromise_reports:
        return None
    since = record.compromised_as_known_at(at)
    if since is not None and entry.parse_time(event.logged_at) >= since:
        return (
            f"{event.type} at index {event.index} was signed with key {event.key_id}, "
            f"compromised since {entry.format_time(since)}"
        )
    return None


def _replayed_status(cert: Certificate, state: TrustState, at: datetime | None) -> str:
    return _status(cert, state, at)[0]


def _status(cert: Certificate, state: TrustState, at: datetime | None) -> tuple[str, str]:
    events = [e for e in cert.events if at is None or entry.parse_time(e.logged_at) <= at]
    if not events:
        return INVALID, "not in the log at that time"
    void = _compromised(state, events[0], at)
    if void is not None:
        return INVALID, void
    status, reason = ACTIVE, ""
    for event in events[1:]:
        if _compromised(state, event, at) is not None:
            continue  # a status change by a compromised key is ignored
        status = STATUS_AFTER[event.type]
        reason = event.reason
    if status == ACTIVE and cert.superseded_by is not None:
        successor = state.certificates.get(cert.superseded_by)
        if successor is None:  # cannot happen: an amend is recorded with its successor
            return status, reason
        first = successor.events[0]
        if (at is None or entry.parse_time(first.logged_at) <= at) and _compromised(
            state, first, at
        ) is None:
            return SUPERSEDED, f"superseded by {cert.superseded_by}"
    if (
        status == ACTIVE
        and cert.valid_until is not None
        and at is not None
        and at.date() > cert.valid_until
    ):
        return EXPIRED, f"expired on {cert.valid_until}"
    return status, reason


def recorded_status_decides(
    state: TrustState, at: datetime, last_logged_at: str | None, issuer_id: str
) -> bool:
    """Whether, at ``at``, the status of a certificate of ``issuer_id`` is
    :func:`status_from_recorded` of the status its events alone give: nothing is
    logged after ``at`` (every event counts) and no key of its issuer — the only
    keys that may sign its events and its successor's — has a compromise reported
    (none is void). Otherwise only :func:`status_of` can say."""
    if last_logged_at is not None and entry.parse_time(last_logged_at) > at:
        return False
    return not state.has_compromise_reports(issuer_id)


def status_from_recorded(recorded: str, valid_until: date | None, at: datetime) -> str:
    """:func:`status_of`'s status where :func:`recorded_status_decides` holds, from the
    status the events alone give (superseded included: it comes before expiry)."""
    if recorded == ACTIVE and valid_until is not None and at.date() > valid_until:
        return EXPIRED
    return recorded


def certificate_status(state: TrustState, certificate_id: str, at: datetime) -> CertificateStatus:
    """Status of a certificate at ``at``, knowing only entries logged by then."""
    cert = state.certificates.get(certificate_id)
    if cert is None:
        return CertificateStatus(certificate_id, INVALID, "no such certificate in the log", ())
    return status_of(state, cert, at)


def status_of(state: TrustState, cert: Certificate, at: datetime) -> CertificateStatus:
    """Status of ``cert`` (read from ``state``) at ``at``, knowing only entries
    logged by then."""
    certificate_id = cert.certificate_id
    status, reason = _status(cert, state, at)
    events = tuple(e for e in cert.events if entry.parse_time(e.logged_at) <= at)
    return CertificateStatus(certificate_id, status, reason, events)


def signer_of(state: TrustState, envelope: dsse.UnverifiedEnvelope) -> dsse.VerifiedEnvelope:
    """Verify the envelope's one signature against the keys the state knows."""
    signature = dsse.only_signature(envelope)
    return dsse.verify(envelope, state.keys_for({signature.keyid}))


def replay(
    log_key: PublicKey, entries: Iterable[tuple[int, bytes]], *, trust_append_checks: bool = False
) -> TrustState:
    """Replay leaf data in index order through the trust rules; raise on the first bad entry.

    Errors name the entry index. ``trust_append_checks=True`` skips what the
    registry checked when it appended these very entries — signatures and the
    canonical form (a round trip through RFC 8785: 40 % of a replay) — for its
    own catch-up from its own database; every field and trust rule is still
    checked. Anyone replaying a log they did not write leaves it False.
    """
    state = TrustState(log_key)
    for index, data in entries:
        replay_one(state, index, data, trust_append_checks=trust_append_checks)
    return state


def replay_one(
    state: TrustState, index: int, data: bytes, *, trust_append_checks: bool
) -> Statement:
    """Replay one entry into ``state`` (see :func:`replay`); its statement."""
    if index != state.size:
        raise TrustError("index_gap", f"entry {index} follows entry {state.size - 1}")
    try:
        parsed = entry.parse(data, form_checked=trust_append_checks)
        dsse.only_signature(parsed.envelope)
        stmt = statement.parse(parsed.envelope.payload, form_checked=trust_append_checks)
        if not trust_append_checks:
            signer = signer_of(state, parsed.envelope).signed_by
        else:
            known = state.keys_for([s.keyid for s in parsed.envelope.signatures])
            signer = next(iter(known.values()))
        state.admit(signer, stmt, entry.parse_time(parsed.logged_at))
    except StopIteration:
        raise TrustError("key_unknown", f"entry {index}: signed by no known key") from None
    except QILedgerError as exc:
        raise TrustError(exc.code, f"entry {index}: {exc.message}") from None
    state.apply(index, signer, stmt, parsed.logged_at)
    return stmt
