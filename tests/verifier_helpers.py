"""Shared builders for the verifier tests: keys, trees, statements and hostile inputs.

Imports only ``verifier`` (never ``registry``), so these tests exercise the checking
side alone.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from typing import Any

from hypothesis import strategies as st

from verifier import checkpoint, merkle
from verifier.errors import QILedgerError
from verifier.keys import SigningKey
from verifier.merkle import Hash, Node
from verifier.note import NoteVerifier

LOG_ORIGIN = "test.qiledger.example/log"


def key_from(label: str) -> SigningKey:
    """A deterministic Ed25519 test key (randomness is a parameter)."""
    return SigningKey.from_seed(hashlib.sha256(label.encode()).digest())


LOG_KEY = key_from("log key")
LOG_VERIFIER = NoteVerifier.for_key(LOG_ORIGIN, LOG_KEY.public_key)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def b64key(key: SigningKey) -> str:
    return b64(key.public_key.raw)


# --- trees ---------------------------------------------------------------------


def leaf_data(i: int) -> bytes:
    """Leaf data ``leaf <i>`` (the shared vectors use the same leaves)."""
    return f"leaf {i}".encode()


def all_nodes(leaf_hashes: Sequence[bytes]) -> dict[Node, Hash]:
    """Every complete node ``(level, index)`` of a tree, as a writer stores them."""
    nodes: dict[Node, Hash] = {(0, i): Hash(h) for i, h in enumerate(leaf_hashes)}
    level, width = 0, len(leaf_hashes)
    while width > 1:
        for i in range(width // 2):
            nodes[(level + 1, i)] = merkle.node_hash(
                nodes[(level, 2 * i)], nodes[(level, 2 * i + 1)]
            )
        level, width = level + 1, width // 2
    return nodes


@cache
def leaf_hashes(count: int) -> tuple[Hash, ...]:
    return tuple(merkle.leaf_hash(leaf_data(i)) for i in range(count))


@cache
def node_map(count: int) -> Mapping[Node, Hash]:
    """Stored node hashes of the tree of leaves ``leaf 0`` .. ``leaf <count-1>``."""
    return all_nodes(leaf_hashes(count))


def reader(nodes: Mapping[Node, bytes]) -> Callable[[Sequence[Node]], Mapping[Node, bytes]]:
    """A ``read_nodes`` callback for :func:`merkle.tree_root` over a node map."""

    def read(wanted: Sequence[Node]) -> Mapping[Node, bytes]:
        return {n: nodes[n] for n in wanted}

    return read


def signed_checkpoint(size: int, root: bytes, key: SigningKey = LOG_KEY) -> bytes:
    return checkpoint.sign(checkpoint.Checkpoint(LOG_ORIGIN, size, Hash(root)), key)


# --- statements ------------------------------------------------------------------

SIGNED_AT = "2026-11-24T08:00:00.123Z"
ISSUER_KEY = key_from("issuer key")
BODY_KEY = key_from("body key")


def sample_statements() -> dict[str, dict[str, Any]]:
    """One valid statement of every type (each exercises its optional fields)."""
    cert = {"issuer_id": "LAB-1", "certificate_id": "LAB-1/DCC-000001"}
    document = {
        **cert,
        "kind": "dcc",
        "document_sha256": hashlib.sha256(b"document").hexdigest(),
        "issued": "2026-11-24",
        "valid_until": "2027-11-24",
        "schema_version": "3.3.0",
        "schema_validated": True,
        "fields": {"entity": "Example Co.", "scope": "temperature"},
    }
    accreditation_event = {
        "body_id": "CNAS",
        "issuer_id": "LAB-1",
        "accreditation_number": "CNAS L0001",
        "reason": "annual surveillance",
    }
    by_type: dict[str, dict[str, Any]] = {
        "trust.body.add": {
            "body_id": "CNAS",
            "name": "China National Accreditation Service",
            "country": "CN",
            "public_key": b64key(BODY_KEY),
        },
        "trust.body.remove": {"body_id": "CNAS", "reason": "replaced"},
        "accreditation.grant": {
            "body_id": "CNAS",
            "issuer_id": "LAB-1",
            "issuer_name": "Lab One",
            "issuer_kind": "calibration_laboratory",
            "public_keys": [b64key(ISSUER_KEY)],
            "accreditation_number": "CNAS L0001",
            "standard": "ISO/IEC 17025:2017",
            "scope": "Temperature",
            "covers": ["dcc"],
            "valid_from": "2020-01-01",
            "valid_until": "2099-12-31",
        },
        "accreditation.suspend": dict(accreditation_event),
        "accreditation.restore": dict(accreditation_event),
        "accreditation.withdraw": dict(accreditation_event),
        "issuer.key.add": {"issuer_id": "LAB-1", "public_key": b64key(ISSUER_KEY)},
        "issuer.key.revoke": {
            "issuer_id": "LAB-1",
            "key_id": ISSUER_KEY.public_key.key_id,
            "reason": "key compromised",
            "compromised_at": "2026-11-01T00:00:00Z",
        },
        "certificate.issue": dict(document),
        "certificate.amend": {**document, "supersedes": "LAB-1/DCC-000000"},
        "certificate.suspend": {**cert, "reason": "under review"},
        "certificate.reinstate": {**cert, "reason": "review passed"},
        "certificate.withdraw": {**cert, "reason": "issued in error"},
    }
    return {
        kind: {"type": kind, "signed_at": SIGNED_AT, **fields} for kind, fields in by_type.items()
    }


# --- hostile input ---------------------------------------------------------------

FORBIDDEN_LEAKS = (
    ValueError,
    KeyError,
    IndexError,
    TypeError,
    AttributeError,
    UnicodeError,
    RecursionError,
    OverflowError,
)


def only_our_errors(parse: Callable[..., object], *args: object) -> object:
    """Call ``parse``; our own errors are fine, anything else fails the test.

    Returns the parsed value, or ``None`` when it refused the input.
    """
    try:
        return parse(*args)
    except QILedgerError:
        return None
    except FORBIDDEN_LEAKS as exc:  # binascii.Error is a ValueError
        raise AssertionError(
            f"{getattr(parse, '__qualname__', parse)} leaked {type(exc).__name__}: {exc}"
        ) from exc


_INTERESTING_BYTES = b'\n\r\t {}[]",:\\/+-=.0123456789aeEfnrtuAZ\x00\x7f\xc3\xe2\x80\x94\xff'


@st.composite
def mutated(draw: st.DrawFn, data: bytes, max_edits: int = 4) -> bytes:
    """``data`` with 1..max_edits bit flips, insertions, deletions or truncations."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, max_edits))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "replace", "truncate", "dup"]))
        pos = draw(st.integers(0, max(len(out) - 1, 0)))
        if op == "flip" and out:
            out[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            byte = draw(st.sampled_from(_INTERESTING_BYTES) | st.integers(0, 255))
            out.insert(pos, byte)
        elif op == "delete" and out:
            del out[pos]
        elif op == "replace" and out:
            out[pos] = draw(st.sampled_from(_INTERESTING_BYTES) | st.integers(0, 255))
        elif op == "truncate":
            del out[pos:]
        elif op == "dup" and out:
            end = draw(st.integers(pos, len(out)))
            out[pos:pos] = out[pos:end]
    return bytes(out)


any_text = st.text(st.characters(blacklist_categories=()), max_size=120)
"""Any Python text, lone surrogates included (argv and file names can carry them)."""

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53 - 1), 2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
"""Arbitrary JSON values (text without lone surrogates; finite floats)."""


@st.composite
def with_field_replaced(draw: st.DrawFn, value: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``value`` with one (possibly nested) field replaced, removed or added."""
    out = dict(value)
    choice = draw(st.sampled_from(["replace", "remove", "add", "nested"]))
    keys = sorted(out)
    if choice == "replace" or (choice == "remove" and not keys):
        out[draw(st.sampled_from(keys))] = draw(json_values)
    elif choice == "remove":
        del out[draw(st.sampled_from(keys))]
    elif choice == "add":
        out[draw(st.text(max_size=8))] = draw(json_values)
    else:
        nested = [k for k in keys if isinstance(out[k], dict | list) and out[k]]
        if not nested:
            out[draw(st.sampled_from(keys))] = draw(json_values)
        else:
            key = draw(st.sampled_from(nested))
            inner = out[key]
            if isinstance(inner, dict):
                out[key] = draw(with_field_replaced(inner))
            else:
                items = list(inner)
                pos = draw(st.integers(0, len(items) - 1))
                if isinstance(items[pos], dict) and draw(st.booleans()):
                    items[pos] = draw(with_field_replaced(items[pos]))
                else:
                    items[pos] = draw(json_values)
                out[key] = items
    return out


TYPE_CONFUSION: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    2**53 - 1,
    1.5,
    "",
    " ",
    "x",
    "0" * 64,
    "\ud800",
    "\x00",
    "\u0660",
    [],
    [None],
    [[]],
    [{}],
    ["dcc"],
    {},
    {"": None},
    {"a": []},
]
"""Values of every JSON type (and a few awkward strings) to put where a field belongs."""


def each_field_confused(value: dict[str, Any]) -> list[dict[str, Any]]:
    """``value`` with each field in turn set to each :data:`TYPE_CONFUSION` value."""
    return [{**value, name: bad} for name in value for bad in TYPE_CONFUSION]
