"""A small read-only client of a QI Ledger registry's public API, for ``qiverify``.

Standard library only (``urllib.request``), so ``verifier/`` stays free of web
frameworks. Every answer is size-limited and read with a timeout; everything the
registry sends is *unverified* until a caller checks it against the log key, and
every way an answer can be wrong (not JSON, wrong shape, too large) becomes a
project error here, at the boundary.

Two errors say "could not check" rather than "not authentic":
:class:`NetworkError` (unreachable, timed out, a server error) — the caller
cannot tell anything about the evidence — while :class:`NotFoundError` (HTTP
404) is the registry's own answer that it holds no such thing.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from verifier.errors import MalformedError, QILedgerError, TooLargeError

DEFAULT_TIMEOUT = 20.0
MAX_RESPONSE = 16 << 20
"""Larger than any JSON answer of the public API (one entry is at most 64 KiB)."""
MAX_BUNDLE_RESPONSE = 256 * (2 + 0xFFFF)
"""A full entry bundle of the largest entries (uint16 length prefix each)."""


class NetworkError(QILedgerError):
    """The registry could not be asked: unreachable, timed out, or a server error."""

    code = "network"


class NotFoundError(QILedgerError):
    """The registry answered 404: it holds no such certificate, entry or issuer."""

    code = "not_found"


class RegistryRefusedError(QILedgerError):
    """The registry answered a 4xx other than 404 (it refused the question)."""

    code = "registry_refused"


@dataclass(frozen=True)
class Registry:
    """The public API of one registry at ``base_url`` (scheme://host[:port][/prefix])."""

    base_url: str
    timeout: float = DEFAULT_TIMEOUT
    max_response: int = MAX_RESPONSE

    def __post_init__(self) -> None:
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise MalformedError(f"a registry URL is http(s)://host[:port], not {self.base_url!r}")

    def url(self, path: str, query: Mapping[str, str | int] | None = None) -> str:
        text = self.base_url.rstrip("/") + path
        return text + ("?" + urlencode(dict(query)) if query else "")

    def get(
        self,
        path: str,
        query: Mapping[str, str | int] | None = None,
        *,
        limit: int | None = None,
    ) -> bytes:
        """The body of ``GET path``: raises NetworkError, NotFoundError or
        RegistryRefusedError, TooLargeError above ``limit`` bytes."""
        limit = self.max_response if limit is None else limit
        url = self.url(path, query)
        # http(s) only: __post_init__ refused every other scheme.
        request = urllib.request.Request(url, headers={"Accept": "application/json, */*"})  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310
                body: bytes = response.read(limit + 1)
        except urllib.error.HTTPError as exc:
            detail = _problem_detail(exc)
            if exc.code == 404:
                raise NotFoundError(f"{path}: {detail or 'not found'}") from None
            if 400 <= exc.code < 500:
                raise RegistryRefusedError(f"{path}: HTTP {exc.code} {detail}".rstrip()) from None
            raise NetworkError(f"{path}: the registry answered HTTP {exc.code}") from None
        except (TimeoutError, urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise NetworkError(f"cannot reach {self.base_url}: {reason}") from None
        except ValueError as exc:  # e.g. a malformed URL that urlsplit let through
            raise NetworkError(f"cannot ask {url}: {exc}") from None
        if len(body) > limit:
            raise TooLargeError(f"{path}: the answer is larger than {limit} bytes")
        return body

    def get_json(self, path: str, query: Mapping[str, str | int] | None = None) -> dict[str, Any]:
        body = self.get(path, query)
        try:
            value = json.loads(body)
        except (ValueError, RecursionError):
            raise MalformedError(f"{path}: the answer is not JSON") from None
        if not isinstance(value, dict):
            raise MalformedError(f"{path}: the answer is not a JSON object")
        return value

    # --- the routes qiverify reads ------------------------------------------------

    def checkpoint(self) -> bytes:
        return self.get("/api/v1/log/checkpoint")

    def entry(self, index: int, tree_size: int) -> dict[str, Any]:
        return self.get_json(f"/api/v1/log/entries/{index}", {"tree_size": tree_size})

    def consistency(self, first: int, second: int) -> dict[str, Any]:
        return self.get_json("/api/v1/log/proof/consistency", {"first": first, "second": second})

    def certificate(self, certificate_id: str) -> dict[str, Any]:
        # The id is the rest of the route's path ('/' included), every other byte escaped.
        return self.get_json(f"/api/v1/certificates/{quote(certificate_id, safe='/')}")

    def certificates_with_digest(self, sha256_hex: str) -> dict[str, Any]:
        return self.get_json("/api/v1/certificates", {"digest": f"sha256:{sha256_hex}"})

    def entry_bundle(self, path: str) -> bytes:
        return self.get("/" + path, limit=MAX_BUNDLE_RESPONSE)


def _problem_detail(exc: urllib.error.HTTPError) -> str:
    """The ``detail`` of a problem+json error answer, if it has one (best effort)."""
    try:
        value = json.loads(exc.read(64 << 10))
    except (ValueError, OSError, RecursionError):
        return ""
    detail = value.get("detail") if isinstance(value, dict) else None
    return detail[:300] if isinstance(detail, str) else ""


def field(value: Mapping[str, Any], name: str, kind: type, where: str) -> Any:
    """``value[name]`` if it is a ``kind`` (bool is never an int here), else MalformedError."""
    item = value.get(name)
    if not isinstance(item, kind) or (kind is int and isinstance(item, bool)):
        raise MalformedError(f"{where}: {name!r} is missing or not a {kind.__name__}")
    return item
