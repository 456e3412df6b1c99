"""The hottest public reads — a certificate's status, the look-up by document
digest and the scan pages — answered without FastAPI's per-request routing and parameter machinery.

Each of these requests costs the registry a few tens of microseconds of its own
work, and FastAPI spends about as much again walking its included routers and
solving the route's parameters (measured in-process: a status read took about
200 µs through the full stack and 65 µs in its handler). This layer sits inside
the other middleware, so every answer passes the same CORS, size and HEAD
handling, and calls the *same* route functions with the same arguments; it only
claims a request when that answer is certain to be the one FastAPI would give:

- the path matches exactly one GET route of the application — the hot one — so
  FastAPI's ordered matching could choose no other;
- the parameters pass the same checks FastAPI would apply (checked more strictly
  here, never more loosely: what fails is handed on, and FastAPI answers it);
- the function returned an answer. Anything raised (a 404, a storage error)
  hands the request to FastAPI, which runs the read again and answers as it
  always does: these reads change nothing, so running one twice is harmless.

``tests/test_hot_reads.py`` checks that the answers are identical, byte for
byte, with and without this layer.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from urllib.parse import parse_qsl

from fastapi import APIRouter, FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount
from starlette.types import ASGIApp, Receive, Scope, Send

from registry.api.routes import certificates, pages

Answer = Callable[[Request, str], Awaitable[Response]]
"""A route function called with the request and its one parameter."""

_CERTIFICATE_ID = re.compile(r"[^/]+/.+")
"""``certificates.CertificateId``'s pattern as its validator applies it: ``.``
matches no newline, and the whole value must match (a Python ``$`` would also
accept a trailing newline, so ``fullmatch`` is used)."""


def _valid_certificate_id(value: str) -> bool:
    return 3 <= len(value) <= 300 and _CERTIFICATE_ID.fullmatch(value) is not None


async def _status(request: Request, certificate_id: str) -> Response:
    return await certificates.get_certificate(request, certificate_id)


def _lang(request: Request) -> str | None:
    """The ``lang`` query parameter, as FastAPI reads it: named twice, the last
    (as QueryParams.get gives it); no query string, none (no QueryParams made)."""
    if not request.scope["query_string"]:
        return None
    return request.query_params.get("lang")


async def _mark_page(request: Request, token: str) -> Response:
    return await pages.mark_page(request, token, _lang(request))


async def _certificate_page(request: Request, certificate_id: str) -> Response:
    return await pages.certificate_page(request, certificate_id, _lang(request))


_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
"""The ``digest`` query parameter's pattern (``^sha256:[0-9a-f]{64}$``)."""


def _valid_digest(value: str) -> bool:
    return _DIGEST.fullmatch(value) is not None


async def _digest_lookup(request: Request, digest: str) -> Response:
    return await certificates.list_certificates(request, digest=digest)


@dataclass(frozen=True)
class HotRead:
    """One hot route: its path as declared, with one parameter at the end or,
    with ``query``, none and that one query parameter alone; the check the
    parameter must pass; and the function answering it."""

    path: str
    accepts: Callable[[str], bool]
    answer: Answer
    query: str | None = None

    @functools.cached_property
    def prefix(self) -> str:
        """The path up to its parameter (asked on every request: split once)."""
        return self.path.split("{", 1)[0]


def _any(_value: str) -> bool:
    return True


HOT_READS = (
    HotRead("/api/v1/certificates/{certificate_id:path}", _valid_certificate_id, _status),
    HotRead("/m/{token:path}", _any, _mark_page),
    HotRead("/M/{token:path}", _any, _mark_page),
    HotRead("/c/{certificate_id:path}", _any, _certificate_page),
    HotRead("/api/v1/certificates", _valid_digest, _digest_lookup, query="digest"),
)


def get_routes(app: FastAPI, routers: Iterable[APIRouter]) -> list[BaseRoute]:
    """Every route of the application that could answer a GET: its own and those
    of the routers it includes (their public ``routes``)."""
    found = []
    for route in (*app.routes, *(r for router in routers for r in router.routes)):
        methods = getattr(route, "methods", None)
        if isinstance(route, Mount) or (methods is not None and "GET" in methods):
            found.append(route)
    return found


@dataclass(frozen=True)
class _Claim:
    hot: HotRead
    regex: re.Pattern[str]
    """The route's own compiled path, as Starlette matches it (``.`` no newline)."""
    rivals: tuple[re.Pattern[str], ...]
    """The other GET routes a path under this prefix could also match."""


class HotReads:
    """ASGI middleware: answers the hot reads of ``HOT_READS`` directly, hands
    every other request (and any it cannot answer) to ``app``. ``routes`` is
    called once, when the middleware stack is built (after every router is
    included)."""

    def __init__(self, app: ASGIApp, routes: Callable[[], list[BaseRoute]]) -> None:
        self.app = app
        every = [r for r in routes() if getattr(r, "path_regex", None) is not None]
        self.claims: list[_Claim] = []
        for hot in HOT_READS:
            own = [r for r in every if getattr(r, "path", None) == hot.path]
            if len(own) != 1 or getattr(own[0], "dependencies", None):
                # No such route (or two), or one with dependencies (a token, a rate
                # limit) this layer would skip: FastAPI answers all of those.
                continue
            rivals = tuple(
                r.path_regex  # type: ignore[attr-defined]
                for r in every
                if r is not own[0] and _may_overlap(_fixed_prefix(r), hot.prefix)
            )
            self.claims.append(_Claim(hot, own[0].path_regex, rivals))  # type: ignore[attr-defined]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET" or scope.get("root_path"):
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        for claim in self.claims:
            if not path.startswith(claim.hot.prefix):
                continue
            matched = claim.regex.match(path)
            if matched is None:
                continue
            if any(r.match(path) for r in claim.rivals):
                break
            value = _parameter(claim.hot, matched, scope)
            if value is None or not claim.hot.accepts(value):
                break
            try:
                response = await claim.hot.answer(Request(scope, receive, send), value)
            except Exception:  # noqa: BLE001 — FastAPI answers it again, as it always does
                break
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _parameter(hot: HotRead, matched: re.Match[str], scope: Scope) -> str | None:
    """The path's parameter or, for a ``query`` read, the value of the query's
    only parameter if it has that name (anything else is FastAPI's to answer)."""
    if hot.query is None:
        (value,) = matched.groups()
        return value
    query: str = scope.get("query_string", b"").decode("latin-1")
    pairs = parse_qsl(query, keep_blank_values=True)
    if len(pairs) != 1 or pairs[0][0] != hot.query:
        return None
    return pairs[0][1]


def _fixed_prefix(route: BaseRoute) -> str:
    path: str = getattr(route, "path", "")
    return path.split("{", 1)[0]


def _may_overlap(fixed: str, prefix: str) -> bool:
    """Could a route whose path starts with ``fixed`` match a path starting with ``prefix``?"""
    return fixed.startswith(prefix) or prefix.startswith(fixed)


def install(app: FastAPI, routers: Iterable[APIRouter]) -> None:
    """Adds the layer; call it before adding the other middleware, so that they
    all wrap it."""
    included = tuple(routers)
    app.add_middleware(HotReads, routes=lambda: get_routes(app, included))
