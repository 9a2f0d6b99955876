"""Tree and store calls run inline while quick, on the thread once slow, never overlapping."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from shrinkwrap_async.pipeline import blocking_calls
from shrinkwrap_async.pipeline.blocking_calls import BlockingCalls


def where() -> int:
    return threading.get_ident()


async def test_quick_calls_run_on_the_loop_thread() -> None:
    with ThreadPoolExecutor(1) as pool:
        calls = BlockingCalls(pool)
        assert [await calls.run(where) for _ in range(20)] == [threading.get_ident()] * 20
        assert not calls.threaded


async def test_slow_calls_move_to_the_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(blocking_calls, "SLOW_CALL", 0.005)

    def slow() -> int:
        time.sleep(0.01)
        return where()

    with ThreadPoolExecutor(1) as pool:
        calls = BlockingCalls(pool)
        first = [await calls.run(slow) for _ in range(blocking_calls.SLOW_CALLS_BEFORE_THREAD)]
        assert first == [threading.get_ident()] * blocking_calls.SLOW_CALLS_BEFORE_THREAD
        assert calls.threaded
        assert await calls.run(where) != threading.get_ident()


@pytest.mark.parametrize("requests", [None, 3], ids=["always counted", "requests in flight"])
async def test_calls_holding_the_loop_too_long_move_to_the_thread(
    monkeypatch: pytest.MonkeyPatch, requests: int | None
) -> None:
    """Each call is quick, but together they would keep the loop busy most of the time."""
    monkeypatch.setattr(blocking_calls, "MIN_OBSERVED", 0.05)

    def busy() -> None:
        time.sleep(0.004)

    with ThreadPoolExecutor(1) as pool:
        calls = BlockingCalls(pool, None if requests is None else lambda: requests > 0)
        await run_until_threaded(calls, busy)
        assert calls.threaded


async def run_until_threaded(calls: BlockingCalls, busy: Callable[[], object]) -> None:
    """At most 50 calls of ``busy``, each followed by a turn of the loop."""
    for _ in range(50):
        await calls.run(busy)
        await asyncio.sleep(0)
        if calls.threaded:
            return


async def test_calls_that_hold_up_nothing_stay_on_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same calls, with no request in flight (a refresh with its objects at hand): the
    loop has nothing else to do, so they stay inline; once requests are in flight, the
    calls made meanwhile count."""
    monkeypatch.setattr(blocking_calls, "MIN_OBSERVED", 0.05)
    in_flight = 0

    def busy() -> int:
        time.sleep(0.004)
        return where()

    with ThreadPoolExecutor(1) as pool:
        calls = BlockingCalls(pool, lambda: in_flight > 0)
        assert [await calls.run(busy) for _ in range(50)] == [threading.get_ident()] * 50
        assert not calls.threaded
        in_flight = 2
        await run_until_threaded(calls, busy)
        assert calls.threaded


async def test_background_calls_use_the_thread_and_keep_the_order() -> None:
    order: list[str] = []

    def long_call() -> None:
        time.sleep(0.05)
        order.append("background")

    def quick_call() -> int:
        order.append("quick")
        return where()

    with ThreadPoolExecutor(1) as pool:
        calls = BlockingCalls(pool)
        background = asyncio.ensure_future(calls.run(long_call, background=True))
        await asyncio.sleep(0)  # the background call is pending on the thread
        quick_thread = await calls.run(quick_call)
        await background
    assert order == ["background", "quick"]  # queued behind it, not run beside it
    assert quick_thread != threading.get_ident()


async def test_an_inline_call_raises_as_a_threaded_one_would() -> None:
    def failing() -> None:
        raise OSError(28, "No space left on device")

    with ThreadPoolExecutor(1) as pool:
        calls = BlockingCalls(pool)
        with pytest.raises(OSError, match="No space left"):
            await calls.run(failing)
        with pytest.raises(OSError, match="No space left"):
            await calls.run(failing, background=True)


async def test_a_cancelled_caller_does_not_let_the_next_call_overlap() -> None:
    """The caller of a pool call is cancelled while the call still runs: the next call
    must queue behind it, not run inline beside it."""
    order: list[str] = []

    def long_call() -> None:
        order.append("long starts")
        time.sleep(0.1)
        order.append("long ends")

    def quick_call() -> None:
        order.append("quick")

    with ThreadPoolExecutor(1) as pool:
        calls = BlockingCalls(pool)
        caller = asyncio.ensure_future(calls.run(long_call, background=True))
        await asyncio.sleep(0.02)  # running on the pool now
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        await calls.run(quick_call)
    assert order == ["long starts", "long ends", "quick"]
