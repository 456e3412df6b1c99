"""The HTTP face of :class:`verifier.witness.Witness`: ``POST /add-checkpoint`` (C2SP
tlog-witness) on the standard library's ThreadingHTTPServer, with keep-alive.

Answers: 200 the cosignature line(s) as ``text/plain`` (C2SP names no media type
for them), 409 the size last cosigned as ``text/x.tlog.size``, and the other
refusals as one line of ``text/plain``. A body above
:data:`verifier.witness.MAX_BODY` is refused (413) without being read.
"""

from __future__ import annotations

import logging
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from verifier.witness import MAX_BODY, Conflict, Witness, WitnessRefusal

log = logging.getLogger("qiverify.witness")

SIZE_MEDIA_TYPE = "text/x.tlog.size"
TEXT_MEDIA_TYPE = "text/plain; charset=utf-8"
READ_TIMEOUT_S = 10.0
"""A client that sends nothing for this long is disconnected (no slow-loris)."""
MAX_CONNECTIONS = 256


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as C2SP asks
    server_version = "qiverify-witness"
    sys_version = ""
    timeout = READ_TIMEOUT_S
    # The answer's headers and body go in two writes: without TCP_NODELAY, Nagle's
    # algorithm holds the body until the client's delayed ACK (40 ms per request).
    disable_nagle_algorithm = True
    witness: Witness  # set on the subclass made per server

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def _answer(self, status: int, body: bytes, media_type: str = TEXT_MEDIA_TYPE) -> None:
        self.send_response(status)
        self.send_header("Content-Type", media_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _refuse(self, status: int, message: str) -> None:
        self._answer(status, (message.replace("\n", " ") + "\n").encode("utf-8"))

    def do_POST(self) -> None:
        if self.path != "/add-checkpoint":
            self._refuse(HTTPStatus.NOT_FOUND, f"no such endpoint {self.path[:100]}")
            return
        length_text = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding") or length_text is None:
            self.close_connection = True
            self._refuse(HTTPStatus.LENGTH_REQUIRED, "send the body with a Content-Length")
            return
        try:
            length = int(length_text)
            if length < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            self._refuse(HTTPStatus.BAD_REQUEST, "malformed Content-Length")
            return
        if length > MAX_BODY:
            self.close_connection = True  # the body is not read
            self._refuse(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the body is over {MAX_BODY} bytes")
            return
        body = self.rfile.read(length)
        if len(body) != length:
            self.close_connection = True
            return
        try:
            lines = self.witness.add_checkpoint(body)
        except Conflict as exc:
            log.info("409 %s", exc.message)
            self._answer(HTTPStatus.CONFLICT, f"{exc.size}\n".encode("ascii"), SIZE_MEDIA_TYPE)
            return
        except WitnessRefusal as exc:
            log.info("%d %s", exc.status, exc.message)
            self._refuse(exc.status, exc.message)
            return
        self._answer(HTTPStatus.OK, lines)

    def _not_allowed(self) -> None:
        self.close_connection = True
        self.send_response(HTTPStatus.METHOD_NOT_ALLOWED)
        self.send_header("Allow", "POST")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_HEAD = do_PUT = do_DELETE = do_PATCH = _not_allowed


class _BoundedServer(ThreadingHTTPServer):
    """A thread per connection, at most :data:`MAX_CONNECTIONS` at once: one more is
    closed at once (many idle connections cannot exhaust the process)."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[_Handler]) -> None:
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class WitnessServer:
    """A running witness: ``start()`` serves on a thread, ``close()`` stops it."""

    def __init__(self, witness: Witness, host: str = "127.0.0.1", port: int = 0) -> None:
        handler = type("WitnessHandler", (_Handler,), {"witness": witness})
        self.httpd = _BoundedServer((host, port), handler)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> WitnessServer:
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name="qiverify-witness", daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def close(self) -> None:
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join()
        self.httpd.server_close()
