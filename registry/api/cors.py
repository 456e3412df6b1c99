"""Cross-origin reads: any web page may read the public log.

The log is public and meant to be checked by anyone — a verifier page on another
origin, a monitor running in a browser, a tile client — so GET and HEAD answers
carry ``Access-Control-Allow-Origin: *``, and a browser's preflight for a read
is answered. Tokens are bearer headers, never cookies, so allowing any origin
hands a page nothing it did not already hold (hence no credentials mode).

Writes get no CORS headers: a browser on another origin may not submit, and an
issuer's system calls the API server to server. Requests without ``Origin``
(every non-browser client) pass through untouched.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

READ_METHODS = (b"GET", b"HEAD")
ALLOW_HEADERS = b"Authorization, Accept"
"""Request headers a cross-origin read may send (Authorization: an auditor's
document download)."""
EXPOSE_HEADERS = b"Repr-Digest, Retry-After, WWW-Authenticate"
"""Beyond the headers browsers always expose: a document's digest, and what a
refused read explains itself with."""
MAX_AGE_S = b"86400"


class PublicReadsCors:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not any(name == b"origin" for name, _ in scope["headers"]):
            await self.app(scope, receive, send)  # not a browser: the common case
            return
        headers = dict(scope["headers"])
        method = scope["method"].encode("ascii")
        if method == b"OPTIONS" and b"access-control-request-method" in headers:
            await _preflight(headers[b"access-control-request-method"], send)
            return
        if method not in READ_METHODS:
            await self.app(scope, receive, send)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    (b"access-control-allow-origin", b"*"),
                    (b"access-control-expose-headers", EXPOSE_HEADERS),
                ]
            await send(message)

        await self.app(scope, receive, send_with_cors)


async def _preflight(requested_method: bytes, send: Send) -> None:
    """204 with the permissions of a read; for anything else 204 without them
    (the browser then refuses the request, and the server stays out of it)."""
    headers = [(b"vary", b"Origin"), (b"content-length", b"0")]
    if requested_method in READ_METHODS:
        headers += [
            (b"access-control-allow-origin", b"*"),
            (b"access-control-allow-methods", b"GET, HEAD"),
            (b"access-control-allow-headers", ALLOW_HEADERS),
            (b"access-control-max-age", MAX_AGE_S),
        ]
    await send({"type": "http.response.start", "status": 204, "headers": headers})
    await send({"type": "http.response.body", "body": b""})
