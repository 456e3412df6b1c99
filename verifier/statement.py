"""Signed statements: the payload of every logged DSSE envelope.

A statement is a JSON object in RFC 8785 canonical form with a ``type`` from
DESIGN.md and the fields that type requires. Every statement carries
``signed_at`` (the signer's claimed time; the log's own ``logged_at`` is what
trust decisions use, ``signed_at`` only bounds replays and clock lies).

Only identifiers, dates, names, keys and digests are allowed: the log is public,
and unknown fields are refused so nothing confidential rides along.

Statements are written with one typed builder per type (:class:`BodyAdd`,
:class:`CertificateIssue`, ... in :data:`BUILDERS`), whose :meth:`~StatementBuilder.encode`
gives the canonical payload; :func:`parse` reads payloads and is the one validator.

    payload = CertificateSuspend(
        issuer_id="LAB-1", certificate_id="LAB-1/DCC-7", reason="under review"
    ).encode(signed_at=now)
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from datetime import date, datetime
from itertools import pairwise
from typing import Any, ClassVar

from verifier import jcs
from verifier.encoding import b64decode, b64encode
from verifier.entry import format_time
from verifier.errors import MalformedError
from verifier.keys import KeyId, PublicKey

ISSUER_KINDS = frozenset({"calibration_laboratory", "certification_body"})
DOCUMENT_TYPES = frozenset({"certificate.issue", "certificate.amend"})
"""Statements about a document: the registry logs them only together with it."""
CERTIFICATE_KINDS_BY_ISSUER = {
    "calibration_laboratory": frozenset({"dcc"}),
    "certification_body": frozenset({"management_system", "product", "person"}),
}
CERTIFICATE_KINDS = frozenset().union(*CERTIFICATE_KINDS_BY_ISSUER.values())

_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# "<issuer id>/<the issuer's own certificate number>": numbers are the issuer's
# (a DCC uniqueIdentifier may hold spaces or any script), minus control characters.
_CERT_ID_RE = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}/[^\s\x00-\x1f\x7f](?:[^\x00-\x1f\x7f]{0,126}[^\s\x00-\x1f\x7f])?"
)
_TIME_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z")
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_HEX64_RE = re.compile(r"[0-9a-f]{64}")
_COUNTRY_RE = re.compile(r"[A-Z]{2}")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f]")  # below U+0020 but tab and newline

Check = Callable[[Any], object]


def _fail(message: str) -> MalformedError:
    return MalformedError(message)


def _text(max_len: int) -> Check:
    def check(value: Any) -> None:
        if not isinstance(value, str) or not value.strip() or len(value) > max_len:
            raise _fail(f"must be non-empty text of at most {max_len} characters")
        if _CONTROL_RE.search(value):
            raise _fail("must not contain control characters")

    return check


def _pattern(regex: re.Pattern[str], what: str) -> Check:
    def check(value: Any) -> None:
        if not isinstance(value, str) or not regex.fullmatch(value):
            raise _fail(f"must be {what}")

    return check


def parse_instant(value: Any) -> datetime:
    """RFC 3339 UTC time ``YYYY-MM-DDTHH:MM:SS[.ffffff]Z``."""
    if not isinstance(value, str) or not _TIME_RE.fullmatch(value):
        raise _fail("must be an RFC 3339 UTC time like 2026-11-24T08:00:00Z")
    try:
        # The regex fixed the form; fromisoformat checks the calendar (and is ~100x
        # faster than strptime, which matters on the ingest path).
        return datetime.fromisoformat(value)
    except ValueError:
        raise _fail(f"{value!r} is not a real time") from None


def parse_date(value: Any) -> date:
    if not isinstance(value, str) or not _DATE_RE.fullmatch(value):
        raise _fail("must be a date like 2026-11-24")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise _fail(f"{value!r} is not a real date") from None


def parse_public_key(value: Any) -> PublicKey:
    if not isinstance(value, str):
        raise _fail("must be a base64 Ed25519 public key")
    return PublicKey.from_raw(b64decode(value, "public key"))


def _key_list(value: Any) -> None:
    if not isinstance(value, list) or not 1 <= len(value) <= 8:
        raise _fail("must be a list of 1 to 8 base64 Ed25519 public keys")
    keys = [parse_public_key(v) for v in value]
    if len({k.raw for k in keys}) != len(keys):
        raise _fail("lists a key twice")


def _one_of(options: frozenset[str]) -> Check:
    def check(value: Any) -> None:
        if not isinstance(value, str) or value not in options:
            raise _fail(f"must be one of {', '.join(sorted(options))}")

    return check


def _kinds(value: Any) -> None:
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(v, str) and v in CERTIFICATE_KINDS for v in value)
        or len(set(value)) != len(value)
    ):
        raise _fail(f"must list distinct certificate kinds from {sorted(CERTIFICATE_KINDS)}")


_ID = _pattern(_ID_RE, "an identifier of letters, digits, '.', '_' or '-' (max 64)")
_CERT_ID = _pattern(_CERT_ID_RE, "'<issuer id>/<certificate number>'")
_SHA256 = _pattern(_HEX64_RE, "a lowercase hex SHA-256 digest")
_REASON = _text(500)


def _bool(value: Any) -> None:
    if not isinstance(value, bool):
        raise _fail("must be true or false")


def _public_fields(value: Any) -> None:
    # Kind-specific public fields (e.g. IAF CertSearch's entity and scope) are
    # checked by the certificate modules; here only their shape and size.
    if not isinstance(value, dict) or len(jcs.canonical_bytes(value)) > 16_384:
        raise _fail("must be a JSON object of at most 16 KiB")


def _instant(value: Any) -> None:
    parse_instant(value)


def _date(value: Any) -> None:
    parse_date(value)


MAX_LINKS = 64
"""Links one certificate statement may record (a log entry holds at most 64 KiB)."""
MAX_STANDARDS = 32
"""Standards one certificate statement may name."""
LINK_REFERENCE_CHARS = 128
LINK_PROCEDURE_CHARS = 32
LINK_DIGEST_CHARS = 128
STANDARD_CHARS = 200
LINK_ROLES = frozenset({"equipment", "previous_report"})
_ANY_HEX64_RE = re.compile(r"[0-9A-Fa-f]{64}")


def is_sha256_procedure(procedure: str) -> bool:
    """Whether a DCC digest ``procedure`` names SHA-256 (``SHA256``, ``sha-256``...)."""
    return "".join(c for c in procedure.casefold() if c.isalnum()) == "sha256"


def _trimmed_text(value: Any, max_len: int) -> bool:
    return (
        isinstance(value, str)
        and 0 < len(value) <= max_len
        and " ".join(value.split()) == value
        and not any(ord(c) < 0x20 or ord(c) == 0x7F for c in value)
    )


def _link(value: Any) -> bytes:
    if not isinstance(value, dict) or value.keys() not in (
        {"certificate_id", "role", "sha256"},
        {"certificate_id", "role", "procedure", "digest"},
    ):
        raise _fail(
            "items must be objects of certificate_id, role and sha256 (or procedure and digest)"
        )
    reference = value["certificate_id"]
    if not _trimmed_text(reference, LINK_REFERENCE_CHARS):
        raise _fail(
            f"certificate_id must be text of 1 to {LINK_REFERENCE_CHARS} characters, "
            "white space collapsed"
        )
    if value["role"] not in LINK_ROLES:
        raise _fail(f"role must be one of {', '.join(sorted(LINK_ROLES))}")
    if "sha256" in value:
        _SHA256(value["sha256"])
    else:
        procedure, digest = value["procedure"], value["digest"]
        if not _trimmed_text(procedure, LINK_PROCEDURE_CHARS) or not _trimmed_text(
            digest, LINK_DIGEST_CHARS
        ):
            raise _fail(
                f"procedure and digest must be trimmed text of at most {LINK_PROCEDURE_CHARS} "
                f"and {LINK_DIGEST_CHARS} characters"
            )
        if is_sha256_procedure(procedure) and _ANY_HEX64_RE.fullmatch("".join(digest.split())):
            raise _fail("a SHA-256 digest in hex must be given as sha256 (lowercase hex)")
    return jcs.canonical_bytes(value)


def _links(value: Any) -> None:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_LINKS:
        raise _fail(f"must be a list of 1 to {MAX_LINKS} links (leave it out for none)")
    keys = [_link(v) for v in value]
    if any(a >= b for a, b in pairwise(keys)):
        raise _fail("must be unique and ordered by their canonical bytes")


def _standards(value: Any) -> None:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_STANDARDS:
        raise _fail(f"must be a list of 1 to {MAX_STANDARDS} standards (leave it out for none)")
    if not all(_trimmed_text(v, STANDARD_CHARS) for v in value):
        raise _fail(
            f"must hold standard references of 1 to {STANDARD_CHARS} characters, "
            "white space collapsed"
        )
    if any(a >= b for a, b in pairwise(value)):
        raise _fail("must be unique and sorted")


# type -> {field: (required, check)}; "type" and "signed_at" are common to all.
_CERT_COMMON = {"issuer_id": (True, _ID), "certificate_id": (True, _CERT_ID)}
_CERT_DOCUMENT = {
    **_CERT_COMMON,
    "kind": (True, _one_of(CERTIFICATE_KINDS)),
    "document_sha256": (True, _SHA256),
    "issued": (True, _date),
    "valid_until": (False, _date),
    "schema_version": (False, _text(16)),
    "schema_validated": (False, _bool),
    "supersedes": (False, _CERT_ID),
    "fields": (False, _public_fields),
    "links": (False, _links),
    "standards": (False, _standards),
}
_ACCREDITATION_EVENT = {
    "body_id": (True, _ID),
    "issuer_id": (True, _ID),
    "accreditation_number": (True, _text(64)),
    "reason": (True, _REASON),
}
FIELDS: dict[str, dict[str, tuple[bool, Check]]] = {
    "trust.body.add": {
        "body_id": (True, _ID),
        "name": (True, _text(200)),
        "country": (True, _pattern(_COUNTRY_RE, "an ISO 3166-1 alpha-2 code like CN")),
        "public_key": (True, parse_public_key),
    },
    "trust.body.remove": {"body_id": (True, _ID), "reason": (True, _REASON)},
    "accreditation.grant": {
        "body_id": (True, _ID),
        "issuer_id": (True, _ID),
        "issuer_name": (True, _text(200)),
        "issuer_kind": (True, _one_of(ISSUER_KINDS)),
        "public_keys": (True, _key_list),
        "accreditation_number": (True, _text(64)),
        "standard": (True, _text(100)),
        "scope": (True, _text(2000)),
        "covers": (True, _kinds),
        "valid_from": (True, _date),
        "valid_until": (True, _date),
    },
    "accreditation.suspend": _ACCREDITATION_EVENT,
    "accreditation.restore": _ACCREDITATION_EVENT,
    "accreditation.withdraw": _ACCREDITATION_EVENT,
    "issuer.key.add": {"issuer_id": (True, _ID), "public_key": (True, parse_public_key)},
    "issuer.key.revoke": {
        "issuer_id": (True, _ID),
        "key_id": (True, _SHA256),
        "reason": (True, _REASON),
        "compromised_at": (False, _instant),
    },
    "certificate.issue": _CERT_DOCUMENT,
    "certificate.amend": {**_CERT_DOCUMENT, "supersedes": (True, _CERT_ID)},
    "certificate.suspend": {**_CERT_COMMON, "reason": (True, _REASON)},
    "certificate.reinstate": {**_CERT_COMMON, "reason": (True, _REASON)},
    "certificate.withdraw": {**_CERT_COMMON, "reason": (True, _REASON)},
}
STATEMENT_TYPES = frozenset(FIELDS)
# Per type, every field's check in order (signed_at first) and the names allowed.
_CHECKS = {
    kind: (tuple({"signed_at": (True, _instant), **spec}.items()), frozenset(spec) | {"type"})
    for kind, spec in FIELDS.items()
}


@dataclass(frozen=True)
class Statement:
    """A parsed, well-formed statement. Parsing says nothing about who signed it."""

    type: str
    fields: dict[str, Any]
    digest: bytes
    """SHA-256 of the statement's canonical payload: its identity in the log
    (DESIGN.md item 8), whatever envelope carries it."""

    @property
    def signed_at(self) -> datetime:
        return parse_instant(self.fields["signed_at"])

    def __getitem__(self, name: str) -> Any:
        return self.fields[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self.fields.get(name, default)


def validate(value: Any) -> Statement:
    """Check a decoded statement object against its type's fields."""
    kind = _validated_type(value)
    return Statement(kind, value, hashlib.sha256(jcs.canonical_bytes(value)).digest())


def _validated_type(value: Any) -> str:
    if not isinstance(value, dict):
        raise MalformedError("statement must be a JSON object")
    kind = value.get("type")
    if not isinstance(kind, str):
        raise MalformedError("statement lacks a string 'type'")
    checks = _CHECKS.get(kind)
    if checks is None:
        raise MalformedError(f"unknown statement type {kind!r}")
    fields, allowed = checks
    unknown = value.keys() - allowed - {"signed_at"}
    if unknown:
        raise MalformedError(f"{kind} has unknown fields: {', '.join(sorted(unknown))}")
    for name, (required, check) in fields:
        if name not in value:
            if required:
                raise MalformedError(f"{kind} lacks {name}")
            continue
        try:
            check(value[name])
        except MalformedError as exc:
            raise MalformedError(f"{kind}.{name} {exc.message}") from None
    if kind.startswith("certificate.") and not value["certificate_id"].startswith(
        value["issuer_id"] + "/"
    ):
        raise MalformedError("certificate_id must start with '<issuer_id>/'")
    if kind == "accreditation.grant":
        if parse_date(value["valid_until"]) < parse_date(value["valid_from"]):
            raise MalformedError("accreditation.grant valid_until is before valid_from")
        allowed = CERTIFICATE_KINDS_BY_ISSUER[value["issuer_kind"]]
        if not set(value["covers"]) <= allowed:
            raise MalformedError(
                f"a {value['issuer_kind']} can only be accredited for {sorted(allowed)}"
            )
    return kind


def parse(payload: bytes, *, form_checked: bool = False) -> Statement:
    """Parse a statement payload: canonical JSON object, known type, valid fields
    (``form_checked``: as :func:`verifier.entry.parse`)."""
    value = jcs.parse_json(payload) if form_checked else jcs.parse_canonical(payload)
    return Statement(_validated_type(value), value, hashlib.sha256(payload).digest())


def encode(fields: dict[str, Any]) -> bytes:
    """Canonical payload bytes for a statement (checked as :func:`parse` would)."""
    validate(fields)
    return jcs.canonical_bytes(fields)


# --- typed constructors ---------------------------------------------------------------


def _instant_text(moment: datetime) -> str:
    """An aware time as the log writes times (milliseconds, ``Z``)."""
    if moment.tzinfo is None:
        raise MalformedError("a statement time must be an aware datetime")
    return format_time(moment)


def _json_value(value: Any) -> Any:
    # datetime before date: a datetime is a date.
    if isinstance(value, datetime):
        return _instant_text(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, PublicKey):
        return b64encode(value.raw)
    if isinstance(value, tuple):
        return [_json_value(v) for v in value]
    if isinstance(value, Mapping):
        return dict(value)
    return value


@dataclass(frozen=True, kw_only=True)
class StatementBuilder:
    """A statement of one type before it is signed: typed fields, one attribute per
    JSON field (``None``: an optional field left out). The parser stays the only
    validator: :meth:`encode` runs it, so a builder refuses exactly what
    :func:`parse` refuses, with the same message."""

    TYPE: ClassVar[str]

    def to_json(self, signed_at: datetime | None = None) -> dict[str, Any]:
        """The statement's JSON fields, not yet checked; with ``signed_at`` if given
        (:meth:`registry.ledger.Ledger.submit_statement` adds it itself)."""
        value: dict[str, Any] = {"type": self.TYPE}
        if signed_at is not None:
            value["signed_at"] = _instant_text(signed_at)
        for f in dataclass_fields(self):
            item = getattr(self, f.name)
            if item is not None:
                value[f.name] = _json_value(item)
        return value

    def encode(self, signed_at: datetime) -> bytes:
        """The canonical payload, checked as :func:`parse` checks it."""
        return encode(self.to_json(signed_at))


@dataclass(frozen=True, kw_only=True)
class BodyAdd(StatementBuilder):
    """The operator trusts an accreditation body (signed with the log key)."""

    TYPE: ClassVar[str] = "trust.body.add"
    body_id: str
    name: str
    country: str
    public_key: PublicKey


@dataclass(frozen=True, kw_only=True)
class BodyRemove(StatementBuilder):
    TYPE: ClassVar[str] = "trust.body.remove"
    body_id: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class AccreditationGrant(StatementBuilder):
    """A body accredits an issuer (signed with the body's key)."""

    TYPE: ClassVar[str] = "accreditation.grant"
    body_id: str
    issuer_id: str
    issuer_name: str
    issuer_kind: str
    public_keys: tuple[PublicKey, ...]
    accreditation_number: str
    standard: str
    scope: str
    covers: tuple[str, ...]
    valid_from: date
    valid_until: date


@dataclass(frozen=True, kw_only=True)
class AccreditationChange(StatementBuilder):
    """A body suspends, restores or withdraws an accreditation it granted."""

    body_id: str
    issuer_id: str
    accreditation_number: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class AccreditationSuspend(AccreditationChange):
    TYPE: ClassVar[str] = "accreditation.suspend"


@dataclass(frozen=True, kw_only=True)
class AccreditationRestore(AccreditationChange):
    TYPE: ClassVar[str] = "accreditation.restore"


@dataclass(frozen=True, kw_only=True)
class AccreditationWithdraw(AccreditationChange):
    TYPE: ClassVar[str] = "accreditation.withdraw"


@dataclass(frozen=True, kw_only=True)
class IssuerKeyAdd(StatementBuilder):
    TYPE: ClassVar[str] = "issuer.key.add"
    issuer_id: str
    public_key: PublicKey


@dataclass(frozen=True, kw_only=True)
class IssuerKeyRevoke(StatementBuilder):
    TYPE: ClassVar[str] = "issuer.key.revoke"
    issuer_id: str
    key_id: KeyId
    reason: str
    compromised_at: datetime | None = None


@dataclass(frozen=True, kw_only=True)
class CertificateDocument(StatementBuilder):
    """A certificate registered with its document (issue or amend)."""

    issuer_id: str
    certificate_id: str
    kind: str
    document_sha256: str
    issued: date
    valid_until: date | None = None
    schema_version: str | None = None
    schema_validated: bool | None = None
    fields: Mapping[str, Any] | None = None
    """Kind-specific public fields (a JSON object)."""
    links: tuple[Mapping[str, Any], ...] | None = None
    """Certificates it is traced to (:mod:`verifier.links`), in canonical order."""
    standards: tuple[str, ...] | None = None
    """Standards it names, sorted."""


@dataclass(frozen=True, kw_only=True)
class CertificateIssue(CertificateDocument):
    TYPE: ClassVar[str] = "certificate.issue"
    supersedes: str | None = None


@dataclass(frozen=True, kw_only=True)
class CertificateAmend(CertificateDocument):
    """A new document replacing the certificate ``supersedes`` names."""

    TYPE: ClassVar[str] = "certificate.amend"
    supersedes: str


@dataclass(frozen=True, kw_only=True)
class CertificateChange(StatementBuilder):
    """An issuer suspends, reinstates or withdraws one of its certificates."""

    issuer_id: str
    certificate_id: str
    reason: str


@dataclass(frozen=True, kw_only=True)
class CertificateSuspend(CertificateChange):
    TYPE: ClassVar[str] = "certificate.suspend"


@dataclass(frozen=True, kw_only=True)
class CertificateReinstate(CertificateChange):
    TYPE: ClassVar[str] = "certificate.reinstate"


@dataclass(frozen=True, kw_only=True)
class CertificateWithdraw(CertificateChange):
    TYPE: ClassVar[str] = "certificate.withdraw"


BUILDERS: dict[str, type[StatementBuilder]] = {
    b.TYPE: b
    for b in (
        BodyAdd,
        BodyRemove,
        AccreditationGrant,
        AccreditationSuspend,
        AccreditationRestore,
        AccreditationWithdraw,
        IssuerKeyAdd,
        IssuerKeyRevoke,
        CertificateIssue,
        CertificateAmend,
        CertificateSuspend,
        CertificateReinstate,
        CertificateWithdraw,
    )
}
"""The builder of each statement type (every type in :data:`FIELDS` has one)."""

ACCREDITATION_CHANGES: dict[str, type[AccreditationChange]] = {
    "suspend": AccreditationSuspend,
    "restore": AccreditationRestore,
    "withdraw": AccreditationWithdraw,
}
CERTIFICATE_CHANGES: dict[str, type[CertificateChange]] = {
    "suspend": CertificateSuspend,
    "reinstate": CertificateReinstate,
    "withdraw": CertificateWithdraw,
}
"""The status-change builders by their verb (as the CLI names the action)."""
