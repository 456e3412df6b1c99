"""Request body limits, enforced before the body is read: a declared
Content-Length over the limit is refused at once, and a body that turns out
longer than declared (or is chunked) is cut off as soon as it passes the limit."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import Any

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
        started = refused = False

        async def limited_receive() -> Message:
            nonlocal received, refused
            message: Message = await receive()
            if message["type"] == "http.request":
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
            if refused:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        with contextlib.suppress(_TooLarge):  # already answered 413
            await self.app(scope, limited_receive, tracking_send)


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
