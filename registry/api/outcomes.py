"""Waiting for a queued submission and turning its outcome into an answer."""

from __future__ import annotations

import asyncio
from concurrent.futures import Future

from registry.errors import StorageError
from registry.sequencer import Accepted, Outcome, Refused

SUBMIT_TIMEOUT_S = 60.0


async def decided(future: Future[Outcome], timeout: float = SUBMIT_TIMEOUT_S) -> Outcome:
    """The sequencer's decision on a queued submission. After ``timeout`` the
    caller hears that the outcome is unknown: resubmitting is safe (a logged
    envelope is answered with its index, never appended twice)."""
    try:
        return await asyncio.wait_for(asyncio.wrap_future(future), timeout)
    except TimeoutError:
        raise StorageError(
            f"the log did not confirm the submission within {timeout:g} s; "
            "resubmit it (a logged envelope is answered with its index)"
        ) from None


async def settled(future: Future[Outcome], timeout: float = SUBMIT_TIMEOUT_S) -> Accepted:
    """The accepted entry, or the refusal's error (see :func:`decided`)."""
    outcome = await decided(future, timeout)
    if isinstance(outcome, Refused):
        raise outcome.error
    return outcome
