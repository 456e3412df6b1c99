"""Log entries: the leaf data that is hashed into the Merkle tree.

Leaf data = JCS bytes of ``{"v": 1, "prev": <hex leaf hash of entry n-1, or 64
zeros>, "logged_at": <RFC 3339 UTC, ms>, "envelope": <DSSE>}``.
``prev`` chains the raw entries so a linear scan checks order without the tree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from verifier import dsse, jcs
from verifier.encoding import hex_decode
from verifier.errors import MalformedError
from verifier.merkle import HASH_SIZE, Hash

ENTRY_VERSION = 1
GENESIS_PREV = Hash(bytes(HASH_SIZE))
# tlog-tiles entry bundles prefix each entry with a 16-bit length.
MAX_ENTRY_SIZE = 0xFFFF
_FIELDS = frozenset({"v", "prev", "logged_at", "envelope"})
_TIME_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")


def format_time(moment: datetime) -> str:
    """RFC 3339 UTC with milliseconds, e.g. ``2026-11-24T08:00:00.123Z``."""
    if moment.tzinfo is None:
        raise ValueError("logged_at needs an aware datetime")
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def parse_time(text: object) -> datetime:
    """Parse the exact form :func:`format_time` writes."""
    if not isinstance(text, str):
        raise MalformedError("logged_at must be RFC 3339 UTC with milliseconds")
    return _parse_time_text(text)


@lru_cache(maxsize=4096)
def _parse_time_text(text: str) -> datetime:
    # Cached: an entry's time is parsed where it is read, replayed and reported, and
    # a certificate's event times each time its status is asked (datetimes are
    # immutable; a failure is not cached).
    if not _TIME_RE.fullmatch(text):
        raise MalformedError("logged_at must be RFC 3339 UTC with milliseconds")
    try:
        return datetime.fromisoformat(text)  # the regex fixed the form
    except ValueError:
        raise MalformedError(f"logged_at {text!r} is not a real time") from None


@dataclass(frozen=True)
class LogEntry:
    """One parsed log entry. Its envelope is *not* verified by parsing."""

    prev: Hash
    logged_at: str
    envelope: dsse.UnverifiedEnvelope


def encode(prev: bytes, logged_at: str, envelope_json: dict[str, Any]) -> bytes:
    """Leaf data bytes for an entry; ``envelope_json`` must be a well-formed envelope."""
    data = jcs.canonical_bytes(
        {"envelope": envelope_json, "logged_at": logged_at, "prev": prev.hex(), "v": ENTRY_VERSION}
    )
    if len(data) > MAX_ENTRY_SIZE:
        raise MalformedError(
            f"log entry would be {len(data)} bytes; tlog-tiles allow {MAX_ENTRY_SIZE}"
        )
    return data


def encode_spliced(prev: bytes, logged_at: str, canonical_envelope: bytes) -> bytes:
    """:func:`encode` for an envelope already in canonical form, without re-encoding it.

    JCS of an object whose values are already canonical is their concatenation
    under sorted ASCII keys; ``logged_at`` and ``prev`` need no escaping. The
    ingest path uses this; tests check it equals :func:`encode` byte for byte.
    """
    if not _TIME_RE.fullmatch(logged_at):
        raise MalformedError("logged_at must be RFC 3339 UTC with milliseconds")
    data = b"".join(
        (
            b'{"envelope":',
            canonical_envelope,
            b',"logged_at":"',
            logged_at.encode("ascii"),
            b'","prev":"',
            prev.hex().encode("ascii"),
            b'","v":1}',
        )
    )
    if len(data) > MAX_ENTRY_SIZE:
        raise MalformedError(
            f"log entry would be {len(data)} bytes; tlog-tiles allow {MAX_ENTRY_SIZE}"
        )
    return data


def parse(data: bytes, *, form_checked: bool = False) -> LogEntry:
    """Parse leaf data strictly: canonical JCS, exact fields, well-formed envelope.

    ``form_checked=True`` skips only the canonical-form round trip, for data whose
    form was checked when it was appended (strict JSON and every field still are).
    """
    if len(data) > MAX_ENTRY_SIZE:
        raise MalformedError(f"log entry is larger than {MAX_ENTRY_SIZE} bytes")
    value = jcs.parse_json(data) if form_checked else jcs.parse_canonical(data)
    if not isinstance(value, dict) or value.keys() != _FIELDS:
        raise MalformedError("log entry must have exactly v, prev, logged_at and envelope")
    if type(value["v"]) is not int or value["v"] != ENTRY_VERSION:
        raise MalformedError(f"unsupported log entry version {value['v']!r}")
    prev = Hash(hex_decode(value["prev"], HASH_SIZE, "prev"))
    parse_time(value["logged_at"])
    envelope = dsse.from_json(value["envelope"])
    return LogEntry(prev, value["logged_at"], envelope)
