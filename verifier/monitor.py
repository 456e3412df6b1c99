"""Monitoring a registry's log: every new checkpoint checked against the last one
verified, every new tile and entry checked against the checkpoint, and every new
entry replayed through the trust rules (``qiverify monitor``).

One step goes from the last verified checkpoint (size ``m``, in the state file) to
the registry's current one (size ``n``, its log signature verified):

1. **The tiles make the signed tree.** A :class:`verifier.tiles.TiledTree` of size
   ``n`` over the registry's tiles must have the new checkpoint's root.
2. **Consistency, from the tiles.** The RFC 9162 consistency proof ``m -> n`` is
   computed from those same tile hashes and checked with
   :func:`verifier.merkle.verify_consistency` against both signed roots. The
   monitor must read the tiles anyway to check the new entries, and the proof is
   a handful of hashes of the same tiles, so this costs no extra request and no
   trust in a second endpoint that could answer differently from the tiles (the
   registry's proof API is asked only when a checkpoint goes *backwards*: then
   the smaller tree's tiles cannot show the larger one).
3. **Every new tile hash is bound to the root.** The root uses only the top-most
   hashes of each level (a full level-``L`` tile is summarised by one hash of the
   level ``L+1`` tile), so each full tile holding a new hash must fold (as a
   perfect 256-leaf subtree) to its parent hash; partial right-most tiles are in
   the root itself. Leaf hashes are read from a full tile checked this way or from
   the very partial tile the root was computed from (the same bytes, never a
   second fetch of them).
4. **Every new entry** is hashed (RFC 9162 leaf hash) and compared with its tile
   hash; its ``prev`` must be the leaf hash of the entry before it (DESIGN.md item
   3); it is replayed with :func:`verifier.trust.replay_one` (strict parsing, its
   DSSE signature by a key the replayed state knows, and the trust rules at its
   ``logged_at``) over everything before it. An entry the rules refuse is an
   invalid entry: a registry that admits it broke its own rules.

Any mismatch raises :class:`Alarm` with the evidence (both signed checkpoints, the
proof or tile hashes involved, the entry and its inclusion proof) as a JSON-ready
dict; answers that cannot be parsed at all (garbage, a truncated tile) raise the
parsers' :class:`~verifier.errors.MalformedError`: they prove nothing about the log,
so they mean "could not check", like an unreachable registry.

**The replayed state, how it grows, and its bound.** The trust state proper —
bodies, issuers, their keys and accreditations — grows with the number of parties,
not with the log: the state file keeps the *entries* that made it (every
``trust.*``, ``accreditation.*`` and ``issuer.*`` entry, leaf data verbatim) and a
restart replays them (signatures included) with :meth:`TrustState.skip_to` over
the certificate entries between them. Certificate statements grow with the log,
and no certificate can ever be forgotten: a later ``certificate.issue`` must be
refused if its id was ever used, a document registered by another issuer must be
refused forever, and a status change or amendment is admitted according to the
certificate's replayed status — which a later compromise report of a key can
change retroactively (a status change signed with a key compromised since before
it is ignored), so even a withdrawn certificate's events stay. What the state
keeps per certificate is therefore exactly what admission reads
(:class:`CompactCertificates`): id, issuer, kind, document digest, the id that
superseded it, and per event only its index, type, ``logged_at`` and signing key
(as a number into one key table) — no reasons, expiry dates or laboratory names,
which only status *reports* use (the monitor reports none): about 170 bytes of
JSON per certificate with a 30-character id, plus about 45 per later event. The
duplicate check of the trust rules needs the digests of the statements logged
within :data:`verifier.trust.DUPLICATE_WINDOW` of the newest entry (older ones are
refused as stale anyway): that window is kept (about 100 bytes per entry) and
pruned as the log advances, so it is bounded by a week of traffic, not by the
log. For ``--watch``, the state also keeps every certificate's traced links
(role and target id: about 60 bytes per certificate with links) and which
watched certificates it reported at risk. A catch-up holds one level-0 tile and
one entry bundle at a time (the tiles above level 0, 1/256 of the hashes, are
kept for the step). The state file is
rewritten whole after each verified checkpoint, so a save costs time linear in
the certificates (about 170 MB per million); a monitor of a log that large would
want an indexed store instead, which ``verifier/`` (no SQL) does not have.

The checks here take fetched bytes through a ``fetch(path)`` callable (paths as in
C2SP tlog-tiles, without a leading slash); :func:`http_fetch`, :func:`load_state`,
:func:`save_state` and :func:`write_evidence` are the thin I/O layer.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from verifier import checkpoint, entry, merkle, note, statement, tiles, traceability, trust
from verifier import proof as tlog_proof
from verifier.checkpoint import SignedCheckpoint
from verifier.encoding import b64decode, b64encode, hex_decode
from verifier.entry import GENESIS_PREV
from verifier.errors import (
    InconsistencyError,
    MalformedError,
    ProofError,
    QILedgerError,
    VerificationError,
)
from verifier.keys import KeyId
from verifier.links import TRACED_ROLES, Link, statement_references
from verifier.merkle import HASH_SIZE, Hash
from verifier.online import MAX_BUNDLE_RESPONSE, Registry
from verifier.statement import Statement

STATE_FORMAT = "qiverify-monitor-state"
STATE_VERSION = 2  # 2: the traced links and what was reported at risk
EVIDENCE_FORMAT = "qiverify-monitor-evidence"
MAX_STATE_FILE = 1 << 34
"""A state file is read whole; this only refuses a file that cannot be one."""

Fetch = Callable[[str], bytes]

# What a monitored entry may tell: a statement is "about" a party when it names it.
_ABOUT_FIELDS = ("issuer_id", "body_id")
_CERTIFICATE_EVENTS = ("issue", "amend", "suspend", "reinstate", "withdraw")


# --- errors ------------------------------------------------------------------------


class Alarm(VerificationError):
    """The registry's log contradicts itself, an earlier checkpoint or its own rules.

    ``kind``: ``fork``, ``tile_mismatch``, ``entry_mismatch``, ``prev_broken``,
    ``entry_invalid`` or ``checkpoint_signature``; ``evidence`` is JSON-ready.
    """

    code = "log_misbehaviour"

    def __init__(self, kind: str, message: str, evidence: dict[str, Any]) -> None:
        super().__init__(message)
        self.kind = kind
        self.evidence = evidence


class StaleCheckpointError(QILedgerError):
    """The registry serves a checkpoint older than one already verified, and proves
    it a prefix of that one: a stale or rolled-back view, nothing new to check."""

    code = "checkpoint_stale"


class StateFileError(QILedgerError):
    """The state file cannot be read, is corrupt, or is of another log."""

    code = "state_file"


# --- certificates, kept as small as admission allows ---------------------------------


class CompactCertificates(trust.MemoryCertificates):
    """A replay's certificate store keeping only what admission of later statements
    reads (see the module docstring); serialisable with :meth:`to_json`."""

    def add(self, certificate: trust.Certificate) -> None:
        super().add(
            trust.Certificate(
                certificate.certificate_id,
                certificate.issuer_id,
                certificate.kind,
                certificate.document_sha256,
                events=[_compact(e) for e in certificate.events],
                superseded_by=certificate.superseded_by,
            )
        )

    def add_event(self, certificate: trust.Certificate, event: trust.CertificateEvent) -> None:
        super().add_event(certificate, _compact(event))

    def to_json(self) -> dict[str, Any]:
        keys: dict[str, int] = {}
        rows = []
        for cert in self.values():
            events = [
                [e.index, e.type.removeprefix("certificate."), e.logged_at, _ref(keys, e.key_id)]
                for e in cert.events
            ]
            rows.append(
                [
                    cert.certificate_id,
                    cert.issuer_id,
                    cert.kind,
                    cert.document_sha256,
                    cert.superseded_by,
                    events,
                ]
            )
        return {"keys": list(keys), "certificates": rows}

    @classmethod
    def from_json(cls, value: Any, size: int) -> CompactCertificates:
        """Rebuild from :meth:`to_json` (raises ValueError/KeyError/TypeError on
        anything else; :func:`load_state` turns them into :class:`StateFileError`)."""
        keys = value["keys"]
        if not isinstance(keys, list) or not all(_is_hex(k, HASH_SIZE) for k in keys):
            raise ValueError("certificate key table")
        store = cls()
        for row in value["certificates"]:
            cert_id, issuer_id, kind, digest, superseded_by, raw_events = row
            if not all(isinstance(t, str) for t in (cert_id, issuer_id, kind)):
                raise TypeError("certificate fields")
            if not _is_hex(digest, HASH_SIZE) or not (
                superseded_by is None or isinstance(superseded_by, str)
            ):
                raise TypeError("certificate fields")
            events = []
            for index, short_type, logged_at, key_ref in raw_events:
                if type(index) is not int or not 0 <= index < size:
                    raise ValueError("event index")
                if short_type not in _CERTIFICATE_EVENTS:
                    raise ValueError("event type")
                if type(key_ref) is not int or not 0 <= key_ref < len(keys):
                    raise ValueError("event key")
                entry.parse_time(logged_at)
                events.append(
                    trust.CertificateEvent(
                        index, f"certificate.{short_type}", logged_at, KeyId(keys[key_ref])
                    )
                )
            if not events or events[0].type not in ("certificate.issue", "certificate.amend"):
                raise ValueError("a certificate starts with its issue or amendment")
            super(CompactCertificates, store).add(
                trust.Certificate(
                    cert_id, issuer_id, kind, digest, events=events, superseded_by=superseded_by
                )
            )
        return store


def _compact(event: trust.CertificateEvent) -> trust.CertificateEvent:
    return trust.CertificateEvent(event.index, event.type, event.logged_at, event.key_id)


def _ref(table: dict[str, int], key_id: str) -> int:
    return table.setdefault(key_id, len(table))


def _is_hex(value: object, length: int) -> bool:
    if not isinstance(value, str):
        return False
    try:
        hex_decode(value, length, "hash")
    except MalformedError:
        return False
    return True


# --- the replayed state ----------------------------------------------------------------


@dataclass
class MonitorState:
    """What the monitor has verified of one log, and what continuing needs."""

    log_key: note.NoteVerifier
    checkpoint: SignedCheckpoint | None
    """The last verified checkpoint; None before the first one."""
    last_leaf: Hash
    """Leaf hash of the last verified entry (the next entry's ``prev``)."""
    trust: trust.TrustState
    certificates: CompactCertificates
    trust_entries: list[tuple[int, bytes]] = field(default_factory=list)
    """Leaf data of every non-certificate entry: replayed to rebuild :attr:`trust`."""
    recent: dict[bytes, int] = field(default_factory=dict)
    """Digest -> index of the statements logged within DUPLICATE_WINDOW of the newest."""
    recent_order: deque[tuple[datetime, bytes]] = field(default_factory=deque)
    links: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)
    """(role, certificate id) of every traced link (:data:`TRACED_ROLES`) of every
    certificate that has one: what a watched certificate's traceability walk reads."""
    at_risk: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """The watched certificates last reported at risk, and because of which."""
    risk_watch: tuple[str, ...] = ()
    """The parties :attr:`at_risk` was worked out for (sorted)."""

    @classmethod
    def empty(cls, log_key: note.NoteVerifier) -> MonitorState:
        store = CompactCertificates()
        state = trust.TrustState(log_key.public_key, store, remember_recent=False)
        return cls(log_key, None, GENESIS_PREV, state, store)

    @property
    def size(self) -> int:
        return 0 if self.checkpoint is None else self.checkpoint.checkpoint.size

    def to_json(self) -> dict[str, Any]:
        return {
            "format": STATE_FORMAT,
            "v": STATE_VERSION,
            "log_key": str(self.log_key),
            "checkpoint": None if self.checkpoint is None else self.checkpoint.note.decode(),
            "last_leaf_hash": self.last_leaf.hex(),
            "trust_entries": [[i, b64encode(data)] for i, data in self.trust_entries],
            "recent": [
                [self.recent[d], entry.format_time(t), d.hex()] for t, d in self.recent_order
            ],
            **self.certificates.to_json(),
            "links": [[c, [list(link) for link in links]] for c, links in self.links.items()],
            "at_risk": [[c, list(because)] for c, because in self.at_risk.items()],
            "risk_watch": list(self.risk_watch),
        }

    @classmethod
    def from_json(cls, value: Any, log_key: note.NoteVerifier) -> MonitorState:
        """Rebuild a saved state, replaying its trust entries; raises
        :class:`StateFileError` for anything that is not a state of this log."""
        if not isinstance(value, dict) or value.get("format") != STATE_FORMAT:
            raise StateFileError("it is not a qiverify monitor state file")
        if value.get("v") == 1:
            raise StateFileError(
                "version 1, from before the monitor followed traceability links: "
                "start a new state file (the log is checked again from its first entry)"
            )
        if value.get("v") != STATE_VERSION:
            raise StateFileError(f"unsupported state file version {value.get('v')!r}")
        if value.get("log_key") != str(log_key):
            raise StateFileError(
                f"it is the state of another log (key {str(value.get('log_key'))[:120]!r}), "
                f"not of {log_key.name}"
            )
        state = cls.empty(log_key)
        try:
            if value["checkpoint"] is not None:
                try:
                    state.checkpoint = checkpoint.verify(
                        value["checkpoint"].encode("utf-8"), log_key
                    )
                except QILedgerError as exc:
                    raise StateFileError(f"its checkpoint: {exc.message}") from None
            size = state.size
            state.last_leaf = Hash(hex_decode(value["last_leaf_hash"], HASH_SIZE, "leaf hash"))
            if size == 0 and state.last_leaf != GENESIS_PREV:
                raise ValueError("an empty log has no last leaf")
            state.certificates = CompactCertificates.from_json(value, size)
            state.trust = trust.TrustState(
                log_key.public_key, state.certificates, remember_recent=False
            )
            for index, data_b64 in value["trust_entries"]:
                if type(index) is not int or not state.trust.size <= index < size:
                    raise ValueError("trust entry index")
                data = b64decode(data_b64, "trust entry")
                state.trust.skip_to(index)
                try:
                    trust.replay_one(state.trust, index, data, trust_append_checks=False)
                except QILedgerError as exc:
                    raise StateFileError(f"its trust entry {index}: {exc.message}") from None
                state.trust_entries.append((index, data))
            state.trust.skip_to(size)
            for cert_id, links in value["links"]:
                pairs = tuple((role, to) for role, to in links)
                if not isinstance(cert_id, str) or not pairs:
                    raise ValueError("links")
                if not all(isinstance(r, str) and isinstance(t, str) for r, t in pairs):
                    raise TypeError("links")
                state.links[cert_id] = pairs
            for cert_id, because in value["at_risk"]:
                if not isinstance(cert_id, str) or not all(isinstance(b, str) for b in because):
                    raise ValueError("at_risk")
                state.at_risk[cert_id] = tuple(because)
            if not all(isinstance(p, str) for p in value["risk_watch"]):
                raise ValueError("risk_watch")
            state.risk_watch = tuple(value["risk_watch"])
            for index, logged_at, digest_hex in value["recent"]:
                if type(index) is not int or not 0 <= index < size:
                    raise ValueError("recent index")
                digest = hex_decode(digest_hex, HASH_SIZE, "statement digest")
                state.recent[digest] = index
                state.recent_order.append((entry.parse_time(logged_at), digest))
        except StateFileError:
            raise
        except (QILedgerError, ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
            raise StateFileError(f"it is corrupt ({exc})") from None
        return state

    # --- the duplicate window (what TrustState keeps with remember_recent=True) --------

    def remember(self, digest: bytes, index: int, logged_at: datetime) -> None:
        horizon = logged_at - trust.DUPLICATE_WINDOW
        while self.recent_order and self.recent_order[0][0] < horizon:
            self.recent.pop(self.recent_order.popleft()[1], None)
        self.recent[digest] = index
        self.recent_order.append((logged_at, digest))


# --- what a step found ----------------------------------------------------------------


@dataclass(frozen=True)
class Observed:
    """A verified new entry about a watched party."""

    index: int
    logged_at: str
    statement: Statement
    signed_by: KeyId

    def about(self) -> list[str]:
        return [self.statement.fields[f] for f in _ABOUT_FIELDS if f in self.statement.fields]

    def to_json(self) -> dict[str, Any]:
        return {
            "event": "statement",
            "index": self.index,
            "logged_at": self.logged_at,
            "type": self.statement.type,
            "about": self.about(),
            "signed_by": self.signed_by,
            "statement": self.statement.fields,
        }

    def to_text(self) -> str:
        fields = self.statement.fields
        named = [
            f"{name}={_one_word(fields[key])}"
            for key, name in (
                ("issuer_id", "issuer"),
                ("body_id", "body"),
                ("certificate_id", "certificate"),
                ("supersedes", "supersedes"),
                ("accreditation_number", "accreditation"),
                ("key_id", "key"),
                ("reason", "reason"),
            )
            if key in fields
        ]
        return (
            f"WATCH {self.index} {self.logged_at} {self.statement.type} "
            + " ".join(named)
            + f" signed-by={self.signed_by}"
        )


def _one_word(value: object) -> str:
    """A field for a one-line, space-separated output: JSON-quoted if it has spaces."""
    text = str(value)
    if text and text.isprintable() and not any(c.isspace() for c in text):
        return text
    return json.dumps(text, ensure_ascii=False)


def statement_about(stmt: Statement, parties: Iterable[str]) -> bool:
    """Whether ``stmt`` names one of ``parties`` as its issuer or body."""
    return names_party(stmt.fields, parties)


def names_party(fields: Mapping[str, Any], parties: Iterable[str]) -> bool:
    """Whether statement ``fields`` name one of ``parties`` as issuer or body."""
    wanted = set(parties)
    return any(isinstance(v := fields.get(f), str) and v in wanted for f in _ABOUT_FIELDS)


@dataclass(frozen=True)
class RiskChange:
    """A watched party's certificate became (or stopped being) traceability at
    risk: something it is traced to, at any depth, is suspended, withdrawn or
    invalid (:func:`verifier.traceability.trace`, as the registry's status read)."""

    certificate_id: str
    issuer_id: str
    because: tuple[str, ...]
    """Empty: no longer at risk."""
    size: int
    """The verified tree size it was worked out at."""

    def to_json(self) -> dict[str, Any]:
        return {
            "event": "at_risk" if self.because else "no_longer_at_risk",
            "certificate_id": self.certificate_id,
            "issuer_id": self.issuer_id,
            "at_risk_because": list(self.because),
            "size": self.size,
        }

    def to_text(self) -> str:
        if not self.because:
            return (
                f"NO-LONGER-AT-RISK {_one_word(self.certificate_id)} "
                f"issuer={_one_word(self.issuer_id)} size={self.size}"
            )
        return (
            f"AT-RISK {_one_word(self.certificate_id)} issuer={_one_word(self.issuer_id)} "
            f"because={','.join(_one_word(b) for b in self.because)} size={self.size}"
        )


def risk_changes(state: MonitorState, watch: Iterable[str], at: datetime) -> list[RiskChange]:
    """Which certificates of the watched parties became, or stopped being, at risk
    since :attr:`MonitorState.at_risk` was last worked out (for a party newly
    watched: those at risk now), in id order; ``state`` is updated. Statuses are
    those at ``at``, from the replayed state."""
    parties = tuple(sorted(set(watch)))
    store = state.trust.certificates

    def certificates(ids: Sequence[str]) -> dict[str, trust.Certificate]:
        return {i: c for i in ids if (c := store.get(i)) is not None}

    def links_of(ids: Sequence[str]) -> dict[str, list[Link]]:
        return {
            i: [Link(role, to, "", "") for role, to in state.links[i]]
            for i in ids
            if i in state.links
        }

    def status(cert: trust.Certificate) -> str:
        return trust.status_of(state.trust, cert, at).status

    now: dict[str, tuple[str, ...]] = {}
    for cert_id in sorted(state.links):
        cert = store.get(cert_id)
        if cert is None or cert.issuer_id not in parties:
            continue
        because = traceability.trace(cert, certificates, links_of, status).at_risk
        if because:
            now[cert_id] = because
    before = {c: b for c, b in state.at_risk.items() if _issuer(store, c) in parties}
    changes = [
        RiskChange(c, _issuer(store, c), now.get(c, ()), state.size)
        for c in sorted(set(before) | set(now))
        if before.get(c, ()) != now.get(c, ())
    ]
    state.at_risk, state.risk_watch = now, parties
    return changes


def _issuer(store: trust.CertificateStore, certificate_id: str) -> str:
    cert = store.get(certificate_id)
    return "" if cert is None else cert.issuer_id


@dataclass(frozen=True)
class Step:
    """A checkpoint verified: the tree grew from ``old_size`` to ``new_size``."""

    old_size: int
    new_size: int
    root: Hash


# --- one step --------------------------------------------------------------------------


def verify_checkpoint(data: bytes, key: note.NoteVerifier) -> SignedCheckpoint:
    """The registry's checkpoint, its log signature verified. A note that parses but
    whose signature fails is an :class:`Alarm`; one that does not parse is garbage
    (MalformedError: could not check)."""
    note.parse(data)  # garbage is MalformedError, before any claim about signatures
    try:
        return checkpoint.verify(data, key)
    except VerificationError as exc:
        raise Alarm(
            "checkpoint_signature",
            f"the checkpoint is not signed by the log key {key.name}: {exc.message}",
            {"checkpoint": data.decode("utf-8", "replace")},
        ) from None


def check(
    state: MonitorState,
    new: SignedCheckpoint,
    fetch: Fetch,
    prove: Callable[[int, int], Sequence[bytes]],
    watch: Iterable[str] = (),
    observe: Callable[[Observed], None] | None = None,
) -> Step:
    """Check ``new`` against ``state`` and advance ``state`` to it.

    ``fetch(path)`` reads tiles; ``prove(first, second)`` is the registry's
    consistency proof, asked only when ``new`` is older than the state. ``observe``
    is called with every verified new entry about a party in ``watch``. On any
    exception ``state`` may be part-way: discard it (reload the saved one).
    """
    cp = new.checkpoint
    old = state.checkpoint
    if old is None or cp.size > old.checkpoint.size:
        return advance(state, new, fetch, watch, observe)
    old_cp = old.checkpoint
    if cp.size == old_cp.size:
        if cp.root != old_cp.root:
            raise Alarm(
                "fork",
                f"two different signed trees of size {cp.size}: the log forked",
                _checkpoints(old, new),
            )
        return Step(cp.size, cp.size, cp.root)
    hashes = [Hash(h) for h in prove(cp.size, old_cp.size)]
    try:
        merkle.verify_consistency(cp.size, old_cp.size, hashes, cp.root, old_cp.root)
    except InconsistencyError as exc:
        raise Alarm(
            "fork",
            f"the registry went back to size {cp.size}, and that tree is no prefix of the "
            f"size {old_cp.size} verified before: {exc.message}",
            {**_checkpoints(old, new), "consistency_proof": _proof_json(hashes, "registry")},
        ) from None
    raise StaleCheckpointError(
        f"the registry serves size {cp.size}, older than size {old_cp.size} verified "
        "before (a prefix of it: a stale or rolled-back view); nothing new to check"
    )


def advance(
    state: MonitorState,
    new: SignedCheckpoint,
    fetch: Fetch,
    watch: Iterable[str] = (),
    observe: Callable[[Observed], None] | None = None,
) -> Step:
    """Verify the tree of ``new`` from its tiles and every entry after ``state.size``;
    ``state`` then holds ``new``. See the module docstring for what is checked."""
    old_size, cp = state.size, new.checkpoint
    if cp.size < old_size:
        raise ProofError(f"size {cp.size} is behind size {old_size}: check() handles that")
    parties = frozenset(watch)
    tree = tiles.TiledTree(cp.size, fetch)
    root = tree.root()
    if root != cp.root:
        raise Alarm(
            "tile_mismatch",
            f"the tiles do not make the signed tree of size {cp.size}: they lead to root "
            f"{b64encode(root)}, the checkpoint says {b64encode(cp.root)}",
            {
                "checkpoint": new.note.decode(),
                "root_from_tiles": b64encode(root),
                "tiles": _root_tiles(tree, cp.size),
            },
        )
    if state.checkpoint is not None and old_size > 0:
        proof = tree.consistency_proof(old_size)
        old = state.checkpoint
        try:
            merkle.verify_consistency(old_size, cp.size, proof, old.checkpoint.root, cp.root)
        except InconsistencyError as exc:
            raise Alarm(
                "fork",
                f"the signed tree of size {cp.size} does not extend the one of size "
                f"{old_size} verified before: {exc.message}",
                {
                    **_checkpoints(old, new),
                    "root_at_old_size_from_tiles": b64encode(tree.root(old_size)),
                    "consistency_proof": _proof_json(proof, "computed from the tiles"),
                },
            ) from None
    _check_upper_tiles(tree, old_size, cp.size, new)
    prev = state.last_leaf
    for bundle in range(old_size // tiles.TILE_WIDTH, -(-cp.size // tiles.TILE_WIDTH)):
        leaf_hashes, tile_path = _leaf_tile(tree, fetch, bundle, new)
        start = bundle * tiles.TILE_WIDTH
        for offset, data in enumerate(tree.unverified_entries(bundle)):
            index = start + offset
            got = merkle.leaf_hash(data)
            if got != leaf_hashes[offset]:
                raise Alarm(
                    "entry_mismatch",
                    f"entry {index} of the entry bundle does not hash to its leaf hash in "
                    f"{tile_path}",
                    {
                        "checkpoint": new.note.decode(),
                        "index": index,
                        "leaf_data": b64encode(data),
                        "leaf_hash_of_data": got.hex(),
                        "leaf_hash_in_tile": leaf_hashes[offset].hex(),
                        "tile": tile_path,
                        "bundle": tiles.Bundle(bundle, min(cp.size - start, tiles.TILE_WIDTH)).path,
                    },
                )
            if index < old_size:
                continue  # verified before; re-hashed above because the bundle is new
            observed = _replay_entry(state, tree, new, index, data, prev, parties)
            if observed is not None and observe is not None:
                observe(observed)
            prev = got
    state.checkpoint, state.last_leaf = new, prev
    return Step(old_size, cp.size, cp.root)


# The last two members of a log entry in canonical form (RFC 8785 sorts the keys:
# envelope, logged_at, prev, v): once replay_one has checked the form, an entry's
# logged_at and prev are read here, not by parsing every entry a second time.
_ENTRY_TAIL = re.compile(rb'"logged_at":"([^"]{24})","prev":"([0-9a-f]{64})","v":1\}\Z')
_ENTRY_TAIL_SIZE = 140


def _replay_entry(
    state: MonitorState,
    tree: tiles.TiledTree,
    new: SignedCheckpoint,
    index: int,
    data: bytes,
    prev: Hash,
    parties: frozenset[str],
) -> Observed | None:
    """Replay entry ``index`` into ``state``; on an Alarm ``state`` is part-way."""

    def invalid(kind: str, why: str) -> Alarm:
        return Alarm(kind, f"entry {index}: {why}", _entry_evidence(tree, new, index, data))

    try:
        stmt = trust.replay_one(state.trust, index, data, trust_append_checks=False)
    except QILedgerError as exc:
        why = exc.message.removeprefix(f"entry {index}: ")  # replay_one names the entry
        raise invalid("entry_invalid", f"refused by the trust rules ({exc.code}): {why}") from None
    tail = _ENTRY_TAIL.search(data, max(0, len(data) - _ENTRY_TAIL_SIZE))
    if tail is None:  # cannot happen: replay_one checked the canonical form
        raise invalid("entry_invalid", "not a canonical log entry")
    logged_at, prev_hex = tail.group(1).decode("ascii"), tail.group(2).decode("ascii")
    if prev_hex != prev.hex():
        raise invalid(
            "prev_broken",
            f"its prev {prev_hex} is not the leaf hash {prev.hex()} of the entry before it",
        )
    logged = state.recent.get(stmt.digest)
    if logged is not None:
        raise invalid(
            "entry_invalid",
            f"refused by the trust rules (statement_duplicate): the same statement is "
            f"logged at index {logged}",
        )
    state.remember(stmt.digest, index, entry.parse_time(logged_at))
    if not stmt.type.startswith("certificate."):
        state.trust_entries.append((index, data))
    elif stmt.type in ("certificate.issue", "certificate.amend"):
        traced = tuple(
            (link.role, link.certificate_id)
            for link in statement_references(stmt.fields).links
            if link.role in TRACED_ROLES
        )
        if traced:
            state.links[stmt.fields["certificate_id"]] = traced
    if not statement_about(stmt, parties):
        return None
    signer = entry.parse(data, form_checked=True).envelope.signatures[0].keyid
    return Observed(index, logged_at, stmt, signer)


def _fold(hashes: Sequence[bytes]) -> Hash:
    """Hash of the perfect subtree over one full tile's 256 hashes."""
    return merkle.root_from_leaf_hashes(hashes)


def _check_upper_tiles(
    tree: tiles.TiledTree, old_size: int, size: int, new: SignedCheckpoint
) -> None:
    """Every full tile above level 0 holding a new hash folds to its parent hash."""
    level = 1
    while tiles.hashes_at(size, level + 1) > 0:
        first = tiles.hashes_at(old_size, level) // tiles.TILE_WIDTH
        for index in range(first, tiles.hashes_at(size, level) // tiles.TILE_WIDTH):
            tile = tiles.Tile(level, index)
            _check_fold(tree, tile, tree.tile(tile), new)
        level += 1


def _check_fold(
    tree: tiles.TiledTree, tile: tiles.Tile, hashes: Sequence[bytes], new: SignedCheckpoint
) -> None:
    folded = _fold(hashes)
    parent = tree.node(tile.tree_level + tiles.TILE_HEIGHT, tile.index)
    if folded != parent:
        size = tree.size
        holder = tiles.tile_holding(size, tile.level + 1, tile.index)
        raise Alarm(
            "tile_mismatch",
            f"tile {tile.path} does not hash to its parent hash in {holder.path}",
            {
                "checkpoint": new.note.decode(),
                "tile": tile.path,
                "tile_hashes": [b64encode(h) for h in hashes],
                "tile_hash": b64encode(folded),
                "parent_tile": holder.path,
                "parent_hash": b64encode(parent),
            },
        )


def _leaf_tile(
    tree: tiles.TiledTree, fetch: Fetch, index: int, new: SignedCheckpoint
) -> tuple[list[Hash], str]:
    """The leaf hashes of level-0 tile ``index``, bound to the root: a full tile is
    fetched (not kept: a catch-up holds one at a time) and folded to its parent; the
    partial one is the tree's own copy, which the root was computed from."""
    width = min(tree.size - index * tiles.TILE_WIDTH, tiles.TILE_WIDTH)
    tile = tiles.Tile(0, index, width)
    if width < tiles.TILE_WIDTH:
        return tree.tile(tile), tile.path
    hashes = tiles.parse_hash_tile(fetch(tile.path), width)
    _check_fold(tree, tile, hashes, new)
    return hashes, tile.path


# --- evidence ----------------------------------------------------------------------------


def _checkpoints(old: SignedCheckpoint, new: SignedCheckpoint) -> dict[str, Any]:
    return {"verified_checkpoint": old.note.decode(), "new_checkpoint": new.note.decode()}


def _proof_json(hashes: Sequence[bytes], source: str) -> dict[str, Any]:
    return {"source": source, "hashes": [b64encode(h) for h in hashes]}


def _root_tiles(tree: tiles.TiledTree, size: int) -> list[dict[str, Any]]:
    """The tiles whose hashes the root was computed from."""
    found: dict[str, list[Hash]] = {}
    for level, index in merkle.nodes_of_range(0, size):
        tile_level, below = divmod(level, tiles.TILE_HEIGHT)
        tile = tiles.tile_holding(size, tile_level, index << below)
        found.setdefault(tile.path, tree.tile(tile))
    return [{"tile": p, "hashes": [b64encode(h) for h in hs]} for p, hs in found.items()]


def _entry_evidence(
    tree: tiles.TiledTree, new: SignedCheckpoint, index: int, data: bytes
) -> dict[str, Any]:
    evidence: dict[str, Any] = {
        "checkpoint": new.note.decode(),
        "index": index,
        "leaf_data": b64encode(data),
        "leaf_hash": merkle.leaf_hash(data).hex(),
    }
    try:
        hashes = tuple(tree.inclusion_proof(index))
        # `qiverify inclusion` checks this file against the leaf data.
        evidence["tlog_proof"] = tlog_proof.TlogProof(index, hashes, new.note).to_bytes().decode()
    except QILedgerError as exc:  # the entry itself is the evidence; the proof helps
        evidence["tlog_proof_error"] = exc.message
    try:
        parsed = entry.parse(data, form_checked=True)
        evidence["statement"] = statement.parse(parsed.envelope.payload, form_checked=True).fields
    except QILedgerError:
        pass  # not even a statement: the leaf data says what it is
    return evidence


def evidence_document(alarm: Alarm, log_key: note.NoteVerifier, registry: str) -> dict[str, Any]:
    return {
        "format": EVIDENCE_FORMAT,
        "kind": alarm.kind,
        "detail": alarm.message,
        "log": log_key.name,
        "log_key": str(log_key),
        "registry": registry,
        **alarm.evidence,
    }


# --- the thin I/O layer ---------------------------------------------------------------------


def http_fetch(registry: Registry) -> Fetch:
    """``fetch(path)`` over the registry's static read API (C2SP tlog-tiles)."""

    def fetch(path: str) -> bytes:
        return registry.get("/" + path, limit=MAX_BUNDLE_RESPONSE)

    return fetch


def http_prove(registry: Registry) -> Callable[[int, int], list[Hash]]:
    """The registry's consistency proof ``first -> second`` (its hashes, unverified)."""

    def prove(first: int, second: int) -> list[Hash]:
        answer = registry.consistency(first, second)
        hashes = answer.get("hashes")
        if not isinstance(hashes, list) or not all(isinstance(h, str) for h in hashes):
            raise MalformedError("consistency proof: 'hashes' is not a list of base64 strings")
        return [Hash(b64decode(h, "consistency proof hash")) for h in hashes]

    return prove


def load_state(path: Path, log_key: note.NoteVerifier) -> MonitorState:
    """The saved state at ``path``, or an empty one if there is no file."""
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_STATE_FILE + 1)
    except FileNotFoundError:
        return MonitorState.empty(log_key)
    except OSError as exc:
        raise StateFileError(f"cannot read {path}: {exc.strerror}") from None
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        raise StateFileError(f"{path} is not JSON: not a monitor state file") from None
    try:
        return MonitorState.from_json(value, log_key)
    except StateFileError as exc:
        raise StateFileError(f"{path}: {exc.message}") from None


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so a crash leaves the old file or the new, never
    a mix: a temporary file in the same folder, fsync, rename, fsync the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, part = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(part, path)
    except BaseException:
        Path(part).unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def save_state(path: Path, state: MonitorState) -> None:
    try:
        write_atomically(path, json.dumps(state.to_json(), separators=(",", ":")).encode())
    except OSError as exc:
        raise StateFileError(f"cannot write {path}: {exc.strerror}") from None


def write_evidence(folder: Path, document: Mapping[str, Any], now: datetime) -> Path:
    """Write one evidence file into ``folder``; its path (never overwrites one)."""
    stamp = now.strftime("%Y%m%dT%H%M%S") + f"{now.microsecond // 1000:03d}Z"
    base = f"evidence-{stamp}-{document['kind']}"
    data = (json.dumps(document, indent=1, ensure_ascii=False) + "\n").encode()
    try:
        for attempt in range(1000):
            path = folder / (base + (f"-{attempt}" if attempt else "") + ".json")
            if not path.exists():
                write_atomically(path, data)
                return path
    except OSError as exc:
        raise StateFileError(f"cannot write evidence into {folder}: {exc.strerror}") from None
    raise StateFileError(f"cannot write evidence into {folder}: too many files named {base}")
