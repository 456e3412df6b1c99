"""DSSE envelopes (https://github.com/secure-systems-lab/dsse): PAE, parsing, signing, verifying.

``{"payloadType", "payload": base64, "signatures": [{"keyid", "sig": base64}]}``,
Ed25519 over PAE(payloadType, payload). ``keyid`` is the hex SHA-256 of the raw
public key, so a verifier finds the key without trying each one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from verifier import jcs
from verifier.encoding import b64decode, b64encode
from verifier.errors import (
    MalformedError,
    SignatureCountError,
    SignatureError,
    TooLargeError,
    UnknownKeyError,
)
from verifier.keys import KeyId, PublicKey, SigningKey

STATEMENT_PAYLOAD_TYPE = "application/vnd.qiledger.statement+json"
MAX_ENVELOPE_SIZE = 64 * 1024
MAX_SIGNATURES = 8
_ENVELOPE_FIELDS = frozenset({"payloadType", "payload", "signatures"})
_SIGNATURE_FIELDS = frozenset({"keyid", "sig"})


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding."""
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


@dataclass(frozen=True)
class Signature:
    keyid: KeyId
    sig: bytes


@dataclass(frozen=True)
class UnverifiedEnvelope:
    """A well-formed envelope whose signatures have not been checked."""

    payload_type: str
    payload: bytes
    signatures: tuple[Signature, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "payload": b64encode(self.payload),
            "payloadType": self.payload_type,
            "signatures": [{"keyid": s.keyid, "sig": b64encode(s.sig)} for s in self.signatures],
        }

    def canonical_bytes(self) -> bytes:
        """JCS bytes of :meth:`to_json`, spliced: base64 and hex need no escaping,
        so only ``payloadType`` goes through the JSON encoder (~4x faster; the
        tests check it against :func:`jcs.canonical_bytes`)."""
        signatures = ",".join(
            f'{{"keyid":"{s.keyid}","sig":"{b64encode(s.sig)}"}}' for s in self.signatures
        )
        return (
            f'{{"payload":"{b64encode(self.payload)}",'
            f'"payloadType":{jcs.canonical_bytes(self.payload_type).decode("utf-8")},'
            f'"signatures":[{signatures}]}}'
        ).encode()


@dataclass(frozen=True)
class VerifiedEnvelope:
    """An envelope with a signature verified by ``signed_by``."""

    envelope: UnverifiedEnvelope
    signed_by: PublicKey

    @property
    def payload(self) -> bytes:
        return self.envelope.payload


def from_json(value: object) -> UnverifiedEnvelope:
    """Check the shape of a parsed envelope (no signature check)."""
    if not isinstance(value, dict):
        raise MalformedError("envelope must be a JSON object")
    missing = _ENVELOPE_FIELDS - value.keys()
    if missing:
        raise MalformedError(f"envelope lacks {', '.join(sorted(missing))}")
    extra = value.keys() - _ENVELOPE_FIELDS
    if extra:
        raise MalformedError(f"envelope has unknown fields {', '.join(sorted(extra))}")
    payload_type = value["payloadType"]
    if not isinstance(payload_type, str):
        raise MalformedError("envelope payloadType must be a string")
    payload = b64decode(value["payload"], "envelope payload")
    raw_signatures = value["signatures"]
    if not isinstance(raw_signatures, list):
        raise MalformedError("envelope signatures must be a list")
    if not raw_signatures:
        raise SignatureError("envelope has no signature")
    if len(raw_signatures) > MAX_SIGNATURES:
        raise MalformedError(f"envelope has more than {MAX_SIGNATURES} signatures")
    signatures = []
    for entry in raw_signatures:
        if not isinstance(entry, dict) or entry.keys() != _SIGNATURE_FIELDS:
            raise MalformedError("each envelope signature must be {keyid, sig}")
        keyid = entry["keyid"]
        if (
            not isinstance(keyid, str)
            or len(keyid) != 64
            or not keyid.isascii()
            or keyid.strip("0123456789abcdef")
        ):
            raise MalformedError("signature keyid must be 64 lowercase hex digits")
        signatures.append(Signature(KeyId(keyid), b64decode(entry["sig"], "signature")))
    return UnverifiedEnvelope(payload_type, payload, tuple(signatures))


def only_signature(envelope: UnverifiedEnvelope) -> Signature:
    """The one signature a statement envelope carries (DESIGN.md item 8).

    DSSE allows several; a logged statement may not have more than one, or an
    unknown or duplicated extra signature would make the same statement a new
    envelope, and a new log entry.
    """
    if len(envelope.signatures) != 1:
        raise SignatureCountError(
            f"a statement envelope carries exactly one signature, not {len(envelope.signatures)}"
        )
    return envelope.signatures[0]


def parse(data: bytes) -> UnverifiedEnvelope:
    """Parse envelope JSON bytes (size-limited, strict JSON)."""
    if len(data) > MAX_ENVELOPE_SIZE:
        raise TooLargeError(f"envelope is {len(data)} bytes; the limit is {MAX_ENVELOPE_SIZE}")
    return from_json(jcs.parse_json(data))


@dataclass(frozen=True)
class PendingSignature:
    """A signature by a known key that must verify (checked by :meth:`check`)."""

    key: PublicKey
    signature: bytes
    message: bytes

    def check(self) -> None:
        self.key.verify(self.signature, self.message)


def pending_signatures(
    envelope: UnverifiedEnvelope,
    keys: Mapping[KeyId, PublicKey],
    payload_type: str = STATEMENT_PAYLOAD_TYPE,
) -> tuple[PendingSignature, ...]:
    """The signatures :func:`verify` checks: every one made by a key in ``keys``.

    Signatures by other keys are ignored; there must be at least one by a known
    key. Exposed so a caller can run the checks elsewhere (the registry runs
    them on a worker process) and then trust exactly the same set.
    """
    if envelope.payload_type != payload_type:
        raise MalformedError(f"payloadType {envelope.payload_type!r} is not {payload_type!r}")
    message = pae(envelope.payload_type, envelope.payload)
    pending = tuple(
        PendingSignature(keys[s.keyid], s.sig, message)
        for s in envelope.signatures
        if s.keyid in keys
    )
    if not pending:
        ids = ", ".join(s.keyid for s in envelope.signatures)
        raise UnknownKeyError(f"envelope is not signed by a known key (keyids: {ids})")
    return pending


def verify(
    envelope: UnverifiedEnvelope,
    keys: Mapping[KeyId, PublicKey],
    payload_type: str = STATEMENT_PAYLOAD_TYPE,
) -> VerifiedEnvelope:
    """Verify that a key from ``keys`` signed the envelope.

    Signatures by keys outside ``keys`` are ignored; a signature by a listed key
    that fails is an error, not skipped.
    """
    pending = pending_signatures(envelope, keys, payload_type)
    for signature in pending:
        signature.check()
    return VerifiedEnvelope(envelope, pending[0].key)


def sign(
    payload: bytes, key: SigningKey, payload_type: str = STATEMENT_PAYLOAD_TYPE
) -> UnverifiedEnvelope:
    """Make a single-signature envelope."""
    signature = key.sign(pae(payload_type, payload))
    return UnverifiedEnvelope(payload_type, payload, (Signature(key.public_key.key_id, signature),))
