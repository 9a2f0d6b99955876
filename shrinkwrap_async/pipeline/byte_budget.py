"""A bound on the bytes of small objects held between their fetch and their commit.

Small objects travel whole through the pipeline (the fetch, the verify queue, a batch to
the worker process). The queues bound their number, but at up to 256 KiB each that could
still be well over 100 MB for a repository of large-ish files; the budget bounds the bytes.
"""

from __future__ import annotations

import asyncio
from collections import deque

SMALL_OBJECT_BYTES = 32 * 1024 * 1024


class ByteBudget:
    """At most ``limit`` bytes acquired at once; an object larger than the limit is let
    through when nothing else is held (so the budget never blocks for good)."""

    def __init__(self, limit: int = SMALL_OBJECT_BYTES) -> None:
        self.limit = limit
        self.used = 0
        self.peak = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self, size: int) -> None:
        while self.used and self.used + size > self.limit:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter
        self.used += size
        self.peak = max(self.peak, self.used)

    def release(self, size: int) -> None:
        self.used -= size
        while self._waiters:  # every waiter checks again; the ones that do not fit wait on
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
