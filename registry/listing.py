"""Certificate listings: filters, the exact status, and cursor pages.

A listing shows certificates in log order, filtered by issuer, kind, issue date
and status, a page at a time; the cursor is the log index of the last
certificate a page looked at, so pages stay stable while submissions arrive
(a new certificate has a larger index and shows up on a later page).

A status is derived when read (:func:`verifier.trust.status_of`: expiry by
date, and an event signed with a key later declared compromised is void), so
the tables cannot be filtered by it exactly. The query narrows to a superset —
the recorded status, expiry against today, and every certificate of an issuer
with a compromised key (the only way a derived status can differ otherwise) —
and each page keeps exactly those whose derived status is the one asked for.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from registry.reports import certificate_view, checked_at
from registry.storage.certificate_index import Narrowing
from verifier import trust

STATUSES = {name.lower(): status for status, name in trust.IAF_STATUS.items()}
"""A status filter's accepted words (IAF CertSearch's, any case) -> status."""

SCAN_PER_PAGE = 10
"""A page looks at most this many certificates per one it may show: a filter
whose superset is mostly discarded answers short pages with a cursor instead
of scanning the whole table in one request."""

Fetch = Callable[[Narrowing, int, int], list[trust.Certificate]]
"""(narrowing, after index, how many) -> certificates, in log order, one snapshot."""


@dataclass(frozen=True)
class ListedPage:
    tree_size: int
    certificates: list[dict[str, Any]]
    """Views as the status read gives them (``reports.certificate_view``)."""
    next_after: int | None
    """The cursor for the next page (a log index), ``None`` at the end."""


@dataclass(frozen=True)
class CertificateListing:
    """Which certificates a listing shows (every condition given must hold)."""

    issuer_id: str | None = None
    status: str | None = None
    """One of :data:`verifier.trust.IAF_STATUS`'s statuses (active, expired, ...)."""
    kind: str | None = None
    issued_from: date | None = None
    issued_to: date | None = None

    def narrowing(self, state: trust.TrustState, today: date) -> Narrowing:
        """The query's superset of this listing on ``today`` (see the module)."""
        base = Narrowing(
            issuer_id=self.issuer_id,
            kind=self.kind,
            issued_from=self.issued_from,
            issued_to=self.issued_to,
        )
        if self.status is None:
            return base
        recorded: tuple[str, ...]
        expired_on = unexpired_on = None
        if self.status in (trust.ACTIVE, trust.EXPIRED):
            # A superseded certificate whose successor is void is active or expired.
            recorded = (trust.ACTIVE, trust.SUPERSEDED)
            if self.status == trust.ACTIVE:
                unexpired_on = today
            else:
                expired_on = today
        elif self.status == trust.INVALID:
            recorded = ()  # only a compromised key makes a listed certificate invalid
        else:
            recorded = (self.status,)
        return dataclasses.replace(
            base,
            recorded_statuses=recorded,
            expired_on=expired_on,
            unexpired_on=unexpired_on,
            or_issuers=_issuers_with_compromised_keys(state, self.issuer_id),
        )

    def page(
        self,
        state: trust.TrustState,
        fetch: Fetch,
        *,
        after_index: int,
        limit: int,
        now: datetime,
    ) -> ListedPage:
        """At most ``limit`` certificates after log index ``after_index``, read
        through ``fetch`` in the snapshot ``state`` was read in."""
        narrowed = self.narrowing(state, now.date())
        if narrowed.recorded_statuses == () and not narrowed.or_issuers:
            return ListedPage(state.size, [], None)
        shown: list[dict[str, Any]] = []
        budget = limit * SCAN_PER_PAGE
        after = after_index
        while True:
            wanted = min(limit - len(shown), budget)
            batch = fetch(narrowed, after, wanted)
            for cert in batch:
                after = cert.events[0].index
                view = certificate_view(state, cert, now)
                if self.status is None or STATUSES[view["status"].lower()] == self.status:
                    shown.append({**view, "checked_at": checked_at(now)})
            budget -= len(batch)
            if len(batch) < wanted:
                return ListedPage(state.size, shown, None)  # the table holds no more
            if len(shown) == limit or budget <= 0:
                return ListedPage(state.size, shown, after)


def _issuers_with_compromised_keys(
    state: trust.TrustState, issuer_id: str | None
) -> tuple[str, ...]:
    if issuer_id is None:
        issuers = list(state.issuers.values())
    else:
        issuers = [state.issuers[issuer_id]] if issuer_id in state.issuers else []
    return tuple(
        sorted(
            issuer.issuer_id
            for issuer in issuers
            if any(key.compromise_reports for key in issuer.keys.values())
        )
    )
