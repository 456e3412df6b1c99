"""Request body limits, enforced before the body is read: a declared
Content-Length over the limit is refused at once, and a body that turns out
longer than declared (or is chunked) is cut off as soon as it passes the limit.

The same middleware watches for a client that hangs up before its body is
complete: nobody is left to answer, so the request ends with one INFO line in
the log instead of the framework's errors about the missing body."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from starlette.requests import ClientDisconnect

from verifier.certification import MAX_RECORD_SIZE
from verifier.dcc import MAX_DOCUMENT_SIZE
from verifier.dsse import MAX_ENVELOPE_SIZE

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[Message], Any]

MULTIPART_OVERHEAD = 64 * 1024
CERTIFICATE_REQUEST_LIMIT = (
    MAX_DOCUMENT_SIZE + MAX_RECORD_SIZE + MAX_ENVELOPE_SIZE + MULTIPART_OVERHEAD
)
OTHER_REQUEST_LIMIT = MAX_ENVELOPE_SIZE + MULTIPART_OVERHEAD

log = logging.getLogger("qiledger.api")


def request_limit(path: str) -> int:
    if path.rstrip("/") == "/api/v1/certificates":
        return CERTIFICATE_REQUEST_LIMIT
    return OTHER_REQUEST_LIMIT


class _TooLarge(Exception):
    pass


class BodySizeLimit:
    """Pure ASGI middleware (it must see the body as it streams in)."""

    def __init__(self, app: Any, limit_for: Callable[[str], int] = request_limit) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = dict(scope.get("headers", ())).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await _refuse(send, limit)
            return
        received = 0
        started = refused = complete = gone = False

        async def limited_receive() -> Message:
            nonlocal received, refused, complete, gone
            message: Message = await receive()
            if message["type"] == "http.disconnect" and not complete:
                gone = True
            elif message["type"] == "http.request":
                complete = not message.get("more_body", False)
                received += len(message.get("body", b""))
                if received > limit:
                    # Answer now: the framework may turn the exception below into
                    # its own error response, which tracking_send then drops.
                    if not started and not refused:
                        refused = True
                        await _refuse(send, limit)
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if refused or gone:  # answered 413 already, or nobody is listening
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            pass  # already answered 413
        except ClientDisconnect:
            if not gone:
                raise
        if gone:
            # The route either raised ClientDisconnect (caught above) or turned
            # it into an error answer (dropped by tracking_send): not a failure.
            log.info(
                "client disconnected before the request body was complete (%s %r)",
                scope["method"],
                scope["path"],
            )


async def _refuse(send: Send, limit: int) -> None:
    body = json.dumps(
        {
            "type": "urn:qiledger:error:request_too_large",
            "title": "Content Too Large",
            "status": 413,
            "detail": f"the request body exceeds this route's limit of {limit} bytes",
            "code": "request_too_large",
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
