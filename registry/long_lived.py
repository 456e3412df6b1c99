"""The cyclic garbage collector versus the trust state.

The trust state of a large log is millions of small objects that live as long
as the process and hold no reference cycles. CPython's cyclic collector scans
every tracked object again at each full collection, and building the state
triggers many: on a 1,000,000-entry log that scanning doubled the time to load
a snapshot, and made the first entries replayed after it three times slower.

So the collector is paused while the state is built, and once a large state is
built it is moved out of the collector's sight (:func:`gc.freeze`). Reference
counting still frees these objects when they are dropped (they form no
cycles); what a freeze costs is that cyclic garbage alive at that moment is
never collected, which is why only a long catch-up (a start-up) freezes.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

FREEZE_AFTER = 10_000
"""Freeze after a catch-up that grew the state by at least this many entries."""


@contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic collection inside the block (reference counting goes on)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def freeze_survivors() -> None:
    """Keep every object alive now out of future cyclic collections."""
    gc.freeze()
