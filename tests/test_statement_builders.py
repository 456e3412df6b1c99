"""The typed statement builders (``verifier.statement.BodyAdd`` …): one per statement
type, each producing exactly the canonical payload the parser accepts, with the
parser as the one validator."""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.verifier_helpers import BODY_KEY, ISSUER_KEY, SIGNED_AT, sample_statements
from verifier import jcs, statement
from verifier.entry import format_time, parse_time
from verifier.errors import MalformedError
from verifier.keys import KeyId, PublicKey, SigningKey
from verifier.statement import BUILDERS, FIELDS, STATEMENT_TYPES, StatementBuilder

# --- valid typed values, as the parser defines them -----------------------------------

IDS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", fullmatch=True)
COUNTRIES = st.from_regex(r"[A-Z]{2}", fullmatch=True)
NUMBERS = st.from_regex(
    r"[^\s\x00-\x1f\x7f](?:[^\x00-\x1f\x7f]{0,126}[^\s\x00-\x1f\x7f])?", fullmatch=True
).filter(lambda s: not any(0xD800 <= ord(c) <= 0xDFFF for c in s))
KEYS = st.binary(min_size=32, max_size=32).map(lambda seed: SigningKey.from_seed(seed).public_key)
DIGESTS = st.binary(max_size=8).map(lambda b: hashlib.sha256(b).hexdigest())
DATES = st.dates(min_value=date(1000, 1, 1))
TIMES = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(9999, 12, 31), timezones=st.just(UTC)
)
JSON_OBJECTS = st.dictionaries(
    st.text(max_size=8),
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(max_size=8),
    max_size=4,
)


def texts(max_len: int) -> st.SearchStrategy[str]:
    chars = st.characters(blacklist_categories=("Cs", "Cc")) | st.sampled_from("\n\t")
    return st.text(chars, min_size=1, max_size=max_len).filter(lambda s: bool(s.strip()))


def optional(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | values


@st.composite
def grants(draw: st.DrawFn) -> statement.AccreditationGrant:
    kind = draw(st.sampled_from(sorted(statement.ISSUER_KINDS)))
    allowed = sorted(statement.CERTIFICATE_KINDS_BY_ISSUER[kind])
    order = draw(st.permutations(allowed))
    covers = order[: draw(st.integers(1, len(order)))]
    start, end = sorted(draw(st.lists(DATES, min_size=2, max_size=2)))
    return statement.AccreditationGrant(
        body_id=draw(IDS),
        issuer_id=draw(IDS),
        issuer_name=draw(texts(200)),
        issuer_kind=kind,
        public_keys=tuple(draw(st.lists(KEYS, min_size=1, max_size=8, unique_by=lambda k: k.raw))),
        accreditation_number=draw(texts(64)),
        standard=draw(texts(100)),
        scope=draw(texts(2000)),
        covers=tuple(covers),
        valid_from=start,
        valid_until=end,
    )


@st.composite
def documents(draw: st.DrawFn, builder: Any) -> Any:
    issuer = draw(IDS)
    supersedes = st.builds(lambda n: f"{issuer}/{n}", NUMBERS)
    return builder(
        issuer_id=issuer,
        certificate_id=f"{issuer}/{draw(NUMBERS)}",
        kind=draw(st.sampled_from(sorted(statement.CERTIFICATE_KINDS))),
        document_sha256=draw(DIGESTS),
        issued=draw(DATES),
        valid_until=draw(optional(DATES)),
        schema_version=draw(optional(texts(16))),
        schema_validated=draw(optional(st.booleans())),
        supersedes=draw(
            supersedes if builder is statement.CertificateAmend else optional(supersedes)
        ),
        fields=draw(optional(JSON_OBJECTS)),
    )


@st.composite
def certificate_events(draw: st.DrawFn, builder: type[statement.CertificateChange]) -> Any:
    issuer = draw(IDS)
    return builder(
        issuer_id=issuer, certificate_id=f"{issuer}/{draw(NUMBERS)}", reason=draw(texts(500))
    )


def accreditation_events(builder: type[statement.AccreditationChange]) -> Any:
    return st.builds(
        builder, body_id=IDS, issuer_id=IDS, accreditation_number=texts(64), reason=texts(500)
    )


STRATEGIES: dict[str, st.SearchStrategy[Any]] = {
    "trust.body.add": st.builds(
        statement.BodyAdd, body_id=IDS, name=texts(200), country=COUNTRIES, public_key=KEYS
    ),
    "trust.body.remove": st.builds(statement.BodyRemove, body_id=IDS, reason=texts(500)),
    "accreditation.grant": grants(),
    "accreditation.suspend": accreditation_events(statement.AccreditationSuspend),
    "accreditation.restore": accreditation_events(statement.AccreditationRestore),
    "accreditation.withdraw": accreditation_events(statement.AccreditationWithdraw),
    "issuer.key.add": st.builds(statement.IssuerKeyAdd, issuer_id=IDS, public_key=KEYS),
    "issuer.key.revoke": st.builds(
        statement.IssuerKeyRevoke,
        issuer_id=IDS,
        key_id=DIGESTS.map(KeyId),
        reason=texts(500),
        compromised_at=optional(TIMES),
    ),
    "certificate.issue": documents(statement.CertificateIssue),
    "certificate.amend": documents(statement.CertificateAmend),
    "certificate.suspend": certificate_events(statement.CertificateSuspend),
    "certificate.reinstate": certificate_events(statement.CertificateReinstate),
    "certificate.withdraw": certificate_events(statement.CertificateWithdraw),
}


def _same_value(parsed: Any, typed: Any) -> bool:
    """A parsed JSON field says what the typed attribute said."""
    if isinstance(typed, datetime):
        return statement.parse_instant(parsed) == typed.replace(
            microsecond=typed.microsecond // 1000 * 1000
        )
    if isinstance(typed, date):
        return statement.parse_date(parsed) == typed
    if isinstance(typed, PublicKey):
        return statement.parse_public_key(parsed) == typed
    if isinstance(typed, tuple):
        return len(parsed) == len(typed) and all(map(_same_value, parsed, typed))
    return bool(parsed == typed)


# --- every type has one builder, with the parser's fields -------------------------------


def test_every_statement_type_has_one_builder_and_a_strategy() -> None:
    assert set(BUILDERS) == STATEMENT_TYPES == set(STRATEGIES)
    assert all(kind == builder.TYPE for kind, builder in BUILDERS.items())


@pytest.mark.parametrize("kind", sorted(STATEMENT_TYPES))
def test_a_builder_has_exactly_the_parsers_fields(kind: str) -> None:
    """Required fields have no default, optional ones default to None (left out)."""
    attributes = {f.name: f for f in dataclasses.fields(BUILDERS[kind])}
    assert attributes.keys() == FIELDS[kind].keys()
    for name, (required, _) in FIELDS[kind].items():
        default = attributes[name].default
        assert (default is dataclasses.MISSING) if required else (default is None), name


def test_builders_are_frozen() -> None:
    built = statement.BodyRemove(body_id="CNAS", reason="replaced")
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.reason = "other"  # type: ignore[misc]


# --- builder -> canonical bytes -> parse ------------------------------------------------


@pytest.mark.parametrize("kind", sorted(STATEMENT_TYPES))
@given(data=st.data(), signed_at=TIMES)
def test_a_builders_payload_parses_to_the_same_fields(
    kind: str, data: st.DataObject, signed_at: datetime
) -> None:
    built: StatementBuilder = data.draw(STRATEGIES[kind])
    payload = built.encode(signed_at)
    assert payload == jcs.canonical_bytes(built.to_json(signed_at))
    parsed = statement.parse(payload)
    assert parsed.type == kind
    assert parsed.fields == built.to_json(signed_at)
    assert parsed["signed_at"] == format_time(signed_at)
    assert parsed.digest == hashlib.sha256(payload).digest()
    for f in dataclasses.fields(built):
        value = getattr(built, f.name)
        if value is None:
            assert f.name not in parsed.fields
        else:
            assert _same_value(parsed[f.name], value), f.name
    assert built.to_json() == {k: v for k, v in parsed.fields.items() if k != "signed_at"}


SAMPLE_SIGNED_AT = parse_time(SIGNED_AT)
DOCUMENT: dict[str, Any] = {
    "issuer_id": "LAB-1",
    "certificate_id": "LAB-1/DCC-000001",
    "kind": "dcc",
    "document_sha256": hashlib.sha256(b"document").hexdigest(),
    "issued": date(2026, 11, 24),
    "valid_until": date(2027, 11, 24),
    "schema_version": "3.3.0",
    "schema_validated": True,
    "fields": {"entity": "Example Co.", "scope": "temperature"},
}
ACCREDITATION_EVENT: dict[str, Any] = {
    "body_id": "CNAS",
    "issuer_id": "LAB-1",
    "accreditation_number": "CNAS L0001",
    "reason": "annual surveillance",
}
CERTIFICATE: dict[str, Any] = {"issuer_id": "LAB-1", "certificate_id": "LAB-1/DCC-000001"}
SAMPLE_BUILDERS: dict[str, StatementBuilder] = {
    "trust.body.add": statement.BodyAdd(
        body_id="CNAS",
        name="China National Accreditation Service",
        country="CN",
        public_key=BODY_KEY.public_key,
    ),
    "trust.body.remove": statement.BodyRemove(body_id="CNAS", reason="replaced"),
    "accreditation.grant": statement.AccreditationGrant(
        body_id="CNAS",
        issuer_id="LAB-1",
        issuer_name="Lab One",
        issuer_kind="calibration_laboratory",
        public_keys=(ISSUER_KEY.public_key,),
        accreditation_number="CNAS L0001",
        standard="ISO/IEC 17025:2017",
        scope="Temperature",
        covers=("dcc",),
        valid_from=date(2020, 1, 1),
        valid_until=date(2099, 12, 31),
    ),
    "accreditation.suspend": statement.AccreditationSuspend(**ACCREDITATION_EVENT),
    "accreditation.restore": statement.AccreditationRestore(**ACCREDITATION_EVENT),
    "accreditation.withdraw": statement.AccreditationWithdraw(**ACCREDITATION_EVENT),
    "issuer.key.add": statement.IssuerKeyAdd(issuer_id="LAB-1", public_key=ISSUER_KEY.public_key),
    "issuer.key.revoke": statement.IssuerKeyRevoke(
        issuer_id="LAB-1",
        key_id=ISSUER_KEY.public_key.key_id,
        reason="key compromised",
        compromised_at=datetime(2026, 11, 1, tzinfo=UTC),
    ),
    "certificate.issue": statement.CertificateIssue(**DOCUMENT),
    "certificate.amend": statement.CertificateAmend(**DOCUMENT, supersedes="LAB-1/DCC-000000"),
    "certificate.suspend": statement.CertificateSuspend(**CERTIFICATE, reason="under review"),
    "certificate.reinstate": statement.CertificateReinstate(**CERTIFICATE, reason="review passed"),
    "certificate.withdraw": statement.CertificateWithdraw(**CERTIFICATE, reason="issued in error"),
}


@pytest.mark.parametrize("kind", sorted(STATEMENT_TYPES))
def test_a_builder_writes_the_hand_written_sample_byte_for_byte(kind: str) -> None:
    """The samples the parser tests use are written by hand, independently of the
    builders; the one difference is the time's spelling (the builder writes the
    log's millisecond form)."""
    sample = sample_statements()[kind]
    if "compromised_at" in sample:
        sample["compromised_at"] = "2026-11-01T00:00:00.000Z"
    assert SAMPLE_BUILDERS[kind].encode(SAMPLE_SIGNED_AT) == jcs.canonical_bytes(sample)


# --- a builder refuses what the parser refuses ---------------------------------------


@pytest.mark.parametrize("kind", sorted(STATEMENT_TYPES))
@given(data=st.data(), junk=st.text(max_size=80) | st.sampled_from(["", " ", "a/b", "x" * 3000]))
def test_a_builder_refuses_what_the_parser_refuses_with_its_message(
    kind: str, data: st.DataObject, junk: str
) -> None:
    """Any text field replaced by arbitrary text: the builder's verdict and message
    are the parser's on the same hand-written object."""
    built = SAMPLE_BUILDERS[kind]
    names = [f.name for f in dataclasses.fields(built) if isinstance(getattr(built, f.name), str)]
    name = data.draw(st.sampled_from(names))
    changed = dataclasses.replace(built, **{name: junk})
    hand_written = {**sample_statements()[kind], name: junk}
    hand_written.pop("compromised_at", None)
    if isinstance(changed, statement.IssuerKeyRevoke):
        changed = dataclasses.replace(changed, compromised_at=None)
    hand_written["signed_at"] = SIGNED_AT
    assert _verdict(lambda: changed.encode(SAMPLE_SIGNED_AT)) == _verdict(
        lambda: statement.encode(hand_written)
    )


def _verdict(make: Any) -> bytes | str:
    """The payload, or the refusal's message."""
    try:
        payload: bytes = make()
    except MalformedError as exc:
        return exc.message
    return payload


def test_a_grant_ending_before_it_starts_is_refused() -> None:
    grant = SAMPLE_BUILDERS["accreditation.grant"]
    assert isinstance(grant, statement.AccreditationGrant)
    backwards = dataclasses.replace(grant, valid_until=grant.valid_from - timedelta(days=1))
    with pytest.raises(MalformedError, match="valid_until is before valid_from"):
        backwards.encode(SAMPLE_SIGNED_AT)


def test_a_key_listed_twice_is_refused() -> None:
    grant = SAMPLE_BUILDERS["accreditation.grant"]
    assert isinstance(grant, statement.AccreditationGrant)
    twice = dataclasses.replace(grant, public_keys=grant.public_keys * 2)
    with pytest.raises(MalformedError, match="lists a key twice"):
        twice.encode(SAMPLE_SIGNED_AT)


@pytest.mark.parametrize(
    "build",
    [
        lambda: SAMPLE_BUILDERS["trust.body.remove"].encode(datetime(2026, 1, 1)),
        lambda: statement.IssuerKeyRevoke(
            issuer_id="LAB-1",
            key_id=KeyId("0" * 64),
            reason="r",
            compromised_at=datetime(2026, 1, 1),
        ).encode(SAMPLE_SIGNED_AT),
    ],
    ids=["signed_at", "compromised_at"],
)
def test_a_time_without_a_zone_is_refused(build: Any) -> None:
    with pytest.raises(MalformedError, match="aware"):
        build()


def test_a_builder_without_signed_at_is_what_a_signer_completes() -> None:
    built = SAMPLE_BUILDERS["certificate.suspend"]
    assert "signed_at" not in built.to_json()
    with pytest.raises(MalformedError, match="lacks signed_at"):
        statement.validate(built.to_json())


def test_the_status_change_builders_by_verb() -> None:
    changes = [*statement.ACCREDITATION_CHANGES.values(), *statement.CERTIFICATE_CHANGES.values()]
    assert {b.TYPE for b in changes} == {
        t for t in STATEMENT_TYPES if t.split(".")[0] in ("accreditation", "certificate")
    } - {"accreditation.grant", "certificate.issue", "certificate.amend"}
    for verb, builder in statement.ACCREDITATION_CHANGES.items():
        assert f"accreditation.{verb}" == builder.TYPE
    for verb, change in statement.CERTIFICATE_CHANGES.items():
        assert f"certificate.{verb}" == change.TYPE
