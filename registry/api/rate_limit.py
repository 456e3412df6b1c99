"""A per-key token bucket: ``rate`` requests per second on average, bursts up to
``burst``. In memory and per process (with N server processes a token gets up to
N times the rate; a shared limiter belongs in front of them, e.g. the proxy)."""

from __future__ import annotations

import threading
from collections.abc import Callable

from verifier.errors import QILedgerError


class RateLimitedError(QILedgerError):
    code = "rate_limited"

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimiter:
    def __init__(self, rate: float, burst: int, clock: Callable[[], float]) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, updated)
        self._lock = threading.Lock()

    def take(self, key: str) -> None:
        """Spend one request of ``key``'s allowance or raise :class:`RateLimitedError`."""
        if self.rate <= 0:
            return
        with self._lock:
            now = self._clock()
            tokens, updated = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - updated) * self.rate)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                wait = (1.0 - tokens) / self.rate
                raise RateLimitedError(
                    f"rate limit of {self.rate:g} requests/s for this token exceeded; "
                    f"retry in {wait:.2f} s",
                    wait,
                )
            self._buckets[key] = (tokens - 1.0, now)
