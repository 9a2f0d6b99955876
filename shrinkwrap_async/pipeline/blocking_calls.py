"""Blocking file-system calls of the pipeline: inline while they are quick, else on a thread.

On a local disk a directory's links or look-ups take about a millisecond, less than handing
them to a thread costs: every system call made there releases the GIL and must win it back
from the busy event loop (tens of futex calls per file). On a parallel file system a
metadata operation can take a millisecond by itself, and the loop must stay free to fetch
meanwhile. So calls run inline until they turn out slow, and on the thread from then on:
after a few calls slower than ``SLOW_CALL``, or once they have held the loop for more than
``MAX_LOOP_SHARE`` of the time while it had requests in flight. A loop with nothing else to
do (a refresh whose new objects are all at hand) is not held up by them: there the calls
stay inline however much of the time they take (on the thread, every call would cost the
hand-off and its GIL waits, and that run is made of such calls).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

T = TypeVar("T")

SLOW_CALL = 0.02  # seconds
SLOW_CALLS_BEFORE_THREAD = 3
MAX_LOOP_SHARE = 0.25
MIN_OBSERVED = 0.5  # seconds of run time before the share is judged


class BlockingCalls:
    """Runs calls one at a time, in the order they are made, inline or on ``pool``.

    ``background=True`` always uses the pool (calls that may run long, such as the final
    pass over every directory). A call runs inline only when none of this object's pool
    calls is pending, so calls never overlap and keep their order as long as ``pool`` has
    one thread.
    """

    def __init__(self, pool: Executor, loop_needed: Callable[[], bool] | None = None) -> None:
        """``loop_needed``: whether the loop has other work that an inline call delays
        (requests in flight); only such calls count towards ``MAX_LOOP_SHARE``. None:
        every call counts."""
        self._pool = pool
        self._loop_needed = loop_needed
        self._pending = 0
        self._slow_calls = 0
        self._inline_seconds = 0.0
        self._first_call: float | None = None
        self.threaded = False

    async def run(self, fn: Callable[..., T], *args: Any, background: bool = False) -> T:
        if background or self.threaded or self._pending:
            return await self._on_pool(fn, *args)
        holds_up = self._loop_needed is None or self._loop_needed()
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self._account(start, time.perf_counter(), holds_up)

    async def _on_pool(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` on the pool; it counts as pending until it has ended there, even if
        the caller is cancelled meanwhile (an inline call must not overlap it)."""
        loop = asyncio.get_running_loop()
        job = self._pool.submit(fn, *args)
        self._pending += 1

        def ended(_: object) -> None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nothing to count
                loop.call_soon_threadsafe(self._ended)

        job.add_done_callback(ended)
        return await asyncio.wrap_future(job)

    def _ended(self) -> None:
        self._pending -= 1

    def _account(self, start: float, end: float, holds_up: bool) -> None:
        if self._first_call is None:
            self._first_call = start
        took = end - start
        if holds_up:
            self._inline_seconds += took
        if took > SLOW_CALL:
            self._slow_calls += 1
        observed = end - self._first_call
        self.threaded = self._slow_calls >= SLOW_CALLS_BEFORE_THREAD or (
            observed > MIN_OBSERVED and self._inline_seconds > MAX_LOOP_SHARE * observed
        )
