"""The hot-read layer (registry/api/hot_reads.py) answers exactly as FastAPI does.

The same ledger is served twice, with and without the layer, on one fixed clock;
every request — status reads, scan pages and certificate pages, valid and
hostile, every method, with and without a language — must get byte-identical
answers (status, headers, body) from both. A separate check makes sure the layer
really answers the hot reads itself (else the comparison would prove nothing)
and hands on what it must not answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.types import Message, Receive, Scope, Send

from registry.api import hot_reads
from registry.api.app import ROUTERS, create_app
from tests.test_pages import (
    EXPIRING,
    LOG_KEY,
    SUPERSEDED,
    SUSPENDED,
    VALID,
    WITHDRAWN,
    PageRegistry,
    build_registry,
)

IDS = (VALID, SUPERSEDED, SUSPENDED, WITHDRAWN, EXPIRING)
PREFIXES = ("/api/v1/certificates/", "/m/", "/M/", "/c/")


@dataclass(frozen=True)
class Answer:
    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes


def scope_for(
    method: str, path: str, query: str = "", headers: tuple[tuple[bytes, bytes], ...] = ()
) -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": quote(path, safe="/").encode("ascii"),
        "query_string": query.encode("latin-1"),
        "root_path": "",
        "headers": [(b"host", b"registry.test:8080"), *headers],
        "server": ("registry.test", 8080),
        "client": ("127.0.0.1", 50000),
    }


async def _call(app: Any, scope: Scope) -> Answer:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return Answer(start["status"], tuple(start.get("headers", ())), body)


def call(app: Any, scope: Scope, behind: FastAPI | None = None) -> Answer:
    """``app``'s answer; ``behind``: the application a bare layer stands in (the
    routes find the registry through the scope's application, as Starlette sets it)."""
    return asyncio.run(_call(app, {**scope, **({"app": behind} if behind else {})}))


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PageRegistry]:
    built = build_registry(tmp_path_factory.mktemp("hot") / "data", log_key=LOG_KEY)
    frozen = built.clock()
    built.clock.now = frozen  # one instant for both apps: "checked at" is in the answers
    yield built
    built.ledger.close()


@pytest.fixture(scope="module")
def apps(registry: PageRegistry) -> tuple[FastAPI, FastAPI]:
    return create_app(registry.ledger), create_app(registry.ledger, hot_reads=False)


def assert_same(apps: tuple[FastAPI, FastAPI], scope: Scope) -> Answer:
    fast, full = (call(app, scope) for app in apps)
    assert fast == full, scope["path"]
    assert fast.status < 500, (scope["path"], fast.body[:300])
    return fast


def known_paths(registry: PageRegistry) -> list[str]:
    out = []
    for cert_id in (*IDS, "LAB-1/NO-SUCH", "NO-SLASH", "A/", "/A/B", "A/B\n", "A" * 299 + "/B"):
        out += [f"/api/v1/certificates/{cert_id}", f"/c/{cert_id}"]
    for token in registry.marks.values():
        out += [f"/m/{token}", f"/M/{token}", f"/m/{token.lower()}", f"/m/{token[:-1]}"]
    return out


def digest_queries(registry: PageRegistry) -> list[str]:
    """Look-ups by document digest: registered, unknown and malformed, alone and not."""
    state = registry.ledger.trust_state()
    digests = [state.certificate(c).document_sha256 for c in IDS]  # type: ignore[union-attr]
    out = []
    for d in [*digests, "0" * 64, "A" * 64, "0" * 63, digests[0] + "0"]:
        out += [f"digest=sha256:{d}", f"digest=sha256%3A{d}", f"digest=sha256:{d}&limit=5"]
        out += [f"digest=sha256:{d}&digest=sha256:{d}", f"digest=SHA256:{d}"]
    return [*out, "digest=", "digest", "", "issuer=LAB-1", "x=%ff"]


@pytest.mark.parametrize("lang", ["", "lang=zh", "lang=en", "lang=xx", "lang=zh&lang=en"])
@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "PUT"])
def test_known_requests_answer_the_same(
    apps: tuple[FastAPI, FastAPI], registry: PageRegistry, method: str, lang: str
) -> None:
    for path in known_paths(registry):
        assert_same(apps, scope_for(method, path, lang))
        assert_same(apps, scope_for(method, path, lang, ((b"accept-language", b"zh-CN,zh;q=0.9"),)))
        assert_same(apps, scope_for(method, path, lang, ((b"cookie", b"qil_lang=zh"),)))
    for query in digest_queries(registry):
        assert_same(apps, scope_for(method, "/api/v1/certificates", query))


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    prefix=st.sampled_from([*PREFIXES, "/api/v1/certificates", "/api/v1/certificatesX/", "/m", ""]),
    rest=st.one_of(
        st.text(max_size=40),
        st.sampled_from(IDS).map(lambda i: i + "/mark.svg"),
        st.sampled_from(IDS),
        st.integers(0, 400).map(lambda n: "L/" + "x" * n),
    ),
    query=st.one_of(
        st.sampled_from(["", "lang=zh", "lang=", "x=1", "lang=en&digest=sha256:00"]),
        st.text(alphabet="digestha256:0f%3A&=", max_size=80),
        st.text(alphabet="0123456789abcdefA", min_size=62, max_size=66).map(
            lambda h: "digest=sha256:" + h
        ),
    ),
)
def test_any_path_answers_the_same(
    apps: tuple[FastAPI, FastAPI], prefix: str, rest: str, query: str
) -> None:
    assert_same(apps, scope_for("GET", prefix + rest, query))


@pytest.mark.parametrize("mutate", [str.lower, lambda t: t[: len(t) // 2], lambda t: t[:-2] + "AA"])
def test_marks_of_every_status_answer_the_same(
    apps: tuple[FastAPI, FastAPI], registry: PageRegistry, mutate: Any
) -> None:
    for token in registry.marks.values():
        assert assert_same(apps, scope_for("GET", f"/m/{token}")).status == 200
        assert_same(apps, scope_for("GET", f"/m/{mutate(token)}"))


def test_the_layer_answers_hot_reads_itself_and_hands_on_the_rest(
    apps: tuple[FastAPI, FastAPI], registry: PageRegistry
) -> None:
    """Behind the layer, a recorder stands in for FastAPI: what reaches it was
    handed on. Without this the comparisons above would pass with a layer that
    never answered anything."""
    reached: list[str] = []

    async def recorder(scope: Scope, receive: Receive, send: Send) -> None:
        reached.append(scope["path"])
        await apps[1](scope, receive, send)

    layer = hot_reads.HotReads(recorder, routes=lambda: hot_reads.get_routes(apps[1], ROUTERS))
    assert [c.hot.path for c in layer.claims] == [h.path for h in hot_reads.HOT_READS]
    token = registry.marks[VALID]
    answered = [f"/api/v1/certificates/{VALID}", f"/m/{token}", f"/M/{token}", f"/c/{SUSPENDED}"]
    for path in answered:
        assert call(layer, scope_for("GET", path), apps[1]).status == 200
    digest = registry.ledger.trust_state().certificate(VALID).document_sha256  # type: ignore[union-attr]
    for query in (f"digest=sha256:{digest}", f"digest=sha256:{'0' * 64}"):
        assert call(layer, scope_for("GET", "/api/v1/certificates", query), apps[1]).status == 200
    assert reached == []
    for query in (f"digest=sha256:{digest}&limit=1", "digest=sha256:00", "issuer=LAB-1"):
        call(layer, scope_for("GET", "/api/v1/certificates", query), apps[1])
    assert reached == ["/api/v1/certificates"] * 3
    reached.clear()
    handed_on = [
        "/api/v1/certificates/LAB-1/NO-SUCH",  # a 404: FastAPI answers errors
        "/api/v1/certificates/NO-SLASH",  # fails the id's pattern: FastAPI's 422
        "/api/v1/certificates/A/B\n",  # the route's path does not match a newline
        "/api/v1/certificates",
        "/healthz",
    ]
    for path in handed_on:
        call(layer, scope_for("GET", path), apps[1])
    call(layer, scope_for("POST", f"/api/v1/certificates/{VALID}"), apps[1])
    assert reached == [*handed_on, f"/api/v1/certificates/{VALID}"]


def test_a_route_that_could_also_match_is_left_to_fastapi(apps: tuple[FastAPI, FastAPI]) -> None:
    """If another GET route could take a path under a hot prefix, the layer does
    not guess which one FastAPI's order picks: it hands such paths on."""
    from fastapi import APIRouter

    extra = APIRouter()

    @extra.get("/api/v1/certificates/{certificate_id:path}/extra")
    async def _rival(certificate_id: str) -> dict[str, str]:
        return {"rival": certificate_id}

    reached: list[str] = []

    async def recorder(scope: Scope, receive: Receive, send: Send) -> None:
        reached.append(scope["path"])
        await apps[1](scope, receive, send)

    layer = hot_reads.HotReads(
        recorder, routes=lambda: hot_reads.get_routes(apps[1], (*ROUTERS, extra))
    )
    call(layer, scope_for("GET", f"/api/v1/certificates/{VALID}/extra"), apps[1])
    call(layer, scope_for("GET", f"/api/v1/certificates/{VALID}"), apps[1])
    assert reached == [f"/api/v1/certificates/{VALID}/extra"]


def test_the_layer_module_reads_no_storage() -> None:
    source = Path(hot_reads.__file__).read_text(encoding="utf-8")
    assert "storage" not in source.split('"""', 2)[2]


def test_a_route_with_dependencies_is_left_to_fastapi(apps: tuple[FastAPI, FastAPI]) -> None:
    """A hot path whose route gained a dependency (a token check, a rate limit)
    is never answered by the layer, which would skip it."""
    from fastapi import APIRouter, Depends

    def gate() -> None:
        return None

    guarded = APIRouter(dependencies=[Depends(gate)])

    @guarded.get("/m/{token:path}")
    async def _page(token: str) -> dict[str, str]:
        return {"token": token}

    others = [
        r
        for r in hot_reads.get_routes(apps[1], ROUTERS)
        if getattr(r, "path", "") != "/m/{token:path}"
    ]
    layer = hot_reads.HotReads(
        apps[1], routes=lambda: [*others, *hot_reads.get_routes(apps[1], (guarded,))]
    )
    assert "/m/{token:path}" not in [c.hot.path for c in layer.claims]
    assert "/M/{token:path}" in [c.hot.path for c in layer.claims]
