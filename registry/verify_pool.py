"""Ed25519 signature checks on a worker process, so ingest uses a second core.

Why a process fed through raw pipes: libsodium releases the GIL, but threads
(ours or a ``ProcessPoolExecutor``'s feeder and manager threads) need the GIL
between calls, and the sequencer's thread holds it while it parses — so they
barely overlap (bench/ingest.py measures it). Here the sequencer's own thread
writes each chunk to a pipe and later reads the verdicts; the worker only
loops over ``(key, signature, message)`` triples, checking each with
:class:`verifier.keys.PublicKey` — the same code that checks them everywhere.

The wire format is plain length-prefixed bytes (no pickle): per signature,
32-byte key, u16 signature length, signature, u32 message length, message.
Verdicts come back as one byte per signature (1 = verifies).
"""

from __future__ import annotations

import contextlib
import fcntl
import multiprocessing
import struct
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

from verifier.dsse import PendingSignature
from verifier.errors import QILedgerError
from verifier.keys import PublicKey

_HEAD = struct.Struct(">32sH")
_LEN = struct.Struct(">I")
_PIPE_BYTES = 1 << 20  # room for several chunks, so the sender rarely waits
_F_SETPIPE_SZ = 1031  # Linux fcntl; absent elsewhere, where the default is used


class WorkerLost(Exception):
    """The worker process died or its pipe broke; check signatures locally."""


def encode_batch(signatures: Sequence[PendingSignature]) -> bytes:
    parts: list[bytes] = []
    for s in signatures:
        parts += [
            _HEAD.pack(s.key.raw, len(s.signature)),
            s.signature,
            _LEN.pack(len(s.message)),
            s.message,
        ]
    return b"".join(parts)


def check_batch(data: bytes, keys: dict[bytes, PublicKey]) -> bytes:
    """Verdict bytes for an encoded batch (runs in the worker)."""
    verdicts = bytearray()
    pos = 0
    while pos < len(data):
        raw_key, sig_len = _HEAD.unpack_from(data, pos)
        pos += _HEAD.size
        signature = data[pos : pos + sig_len]
        pos += sig_len
        (msg_len,) = _LEN.unpack_from(data, pos)
        pos += _LEN.size
        message = data[pos : pos + msg_len]
        pos += msg_len
        try:
            key = keys.get(raw_key) or keys.setdefault(raw_key, PublicKey.from_raw(raw_key))
            key.verify(signature, message)
            verdicts.append(1)
        except QILedgerError:
            verdicts.append(0)
    return bytes(verdicts)


def _serve(inbox: Connection, outbox: Connection, parent_ends: Sequence[Connection]) -> None:
    # A forked child inherits the parent's ends of both pipes; holding the write
    # end of its own inbox would keep it from ever seeing EOF, so a parent killed
    # with SIGKILL would leave it running forever.
    for conn in parent_ends:
        conn.close()
    keys: dict[bytes, PublicKey] = {}
    while True:
        try:
            data = inbox.recv_bytes()
        except (EOFError, OSError):
            return
        outbox.send_bytes(check_batch(data, keys))


def _widen(conn: Connection) -> None:
    with contextlib.suppress(OSError):
        fcntl.fcntl(conn.fileno(), _F_SETPIPE_SZ, _PIPE_BYTES)


class VerifyWorker:
    """One worker process; batches are answered in the order they were sent."""

    def __init__(self) -> None:
        # fork, not spawn: spawn re-imports an unguarded __main__ script in the
        # child, which could re-run a caller's code (appends included). The
        # forked child only runs _serve; it never touches the parent's database.
        methods = multiprocessing.get_all_start_methods()
        context: Any = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        inbox, self._to_worker = context.Pipe(duplex=False)
        self._from_worker, outbox = context.Pipe(duplex=False)
        for conn in (inbox, self._to_worker, self._from_worker, outbox):
            _widen(conn)
        parent_ends = (
            (self._to_worker, self._from_worker) if context.get_start_method() == "fork" else ()
        )
        self._process = context.Process(
            target=_serve,
            args=(inbox, outbox, parent_ends),
            name="qiledger-verify",
            daemon=True,
        )
        self._process.start()
        inbox.close()
        outbox.close()
        self._sent = 0
        self._received = 0

    def send(self, signatures: Sequence[PendingSignature]) -> int:
        """Queue a batch; returns its ticket for :meth:`verdicts`."""
        try:
            self._to_worker.send_bytes(encode_batch(signatures))
        except OSError as exc:
            raise WorkerLost(str(exc)) from None
        self._sent += 1
        return self._sent - 1

    def verdicts(self, ticket: int) -> bytes:
        """The verdicts of batch ``ticket``; tickets must be read in order."""
        if ticket != self._received:
            raise WorkerLost(f"verdicts read out of order ({ticket} != {self._received})")
        try:
            result: bytes = self._from_worker.recv_bytes()
        except (EOFError, OSError) as exc:
            raise WorkerLost(str(exc) or "worker exited") from None
        self._received += 1
        return result

    def close(self) -> None:
        self._to_worker.close()
        self._from_worker.close()
        self._process.join(timeout=5)
        if self._process.is_alive():
            self._process.kill()
