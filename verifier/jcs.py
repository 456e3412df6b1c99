"""RFC 8785 JSON Canonicalization Scheme (JCS): encoder and strict parser.

Every hashed or signed JSON in QI Ledger is JCS bytes. The common case —
objects whose keys are ASCII and whose numbers are integers within I-JSON's
safe range — is encoded by the C-accelerated ``json`` encoder, which then
produces exactly the JCS bytes (sorting ASCII keys by code point equals sorting
by UTF-16 code units, and its string escaping matches ECMAScript's). Anything
else (floats, non-ASCII keys) falls back to the ``rfc8785`` reference package.
``tests/test_jcs.py`` checks both paths against ``rfc8785`` and the RFC's
examples; ``bench/ingest.py`` shows why the fast path exists (about 3.5x).
"""

from __future__ import annotations

import json
import re
from typing import Any

import rfc8785

from verifier.errors import MalformedError, NonCanonicalError

MAX_SAFE_INTEGER = 2**53 - 1

_FAST_ENCODER = json.JSONEncoder(
    ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False
)


def _fast_path_applies(value: object) -> bool:
    """True when the stdlib encoder's output is guaranteed to be JCS."""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is str or kind is bool or item is None:
            continue
        if kind is int:
            if -MAX_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER:  # type: ignore[operator]
                continue
            return False
        if kind is dict:
            for key, sub in item.items():  # type: ignore[attr-defined]
                if type(key) is not str or not key.isascii():
                    return False
                stack.append(sub)
            continue
        if kind is list:
            stack.extend(item)  # type: ignore[arg-type]
            continue
        return False
    return True


def canonical_bytes(value: object) -> bytes:
    """Return the RFC 8785 canonical UTF-8 bytes of a JSON value.

    Raises :class:`MalformedError` for values JCS cannot represent (NaN,
    integers beyond 2**53-1, lone surrogates, non-JSON types).
    """
    try:
        if _fast_path_applies(value):
            return _FAST_ENCODER.encode(value).encode("utf-8")
        return rfc8785.dumps(value)  # type: ignore[arg-type]
    except (rfc8785.CanonicalizationError, UnicodeEncodeError, ValueError, TypeError) as exc:
        raise MalformedError(f"value has no RFC 8785 canonical form: {exc}") from None
    except RecursionError:
        # parse_canonical re-encodes what it parsed, one stack frame deeper.
        raise MalformedError("JSON nested too deeply") from None


def _reject_constant(name: str) -> Any:
    raise MalformedError(f"JSON constant {name} is not allowed")


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise MalformedError(f"duplicate JSON object key {key!r}")
            seen.add(key)
    return result


_STRICT_DECODER = json.JSONDecoder(
    object_pairs_hook=_unique_object, parse_constant=_reject_constant
)
_CANONICAL_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _text(data: bytes) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedError(f"not UTF-8: {exc.reason} at byte {exc.start}") from None
    if text.startswith("\ufeff"):
        raise MalformedError("JSON must not start with a byte order mark")
    return text


def _decode(data: bytes, decoder: json.JSONDecoder) -> Any:
    """UTF-8 bytes to a JSON value; every failure is a MalformedError."""
    return _decode_text(_text(data), decoder)


def _decode_text(text: str, decoder: json.JSONDecoder) -> Any:
    try:
        return decoder.decode(text)
    except json.JSONDecodeError as exc:
        raise MalformedError(
            f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except ValueError:  # an integer beyond Python's int-parsing digit limit
        raise MalformedError("JSON number has too many digits") from None
    except RecursionError:
        raise MalformedError("JSON nested too deeply") from None


def parse_json(data: bytes) -> Any:
    """Parse strict JSON from UTF-8 bytes: no BOM, no NaN/Infinity, no duplicate keys."""
    return _decode(data, _STRICT_DECODER)


class _NotPlain(Exception):
    """The text holds a number the stdlib encoder may not write as JCS does."""


def _refuse_float(_text: str) -> Any:
    raise _NotPlain


def _safe_int(text: str) -> int:
    value = int(text)
    if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        raise _NotPlain
    return value


# Decodes only what the fast encoder writes as JCS (see _fast_path_applies): a float
# or an unsafe integer stops it, the decoder itself sees every number.
_PLAIN_DECODER = json.JSONDecoder(
    parse_constant=_reject_constant, parse_float=_refuse_float, parse_int=_safe_int
)
# Sorting keys by code point equals sorting by UTF-16 code units unless a key holds
# a character from U+E000 up; text without one has no such key.
_BEYOND_SURROGATES = re.compile("[\ue000-\U0010ffff]")


def parse_canonical(data: bytes) -> Any:
    """Parse JSON that must already be in RFC 8785 canonical form.

    Round-tripping catches every deviation at once: whitespace, key order,
    escapes, number forms and duplicate keys all change the bytes.
    """
    text = _text(data)
    # The common case without walking the value: numbers checked while decoding, key
    # order by one scan of the text, and the stdlib encoder's text compared.
    if text.isascii() or _BEYOND_SURROGATES.search(text) is None:
        try:
            value = _decode_text(text, _PLAIN_DECODER)
        except _NotPlain:
            pass
        else:
            if _FAST_ENCODER.encode(value) == text:
                return value
    # Anything else, failures included, as the definition says.
    value = _decode_text(text, _CANONICAL_DECODER)
    if canonical_bytes(value) != data:
        raise NonCanonicalError("JSON is not in RFC 8785 canonical form")
    return value
