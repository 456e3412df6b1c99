"""A certificate's outgoing links: the certificates and standards it is traced to.

A DCC names the calibration certificate of each measuring instrument it used
(``measuringEquipment/certificate``, a ``dcc:hashType``: ``referral``, what it
is; ``referralID``, the certificate's id; ``procedure`` and ``value``, a digest
of it), the standards its methods follow (``dcc:norm``), and an earlier report
(``coreData/previousReport``, a ``hashType`` too). :func:`read_links` reads them
from the tree :func:`verifier.dcc.read_dcc_tree` parsed (no second parse);
:func:`statement_references` reads them back from a logged statement's
``links`` and ``standards`` fields (:mod:`verifier.statement` validates those).

Only what names a certificate or a standard is read: ids, digests, norm
references — never the instrument's name, the customer or the results.

A digest whose procedure is SHA-256 and whose value is 64 hex digits is kept as
lowercase hex (``sha256``: checkable against the referenced certificate's
registered document digest); any other is kept as given with its procedure, and
cannot be checked.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from verifier import jcs
from verifier.errors import MalformedError
from verifier.statement import (
    LINK_DIGEST_CHARS,
    LINK_PROCEDURE_CHARS,
    LINK_REFERENCE_CHARS,
    MAX_LINKS,
    MAX_STANDARDS,
    STANDARD_CHARS,
    is_sha256_procedure,
)

EQUIPMENT = "equipment"
"""A link to the calibration certificate of an instrument used: traceability."""
PREVIOUS_REPORT = "previous_report"
"""A link to an earlier report (for the record; not a dependency)."""
TRACED_ROLES = frozenset({EQUIPMENT})
"""The roles a traceability walk follows (what a certificate depends on)."""

_REFERRAL_CHARS = 200
_HEX64 = re.compile(r"[0-9A-Fa-f]{64}")
_EQUIPMENT_PATH = (
    "dcc:measurementResults/dcc:measurementResult/dcc:measuringEquipments/"
    "dcc:measuringEquipment/dcc:certificate"
)
_PREVIOUS_PATH = "dcc:administrativeData/dcc:coreData/dcc:previousReport"
_NORM_PARENTS = ("usedMethod", "statement")


def checkable_sha256(procedure: str, digest: str) -> str | None:
    """A link's digest if it can be checked (its procedure is SHA-256), else None:
    the one rule, for a :class:`Link` and for a link read as bare columns."""
    return digest if procedure == "SHA-256" else None


@dataclass(frozen=True, order=True)
class Link:
    """One outgoing link, as a statement records it."""

    role: str
    certificate_id: str
    """The referenced certificate's id as the document gives it (``referralID``):
    a registry id ``<issuer>/<number>`` names a registered certificate."""
    procedure: str
    """``SHA-256`` for a checkable digest; otherwise as the document gives it."""
    digest: str
    """Lowercase hex for SHA-256; otherwise as given."""

    @property
    def sha256(self) -> str | None:
        """The digest if it can be checked (SHA-256 in hex), else None."""
        return checkable_sha256(self.procedure, self.digest)

    def to_json(self) -> dict[str, str]:
        value = {"certificate_id": self.certificate_id, "role": self.role}
        if self.sha256 is not None:
            value["sha256"] = self.sha256
        else:
            value["procedure"], value["digest"] = self.procedure, self.digest
        return value

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Link:
        """A link from a statement's (already validated) ``links`` item."""
        sha256 = value.get("sha256")
        if sha256 is not None:
            return cls(value["role"], value["certificate_id"], "SHA-256", sha256)
        return cls(value["role"], value["certificate_id"], value["procedure"], value["digest"])


@dataclass(frozen=True)
class DocumentLinks:
    """What a document links to: certificates and standards, in canonical order."""

    links: tuple[Link, ...] = ()
    standards: tuple[str, ...] = ()
    referrals: Mapping[Link, str] | None = None
    """What each link's ``referral`` says (a DCC's text, clipped): read, never
    logged (it is free text)."""

    def links_json(self) -> tuple[dict[str, str], ...] | None:
        """The statement's ``links`` field (None: the field is left out)."""
        return canonical_links(self.links) or None

    def standards_json(self) -> tuple[str, ...] | None:
        return self.standards or None


def canonical_links(links: Iterable[Link]) -> tuple[dict[str, str], ...]:
    """Links as a statement holds them: unique, ordered by their canonical bytes."""
    unique = {jcs.canonical_bytes(link.to_json()): link for link in links}
    return tuple(unique[key].to_json() for key in sorted(unique))


def normalise_standard(text: str) -> str:
    """A standard's reference as recorded and looked up: white space collapsed."""
    return " ".join(text.split())


def standard_key(text: str) -> str:
    """How standard references are compared (case and spacing aside)."""
    return normalise_standard(text).casefold()


def _clip(text: str, limit: int) -> str:
    from verifier.dcc import clip

    return clip(text, limit)


def _clean(text: str | None) -> str:
    return " ".join((text or "").split())


def _child_text(element: Any, name: str, what: str, limit: int, ns: dict[str, str]) -> str:
    found = element.find(f"dcc:{name}", ns)
    text = _clean(found.text if found is not None else None)
    if not text:
        raise MalformedError(f"DCC {what} lacks {name}")
    if len(text) > limit:
        raise MalformedError(f"DCC {what} {name} is {len(text)} characters; the limit is {limit}")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise MalformedError(f"DCC {what} {name} contains control characters")
    return text


def _hash_link(element: Any, role: str, what: str, ns: dict[str, str]) -> tuple[Link, str]:
    """A ``dcc:hashType`` element as a link, and what its referral says."""
    reference = _child_text(element, "referralID", what, LINK_REFERENCE_CHARS, ns)
    procedure = _child_text(element, "procedure", what, LINK_PROCEDURE_CHARS, ns)
    value = _child_text(element, "value", what, LINK_DIGEST_CHARS, ns)
    compact = "".join(value.split())
    if is_sha256_procedure(procedure) and _HEX64.fullmatch(compact):
        link = Link(role, reference, "SHA-256", compact.lower())
    else:
        link = Link(role, reference, procedure, value)
    referral = element.find("dcc:referral/dcc:content", ns)
    return link, _clip(_clean(referral.text if referral is not None else None), _REFERRAL_CHARS)


def read_links(root: Any) -> DocumentLinks:
    """The links of a parsed DCC (the root element :func:`verifier.dcc.read_dcc_tree`
    gives): each measuring instrument's certificate, the previous report, and
    the standards its methods and statements name (``dcc:norm``). A DCC with
    more than :data:`verifier.statement.MAX_LINKS` links or
    :data:`verifier.statement.MAX_STANDARDS` standards, or with a field over its
    length limit, is refused (MalformedError)."""
    # verifier.dcc (and lxml) only now, when a DCC is read: the registry's tables
    # use Link without loading an XML library (read commands stay quick).
    from verifier.dcc import DCC_NS, clip

    ns = {"dcc": DCC_NS}
    found: dict[Link, str] = {}
    for role, path, what in (
        (EQUIPMENT, _EQUIPMENT_PATH, "measuringEquipment certificate"),
        (PREVIOUS_REPORT, _PREVIOUS_PATH, "previousReport"),
    ):
        for element in root.iterfind(path, ns):
            link, referral = _hash_link(element, role, what, ns)
            found.setdefault(link, referral)
            if len(found) > MAX_LINKS:
                raise MalformedError(
                    f"DCC links more than {MAX_LINKS} certificates (measuring equipment "
                    "and previous report); the log records at most that many"
                )
    standards: set[str] = set()
    parents = {f"{{{DCC_NS}}}{name}" for name in _NORM_PARENTS}
    for norm in root.iter(f"{{{DCC_NS}}}norm"):
        parent = norm.getparent()
        if parent is None or parent.tag not in parents:
            continue  # e.g. inside a comment's free content: not a norm of the DCC's
        text = normalise_standard(norm.text or "")
        if not text:
            continue
        if len(text) > STANDARD_CHARS:
            raise MalformedError(
                f"DCC norm {clip(text, 60)!r} is {len(text)} characters; "
                f"the limit is {STANDARD_CHARS}"
            )
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
            raise MalformedError("DCC norm contains control characters")
        standards.add(text)
        if len(standards) > MAX_STANDARDS:
            raise MalformedError(
                f"DCC names more than {MAX_STANDARDS} distinct norms; "
                "the log records at most that many"
            )
    ordered = tuple(Link.from_json(value) for value in canonical_links(found))
    return DocumentLinks(ordered, tuple(sorted(standards)), found)


def statement_references(fields: Mapping[str, Any]) -> DocumentLinks:
    """The links and standards a logged certificate.issue/amend statement's
    fields record (none for a statement without them: old statements)."""
    return DocumentLinks(
        tuple(Link.from_json(value) for value in fields.get("links", ())),
        tuple(fields.get("standards", ())),
    )
