"""Gathering witness cosignatures (C2SP tlog-witness) of the log's checkpoints.

After each new checkpoint (and every few seconds anyway: other processes append
too) a background thread sends the latest checkpoint to each configured witness
with a consistency proof from the size that witness last cosigned, checks the
cosignature it answers with the witness's key, and keeps it
(``checkpoint_cosignatures``); ``/checkpoint`` serves the checkpoint with them.

A witness's size is learned from its own answer: the first request says
``old`` = the largest size it cosigned that this registry kept (0 if none), and a
409 answer names its real size. A witness that is down or refuses is logged and
tried again later (backing off to :data:`MAX_BACKOFF_S`); nothing here ever
delays or fails a submission.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from registry.errors import ConfigError
from registry.storage.protocol import StoredCheckpoint
from verifier import note, witness
from verifier.cosignature import CosignatureVerifier, format_line, parse_lines
from verifier.entry import format_time
from verifier.errors import QILedgerError

if TYPE_CHECKING:
    from registry.ledger import Ledger

log = logging.getLogger("qiledger.witnessing")

POLL_INTERVAL_S = 2.0
"""How often the latest checkpoint is looked at without being told of a new one."""
MAX_BACKOFF_S = 60.0
REQUEST_TIMEOUT_S = 10.0
MAX_ANSWER = 64 << 10
MAX_ROUNDS = 3
"""Requests per witness per checkpoint: a 409 teaches its size, then one more try."""


@dataclass(frozen=True)
class WitnessEndpoint:
    """A witness the registry asks: its submission URL prefix and its key."""

    url: str
    verifier: CosignatureVerifier

    @classmethod
    def parse(cls, spec: str) -> WitnessEndpoint:
        """``URL=VKEY`` (the URL holds no ``=``; the verifier key, type 0x04)."""
        url, sep, vkey = spec.strip().partition("=")
        if not sep or not url.startswith(("http://", "https://")):
            raise ConfigError(f"a witness is URL=VKEY with an http(s) URL, not {spec!r}")
        try:
            return cls(url.rstrip("/"), CosignatureVerifier.parse(vkey))
        except QILedgerError as exc:
            raise ConfigError(f"witness {url}: {exc.message}") from None

    @property
    def key(self) -> str:
        return str(self.verifier)


class WitnessUnavailable(QILedgerError):
    """The witness could not be asked, or failed (network, 5xx, bad answer)."""

    code = "witness_unavailable"


class WitnessRefused(QILedgerError):
    """The witness refused the checkpoint (4xx), or its answer does not verify."""

    code = "witness_refused"


Post = Callable[[str, bytes], tuple[int, bytes]]


def http_post(url: str, body: bytes) -> tuple[int, bytes]:
    """POST ``body``; the status and (bounded) answer. WitnessUnavailable if unreachable."""
    request = urllib.request.Request(  # noqa: S310 (http(s) only: WitnessEndpoint.parse)
        url, data=body, method="POST", headers={"Content-Type": "text/plain"}
    )
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as answer:  # noqa: S310
            return int(answer.status), bytes(answer.read(MAX_ANSWER))
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, bytes(exc.read(MAX_ANSWER))
        except OSError:
            return exc.code, b""
    except (OSError, ValueError) as exc:  # URLError, timeouts, refused connections
        raise WitnessUnavailable(f"cannot reach {url}: {getattr(exc, 'reason', exc)}") from None


@dataclass
class _Progress:
    """What the gatherer knows of one witness."""

    size: int | None = None
    """The size it last cosigned, as far as known (None: ask storage, then it)."""
    failures: int = 0
    next_try: float = 0.0
    last_error: str = field(default="")


class CosignatureGatherer:
    """Sends checkpoints to witnesses and keeps their cosignatures.

    ``start()`` runs it on a daemon thread; ``notify()`` says a checkpoint was just
    signed; ``gather()`` runs one round in the caller's thread (tests, tools).
    """

    def __init__(
        self,
        ledger: Ledger,
        witnesses: Sequence[WitnessEndpoint],
        *,
        post: Post = http_post,
        clock: Callable[[], float] = time.monotonic,
        poll_interval: float = POLL_INTERVAL_S,
    ) -> None:
        keys = [w.key for w in witnesses]
        if len(set(keys)) != len(keys):
            raise ConfigError("a witness key is configured twice")
        self.ledger = ledger
        self.witnesses = tuple(witnesses)
        self.post = post
        self.clock = clock
        self.poll_interval = poll_interval
        self.progress = {w.key: _Progress() for w in self.witnesses}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._round = threading.Lock()
        ledger.storage.ensure_cosignature_table()

    # --- the thread ---------------------------------------------------------------

    def start(self) -> CosignatureGatherer:
        if self.witnesses and self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="qiledger-witnessing", daemon=True
            )
            self._thread.start()
        return self

    def notify(self) -> None:
        self._wake.set()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=REQUEST_TIMEOUT_S + 5)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.poll_interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.gather()
            except Exception:  # a background thread: log and go on, never die silently
                log.exception("gathering witness cosignatures failed; trying again later")

    # --- one round ------------------------------------------------------------------

    def gather(self) -> int:
        """Ask every witness due for the latest checkpoint; the number of new
        cosignatures kept."""
        with self._round:
            latest = self.ledger.latest_checkpoint()
            kept = {key for key, _ in self.ledger.storage.cosignature_lines(latest.size)}
            gained = 0
            for endpoint in self.witnesses:
                progress = self.progress[endpoint.key]
                if endpoint.key in kept or self.clock() < progress.next_try:
                    continue
                try:
                    self._cosign(endpoint, progress, latest)
                except (WitnessUnavailable, WitnessRefused) as exc:
                    progress.failures += 1
                    delay = min(MAX_BACKOFF_S, 2.0 ** min(progress.failures, 10))
                    progress.next_try = self.clock() + delay
                    progress.last_error = exc.message
                    level = (
                        logging.WARNING if isinstance(exc, WitnessUnavailable) else logging.ERROR
                    )
                    log.log(
                        level,
                        "witness %s: %s (next try in %.0f s)",
                        endpoint.url,
                        exc.message,
                        delay,
                    )
                    continue
                progress.failures, progress.next_try, progress.last_error = 0, 0.0, ""
                gained += 1
            return gained

    def _cosign(
        self, endpoint: WitnessEndpoint, progress: _Progress, latest: StoredCheckpoint
    ) -> None:
        if progress.size is None:
            progress.size = self.ledger.storage.cosigned_sizes().get(endpoint.key, 0)
        for _ in range(MAX_ROUNDS):
            old = progress.size
            if old > latest.size:
                raise WitnessRefused(
                    f"it has cosigned size {old}, beyond this log's latest size {latest.size}"
                )
            try:
                proof = (
                    []
                    if old in (0, latest.size)
                    else self.ledger.consistency_proof(old, latest.size)
                )
            except QILedgerError as exc:
                raise WitnessRefused(
                    f"no consistency proof from its size {old}: {exc.message}"
                ) from None
            status, answer = self.post(
                f"{endpoint.url}/add-checkpoint", witness.format_request(old, proof, latest.note)
            )
            if status == 200:
                line = _verified_line(endpoint.verifier, latest.note, answer)
                self.ledger.storage.add_cosignature(
                    latest.size, endpoint.key, line, format_time(self.ledger.clock())
                )
                progress.size = latest.size
                log.info("witness %s cosigned size %d", endpoint.url, latest.size)
                return
            if status == 409:
                size = _size_answer(answer)
                if size == old:
                    # Same size, yet a conflict: it holds a different tree of that size.
                    raise WitnessRefused(
                        f"it cosigned a different tree of size {old} (a fork of this log?)"
                    )
                progress.size = size
                continue
            detail = answer[:200].decode("utf-8", "replace").strip()
            if status >= 500:
                raise WitnessUnavailable(f"HTTP {status} {detail}".rstrip())
            raise WitnessRefused(f"HTTP {status} {detail}".rstrip())
        raise WitnessRefused("its size kept changing while it was asked")


def _size_answer(answer: bytes) -> int:
    text = answer.decode("ascii", "replace")
    if not text.endswith("\n") or not text[:-1].isdigit() or len(text) > 20:
        raise WitnessRefused(f"its 409 answer is not a tree size: {text[:40]!r}")
    return int(text[:-1])


def _verified_line(verifier: CosignatureVerifier, cp_note: bytes, answer: bytes) -> str:
    """The witness's cosignature line in its answer, verified on the checkpoint."""
    try:
        signatures = parse_lines(answer)
        text = note.parse(cp_note).text
    except QILedgerError as exc:
        raise WitnessRefused(f"its answer is not signature lines: {exc.message}") from None
    errors: list[str] = []
    for signature in signatures:
        if not verifier.matches(signature):
            continue  # other keys of the same witness: not configured, ignored
        try:
            verifier.verify(text, signature)
        except QILedgerError as exc:
            errors.append(exc.message)
            continue
        return format_line(signature)
    raise WitnessRefused(
        "its answer holds no valid cosignature by its key" + (f": {errors[0]}" if errors else "")
    )


def parse_witnesses(specs: Sequence[str]) -> tuple[WitnessEndpoint, ...]:
    return tuple(WitnessEndpoint.parse(spec) for spec in specs)
