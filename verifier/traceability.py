"""Traceability rules: what a certificate is traced to, and what depends on it.

Pure functions over lookups the caller provides, a level of the walk at a time
(so the registry reads each level in a few indexed queries, and an auditor's
replay answers from memory): ``certificates(ids)``, the registered certificates
among ``ids``; ``links_of(ids)``, their outgoing links (:class:`verifier.links.Link`,
as their statements record them); ``status(certificate)``, its derived status
(:func:`verifier.trust.status_of`'s, e.g. ``withdrawn``). The registry calls these
same functions, so it and an auditor's replay reach the same answer.

- A link names a certificate by id. One not registered here is kept and
  reported as *external, unverified* (never dropped); one registered has its
  status and, when the link carries a SHA-256, whether it equals the
  certificate's registered document digest (``match`` / ``mismatch``; any other
  procedure: ``unchecked``).
- The walk follows the links of :data:`verifier.links.TRACED_ROLES` (the
  instruments used) upward; certificates reached with no further links are the
  chain's roots. Cycles are found (strongly connected parts of what was reached)
  and reported, never followed twice.
- *Traceability at risk*: a certificate depends (transitively) on one whose
  status is in :data:`AT_RISK_STATUSES`. It is derived when read, never stored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from verifier import trust
from verifier.links import TRACED_ROLES, Link, checkable_sha256

AT_RISK_STATUSES = frozenset({trust.SUSPENDED, trust.WITHDRAWN, trust.INVALID})
"""Statuses of a dependency that put its dependents' traceability at risk
(``invalid``: registered with a key compromised by then)."""
EXTERNAL = "external"
"""A link's target not registered in this log (external, unverified)."""
MATCH, MISMATCH, UNCHECKED = "match", "mismatch", "unchecked"
MAX_DEPTH = 32
"""Deepest level a walk goes (a real chain has at most a handful of tiers)."""
MAX_NODES = 10_000
"""Most certificates one traceability walk reads before it stops (truncated)."""

Certificates = Callable[[Sequence[str]], Mapping[str, trust.Certificate]]


class Registered(Protocol):
    """What the dependents walk needs of a registered certificate: its id and its
    document's digest (a :class:`trust.Certificate` is one; a registry may read
    just these two columns)."""

    @property
    def certificate_id(self) -> str: ...

    @property
    def document_sha256(self) -> str: ...


LinksOf = Callable[[Sequence[str]], Mapping[str, Sequence[Link]]]
Status = Callable[[trust.Certificate], str]
LinkRow = Sequence[str]
"""A link as the dependents walk reads it, bare columns (no object per link: a
walk reads tens of thousands): its first four items are the linked-to id, the
linking certificate's id, the link's role and its :func:`link_digest_check`
against the linked-to certificate (a registry may add columns after them)."""
LinksTo = Callable[[Sequence[str]], Iterable[LinkRow]]
"""The links naming these ids (:data:`LinkRow`), each id's in the linking
certificates' log order, then the links' place in their statements."""


@dataclass(frozen=True)
class TracedLink:
    """One link met on a walk, with what the registry knows of its target."""

    from_id: str
    link: Link
    depth: int
    """1 for the start's own links, 2 for theirs, ..."""
    status: str
    """The target's derived status, or :data:`EXTERNAL`."""
    digest: str
    """:data:`MATCH`, :data:`MISMATCH`, :data:`UNCHECKED` or :data:`EXTERNAL`."""

    @property
    def external(self) -> bool:
        return self.status == EXTERNAL


@dataclass(frozen=True)
class Trace:
    """What a certificate is traced to."""

    certificate_id: str
    status: str
    links: tuple[TracedLink, ...]
    """Every link met, in walk order (level by level)."""
    roots: tuple[str, ...]
    """Registered certificates reached that have no links the walk follows:
    where the chain ends (sorted)."""
    cycles: tuple[tuple[str, ...], ...]
    """Each set of certificates that trace to one another (sorted ids)."""
    at_risk: tuple[str, ...]
    """The dependencies (transitive) whose status puts traceability at risk."""
    truncated: bool
    """The walk stopped at :data:`MAX_DEPTH` or :data:`MAX_NODES`."""


def digest_check(link: Link, target: Registered | None) -> str:
    """Whether the link's digest is the target's registered document digest."""
    return link_digest_check(
        link.procedure, link.digest, None if target is None else target.document_sha256
    )


def link_digest_check(procedure: str, digest: str, target_sha256: str | None) -> str:
    """:func:`digest_check` of a link read as bare columns, against the document
    digest its target was registered with (None: no such target here). It never
    changes once the target is registered (a certificate's document is fixed),
    so a registry may store it with the link."""
    if target_sha256 is None:
        return EXTERNAL
    sha256 = checkable_sha256(procedure, digest)
    if sha256 is None:
        return UNCHECKED
    return MATCH if sha256 == target_sha256 else MISMATCH


def trace(
    certificate: trust.Certificate,
    certificates: Certificates,
    links_of: LinksOf,
    status: Status,
    *,
    max_depth: int = MAX_DEPTH,
    max_nodes: int = MAX_NODES,
) -> Trace:
    """Walk upward from ``certificate`` through its traced links (see the module)."""
    start = certificate.certificate_id
    reached: dict[str, trust.Certificate] = {start: certificate}
    statuses: dict[str, str] = {start: status(certificate)}
    edges: dict[str, list[str]] = {}
    linked: set[str] = set()  # certificates with links the walk follows
    met: list[TracedLink] = []
    level = [start]
    unread: list[str] = []
    depth = 0
    while level:
        depth += 1
        links = links_of(level)
        wanted = [link.certificate_id for i in level for link in links.get(i, ())]
        found = certificates([i for i in dict.fromkeys(wanted) if i not in reached])
        following: list[str] = []
        for from_id in level:
            for link in links.get(from_id, ()):
                target = reached.get(link.certificate_id) or found.get(link.certificate_id)
                if target is not None and target.certificate_id not in statuses:
                    statuses[target.certificate_id] = status(target)
                met.append(
                    TracedLink(
                        from_id,
                        link,
                        depth,
                        EXTERNAL if target is None else statuses[target.certificate_id],
                        digest_check(link, target),
                    )
                )
                if link.role not in TRACED_ROLES:
                    continue
                linked.add(from_id)
                if target is None:
                    continue
                edges.setdefault(from_id, []).append(target.certificate_id)
                if target.certificate_id not in reached:
                    reached[target.certificate_id] = target
                    following.append(target.certificate_id)
        if following and (depth >= max_depth or len(reached) > max_nodes):
            unread = following  # their links were not read: they may link further
            break
        level = following
    ends = set(reached) - linked - set(unread) - {start}
    return Trace(
        start,
        statuses[start],
        tuple(met),
        tuple(sorted(ends)),
        _cycles(edges),
        tuple(sorted(i for i in reached if i != start and statuses[i] in AT_RISK_STATUSES)),
        bool(unread),
    )


def _cycles(edges: Mapping[str, Sequence[str]]) -> tuple[tuple[str, ...], ...]:
    """The strongly connected parts of the graph with more than one certificate
    or a certificate linking to itself (Tarjan's algorithm, iteratively)."""
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[tuple[str, ...]] = []
    nodes = sorted({*edges, *(t for targets in edges.values() for t in targets)})
    for root in nodes:
        if root in order:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(edges.get(root, ())))]
        order[root] = low[root] = len(order)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            advanced = False
            for successor in successors:
                if successor not in order:
                    order[successor] = low[successor] = len(order)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(edges.get(successor, ()))))
                    advanced = True
                    break
                if successor in on_stack:
                    low[node] = min(low[node], order[successor])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == order[node]:
                part: list[str] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    part.append(member)
                    if member == node:
                        break
                if len(part) > 1 or node in edges.get(node, ()):
                    found.append(tuple(sorted(part)))
    return tuple(sorted(found))


class Dependent(NamedTuple):
    """A certificate that depends on the walk's start, and how (a named tuple:
    a whole set may be tens of thousands)."""

    certificate_id: str
    depth: int
    """1: it links to the start itself; 2: to a certificate of depth 1; ..."""
    via: str
    """The certificate it links to (the start, or a dependent one level up)."""
    digest: str
    """Whether its link's digest matches ``via``'s document (see :func:`digest_check`)."""


def dependents(
    certificate: Registered,
    links_to: LinksTo,
    *,
    max_depth: int = MAX_DEPTH,
    chunk: int = 500,
) -> Iterator[Dependent]:
    """Every certificate that traces (transitively, through traced links) to
    ``certificate``, level by level, each once (at its least depth), lazily: a
    caller that stops after a page has read about a page's worth. Within a
    level, in the order of the certificates they link to, then log order (then
    the link's place in its statement); ``via`` the first such."""
    start = certificate.certificate_id
    seen = {start}
    level = [start]
    traced = TRACED_ROLES
    for depth in range(1, max_depth + 1):
        following: list[str] = []
        for offset in range(0, len(level), chunk):
            parents = level[offset : offset + chunk]
            by_parent: dict[str, list[LinkRow]] = {}
            for row in links_to(parents):
                if row[2] in traced:
                    by_parent.setdefault(row[0], []).append(row)
            for parent in parents:
                rows = by_parent.get(parent)
                if rows is None:
                    continue
                for row in rows:
                    child = row[1]
                    if child in seen:
                        continue
                    seen.add(child)
                    following.append(child)
                    yield Dependent(child, depth, parent, row[3])
        if not following:
            return
        level = following
