"""``GET /api/v1/export``: an audit bundle (DESIGN.md item 10), for auditor tokens.

The bundle is written by :func:`registry.export.write` on a thread of its own into
a small queue the response drains, so memory stays flat however large the bundle;
the bytes are the ones ``qiledger export`` writes to a file.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response, StreamingResponse

from registry import export
from registry.api import problems
from registry.api.auth import Service, require
from registry.ledger import Ledger
from registry.storage.tokens import TokenHolder
from verifier.errors import MalformedError

router = APIRouter(prefix="/api/v1", tags=["export"])
log = logging.getLogger("qiledger.api.export")

ZIP_MEDIA_TYPE = "application/zip"
_QUEUE_CHUNKS = 8
_DONE = object()


class _Cancelled(Exception):
    """The client went away: the writer thread stops."""


def _stream(ledger: Ledger, planned: export.ExportPlan) -> Iterator[bytes]:
    chunks: queue.Queue[object] = queue.Queue(_QUEUE_CHUNKS)
    stop = threading.Event()

    def put(item: object) -> None:
        while not stop.is_set():
            try:
                chunks.put(item, timeout=0.5)
                return
            except queue.Full:
                continue
        raise _Cancelled

    def run() -> None:
        try:
            export.write(ledger, planned, put)
            put(_DONE)
        except _Cancelled:
            pass
        except Exception as exc:  # noqa: BLE001  # the response has begun: it can only end short
            log.warning("export stopped: %s", exc)
            with contextlib.suppress(_Cancelled):
                put(exc)

    thread = threading.Thread(target=run, name="qiledger-export", daemon=True)
    thread.start()
    try:
        while True:
            item = chunks.get()
            if item is _DONE or isinstance(item, Exception):
                return  # an error ends the ZIP short: the auditor's check refuses it
            assert isinstance(item, bytes)
            yield item
    finally:
        stop.set()


@router.get(
    "/export",
    summary="An audit bundle (ZIP) that verifies offline with the log's key (auditors)",
    description=(
        "Name at most one selection: `certificate` (one certificate's history), "
        "`issuer`, `from_time`/`to_time` (RFC 3339, by logged_at, inclusive) or "
        "`from_index`/`to_index` (inclusive); none exports the whole log. "
        "`with_documents=true` adds the selected certificates' documents. Check it with "
        "`qiverify audit FILE.zip --log-key VKEY`."
    ),
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "the bundle",
            "content": {ZIP_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
        },
        **problems.responses(404, 422),
    },
)
async def get_export(
    service: Service,
    holder: Annotated[TokenHolder, Depends(require("auditor"))],
    certificate: Annotated[str | None, Query(min_length=1, max_length=300)] = None,
    issuer: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
    from_time: Annotated[str | None, Query(max_length=40)] = None,
    to_time: Annotated[str | None, Query(max_length=40)] = None,
    from_index: Annotated[int | None, Query(ge=0, le=2**63 - 1)] = None,
    to_index: Annotated[int | None, Query(ge=0, le=2**63 - 1)] = None,
    with_documents: bool = False,
) -> Response:
    try:
        selection = export.selection_of(
            certificate=certificate,
            issuer=issuer,
            from_time=from_time,
            to_time=to_time,
            from_index=from_index,
            to_index=to_index,
        )
    except MalformedError as exc:
        return problems.problem(422, "request_invalid", exc.message)
    ledger = service.ledger
    planned = await run_in_threadpool(export.plan, ledger, selection, with_documents=with_documents)
    name = f"qiledger-audit-{selection.kind}-{planned.size}.zip"
    return StreamingResponse(
        _stream(ledger, planned),
        media_type=ZIP_MEDIA_TYPE,
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
