"""The FastAPI application: ``create_app(ledger)`` for tests and embedding,
``app_from_env()`` as the uvicorn factory behind ``qiledger serve``."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from registry import __version__
from registry.api import hot_reads as hot_reads_layer
from registry.api import models, problems
from registry.api.cors import PublicReadsCors
from registry.api.limits import BodySizeLimit
from registry.api.routes import (
    certificates,
    export,
    issuers,
    log,
    marks,
    pages,
    schemas,
    statements,
    tiles,
    traceability,
)
from registry.api.service import RegistryService, ServiceOptions
from registry.config import ServerSettings, Settings
from registry.ledger import Ledger
from registry.witnessing import CosignatureGatherer, WitnessEndpoint, parse_witnesses

# Routes are matched in order, each costing a few microseconds to pass over, so
# the hot public reads come first: status reads, scan pages, tiles.
ROUTERS = tuple(
    m.router
    for m in (
        certificates,
        pages,
        tiles,
        marks,
        log,
        statements,
        issuers,
        schemas,
        traceability,
        export,
    )
)

DESCRIPTION = """\
The QI Ledger registry: a public, append-only, verifiable log of calibration and
certification certificates. Reads need no token. Writes need an API token *and*
an envelope signed by a key the trust chain accepts. Errors are RFC 9457
problem details with a stable `code`.
"""


def create_app(
    ledger: Ledger,
    options: ServiceOptions | None = None,
    *,
    owns_ledger: bool = False,
    witnesses: Sequence[WitnessEndpoint] = (),
    hot_reads: bool = True,
) -> FastAPI:
    """The application over ``ledger``; at shutdown it answers queued submissions
    and, if ``owns_ledger``, closes the ledger. ``witnesses`` are asked to cosign
    each new checkpoint while the application runs. ``hot_reads=False`` leaves
    every request to FastAPI (the tests compare both)."""
    service = RegistryService(ledger, options, witness_keys=[w.key for w in witnesses])
    gatherer = CosignatureGatherer(ledger, witnesses)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if witnesses:
            ledger.after_append = gatherer.notify
            gatherer.start()
        yield
        gatherer.close()
        service.close()
        if owns_ledger:
            ledger.close()

    # /docs and /redoc from the assets fastapi-offline installs: no CDN, so they
    # work where the registry has no internet.
    app = FastAPIOffline(
        title="QI Ledger registry",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.service = service
    problems.install(app)
    if hot_reads:
        hot_reads_layer.install(app, ROUTERS)  # innermost: answers as the routes would
    app.add_middleware(HeadAsGet)  # every other layer sees the real method
    app.add_middleware(BodySizeLimit, limit_for=statements.request_limit)
    app.add_middleware(PublicReadsCors)

    @app.get(
        "/healthz",
        tags=["operations"],
        summary="Liveness: the process answers",
        response_model=models.Health,
    )
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    for router in ROUTERS:
        app.include_router(router)
    # The public pages' script and style (registry/api/static, shipped as package data).
    app.mount("/static", StaticFiles(directory=pages.STATIC_DIR), name="static")
    return app


class HeadAsGet:
    """HEAD answers as GET does, without the body (RFC 9110, 9.3.2): the same
    status and headers, Content-Length included. FastAPI routes answer only the
    methods they name, so this is the one place every read route gets HEAD; a
    route without GET refuses HEAD as it refuses GET."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def send_without_body(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, send_without_body)


def service_options(server: ServerSettings) -> ServiceOptions:
    """The service's options: what the settings name, the service's defaults otherwise."""
    defaults = ServiceOptions()
    return ServiceOptions(
        public_url=server.public_url or defaults.public_url,
        rate_per_second=(
            defaults.rate_per_second if server.rate_per_second is None else server.rate_per_second
        ),
        rate_burst=defaults.rate_burst if server.rate_burst is None else server.rate_burst,
    )


def app_from_env() -> FastAPI:
    """uvicorn factory: every worker process opens the ledger from the environment
    (``qiledger serve`` puts its options there). It never prompts for the log
    key's passphrase: that comes from the environment or a passphrase file."""
    settings = Settings.from_env()
    server = ServerSettings.from_env()
    witnesses = parse_witnesses(server.witnesses)
    app = create_app(
        Ledger.open(settings), service_options(server), owns_ledger=True, witnesses=witnesses
    )
    # The replayed trust state lives as long as the process: keep the cyclic
    # garbage collector from re-scanning it in every full collection.
    gc.collect()
    gc.freeze()
    return app
