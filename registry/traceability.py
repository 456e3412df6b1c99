"""Traceability answers: what a certificate is traced to, what depends on it,
and which certificates name a standard — read from the derived link and
standard tables in one read transaction, decided by the pure rules of
:mod:`verifier.traceability` (so an auditor replaying the log reaches the same
answer), shared by the HTTP API and the CLI.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from itertools import islice
from typing import Any

from registry import long_lived
from registry.errors import NotFoundError
from registry.reports import checked_at
from registry.storage.certificate_index import CertificateIndex
from registry.storage.protocol import Transaction
from verifier import traceability as rules
from verifier import trust
from verifier.links import TRACED_ROLES, Link
from verifier.statement import parse_date
from verifier.trust import IAF_STATUS

EXTERNAL_WORDS = "External, unverified"
"""What an answer says of a link to a certificate this log does not hold."""
MAX_PAGE = 500
MAX_DEPENDENTS_PAGE = 100_000
"""A dependents page may be this large: a suspect-product investigation wants
the whole affected set, in one answer where it can (a later page re-walks two
columns of each certificate that came before it)."""
FIRST_PAGE_CHUNK = 500
WHOLE_SET_CHUNK = 5000
"""How many certificates of a level a dependents walk reads the links of at a
time (see :func:`dependents_view`)."""


class _Reads:
    """The lookups the rules ask for, inside one read transaction."""

    def __init__(
        self,
        index: CertificateIndex,
        tx: Transaction,
        state: trust.TrustState,
        last_logged_at: str | None = None,
    ) -> None:
        self.index, self.tx, self.state = index, tx, state
        self.last_logged_at = last_logged_at
        """When the newest entry of this snapshot was logged (None: an empty log)."""
        self.linking: dict[str, tuple[Any, ...]] = {}
        """Each linking certificate :meth:`links_to` met, by id: the row it came
        with (its status columns end it: issuer, recorded status, valid until)."""

    def certificates(self, ids: Sequence[str]) -> Mapping[str, trust.Certificate]:
        store = self.state.certificates
        prefetch = getattr(store, "prefetch", None)
        if prefetch is not None:
            prefetch(ids, ())
        found = {i: store.get(i) for i in ids}
        return {i: c for i, c in found.items() if c is not None}

    def links_of(self, ids: Sequence[str]) -> Mapping[str, Sequence[Link]]:
        return self.index.links_from(self.tx, ids)

    def links_to(self, ids: Sequence[str]) -> Sequence[tuple[Any, ...]]:
        rows = self.index.links_to(self.tx, ids, TRACED_ROLES)
        self.linking.update(zip([row[1] for row in rows], rows, strict=True))
        return rows


def _certificate(state: trust.TrustState, certificate_id: str) -> trust.Certificate:
    cert = state.certificate(certificate_id)
    if cert is None:
        raise NotFoundError(f"no certificate {certificate_id} in this log")
    return cert


def _words(status: str) -> str:
    return EXTERNAL_WORDS if status == rules.EXTERNAL else IAF_STATUS[status]


def trace_view(
    index: CertificateIndex,
    tx: Transaction,
    state: trust.TrustState,
    certificate_id: str,
    now: datetime,
) -> dict[str, Any]:
    """``GET /api/v1/traceability/{id}`` and ``qiledger trace``."""
    reads = _Reads(index, tx, state)
    found = rules.trace(
        _certificate(state, certificate_id),
        reads.certificates,
        reads.links_of,
        lambda cert: trust.status_of(state, cert, now).status,
    )
    return {
        "tree_size": state.size,
        "certificate_id": found.certificate_id,
        "status": IAF_STATUS[found.status],
        "traceability_at_risk": bool(found.at_risk),
        "at_risk_because": list(found.at_risk),
        "links": [
            {
                "from": t.from_id,
                "to": t.link.certificate_id,
                "role": t.link.role,
                "depth": t.depth,
                "registered": not t.external,
                "status": _words(t.status),
                "procedure": t.link.procedure,
                "digest": t.link.digest,
                "digest_check": t.digest,
            }
            for t in found.links
        ],
        "ends": list(found.roots),
        "cycles": [list(c) for c in found.cycles],
        "truncated": found.truncated,
        "checked_at": checked_at(now),
    }


def dependents_view(
    index: CertificateIndex,
    tx: Transaction,
    state: trust.TrustState,
    certificate_id: str,
    now: datetime,
    *,
    offset: int,
    limit: int,
    max_depth: int,
    last_logged_at: str | None,
) -> dict[str, Any]:
    """``GET /api/v1/dependents/{id}`` and ``qiledger impact``: a page of the
    certificates that trace to this one (transitively, level by level); the
    cursor is how many came before (a page reads about what it shows and those
    before it, so the first page is the quickest). ``last_logged_at``: when the
    newest entry of ``tx``'s snapshot was logged (statuses may depend on it)."""
    reads = _Reads(index, tx, state, last_logged_at)
    cert = _certificate(state, certificate_id)
    # The walk reads each link's digest check and its certificate's status
    # columns from the links index alone; a certificate is read whole only
    # where those columns do not decide its status.
    # The walk reads the links of this many certificates of a level at a time:
    # few for a first page (it stops early), many for a whole set (on
    # PostgreSQL a statement costs a round trip and a plan: at 500 a
    # million-certificate walk took a fifth longer).
    chunk = min(WHOLE_SET_CHUNK, max(FIRST_PAGE_CHUNK, offset + limit))
    walk = rules.dependents(cert, reads.links_to, max_depth=max_depth, chunk=chunk)
    # A whole set is a few hundred thousand short-lived objects, none in a cycle:
    # the cyclic collector would only walk them (about a tenth of the time).
    with long_lived.collector_paused():
        return _dependents_page(state, cert, walk, reads, now, offset, limit, max_depth)


def _dependents_page(
    state: trust.TrustState,
    cert: trust.Certificate,
    walk: Iterator[rules.Dependent],
    reads: _Reads,
    now: datetime,
    offset: int,
    limit: int,
    max_depth: int,
) -> dict[str, Any]:
    page = list(islice(walk, offset, offset + limit + 1))
    more = len(page) > limit
    page = page[:limit]
    statuses = _statuses(reads, [d.certificate_id for d in page], now)
    return {
        "tree_size": state.size,
        "certificate_id": cert.certificate_id,
        "status": IAF_STATUS[trust.status_of(state, cert, now).status],
        "max_depth": max_depth,
        "dependents": [
            {
                "certificate_id": dependent_id,
                "depth": depth,
                "via": via,
                "digest_check": digest,
                "status": IAF_STATUS[statuses[dependent_id]],
            }
            for dependent_id, depth, via, digest in page
        ],
        "next": str(offset + limit) if more else None,
        "checked_at": checked_at(now),
    }


def _statuses(reads: _Reads, certificate_ids: Sequence[str], now: datetime) -> dict[str, str]:
    """The status at ``now`` of each of these certificates: from its status
    columns (read with its link, where the walk met it) where
    :func:`verifier.trust.recorded_status_decides` says they decide (the common
    case: a whole dependents set may be tens of thousands), else from the
    certificate read whole; one not registered is left out."""
    state, last, linking = reads.state, reads.last_logged_at, reads.linking
    missing = [i for i in certificate_ids if i not in linking]
    other = reads.index.status_columns(reads.tx, missing) if missing else {}
    found: dict[str, str] = {}
    whole: list[str] = []
    decides: dict[str, bool] = {}  # by issuer
    # By (issuer, recorded status, valid until): a set holds few distinct ones.
    decided: dict[tuple[str, str, str | None], str | None] = {}
    for cert_id in certificate_ids:
        row = linking.get(cert_id)
        columns = other.get(cert_id) if row is None else row[4:7]
        if columns is None:
            continue  # not registered: nothing to show
        if columns in decided:
            status = decided[columns]
        else:
            issuer_id, recorded, until = columns
            if issuer_id not in decides:
                decides[issuer_id] = trust.recorded_status_decides(state, now, last, issuer_id)
            status = decided[columns] = (
                trust.status_from_recorded(recorded, parse_date(until) if until else None, now)
                if decides[issuer_id]
                else None
            )
        if status is None:
            whole.append(cert_id)
        else:
            found[cert_id] = status
    if whole:
        certs = reads.certificates(whole)
        found.update({i: trust.status_of(state, c, now).status for i, c in certs.items()})
    return found


def standard_view(
    index: CertificateIndex,
    tx: Transaction,
    state: trust.TrustState,
    reference: str,
    now: datetime,
    *,
    after_index: int,
    limit: int,
) -> dict[str, Any]:
    """``GET /api/v1/standards?ref=`` and ``qiledger standard``: the certificates
    naming a standard (case and spacing aside), in log order, with counts by
    recorded status (the events alone: no expiry)."""
    rows = index.standard_page(tx, reference, after_index=after_index, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    certs = _Reads(index, tx, state).certificates([cert_id for _, cert_id, _ in rows])
    return {
        "tree_size": state.size,
        "standard": reference,
        "counts_by_recorded_status": index.standard_counts(tx, reference),
        "certificates": [
            {
                "certificate_id": cert_id,
                "as_written": ref,
                "issuer_id": certs[cert_id].issuer_id,
                "kind": certs[cert_id].kind,
                "status": IAF_STATUS[trust.status_of(state, certs[cert_id], now).status],
            }
            for _, cert_id, ref in rows
            if cert_id in certs
        ],
        "next": str(rows[-1][0]) if more and rows else None,
        "checked_at": checked_at(now),
    }
